//! Hostile HTTP against the real listeners (issue 9, point 2): request smuggling, header limits,
//! oversized bodies, slow clients, connection floods, path tricks and hop-by-hop abuse. What
//! `hostile.rs` covers already (credential headers, `..` / `%2e%2e` / `%2f`, admin body abuse) is
//! not repeated. Every case: no crash, the right status, no 5xx, and nothing reaches the
//! upstream that should not.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Every response status in a raw HTTP/1.1 byte stream (pipelined responses included).
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw[i + 9..].get(..3).and_then(|s| s.parse().ok()))
        .collect()
}

/// Reads until the peer closes or `limit` passes; what was read and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await.is_ok();
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

#[tokio::test]
async fn request_smuggling_is_refused_or_harmless() {
    let kw = boot().await;
    // Reads facts only: a smuggled `POST /facts` would need facts:write.
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let smuggled = format!("POST /facts HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-length: 0\r\n\r\n");
    let head = |framing: &str| {
        format!("POST /echo HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-type: text/plain\r\n{framing}")
    };
    let chunked_then_smuggled = format!("0\r\n\r\n{smuggled}");
    let cases: Vec<(&str, String, &[u16])> = vec![
        // CL.TE: Transfer-Encoding wins (RFC 9112 §6.3), the connection is not reused.
        (
            "content-length with transfer-encoding",
            format!(
                "{}content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{chunked_then_smuggled}",
                head(""),
                chunked_then_smuggled.len()
            ),
            &[200, 400],
        ),
        // TE.CL the other way round.
        (
            "transfer-encoding with a short content-length",
            format!(
                "{}transfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n{chunked_then_smuggled}",
                head("")
            ),
            &[200, 400],
        ),
        (
            "conflicting content-lengths",
            format!("{}content-length: 3\r\ncontent-length: 40\r\n\r\nabc{smuggled}", head("")),
            &[400],
        ),
        (
            "conflicting content-lengths in one field",
            format!("{}content-length: 3, 40\r\n\r\nabc{smuggled}", head("")),
            &[400],
        ),
        (
            "signed content-length",
            format!("{}content-length: +3\r\n\r\nabc{smuggled}", head("")),
            &[400],
        ),
        (
            "xchunked",
            format!("{}transfer-encoding: xchunked\r\n\r\n{chunked_then_smuggled}", head("")),
            &[400, 501],
        ),
        (
            "chunked, identity",
            format!("{}transfer-encoding: chunked, identity\r\n\r\n{chunked_then_smuggled}", head("")),
            &[400, 501],
        ),
        (
            "chunked then identity in two fields",
            format!(
                "{}transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n{chunked_then_smuggled}",
                head("")
            ),
            &[400, 501],
        ),
        (
            "obs-fold chunked",
            format!("{}transfer-encoding: identity\r\n chunked\r\n\r\n{chunked_then_smuggled}", head("")),
            &[400],
        ),
        (
            "space before the colon",
            format!("{}transfer-encoding : chunked\r\n\r\n{chunked_then_smuggled}", head("")),
            &[400],
        ),
        (
            "tab-separated chunked",
            format!("{}transfer-encoding:\tchunked\r\n\r\n{chunked_then_smuggled}", head("")),
            &[200, 400],
        ),
        (
            "bad chunk size",
            format!("{}transfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n{smuggled}", head("")),
            &[400],
        ),
        (
            "chunk size overflow",
            format!(
                "{}transfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n{smuggled}",
                head("")
            ),
            &[400],
        ),
        (
            "bare LF line endings",
            format!(
                "POST /echo HTTP/1.1\nhost: x\nx-api-key: {key}\ntransfer-encoding: chunked\n\n{chunked_then_smuggled}"
            ),
            &[200, 400],
        ),
        (
            "HTTP/1.0 with transfer-encoding",
            format!(
                "POST /echo HTTP/1.0\r\nhost: x\r\nx-api-key: {key}\r\ntransfer-encoding: chunked\r\n\r\n{chunked_then_smuggled}"
            ),
            &[200, 400],
        ),
    ];
    for (name, bytes, allowed) in &cases {
        let before = kw.up.seen.count();
        let resp = raw(&kw.gw, bytes.as_bytes()).await;
        let got = statuses(&resp);
        assert!(!got.is_empty(), "{name}: no response: {resp:?}");
        assert!(
            allowed.contains(&got[0]),
            "{name}: got {got:?}, want one of {allowed:?}: {resp}"
        );
        // A second request parsed from the same bytes is keyward's to decide (403: no
        // facts:write), never the upstream's.
        for s in &got[1..] {
            assert!(*s == 403 || *s == 400, "{name}: a second response {s}: {resp}");
        }
        assert!(got.iter().all(|s| *s < 500), "{name}: {got:?}");
        let seen = kw.up.seen.0.lock().unwrap()[before..].to_vec();
        assert!(seen.len() <= 1, "{name}: the upstream saw {} requests", seen.len());
        for h in &seen {
            assert_eq!(h[":path"], vec!["/echo".to_owned()], "{name}");
            // Unambiguous framing upstream: never both, never twice.
            let cl = h.get("content-length").map_or(0, Vec::len);
            let te = h.get("transfer-encoding").map_or(0, Vec::len);
            assert!(cl + te <= 1, "{name}: upstream framing {h:?}");
        }
    }
    // The smuggled request never reached the upstream.
    let seen = kw.up.seen.0.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|h| h[":path"][0].starts_with("/facts")),
        "a smuggled request reached the upstream"
    );
}

#[tokio::test]
async fn header_count_and_size_limits() {
    let kw = boot().await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let with_headers = |target: &str, n: usize, each: usize| {
        let mut r = format!("GET {target} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\nconnection: close\r\n");
        for i in 0..n {
            r.push_str(&format!("x-h{i}: {}\r\n", "v".repeat(each)));
        }
        r.push_str("\r\n");
        r
    };
    // 3 headers of our own + 90: fine.
    let ok = raw(&kw.gw, with_headers("/fact", 90, 10).as_bytes()).await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    // Over 100 header fields: 431, on the gateway and the admin listener, nothing proxied.
    let before = kw.up.seen.count();
    for base in [&kw.gw, &kw.admin] {
        let many = raw(base, with_headers("/fact", 120, 1).as_bytes()).await;
        assert_eq!(status_of(&many), 431, "{base}: {many}");
        // A head over 64 KiB in total (every field small): 431.
        let big = raw(base, with_headers("/fact", 90, 1000).as_bytes()).await;
        assert_eq!(status_of(&big), 431, "{base}: {big}");
        // One huge field: 431.
        let huge = raw(base, with_headers("/fact", 1, 100 * 1024).as_bytes()).await;
        assert_eq!(status_of(&huge), 431, "{base}: {huge}");
        // A request line over the limit: refused (414 or 431), no crash.
        let long = raw(
            base,
            format!("GET /fact?{} HTTP/1.1\r\nhost: x\r\n\r\n", "q".repeat(100 * 1024)).as_bytes(),
        )
        .await;
        let st = status_of(&long);
        assert!(st == 414 || st == 431, "{base}: {st}");
    }
    assert_eq!(kw.up.seen.count(), before, "nothing over a limit reached the upstream");
    // HTTP/2 (prior knowledge) gets the same limit on the header list.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut req = h2.get(format!("{}/fact", kw.gw)).header("x-api-key", &key);
    for i in 0..90 {
        req = req.header(format!("x-h{i}"), "v".repeat(1000));
    }
    match req.send().await {
        Ok(r) => assert!(r.status().is_client_error(), "{}", r.status()),
        // hyper answers an oversized header list by resetting the stream.
        Err(e) => assert!(!e.is_timeout(), "{e}"),
    }
    assert_eq!(kw.up.seen.count(), before);
    // The gateway still serves.
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
}

#[tokio::test]
async fn oversized_bodies_on_admin_and_token_endpoints() {
    let kw = boot_with(|c| c.oauth.enabled = true).await;
    kw.key("cats", &["facts:read"], json!({})).await;
    // Admin: a key request over the limit, with a Content-Length and chunked (no length).
    let big = json!({"app": "cats", "name": "n".repeat(100_000)}).to_string();
    let r = kw
        .http
        .post(format!("{}/v1/keys", kw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    problem(r, 413, "body_too_large").await;
    // The same body chunked, without a length: refused once it passes the limit.
    let mut chunked = format!(
        "POST /v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for c in big.as_bytes().chunks(4096) {
        chunked.push_str(&format!("{:x}\r\n{}\r\n", c.len(), String::from_utf8_lossy(c)));
    }
    chunked.push_str("0\r\n\r\n");
    let resp = raw(&kw.admin, chunked.as_bytes()).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert!(resp.contains("body-too-large"), "{resp}");
    // A lying Content-Length far beyond the limit is refused before the body is read.
    let resp = raw(
        &kw.admin,
        format!(
            "POST /v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&resp), 413, "{resp}");

    // Token endpoint: over the form limit (16 KiB), and far over it.
    for size in [20_000usize, 3_000_000] {
        let body = format!("grant_type=client_credentials&scope={}", "a".repeat(size));
        let r = kw
            .http
            .post(format!("{}/oauth/token", kw.gw))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{size}");
    }
    let resp = raw(
        &kw.gw,
        b"POST /oauth/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 10000000000\r\n\r\ngrant_type=",
    )
    .await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert_eq!(kw.up.seen.count(), 0);
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let kw = boot_with(|c| c.gateway.header_read_timeout = Duration::from_secs(1)).await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    for base in [kw.gw.clone(), kw.admin.clone()] {
        // Nothing at all.
        let t = Instant::now();
        let mut s = TcpStream::connect(addr(&base)).await.unwrap();
        let (got, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
        assert!(closed, "{base}: an idle connection stayed open");
        assert!(got.is_empty() || status_of(&got) == 408, "{base}: {got}");
        assert!(t.elapsed() >= Duration::from_millis(900), "{base}: closed too early");
        // The first bytes of an HTTP/2 preface, then nothing.
        let mut s = TcpStream::connect(addr(&base)).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
        assert!(closed, "{base}: a stalled preface stayed open");
        // A request head that never finishes (slowloris: one header byte at a time).
        let t = Instant::now();
        let mut s = TcpStream::connect(addr(&base)).await.unwrap();
        s.write_all(format!("GET /fact HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\n").as_bytes())
            .await
            .unwrap();
        let mut closed = false;
        for _ in 0..60 {
            if s.write_all(b"x").await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut b = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => {
                    let text = String::from_utf8_lossy(&b[..n]).into_owned();
                    assert!(status_of(&text) == 408 || status_of(&text) == 0, "{text}");
                }
                Err(_) => {}
            }
        }
        assert!(closed, "{base}: a dripping header kept the connection open");
        assert!(t.elapsed() < Duration::from_secs(5), "{base}: {:?}", t.elapsed());
        // Idle keep-alive: a finished request, then silence; closed after the same deadline.
        let mut s = TcpStream::connect(addr(&base)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let t = Instant::now();
        let (got, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
        assert!(closed, "{base}: an idle keep-alive connection stayed open");
        assert!(status_of(&got) > 0, "{base}: {got}");
        assert!(t.elapsed() >= Duration::from_millis(900), "{base}: closed too early");
    }
    assert_eq!(kw.up.seen.count(), 0, "no partial request reached the upstream");
    // A client that reads its response slowly is not a slow *sender*: fine.
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
}

#[tokio::test]
async fn connection_flood_waits_at_the_cap() {
    let kw = boot_with(|c| {
        c.gateway.max_connections = 4;
        c.gateway.header_read_timeout = Duration::from_secs(2);
    })
    .await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    // Four connections hold every slot and send nothing.
    let mut hogs = Vec::new();
    for _ in 0..4 {
        hogs.push(TcpStream::connect(addr(&kw.gw)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fifth, well-behaved client: connected by the kernel, but not served while the cap holds.
    let t = Instant::now();
    let mut s = TcpStream::connect(addr(&kw.gw)).await.unwrap();
    s.write_all(format!("GET /fact HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut b = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(800), s.read(&mut b)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    assert_eq!(kw.up.seen.count(), 0);
    // The hogs are closed at the header deadline; then the waiting client is served.
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(8)).await;
    assert_eq!(status_of(&got), 200, "{got}");
    assert!(t.elapsed() >= Duration::from_millis(1500), "{:?}", t.elapsed());
    for mut h in hogs {
        let (_, closed) = read_until_closed(&mut h, Duration::from_secs(1)).await;
        assert!(closed, "a hog is still open");
    }
    // Many clients at once against a cap of 4: all are served, in turn, none fails.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let http = kw.http.clone();
        let url = format!("{}/fact", kw.gw);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            http.get(url)
                .header("x-api-key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    // The admin listener has its own slots: it answered throughout.
    let (s, _) = kw.admin(reqwest::Method::GET, "/v1/apps", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn path_tricks_never_reach_another_route() {
    // A public catch-all route next to the scoped ones: `//facts` must not become `/facts`.
    let kw = boot_with(|c| {
        let mut root = c.routes.iter().find(|r| r.name == "echo").unwrap().clone();
        root.name = "root".into();
        root.path_prefix = "/".into();
        root.methods = vec!["GET".into()];
        c.routes.push(root);
    })
    .await;
    // Only good for the unscoped routes (/echo, /): never /facts (facts:read).
    let (_, key) = kw.key("cats", &["other:read"], json!({})).await;
    let before = kw.up.seen.count();
    let tricks = [
        "/echo/../facts",
        "/echo/%2E%2E/facts",
        "/echo/%2e./facts",
        "/echo/.%2e/facts",
        "/echo%2f..%2ffacts",
        "/echo%2F..%2Ffacts",
        "/echo/%252e%252e/facts",
        "/echo%252f..%252ffacts",
        "/echo%255c..%255cfacts",
        "/echo/..%5cfacts",
        "/echo/..\\facts",
        "/echo\\..\\facts",
        "/echo/./../facts",
        "/echo/..;/facts",
        "/echo/%2e%2e;/facts",
        "//facts",
        "///facts",
        "/echo//../facts",
        "/./facts",
        "/%2e/facts",
        "/%2ffacts",
        "/facts/",
        "http://x/echo/../facts",
    ];
    for p in tricks {
        let resp = raw(
            &kw.gw,
            format!("GET {p} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let st = status_of(&resp);
        assert!(
            st == 400 || st == 403 || st == 404,
            "{p}: {st} (want 400, or 403 for the scoped route): {resp}"
        );
    }
    let seen = kw.up.seen.0.lock().unwrap()[before..].to_vec();
    assert!(
        seen.is_empty(),
        "tricks reached the upstream: {:?}",
        seen.iter().map(|h| h[":path"][0].clone()).collect::<Vec<_>>()
    );
    // The honest paths still work; an encoded character that is not a separator is fine.
    let ok = kw.get("/echo/a%20b", &[("x-api-key", &key)]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(kw.up.seen.last()[":path"], vec!["/echo/a%20b".to_owned()]);
    assert_eq!(kw.get("/other", &[("x-api-key", &key)]).await.status(), 200);
}

#[tokio::test]
async fn hop_by_hop_abuse_cannot_strip_or_spoof_identity() {
    let kw = boot().await;
    let (id, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let resp = raw(
        &kw.gw,
        format!(
            "GET /echo HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\n\
             connection: keep-alive, x-keyward-app, x-api-key, x-keyward-scopes, x-keyward-client-ip\r\n\
             connection: close, x-keyward-key-id\r\n\
             x-keyward-app: evil\r\nX-Keyward-Key-Id: key_evil\r\nx-keyward-scopes: admin\r\n\
             x-keyward-client-ip: 10.6.6.6\r\nx-keyward-verified: true\r\n\
             keep-alive: timeout=999\r\nte: trailers\r\nupgrade: h2c\r\nproxy-connection: keep-alive\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let h = kw.up.seen.last();
    assert_eq!(h["x-keyward-app"], vec!["cats".to_owned()]);
    assert_eq!(h["x-keyward-key-id"], vec![id]);
    assert_eq!(h["x-keyward-scopes"], vec!["facts:read".to_owned()]);
    assert_eq!(h["x-keyward-client-ip"], vec!["127.0.0.1".to_owned()]);
    assert!(!h.contains_key("x-keyward-verified"), "{h:?}");
    for hop in ["x-api-key", "keep-alive", "te", "upgrade", "proxy-connection"] {
        assert!(!h.contains_key(hop), "{hop} reached the upstream: {h:?}");
    }
    assert!(
        h.get("connection")
            .is_none_or(|v| v.iter().all(|c| !c.contains("x-keyward"))),
        "{h:?}"
    );
    let all: String = h.values().flatten().cloned().collect::<Vec<_>>().join("\n");
    assert!(
        !all.contains("evil") && !all.contains("10.6.6.6") && !all.contains(&key),
        "{h:?}"
    );

    // Without a credential, `Connection` naming the credential header changes nothing: 401.
    let resp = raw(
        &kw.gw,
        b"GET /fact HTTP/1.1\r\nhost: x\r\nconnection: close, x-api-key\r\nx-keyward-app: cats\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 401, "{resp}");
    assert_eq!(kw.up.seen.count(), 1);
}

/// Sends `head` and the first bytes of its body, then either nothing more or one byte every
/// 100 ms (`drip`); the response and how long until keyward closed the connection.
async fn slow_body(base: &str, head: &str, first: &[u8], drip: bool) -> (String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr(base)).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "{base}: still open: {}",
            String::from_utf8_lossy(&got)
        );
        if drip {
            // A write can fail once keyward has answered and closed: then read what it said.
            let _ = s.write_all(b" ").await;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), t.elapsed())
}

#[tokio::test]
async fn slow_bodies_are_cut_off_where_keyward_reads_them() {
    let kw = boot_with(|c| {
        c.oauth.enabled = true;
        c.verify.listen = Some("127.0.0.1:0".parse().unwrap());
        c.gateway.body_read_timeout = Duration::from_secs(1);
        // The harness's 500 ms would cut the paused upload below: that bound is the upstream's.
        c.gateway.upstream_timeout = Duration::from_secs(5);
    })
    .await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let verify = kw.verify.clone().unwrap();
    let json_head = |path: &str, auth: &str| {
        format!("POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {auth}\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n")
    };
    let admin_head = json_head("/v1/keys", ADMIN_TOKEN);
    let verify_head = json_head("/v1/verify", VERIFY_TOKEN);
    let token_head = "POST /oauth/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 200\r\n\r\n".to_owned();
    let cases = [
        (&kw.admin, &admin_head, &b"{\"app\":"[..], "body-timeout"),
        (&verify, &verify_head, &b"{\"path\":"[..], "body-timeout"),
        (
            &kw.gw,
            &token_head,
            &b"grant_type="[..],
            "\"error\":\"invalid_request\"",
        ),
    ];
    for (base, head, first, marker) in cases {
        // The body stops, and the body drips: one deadline for the whole body, not per byte.
        for drip in [false, true] {
            let (resp, took) = slow_body(base, head, first, drip).await;
            assert_eq!(status_of(&resp), 408, "{base} drip={drip}: {resp}");
            assert!(resp.contains(marker), "{base} drip={drip}: {resp}");
            assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
            assert!(
                took >= Duration::from_millis(900),
                "{base} drip={drip}: answered after {took:?}"
            );
            assert!(
                took < Duration::from_secs(5),
                "{base} drip={drip}: answered after {took:?}"
            );
        }
    }
    // The token endpoint's answer stays an OAuth error: not cached.
    let (resp, _) = slow_body(&kw.gw, &token_head, b"", false).await;
    assert!(resp.to_ascii_lowercase().contains("cache-control: no-store"), "{resp}");
    // A chunked token request over the form limit is refused while it is read, as OAuth JSON.
    let mut chunked = "POST /oauth/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_owned();
    for _ in 0..8 {
        chunked.push_str(&format!("1000\r\n{}\r\n", "a".repeat(4096)));
    }
    chunked.push_str("0\r\n\r\n");
    let resp = raw(&kw.gw, chunked.as_bytes()).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert!(resp.contains("\"error\":\"invalid_request\""), "{resp}");
    // A body proxied to the upstream is streamed, not cut: a pause longer than the deadline
    // in the middle of an upload is the upstream's business.
    let mut s = TcpStream::connect(addr(&kw.gw)).await.unwrap();
    s.write_all(format!("POST /echo/upload HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-length: 10\r\nconnection: close\r\n\r\nfirst").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"-last").await.unwrap();
    let (resp, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(kw.up.seen.last()[":body-len"], vec!["10".to_owned()]);
    // Bodies that arrive in time are untouched, and keyward still serves after all this.
    let (status, _) = kw
        .admin(reqwest::Method::POST, "/v1/apps", Some(json!({"name": "dogs"})))
        .await;
    assert_eq!(status, 201);
}
