//! keyward store: the [`Store`] trait, its backends and the read-through key cache.
//!
//! Nothing above this crate writes SQL. Timestamps are stored as Unix seconds (UTC),
//! scopes as a JSON array, key digests as 32-byte blobs.
#![forbid(unsafe_code)]

mod cache;
mod error;
mod lock;
mod postgres;
mod rows;
mod sql;
mod sqlite;

use async_trait::async_trait;
use keyward_core::audit::{ChainRow, Checkpoint};
use keyward_core::model::{
    AuditEvent, AuditFilter, ClientRecord, ClientSecretInfo, KeyUpdate, SigningKeyRow, UsageRow,
};
use keyward_core::policy::Policy;
use keyward_core::{AppRecord, Digest, KeyRecord};
use time::OffsetDateTime;

pub use cache::{CacheConfig, CacheStats, KeyCache, LatencyHistogram, Lookup, LATENCY_BUCKETS};
pub use error::StoreError;
pub use postgres::{PgOptions, PgStore};
pub use sqlite::{BackupReport, SqliteStore};

/// A change made by some node, as announced to every node sharing the store (PostgreSQL
/// `LISTEN`/`NOTIFY`). Announcements name objects by id only, never by key material or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An existing key changed (revoked, updated, disabled, enabled, rotated away).
    Key(String),
    /// A key was created (`*` for a bulk load); `legacy` when it is an imported legacy secret.
    KeyCreated { id: String, legacy: bool },
    /// An app's policy changed (it is embedded in the cached records of its keys).
    App(String),
    /// An OAuth client or its secrets changed.
    Client(String),
    /// A signing key was added or retired.
    SigningKeys,
    /// An access token was revoked (the denylist must be re-read).
    TokenRevoked,
    /// A managed webhook was created, changed or deleted (the set must be re-read).
    Webhooks,
    /// Announcements may have been missed (the channel was lost and is back): drop every cache.
    Resync,
}

impl Change {
    /// The wire form (the `NOTIFY` payload).
    pub fn encode(&self) -> String {
        match self {
            Change::Key(id) => format!("key:{id}"),
            Change::KeyCreated { id, legacy: false } => format!("key+:{id}"),
            Change::KeyCreated { id, legacy: true } => format!("key+legacy:{id}"),
            Change::App(id) => format!("app:{id}"),
            Change::Client(id) => format!("client:{id}"),
            Change::SigningKeys => "signing_keys:".into(),
            Change::TokenRevoked => "token_revoked:".into(),
            Change::Webhooks => "webhooks:".into(),
            Change::Resync => "resync:".into(),
        }
    }

    /// Parses a payload; unknown kinds become `Resync` (the safe reading).
    pub fn decode(payload: &str) -> Change {
        let (kind, id) = payload.split_once(':').unwrap_or((payload, ""));
        let id = id.to_owned();
        match kind {
            "key" => Change::Key(id),
            "key+" => Change::KeyCreated { id, legacy: false },
            "key+legacy" => Change::KeyCreated { id, legacy: true },
            "app" => Change::App(id),
            "client" => Change::Client(id),
            "signing_keys" => Change::SigningKeys,
            "token_revoked" => Change::TokenRevoked,
            "webhooks" => Change::Webhooks,
            _ => Change::Resync,
        }
    }
}

/// A scoped admin token (besides the bootstrap token of the configuration). The token itself
/// is stored only as `HMAC-SHA256(pepper, token)`; `hint` is its prefix and last 4 characters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdminTokenRecord {
    pub id: String,
    pub name: String,
    /// `read` (GET only) or `write` (everything but managing admin tokens).
    pub role: String,
    pub hint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The actor that created it (`admin` for the bootstrap token, `cli`).
    pub created_by: String,
}

/// A webhook managed at run time. Its signing secret is never stored: `secret_env` names the
/// environment variable (read on every node) or `secret_file` the 0600 file that holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookRecord {
    pub id: String,
    pub name: String,
    pub url: String,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    /// Event kinds delivered: exact kinds, prefixes ending in `.`, or `*`.
    pub events: Vec<String>,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_ms: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The head of the audit chain: the last event appended and its hash (`None` before the first
/// event of the chain); events up to `legacy_seq` were stored before the chain existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: Option<[u8; 32]>,
    pub legacy_seq: i64,
}

/// What a retention pass looks at: each field `None` when that kind of data is kept forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionCut {
    /// Usage rows of minutes (Unix minutes) before this one.
    pub usage_before_minute: Option<i64>,
    /// Audit events up to this seq (the cut, from [`Store::audit_cut_point`]).
    pub audit_up_to_seq: Option<i64>,
    /// Keys revoked or expired at or before this instant (their digest goes).
    pub keys_ended_before: Option<OffsetDateTime>,
    /// Tombstones made at or before this instant (the record goes).
    pub tombstones_before: Option<OffsetDateTime>,
    /// Denylisted tokens and seen `jti`s that expired at or before this instant.
    pub expired_before: Option<OffsetDateTime>,
}

/// How many rows each kind of retention concerns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionCounts {
    pub usage_rows: u64,
    pub audit_events: u64,
    pub keys_purged: u64,
    pub tombstones_deleted: u64,
    /// Expired denylisted tokens and seen `jti`s.
    pub expired_token_rows: u64,
}

/// The persistence interface. Every backend passes the same test suite.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is (`sqlite`, `postgres`), for logs and health reports.
    fn backend(&self) -> &'static str;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Changes made by other nodes sharing this store, for cache invalidation. `None` for
    /// backends that only one process uses (SQLite). The first call starts the listener.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// Whether the change channel is connected right now (`None`: the backend has none).
    fn changes_connected(&self) -> Option<bool> {
        None
    }

    /// Stores many new keys at once (seeding, imports), in batched transactions. Same rules as
    /// [`Store::create_key`]; a failing batch is rolled back whole.
    async fn create_keys_bulk(&self, keys: &[(KeyRecord, Digest)]) -> Result<(), StoreError> {
        for (k, d) in keys {
            self.create_key(k, d).await?;
        }
        Ok(())
    }

    /// Creates an app. `Conflict` when the name is taken.
    async fn create_app(&self, app: &AppRecord) -> Result<(), StoreError>;
    /// An app by id or, failing that, by name.
    async fn get_app(&self, id_or_name: &str) -> Result<Option<AppRecord>, StoreError>;
    /// All apps, oldest first.
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError>;

    /// Stores a new key record with the digest of its secret. `Conflict` on a digest collision,
    /// `NotFound` when the app does not exist.
    async fn create_key(&self, key: &KeyRecord, digest: &Digest) -> Result<(), StoreError>;
    /// The key whose digest this is, with the digest as stored (for a constant-time re-check).
    async fn key_by_digest(&self, digest: &Digest) -> Result<Option<(KeyRecord, Digest)>, StoreError>;
    /// A key by id.
    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// A key by id, with its digest (a node that hears of a key created elsewhere forgets
    /// that one digest, not its whole negative cache); no digest for a tombstone.
    async fn key_with_digest(&self, id: &str) -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError>;
    /// Keys, oldest first, optionally only those of one app (by id).
    async fn list_keys(&self, app_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError>;
    /// Revokes a key at `at` (idempotent: an already revoked key keeps its first revocation
    /// time). Returns the record after the change and its digest (none for a tombstone),
    /// `None` if no such key.
    async fn revoke_key(&self, id: &str, at: OffsetDateTime)
        -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError>;
    /// Changes a key's name, scopes or policy. Returns the record after the change and its
    /// digest (none for a tombstone), `None` if no such key.
    async fn update_key(&self, id: &str, update: &KeyUpdate)
        -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError>;
    /// Replaces an app's policy (by id). Returns the app and the digests of all of its keys
    /// (their cached records embed the app's policy), `None` if no such app.
    async fn update_app_policy(
        &self,
        id: &str,
        policy: &Policy,
    ) -> Result<Option<(AppRecord, Vec<Digest>)>, StoreError>;

    /// Rotates `old_id`: stores `successor` (with `digest`), links the two and sets the old
    /// key's expiry to `old_expires_at`, atomically. `Conflict` when the old key is revoked,
    /// a tombstone or was already rotated, `NotFound` when it does not exist. The successor's `limit_id` is
    /// the old key's, or the old key's id (the first key of the chain), read in the same
    /// transaction. Returns the old key after the change and its digest.
    async fn rotate_key(
        &self,
        old_id: &str,
        successor: &KeyRecord,
        digest: &Digest,
        old_expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<(KeyRecord, Digest), StoreError>;

    /// Appends to the audit log (append-only), linked to the chain: the event gets the next
    /// sequence number, the hash of the event before it and its own hash
    /// ([`keyward_core::audit`]), in one transaction that serialises appends (the chain head's
    /// row lock on PostgreSQL, the write lock on SQLite). Returns the event's sequence number.
    async fn append_audit(&self, event: &AuditEvent) -> Result<i64, StoreError>;
    /// Audit events, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;

    // ---- the audit chain and retention ------------------------------------------------------

    /// The head of the audit chain.
    async fn audit_head(&self) -> Result<AuditHead, StoreError>;
    /// Up to `limit` stored events after `after_seq`, oldest first, every column raw (for
    /// verifying the chain).
    async fn audit_chain(&self, after_seq: i64, limit: u32) -> Result<Vec<ChainRow>, StoreError>;
    /// Every checkpoint, by seq.
    async fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;
    /// Stores a checkpoint; `false` when one of the same seq and kind exists (another node made
    /// it).
    async fn add_audit_checkpoint(&self, checkpoint: &Checkpoint) -> Result<bool, StoreError>;
    /// Where retention may cut the audit log for the horizon `before`: the last event such that
    /// it and every event before it are older than `before`, with its hash
    /// ([`keyward_core::audit::GENESIS`] for an event from before the chain). `None` when no
    /// event is that old.
    async fn audit_cut_point(&self, before: OffsetDateTime) -> Result<Option<(i64, [u8; 32])>, StoreError>;
    /// Deletes up to `limit` of the oldest events with `seq <= up_to_seq` (allowed by the
    /// store's triggers only up to a cut checkpoint); how many went.
    async fn delete_audit(&self, up_to_seq: i64, limit: u32) -> Result<u64, StoreError>;
    /// Deletes the checkpoints older than the latest cut; how many went.
    async fn prune_audit_checkpoints(&self) -> Result<u64, StoreError>;
    /// Deletes up to `limit` usage rows of minutes before `before_minute`; how many went.
    async fn delete_usage(&self, before_minute: i64, limit: u32) -> Result<u64, StoreError>;
    /// Turns up to `limit` keys revoked or expired at or before `ended_before` into tombstones
    /// (digest removed, `purged_at = at`); their ids. A tombstone never verifies again and its
    /// record stays.
    async fn purge_keys(
        &self,
        ended_before: OffsetDateTime,
        at: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// Deletes up to `limit` denylisted tokens and up to `limit` seen one-time `jti`s that
    /// expired at or before `now` (they can never matter again); how many went (both tables).
    async fn delete_expired_tokens(&self, now: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// Deletes up to `limit` tombstones made at or before `purged_before`; how many went.
    async fn delete_tombstones(&self, purged_before: OffsetDateTime, limit: u32) -> Result<u64, StoreError>;
    /// How many rows a retention pass with this cut would remove (nothing is changed).
    async fn retention_counts(&self, cut: &RetentionCut) -> Result<RetentionCounts, StoreError>;

    /// Adds a batch of usage counts and advances `last_used_at`, in one transaction.
    async fn record_usage(&self, rows: &[UsageRow], last_used: &[(String, OffsetDateTime)]) -> Result<(), StoreError>;
    /// How many legacy (imported, unformatted) keys exist, revoked or not.
    async fn count_legacy_keys(&self) -> Result<u64, StoreError>;
    /// Usage rows since a Unix minute, for a key or an app (or everything).
    async fn usage(
        &self,
        key_id: Option<&str>,
        app_id: Option<&str>,
        since_minute: i64,
    ) -> Result<Vec<UsageRow>, StoreError>;

    // ---- scoped admin tokens -------------------------------------------------------------

    /// Stores a new admin token by digest. `Conflict` when the name (or digest) is taken.
    async fn create_admin_token(&self, token: &AdminTokenRecord, digest: &Digest) -> Result<(), StoreError>;
    /// The admin token whose digest this is, with the digest as stored (for a constant-time
    /// re-check); revoked and expired tokens are returned too (the caller decides).
    async fn admin_token_by_digest(&self, digest: &Digest) -> Result<Option<(AdminTokenRecord, Digest)>, StoreError>;
    /// Every admin token, oldest first.
    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError>;
    /// Revokes an admin token by id or name (idempotent: the first revocation time stays).
    /// `None` if no such token.
    async fn revoke_admin_token(
        &self,
        id_or_name: &str,
        at: OffsetDateTime,
    ) -> Result<Option<AdminTokenRecord>, StoreError>;

    // ---- OAuth 2.0 ----------------------------------------------------------------------

    /// Stores a client and, for secret-based clients, the digest and hint of its first secret.
    /// Managed webhooks, oldest first.
    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError>;
    /// `Conflict` when the name is taken.
    async fn create_webhook(&self, webhook: &WebhookRecord) -> Result<(), StoreError>;
    /// Replaces every field but `id` and `created_at`; `false` when there is no such webhook.
    async fn update_webhook(&self, webhook: &WebhookRecord) -> Result<bool, StoreError>;
    /// `false` when there is no such webhook.
    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError>;

    async fn create_client(&self, client: &ClientRecord, secret: Option<(&Digest, &str)>) -> Result<(), StoreError>;
    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn list_clients(&self, app_id: Option<&str>) -> Result<Vec<ClientRecord>, StoreError>;
    /// Replaces a client's mutable fields (name, scopes, jwks, token_ttl, options, policy,
    /// disabled_at). `false` if no such client.
    async fn update_client(&self, client: &ClientRecord) -> Result<bool, StoreError>;
    /// Deletes a client and its secrets. `false` if no such client.
    async fn delete_client(&self, id: &str) -> Result<bool, StoreError>;
    /// The client's secrets (digests) that have not expired at `now`.
    async fn client_secrets(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<(Digest, ClientSecretInfo)>, StoreError>;
    /// Adds a new secret; every current secret stays valid until `old_until` (or its own
    /// earlier expiry); expired secrets are deleted. `false` if no such client.
    async fn rotate_client_secret(
        &self,
        id: &str,
        digest: &Digest,
        hint: &str,
        now: OffsetDateTime,
        old_until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    async fn add_signing_key(&self, key: &SigningKeyRow) -> Result<(), StoreError>;
    /// Every signing key not yet past `remove_after`, oldest first.
    async fn signing_keys(&self, now: OffsetDateTime) -> Result<Vec<SigningKeyRow>, StoreError>;
    /// Marks a key retired at `at`; it stays published until `remove_after`.
    async fn retire_signing_key(
        &self,
        kid: &str,
        at: OffsetDateTime,
        remove_after: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Adds a token to the denylist until it would have expired.
    async fn revoke_token(&self, jti: &str, expires_at: OffsetDateTime) -> Result<(), StoreError>;
    /// Revoked tokens that have not expired at `now`.
    async fn revoked_tokens(&self, now: OffsetDateTime) -> Result<Vec<(String, OffsetDateTime)>, StoreError>;
    /// Remembers a one-time `jti` in `scope` until `expires_at`. `false` when it was already
    /// seen and has not expired (a replay).
    async fn remember_jti(
        &self,
        scope: &str,
        jti: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
}
