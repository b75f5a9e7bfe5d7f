use keyward_core::error::KeyFormatError;
use keyward_core::{CoreError, Scope};
use keyward_store::StoreError;
use thiserror::Error;

/// Why the pipeline refused a credential. The edge maps each variant to a status and a
/// problem type in one place.
#[derive(Debug, Error)]
pub enum Rejection {
    #[error("no credential was presented")]
    Missing,
    #[error("more than one credential was presented")]
    Multiple,
    /// A credential of a kind the route does not take (an access token on a key-only route,
    /// a key on a token-only route); `accepted` says what the route takes.
    #[error("this route does not accept this kind of credential")]
    CredentialNotAccepted { accepted: &'static str },
    #[error("malformed credential: {0}")]
    Malformed(KeyFormatError),
    #[error("unknown credential")]
    Unknown,
    #[error("the credential has been revoked")]
    Revoked { key_id: String },
    #[error("the credential has expired")]
    Expired { key_id: String },
    #[error("the credential is disabled")]
    Disabled { key_id: String },
    /// An exchange-only key presented on an API route.
    #[error("the key only works at the token endpoint")]
    ExchangeOnly { key_id: String },
    /// A DPoP proof failed (RFC 9449); `nonce` is set when a (fresh) server nonce is needed.
    #[error("invalid DPoP proof: {reason}")]
    InvalidDpop { reason: String, nonce: Option<String> },
    /// An access token failed verification (`reason` is the token layer's stable code).
    #[error("the access token is not valid: {reason}")]
    InvalidToken { reason: &'static str },
    #[error("the client address is not allowed for this credential")]
    IpNotAllowed { key_id: String },
    /// The key (or its app) requires mutual TLS with a certificate registered to its app, and
    /// the connection has none or another one.
    #[error("the credential only works over mutual TLS with the app's certificate")]
    MtlsRequired { key_id: String },
    /// A certificate-only route, and the connection's client certificate is absent or is not
    /// registered to any client.
    #[error("no registered client certificate was presented")]
    CertificateRequired,
    /// A publishable key on a route that does not take them.
    #[error("publishable keys are not accepted on this route")]
    PublishableNotAllowed { key_id: String },
    /// A publishable key without one of its allowed origins.
    #[error("the request's origin is not allowed for this key")]
    OriginNotAllowed { key_id: String },
    #[error("a rate limit is exhausted")]
    RateLimited {
        policy: &'static str,
        retry_after: std::time::Duration,
        states: Vec<keyward_limit::LimitState>,
    },
    #[error("a quota is exhausted")]
    QuotaExhausted {
        policy: &'static str,
        retry_after: std::time::Duration,
        states: Vec<keyward_limit::LimitState>,
    },
    /// The shared limiter (Redis) cannot answer and the route fails closed.
    #[error("the limiter is unavailable")]
    LimiterUnavailable { retry_after: std::time::Duration },
    #[error("the credential lacks a required scope")]
    InsufficientScope { key_id: String, missing: Vec<Scope> },
    #[error("the credential store is unavailable")]
    Store(#[source] StoreError),
}

impl Rejection {
    /// Whether this is a failure to present a valid credential (what a guesser produces),
    /// as opposed to a valid credential refused by policy.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            Rejection::Malformed(_)
                | Rejection::Unknown
                | Rejection::Revoked { .. }
                | Rejection::Expired { .. }
                | Rejection::InvalidToken { .. }
        )
    }

    /// The outcome a refusal of a known principal is counted under in its usage
    /// (`denied:<reason>` or `limited:<kind>`).
    pub fn usage_outcome(&self) -> &'static str {
        match self {
            Rejection::Revoked { .. } => "denied:revoked",
            Rejection::Expired { .. } => "denied:expired",
            Rejection::Disabled { .. } => "denied:disabled",
            Rejection::IpNotAllowed { .. } => "denied:ip_not_allowed",
            Rejection::InsufficientScope { .. } => "denied:insufficient_scope",
            Rejection::ExchangeOnly { .. } => "denied:exchange_only",
            Rejection::MtlsRequired { .. } => "denied:mtls_required",
            Rejection::PublishableNotAllowed { .. } => "denied:publishable_not_allowed",
            Rejection::OriginNotAllowed { .. } => "denied:origin_not_allowed",
            Rejection::InvalidToken { .. } => "denied:invalid_token",
            Rejection::InvalidDpop { .. } => "denied:invalid_dpop_proof",
            Rejection::RateLimited { .. } => "limited:rate",
            Rejection::QuotaExhausted { .. } => "limited:quota",
            Rejection::LimiterUnavailable { .. } => "limited:unavailable",
            Rejection::Missing
            | Rejection::Multiple
            | Rejection::CredentialNotAccepted { .. }
            | Rejection::Malformed(_)
            | Rejection::Unknown
            | Rejection::CertificateRequired
            | Rejection::Store(_) => "denied:other",
        }
    }

    /// Stable code, also used as the suffix of the problem type.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Missing => "missing_credential",
            Rejection::Multiple => "multiple_credentials",
            Rejection::CredentialNotAccepted { .. } => "credential_not_accepted",
            Rejection::Malformed(_) => "malformed_credential",
            Rejection::Unknown => "invalid_credential",
            Rejection::Revoked { .. } => "revoked_credential",
            Rejection::Expired { .. } => "expired_credential",
            Rejection::Disabled { .. } => "disabled_credential",
            Rejection::ExchangeOnly { .. } => "exchange_only_credential",
            Rejection::InvalidToken { .. } => "invalid_token",
            Rejection::InvalidDpop { nonce: None, .. } => "invalid_dpop_proof",
            Rejection::InvalidDpop { nonce: Some(_), .. } => "use_dpop_nonce",
            Rejection::InsufficientScope { .. } => "insufficient_scope",
            Rejection::IpNotAllowed { .. } => "ip_not_allowed",
            Rejection::MtlsRequired { .. } => "mtls_required",
            Rejection::CertificateRequired => "client_certificate_required",
            Rejection::PublishableNotAllowed { .. } => "publishable_key_not_allowed",
            Rejection::OriginNotAllowed { .. } => "origin_not_allowed",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::QuotaExhausted { .. } => "quota_exhausted",
            Rejection::LimiterUnavailable { .. } => "limiter_unavailable",
            Rejection::Store(_) => "store_unavailable",
        }
    }
}

/// Errors of the admin operations.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    pub fn invalid(field: &'static str, message: String) -> EngineError {
        EngineError::Invalid { field, message }
    }

    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Invalid { .. } => "invalid_request",
            EngineError::NotFound(_) => "not_found",
            EngineError::Conflict(_) => "conflict",
            EngineError::Core(e) => e.code(),
            EngineError::Store(StoreError::NotFound(_)) => "not_found",
            EngineError::Store(e) => e.code(),
        }
    }
}
