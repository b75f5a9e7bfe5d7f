//! The data plane (issue 18) against real peers on loopback: HTTP correctness towards clients
//! whatever the upstream speaks, HEAD, and streamed responses.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

/// A route section for `upstream` at `prefix`, any method, no scope.
fn route_to(name: &str, prefix: &str, upstream: SocketAddr) -> keyward::config::RouteSection {
    keyward::config::RouteSection {
        name: name.into(),
        path_prefix: prefix.into(),
        upstream: format!("http://{upstream}"),
        api_keys: true,
        ..Default::default()
    }
}

/// Reads one request head (up to the blank line) from `s`.
async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// An HTTP/1.0 upstream (like Python's `http.server`): one response per connection, body
/// delimited by closing it.
async fn http10_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let head = read_head(&mut s).await;
                let body = if head.starts_with("HEAD") { "" } else { "hello from 1.0" };
                let resp = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nServer: old\r\n\r\n{body}");
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Sends a raw request on `s` and reads one response: (status line, headers, body).
async fn exchange(s: &mut TcpStream, req: &str) -> (String, String, String) {
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(s).await;
    let status = head.lines().next().unwrap_or_default().to_owned();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap())
    {
        body.resize(len, 0);
        s.read_exact(&mut body).await.unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut b).await.unwrap();
                line.push(b[0]);
            }
            let n = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            s.read_exact(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_http10_upstream_does_not_downgrade_keep_alive_clients() {
    let old = http10_upstream().await;
    let kw = boot_with(|c| c.routes.push(route_to("old", "/old", old))).await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let addr = kw.gw.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let req = format!("GET /old HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n");
    for _ in 0..3 {
        let (status, head, body) = exchange(&mut s, &req).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{head}");
        assert!(!head.to_ascii_lowercase().contains("connection: close"), "{head}");
        assert_eq!(body, "hello from 1.0");
    }
    // HEAD on a GET route (here: any method) is answered, without a body.
    let (status, _, body) = exchange(
        &mut s,
        &format!("HEAD /old HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\n\r\n"),
    )
    .await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
}

#[tokio::test]
async fn head_is_allowed_wherever_get_is() {
    let kw = boot().await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    // `/fact` is a GET route.
    let r = kw
        .http
        .head(format!("{}/fact", kw.gw))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(kw.up.seen.last()[":method"], vec!["HEAD".to_owned()]);
    // Still a decision: no key, 401; and not on a POST-only route.
    assert_eq!(
        kw.http.head(format!("{}/fact", kw.gw)).send().await.unwrap().status(),
        401
    );
}

/// A Server-Sent Events upstream: the first event at once, the second only when `release`
/// fires, so a proxy that buffers the response would never show the first in time.
async fn sse_upstream(release: tokio::sync::oneshot::Receiver<()>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_head(&mut s).await;
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
        s.write_all(chunk("data: one\n\n").as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        let _ = release.await;
        s.write_all(chunk("data: two\n\n").as_bytes()).await.unwrap();
        s.write_all(b"0\r\n\r\n").await.unwrap();
        let _ = s.shutdown().await;
    });
    addr
}

#[tokio::test]
async fn server_sent_events_stream_without_buffering() {
    let (release, wait) = tokio::sync::oneshot::channel();
    let sse = sse_upstream(wait).await;
    let kw = boot_with(|c| c.routes.push(route_to("events", "/events", sse))).await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let mut r = kw
        .http
        .get(format!("{}/events", kw.gw))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("the first event arrived while the upstream still holds the second")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    release.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"data: two\n\n");
}

/// One HTTP/2 (prior knowledge) request to the gateway, as a gRPC client sends it.
async fn grpc_call(kw: &Kw, path: &str, key: Option<&str>) -> hyper::Response<hyper::body::Incoming> {
    let addr = kw.gw.trim_start_matches("http://").to_owned();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc+proto")
        .header("te", "trailers");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    // An empty message: compressed flag 0, length 0.
    let body = http_body_util::Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]));
    send.send_request(req.body(body).unwrap()).await.unwrap()
}

fn grpc_status(r: &hyper::Response<hyper::body::Incoming>) -> (u16, String, String) {
    let h = r.headers();
    let text = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (r.status().as_u16(), text("grpc-status"), text("grpc-message"))
}

#[tokio::test]
async fn refused_grpc_calls_are_answered_in_grpc() {
    let kw = boot_with(|c| {
        for r in c.routes.iter_mut().filter(|r| r.name == "fact") {
            r.methods.push("POST".into());
        }
    })
    .await;
    // No key: UNAUTHENTICATED, in headers only (a Trailers-Only response), no JSON body.
    let r = grpc_call(&kw, "/fact/cats.Facts/Get", None).await;
    let (status, code, message) = grpc_status(&r);
    assert_eq!((status, code.as_str()), (200, "16"), "{message}");
    assert!(message.contains("missing_credential"), "{message}");
    assert_eq!(r.headers()["content-type"], "application/grpc");
    assert!(r.headers().get("www-authenticate").is_some());
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.is_empty(), "a gRPC client cannot read {body:?}");
    // A key without the route's scope: PERMISSION_DENIED.
    let (_, other) = kw.key("cats", &["other:read"], json!({})).await;
    assert_eq!(
        grpc_status(&grpc_call(&kw, "/fact/cats.Facts/Get", Some(&other)).await).1,
        "7"
    );
    // A rate limit: RESOURCE_EXHAUSTED, with Retry-After.
    let (_, limited) = kw
        .key("cats", &["facts:read"], json!({"rate": {"limit": "1/min", "burst": 1}}))
        .await;
    grpc_call(&kw, "/fact/cats.Facts/Get", Some(&limited)).await;
    let r = grpc_call(&kw, "/fact/cats.Facts/Get", Some(&limited)).await;
    assert_eq!(grpc_status(&r).1, "8");
    assert!(r.headers().get("retry-after").is_some());
    // The upstream down: UNAVAILABLE, its address never said.
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let (_, code, message) = grpc_status(&grpc_call(&kw, "/down/x.Y/Z", Some(&key)).await);
    assert_eq!(code, "14", "{message}");
    assert!(!message.contains("127.0.0.1:9"), "{message}");
    // An unknown path: UNIMPLEMENTED.
    assert_eq!(grpc_status(&grpc_call(&kw, "/nowhere/x.Y/Z", Some(&key)).await).1, "12");
}

fn header_rules(set: &[(&str, &str)], remove: &[&str]) -> Option<keyward::config::HeaderRulesSection> {
    Some(keyward::config::HeaderRulesSection {
        set: set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    })
}

#[tokio::test]
async fn rewrites_header_rules_hosts_and_public_routes() {
    let kw = boot_with(|c| {
        let up = c.routes[0].upstream.clone();
        let mut api = route_to("api", "/api", "127.0.0.1:1".parse().unwrap());
        api.upstream = format!("{up}/base");
        api.strip_prefix = true;
        api.preserve_host = true;
        api.request_headers = header_rules(&[("x-env", "prod")], &["cookie"]);
        api.response_headers = header_rules(&[("x-served-by", "keyward")], &["content-type"]);
        let mut on_host = route_to("host-a", "/", "127.0.0.1:1".parse().unwrap());
        on_host.upstream = up.clone();
        on_host.hosts = vec!["a.example".into(), "*.b.example".into()];
        on_host.request_headers = header_rules(&[("x-route", "host-a")], &[]);
        let mut open = route_to("open", "/open", "127.0.0.1:1".parse().unwrap());
        open.upstream = up.clone();
        open.public = true;
        open.api_keys = false;
        open.rate = Some("2/min".into());
        open.rate_by = keyward_engine::RateBy::ClientIp;
        let mut small = route_to("small", "/small", "127.0.0.1:1".parse().unwrap());
        small.upstream = up.clone();
        small.max_body_size = Some(10);
        let mut quick = route_to("quick", "/slow", "127.0.0.1:1".parse().unwrap());
        quick.upstream = up;
        quick.timeout = Some(Duration::from_millis(100));
        c.routes.retain(|r| r.name != "slow");
        c.routes.extend([api, on_host, open, small, quick]);
    })
    .await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;

    // strip_prefix, base path, header rules both ways, preserve_host.
    let r = kw
        .http
        .get(format!("{}/api/users?page=2", kw.gw))
        .header("x-api-key", &key)
        .header("cookie", "session=secret")
        .header("host", "shop.example:8443")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-served-by"], "keyward");
    assert!(r.headers().get("content-type").is_none(), "removed from the response");
    let seen = kw.up.seen.last();
    assert_eq!(seen[":path"], vec!["/base/users?page=2".to_owned()]);
    assert_eq!(seen["x-env"], vec!["prod".to_owned()]);
    assert!(!seen.contains_key("cookie"));
    assert_eq!(seen["host"], vec!["shop.example:8443".to_owned()]);
    assert_eq!(
        seen["x-keyward-app"],
        vec!["cats".to_owned()],
        "identity headers untouched"
    );

    // Hosts before paths: a.example takes the host route even for /fact.
    let via = |host: &'static str| {
        kw.http
            .get(format!("{}/fact", kw.gw))
            .header("x-api-key", &key)
            .header("host", host)
            .send()
    };
    assert_eq!(via("a.example").await.unwrap().status(), 200);
    assert_eq!(kw.up.seen.last()["x-route"], vec!["host-a".to_owned()]);
    assert_eq!(via("x.b.example").await.unwrap().status(), 200);
    assert_eq!(kw.up.seen.last()["x-route"], vec!["host-a".to_owned()]);
    assert_eq!(via("elsewhere.example").await.unwrap().status(), 200);
    assert!(
        !kw.up.seen.last().contains_key("x-route"),
        "other hosts take the path's route"
    );

    // A public route: no credential, limited per address, no identity but the address; a key
    // sent anyway never reaches the upstream.
    let open = || kw.http.get(format!("{}/open", kw.gw)).header("x-api-key", &key).send();
    assert_eq!(open().await.unwrap().status(), 200);
    let seen = kw.up.seen.last();
    assert!(seen.contains_key("x-keyward-client-ip") && !seen.contains_key("x-keyward-app"));
    assert!(!seen.contains_key("x-api-key"));
    assert_eq!(kw.get("/open", &[]).await.status(), 200);
    problem(kw.get("/open", &[]).await, 429, "rate_limited").await;

    // max_body_size: declared and streamed.
    let post = |body: reqwest::Body| {
        kw.http
            .post(format!("{}/small", kw.gw))
            .header("x-api-key", &key)
            .body(body)
            .send()
    };
    assert_eq!(post("0123456789".into()).await.unwrap().status(), 200);
    problem(post("0123456789a".into()).await.unwrap(), 413, "body_too_large").await;
    let chunks = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from("0123456789"))),
        Ok(hyper::body::Frame::data(bytes::Bytes::from("abc"))),
    ]);
    let streamed = reqwest::Body::wrap(http_body_util::StreamBody::new(chunks));
    problem(post(streamed).await.unwrap(), 413, "body_too_large").await;

    // The route's own timeout (the upstream takes 5 s).
    let t = std::time::Instant::now();
    problem(kw.get("/slow", &[("x-api-key", &key)]).await, 504, "upstream_timeout").await;
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// A TLS upstream with `leaf`'s certificate: answers `secure` to every request.
async fn tls_upstream(leaf: &crate::tls::Leaf) -> SocketAddr {
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let cfg =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone()], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecure")
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstreams_trusted_untrusted_and_wrong_name() {
    let ca = crate::tls::ca("upstream CA");
    let server = crate::tls::leaf(&ca, 7, true, false);
    let up = tls_upstream(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let kw = boot_with(|c| {
        let https = |name: &str, prefix: &str| {
            let mut r = route_to(name, prefix, up);
            r.upstream = format!("https://localhost:{}", up.port());
            r
        };
        let mut trusted = https("trusted", "/trusted");
        trusted.ca_file = Some(ca_file.clone());
        let untrusted = https("untrusted", "/untrusted");
        let mut wrong = https("wrong", "/wrong");
        wrong.ca_file = Some(ca_file.clone());
        wrong.server_name = Some("other.example".into());
        c.routes.extend([trusted, untrusted, wrong]);
    })
    .await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let r = kw.get("/trusted", &[("x-api-key", &key)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "secure");
    for path in ["/untrusted", "/wrong"] {
        let v = problem(kw.get(path, &[("x-api-key", &key)]).await, 502, "upstream_tls").await;
        assert!(!v.to_string().contains("localhost"), "no upstream detail in {v}");
    }
}
