//! Protocols against real servers: HTTP/1.1 pooling, HTTP/1.0, h2c, h2 over TLS (ALPN), auto,
//! streaming bodies both ways, trailers, h2 reconnect and stream resets, upgrades.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use keyward_upstream::{PoolOptions, Protocol, RequestBody, Upstreams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test]
async fn http1_keep_alive_reuses_one_connection_and_sets_host() {
    let s = Server::start(1, echo_id()).await;
    let ups = build(&[group("g", vec![s.url()])]);
    let g = ups.group("g").unwrap();
    for i in 0..5 {
        let resp = g.send(get(&format!("/a/{i}?q=1")), &opts()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-version"], "HTTP/1.1");
        assert_eq!(resp.headers()["x-host"], s.addr.to_string());
        assert_eq!(text(resp).await, format!("server 1 GET /a/{i}?q=1"));
    }
    assert_eq!(s.requests(), 5);
    assert_eq!(
        s.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "keep-alive reuse"
    );
    let st = ups.status();
    assert_eq!(st[0].targets[0].protocol, "http1");
    assert_eq!(st[0].targets[0].in_flight, 0, "bodies read: nothing in flight");
}

#[tokio::test]
async fn http1_idle_timeout_and_idle_cap() {
    let s = Server::start(1, echo_id()).await;
    let pool = PoolOptions {
        idle_timeout: Duration::from_millis(300),
        max_idle_per_target: 1,
    };
    let ups = Upstreams::build(&[group("g", vec![s.url()])], pool).unwrap();
    let g = ups.group("g").unwrap();
    let conns = || s.connections.load(std::sync::atomic::Ordering::SeqCst);
    // Three responses open at once: three connections.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(g.send(get("/"), &opts()).await.unwrap());
    }
    assert_eq!(conns(), 3);
    for r in open {
        text(r).await;
    }
    // Only one was kept idle: three more at once need two new connections.
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(g.send(get("/"), &opts()).await.unwrap());
    }
    assert_eq!(conns(), 5, "the idle cap kept one connection");
    for r in open {
        text(r).await;
    }
    // An idle connection older than idle_timeout is not reused.
    tokio::time::sleep(Duration::from_millis(450)).await;
    text(g.send(get("/"), &opts()).await.unwrap()).await;
    assert_eq!(conns(), 6, "expired idle connection replaced");
    text(g.send(get("/"), &opts()).await.unwrap()).await;
    assert_eq!(conns(), 6, "fresh idle connection reused");
}

#[tokio::test]
async fn http10_upstream_works_and_its_version_is_reported() {
    let (addr, count, _t) = http10_server().await;
    let ups = build(&[group("g", vec![url(addr)])]);
    let g = ups.group("g").unwrap();
    for _ in 0..3 {
        let resp = g.send(get("/"), &opts()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // The upstream's version; the gateway answers its client in the client's version.
        assert_eq!(resp.version(), Version::HTTP_10);
        assert_eq!(text(resp).await, "hello from 1.0");
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one connection per request"
    );
}

fn trailers_handler() -> Handler {
    handler(|req: Request<hyper::body::Incoming>, _| async move {
        let version = format!("{:?}", req.version());
        // Echo the request body, then trailers.
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        t.insert("grpc-message", "fine".parse().unwrap());
        let frames = VecDeque::from([
            Frame::data(Bytes::from_static(b"echo:")),
            Frame::data(body),
            Frame::trailers(t),
        ]);
        Response::builder()
            .header("x-version", version)
            .body(TestBody::Frames(frames))
            .unwrap()
    })
}

async fn trailers_pass_through(ups: &Upstreams, want: &str) {
    let g = ups.group("g").unwrap();
    // A streamed request body (three chunks through a channel).
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = Request::post("/grpc.Echo/Say")
        .header("content-type", "application/grpc")
        .body(RequestBody::boxed(TestBody::Chan(rx)))
        .unwrap();
    let feeder = tokio::spawn(async move {
        for c in ["one ", "two ", "three"] {
            tx.send(Frame::data(Bytes::from_static(c.as_bytes()))).await.unwrap();
        }
    });
    let resp = g.send(req, &opts()).await.unwrap();
    feeder.await.unwrap();
    assert_eq!(resp.headers()["x-version"], want);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers passed through");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(collected.to_bytes(), "echo:one two three");
}

#[tokio::test]
async fn h2c_streams_bodies_and_trailers_on_one_connection() {
    let s = Server::start(1, trailers_handler()).await;
    let mut cfg = group("g", vec![s.url()]);
    cfg.protocol = Protocol::H2c;
    let ups = build(&[cfg]);
    trailers_pass_through(&ups, "HTTP/2.0").await;
    // Concurrent requests share one multiplexed connection.
    let g = ups.group("g").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let g = Arc::clone(&g);
        tasks.push(tokio::spawn(async move {
            text(g.send(get("/"), &opts()).await.unwrap()).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "echo:");
    }
    assert_eq!(s.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(ups.status()[0].targets[0].protocol, "h2c");
}

#[tokio::test]
async fn plain_http_auto_is_http1() {
    let s = Server::start(1, echo_id()).await;
    let ups = build(&[group("g", vec![s.url()])]);
    let resp = ups.group("g").unwrap().send(get("/"), &opts()).await.unwrap();
    assert_eq!(resp.headers()["x-version"], "HTTP/1.1");
}

struct TlsUp {
    _dir: tempfile::TempDir,
    server: Server,
    ca_file: std::path::PathBuf,
}

async fn tls_up(alpn: &[&[u8]], h: Handler) -> TlsUp {
    let ca = ca("up-ca");
    let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1"], false);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write(&dir, "ca.pem", &ca.pem);
    let tls = Tls::Server {
        cert_pem: cert,
        key_pem: key,
        alpn: alpn.iter().map(|a| a.to_vec()).collect(),
        client_ca: None,
    };
    let server = Server::start_on("127.0.0.1:0".parse().unwrap(), 1, h, tls).await;
    TlsUp {
        _dir: dir,
        server,
        ca_file,
    }
}

fn tls_group(up: &TlsUp, protocol: Protocol) -> keyward_upstream::GroupConfig {
    let mut cfg = group(
        "g",
        vec![format!("https://localhost:{}", up.server.addr.port()).parse().unwrap()],
    );
    cfg.ca_file = Some(up.ca_file.clone());
    cfg.protocol = protocol;
    cfg
}

#[tokio::test]
async fn h2_over_tls_streams_trailers() {
    let up = tls_up(&[b"h2"], trailers_handler()).await;
    let ups = build(&[tls_group(&up, Protocol::H2)]);
    trailers_pass_through(&ups, "HTTP/2.0").await;
    assert_eq!(ups.status()[0].targets[0].protocol, "h2");
}

#[tokio::test]
async fn auto_over_tls_follows_alpn() {
    let h2 = tls_up(&[b"h2", b"http/1.1"], echo_id()).await;
    let ups = build(&[tls_group(&h2, Protocol::Auto)]);
    assert_eq!(ups.status()[0].targets[0].protocol, "auto");
    let resp = ups.group("g").unwrap().send(get("/"), &opts()).await.unwrap();
    assert_eq!(resp.headers()["x-version"], "HTTP/2.0");
    assert_eq!(ups.status()[0].targets[0].protocol, "h2");

    let h1 = tls_up(&[b"http/1.1"], echo_id()).await;
    let ups = build(&[tls_group(&h1, Protocol::Auto)]);
    let g = ups.group("g").unwrap();
    for _ in 0..3 {
        let resp = g.send(get("/"), &opts()).await.unwrap();
        assert_eq!(resp.headers()["x-version"], "HTTP/1.1");
        text(resp).await;
    }
    assert_eq!(ups.status()[0].targets[0].protocol, "http1");
    assert_eq!(
        h1.server.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "pooled after ALPN"
    );

    // protocol = "h2" against an upstream that offers only HTTP/1.1: a clear error.
    let ups = build(&[tls_group(&h1, Protocol::H2)]);
    let e = ups.group("g").unwrap().send(get("/"), &opts()).await.unwrap_err();
    // (rustls' server refuses the handshake: no common ALPN protocol.)
    assert_eq!(e.code(), "upstream_tls");
    assert!(e.to_string().contains("ALPN"), "{e}");
}

#[tokio::test]
async fn h2_reconnects_after_its_connection_goes_away() {
    let s = Server::start(1, echo_id()).await;
    let addr = s.addr;
    let mut cfg = group("g", vec![s.url()]);
    cfg.protocol = Protocol::H2c;
    cfg.max_fails = 0;
    let ups = build(&[cfg]);
    let g = ups.group("g").unwrap();
    assert_eq!(
        text(g.send(get("/1"), &opts()).await.unwrap()).await,
        "server 1 GET http://".to_owned() + &addr.to_string() + "/1"
    );
    s.kill();
    drop(s);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s2 = Server::start_on(addr, 2, echo_id(), Tls::None).await;
    let body = text(g.send(get("/2"), &opts()).await.unwrap()).await;
    assert!(body.starts_with("server 2 GET"), "{body}");
    assert_eq!(s2.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn h2_stream_reset_is_an_error_not_a_panic() {
    // A handler that panics makes hyper reset the stream (RST_STREAM INTERNAL_ERROR) while the
    // connection lives on.
    let s = Server::start(
        1,
        handler(|req: Request<hyper::body::Incoming>, _| async move {
            if req.uri().path() == "/reset" {
                panic!("reset this stream");
            }
            Response::new(TestBody::text("ok"))
        }),
    )
    .await;
    let mut cfg = group("g", vec![s.url()]);
    cfg.protocol = Protocol::H2c;
    let ups = build(&[cfg]);
    let g = ups.group("g").unwrap();
    let e = g
        .send(Request::post("/reset").body(RequestBody::from("x")).unwrap(), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "upstream_reset", "{e}");
    assert_eq!(text(g.send(get("/fine"), &opts()).await.unwrap()).await, "ok");
}

#[tokio::test]
async fn garbage_response_is_a_protocol_error() {
    let (addr, _, _t) = raw_server(|mut tcp| async move {
        let _ = read_head(&mut tcp).await;
        let _ = tcp.write_all(b"SMTP READY\r\n\r\n").await;
    })
    .await;
    let ups = build(&[group("g", vec![url(addr)])]);
    let e = ups.group("g").unwrap().send(get("/"), &opts()).await.unwrap_err();
    assert_eq!(e.code(), "upstream_protocol", "{e}");
}

#[tokio::test]
async fn upgrade_response_gives_the_upstream_stream() {
    // An upstream that accepts `Upgrade: echo` and echoes bytes on the upgraded connection.
    let s = Server::start(
        1,
        handler(|mut req: Request<hyper::body::Incoming>, _| async move {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let up = on.await.unwrap();
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 64];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => io.write_all(&buf[..n]).await.unwrap(),
                    }
                }
            });
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(TestBody::empty())
                .unwrap()
        }),
    )
    .await;
    let ups = build(&[group("g", vec![s.url()])]);
    let g = ups.group("g").unwrap();
    let req = Request::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(RequestBody::Empty)
        .unwrap();
    let mut resp = g.send(req, &opts()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
    io.write_all(b"hello tunnel").await.unwrap();
    let mut buf = [0u8; 12];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello tunnel");
    drop(resp);
    // The upgraded connection never goes back to the pool: the next request opens a new one.
    text(g.send(get("/"), &opts()).await.unwrap()).await;
    assert_eq!(s.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http1_restarted_upstream_stale_idle_connections_are_replaced() {
    let s = Server::start(1, echo_id()).await;
    let addr = s.addr;
    let mut cfg = group("g", vec![s.url()]);
    cfg.max_fails = 1;
    let ups = build(&[cfg]);
    let g = ups.group("g").unwrap();
    // Three idle connections in the pool.
    let open = vec![
        g.send(get("/"), &opts()).await.unwrap(),
        g.send(get("/"), &opts()).await.unwrap(),
        g.send(get("/"), &opts()).await.unwrap(),
    ];
    for r in open {
        text(r).await;
    }
    s.kill();
    drop(s);
    let s2 = Server::start_on(addr, 2, echo_id(), Tls::None).await;
    // One target only, no retry elsewhere: the stale connections must not surface as errors.
    for _ in 0..3 {
        let body = text(g.send(get("/again"), &opts()).await.unwrap()).await;
        assert_eq!(body, "server 2 GET /again");
    }
    assert!(ups.status()[0].targets[0].healthy);
    assert_eq!(s2.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn h2_goaway_after_each_request_is_followed_by_a_new_connection() {
    // An h2c server that sends GOAWAY (graceful shutdown) on every connection after one request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = conns.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let served = Arc::new(tokio::sync::Notify::new());
                let s2 = served.clone();
                let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    s2.notify_one();
                    async move { Ok::<_, std::convert::Infallible>(Response::new(TestBody::text(format!("conn {n}")))) }
                });
                let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = served.notified() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    let mut cfg = group("g", vec![url(addr)]);
    cfg.protocol = Protocol::H2c;
    cfg.max_fails = 0;
    let ups = build(&[cfg]);
    let g = ups.group("g").unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let resp = g.send(get("/"), &opts()).await.unwrap();
        seen.push(text(resp).await);
    }
    // Every request succeeded; after each GOAWAY the next one went on a new connection (a
    // request that reached the server before its GOAWAY is still served on the old one).
    let n: Vec<usize> = seen
        .iter()
        .map(|s| s.trim_start_matches("conn ").parse().unwrap())
        .collect();
    assert!(n.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1), "{seen:?}");
    assert!(n[3] >= 2, "no new connection after GOAWAY: {seen:?}");
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), n[3]);
    server.abort();
}

#[tokio::test]
async fn hostile_responses_are_errors_not_panics() {
    // A 1 MiB response header, a header without a colon, a bad status, a lying Content-Length.
    let cases: [(&str, &[u8]); 3] = [
        ("huge header", b"HTTP/1.1 200 OK\r\nx-big: "),
        ("bad status", b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n"),
        ("no colon", b"HTTP/1.1 200 OK\r\nbroken header line\r\n\r\n"),
    ];
    for (name, head) in cases {
        let huge = name == "huge header";
        let (addr, _, _t) = raw_server(move |mut tcp| async move {
            let _ = read_head(&mut tcp).await;
            let _ = tcp.write_all(head).await;
            if huge {
                let _ = tcp.write_all(&vec![b'a'; 1 << 20]).await;
                let _ = tcp.write_all(b"\r\n\r\n").await;
            }
        })
        .await;
        let ups = build(&[group("g", vec![url(addr)])]);
        let e = ups.group("g").unwrap().send(get("/"), &opts()).await.unwrap_err();
        assert_eq!(e.code(), "upstream_protocol", "{name}: {e}");
    }
    // A body shorter than its Content-Length: the headers arrive, the body read fails.
    let (addr, _, _t) = raw_server(|mut tcp| async move {
        let _ = read_head(&mut tcp).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
            .await;
    })
    .await;
    let ups = build(&[group("g", vec![url(addr)])]);
    let resp = ups.group("g").unwrap().send(get("/"), &opts()).await.unwrap();
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(ups.status()[0].targets[0].in_flight, 0);
}
