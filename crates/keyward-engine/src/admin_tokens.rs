//! Scoped admin tokens: `kwadm_` + 43 base62 symbols (256 bits), stored only as
//! `HMAC-SHA256(pepper, token)` with a display hint. Creation and revocation are audited.

use keyward_core::model::validate_name;
use keyward_core::secret::{new_id, SecretString};
use time::OffsetDateTime;

use crate::{Engine, EngineError};

/// Prefix of scoped admin tokens, so that a scanner recognises them (`kwadm_` + 43 base62).
pub const ADMIN_TOKEN_PREFIX: &str = "kwadm_";
/// Random symbols after the prefix (256 bits).
/// Base62 symbols after the prefix.
pub const ADMIN_TOKEN_RANDOM: usize = 43;

/// What a scoped admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRole {
    /// Reads only (GET).
    Read,
    /// Everything except managing admin tokens.
    Write,
}

impl AdminRole {
    pub fn parse(s: &str) -> Option<AdminRole> {
        match s {
            "read" => Some(AdminRole::Read),
            "write" => Some(AdminRole::Write),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Read => "read",
            AdminRole::Write => "write",
        }
    }
}

/// Whether a string is shaped like a scoped admin token (prefix, length, alphabet).
pub fn is_admin_token_shape(s: &str) -> bool {
    s.strip_prefix(ADMIN_TOKEN_PREFIX)
        .is_some_and(|r| r.len() == ADMIN_TOKEN_RANDOM && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl Engine {
    async fn audit_token(&self, actor: &str, kind: &str, t: &keyward_store::AdminTokenRecord) {
        let event = keyward_core::model::AuditEvent {
            seq: 0,
            at: self.now(),
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            severity: keyward_core::model::Severity::Info,
            target: Some(t.id.clone()),
            source_ip: None,
            details: serde_json::json!({ "after": t }),
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %e, kind, "could not append to the audit log");
        }
    }

    /// Creates a scoped admin token; the plaintext is returned this once and never stored.
    pub async fn create_admin_token(
        &self,
        actor: &str,
        name: &str,
        role: AdminRole,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(keyward_store::AdminTokenRecord, SecretString), EngineError> {
        validate_name(name).map_err(|e| EngineError::invalid("name", e.to_string()))?;
        let now = self.now();
        if let Some(exp) = expires_at {
            if exp <= now {
                return Err(EngineError::invalid(
                    "expires_at",
                    "the expiry must be in the future".into(),
                ));
            }
        }
        let random = keyward_core::secret::random_base62(ADMIN_TOKEN_RANDOM)?;
        let secret = SecretString::new(format!("{ADMIN_TOKEN_PREFIX}{random}"));
        let digest = self.pepper.digest(secret.expose().as_bytes());
        let tail: String = random.chars().skip(ADMIN_TOKEN_RANDOM - 4).collect();
        let head: String = random.chars().take(4).collect();
        let record = keyward_store::AdminTokenRecord {
            id: new_id("adm")?,
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            hint: format!("{ADMIN_TOKEN_PREFIX}{head}…{tail}"),
            created_at: now,
            expires_at,
            revoked_at: None,
            created_by: actor.to_owned(),
        };
        self.store.create_admin_token(&record, &digest).await?;
        self.audit_token(actor, "admin_token.created", &record).await;
        Ok((record, secret))
    }

    pub async fn list_admin_tokens(&self) -> Result<Vec<keyward_store::AdminTokenRecord>, EngineError> {
        Ok(self.store.list_admin_tokens().await?)
    }

    /// Revokes a scoped admin token (by id or name); its next request is refused. Idempotent.
    pub async fn revoke_admin_token(
        &self,
        actor: &str,
        id_or_name: &str,
    ) -> Result<keyward_store::AdminTokenRecord, EngineError> {
        let t = self
            .store
            .revoke_admin_token(id_or_name, self.now())
            .await?
            .ok_or(EngineError::NotFound("admin token"))?;
        self.audit_token(actor, "admin_token.revoked", &t).await;
        Ok(t)
    }

    /// The scoped admin token presented, if it is well-formed, known, not revoked and not
    /// expired (looked up by digest on every request — no cache, so a revocation applies to
    /// the next request on every node — and re-checked in constant time).
    pub async fn authenticate_admin_token(
        &self,
        presented: &str,
    ) -> Result<Option<(keyward_store::AdminTokenRecord, AdminRole)>, EngineError> {
        if !is_admin_token_shape(presented) {
            return Ok(None);
        }
        let digest = self.pepper.digest(presented.as_bytes());
        let Some((record, stored)) = self.store.admin_token_by_digest(&digest).await? else {
            return Ok(None);
        };
        if !stored.ct_eq(&digest) || record.revoked_at.is_some() {
            return Ok(None);
        }
        if record.expires_at.is_some_and(|e| e <= self.now()) {
            return Ok(None);
        }
        let Some(role) = AdminRole::parse(&record.role) else {
            return Ok(None);
        };
        Ok(Some((record, role)))
    }
}
