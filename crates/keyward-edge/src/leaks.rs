//! Leak reports in GitHub's secret-scanning partner format, on the gateway listener.
//!
//! GitHub POSTs a JSON array of `{"token", "type", "url", "source"}` signed with ECDSA P-256 /
//! SHA-256: `Github-Public-Key-Identifier` names the key, `Github-Public-Key-Signature` holds
//! the base64 of the DER signature over the raw body. The public keys come from GitHub's
//! `{"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}` document, loaded at
//! start-up. Order of checks: size (413) → signature headers, key, signature (401) → replay
//! (409) → JSON (400) → shape (422). Each token is handed to [`Engine::report_leak`]; the answer
//! is GitHub's `[{"token_raw", "token_type", "label"}]`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_ASN1};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use keyward_engine::leaks::{LeakAction, LeakReport, LeakVerdict};
use keyward_engine::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use serde::{Deserialize, Serialize};

use crate::problem::{self, Problem};

/// Largest accepted report body.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long an accepted body is remembered to refuse its replay.
pub const REPLAY_WINDOW_SECS: i64 = 3600;
/// Most bodies remembered; the oldest are forgotten first.
pub const REPLAY_CAPACITY: usize = 10_000;
/// The audit actor of GitHub's reports.
pub const REPORTER: &str = "github-secret-scanning";
/// Default path of the endpoint.
pub const DEFAULT_PATH: &str = "/.well-known/keyward/secret-scanning/github";

const KEY_ID_HEADER: &str = "github-public-key-identifier";
const SIGNATURE_HEADER: &str = "github-public-key-signature";

#[derive(Deserialize)]
struct KeysDocument {
    public_keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
struct KeyEntry {
    key_identifier: String,
    key: String,
    #[serde(default)]
    #[allow(dead_code)]
    is_current: bool,
}

/// GitHub's signing keys by identifier. Keys that are no longer current are kept: GitHub may
/// still sign with them while it rotates.
pub struct GithubKeys(HashMap<String, ParsedPublicKey>);

impl GithubKeys {
    /// Parses GitHub's `{"public_keys": [...]}` document (PEM SubjectPublicKeyInfo, P-256).
    pub fn parse(json: &str) -> Result<GithubKeys, String> {
        let doc: KeysDocument =
            serde_json::from_str(json).map_err(|e| format!("not a GitHub public keys document: {e}"))?;
        let mut keys = HashMap::new();
        for k in doc.public_keys {
            let der = SubjectPublicKeyInfoDer::from_pem_slice(k.key.as_bytes())
                .map_err(|e| format!("key {:?}: not a PEM public key: {e}", k.key_identifier))?;
            let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der.as_ref())
                .map_err(|e| format!("key {:?}: not an ECDSA P-256 public key: {e}", k.key_identifier))?;
            keys.insert(k.key_identifier, parsed);
        }
        if keys.is_empty() {
            return Err("the document holds no public key".into());
        }
        Ok(GithubKeys(keys))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Bodies accepted within the replay window, bounded.
#[derive(Default)]
struct Replay {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<([u8; 32], i64)>,
}

impl Replay {
    /// Remembers `d` at `now`; false when it was already seen within the window.
    fn insert(&mut self, d: [u8; 32], now: i64) -> bool {
        while let Some((old, at)) = self.order.front().copied() {
            if at + REPLAY_WINDOW_SECS <= now || self.order.len() >= REPLAY_CAPACITY {
                self.order.pop_front();
                self.seen.remove(&old);
            } else {
                break;
            }
        }
        if !self.seen.insert(d) {
            return false;
        }
        self.order.push_back((d, now));
        true
    }

    fn forget(&mut self, d: &[u8; 32]) {
        if self.seen.remove(d) {
            self.order.retain(|(x, _)| x != d);
        }
    }
}

/// State of the endpoint.
pub struct LeakReports {
    engine: Arc<Engine>,
    keys: GithubKeys,
    action: LeakAction,
    replay: Mutex<Replay>,
}

impl LeakReports {
    pub fn new(engine: Arc<Engine>, keys: GithubKeys, action: LeakAction) -> LeakReports {
        LeakReports {
            engine,
            keys,
            action,
            replay: Mutex::new(Replay::default()),
        }
    }

    fn replay(&self) -> std::sync::MutexGuard<'_, Replay> {
        match self.replay.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// The endpoint as a router to merge into the gateway's (POST only; other methods get 405).
pub fn router<S: Clone + Send + Sync + 'static>(path: &str, state: Arc<LeakReports>) -> Router<S> {
    Router::new()
        .route(
            path,
            post(handle).fallback(|| async { Problem::method_not_allowed("POST").into_response() }),
        )
        .with_state(state)
}

/// Fields GitHub may add later are ignored (its format, not ours).
#[derive(Deserialize)]
struct Reported {
    token: String,
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Serialize)]
struct Answer {
    token_raw: String,
    token_type: String,
    label: &'static str,
}

fn unauthorized(code: &'static str, detail: &str) -> Response {
    Problem::new(StatusCode::UNAUTHORIZED, code, "Unauthorized")
        .detail(detail)
        .into_response()
}

fn too_large() -> Response {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Payload Too Large")
        .detail(format!("a report body is at most {MAX_BODY} bytes"))
        .into_response()
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn header_str<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

async fn handle(State(st): State<Arc<LeakReports>>, req: Request<Body>) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => return too_large(),
        Err(_) => return Problem::bad_request("malformed_report", "the body could not be read").into_response(),
    };
    let (Some(key_id), Some(sig_b64)) = (
        header_str(&parts.headers, KEY_ID_HEADER),
        header_str(&parts.headers, SIGNATURE_HEADER),
    ) else {
        return unauthorized(
            "missing_signature",
            "Github-Public-Key-Identifier and Github-Public-Key-Signature are required",
        );
    };
    let Some(key) = st.keys.0.get(key_id) else {
        return unauthorized("unknown_key_identifier", "the signing key is not configured");
    };
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig_b64) else {
        return unauthorized("invalid_signature", "the signature is not valid base64");
    };
    if key.verify_sig(&body, &sig).is_err() {
        return unauthorized("invalid_signature", "the signature does not match the body");
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(digest::digest(&digest::SHA256, &body).as_ref());
    let now = st.engine.now().unix_timestamp();
    if !st.replay().insert(fingerprint, now) {
        return Problem::new(StatusCode::CONFLICT, "replayed_report", "Conflict")
            .detail("this signed report was already received")
            .into_response();
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return Problem::bad_request("malformed_report", "the body is not JSON").into_response();
        }
    };
    let reports: Vec<Reported> = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_report",
                "Unprocessable Content",
            )
            .detail(format!("expected an array of {{token, type, url, source}}: {e}"))
            .into_response();
        }
    };
    let mut out = Vec::with_capacity(reports.len());
    let mut true_positives = 0usize;
    for r in reports {
        let reason = format!(
            "reported leaked by GitHub secret scanning: {}",
            r.url.as_deref().unwrap_or("(no url)")
        );
        let verdict = st
            .engine
            .report_leak(&LeakReport {
                reporter: REPORTER,
                token: &r.token,
                url: r.url.as_deref(),
                source: r.source.as_deref(),
                reason: &reason,
                action: st.action,
            })
            .await;
        let label = match verdict {
            Ok(LeakVerdict::Ours { .. }) => {
                true_positives += 1;
                "true_positive"
            }
            Ok(LeakVerdict::NotOurs) => "false_positive",
            Err(e) => {
                // Let GitHub retry the whole report later.
                st.replay().forget(&fingerprint);
                return problem::engine(&e).into_response();
            }
        };
        out.push(Answer {
            token_raw: r.token,
            token_type: r.type_,
            label,
        });
    }
    tracing::info!(
        tokens = out.len(),
        true_positives,
        "GitHub secret-scanning report handled"
    );
    (StatusCode::OK, Json(out)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_memory_is_bounded_and_expires() {
        let mut r = Replay::default();
        assert!(r.insert([1; 32], 0));
        assert!(!r.insert([1; 32], 10));
        assert!(r.insert([1; 32], REPLAY_WINDOW_SECS));
        for i in 0..(REPLAY_CAPACITY + 10) {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&(i as u64).to_le_bytes());
            d[31] = 9;
            r.insert(d, REPLAY_WINDOW_SECS + 1);
        }
        assert!(r.order.len() <= REPLAY_CAPACITY);
        assert_eq!(r.order.len(), r.seen.len());
        r.forget(&[1; 32]);
        assert!(r.insert([1; 32], REPLAY_WINDOW_SECS + 2));
    }

    #[test]
    fn keys_document_is_checked() {
        assert!(GithubKeys::parse("{}").is_err());
        assert!(GithubKeys::parse(r#"{"public_keys": []}"#).is_err());
        assert!(GithubKeys::parse(r#"{"public_keys": [{"key_identifier": "a", "key": "nope"}]}"#).is_err());
    }
}
