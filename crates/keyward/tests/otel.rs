//! OpenTelemetry export (issue 8, point 4) with the real binary: `serve` built with the `otel`
//! feature and `[telemetry] otlp_endpoint` exports the request spans as OTLP/HTTP protobuf to
//! a collector, and flushes them on shutdown.
//!
//! `cargo test -p keyward --features otel --test otel`
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");
const PEPPER: &str = "test-pepper-0123456789abcdef0123456789abcdef";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const SERVICE: &str = "keyward-otel-test-7f3a";
const REQUEST_ID: &str = "otel-test-request-4242";

/// POSTs to `/v1/traces`: content type and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn traces(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> &'static str {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    got.lock().unwrap().push((ct, body.to_vec()));
    ""
}

/// The child `serve`, killed if the test fails before it exits.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_request_spans_over_otlp_http_and_flushes_on_shutdown() {
    // One tiny server: the OTLP collector (`/v1/traces`) and the gateway's upstream (`/fact`).
    let got: Received = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/fact", get(|| async { "cats sleep a lot" }))
        .with_state(got.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keyward.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nurl = \"{db}\"\n\n[gateway]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [telemetry]\notlp_endpoint = \"http://{addr}\"\nservice_name = \"{SERVICE}\"\n\n\
             [[routes]]\nname = \"fact\"\npath_prefix = \"/fact\"\nupstream = \"http://{addr}\"\n",
            db = dir.path().join("k.db").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("KEYWARD_PEPPER", PEPPER)
        .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYWARD_GATEWAY__LISTEN", "127.0.0.1:0")
        // Logs at warn: the exported spans do not depend on the log filter.
        .env("KEYWARD_LOG", "warn")
        .env_remove("KEYWARD_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut serve = Serve(child);

    let t = Instant::now();
    let line = loop {
        let all = stderr.lock().unwrap().clone();
        if let Some(l) = all.lines().find(|l| l.contains("keyward: gateway on")) {
            break l.to_owned();
        }
        assert!(serve.0.try_wait().unwrap().is_none(), "serve exited: {all}");
        assert!(t.elapsed() < Duration::from_secs(30), "serve did not start: {all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let after = |m: &str| {
        let i = line.find(m).unwrap() + m.len();
        line[i..].split([',', ' ']).next().unwrap().to_owned()
    };
    let gw = format!("http://{}", after("gateway on http://"));
    let admin = format!("http://{}", after("admin API on http://"));

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{admin}/v1/apps"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "cats"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = http
        .post(format!("{admin}/v1/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"app": "cats"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = v["key"].as_str().unwrap().to_owned();
    let r = http
        .get(format!("{gw}/fact"))
        .header("x-api-key", &key)
        .header("x-request-id", REQUEST_ID)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..2 {
        let r = http.get(format!("{gw}/fact")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }

    // SIGTERM: drain, then flush the batch exporter before exiting.
    let ok = Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let t = Instant::now();
    let status = loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "serve did not exit: {}",
            stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}: {}", stderr.lock().unwrap());

    let got = got.lock().unwrap().clone();
    assert!(
        !got.is_empty(),
        "no POST to /v1/traces; stderr: {}",
        stderr.lock().unwrap()
    );
    assert!(
        got.iter().all(|(ct, _)| ct == "application/x-protobuf"),
        "content types: {:?}",
        got.iter().map(|(ct, _)| ct).collect::<Vec<_>>()
    );
    let all: Vec<u8> = got.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    for needle in [
        SERVICE,
        "service.name",
        "request_id",
        REQUEST_ID,
        "route",
        "fact",
        "outcome",
        "allowed",
        "missing_credential",
    ] {
        assert!(
            contains(&all, needle.as_bytes()),
            "{needle:?} not in the exported spans"
        );
    }
    assert!(!contains(&all, key.as_bytes()), "the API key was exported");
}
