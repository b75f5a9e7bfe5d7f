//! RFC 9457 problem documents, and the mapping of every layer's errors to HTTP.
//!
//! This is the only module that decides which status an error gets.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_engine::{EngineError, Rejection};
use keyward_store::StoreError;
use serde::Serialize;

/// Problem types are URNs under `urn:keyward:problem:`; the suffix is the stable `code`.
pub const TYPE_PREFIX: &str = "urn:keyward:problem:";

/// An `application/problem+json` response.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code (the suffix of `type`).
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_scopes: Option<Vec<String>>,
    #[serde(skip)]
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Problem {
        Problem {
            type_: format!("{TYPE_PREFIX}{}", code.replace('_', "-")),
            title,
            status: status.as_u16(),
            detail: None,
            code,
            missing_scopes: None,
            headers: Vec::new(),
        }
    }

    pub fn detail(mut self, d: impl Into<String>) -> Problem {
        self.detail = Some(d.into());
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Problem {
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn not_found() -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "Not Found").detail("no route matches this path")
    }

    pub fn method_not_allowed(allow: &str) -> Problem {
        let p = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method Not Allowed",
        )
        .detail("the route does not accept this method");
        match HeaderValue::from_str(allow) {
            Ok(v) => p.header(header::ALLOW, v),
            Err(_) => p,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, "Bad Request").detail(detail)
    }

    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal Server Error",
        )
        .detail("an unexpected error occurred; see the server log")
    }
}

/// What a problem response said, in its extensions (for answers in another protocol: gRPC).
#[derive(Debug, Clone)]
pub struct Said {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let said = Said {
            code: self.code,
            message: self.detail.clone().unwrap_or_else(|| self.title.to_string()),
        };
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            h.append(name, value);
        }
        resp.extensions_mut().insert(said);
        resp
    }
}

/// The gRPC status code for a refusal with this HTTP status: 401 `UNAUTHENTICATED` (16), 403
/// `PERMISSION_DENIED` (7), 429 and 413 `RESOURCE_EXHAUSTED` (8), 502/503/504 `UNAVAILABLE`
/// (14), 400 `INVALID_ARGUMENT` (3), 404/405 `UNIMPLEMENTED` (12), 408 `DEADLINE_EXCEEDED` (4),
/// 500 `INTERNAL` (13), anything else `UNKNOWN` (2).
pub fn grpc_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 3,
        401 => 16,
        403 => 7,
        404 | 405 => 12,
        408 => 4,
        413 | 429 => 8,
        500 => 13,
        502..=504 => 14,
        _ => 2,
    }
}

/// A keyward problem response re-said the way gRPC clients understand it: HTTP 200,
/// `content-type: application/grpc`, `grpc-status` and `grpc-message`, no body (a
/// "Trailers-Only" response); the challenges, `Retry-After`, rate-limit fields and the request
/// id are kept. A response that is not a keyward problem (the upstream's) is returned as is.
pub fn as_grpc(resp: Response) -> Response {
    let Some(said) = resp.extensions().get::<Said>().cloned() else {
        return resp;
    };
    let status = grpc_status(resp.status());
    let (parts, _) = resp.into_parts();
    let mut out = Response::new(axum::body::Body::empty());
    *out.extensions_mut() = parts.extensions;
    let h = out.headers_mut();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            h.append(name.clone(), value.clone());
        }
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(
        header::HeaderName::from_static("grpc-status"),
        HeaderValue::from(u16::from(status)),
    );
    h.insert(
        header::HeaderName::from_static("grpc-message"),
        // gRPC's percent-encoding is keyward's header text: printable ASCII but `%` kept.
        crate::context::header_text(&format!("{}: {}", said.code, said.message)),
    );
    out
}

/// `503` `not_ready` (`GET /readyz`): the problem document plus `down` (what cannot be reached)
/// and `checks` (every dependency and its state).
pub fn not_ready(down: &[&'static str], checks: serde_json::Value) -> Response {
    let mut p = serde_json::to_value(
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "Service Unavailable")
            .detail(format!("unreachable: {}", down.join(", "))),
    )
    .unwrap_or_else(|_| serde_json::json!({}));
    p["down"] = serde_json::json!(down);
    p["checks"] = checks;
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, p.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// How the gateway phrases a credential rejection.
#[derive(Debug, Clone)]
pub struct RejectionStyle {
    /// Status for malformed, unknown, revoked and expired credentials (401, or 403 for users
    /// migrating from the classic static-key setup).
    pub invalid_status: StatusCode,
    /// `WWW-Authenticate` challenges naming the accepted schemes.
    pub challenges: Vec<HeaderValue>,
    /// Whether the credential came in an `Authorization: Bearer` header (RFC 6750 errors).
    pub bearer: bool,
    /// RFC 9728 §5.1: the URL of the route's protected resource metadata, named by the
    /// `Bearer` and `DPoP` challenges of 401 answers (token-taking routes, token service on).
    pub resource_metadata: Option<String>,
}

/// `challenge` with the RFC 9728 `resource_metadata` parameter when it is a `Bearer` or `DPoP`
/// challenge and `url` is set.
fn with_resource_metadata(challenge: String, url: Option<&str>) -> String {
    match url {
        Some(u) if challenge.starts_with("Bearer") || challenge.starts_with("DPoP") => {
            let sep = if challenge.contains(' ') { "," } else { "" };
            format!("{challenge}{sep} resource_metadata=\"{u}\"")
        }
        _ => challenge,
    }
}

/// Maps a pipeline rejection to its problem.
pub fn rejection(r: &Rejection, style: &RejectionStyle) -> Problem {
    let (status, title, detail): (StatusCode, &'static str, String) = match r {
        Rejection::Missing => (
            StatusCode::UNAUTHORIZED,
            "Credential Missing",
            "this route requires an API key or an access token".into(),
        ),
        Rejection::CredentialNotAccepted { accepted } => (
            StatusCode::UNAUTHORIZED,
            "Credential Not Accepted",
            format!("this route does not accept the kind of credential presented: it takes {accepted}"),
        ),
        Rejection::Multiple => (
            StatusCode::BAD_REQUEST,
            "Multiple Credentials",
            "present exactly one credential, in one header".into(),
        ),
        Rejection::Malformed(e) => (
            style.invalid_status,
            "Malformed Credential",
            format!("the credential is malformed: {e}"),
        ),
        Rejection::Unknown => (
            style.invalid_status,
            "Invalid Credential",
            "the credential is not valid".into(),
        ),
        Rejection::Revoked { .. } => (
            style.invalid_status,
            "Credential Revoked",
            "the credential has been revoked".into(),
        ),
        Rejection::Expired { .. } => (
            style.invalid_status,
            "Credential Expired",
            "the credential has expired".into(),
        ),
        Rejection::InvalidDpop { reason, nonce } => {
            let code = if nonce.is_some() {
                "use_dpop_nonce"
            } else {
                "invalid_dpop_proof"
            };
            let mut p = Problem::new(StatusCode::UNAUTHORIZED, r.code(), "Invalid DPoP Proof")
                .detail(format!("the DPoP proof is not valid: {reason}"));
            let challenge = with_resource_metadata(
                format!(
                    "DPoP algs=\"ES256 EdDSA RS256 PS256\", error=\"{code}\", error_description=\"{}\"",
                    reason.replace(['"', '\\'], "'")
                ),
                style.resource_metadata.as_deref(),
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                p = p.header(header::WWW_AUTHENTICATE, v);
            }
            if let Some(n) = nonce.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
                p = p.header(header::HeaderName::from_static("dpop-nonce"), n);
            }
            return p;
        }
        Rejection::InvalidToken { reason } => (
            StatusCode::UNAUTHORIZED,
            "Invalid Token",
            format!("the access token is not valid ({reason})"),
        ),
        Rejection::ExchangeOnly { .. } => (
            StatusCode::FORBIDDEN,
            "Exchange-Only Key",
            "this key only works at the token endpoint: exchange it for an access token (RFC 8693)".into(),
        ),
        Rejection::Disabled { .. } => (
            style.invalid_status,
            "Credential Disabled",
            "the credential is disabled; its owner can enable it again".into(),
        ),
        Rejection::InsufficientScope { missing, .. } => (
            StatusCode::FORBIDDEN,
            "Insufficient Scope",
            format!(
                "the credential lacks the scope{} {}",
                if missing.len() == 1 { "" } else { "s" },
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
            ),
        ),
        Rejection::IpNotAllowed { .. } => (
            StatusCode::FORBIDDEN,
            "Address Not Allowed",
            "the credential may not be used from this client address".into(),
        ),
        Rejection::MtlsRequired { .. } => (
            StatusCode::FORBIDDEN,
            "Mutual TLS Required",
            "this credential only works over a TLS connection with a client certificate registered to its app"
                .into(),
        ),
        Rejection::PublishableNotAllowed { .. } => (
            StatusCode::FORBIDDEN,
            "Publishable Key Not Allowed",
            "publishable keys only work on routes marked public-safe; use a secret key from a server".into(),
        ),
        Rejection::OriginNotAllowed { .. } => (
            StatusCode::FORBIDDEN,
            "Origin Not Allowed",
            "this publishable key only works from the web origins it was created for".into(),
        ),
        Rejection::CertificateRequired => (
            StatusCode::UNAUTHORIZED,
            "Client Certificate Required",
            "this route authenticates callers by a registered TLS client certificate".into(),
        ),
        Rejection::RateLimited { policy, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Rate Limited",
            format!("the {policy} rate limit is exhausted; retry after the time in Retry-After"),
        ),
        Rejection::QuotaExhausted { policy, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Quota Exhausted",
            format!("the {policy} is used up until its next refill (see Retry-After)"),
        ),
        Rejection::LimiterUnavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Limiter Unavailable",
            "the shared rate limiter cannot be reached and this route fails closed; retry after the time in Retry-After"
                .into(),
        ),
        Rejection::Store(e) => return store(e),
    };
    let mut p = Problem::new(status, r.code(), title).detail(detail);
    if let Rejection::InsufficientScope { missing, .. } = r {
        p.missing_scopes = Some(missing.iter().map(|s| s.to_string()).collect());
    }
    if status == StatusCode::UNAUTHORIZED {
        let error = match r {
            // Nothing invalid was presented: the challenges say what to send.
            Rejection::Missing | Rejection::CredentialNotAccepted { .. } => None,
            _ => Some("invalid_token"),
        };
        for c in &style.challenges {
            let v = match (error, style.bearer, c.to_str()) {
                (Some(err), true, Ok(s)) if s.starts_with("Bearer") || s.starts_with("DPoP") => {
                    HeaderValue::from_str(&format!("{s}, error=\"{err}\"")).unwrap_or_else(|_| c.clone())
                }
                _ => c.clone(),
            };
            let v = match (style.resource_metadata.as_deref(), v.to_str()) {
                (Some(url), Ok(s)) => {
                    HeaderValue::from_str(&with_resource_metadata(s.to_owned(), Some(url))).unwrap_or(v)
                }
                _ => v,
            };
            p = p.header(header::WWW_AUTHENTICATE, v);
        }
    }
    if let Rejection::RateLimited {
        retry_after, states, ..
    }
    | Rejection::QuotaExhausted {
        retry_after, states, ..
    } = r
    {
        let secs = retry_after.as_nanos().div_ceil(1_000_000_000).max(1);
        p = p.header(
            header::RETRY_AFTER,
            HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
        );
        for (name, value) in ratelimit_fields(states) {
            p = p.header(name, value);
        }
    }
    if let Rejection::LimiterUnavailable { retry_after } = r {
        let secs = retry_after.as_secs().max(1);
        p = p.header(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let (Rejection::InsufficientScope { missing, .. }, true) = (r, style.bearer) {
        let scope = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")) {
            p = p.header(header::WWW_AUTHENTICATE, v);
        }
    }
    p
}

/// A request body over a route's `max_body_size` (declared, or as it streamed).
pub fn body_too_large(max: u64) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "Payload Too Large")
        .detail(format!("the request body must be at most {max} bytes on this route"))
}

/// Store failures: never the driver's message to the client.
pub fn store(e: &StoreError) -> Problem {
    match e {
        StoreError::NotFound(what) => {
            Problem::new(StatusCode::NOT_FOUND, "not_found", "Not Found").detail(format!("{what} not found"))
        }
        StoreError::Conflict(msg) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict").detail(msg.clone()),
        StoreError::Unavailable(_) | StoreError::Open(_) => {
            tracing::error!(error = %e, "store unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "Service Unavailable",
            )
            .detail("the credential store is unavailable; try again")
            .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        }
        StoreError::Corrupt(_) => {
            tracing::error!(error = %e, "store corrupt");
            Problem::internal()
        }
    }
}

/// Admin operation failures.
pub fn engine(e: &EngineError) -> Problem {
    match e {
        EngineError::Invalid { field, message } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", "Invalid Request")
                .detail(format!("{field}: {message}"))
        }
        EngineError::NotFound(what) => {
            Problem::new(StatusCode::NOT_FOUND, "not_found", "Not Found").detail(format!("{what} not found"))
        }
        EngineError::Core(c) => match c {
            keyward_core::CoreError::Random => {
                tracing::error!("random generator failed");
                Problem::internal()
            }
            other => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, other.code(), "Invalid Request")
                .detail(other.to_string()),
        },
        EngineError::Conflict(msg) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict").detail(msg.clone()),
        EngineError::Store(s) => store(s),
    }
}

/// Upstream failures: never the upstream's internals.
pub fn upstream_unreachable() -> Problem {
    Problem::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", "Bad Gateway")
        .detail("the upstream service could not be reached")
}

pub fn upstream_timeout() -> Problem {
    Problem::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "Gateway Timeout")
        .detail("the upstream service did not answer in time")
}

/// Every target of the route's upstream group is ejected or unhealthy.
pub fn no_healthy_upstream() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_healthy_upstream",
        "Service Unavailable",
    )
    .detail("no healthy upstream target can take the request; try again")
    .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// The TLS connection to the upstream failed (its certificate, or ours); the reason is logged.
pub fn upstream_tls() -> Problem {
    Problem::new(StatusCode::BAD_GATEWAY, "upstream_tls", "Bad Gateway")
        .detail("the TLS connection to the upstream service failed")
}

/// A request body that did not arrive within `gateway.body_read_timeout` ([`crate::body`],
/// which also closes the connection after the answer).
pub fn body_timeout() -> Problem {
    Problem::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", "Request Timeout")
        .detail("the request body did not arrive within the body read timeout")
}

/// `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers, -08 and
/// later): `"key";q=20;w=12` and `"key";r=19;t=1`, one list member per limit.
pub fn ratelimit_fields(states: &[keyward_engine::LimitState]) -> Vec<(header::HeaderName, HeaderValue)> {
    if states.is_empty() {
        return Vec::new();
    }
    // Two strings written in place, numbers by itoa: this runs on every response of a limited
    // key (with `write!`, the formatting machinery cost more than the limiter's decision).
    let mut policy = String::with_capacity(32 * states.len());
    let mut current = String::with_capacity(32 * states.len());
    let mut num = itoa::Buffer::new();
    for (i, s) in states.iter().enumerate() {
        let sep = if i == 0 { "\"" } else { ", \"" };
        for (out, (a, x), (b, y)) in [
            (&mut policy, ("\";q=", s.limit), (";w=", s.window_secs)),
            (&mut current, ("\";r=", s.remaining), (";t=", s.reset_secs)),
        ] {
            out.push_str(sep);
            out.push_str(s.name);
            out.push_str(a);
            out.push_str(num.format(x));
            out.push_str(b);
            out.push_str(num.format(y));
        }
    }
    let mut out = Vec::with_capacity(2);
    if let Ok(v) = HeaderValue::try_from(policy) {
        out.push((header::HeaderName::from_static("ratelimit-policy"), v));
    }
    if let Ok(v) = HeaderValue::try_from(current) {
        out.push((header::HeaderName::from_static("ratelimit"), v));
    }
    out
}

/// A verify or forward-auth call without the right service token.
pub fn verify_unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "verify_unauthorized", "Unauthorized")
        .detail(detail.to_owned())
        .header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keyward-verify\""),
        )
}

/// A forward-auth call from a peer outside `verify.forward_auth_peers`.
pub fn forward_auth_forbidden() -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forward_auth_forbidden", "Forbidden")
        .detail("forward-auth answers only the proxies listed in verify.forward_auth_peers")
}

/// A verify call (or a forward-auth call) that does not describe a request keyward can decide
/// on: both a key and a token, an absurd method or path, missing forwarded headers.
pub fn invalid_verify_request(detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid_verify_request", detail)
}

/// An Envoy `ext_authz` check whose request headers exceed the listener's header limits
/// (`gateway.max_headers`, `gateway.max_header_bytes`), as the HTTP listeners answer 431.
pub fn headers_too_large(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        "Request Header Fields Too Large",
    )
    .detail(detail)
}

/// The verify API is off: no service token is configured.
pub fn verify_disabled() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "Not Found")
        .detail("the verify API needs a service token: KEYWARD_VERIFY_TOKEN or verify.token_file")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers): one
    /// entry per limit, in order, separated by ", ", every number in full.
    #[test]
    fn ratelimit_fields_list_every_limit() {
        let state = |name, limit, window_secs, remaining, reset_secs| keyward_engine::LimitState {
            name,
            limit,
            window_secs,
            remaining,
            reset_secs,
        };
        assert!(ratelimit_fields(&[]).is_empty());
        let fields = ratelimit_fields(&[
            state("key", 10, 60, 9, 6),
            state("app", u64::MAX, 1, 0, 0),
            state("key-quota", 1_000_000_000, 86_400, 999_999_999, 86_399),
        ]);
        let got: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
        assert_eq!(
            got,
            [
                (
                    "ratelimit-policy",
                    "\"key\";q=10;w=60, \"app\";q=18446744073709551615;w=1, \"key-quota\";q=1000000000;w=86400"
                ),
                (
                    "ratelimit",
                    "\"key\";r=9;t=6, \"app\";r=0;t=0, \"key-quota\";r=999999999;t=86399"
                ),
            ]
        );
    }
}
