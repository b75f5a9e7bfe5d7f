//! Row mapping, written once for both backends: a database row → a record.
//!
//! The choice: generic functions over any [`sqlx::Row`] whose database decodes the three
//! column types the schema uses (text, 64-bit integer, byte string) and their `NULL`able
//! forms. The `Decode`/`Type`/`ColumnIndex` bounds are written once, on the blanket
//! implementation of [`Cols`] (typed column reads that also apply the storage conventions);
//! every `*_from_row` below takes `&impl Cols` and reads like the schema. A neutral
//! intermediate struct per record would have needed a column-by-column fill in each backend,
//! which is the duplication this module removes.
//!
//! Storage conventions, the same in both schemas (see `migrations/`): timestamps are Unix
//! seconds (UTC) in a 64-bit integer column (`INTEGER` / `BIGINT`); booleans are 0/1 in the same;
//! scopes are a JSON array as text; policies, client options, JWKs and audit details are JSON
//! text; digests are 32-byte blobs (`BLOB` / `BYTEA`).
//!
//! The column lists of the `SELECT`s live here too (as macros, so that statements can be
//! `concat!`ed into `&'static str`s), next to the code that reads them.

use std::str::FromStr;

use keyward_core::audit::{ChainRow, Checkpoint};
use keyward_core::model::{
    AuditEvent, ClientAuthMethod, ClientRecord, ClientSecretInfo, Lifecycle, Severity, SigningKeyRow, UsageRow,
};
use keyward_core::policy::Policy;
use keyward_core::{AppRecord, Digest, KeyEnv, KeyRecord, Scope};
use sqlx::{ColumnIndex, Decode, Row, Type};
use time::OffsetDateTime;

use crate::{AdminTokenRecord, AuditHead, StoreError, WebhookRecord};

/// The columns [`app_from_row`] reads (table `apps`, unaliased).
macro_rules! app_columns {
    () => {
        "id, name, created_at, policy"
    };
}

/// The columns [`key_from_row`] reads (`keys k JOIN apps a ON a.id = k.app_id`).
macro_rules! key_columns {
    () => {
        "k.id, k.app_id, a.name AS app_name, k.name, k.digest, k.hint, k.env, k.scopes, \
         k.expires_at, k.created_at, k.revoked_at, k.policy, a.policy AS app_policy, \
         k.disabled_at, k.canary, k.legacy, k.rotated_from, k.rotated_to, k.rotated_at, k.last_used_at, \
         k.exchange_only, k.limit_id, k.purged_at"
    };
}

/// The columns [`client_from_row`] reads (`clients c JOIN apps a ON a.id = c.app_id`).
macro_rules! client_columns {
    () => {
        "c.id, c.app_id, a.name AS app_name, c.name, c.scopes, c.auth_method, c.jwks, \
         c.token_ttl, c.options, c.policy, c.created_at, c.disabled_at"
    };
}

/// The columns [`admin_token_from_row`] reads (table `admin_tokens`).
macro_rules! admin_token_columns {
    () => {
        "id, name, role, digest, hint, created_at, expires_at, revoked_at, created_by"
    };
}

/// The columns [`webhook_from_row`] reads (table `webhooks`).
macro_rules! webhook_columns {
    () => {
        "id, name, url, secret_env, secret_file, events, timeout_ms, max_attempts, backoff_ms, created_at, updated_at"
    };
}

pub(crate) use {admin_token_columns, app_columns, client_columns, key_columns, webhook_columns};

/// Typed reads of a row's columns, whatever the backend; errors are [`StoreError`]s (a missing
/// or undecodable column is `Corrupt`, never a panic).
pub(crate) trait Cols {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError>;
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// A timestamp (Unix seconds).
    fn ts(&self, col: &str) -> Result<OffsetDateTime, StoreError> {
        from_ts(self.int(col)?)
    }

    fn opt_ts(&self, col: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        self.opt_int(col)?.map(from_ts).transpose()
    }

    /// A boolean (0 is false, anything else true).
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        Ok(self.int(col)? != 0)
    }

    /// A 32-byte digest.
    fn digest(&self, col: &str) -> Result<Digest, StoreError> {
        Digest::from_slice(&self.bytes(col)?).ok_or_else(|| StoreError::Corrupt("digest has the wrong length".into()))
    }

    /// A 32-byte digest, or `NULL`.
    fn opt_digest(&self, col: &str) -> Result<Option<Digest>, StoreError> {
        match self.opt_bytes(col)? {
            None => Ok(None),
            Some(b) => Digest::from_slice(&b)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt("digest has the wrong length".into())),
        }
    }

    /// A 32-byte hash (audit chain).
    fn hash(&self, col: &str) -> Result<[u8; 32], StoreError> {
        keyward_core::audit::hash32(&self.bytes(col)?)
            .ok_or_else(|| StoreError::Corrupt("a stored hash has the wrong length".into()))
    }

    /// A policy (JSON text).
    fn policy(&self, col: &str) -> Result<Policy, StoreError> {
        serde_json::from_str(&self.text(col)?).map_err(|_| StoreError::Corrupt("a stored policy is invalid".into()))
    }
}

impl<R> Cols for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String, StoreError> {
        self.try_get(col).map_err(StoreError::from_sqlx)
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.try_get(col).map_err(StoreError::from_sqlx)
    }

    fn int(&self, col: &str) -> Result<i64, StoreError> {
        self.try_get(col).map_err(StoreError::from_sqlx)
    }

    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(col).map_err(StoreError::from_sqlx)
    }

    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        self.try_get(col).map_err(StoreError::from_sqlx)
    }

    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.try_get(col).map_err(StoreError::from_sqlx)
    }
}

fn from_ts(v: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(v).map_err(|_| StoreError::Corrupt("timestamp out of range".into()))
}

/// Scopes stored as a JSON array; `what` names the owner in the error (`""`, `"client "`).
fn scopes_from(text: &str, what: &str) -> Result<Vec<Scope>, StoreError> {
    let scopes: Vec<String> =
        serde_json::from_str(text).map_err(|_| StoreError::Corrupt(format!("{what}scopes are not a JSON array")))?;
    scopes
        .iter()
        .map(|s| Scope::new(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| StoreError::Corrupt(format!("a stored {what}scope is invalid")))
}

/// An app (`app_columns!`).
pub(crate) fn app_from_row(row: &impl Cols) -> Result<AppRecord, StoreError> {
    Ok(AppRecord {
        id: row.text("id")?,
        name: row.text("name")?,
        created_at: row.ts("created_at")?,
        policy: row.policy("policy")?,
    })
}

/// A key found by its digest, with its app's name and policy and the digest as stored
/// (`key_columns!`; a row found by digest always has one).
pub(crate) fn key_from_digest_row(row: &impl Cols) -> Result<(KeyRecord, Digest), StoreError> {
    match key_from_row(row)? {
        (key, Some(digest)) => Ok((key, digest)),
        (_, None) => Err(StoreError::Corrupt("a key found by digest has none".into())),
    }
}

/// A key with its app's name and policy, and its digest as stored (`key_columns!`); no digest
/// for a tombstone.
pub(crate) fn key_from_row(row: &impl Cols) -> Result<(KeyRecord, Option<Digest>), StoreError> {
    let scopes = scopes_from(&row.text("scopes")?, "")?;
    let env = KeyEnv::from_str(&row.text("env")?).map_err(|_| StoreError::Corrupt("unknown key env".into()))?;
    let digest = row.opt_digest("digest")?;
    Ok((
        KeyRecord {
            id: row.text("id")?,
            app_id: row.text("app_id")?,
            app_name: row.text("app_name")?,
            name: row.opt_text("name")?,
            hint: row.text("hint")?,
            env,
            scopes,
            expires_at: row.opt_ts("expires_at")?,
            created_at: row.ts("created_at")?,
            revoked_at: row.opt_ts("revoked_at")?,
            policy: row.policy("policy")?,
            app_policy: row.policy("app_policy")?,
            lifecycle: Lifecycle {
                disabled_at: row.opt_ts("disabled_at")?,
                canary: row.flag("canary")?,
                legacy: row.flag("legacy")?,
                exchange_only: row.flag("exchange_only")?,
                rotated_from: row.opt_text("rotated_from")?,
                rotated_to: row.opt_text("rotated_to")?,
                limit_id: row.opt_text("limit_id")?,
                rotated_at: row.opt_ts("rotated_at")?,
                last_used_at: row.opt_ts("last_used_at")?,
                purged_at: row.opt_ts("purged_at")?,
            },
        },
        digest,
    ))
}

/// An OAuth client with its app's name (`client_columns!`).
pub(crate) fn client_from_row(row: &impl Cols) -> Result<ClientRecord, StoreError> {
    let scopes = scopes_from(&row.text("scopes")?, "client ")?;
    let method = row.text("auth_method")?;
    let jwks = row.opt_text("jwks")?;
    let options = row.text("options")?;
    Ok(ClientRecord {
        id: row.text("id")?,
        app_id: row.text("app_id")?,
        app_name: row.text("app_name")?,
        name: row.opt_text("name")?,
        scopes,
        auth_method: ClientAuthMethod::parse(&method)
            .ok_or_else(|| StoreError::Corrupt("unknown client auth method".into()))?,
        jwks: jwks
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|_| StoreError::Corrupt("client jwks are not JSON".into()))?,
        token_ttl: u32::try_from(row.int("token_ttl")?).unwrap_or(300),
        options: serde_json::from_str(&options).map_err(|_| StoreError::Corrupt("client options".into()))?,
        policy: row.policy("policy")?,
        created_at: row.ts("created_at")?,
        disabled_at: row.opt_ts("disabled_at")?,
    })
}

/// One of a client's secrets: its digest and what may be shown of it.
pub(crate) fn client_secret_from_row(row: &impl Cols) -> Result<(Digest, ClientSecretInfo), StoreError> {
    Ok((
        row.digest("digest")?,
        ClientSecretInfo {
            hint: row.text("hint")?,
            created_at: row.ts("created_at")?,
            expires_at: row.opt_ts("expires_at")?,
        },
    ))
}

/// A token signing key (its private half sealed).
pub(crate) fn signing_key_from_row(row: &impl Cols) -> Result<SigningKeyRow, StoreError> {
    let jwk = row.text("public_jwk")?;
    Ok(SigningKeyRow {
        kid: row.text("kid")?,
        alg: row.text("alg")?,
        public_jwk: serde_json::from_str(&jwk).map_err(|_| StoreError::Corrupt("public JWK is not JSON".into()))?,
        private_sealed: row.bytes("private_sealed")?,
        created_at: row.ts("created_at")?,
        active_at: row.ts("active_at")?,
        retired_at: row.opt_ts("retired_at")?,
        remove_after: row.opt_ts("remove_after")?,
    })
}

/// A denylisted access token: its `jti` and when it would have expired.
pub(crate) fn revoked_token_from_row(row: &impl Cols) -> Result<(String, OffsetDateTime), StoreError> {
    Ok((row.text("jti")?, row.ts("expires_at")?))
}

/// A scoped admin token and its digest as stored (`admin_token_columns!`).
pub(crate) fn admin_token_from_row(row: &impl Cols) -> Result<(AdminTokenRecord, Digest), StoreError> {
    let digest = row.digest("digest")?;
    Ok((
        AdminTokenRecord {
            id: row.text("id")?,
            name: row.text("name")?,
            role: row.text("role")?,
            hint: row.text("hint")?,
            created_at: row.ts("created_at")?,
            expires_at: row.opt_ts("expires_at")?,
            revoked_at: row.opt_ts("revoked_at")?,
            created_by: row.text("created_by")?,
        },
        digest,
    ))
}

/// A managed webhook (`webhook_columns!`).
pub(crate) fn webhook_from_row(row: &impl Cols) -> Result<WebhookRecord, StoreError> {
    let events: Vec<String> = serde_json::from_str(&row.text("events")?)
        .map_err(|_| StoreError::Corrupt("webhooks.events is not a JSON array of strings".into()))?;
    let count = |col: &str| -> Result<u64, StoreError> {
        u64::try_from(row.int(col)?).map_err(|_| StoreError::Corrupt(format!("webhooks.{col} is negative")))
    };
    Ok(WebhookRecord {
        id: row.text("id")?,
        name: row.text("name")?,
        url: row.text("url")?,
        secret_env: row.opt_text("secret_env")?,
        secret_file: row.opt_text("secret_file")?,
        events,
        timeout_ms: count("timeout_ms")?,
        max_attempts: u32::try_from(count("max_attempts")?)
            .map_err(|_| StoreError::Corrupt("webhooks.max_attempts is out of range".into()))?,
        backoff_ms: count("backoff_ms")?,
        created_at: row.ts("created_at")?,
        updated_at: row.ts("updated_at")?,
    })
}

/// An audit event. An unknown severity reads as `info`; unreadable details as `null`.
pub(crate) fn audit_from_row(row: &impl Cols) -> Result<AuditEvent, StoreError> {
    let severity = match row.text("severity")?.as_str() {
        "high" => Severity::High,
        "warning" => Severity::Warning,
        _ => Severity::Info,
    };
    let details = row.text("details")?;
    Ok(AuditEvent {
        seq: row.int("seq")?,
        at: row.ts("at")?,
        actor: row.text("actor")?,
        kind: row.text("kind")?,
        severity,
        target: row.opt_text("target")?,
        source_ip: row.opt_text("source_ip")?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
    })
}

/// A per-minute usage count.
pub(crate) fn usage_from_row(row: &impl Cols) -> Result<UsageRow, StoreError> {
    Ok(UsageRow {
        key_id: row.text("key_id")?,
        app_id: row.text("app_id")?,
        minute: row.int("minute")?,
        outcome: row.text("outcome")?,
        count: u64::try_from(row.int("count")?).unwrap_or(0),
    })
}

/// An audit event with every column raw, as the chain covers it (`sql::audit_chain`).
pub(crate) fn chain_row_from_row(row: &impl Cols) -> Result<ChainRow, StoreError> {
    Ok(ChainRow {
        seq: row.int("seq")?,
        at: row.int("at")?,
        actor: row.text("actor")?,
        kind: row.text("kind")?,
        severity: row.text("severity")?,
        target: row.opt_text("target")?,
        source_ip: row.opt_text("source_ip")?,
        details: row.text("details")?,
        prev_hash: row.opt_bytes("prev_hash")?,
        hash: row.opt_bytes("hash")?,
    })
}

/// The chain head (table `audit_head`).
pub(crate) fn audit_head_from_row(row: &impl Cols) -> Result<AuditHead, StoreError> {
    let hash = match row.opt_bytes("hash")? {
        None => None,
        Some(b) => Some(
            keyward_core::audit::hash32(&b)
                .ok_or_else(|| StoreError::Corrupt("the audit chain head has a hash of the wrong length".into()))?,
        ),
    };
    Ok(AuditHead {
        seq: row.int("seq")?,
        hash,
        legacy_seq: row.int("legacy_seq")?,
    })
}

/// A checkpoint of the audit chain (table `audit_checkpoints`).
pub(crate) fn checkpoint_from_row(row: &impl Cols) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        seq: row.int("seq")?,
        hash: row.hash("hash")?,
        cut: row.flag("cut")?,
        at: row.int("at")?,
        mac: row.hash("mac")?,
    })
}

/// Where retention may cut the chain (columns `seq`, `hash`): an event from before the chain
/// has no hash and stands for [`keyward_core::audit::GENESIS`] (what the first event of the
/// chain links to).
pub(crate) fn cut_point_from_row(row: &impl Cols) -> Result<(i64, [u8; 32]), StoreError> {
    let hash = match row.opt_bytes("hash")? {
        None => keyward_core::audit::GENESIS,
        Some(b) => keyward_core::audit::hash32(&b)
            .ok_or_else(|| StoreError::Corrupt("a stored hash has the wrong length".into()))?,
    };
    Ok((row.int("seq")?, hash))
}

/// A count (column `n`).
pub(crate) fn count_from_row(row: &impl Cols) -> Result<u64, StoreError> {
    Ok(u64::try_from(row.int("n")?).unwrap_or(0))
}
