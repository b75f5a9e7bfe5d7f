//! Statements both backends run, written once: their text and their bindings.
//!
//! Each function returns a query for either database (the caller's executor decides which);
//! [`optional`] and [`all`] run a read on a pool and map its rows with [`crate::rows`]. The
//! backends add what is theirs around them (transactions, PostgreSQL's `NOTIFY`s) and keep only
//! the statements whose SQL differs: bulk loads and usage flushes (`UNNEST` and `GREATEST` on
//! PostgreSQL, a statement a row and `MAX` on SQLite), the replay store (one conditional upsert
//! on PostgreSQL, delete-then-insert on SQLite), the row lock of a client-secret rotation
//! (`FOR UPDATE`, which SQLite has not).
//!
//! **Placeholders** are handled here, once: every statement is written with numbered
//! placeholders, `$1`, `$2`, …, which PostgreSQL takes natively and which sqlx's SQLite driver
//! binds by number too (as it does `?N`), so one text runs on both. A parameter whose type
//! PostgreSQL must know in an `IS NULL` test is spelled `CAST($N AS TEXT)` (or `BIGINT`),
//! standard SQL that both accept. The store test suite runs every statement here on SQLite and
//! on PostgreSQL.
//!
//! **Values** are bound through [`Bind`], whose typed methods apply the storage conventions
//! (see [`crate::rows`]): timestamps as Unix seconds, booleans as 0/1, JSON as text, digests
//! as 32-byte blobs. Its `Encode`/`Type` bounds are written once, on its implementation.

use keyward_core::audit::{ChainRow, Checkpoint};
use keyward_core::model::{AuditEvent, AuditFilter, ClientRecord, KeyUpdate, SigningKeyRow};
use keyward_core::policy::Policy;
use keyward_core::{AppRecord, Digest, KeyRecord, Scope};
use sqlx::query::Query;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};
use time::OffsetDateTime;

use crate::rows::{admin_token_columns, app_columns, client_columns, key_columns, webhook_columns};
use crate::{AdminTokenRecord, RetentionCounts, RetentionCut, StoreError, WebhookRecord};

/// A query being built for database `DB`.
pub(crate) type Q<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// Binding of the value kinds the store writes, for either database.
pub(crate) trait Bind<'q>: Sized {
    fn text(self, v: &'q str) -> Self;
    fn opt_text(self, v: Option<&'q str>) -> Self;
    /// Text made for this statement (JSON).
    fn owned(self, v: String) -> Self;
    fn opt_owned(self, v: Option<String>) -> Self;
    fn int(self, v: i64) -> Self;
    fn opt_int(self, v: Option<i64>) -> Self;
    fn bytes(self, v: &'q [u8]) -> Self;
    /// Bytes made for this statement (a hash).
    fn owned_bytes(self, v: Vec<u8>) -> Self;

    /// A timestamp, as Unix seconds.
    fn ts(self, t: OffsetDateTime) -> Self {
        self.int(ts(t))
    }

    fn opt_ts(self, t: Option<OffsetDateTime>) -> Self {
        self.opt_int(t.map(ts))
    }

    /// A boolean, as 0 or 1.
    fn flag(self, b: bool) -> Self {
        self.int(i64::from(b))
    }

    /// A digest, as its 32 bytes.
    fn digest(self, d: &'q Digest) -> Self {
        self.bytes(&d.as_bytes()[..])
    }
}

impl<'q, DB> Bind<'q> for Q<'q, DB>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
    Option<String>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    Vec<u8>: Encode<'q, DB> + Type<DB>,
{
    fn text(self, v: &'q str) -> Self {
        self.bind(v)
    }

    fn opt_text(self, v: Option<&'q str>) -> Self {
        self.bind(v)
    }

    fn owned(self, v: String) -> Self {
        self.bind(v)
    }

    fn opt_owned(self, v: Option<String>) -> Self {
        self.bind(v)
    }

    fn int(self, v: i64) -> Self {
        self.bind(v)
    }

    fn opt_int(self, v: Option<i64>) -> Self {
        self.bind(v)
    }

    fn bytes(self, v: &'q [u8]) -> Self {
        self.bind(v)
    }

    fn owned_bytes(self, v: Vec<u8>) -> Self {
        self.bind(v)
    }
}

/// Runs a read on the pool; maps its row, if any.
pub(crate) async fn optional<'q, DB, T>(
    pool: &Pool<DB>,
    query: Q<'q, DB>,
    map: fn(&DB::Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
{
    let row = query.fetch_optional(pool).await.map_err(StoreError::from_sqlx)?;
    row.as_ref().map(map).transpose()
}

/// Runs a read on the pool; maps every row.
pub(crate) async fn all<'q, DB, T>(
    pool: &Pool<DB>,
    query: Q<'q, DB>,
    map: fn(&DB::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
{
    let found = query.fetch_all(pool).await.map_err(StoreError::from_sqlx)?;
    found.iter().map(map).collect()
}

/// How many rows each part of a retention pass concerns: four counts, for either database.
/// `count` reads column `n` of a row ([`crate::rows::count_from_row`]).
pub(crate) async fn retention_counts<DB>(
    pool: &Pool<DB>,
    cut: &RetentionCut,
    count: fn(&DB::Row) -> Result<u64, StoreError>,
) -> Result<RetentionCounts, StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Q<'q, DB>: Bind<'q>,
{
    let mut c = RetentionCounts::default();
    if let Some(m) = cut.usage_before_minute {
        c.usage_rows = optional(pool, count_usage_before(m), count).await?.unwrap_or(0);
    }
    if let Some(seq) = cut.audit_up_to_seq {
        c.audit_events = optional(pool, count_audit_up_to(seq), count).await?.unwrap_or(0);
    }
    if let Some(t) = cut.keys_ended_before {
        c.keys_purged = optional(pool, count_purgeable_keys(t), count).await?.unwrap_or(0);
    }
    if let Some(t) = cut.tombstones_before {
        c.tombstones_deleted = optional(pool, count_tombstones(t), count).await?.unwrap_or(0);
    }
    if let Some(t) = cut.expired_before {
        c.expired_token_rows = optional(pool, count_expired_tokens(t), count).await?.unwrap_or(0);
    }
    Ok(c)
}

/// A timestamp as stored (Unix seconds).
pub(crate) fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// A policy as stored (JSON).
pub(crate) fn policy_json(p: &Policy) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| "{}".into())
}

/// Scopes as stored (a JSON array of strings).
pub(crate) fn scopes_json(scopes: &[Scope]) -> String {
    let v: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

// ---- apps ---------------------------------------------------------------------------------

pub(crate) fn insert_app<'q, DB: Database>(app: &'q AppRecord) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("INSERT INTO apps (id, name, created_at, policy) VALUES ($1, $2, $3, $4)")
        .text(&app.id)
        .text(&app.name)
        .ts(app.created_at)
        .owned(policy_json(&app.policy))
}

/// The error of a failed [`insert_app`].
pub(crate) fn app_insert_error(e: sqlx::Error) -> StoreError {
    match StoreError::from_sqlx(e) {
        StoreError::Conflict(_) => StoreError::Conflict("an app with this name already exists".into()),
        other => other,
    }
}

/// The app with this id or, failing that, this name.
pub(crate) fn app_by_id_or_name<'q, DB: Database>(id_or_name: &'q str) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "SELECT ",
        app_columns!(),
        " FROM apps WHERE id = $1 UNION ALL SELECT ",
        app_columns!(),
        " FROM apps WHERE name = $1 AND id <> $1 LIMIT 1"
    ))
    .text(id_or_name)
}

pub(crate) fn apps<'q, DB: Database>() -> Q<'q, DB> {
    sqlx::query(concat!("SELECT ", app_columns!(), " FROM apps ORDER BY created_at, id"))
}

/// Sets an app's policy; answers the app after the change (no row: no such app).
pub(crate) fn set_app_policy<'q, DB: Database>(id: &'q str, policy: &Policy) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "UPDATE apps SET policy = $1 WHERE id = $2 RETURNING ",
        app_columns!()
    ))
    .owned(policy_json(policy))
    .text(id)
}

/// The digests of an app's keys (column `digest`; tombstones have none).
pub(crate) fn key_digests_of_app<'q, DB: Database>(app_id: &'q str) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("SELECT digest FROM keys WHERE app_id = $1 AND digest IS NOT NULL ORDER BY created_at, id").text(app_id)
}

// ---- keys ---------------------------------------------------------------------------------

/// The key INSERT (every write of a new key row, bulk loads on SQLite included).
pub(crate) fn insert_key<'q, DB: Database>(key: &'q KeyRecord, digest: &'q Digest) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "INSERT INTO keys (id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, policy, \
         disabled_at, canary, legacy, rotated_from, exchange_only, limit_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .text(&key.id)
    .text(&key.app_id)
    .opt_text(key.name.as_deref())
    .digest(digest)
    .text(&key.hint)
    .text(key.env.as_str())
    .owned(scopes_json(&key.scopes))
    .opt_ts(key.expires_at)
    .ts(key.created_at)
    .opt_ts(key.revoked_at)
    .owned(policy_json(&key.policy))
    .opt_ts(key.lifecycle.disabled_at)
    .flag(key.lifecycle.canary)
    .flag(key.lifecycle.legacy)
    .opt_text(key.lifecycle.rotated_from.as_deref())
    .flag(key.lifecycle.exchange_only)
    .opt_text(key.lifecycle.limit_id.as_deref())
}

/// The error of a failed key insert (no such app, or a duplicate id or digest).
pub(crate) fn key_insert_error(e: sqlx::Error) -> StoreError {
    match StoreError::from_sqlx(e) {
        StoreError::NotFound(_) => StoreError::NotFound("app"),
        StoreError::Conflict(_) => StoreError::Conflict("a key with the same id or digest exists".into()),
        other => other,
    }
}

/// The successor of `old` (as read in the rotation's transaction) as [`insert_key`] stores it:
/// never revoked, disabled, canary or legacy, linked to the old key, and counting its limits
/// under the old key's limit id (the first key of the rotation chain).
pub(crate) fn successor_row(successor: &KeyRecord, old: &KeyRecord) -> KeyRecord {
    let mut row = successor.clone();
    row.revoked_at = None;
    row.lifecycle.disabled_at = None;
    row.lifecycle.canary = false;
    row.lifecycle.legacy = false;
    row.lifecycle.rotated_from = Some(old.id.clone());
    row.lifecycle.limit_id = Some(old.limit_id().to_owned());
    row
}

pub(crate) fn key_by_digest<'q, DB: Database>(digest: &'q Digest) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "SELECT ",
        key_columns!(),
        " FROM keys k JOIN apps a ON a.id = k.app_id WHERE k.digest = $1"
    ))
    .digest(digest)
}

pub(crate) fn key_by_id<'q, DB: Database>(id: &'q str) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "SELECT ",
        key_columns!(),
        " FROM keys k JOIN apps a ON a.id = k.app_id WHERE k.id = $1"
    ))
    .text(id)
}

/// Keys, oldest first, of one app or all.
pub(crate) fn keys<'q, DB: Database>(app_id: Option<&'q str>) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "SELECT ",
        key_columns!(),
        " FROM keys k JOIN apps a ON a.id = k.app_id \
         WHERE (CAST($1 AS TEXT) IS NULL OR k.app_id = $1) ORDER BY k.created_at, k.id"
    ))
    .opt_text(app_id)
}

/// Revokes a key; the first revocation time stays.
pub(crate) fn revoke_key<'q, DB: Database>(id: &'q str, at: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("UPDATE keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
        .ts(at)
        .text(id)
}

/// The statements of a key update, one per field it changes (none: nothing to run).
pub(crate) fn update_key<'q, DB: Database>(id: &'q str, update: &'q KeyUpdate) -> Vec<Q<'q, DB>>
where
    Q<'q, DB>: Bind<'q>,
{
    let mut statements = Vec::new();
    if let Some(name) = &update.name {
        statements.push(sqlx::query("UPDATE keys SET name = $1 WHERE id = $2").opt_text(name.as_deref()));
    }
    if let Some(scopes) = &update.scopes {
        statements.push(sqlx::query("UPDATE keys SET scopes = $1 WHERE id = $2").owned(scopes_json(scopes)));
    }
    if let Some(disabled) = &update.disabled_at {
        statements.push(sqlx::query("UPDATE keys SET disabled_at = $1 WHERE id = $2").opt_ts(*disabled));
    }
    if let Some(policy) = &update.policy {
        statements.push(sqlx::query("UPDATE keys SET policy = $1 WHERE id = $2").owned(policy_json(policy)));
    }
    statements.into_iter().map(|q| q.text(id)).collect()
}

/// Links a key to its successor and sets its new expiry, unless it is revoked, a tombstone or
/// was already rotated (then no row changes).
pub(crate) fn rotate_away<'q, DB: Database>(
    old_id: &'q str,
    successor_id: &'q str,
    at: OffsetDateTime,
    old_expires_at: OffsetDateTime,
) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "UPDATE keys SET rotated_to = $1, rotated_at = $2, expires_at = $3 \
         WHERE id = $4 AND rotated_to IS NULL AND revoked_at IS NULL AND digest IS NOT NULL",
    )
    .text(successor_id)
    .ts(at)
    .ts(old_expires_at)
    .text(old_id)
}

/// A row if the key exists.
pub(crate) fn key_exists<'q, DB: Database>(id: &'q str) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("SELECT 1 FROM keys WHERE id = $1").text(id)
}

/// One row, column `n`.
pub(crate) fn count_legacy_keys<'q, DB: Database>() -> Q<'q, DB> {
    sqlx::query("SELECT COUNT(*) AS n FROM keys WHERE legacy = 1")
}

// ---- audit and usage ----------------------------------------------------------------------

/// Audit events, newest first. A kind ending in `.` is a prefix (`LIKE`, its wildcards escaped).
pub(crate) fn audit<'q, DB: Database>(f: &'q AuditFilter) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    let (kind_exact, kind_prefix) = match f.kind.as_deref() {
        Some(k) if k.ends_with('.') => (None, Some(format!("{}%", k.replace('%', "").replace('_', "\\_")))),
        Some(k) => (Some(k), None),
        None => (None, None),
    };
    sqlx::query(
        "SELECT seq, at, actor, kind, severity, target, source_ip, details FROM audit \
         WHERE (CAST($1 AS BIGINT) IS NULL OR at >= $1) AND (CAST($2 AS TEXT) IS NULL OR target = $2) \
         AND (CAST($3 AS TEXT) IS NULL OR kind = $3) AND (CAST($4 AS TEXT) IS NULL OR kind LIKE $4 ESCAPE '\\') \
         AND (CAST($5 AS BIGINT) IS NULL OR seq < $5) ORDER BY seq DESC LIMIT $6",
    )
    .opt_ts(f.since)
    .opt_text(f.target.as_deref())
    .opt_text(kind_exact)
    .opt_owned(kind_prefix)
    .opt_int(f.before_seq)
    .int(i64::from(f.limit.clamp(1, 1000)))
}

// ---- the audit chain ------------------------------------------------------------------------

/// The chain head (one row: `seq`, `hash`, `legacy_seq`). PostgreSQL appends add `FOR UPDATE`.
pub(crate) const AUDIT_HEAD: &str = "SELECT seq, hash, legacy_seq FROM audit_head WHERE id = 1";

/// An event as the chain stores it: `row` (its content, seq included), `prev` and `hash`.
pub(crate) fn insert_chained_audit<'q, DB: Database>(row: &'q ChainRow, prev: [u8; 32], hash: [u8; 32]) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "INSERT INTO audit (seq, at, actor, kind, severity, target, source_ip, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .int(row.seq)
    .int(row.at)
    .text(&row.actor)
    .text(&row.kind)
    .text(&row.severity)
    .opt_text(row.target.as_deref())
    .opt_text(row.source_ip.as_deref())
    .text(&row.details)
    .owned_bytes(prev.to_vec())
    .owned_bytes(hash.to_vec())
}

/// Moves the chain head to the event just appended.
pub(crate) fn set_audit_head<'q, DB: Database>(seq: i64, hash: [u8; 32]) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .int(seq)
        .owned_bytes(hash.to_vec())
}

/// The row an event becomes (its seq is the next one after `head_seq`).
pub(crate) fn chain_row(e: &AuditEvent, seq: i64) -> ChainRow {
    ChainRow {
        seq,
        at: ts(e.at),
        actor: e.actor.clone(),
        kind: e.kind.clone(),
        severity: e.severity.as_str().to_owned(),
        target: e.target.clone(),
        source_ip: e.source_ip.clone(),
        details: serde_json::to_string(&e.details).unwrap_or_else(|_| "{}".into()),
        prev_hash: None,
        hash: None,
    }
}

/// Stored events after a seq, oldest first, every column raw.
pub(crate) fn audit_chain<'q, DB: Database>(after_seq: i64, limit: u32) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "SELECT seq, at, actor, kind, severity, target, source_ip, details, prev_hash, hash FROM audit \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .int(after_seq)
    .int(i64::from(limit.clamp(1, 10_000)))
}

pub(crate) fn audit_checkpoints<'q, DB: Database>() -> Q<'q, DB> {
    sqlx::query("SELECT seq, cut, hash, at, mac FROM audit_checkpoints ORDER BY seq, cut")
}

/// Stores a checkpoint unless one of the same seq and kind exists.
pub(crate) fn insert_checkpoint<'q, DB: Database>(cp: &'q Checkpoint) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, cut, hash, at, mac) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (seq, cut) DO NOTHING",
    )
    .int(cp.seq)
    .flag(cp.cut)
    .bytes(&cp.hash)
    .int(cp.at)
    .bytes(&cp.mac)
}

/// The last event before the first one at or after `before` (or the last event, when none is
/// that recent): columns `seq`, `hash`.
pub(crate) fn audit_cut_point<'q, DB: Database>(before: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "SELECT seq, hash FROM audit WHERE seq < COALESCE((SELECT MIN(seq) FROM audit WHERE at >= $1), \
         (SELECT seq FROM audit_head WHERE id = 1) + 1) ORDER BY seq DESC LIMIT 1",
    )
    .ts(before)
}

/// Deletes a batch of the oldest events up to a seq.
pub(crate) fn delete_audit<'q, DB: Database>(up_to_seq: i64, limit: u32) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE seq <= $1 ORDER BY seq LIMIT $2)")
        .int(up_to_seq)
        .int(i64::from(limit.max(1)))
}

pub(crate) fn prune_checkpoints<'q, DB: Database>() -> Q<'q, DB> {
    sqlx::query("DELETE FROM audit_checkpoints WHERE seq < (SELECT MAX(seq) FROM audit_checkpoints WHERE cut = 1)")
}

// ---- retention ----------------------------------------------------------------------------

/// Deletes a batch of usage rows of minutes before `before_minute` (row values: the table has
/// no rowid in SQLite).
pub(crate) fn delete_usage<'q, DB: Database>(before_minute: i64, limit: u32) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "DELETE FROM usage WHERE (key_id, minute, outcome) IN \
         (SELECT key_id, minute, outcome FROM usage WHERE minute < $1 LIMIT $2)",
    )
    .int(before_minute)
    .int(i64::from(limit.max(1)))
}

/// The condition of a key retention turns into a tombstone (`$1`: the end horizon).
macro_rules! purgeable {
    () => {
        "digest IS NOT NULL AND ((revoked_at IS NOT NULL AND revoked_at <= $1) \
         OR (expires_at IS NOT NULL AND expires_at <= $1))"
    };
}

/// Turns a batch of keys that ended (revoked or expired) at or before `ended_before` into
/// tombstones; answers their ids (column `id`).
pub(crate) fn purge_keys<'q, DB: Database>(ended_before: OffsetDateTime, at: OffsetDateTime, limit: u32) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "UPDATE keys SET digest = NULL, purged_at = $2 WHERE id IN (SELECT id FROM keys WHERE ",
        purgeable!(),
        " ORDER BY id LIMIT $3) RETURNING id"
    ))
    .ts(ended_before)
    .ts(at)
    .int(i64::from(limit.max(1)))
}

/// Deletes a batch of tombstones made at or before `purged_before`.
pub(crate) fn delete_tombstones<'q, DB: Database>(purged_before: OffsetDateTime, limit: u32) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "DELETE FROM keys WHERE id IN (SELECT id FROM keys WHERE purged_at IS NOT NULL AND purged_at <= $1 \
         ORDER BY id LIMIT $2)",
    )
    .ts(purged_before)
    .int(i64::from(limit.max(1)))
}

/// Deletes a batch of denylisted tokens that expired at or before `now`.
pub(crate) fn delete_expired_revoked_tokens<'q, DB: Database>(now: OffsetDateTime, limit: u32) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "DELETE FROM revoked_tokens WHERE jti IN (SELECT jti FROM revoked_tokens WHERE expires_at <= $1 LIMIT $2)",
    )
    .ts(now)
    .int(i64::from(limit.max(1)))
}

/// Deletes a batch of seen one-time `jti`s that expired at or before `now` (row values: no
/// rowid in SQLite).
pub(crate) fn delete_expired_jtis<'q, DB: Database>(now: OffsetDateTime, limit: u32) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "DELETE FROM seen_jtis WHERE (scope, jti) IN (SELECT scope, jti FROM seen_jtis WHERE expires_at <= $1 LIMIT $2)",
    )
    .ts(now)
    .int(i64::from(limit.max(1)))
}

/// One row, column `n`: expired denylist entries and seen `jti`s.
pub(crate) fn count_expired_tokens<'q, DB: Database>(now: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "SELECT (SELECT COUNT(*) FROM revoked_tokens WHERE expires_at <= $1) \
         + (SELECT COUNT(*) FROM seen_jtis WHERE expires_at <= $1) AS n",
    )
    .ts(now)
}

/// One row, column `n`: usage rows before a minute.
pub(crate) fn count_usage_before<'q, DB: Database>(before_minute: i64) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("SELECT COUNT(*) AS n FROM usage WHERE minute < $1").int(before_minute)
}

/// One row, column `n`: events up to a seq.
pub(crate) fn count_audit_up_to<'q, DB: Database>(seq: i64) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("SELECT COUNT(*) AS n FROM audit WHERE seq <= $1").int(seq)
}

/// One row, column `n`: keys retention would turn into tombstones.
pub(crate) fn count_purgeable_keys<'q, DB: Database>(ended_before: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!("SELECT COUNT(*) AS n FROM keys WHERE ", purgeable!())).ts(ended_before)
}

/// One row, column `n`: tombstones made at or before an instant.
pub(crate) fn count_tombstones<'q, DB: Database>(purged_before: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("SELECT COUNT(*) AS n FROM keys WHERE purged_at IS NOT NULL AND purged_at <= $1").ts(purged_before)
}

/// Usage rows since a minute, of a key, an app or everything.
pub(crate) fn usage<'q, DB: Database>(key_id: Option<&'q str>, app_id: Option<&'q str>, since_minute: i64) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "SELECT key_id, app_id, minute, outcome, count FROM usage \
         WHERE minute >= $1 AND (CAST($2 AS TEXT) IS NULL OR key_id = $2) AND (CAST($3 AS TEXT) IS NULL OR app_id = $3) \
         ORDER BY minute, key_id, outcome LIMIT 100000",
    )
    .int(since_minute)
    .opt_text(key_id)
    .opt_text(app_id)
}

// ---- OAuth clients ------------------------------------------------------------------------

pub(crate) fn insert_client<'q, DB: Database>(c: &'q ClientRecord) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "INSERT INTO clients (id, app_id, name, scopes, auth_method, jwks, token_ttl, options, policy, created_at, \
         disabled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .text(&c.id)
    .text(&c.app_id)
    .opt_text(c.name.as_deref())
    .owned(scopes_json(&c.scopes))
    .text(c.auth_method.as_str())
    .opt_owned(c.jwks.as_ref().map(|j| j.to_string()))
    .int(i64::from(c.token_ttl))
    .owned(serde_json::to_string(&c.options).unwrap_or_else(|_| "{}".into()))
    .owned(policy_json(&c.policy))
    .ts(c.created_at)
    .opt_ts(c.disabled_at)
}

/// The error of a failed [`insert_client`].
pub(crate) fn client_insert_error(e: sqlx::Error) -> StoreError {
    match StoreError::from_sqlx(e) {
        StoreError::NotFound(_) => StoreError::NotFound("app"),
        other => other,
    }
}

/// Adds a client secret (no expiry).
pub(crate) fn insert_client_secret<'q, DB: Database>(
    client_id: &'q str,
    digest: &'q Digest,
    hint: &'q str,
    at: OffsetDateTime,
) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "INSERT INTO client_secrets (client_id, digest, hint, created_at, expires_at) VALUES ($1, $2, $3, $4, NULL)",
    )
    .text(client_id)
    .digest(digest)
    .text(hint)
    .ts(at)
}

pub(crate) fn client_by_id<'q, DB: Database>(id: &'q str) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "SELECT ",
        client_columns!(),
        " FROM clients c JOIN apps a ON a.id = c.app_id WHERE c.id = $1"
    ))
    .text(id)
}

/// Clients, oldest first, of one app or all.
pub(crate) fn clients<'q, DB: Database>(app_id: Option<&'q str>) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "SELECT ",
        client_columns!(),
        " FROM clients c JOIN apps a ON a.id = c.app_id \
         WHERE (CAST($1 AS TEXT) IS NULL OR c.app_id = $1) ORDER BY c.created_at, c.id"
    ))
    .opt_text(app_id)
}

/// Replaces a client's mutable fields.
pub(crate) fn update_client<'q, DB: Database>(c: &'q ClientRecord) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "UPDATE clients SET name = $1, scopes = $2, jwks = $3, token_ttl = $4, options = $5, policy = $6, \
         disabled_at = $7 WHERE id = $8",
    )
    .opt_text(c.name.as_deref())
    .owned(scopes_json(&c.scopes))
    .opt_owned(c.jwks.as_ref().map(|j| j.to_string()))
    .int(i64::from(c.token_ttl))
    .owned(serde_json::to_string(&c.options).unwrap_or_else(|_| "{}".into()))
    .owned(policy_json(&c.policy))
    .opt_ts(c.disabled_at)
    .text(&c.id)
}

pub(crate) fn delete_client_secrets<'q, DB: Database>(client_id: &'q str) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("DELETE FROM client_secrets WHERE client_id = $1").text(client_id)
}

pub(crate) fn delete_client<'q, DB: Database>(id: &'q str) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("DELETE FROM clients WHERE id = $1").text(id)
}

/// A client's secrets that have not expired at `now`, oldest first.
pub(crate) fn live_client_secrets<'q, DB: Database>(client_id: &'q str, now: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "SELECT digest, hint, created_at, expires_at FROM client_secrets \
         WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at",
    )
    .text(client_id)
    .ts(now)
}

pub(crate) fn delete_expired_client_secrets<'q, DB: Database>(client_id: &'q str, now: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("DELETE FROM client_secrets WHERE client_id = $1 AND expires_at IS NOT NULL AND expires_at <= $2")
        .text(client_id)
        .ts(now)
}

/// Every secret of the client expires at `until` at the latest.
pub(crate) fn cap_client_secrets<'q, DB: Database>(client_id: &'q str, until: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "UPDATE client_secrets SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $1 THEN $1 \
         ELSE expires_at END WHERE client_id = $2",
    )
    .ts(until)
    .text(client_id)
}

// ---- signing keys and the token denylist ---------------------------------------------------

pub(crate) fn insert_signing_key<'q, DB: Database>(k: &'q SigningKeyRow) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_at, active_at, retired_at, \
         remove_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .text(&k.kid)
    .text(&k.alg)
    .owned(k.public_jwk.to_string())
    .bytes(&k.private_sealed)
    .ts(k.created_at)
    .ts(k.active_at)
    .opt_ts(k.retired_at)
    .opt_ts(k.remove_after)
}

/// Signing keys not yet past `remove_after`, oldest first.
pub(crate) fn signing_keys<'q, DB: Database>(now: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "SELECT kid, alg, public_jwk, private_sealed, created_at, active_at, retired_at, remove_after \
         FROM signing_keys WHERE remove_after IS NULL OR remove_after > $1 ORDER BY created_at, kid",
    )
    .ts(now)
}

/// Retires a signing key; the first retirement stays.
pub(crate) fn retire_signing_key<'q, DB: Database>(
    kid: &'q str,
    at: OffsetDateTime,
    remove_after: OffsetDateTime,
) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "UPDATE signing_keys SET retired_at = COALESCE(retired_at, $1), remove_after = COALESCE(remove_after, $2) \
         WHERE kid = $3",
    )
    .ts(at)
    .ts(remove_after)
    .text(kid)
}

/// Denylists a token (already denylisted: no row changes).
pub(crate) fn insert_revoked_token<'q, DB: Database>(jti: &'q str, expires_at: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
        .text(jti)
        .ts(expires_at)
}

pub(crate) fn revoked_tokens<'q, DB: Database>(now: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1").ts(now)
}

// ---- admin tokens -------------------------------------------------------------------------

pub(crate) fn insert_admin_token<'q, DB: Database>(t: &'q AdminTokenRecord, digest: &'q Digest) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "INSERT INTO admin_tokens (id, name, role, digest, hint, created_at, expires_at, revoked_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .text(&t.id)
    .text(&t.name)
    .text(&t.role)
    .digest(digest)
    .text(&t.hint)
    .ts(t.created_at)
    .opt_ts(t.expires_at)
    .opt_ts(t.revoked_at)
    .text(&t.created_by)
}

/// The error of a failed [`insert_admin_token`].
pub(crate) fn admin_token_insert_error(e: sqlx::Error) -> StoreError {
    match StoreError::from_sqlx(e) {
        StoreError::Conflict(_) => StoreError::Conflict("an admin token with this name already exists".into()),
        other => other,
    }
}

pub(crate) fn admin_token_by_digest<'q, DB: Database>(digest: &'q Digest) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "SELECT ",
        admin_token_columns!(),
        " FROM admin_tokens WHERE digest = $1"
    ))
    .digest(digest)
}

pub(crate) fn admin_tokens<'q, DB: Database>() -> Q<'q, DB> {
    sqlx::query(concat!(
        "SELECT ",
        admin_token_columns!(),
        " FROM admin_tokens ORDER BY created_at, id"
    ))
}

/// Revokes an admin token by id or name; the first revocation time stays.
pub(crate) fn revoke_admin_token<'q, DB: Database>(id_or_name: &'q str, at: OffsetDateTime) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 OR name = $2")
        .ts(at)
        .text(id_or_name)
}

pub(crate) fn admin_token_by_id_or_name<'q, DB: Database>(id_or_name: &'q str) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(concat!(
        "SELECT ",
        admin_token_columns!(),
        " FROM admin_tokens WHERE id = $1 OR name = $1 ORDER BY id LIMIT 1"
    ))
    .text(id_or_name)
}

// ---- managed webhooks ------------------------------------------------------------------------

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn webhooks<'q, DB: Database>() -> Q<'q, DB> {
    sqlx::query(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhooks ORDER BY created_at, id"
    ))
}

pub(crate) fn insert_webhook<'q, DB: Database>(w: &'q WebhookRecord) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "INSERT INTO webhooks (id, name, url, secret_env, secret_file, events, timeout_ms, max_attempts, \
         backoff_ms, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .text(&w.id)
    .text(&w.name)
    .text(&w.url)
    .opt_text(w.secret_env.as_deref())
    .opt_text(w.secret_file.as_deref())
    .owned(serde_json::to_string(&w.events).unwrap_or_else(|_| "[]".into()))
    .int(ms(w.timeout_ms))
    .int(i64::from(w.max_attempts))
    .int(ms(w.backoff_ms))
    .ts(w.created_at)
    .ts(w.updated_at)
}

/// The error of a failed [`insert_webhook`].
pub(crate) fn webhook_insert_error(e: sqlx::Error) -> StoreError {
    match StoreError::from_sqlx(e) {
        StoreError::Conflict(_) => StoreError::Conflict("a webhook with this name already exists".into()),
        other => other,
    }
}

pub(crate) fn update_webhook<'q, DB: Database>(w: &'q WebhookRecord) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query(
        "UPDATE webhooks SET name = $1, url = $2, secret_env = $3, secret_file = $4, events = $5, \
         timeout_ms = $6, max_attempts = $7, backoff_ms = $8, updated_at = $9 WHERE id = $10",
    )
    .text(&w.name)
    .text(&w.url)
    .opt_text(w.secret_env.as_deref())
    .opt_text(w.secret_file.as_deref())
    .owned(serde_json::to_string(&w.events).unwrap_or_else(|_| "[]".into()))
    .int(ms(w.timeout_ms))
    .int(i64::from(w.max_attempts))
    .int(ms(w.backoff_ms))
    .ts(w.updated_at)
    .text(&w.id)
}

pub(crate) fn delete_webhook<'q, DB: Database>(id: &'q str) -> Q<'q, DB>
where
    Q<'q, DB>: Bind<'q>,
{
    sqlx::query("DELETE FROM webhooks WHERE id = $1").text(id)
}
