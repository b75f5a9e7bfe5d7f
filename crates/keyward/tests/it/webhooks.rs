//! Webhooks for security events, against a real loopback receiver.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use keyward::config::WebhookSection;
use keyward_core::model::{AuditEvent, AuditFilter};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::harness::{boot_with, Kw};

pub const SECRET: &str = "whsec-test-0123456789abcdef0123456789";

#[derive(Clone, Debug)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).unwrap().to_str().unwrap().to_owned()
    }
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<Delivery>>>,
    pub attempts: Arc<AtomicU32>,
    fail_first: Arc<AtomicU32>,
}

impl Receiver {
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.header("x-keyward-event") == kind)
            .collect()
    }

    /// Waits until a delivery of `kind` arrived.
    pub async fn wait_for(&self, kind: &str) -> Delivery {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(d) = self.of_kind(kind).into_iter().next() {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} delivery; got {:?}",
                self.deliveries()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.attempts.fetch_add(1, Ordering::SeqCst);
    let failing = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.got.lock().unwrap().push(Delivery { headers, body });
    StatusCode::NO_CONTENT
}

/// A receiver that answers 503 to its first `fail_first` requests, then 204.
pub async fn receiver(fail_first: u32) -> (String, Receiver) {
    let r = Receiver {
        fail_first: Arc::new(AtomicU32::new(fail_first)),
        ..Default::default()
    };
    let app = Router::new().route("/hook", post(receive)).with_state(r.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}/hook"), r)
}

/// A 0600 file holding the webhook secret.
pub fn secret_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("webhook.secret");
    if !p.exists() {
        keyward::config::write_secret_file(&p, SECRET).unwrap();
    }
    p
}

pub fn webhook(url: &str, dir: &tempfile::TempDir) -> WebhookSection {
    WebhookSection {
        url: url.into(),
        secret_file: Some(secret_file(dir)),
        backoff: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

/// Recomputes `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` and compares.
pub fn verify_signature(d: &Delivery, secret: &str) {
    let sig = d.header("x-keyward-signature");
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let t_num: i64 = t.parse().unwrap();
    assert!((t_num - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 300);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(&d.body);
    let tag = aws_lc_rs::hmac::sign(&key, &msg);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, hex, "signature mismatch");
    // A tampered body must not verify.
    let mut bad = msg.clone();
    bad.push(b' ');
    assert!(aws_lc_rs::hmac::verify(&key, &bad, tag.as_ref()).is_err());
}

/// Asserts the body is the documented shape and carries none of the secrets.
pub fn check_body(d: &Delivery, secrets: &[&str]) {
    let text = String::from_utf8(d.body.to_vec()).unwrap();
    for s in secrets.iter().chain([&SECRET]) {
        assert!(!text.contains(s), "a secret leaked into a webhook body: {text}");
    }
    let v = d.json();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["at", "details", "id", "kind", "severity", "source_ip", "target"]);
    assert_eq!(v["id"], d.header("x-keyward-delivery"));
    assert_eq!(v["kind"], d.header("x-keyward-event"));
}

pub async fn audit(kw: &Kw, kind: &str) -> Vec<AuditEvent> {
    kw.running
        .as_ref()
        .unwrap()
        .engine
        .list_audit(&AuditFilter {
            since: None,
            target: None,
            kind: Some(kind.into()),
            before_seq: None,
            limit: 1000,
        })
        .await
        .unwrap()
}

pub async fn wait_audit(kw: &Kw, kind: &str) -> Vec<AuditEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = audit(kw, kind).await;
        if !rows.is_empty() {
            return rows;
        }
        assert!(Instant::now() < deadline, "no {kind} in the audit log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn canary(kw: &Kw) -> (String, String) {
    kw.key("cats", &["facts:read"], json!({"canary": true})).await
}

#[tokio::test]
async fn canary_use_fires_a_signed_webhook_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = receiver(0).await;
    let kw = boot_with(|c| c.webhooks = vec![webhook(&url, &dir)]).await;
    let (id, key) = canary(&kw).await;
    let (_, normal) = kw.key("cats", &["facts:read"], json!({})).await;
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 401);
    let d = rx.wait_for("security.canary_used").await;
    verify_signature(&d, SECRET);
    check_body(&d, &[&key, &normal]);
    let v = d.json();
    assert_eq!(v["severity"], "high");
    assert_eq!(v["target"], id.as_str());
    assert_eq!(v["details"]["key_id"], id.as_str());
    assert_eq!(v["source_ip"], "127.0.0.1");
    assert_eq!(d.header("content-type"), "application/json");
    let rows = wait_audit(&kw, "webhook.delivered").await;
    assert_eq!(rows[0].details["delivery_id"], v["id"]);
    assert_eq!(rows[0].details["host"], "127.0.0.1");
    assert_eq!(rows[0].details["status"], 204);
    assert_eq!(rows[0].details["attempts"], 1);
    assert_eq!(rows[0].severity, keyward_core::model::Severity::Info);
    // Info events (key creation, the delivery record) never reach the webhook.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.deliveries().len(), 1, "{:?}", rx.deliveries());
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_on_the_third_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = receiver(2).await;
    let kw = boot_with(|c| c.webhooks = vec![webhook(&url, &dir)]).await;
    let (_, key) = canary(&kw).await;
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 401);
    let d = rx.wait_for("security.canary_used").await;
    verify_signature(&d, SECRET);
    assert_eq!(rx.attempts.load(Ordering::SeqCst), 3);
    let rows = wait_audit(&kw, "webhook.delivered").await;
    assert_eq!(rows[0].details["attempts"], 3);
    assert!(audit(&kw, "webhook.failed").await.is_empty());
}

#[tokio::test]
async fn a_dead_receiver_does_not_slow_the_gateway_and_ends_in_webhook_failed() {
    // Accepts connections and never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            h.lock().unwrap().push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut w = webhook(&format!("http://{addr}/hook"), &dir);
    w.timeout = Duration::from_millis(300);
    w.max_attempts = 3;
    let kw = boot_with(|c| c.webhooks = vec![w]).await;
    let (_, key) = canary(&kw).await;
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t0 = Instant::now();
        assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 401);
        worst = worst.max(t0.elapsed());
    }
    assert!(worst < Duration::from_millis(250), "canary answered in {worst:?}");
    let rows = wait_audit(&kw, "webhook.failed").await;
    assert_eq!(rows[0].details["attempts"], 3);
    assert_eq!(rows[0].details["error"], "timeout");
    assert_eq!(rows[0].details["host"], "127.0.0.1");
}

#[tokio::test]
async fn a_failed_auth_burst_fires_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = receiver(0).await;
    let kw = boot_with(|c| {
        c.webhooks = vec![webhook(&url, &dir)];
        c.security.failed_auth_burst = 3;
    })
    .await;
    let (_, good) = kw.key("cats", &["facts:read"], json!({})).await;
    for _ in 0..3 {
        assert_eq!(kw.get("/fact", &[("x-api-key", "kw_live_nope")]).await.status(), 401);
    }
    let d = rx.wait_for("security.failed_auth_burst").await;
    verify_signature(&d, SECRET);
    check_body(&d, &[&good]);
    assert_eq!(d.json()["severity"], "warning");
    assert_eq!(d.json()["source_ip"], "127.0.0.1");
}

#[tokio::test]
async fn expiring_soon_fires_once_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = receiver(0).await;
    let kw = boot_with(|c| {
        c.webhooks = vec![webhook(&url, &dir)];
        c.security.expiring_check_interval = Duration::from_millis(50);
    })
    .await;
    let (soon, key) = kw.key("cats", &["facts:read"], json!({"expires_in": "2d"})).await;
    let (_, later) = kw.key("cats", &["facts:read"], json!({"expires_in": "30d"})).await;
    let d = rx.wait_for("key.expiring_soon").await;
    verify_signature(&d, SECRET);
    check_body(&d, &[&key, &later]);
    assert_eq!(d.json()["target"], soon.as_str());
    assert_eq!(d.json()["severity"], "warning");
    // Many more checks run; still one event, and none for the key outside the window.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.of_kind("key.expiring_soon").len(), 1);
    assert_eq!(audit(&kw, "key.expiring_soon").await.len(), 1);
    // Time passes: the second key enters the window and fires, the first does not again.
    kw.clock.advance(time::Duration::days(24));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.of_kind("key.expiring_soon").len() < 2 {
        assert!(Instant::now() < deadline, "the second key never fired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.of_kind("key.expiring_soon").len(), 2);
}

#[test]
fn webhook_config_is_strict() {
    use keyward::config::Config;
    let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let ok = Config::load(
        None,
        &env(
            "KEYWARD_WEBHOOKS",
            r#"[{url = "https://hooks.example.com/k", secret_env = "HOOK_SECRET", backoff = "2s"}]"#,
        ),
    )
    .unwrap();
    assert_eq!(ok.webhooks[0].backoff, Duration::from_secs(2));
    assert_eq!(ok.webhooks[0].max_attempts, 6);
    let secret = ok
        .webhook_configs(&[("HOOK_SECRET".into(), "s3cret-value".into())])
        .unwrap();
    assert_eq!(secret[0].secret.expose(), "s3cret-value");
    assert!(ok.webhook_configs(&[]).is_err(), "secret_env unset");
    for bad in [
        r#"[{url = "ftp://x/", secret_env = "S"}]"#,
        r#"[{url = "http://x/"}]"#,
        r#"[{url = "http://x/", secret_env = "S", secret_file = "f"}]"#,
        r#"[{url = "http://x/", secret_env = "S", max_attempts = 0}]"#,
        r#"[{url = "http://x/", secret_env = "S", events = []}]"#,
        r#"[{url = "http://x/", secret_env = "S", nope = 1}]"#,
    ] {
        assert!(Config::load(None, &env("KEYWARD_WEBHOOKS", bad)).is_err(), "{bad}");
    }
}
