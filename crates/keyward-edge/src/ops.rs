//! Operations: request ids, `/healthz`, `/readyz` and `/metrics`.
//!
//! - **Request ids**: [`request_id`] is a middleware on every listener. An incoming
//!   `x-request-id` is kept only when it is sane (1 to 128 characters of `[A-Za-z0-9._-]`, one
//!   header); anything else is replaced by a fresh 128-bit random id (22 base62 characters).
//!   The id is put on the request's tracing span (`request_id`), passed upstream as
//!   `x-request-id` and returned on every response, problem documents included.
//! - **`/healthz`**: the process is alive: always 200, with what it knows without asking
//!   anyone (`"status": "degraded"` while the change channel or the Redis breaker is not fine).
//! - **`/readyz`**: the store answers a ping (and Redis, when configured) within a short
//!   timeout: 200 with every check, or 503 `not_ready` (problem+json) naming what is down.
//! - **`/metrics`**: Prometheus (OpenMetrics text), see [`crate::metrics`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tracing::Instrument;

use crate::problem::{self, Problem};
use crate::GatewayState;

/// The request id header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id kept.
pub const MAX_REQUEST_ID: usize = 128;

/// How long `/readyz` waits for the store.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// The request's id, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// 1 to 128 characters of `[A-Za-z0-9._-]`.
pub fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A fresh id: 128 random bits as 22 base62 characters.
pub fn new_request_id() -> String {
    let (a, b): (u64, u64) = (rand::random(), rand::random());
    let mut s = keyward_core::base62::encode_fixed(a, 11).unwrap_or_default();
    s.push_str(&keyward_core::base62::encode_fixed(b, 11).unwrap_or_default());
    s
}

/// The request id middleware (see the module documentation).
pub async fn request_id(req: Request, next: Next) -> Response {
    with_request_id(req, |req| next.run(req)).await
}

/// The request id logic of [`request_id`] around `inner`, for services that are not axum
/// middleware stacks (the gateway listener's [`crate::gateway::GatewayService`]).
pub async fn with_request_id<F, Fut>(mut req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let mut incoming = req.headers().get_all(X_REQUEST_ID).iter();
    let id = match (incoming.next(), incoming.next()) {
        (Some(v), None) if sane_request_id(v.as_bytes()) => v.clone(),
        _ => HeaderValue::from_str(&new_request_id()).unwrap_or_else(|_| HeaderValue::from_static("-")),
    };
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %req.method(),
        // Filled in by the gateway (route and outcome: the metrics labels' bounded values;
        // path without the query, the client address, and who called) and below.
        route = tracing::field::Empty,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty,
        path = tracing::field::Empty,
        client_ip = tracing::field::Empty,
        app_id = tracing::field::Empty,
        key_id = tracing::field::Empty,
        client_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut resp = async move {
        let resp = inner(req).await;
        // The gateway's pipeline records the status with the route and the outcome.
        if resp.extensions().get::<StatusRecorded>().is_none() {
            tracing::Span::current().record("status", resp.status().as_u16());
        }
        tracing::debug!(
            status = resp.status().as_u16(),
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request finished"
        );
        resp
    }
    .instrument(span)
    .await;
    resp.headers_mut().insert(X_REQUEST_ID, id);
    resp
}

/// On a response whose `status` is already on the request span (see [`with_request_id`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusRecorded;

/// Records fields of `span` in one visit of the subscriber (which looks the span up, checks its
/// filters and locks its data once per visit, not once per field): the request span gets its
/// fields in groups (issue 19). A name the span does not have is ignored, as by `Span::record`.
pub(crate) fn record_fields<const N: usize>(span: &tracing::Span, values: [(&str, &dyn tracing::Value); N]) {
    let Some(meta) = span.metadata() else {
        return;
    };
    let set = meta.fields();
    let found = values.map(|(name, value)| (set.field(name), value));
    // A name not found takes any field of the span with no value, which records nothing.
    let Some(any) = found.iter().find_map(|(f, _)| f.as_ref()) else {
        return;
    };
    let pairs = found.each_ref().map(|(f, v)| match f {
        Some(f) => (f, Some(*v)),
        None => (any, None),
    });
    span.record_all(&set.value_set(&pairs));
}

/// `/healthz` and `/readyz` (no token), to merge into a listener's router.
pub fn probes(gateway: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(gateway)
}

/// `/metrics` without a token.
pub fn public_metrics(gateway: Arc<GatewayState>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(gateway)
}

/// A dedicated metrics listener (`metrics.listen`): `/metrics` without a token and the probes.
pub fn metrics_listener(gateway: Arc<GatewayState>) -> Router {
    probes(gateway.clone())
        .merge(public_metrics(gateway))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not_found", "Not Found") })
}

async fn metrics(State(st): State<Arc<GatewayState>>) -> Response {
    match st.metrics().render() {
        Ok(text) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            text,
        )
            .into_response(),
        Err(_) => Problem::internal().into_response(),
    }
}

/// Always 200: the process answers. Reports what it knows without asking anyone.
async fn healthz(State(st): State<Arc<GatewayState>>) -> Response {
    let engine = st.engine();
    let store = engine.store();
    let mut body = serde_json::json!({"status": "ok", "store": store.backend()});
    // Shared store: without its change channel this node learns of other nodes' changes only
    // by revalidation (`store.revalidate_interval`).
    if let Some(up) = store.changes_connected() {
        body["store_changes"] = serde_json::json!(if up { "connected" } else { "reconnecting" });
        if !up {
            body["status"] = serde_json::json!("degraded");
        }
    }
    // Shared limits: while the breaker is not closed, routes run their `on_limiter_failure`.
    if let Some(r) = engine.limiter().redis() {
        let breaker = r.breaker_state();
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let s = r.stats();
        body["redis"] = serde_json::json!({
            "topology": r.config().topology.kind(),
            "breaker": breaker.as_str(),
            "errors": n(&s.errors),
            "timeouts": n(&s.timeouts),
            "short_circuits": n(&s.short_circuits),
        });
        if breaker != keyward_engine::limit::breaker::BreakerState::Closed {
            body["status"] = serde_json::json!("degraded");
        }
    }
    Json(body).into_response()
}

/// 200 when the store (and Redis, when configured) answer a ping in time; 503 `not_ready`
/// naming what is down. Degraded states (change channel reconnecting, breaker not closed)
/// are listed but do not fail the check.
async fn readyz(State(st): State<Arc<GatewayState>>) -> Response {
    let engine = st.engine();
    let store = engine.store();
    let mut checks = serde_json::Map::new();
    let mut down: Vec<&'static str> = Vec::new();
    let mut degraded: Vec<&'static str> = Vec::new();
    let store_ping = tokio::time::timeout(READY_TIMEOUT, store.ping()).await;
    let store_ok = matches!(store_ping, Ok(Ok(())));
    checks.insert("store".into(), serde_json::json!(if store_ok { "up" } else { "down" }));
    if !store_ok {
        down.push("store");
        // Why, as the store layer words it (no URL, no password; a TLS problem is named).
        let why = match store_ping {
            Ok(Err(e)) => e.to_string(),
            _ => "timeout".to_owned(),
        };
        checks.insert("store_error".into(), serde_json::json!(why));
    }
    if let Some(up) = store.changes_connected() {
        checks.insert(
            "store_changes".into(),
            serde_json::json!(if up { "connected" } else { "reconnecting" }),
        );
        if !up {
            degraded.push("store_changes");
        }
    }
    if let Some(r) = engine.limiter().redis() {
        let wait = r.config().timeout + Duration::from_millis(100);
        let ok = matches!(tokio::time::timeout(wait, r.ping()).await, Ok(Ok(())));
        checks.insert("redis".into(), serde_json::json!(if ok { "up" } else { "down" }));
        checks.insert("redis_topology".into(), serde_json::json!(r.config().topology.kind()));
        let breaker = r.breaker_state();
        checks.insert("redis_breaker".into(), serde_json::json!(breaker.as_str()));
        if !ok {
            down.push("redis");
            // Why the last call failed: `tls: …` for a certificate problem, else the error's
            // kind or `timeout` (never a URL or a password).
            let why = r.last_error().unwrap_or_else(|| "timeout".to_owned());
            checks.insert("redis_error".into(), serde_json::json!(why));
        } else if breaker != keyward_engine::limit::breaker::BreakerState::Closed {
            degraded.push("redis_breaker");
        }
    }
    let checks = serde_json::Value::Object(checks);
    if !down.is_empty() {
        tracing::warn!(down = ?down, "not ready");
        return problem::not_ready(&down, checks);
    }
    let status = if degraded.is_empty() { "ready" } else { "degraded" };
    let mut resp = Json(serde_json::json!({"status": status, "checks": checks, "degraded": degraded})).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked_and_generated() {
        assert!(sane_request_id(b"abc-DEF_1.2"));
        assert!(sane_request_id("a".repeat(128).as_bytes()));
        assert!(!sane_request_id("a".repeat(129).as_bytes()));
        assert!(!sane_request_id(b""));
        for bad in ["a b", "a/b", "a\"b", "x;y", "é", "kw_live_x y"] {
            assert!(!sane_request_id(bad.as_bytes()), "{bad}");
        }
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(sane_request_id(a.as_bytes()));
    }

    /// `record_fields` records every value in one visit; a name the span does not have is
    /// ignored, as by `Span::record`, and so is every name on a span without the fields.
    #[test]
    fn record_fields_records_known_names_in_one_visit() {
        use std::sync::{Arc, Mutex};
        use tracing::field::{Field, Visit};
        use tracing::span::{Attributes, Id, Record};

        #[derive(Default)]
        struct Visits(Mutex<Vec<Vec<String>>>);
        struct Seen(Vec<String>);
        impl Visit for Seen {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                self.0.push(format!("{}={value:?}", field.name()));
            }
        }
        struct Recorder(Arc<Visits>);
        impl tracing::Subscriber for Recorder {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, values: &Record<'_>) {
                let mut seen = Seen(Vec::new());
                values.record(&mut seen);
                self.0 .0.lock().unwrap().push(seen.0);
            }
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, _: &tracing::Event<'_>) {}
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }

        let visits = Arc::new(Visits::default());
        tracing::subscriber::with_default(Recorder(visits.clone()), || {
            let span = tracing::info_span!("request", a = tracing::field::Empty, b = tracing::field::Empty);
            record_fields(&span, [("a", &1u64), ("b", &"two"), ("c", &3u64)]);
            record_fields(&span, [("nope", &1u64), ("b", &"again")]);
            record_fields(&span, [("nope", &1u64)]);
            let other = tracing::info_span!("other");
            record_fields(&other, [("a", &1u64)]);
        });
        let visits = visits.0.lock().unwrap().clone();
        assert_eq!(
            visits,
            [
                vec!["a=1".to_owned(), "b=\"two\"".to_owned()],
                vec!["b=\"again\"".to_owned()]
            ],
            "one visit per call with known names, nothing for unknown ones"
        );
    }
}
