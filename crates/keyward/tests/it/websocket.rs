//! WebSocket tunnels (issue 18.3) against a real WebSocket echo server (tokio-tungstenite):
//! the handshake is decided like any request, frames pass untouched, bad handshakes are 400,
//! and revocation reaches an open tunnel within a second — on a second node too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// A WebSocket echo server: every text or binary message comes back.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn ws_route(name: &str, prefix: &str, upstream: SocketAddr, websocket: bool) -> keyward::config::RouteSection {
    keyward::config::RouteSection {
        name: name.into(),
        path_prefix: prefix.into(),
        upstream: format!("http://{upstream}"),
        api_keys: true,
        websocket,
        ..Default::default()
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(kw: &Kw, path: &str, key: Option<&str>) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}{path}", kw.gw.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    if let Some(k) = key {
        req.headers_mut().insert("x-api-key", k.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

fn status_of(e: tokio_tungstenite::tungstenite::Error) -> u16 {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("not an HTTP refusal: {other}"),
    }
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an echo")
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::text(text));
}

/// Waits for the tunnel to end from keyward's side (the stream ends or errors) and returns how
/// long that took.
async fn closed_within(ws: &mut Ws, bound: Duration) -> Duration {
    let start = Instant::now();
    let ended = tokio::time::timeout(bound, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel was still open after {bound:?}");
    start.elapsed()
}

#[tokio::test]
async fn websocket_tunnels_are_decided_then_untouched() {
    let up = echo_server().await;
    let kw = boot_with(|c| {
        c.routes.push(ws_route("ws", "/ws", up, true));
        c.routes.push(ws_route("plain", "/plain", up, false));
    })
    .await;
    let (_, key) = kw
        .key("cats", &[], json!({"rate": {"limit": "2/min", "burst": 2}}))
        .await;
    // No key: refused at the handshake, like any request.
    assert_eq!(status_of(connect(&kw, "/ws", None).await.unwrap_err()), 401);
    // With the key: frames both ways, text and binary, many of them.
    let mut ws = connect(&kw, "/ws", Some(&key)).await.unwrap();
    for i in 0..50 {
        echo(&mut ws, &format!("message {i}")).await;
    }
    ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![0u8, 255, 7]));
    // The tunnel consumed the limit once, at the handshake: one request left of two.
    let mut second = connect(&kw, "/ws", Some(&key)).await.unwrap();
    echo(&mut second, "two").await;
    assert_eq!(status_of(connect(&kw, "/ws", Some(&key)).await.unwrap_err()), 429);
    ws.close(None).await.unwrap();
    second.close(None).await.unwrap();

    // A route without `websocket`: a clear 400, never a tunnel.
    let (_, other) = kw.key("cats", &[], json!({})).await;
    let r = kw
        .http
        .get(format!("{}/plain", kw.gw))
        .header("x-api-key", &other)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    problem(r, 400, "upgrade_not_allowed").await;
}

#[tokio::test]
async fn malformed_handshakes_are_400() {
    let up = echo_server().await;
    let kw = boot_with(|c| c.routes.push(ws_route("ws", "/ws", up, true))).await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let good = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let send = |method: Method, drop: Option<&'static str>, replace: Option<(&'static str, &'static str)>| {
        let mut req = kw
            .http
            .request(method, format!("{}/ws", kw.gw))
            .header("x-api-key", &key);
        for (k, v) in good {
            if Some(k) == drop {
                continue;
            }
            let v = match replace {
                Some((rk, rv)) if rk == k => rv,
                _ => v,
            };
            req = req.header(k, v);
        }
        req.send()
    };
    for (method, drop, replace, why) in [
        (Method::POST, None, None, "POST"),
        (Method::GET, Some("sec-websocket-key"), None, "no key"),
        (Method::GET, None, Some(("sec-websocket-key", "short")), "a short key"),
        (Method::GET, None, Some(("sec-websocket-version", "8")), "version 8"),
        (Method::GET, Some("connection"), None, "no Connection: upgrade"),
    ] {
        let r = send(method, drop, replace).await.unwrap();
        assert_eq!(r.status(), 400, "{why}");
        problem(r, 400, "invalid_upgrade").await;
    }
    // The same handshake, well-formed, is 101 (the upstream's Sec-WebSocket-Accept passed on).
    let r = send(Method::GET, None, None).await.unwrap();
    assert_eq!(r.status(), 101);
    assert_eq!(r.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[tokio::test]
async fn revocation_closes_open_tunnels_within_a_second() {
    let up = echo_server().await;
    let kw = boot_with(|c| c.routes.push(ws_route("ws", "/ws", up, true))).await;
    let (id, key) = kw.key("cats", &[], json!({})).await;
    let (_, other) = kw.key("cats", &[], json!({})).await;
    let mut doomed = connect(&kw, "/ws", Some(&key)).await.unwrap();
    let mut kept = connect(&kw, "/ws", Some(&other)).await.unwrap();
    echo(&mut doomed, "before").await;
    let (s, v) = kw.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None).await;
    assert_eq!(s, 200, "{v}");
    let took = closed_within(&mut doomed, Duration::from_secs(1)).await;
    println!("revoked tunnel closed after {took:?}");
    // Another key's tunnel goes on.
    echo(&mut kept, "after").await;
    // Disabling a key closes its tunnel as well.
    let (id3, key3) = kw.key("cats", &[], json!({})).await;
    let mut disabled = connect(&kw, "/ws", Some(&key3)).await.unwrap();
    echo(&mut disabled, "x").await;
    kw.admin(Method::POST, &format!("/v1/keys/{id3}/disable"), None).await;
    closed_within(&mut disabled, Duration::from_secs(1)).await;
    echo(&mut kept, "still").await;
}

#[tokio::test]
async fn a_key_that_expires_ends_its_tunnel() {
    let up = echo_server().await;
    let kw = boot_with(|c| c.routes.push(ws_route("ws", "/ws", up, true))).await;
    // Expires in 2 s (the tunnel's bound is the key's expiry, not the route's day).
    let at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, key) = kw.key("cats", &[], json!({"expires_at": at})).await;
    let mut ws = connect(&kw, "/ws", Some(&key)).await.unwrap();
    echo(&mut ws, "soon gone").await;
    closed_within(&mut ws, Duration::from_secs(6)).await;
}

#[tokio::test]
async fn revocation_on_one_node_closes_the_tunnel_on_another() {
    let Some(schema) = crate::cluster_store::Schema::new("ws_revocation").await else {
        return;
    };
    let up = echo_server().await;
    let a = crate::cluster_store::node(schema.url(None), |c| c.routes.push(ws_route("ws", "/ws", up, true))).await;
    let b = crate::cluster_store::node(schema.url(None), |c| c.routes.push(ws_route("ws", "/ws", up, true))).await;
    crate::cluster_store::listening(&[&a, &b]).await;
    let (id, key) = a.key("cats", &[], json!({})).await;
    let mut ws = connect(&b, "/ws", Some(&key)).await.unwrap();
    echo(&mut ws, "on node b").await;
    let (s, _) = a.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None).await;
    assert_eq!(s, 200);
    let took = closed_within(&mut ws, Duration::from_secs(1)).await;
    println!("tunnel on node b closed {took:?} after the revocation on node a");
    drop((a, b));
    schema.drop_now().await;
}
