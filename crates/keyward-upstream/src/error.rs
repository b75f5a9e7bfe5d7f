//! The upstream layer's one error enum, with stable codes. HTTP statuses are chosen in
//! `keyward-edge/src/problem.rs` (suggested: `no_healthy_upstream` 503, `upstream_timeout` 504,
//! the others 502). Messages carry reasons (an OS error, a TLS alert, a certificate problem),
//! never request contents, credentials or keys.

use std::error::Error as StdError;
use std::io;

/// What went wrong between keyward and an upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Every target of the group is ejected (passive health) or unhealthy (active health), or the
    /// retry found no other target.
    #[error("no healthy upstream in group {group}")]
    NoHealthy { group: String },
    /// TCP connect failed (refused, unreachable, name not resolved).
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    /// The TLS handshake or the certificate check failed (unknown issuer, name mismatch,
    /// expired, client certificate required…).
    #[error("TLS with {target} failed: {reason}")]
    Tls { target: String, reason: String },
    /// No connection within the connect timeout, or no response header within the response timeout.
    #[error("{target} did not answer in time ({phase})")]
    Timeout { target: String, phase: TimeoutPhase },
    /// The connection was closed or reset, or the HTTP/2 stream was reset, before a response header.
    #[error("{target} closed or reset the request before answering: {reason}")]
    Reset { target: String, reason: String },
    /// The upstream's answer is not HTTP keyward can read (or it does not speak the configured protocol).
    #[error("{target} sent an invalid response: {reason}")]
    Protocol { target: String, reason: String },
    /// The request's path cannot be combined with the target's base path.
    #[error("the upstream request URI is invalid")]
    InvalidUri,
    /// A group cannot be built (unreadable CA file, bad client key…); configuration time only.
    #[error("upstreams.{group}: {reason}")]
    Config { group: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    Response,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::Response => "response header",
        })
    }
}

impl UpstreamError {
    /// Stable machine-readable code (the problem type's last segment at the edge).
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::NoHealthy { .. } => "no_healthy_upstream",
            UpstreamError::Connect { .. } => "upstream_connect",
            UpstreamError::Tls { .. } => "upstream_tls",
            UpstreamError::Timeout { .. } => "upstream_timeout",
            UpstreamError::Reset { .. } => "upstream_reset",
            UpstreamError::Protocol { .. } => "upstream_protocol",
            UpstreamError::InvalidUri => "upstream_uri",
            UpstreamError::Config { .. } => "upstream_config",
        }
    }

    /// Whether this failure counts against the target for passive health.
    pub(crate) fn counts_as_fail(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. }
                | UpstreamError::Tls { .. }
                | UpstreamError::Timeout { .. }
                | UpstreamError::Reset { .. }
                | UpstreamError::Protocol { .. }
        )
    }
}

/// The rustls error somewhere in `err`'s source chain (through `io::Error`s), if any.
pub(crate) fn find_tls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                    return Some(t);
                }
                cur = inner.source();
                continue;
            }
        }
        cur = e.source();
    }
    None
}

/// A readable reason for a TLS failure (what the log line and the error message say).
pub(crate) fn tls_reason(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "certificate signed by an unknown issuer".to_owned(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "certificate not valid for the name (check server_name)".to_owned()
            }
            C::Expired | C::ExpiredContext { .. } => "certificate expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".to_owned(),
            C::Revoked => "certificate revoked".to_owned(),
            C::BadSignature => "bad certificate signature".to_owned(),
            other => format!("invalid certificate: {other:?}"),
        },
        E::AlertReceived(A::CertificateRequired) => "the upstream requires a client certificate".to_owned(),
        E::AlertReceived(A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::AccessDenied) => {
            format!("the upstream refused the client certificate ({:?})", alert(e))
        }
        E::AlertReceived(A::NoApplicationProtocol) | E::NoApplicationProtocol => {
            "the upstream does not offer the configured protocol (ALPN): check protocol".to_owned()
        }
        E::AlertReceived(a) => format!("the upstream sent the TLS alert {a:?}"),
        other => other.to_string(),
    }
}

fn alert(e: &rustls::Error) -> Option<rustls::AlertDescription> {
    match e {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

/// A short reason for a non-TLS error, from its source chain (hyper's top-level messages are vague).
pub(crate) fn reason(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    let mut depth = 0;
    while let Some(e) = cur {
        if depth == 4 {
            break;
        }
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
        depth += 1;
    }
    out
}
