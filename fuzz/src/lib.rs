//! Shared set-up of the in-process targets (`admin_body`, `admin_query`, `client_assertion`): an
//! engine on a temporary SQLite store with a manual clock, OAuth enabled, the admin router, and a
//! few objects to act on.

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use keyward_core::secret::SecretString;
use keyward_core::{KeyFormat, Pepper};
use keyward_edge::{admin_router, AdminState, AdminToken};
use keyward_engine::token::OAuthConfig;
use keyward_engine::{Engine, ManualClock};
use keyward_token::{Algorithm, Kek};
use tower::ServiceExt;

/// The manual clock's time: 2030-03-17T17:46:40Z.
pub const NOW: i64 = 1_900_000_000;
pub const ISSUER: &str = "https://auth.example.com";
pub const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789abcdef";
/// The `private_key_jwt` client's fixed id (the seeds' assertions name it).
pub const CLIENT_ID: &str = "fuzz-client";
/// Its JWK Set: the RFC 8037 Ed25519 key and a P-256 key (private halves in the seed generator).
pub const CLIENT_JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},{"kty":"EC","crv":"P-256","x":"gNg3UzpdtpVaV3DHnJRb4mBQ9vgL0juxRqGdCKJlvrw","y":"l1nqRv1PfhPxLG76a-i_QhUmyAzGy8Vx3HnPO9NzdxU"}]}"#;

pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub engine: Arc<Engine>,
    pub router: Router,
    /// A key that `PATCH` targets.
    pub key_id: String,
    /// A key that revoke / rotate / disable target.
    pub victim_id: String,
    /// A `client_secret_basic` client (rotate-secret target).
    pub secret_client_id: String,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Harness {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let engine = rt.block_on(async {
            let store = keyward_store::SqliteStore::open(&dir.path().join("fuzz.db"))
                .await
                .unwrap();
            let start = time::OffsetDateTime::from_unix_timestamp(NOW).unwrap();
            let engine = Engine::new(
                Arc::new(store),
                Pepper::from_text(&"ab".repeat(32)).unwrap(),
                KeyFormat::default(),
                Default::default(),
                Arc::new(ManualClock::new(start)),
            );
            let cfg = OAuthConfig {
                issuer: ISSUER.to_owned(),
                default_audience: "https://api.example.com".to_owned(),
                audiences: vec!["https://api.example.com".to_owned()],
                signing_alg: Algorithm::EdDSA,
                leeway: std::time::Duration::from_secs(60),
                publish_delay: std::time::Duration::ZERO,
                rotate_every: None,
                dpop: Default::default(),
                mtls_base_url: None,
            };
            engine
                .enable_oauth(cfg, Kek::from_bytes(&[7u8; 32]).unwrap())
                .await
                .unwrap();
            Arc::new(engine)
        });
        let state = AdminState::new(
            engine.clone(),
            AdminToken::new(SecretString::new(ADMIN_TOKEN.to_owned())),
        );
        let router = admin_router(Arc::new(state));
        let mut h = Harness {
            rt,
            engine,
            router,
            key_id: String::new(),
            victim_id: String::new(),
            secret_client_id: String::new(),
            _dir: dir,
        };
        let ok = |(s, v): (StatusCode, serde_json::Value)| {
            assert!(s.is_success(), "set-up request failed: {s} {v}");
            v
        };
        ok(h.request(Method::POST, "/v1/apps", br#"{"name":"fuzz"}"#));
        let key = ok(h.request(Method::POST, "/v1/keys", br#"{"app":"fuzz","scopes":["read"]}"#));
        h.key_id = key["id"].as_str().unwrap().to_owned();
        let victim = ok(h.request(Method::POST, "/v1/keys", br#"{"app":"fuzz","scopes":["read"]}"#));
        h.victim_id = victim["id"].as_str().unwrap().to_owned();
        let sc = ok(h.request(Method::POST, "/v1/clients", br#"{"app":"fuzz","scopes":["read"]}"#));
        h.secret_client_id = sc["client_id"].as_str().or(sc["id"].as_str()).unwrap().to_owned();
        let body =
            format!(r#"{{"app":"fuzz","scopes":["read"],"auth_method":"private_key_jwt","jwks":{CLIENT_JWKS}}}"#);
        let pk = ok(h.request(Method::POST, "/v1/clients", body.as_bytes()));
        let pk_id = pk["client_id"].as_str().or(pk["id"].as_str()).unwrap().to_owned();
        // The same client again under the fixed id that the seeds' assertions name.
        h.rt.block_on(async {
            let store = h.engine.store();
            let mut rec = store.get_client(&pk_id).await.unwrap().unwrap();
            rec.id = CLIENT_ID.to_owned();
            store.create_client(&rec, None).await.unwrap();
        });
        h
    }

    /// One admin request with a JSON body, answered in-process.
    pub fn request(&self, method: Method, path: &str, body: &[u8]) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
            .unwrap();
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            )
        })
    }
}

/// The answer of [`Harness::send`]: status, headers and the body as JSON (`Null` if it is not).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

impl Harness {
    /// One admin request as a client would send it: any method and path + query (already
    /// accepted by `http` as a URI), an optional `Authorization` value (sent as is, no token
    /// added), an optional JSON body.
    pub fn send(&self, method: Method, uri: Uri, authorization: Option<HeaderValue>, body: &[u8]) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(v) = authorization {
            req = req.header("authorization", v);
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Body::from(body.to_vec())).unwrap();
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            Answer {
                status,
                headers,
                body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            }
        })
    }

    /// Creates a scoped admin token (`kwadm_...`, role `read` or `write`) with the bootstrap
    /// token and returns its plaintext.
    pub fn admin_token(&self, name: &str, role: &str) -> String {
        let body = format!(r#"{{"name":"{name}","role":"{role}"}}"#);
        let (s, v) = self.request(Method::POST, "/v1/admin-tokens", body.as_bytes());
        assert!(s.is_success(), "set-up request failed: {s} {v}");
        v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {v}"))
            .to_owned()
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}
