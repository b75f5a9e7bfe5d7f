//! Webhooks for security events: signed JSON deliveries with retries, off the request path.
//!
//! [`WebhookSink::start`] returns a sink for [`Engine::add_sink`]. `emit` only filters the
//! event and pushes it into a bounded queue (a full queue drops the event, counts and logs
//! it); a worker task delivers each event with its own retries (exponential backoff with
//! jitter), at most [`MAX_IN_FLIGHT`] deliveries at a time. Each outcome is appended to the
//! audit log as `webhook.delivered` or `webhook.failed` (severity info, which never reaches a
//! sink, so deliveries never feed themselves).
//!
//! Signature: `X-Keyward-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! Also here: [`Engine::check_expiring_soon`] and its periodic loop, which raise one
//! `key.expiring_soon` event per key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aws_lc_rs::hmac;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keyward_core::model::{AuditEvent, AuditFilter, Severity};
use keyward_core::secret::{new_id, SecretString};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use crate::{Engine, EngineError};

/// Events queued per webhook before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 1024;
/// Deliveries (including those waiting for a retry) in progress per webhook.
pub const MAX_IN_FLIGHT: usize = 64;
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Kinds delivered when a webhook names none: every security event and expiry warnings.
pub const DEFAULT_EVENTS: &[&str] = &["security.", "key.expiring_soon"];

/// One webhook's settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `https://…` or `http://…` (loopback or a trusted network only).
    pub url: String,
    pub secret: SecretString,
    /// Event kinds delivered: exact kinds, prefixes ending in `.` (`security.`), or `*`.
    pub events: Vec<String>,
    /// Per attempt: connect, send, and the response head.
    pub timeout: Duration,
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one (with jitter), capped
    /// at [`MAX_BACKOFF`].
    pub backoff: Duration,
}

impl WebhookConfig {
    /// A webhook with the defaults: all security events, 5 s timeout, 6 attempts, 1 s backoff.
    pub fn new(url: impl Into<String>, secret: SecretString) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret,
            events: DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(5),
            max_attempts: 6,
            backoff: Duration::from_secs(1),
        }
    }
}

/// Why a webhook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook URL {0:?} is invalid: use http://host[:port]/path or https://…")]
    Url(String),
    #[error("webhook secret must not be empty")]
    Secret,
    #[error("webhook max_attempts must be at least 1")]
    Attempts,
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Checks a webhook URL: absolute `http`/`https` with a host, no user info.
pub fn parse_url(url: &str) -> Result<Uri, WebhookError> {
    let uri: Uri = url.parse().map_err(|_| WebhookError::Url(url.to_owned()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(WebhookError::Url(url.to_owned())),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() && !a.as_str().contains('@') => Ok(uri),
        _ => Err(WebhookError::Url(url.to_owned())),
    }
}

/// Whether `kind` is selected by the patterns.
pub fn matches(patterns: &[String], kind: &str) -> bool {
    patterns
        .iter()
        .any(|p| p == "*" || p == kind || (p.ends_with('.') && kind.starts_with(p.as_str())))
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut hex = String::with_capacity(64);
    for b in tag.as_ref() {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={t},v1={hex}")
}

/// The JSON body of a delivery: the stored event without its actor, never a secret.
pub fn body(delivery_id: &str, event: &AuditEvent) -> Vec<u8> {
    let at = event
        .at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let v = json!({
        "id": delivery_id,
        "kind": event.kind,
        "severity": event.severity,
        "at": at,
        "target": event.target,
        "source_ip": event.source_ip,
        "details": event.details,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Wait before attempt `n + 1` after `n` failed attempts: `initial · 2^(n-1)`, capped, then a
/// random point in its upper half (so that receivers coming back are not hit in lockstep).
pub fn backoff(initial: Duration, failed: u32) -> Duration {
    let exp = failed.saturating_sub(1).min(30);
    let full = initial.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    let mut r = [0u8; 4];
    let frac = match aws_lc_rs::rand::fill(&mut r) {
        Ok(()) => f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    };
    full.mul_f64(0.5 + 0.5 * frac)
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Inner {
    cfg: WebhookConfig,
    uri: Uri,
    /// The URL's host (what the audit log records: never the path or query, which might
    /// carry a token of the receiver).
    host: String,
    client: HttpsClient,
    engine: Weak<Engine>,
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// A webhook as an [`crate::EventSink`].
pub struct WebhookSink {
    inner: Arc<Inner>,
    tx: mpsc::Sender<AuditEvent>,
}

/// Counters of one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookStats {
    pub delivered: u64,
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
}

fn https_client(timeout: Duration) -> Result<HttpsClient, WebhookError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| WebhookError::Tls(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .build(connector))
}

impl WebhookSink {
    /// Validates the configuration and starts the delivery worker (needs a Tokio runtime).
    /// The sink holds the engine weakly: add it with [`Engine::add_sink`].
    pub fn start(engine: &Arc<Engine>, cfg: WebhookConfig) -> Result<Arc<WebhookSink>, WebhookError> {
        let uri = parse_url(&cfg.url)?;
        if cfg.secret.expose().is_empty() {
            return Err(WebhookError::Secret);
        }
        if cfg.max_attempts == 0 {
            return Err(WebhookError::Attempts);
        }
        let host = uri.host().unwrap_or_default().to_owned();
        let inner = Arc::new(Inner {
            client: https_client(cfg.timeout)?,
            cfg,
            uri,
            host,
            engine: Arc::downgrade(engine),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(worker(inner.clone(), rx));
        Ok(Arc::new(WebhookSink { inner, tx }))
    }

    pub fn stats(&self) -> WebhookStats {
        WebhookStats {
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
        }
    }
}

impl crate::EventSink for WebhookSink {
    fn emit(&self, event: &AuditEvent) {
        if event.severity == Severity::Info || !matches(&self.inner.cfg.events, &event.kind) {
            return;
        }
        match self.tx.try_send(event.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(host = %self.inner.host, kind = %event.kind, dropped_total = n,
                    "webhook queue full; event dropped (it stays in the audit log)");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!(host = %self.inner.host, "webhook worker stopped; event not delivered");
            }
        }
    }
}

async fn worker(inner: Arc<Inner>, mut rx: mpsc::Receiver<AuditEvent>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(event) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            deliver(&inner, &event).await;
            drop(permit);
        });
    }
}

/// One attempt: `Ok(status)` for a 2xx, `Err((status if any, reason))` otherwise.
async fn attempt(inner: &Inner, id: &str, kind: &str, body: &Bytes, t: i64) -> Result<u16, (Option<u16>, String)> {
    let sig = signature(inner.cfg.secret.expose().as_bytes(), t, body);
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(inner.uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("keyward-webhook/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in [
        ("x-keyward-event", kind),
        ("x-keyward-delivery", id),
        ("x-keyward-signature", sig.as_str()),
    ] {
        match HeaderValue::from_str(value) {
            Ok(v) => req = req.header(name, v),
            Err(_) => return Err((None, format!("{name} is not a valid header value"))),
        }
    }
    let req = req
        .body(Full::new(body.clone()))
        .map_err(|e| (None, format!("request: {e}")))?;
    match tokio::time::timeout(inner.cfg.timeout, inner.client.request(req)).await {
        Err(_) => Err((None, "timeout".into())),
        Ok(Err(e)) => Err((None, format!("connection: {e}"))),
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            // The body is not read; dropping the response closes or reuses the connection.
            if resp.status().is_success() {
                Ok(status)
            } else {
                Err((Some(status), format!("status {status}")))
            }
        }
    }
}

async fn deliver(inner: &Inner, event: &AuditEvent) {
    let id = match new_id("whd") {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "random generator failed; webhook not delivered");
            return;
        }
    };
    let body = Bytes::from(body(&id, event));
    let mut last: (Option<u16>, String) = (None, String::new());
    let mut attempts = 0u32;
    while attempts < inner.cfg.max_attempts {
        if attempts > 0 {
            tokio::time::sleep(backoff(inner.cfg.backoff, attempts)).await;
        }
        attempts += 1;
        let t = match inner.engine.upgrade() {
            Some(e) => e.now().unix_timestamp(),
            None => return,
        };
        match attempt(inner, &id, &event.kind, &body, t).await {
            Ok(status) => {
                inner.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(host = %inner.host, delivery = %id, attempts, "webhook delivered");
                record(inner, "webhook.delivered", &id, event, Some(status), attempts, None).await;
                return;
            }
            Err(e) => {
                tracing::debug!(host = %inner.host, delivery = %id, attempts, reason = %e.1, "webhook attempt failed");
                last = e;
            }
        }
    }
    inner.failed.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(host = %inner.host, delivery = %id, attempts, reason = %last.1, "webhook delivery failed");
    record(inner, "webhook.failed", &id, event, last.0, attempts, Some(&last.1)).await;
}

async fn record(
    inner: &Inner,
    kind: &str,
    id: &str,
    event: &AuditEvent,
    status: Option<u16>,
    attempts: u32,
    error: Option<&str>,
) {
    let Some(engine) = inner.engine.upgrade() else {
        return;
    };
    let row = AuditEvent {
        seq: 0,
        at: engine.now(),
        actor: "system".into(),
        kind: kind.into(),
        // Info never reaches a sink: a delivery's outcome does not trigger another delivery.
        severity: Severity::Info,
        target: event.target.clone(),
        source_ip: None,
        details: json!({
            "delivery_id": id,
            "host": inner.host,
            "event_kind": event.kind,
            "event_seq": event.seq,
            "status": status,
            "attempts": attempts,
            "error": error,
        }),
    };
    if let Err(e) = engine.audit(row).await {
        tracing::error!(error = %e, "could not record a webhook outcome in the audit log");
    }
}

impl Engine {
    /// Raises one `key.expiring_soon` event (severity warning) for every key that expires
    /// within `window` and is neither revoked, a canary, nor a rotated predecessor (whose
    /// end is already planned), unless the audit log already holds one for that key.
    /// Returns how many events were raised.
    pub async fn check_expiring_soon(&self, window: Duration) -> Result<usize, EngineError> {
        let now = self.now();
        let until = now + time::Duration::try_from(window).unwrap_or(time::Duration::ZERO);
        let mut raised = 0;
        for key in self.store.list_keys(None).await? {
            let Some(expires) = key.expires_at else { continue };
            if expires <= now
                || expires > until
                || key.revoked_at.is_some()
                || key.lifecycle.canary
                || key.lifecycle.rotated_at.is_some()
            {
                continue;
            }
            let seen = self
                .store
                .list_audit(&AuditFilter {
                    since: None,
                    target: Some(key.id.clone()),
                    kind: Some("key.expiring_soon".into()),
                    before_seq: None,
                    limit: 1,
                })
                .await?;
            if !seen.is_empty() {
                continue;
            }
            let left = (expires - now).whole_seconds();
            let event = AuditEvent {
                seq: 0,
                at: now,
                actor: "system".into(),
                kind: "key.expiring_soon".into(),
                severity: Severity::Warning,
                target: Some(key.id.clone()),
                source_ip: None,
                details: json!({
                    "key_id": key.id,
                    "app_id": key.app_id,
                    "app_name": key.app_name,
                    "name": key.name,
                    "hint": key.hint,
                    "expires_at": expires.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    "seconds_left": left,
                }),
            };
            self.audit(event).await?;
            raised += 1;
        }
        Ok(raised)
    }

    /// Runs [`Engine::check_expiring_soon`] every `interval` (first run at once) until
    /// `stop` turns true.
    pub async fn expiring_soon_loop(
        self: Arc<Self>,
        interval: Duration,
        window: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match self.check_expiring_soon(window).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(keys = n, "keys expiring soon"),
                        Err(e) => tracing::warn!(error = %e, "expiring-soon check failed"),
                    }
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p: Vec<String> = DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect();
        assert!(matches(&p, "security.canary_used"));
        assert!(matches(&p, "key.expiring_soon"));
        assert!(!matches(&p, "key.revoked"));
        assert!(!matches(&p, "securityx"));
        assert!(matches(&["*".to_string()], "anything"));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let b = Duration::from_secs(1);
        for _ in 0..50 {
            let d1 = backoff(b, 1);
            assert!(d1 >= Duration::from_millis(500) && d1 <= b, "{d1:?}");
            let d3 = backoff(b, 3);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4), "{d3:?}");
            assert!(backoff(b, 40) <= MAX_BACKOFF);
            assert!(backoff(b, 40) >= MAX_BACKOFF / 2);
        }
    }

    #[test]
    fn signature_format() {
        // RFC 4231 test case 2 style check of the HMAC itself.
        let s = signature(b"Jefe", 0, b"");
        assert!(s.starts_with("t=0,v1="));
        assert_eq!(s.len(), "t=0,v1=".len() + 64);
        assert_ne!(signature(b"a", 1, b"x"), signature(b"a", 2, b"x"));
    }

    #[test]
    fn urls() {
        assert!(parse_url("http://127.0.0.1:9/hook").is_ok());
        assert!(parse_url("https://hooks.example.com/x?token=1").is_ok());
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("/relative").is_err());
        assert!(parse_url("http://user:pw@host/").is_err());
    }
}
