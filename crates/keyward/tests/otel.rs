//! OpenTelemetry export (issue 8, point 4) with the real binary: `serve` built with the `otel`
//! feature and `[telemetry] otlp_endpoint` exports the request spans as OTLP/HTTP protobuf to
//! a collector, and flushes them on shutdown.
//!
//! `cargo test -p keyward --features otel --test otel`
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/proc.rs"]
mod proc;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use proc::{cats_key, url_after, Proc};

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
    let mut c = Command::new(BIN);
    c.args(["serve", "--config", cfg.to_str().unwrap()])
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
        .stdin(Stdio::null());
    let mut serve = Proc::spawn(c);

    let line = serve.wait_for("keyward: gateway on", 0);
    let gw = format!("http://{}", url_after(&line, "gateway on http://"));
    let admin = format!("http://{}", url_after(&line, "admin API on http://"));

    let http = reqwest::Client::new();
    let key = cats_key(&admin, ADMIN_TOKEN).await;
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
    // (Blocking waits off the runtime: the collector must keep answering meanwhile.)
    let (serve, status) = tokio::task::spawn_blocking(move || {
        let status = serve.terminate();
        (serve, status)
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}: {}", serve.stderr());

    let got = got.lock().unwrap().clone();
    assert!(!got.is_empty(), "no POST to /v1/traces; stderr: {}", serve.stderr());
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
