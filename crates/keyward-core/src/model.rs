//! The data model: applications, keys and their policy.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::CoreError;
use crate::key::KeyEnv;
use crate::policy::Policy;

/// A scope token (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`), 1–128 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Scope(String);

impl Scope {
    pub fn new(s: &str) -> Result<Scope, CoreError> {
        let ok = (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if ok {
            Ok(Scope(s.to_owned()))
        } else {
            Err(CoreError::InvalidScope(s.chars().take(64).collect()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Scope::new(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a human name of an app or key: 1–128 characters, no control characters.
pub fn validate_name(s: &str) -> Result<(), CoreError> {
    if s.trim().is_empty() {
        return Err(CoreError::InvalidName("it must not be empty".into()));
    }
    if s.chars().count() > 128 {
        return Err(CoreError::InvalidName("it must be at most 128 characters".into()));
    }
    if s.chars().any(char::is_control) {
        return Err(CoreError::InvalidName("it must not contain control characters".into()));
    }
    Ok(())
}

/// An application: the owner of keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Limits shared by all of the app's keys.
    #[serde(default)]
    pub policy: Policy,
}

/// A key as the store keeps it: never the secret, only its digest (not part of this record)
/// and a display hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub app_id: String,
    pub app_name: String,
    pub name: Option<String>,
    pub hint: String,
    pub env: KeyEnv,
    pub scopes: Vec<Scope>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The key's own limits.
    #[serde(default)]
    pub policy: Policy,
    /// The limits of the key's app, loaded with the key (not part of the key's own record).
    #[serde(skip)]
    pub app_policy: Policy,
    /// Disable/rotation/kind flags and usage time.
    #[serde(flatten)]
    pub lifecycle: Lifecycle,
}

/// The parts of a key's record that change over its life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Set while the key is disabled (temporary; `enable` clears it).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// A canary: never valid, any use raises a high-severity security event.
    #[serde(default)]
    pub canary: bool,
    /// Imported from a legacy static secret (no keyward format, no checksum).
    #[serde(default)]
    pub legacy: bool,
    /// Works only at the token endpoint (exchanged for a short-lived token), never on a route.
    #[serde(default)]
    pub exchange_only: bool,
    /// The key this one replaced.
    #[serde(default)]
    pub rotated_from: Option<String>,
    /// The key that replaced this one; set when rotated.
    #[serde(default)]
    pub rotated_to: Option<String>,
    /// The first key of this key's rotation chain, set on a successor: its own rate and quota
    /// are counted under that key's id, so that a rotation never resets them and a key and
    /// its successor share one budget during the grace period. `None`: the key's own id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_id: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// Last accepted request, as of the last usage flush.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When retention removed the key's digest (`[retention] revoked_keys` after its
    /// revocation or expiry): the record stays as a tombstone, the key can never verify again.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub purged_at: Option<OffsetDateTime>,
}

/// A change to a key's authorization (fields left `None` stay as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUpdate {
    pub name: Option<Option<String>>,
    pub scopes: Option<Vec<Scope>>,
    pub policy: Option<Policy>,
    /// `Some(Some(t))` disables at `t`, `Some(None)` enables.
    pub disabled_at: Option<Option<OffsetDateTime>>,
}

/// Lifecycle state of a key at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Active,
    Disabled,
    Expired,
    Revoked,
}

impl KeyRecord {
    /// The id its own rate and quota are counted under: the first key of its rotation chain
    /// ([`Lifecycle::limit_id`]), or its own id.
    pub fn limit_id(&self) -> &str {
        self.lifecycle.limit_id.as_deref().unwrap_or(&self.id)
    }

    /// Secret or publishable (legacy imported keys are secret).
    pub fn kind(&self) -> crate::key::KeyKind {
        if self.lifecycle.legacy {
            crate::key::KeyKind::Secret
        } else {
            crate::key::KeyKind::of_hint(&self.hint)
        }
    }

    pub fn state(&self, now: OffsetDateTime) -> KeyState {
        if self.revoked_at.is_some_and(|t| t <= now) {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|t| t <= now) {
            KeyState::Expired
        } else if self.lifecycle.disabled_at.is_some() {
            KeyState::Disabled
        } else {
            KeyState::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_rfc6749() {
        for ok in ["facts:read", "a", "x.y/z", "!#[]~"] {
            assert!(Scope::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", " ", "a b", "a\"b", "a\\b", "é", "a\tb", &"a".repeat(129), "a\0"] {
            assert!(Scope::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("cat facts app").is_ok());
        assert!(validate_name("  ").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"n".repeat(129)).is_err());
    }
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the log (assigned by the store; 0 before it is stored).
    #[serde(default)]
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it: `admin` (the root admin token), `gateway`, `system`.
    pub actor: String,
    /// What happened, e.g. `key.created`, `key.revoked`, `security.canary_used`.
    pub kind: String,
    pub severity: Severity,
    /// The object concerned (`key_…`, `app_…`).
    pub target: Option<String>,
    pub source_ip: Option<String>,
    /// Before/after records and other facts; never a secret.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::High => "high",
        }
    }
}

/// Filters of the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<OffsetDateTime>,
    pub target: Option<String>,
    /// Exact kind, or a prefix ending in `.` (e.g. `security.`).
    pub kind: Option<String>,
    /// Only events with `seq` below this (for paging backwards).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// Usage counts of one key in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub key_id: String,
    pub app_id: String,
    /// Unix minute (seconds / 60).
    pub minute: i64,
    /// `allowed`, `denied:<reason>` or `limited:<rate|quota>`.
    pub outcome: String,
    pub count: u64,
}

/// How an OAuth client authenticates at the token endpoint (RFC 6749 §2.3, RFC 7523).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    /// RFC 8705 §2.1: a client certificate chaining to the configured CA, with the registered
    /// subject DN or SAN.
    TlsClientAuth,
    /// RFC 8705 §2.2: a (self-signed) client certificate registered in the client's JWK Set.
    SelfSignedTlsClientAuth,
}

impl ClientAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
            ClientAuthMethod::TlsClientAuth => "tls_client_auth",
            ClientAuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    pub fn parse(s: &str) -> Option<ClientAuthMethod> {
        match s {
            "client_secret_basic" => Some(ClientAuthMethod::ClientSecretBasic),
            "client_secret_post" => Some(ClientAuthMethod::ClientSecretPost),
            "private_key_jwt" => Some(ClientAuthMethod::PrivateKeyJwt),
            "tls_client_auth" => Some(ClientAuthMethod::TlsClientAuth),
            "self_signed_tls_client_auth" => Some(ClientAuthMethod::SelfSignedTlsClientAuth),
            _ => None,
        }
    }

    /// Authenticates with the TLS client certificate (RFC 8705).
    pub fn uses_certificate(self) -> bool {
        matches!(
            self,
            ClientAuthMethod::TlsClientAuth | ClientAuthMethod::SelfSignedTlsClientAuth
        )
    }

    pub fn uses_secret(self) -> bool {
        matches!(
            self,
            ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost
        )
    }
}

/// Per-client options that later features add to without a schema change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientOptions {
    /// Tokens must be DPoP-bound (RFC 9449 `dpop_bound_access_tokens`).
    pub dpop_bound_access_tokens: bool,
    /// `tls_client_auth` (RFC 8705 §2.1.2): exactly one of these names the certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_email: Option<String>,
}

impl ClientOptions {
    /// The `tls_client_auth` registrations that are set, as (metadata name, value).
    pub fn tls_subjects(&self) -> Vec<(&'static str, &str)> {
        [
            ("tls_client_auth_subject_dn", &self.tls_client_auth_subject_dn),
            ("tls_client_auth_san_dns", &self.tls_client_auth_san_dns),
            ("tls_client_auth_san_uri", &self.tls_client_auth_san_uri),
            ("tls_client_auth_san_ip", &self.tls_client_auth_san_ip),
            ("tls_client_auth_san_email", &self.tls_client_auth_san_email),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// An OAuth 2.0 client (client credentials grant). Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The `client_id`.
    pub id: String,
    pub app_id: String,
    pub app_name: String,
    pub name: Option<String>,
    /// The scopes this client may be granted.
    pub scopes: Vec<Scope>,
    pub auth_method: ClientAuthMethod,
    /// Public keys for `private_key_jwt` (a JWK Set, public members only).
    pub jwks: Option<serde_json::Value>,
    /// Lifetime of the access tokens issued to this client, in seconds.
    pub token_ttl: u32,
    #[serde(default)]
    pub options: ClientOptions,
    /// Limits applied to requests made with this client's tokens.
    #[serde(default)]
    pub policy: Policy,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
}

/// One stored client secret (digest only), with its own validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecretInfo {
    pub hint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Set on the previous secret when a rotation gives it a grace period.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A token signing key as stored: public JWK, sealed private part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub public_jwk: serde_json::Value,
    /// PKCS#8, encrypted with the key-encryption key (AAD = kid).
    pub private_sealed: Vec<u8>,
    pub created_at: OffsetDateTime,
    /// When it starts signing (it is published in the JWKS from `created_at`).
    pub active_at: OffsetDateTime,
    pub retired_at: Option<OffsetDateTime>,
    /// When it leaves the JWKS (every token it signed has expired by then).
    pub remove_after: Option<OffsetDateTime>,
}
