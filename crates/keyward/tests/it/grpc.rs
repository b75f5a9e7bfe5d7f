//! gRPC end to end through keyward (issue 18, point 4) with a real gRPC server and client:
//! Python `grpcio` (tests/python/grpc_interop.py, stubs generated from
//! tests/python/grpc/echo.proto at test time). The server runs insecure (h2c upstream) and over
//! TLS with a certificate made here (h2 upstream); the client calls through the gateway with the
//! key as `x-api-key` metadata. Routes are told apart by `hosts` (the client's `:authority`),
//! since every call has the same method path. Runs when `KEYWARD_TEST_PYTHON` is set (.ci/run
//! sets it); fails when that Python has no grpcio.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use keyward::config::RouteSection;
use keyward_upstream::Protocol;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::harness::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `grpc_interop.py serve`: killed when dropped.
struct PyServer {
    _child: Child,
    port: u16,
}

async fn py_server(python: &OsString, tls: Option<(&Path, &Path)>) -> PyServer {
    let mut cmd = Command::new(python);
    cmd.arg("tests/python/grpc_interop.py")
        .arg("serve")
        .current_dir(repo_root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some((cert, key)) = tls {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run KEYWARD_TEST_PYTHON={python:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(60), BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("the Python gRPC server did not start within 60 s")
        .unwrap();
    let v: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("grpc_interop.py serve printed {line:?} ({e}); is grpcio installed?"));
    let port = u16::try_from(v["port"].as_u64().unwrap()).unwrap();
    PyServer { _child: child, port }
}

/// Runs `grpc_interop.py client` through the gateway and returns its JSON (check → result).
async fn py_client(python: &OsString, kw: &Kw, authority: &str, key: Option<&str>, checks: &[&str]) -> Value {
    let mut cmd = Command::new(python);
    cmd.arg("tests/python/grpc_interop.py")
        .arg("client")
        .arg("--target")
        .arg(kw.gw.trim_start_matches("http://"))
        .arg("--authority")
        .arg(authority)
        .current_dir(repo_root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
    }
    cmd.args(checks);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the Python gRPC client took longer than 120 s")
        .unwrap_or_else(|e| panic!("cannot run KEYWARD_TEST_PYTHON={python:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "grpc_interop.py client failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// An h2c upstream that resets its streams: `Echo` before any response byte (the service
/// fails: hyper sends RST_STREAM), `Count` after the response head and one message
/// (`EchoReply{message:"n0"}`; then the body fails).
async fn resetting_upstream() -> SocketAddr {
    use bytes::Bytes;
    use hyper::body::Frame;
    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    if req.uri().path().ends_with("/Echo") {
                        return Err(std::io::Error::other("reset before answering"));
                    }
                    let message: &'static [u8] = &[0, 0, 0, 0, 4, 0x0a, 2, b'n', b'0'];
                    let first: Frames = vec![Ok(Frame::data(Bytes::from_static(message)))];
                    // The reset comes once the first message has had time to go out.
                    let reset = futures_util::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Err::<Frame<Bytes>, _>(std::io::Error::other("reset mid-stream"))
                    });
                    let frames = futures_util::StreamExt::chain(futures_util::stream::iter(first), reset);
                    let body = http_body_util::StreamBody::new(frames);
                    hyper::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(body)
                        .map_err(std::io::Error::other)
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// A gRPC route for `hosts = [host]` towards `upstream` with `protocol`.
fn grpc_route(host: &str, upstream: String, protocol: Protocol, scopes: &[&str]) -> RouteSection {
    RouteSection {
        name: format!("grpc-{host}"),
        path_prefix: "/keyward.test.Echo/".into(),
        hosts: vec![host.into()],
        upstream,
        protocol: Some(protocol),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        api_keys: true,
        timeout: Some(Duration::from_secs(20)),
        connect_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    }
}

fn code(v: &Value, check: &str) -> String {
    v[check]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_grpc_server_and_client_through_keyward() {
    let Some(python) = std::env::var_os("KEYWARD_TEST_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!(
            "grpc::python_grpc_server_and_client_through_keyward skipped: set KEYWARD_TEST_PYTHON (.ci/run does)"
        );
        return;
    };
    // The TLS server's certificate (localhost, 127.0.0.1) and the CA keyward trusts for it.
    let ca = crate::tls::ca("gRPC upstream CA");
    let leaf = crate::tls::leaf(&ca, 11, true, false);
    let pki = tempfile::tempdir().unwrap();
    let (ca_file, cert_file, key_file) = (
        pki.path().join("ca.pem"),
        pki.path().join("server.crt"),
        pki.path().join("server.key"),
    );
    std::fs::write(&ca_file, &ca.pem).unwrap();
    std::fs::write(&cert_file, &leaf.cert_pem).unwrap();
    std::fs::write(&key_file, &leaf.key_pem).unwrap();

    let plain = py_server(&python, None).await;
    let secure = py_server(&python, Some((&cert_file, &key_file))).await;
    let reset = resetting_upstream().await;
    let kw = boot_with(|c| {
        c.routes.push(grpc_route(
            "h2c.test",
            format!("http://127.0.0.1:{}", plain.port),
            Protocol::H2c,
            &["echo:call"],
        ));
        let mut h2 = grpc_route(
            "h2.test",
            format!("https://localhost:{}", secure.port),
            Protocol::H2,
            &[],
        );
        h2.ca_file = Some(ca_file.clone());
        c.routes.push(h2);
        // The same TLS server as an `[[upstreams]]` group: its own `ca_file`, `auto` (ALPN).
        let mut group = keyward_upstream::GroupConfig::new(
            "grpc-tls",
            vec![format!("https://localhost:{}", secure.port).parse().unwrap()],
        );
        group.protocol = Protocol::Auto;
        group.ca_file = Some(ca_file.clone());
        c.upstreams.push(group);
        let mut grouped = grpc_route("group.test", "grpc-tls".into(), Protocol::Auto, &[]);
        grouped.protocol = None;
        c.routes.push(grouped);
        c.routes
            .push(grpc_route("down.test", "http://127.0.0.1:9".into(), Protocol::H2c, &[]));
        c.routes
            .push(grpc_route("reset.test", format!("http://{reset}"), Protocol::H2c, &[]));
    })
    .await;
    let (key_id, key) = kw.key("grpc", &["echo:call"], json!({})).await;

    // h2c: unary and server streaming, trailers through, identity in, the key not.
    let v = py_client(
        &python,
        &kw,
        "h2c.test",
        Some(&key),
        &["unary", "stream", "stream_fail"],
    )
    .await;
    assert_eq!(code(&v, "unary"), "OK", "{v}");
    let unary = &v["unary"];
    assert_eq!(unary["replies"][0]["message"], "hello", "{v}");
    // grpc-status 0 arrived (code OK above) and so did the server's own trailing metadata.
    assert_eq!(unary["trailers"]["x-echo-trailer"], "trailer-hello", "{v}");
    let seen: BTreeMap<String, String> = serde_json::from_value(unary["replies"][0]["metadata"].clone()).unwrap();
    assert_eq!(seen.get("x-keyward-app").map(String::as_str), Some("grpc"), "{seen:?}");
    assert_eq!(seen.get("x-keyward-key-id"), Some(&key_id), "{seen:?}");
    assert_eq!(
        seen.get("x-keyward-scopes").map(String::as_str),
        Some("echo:call"),
        "{seen:?}"
    );
    assert!(
        !seen.contains_key("x-api-key"),
        "the key reached the upstream: {seen:?}"
    );
    assert!(
        !seen.values().any(|s| s.contains(&key)),
        "the key reached the upstream: {seen:?}"
    );
    assert_eq!(code(&v, "stream"), "OK", "{v}");
    let messages: Vec<&str> = v["stream"]["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["n0", "n1", "n2"], "{v}");
    assert_eq!(v["stream"]["trailers"]["x-count-trailer"], "3", "{v}");
    // The server fails mid-stream: the messages before, then its status and message.
    assert_eq!(code(&v, "stream_fail"), "DATA_LOSS", "{v}");
    assert_eq!(v["stream_fail"]["details"], "failed after 2", "{v}");
    assert_eq!(v["stream_fail"]["replies"].as_array().unwrap().len(), 2, "{v}");

    // h2 over TLS, the route trusting the test CA.
    let v = py_client(&python, &kw, "h2.test", Some(&key), &["unary", "stream"]).await;
    assert_eq!(code(&v, "unary"), "OK", "{v}");
    assert_eq!(v["unary"]["replies"][0]["message"], "hello", "{v}");
    assert_eq!(v["unary"]["trailers"]["x-echo-trailer"], "trailer-hello", "{v}");
    assert_eq!(v["stream"]["replies"].as_array().unwrap().len(), 3, "{v}");

    // The group: h2 chosen by ALPN, the group's CA.
    let v = py_client(&python, &kw, "group.test", Some(&key), &["unary", "stream"]).await;
    assert_eq!(code(&v, "unary"), "OK", "{v}");
    assert_eq!(v["unary"]["trailers"]["x-echo-trailer"], "trailer-hello", "{v}");
    assert_eq!(v["stream"]["trailers"]["x-count-trailer"], "3", "{v}");

    // Refusals, as the gRPC client reads them.
    let v = py_client(&python, &kw, "h2c.test", None, &["unary"]).await;
    assert_eq!(code(&v, "unary"), "UNAUTHENTICATED", "{v}");
    assert!(
        v["unary"]["details"].as_str().unwrap().contains("missing_credential"),
        "{v}"
    );
    let (_, other) = kw.key("grpc", &["other:call"], json!({})).await;
    let v = py_client(&python, &kw, "h2c.test", Some(&other), &["unary"]).await;
    assert_eq!(code(&v, "unary"), "PERMISSION_DENIED", "{v}");
    let (_, limited) = kw
        .key("grpc", &["echo:call"], json!({"rate": {"limit": "1/min", "burst": 1}}))
        .await;
    let v = py_client(&python, &kw, "h2c.test", Some(&limited), &["unary", "stream"]).await;
    assert_eq!(code(&v, "unary"), "OK", "{v}");
    assert_eq!(code(&v, "stream"), "RESOURCE_EXHAUSTED", "{v}");
    let v = py_client(&python, &kw, "down.test", Some(&key), &["unary"]).await;
    assert_eq!(code(&v, "unary"), "UNAVAILABLE", "{v}");
    assert!(!v["unary"]["details"].as_str().unwrap().contains(":9"), "{v}");

    // An upstream that resets the stream before answering: UNAVAILABLE, in gRPC. One that
    // resets it after a message: the client gets that message, then an error status (never
    // OK, never a body it cannot read). keyward serves on.
    let v = py_client(&python, &kw, "reset.test", Some(&key), &["unary", "stream"]).await;
    assert_eq!(code(&v, "unary"), "UNAVAILABLE", "{v}");
    let stream = code(&v, "stream");
    assert!(!stream.is_empty() && stream != "OK", "{v}");
    eprintln!(
        "grpc: a mid-stream reset is seen by the client as {stream}: {}",
        v["stream"]["details"]
    );
    assert_eq!(v["stream"]["replies"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["stream"]["replies"][0]["message"], "n0", "{v}");
    let v = py_client(&python, &kw, "h2c.test", Some(&key), &["unary"]).await;
    assert_eq!(code(&v, "unary"), "OK", "keyward still serves after the reset: {v}");
}
