//! Boots keyward in-process against a recording upstream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use keyward::config::{Config, RouteSection};
use keyward::server::{start_on, Running, Secrets};
use keyward_core::secret::SecretString;
use keyward_core::Pepper;
use keyward_engine::ManualClock;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::net::TcpListener;

pub const PEPPER: &str = "test-pepper-0123456789abcdef0123456789abcdef";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const VERIFY_TOKEN: &str = "test-verify-token-0123456789";
pub const KEK: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// What the upstream saw of the last request.
pub type Headers = HashMap<String, Vec<String>>;

#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<Headers>>>);

impl Seen {
    pub fn last(&self) -> HashMap<String, Vec<String>> {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

async fn record(State(seen): State<Seen>, req: Request<Body>) -> Response {
    let mut h: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in req.headers() {
        h.entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    h.insert(":path".into(), vec![req.uri().to_string()]);
    h.insert(":method".into(), vec![req.method().to_string()]);
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    h.insert(":body-len".into(), vec![body.len().to_string()]);
    seen.0.lock().unwrap().push(h);
    (StatusCode::OK, Json(json!({"ok": true}))).into_response()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "late"
}

/// Streams two chunks a while apart: the gateway must pass the first on before the second exists.
async fn drip() -> Response {
    let s = futures_util::stream::unfold(0u8, |i| async move {
        match i {
            0 => Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"first;")), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Some((Ok(bytes::Bytes::from_static(b"second")), 2))
            }
            _ => None,
        }
    });
    Response::new(Body::from_stream(s))
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Seen,
}

pub async fn upstream() -> Upstream {
    let seen = Seen::default();
    let app = Router::new()
        .route("/slow", get(slow))
        .route("/drip", get(drip))
        .fallback(any(record))
        .with_state(seen.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    Upstream { addr, seen }
}

pub struct Kw {
    pub running: Option<Running>,
    pub gw: String,
    pub admin: String,
    /// The dedicated verify listener (`verify.listen`), when configured.
    pub verify: Option<String>,
    /// The Envoy ext_authz gRPC listener (`verify.grpc_listen`), as `host:port`, when configured.
    pub verify_grpc: Option<String>,
    pub up: Upstream,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Kw {
    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("keyward.db")
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.admin, path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// Creates an app (if needed) and a key; returns (id, plaintext).
    pub async fn key(&self, app: &str, scopes: &[&str], extra: Value) -> (String, String) {
        let (s, _) = self
            .admin(reqwest::Method::POST, "/v1/apps", Some(json!({"name": app})))
            .await;
        assert!(s == StatusCode::CREATED || s == StatusCode::CONFLICT, "{s}");
        let mut body = json!({"app": app, "scopes": scopes});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let (s, v) = self.admin(reqwest::Method::POST, "/v1/keys", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{}", self.gw, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }
}

pub fn routes(upstream: SocketAddr) -> Vec<RouteSection> {
    let u = format!("http://{upstream}");
    let r = |name: &str, prefix: &str, methods: &[&str], scopes: &[&str]| RouteSection {
        name: name.into(),
        path_prefix: prefix.into(),
        methods: methods.iter().map(|s| s.to_string()).collect(),
        upstream: u.clone(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        scope_mode: Default::default(),
        rate: None,
        burst: None,
        rate_by: Default::default(),
        cost: None,
        tokens: false,
        api_keys: true,
        audience: None,
        on_limiter_failure: None,
        client_certificates: false,
        ..Default::default()
    };
    vec![
        r("fact", "/fact", &["GET"], &["facts:read"]),
        r("facts-read", "/facts", &["GET"], &["facts:read"]),
        r("facts-write", "/facts", &["POST"], &["facts:write"]),
        r("echo", "/echo", &[], &[]),
        r("slow", "/slow", &["GET"], &[]),
        r("drip", "/drip", &["GET"], &[]),
        RouteSection {
            name: "down".into(),
            path_prefix: "/down".into(),
            methods: vec![],
            upstream: "http://127.0.0.1:9".into(),
            scopes: vec![],
            scope_mode: Default::default(),
            rate: None,
            burst: None,
            rate_by: Default::default(),
            cost: None,
            tokens: false,
            api_keys: true,
            audience: None,
            on_limiter_failure: None,
            client_certificates: false,
            ..Default::default()
        },
    ]
}

/// Boots keyward with the test routes; `tweak` edits the configuration first.
pub async fn boot_with(tweak: impl FnOnce(&mut Config)) -> Kw {
    match try_boot_with(tweak).await {
        Ok(kw) => kw,
        Err(e) => panic!("keyward did not start: {e}"),
    }
}

/// As [`boot_with`], returning the start-up error instead of panicking on it.
pub async fn try_boot_with(tweak: impl FnOnce(&mut Config)) -> Result<Kw, keyward::error::CliError> {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.store.url = dir.path().join("keyward.db").display().to_string();
    cfg.routes = routes(up.addr);
    cfg.gateway.upstream_timeout = Duration::from_millis(500);
    cfg.gateway.connect_timeout = Duration::from_millis(500);
    tweak(&mut cfg);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let secrets = Secrets {
        pepper: Pepper::from_text(PEPPER).unwrap(),
        admin_token: SecretString::new(ADMIN_TOKEN.into()),
        kek: if cfg.oauth.enabled {
            Some(keyward_token::Kek::parse(KEK).unwrap())
        } else {
            None
        },
        verify_token: Some(SecretString::new(VERIFY_TOKEN.into())),
    };
    let g = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = start_on(&cfg, secrets, g, a, clock.clone()).await?;
    let gw = format!("http://{}", running.gateway);
    let admin = format!("http://{}", running.admin);
    let verify = running.verify.map(|a| format!("http://{a}"));
    let verify_grpc = running.verify_grpc.map(|a| a.to_string());
    Ok(Kw {
        running: Some(running),
        gw,
        admin,
        verify,
        verify_grpc,
        up,
        clock,
        dir,
        http: reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap(),
    })
}

pub async fn boot() -> Kw {
    boot_with(|_| {}).await
}

/// Asserts a problem+json response and returns its body.
pub async fn problem(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status for {code}");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("application/problem+json".to_owned())
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], status);
    assert_eq!(v["type"], format!("urn:keyward:problem:{}", code.replace('_', "-")));
    v
}

/// Sends raw bytes and returns the raw response (status line and headers at least).
pub async fn raw(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = addr.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn status_of(raw: &str) -> u16 {
    raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[allow(dead_code)]
pub fn headers_of(h: &HeaderMap) -> Vec<String> {
    h.keys().map(|k| k.as_str().to_owned()).collect()
}
