//! The cluster backend: PostgreSQL through a connection pool.
//!
//! Same schema and semantics as the SQLite store (timestamps as Unix seconds, JSON as text,
//! digests as `BYTEA`). Every write that changes keys, apps, clients, signing keys or token
//! revocations also runs `pg_notify(<channel>, <change>)` in the same transaction, so the
//! announcement goes out exactly when (and only if) the change commits; [`PgStore`]'s listener
//! turns the announcements of every node into [`Change`]s.
//!
//! The statements it shares with SQLite are in [`crate::sql`], the row mapping in
//! [`crate::rows`]; what is here is the pool, the change channel, the transactions and the
//! statements whose SQL is PostgreSQL's own (bulk loads and usage flushes with `UNNEST`, the
//! replay store's conditional upsert, a row lock).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::audit::{ChainRow, Checkpoint, GENESIS};
use keyward_core::model::{
    AuditEvent, AuditFilter, ClientRecord, ClientSecretInfo, KeyUpdate, SigningKeyRow, UsageRow,
};
use keyward_core::policy::Policy;
use keyward_core::{AppRecord, Digest, KeyRecord};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::rows::{self, Cols};
use crate::sql::{self, policy_json, scopes_json, ts, Bind};
use crate::{AdminTokenRecord, AuditHead, Change, RetentionCounts, RetentionCut, Store, StoreError, WebhookRecord};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Rows per statement when loading keys in bulk.
const BULK_ROWS: usize = 5_000;

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PgOptions {
    pub max_connections: u32,
    /// Bound on connecting and on waiting for a pooled connection: with PostgreSQL
    /// unreachable, an operation fails (`store_unavailable`) after at most this long.
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// PostgreSQL store. Migrated on open.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The `NOTIFY` channel: `keyward_changes`, suffixed with the schema when it is not
    /// `public` (so that several keyward deployments, or tests, can share one database).
    channel: Arc<str>,
    changes: broadcast::Sender<Change>,
    listener_started: Arc<OnceLock<()>>,
    connected: Arc<AtomicBool>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://…`; a schema can be chosen with
    /// `?options=-csearch_path%3Dname`) and applies the migrations.
    pub async fn open(url: &str, opts: PgOptions) -> Result<PgStore, StoreError> {
        let mut store = Self::connect(url, opts).await?;
        store.migrate().await?;
        store.init_channel().await?;
        Ok(store)
    }

    /// Connects without migrating (for `keyward migrate`, which reports what it applied).
    pub async fn connect(url: &str, opts: PgOptions) -> Result<PgStore, StoreError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Open("invalid PostgreSQL URL".into()))?
            .application_name("keyward");
        // The TLS root file is read at each connection: name it now if it cannot be read.
        if let Some(root) = ssl_root_cert(url) {
            std::fs::File::open(&root).map_err(|e| StoreError::Open(format!("sslrootcert {root}: {}", e.kind())))?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| StoreError::Open(format!("cannot connect to PostgreSQL: {}", redact(&e))))?;
        let (changes, _) = broadcast::channel(1024);
        Ok(PgStore {
            pool,
            channel: Arc::from("keyward_changes"),
            changes,
            listener_started: Arc::new(OnceLock::new()),
            connected: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Applies pending migrations; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let before = self.applied_versions().await?;
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Open(format!("migration failed: {e}")))?;
        let after = self.applied_versions().await?;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    async fn applied_versions(&self) -> Result<Vec<i64>, StoreError> {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)
    }

    /// Chooses the channel from the schema the connection works in.
    pub async fn init_channel(&mut self) -> Result<(), StoreError> {
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        let schema = schema.unwrap_or_else(|| "public".into());
        if schema != "public" {
            self.channel = Arc::from(format!("keyward_changes_{schema}"));
        }
        Ok(())
    }

    /// The `NOTIFY` channel this store announces on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The pool (for tests and tools in this workspace).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(StoreError::from_sqlx)
    }
}

/// The `sslrootcert` parameter of a PostgreSQL URL, if any (a path, never a secret).
fn ssl_root_cert(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "sslrootcert")
        .map(|(_, v)| v.into_owned())
}

/// A driver error without anything that could come from the URL (passwords).
fn redact(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!("database error {}", db.code().unwrap_or_default()),
        // A TLS handshake that failed on a certificate reaches sqlx as an I/O error carrying
        // the rustls error: name it (rustls' words hold no credential).
        sqlx::Error::Io(io) => match io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(t) => format!("TLS error: {t}"),
            None => format!("{}", io.kind()),
        },
        sqlx::Error::PoolTimedOut => "timed out".into(),
        // The TLS problem itself (unknown CA, a name the certificate does not carry, an
        // unreadable sslrootcert): rustls' words, which hold no credential.
        sqlx::Error::Tls(t) => format!("TLS error: {t}"),
        sqlx::Error::Configuration(_) => "invalid configuration".into(),
        other => other.to_string(),
    }
}

async fn notify(tx: &mut Transaction<'static, Postgres>, channel: &str, change: &Change) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(change.encode())
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from_sqlx)?;
    Ok(())
}

/// Follows the channel until every receiver is gone; reconnects with backoff and announces
/// `Resync` whenever it is back after a loss (announcements may have been missed meanwhile).
async fn listen_loop(pool: PgPool, channel: Arc<str>, tx: broadcast::Sender<Change>, connected: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(100);
    let mut was_connected = false;
    loop {
        if tx.receiver_count() == 0 {
            return;
        }
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %redact(&e), "change channel: cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!(error = %redact(&e), "change channel: LISTEN failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(100);
        connected.store(true, Ordering::Release);
        if was_connected {
            tracing::info!("change channel: reconnected; dropping caches");
            let _ = tx.send(Change::Resync);
        }
        was_connected = true;
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let _ = tx.send(Change::decode(n.payload()));
                    if tx.receiver_count() == 0 {
                        return;
                    }
                }
                Ok(None) | Err(_) => {
                    connected.store(false, Ordering::Release);
                    tracing::warn!("change channel: connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}

fn g(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(g)?;
        Ok(())
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        let rx = self.changes.subscribe();
        if self.listener_started.set(()).is_ok() {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(listen_loop(
                        self.pool.clone(),
                        self.channel.clone(),
                        self.changes.clone(),
                        self.connected.clone(),
                    ));
                }
                Err(_) => tracing::error!("change channel: no async runtime; cross-node invalidation is off"),
            }
        }
        Some(rx)
    }

    fn changes_connected(&self) -> Option<bool> {
        Some(self.connected.load(Ordering::Acquire))
    }

    async fn create_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sql::insert_app(app)
            .execute(&mut *tx)
            .await
            .map_err(sql::app_insert_error)?;
        notify(&mut tx, &self.channel, &Change::App(app.id.clone())).await?;
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn get_app(&self, id_or_name: &str) -> Result<Option<AppRecord>, StoreError> {
        sql::optional(&self.pool, sql::app_by_id_or_name(id_or_name), rows::app_from_row).await
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        sql::all(&self.pool, sql::apps(), rows::app_from_row).await
    }

    async fn create_key(&self, key: &KeyRecord, digest: &Digest) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sql::insert_key(key, digest)
            .execute(&mut *tx)
            .await
            .map_err(sql::key_insert_error)?;
        let change = Change::KeyCreated {
            id: key.id.clone(),
            legacy: key.lifecycle.legacy,
        };
        notify(&mut tx, &self.channel, &change).await?;
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn create_keys_bulk(&self, keys: &[(KeyRecord, Digest)]) -> Result<(), StoreError> {
        for chunk in keys.chunks(BULK_ROWS) {
            let mut cols = BulkKeys::default();
            for (k, d) in chunk {
                cols.push(k, d);
            }
            let legacy = chunk.iter().any(|(k, _)| k.lifecycle.legacy);
            let mut tx = self.begin().await?;
            sqlx::query(
                "INSERT INTO keys (id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, \
                 policy, disabled_at, canary, legacy, rotated_from, exchange_only) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], \
                 $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::int8[], $13::int8[], $14::int8[], \
                 $15::text[], $16::int8[])",
            )
            .bind(cols.id)
            .bind(cols.app_id)
            .bind(cols.name)
            .bind(cols.digest)
            .bind(cols.hint)
            .bind(cols.env)
            .bind(cols.scopes)
            .bind(cols.expires_at)
            .bind(cols.created_at)
            .bind(cols.revoked_at)
            .bind(cols.policy)
            .bind(cols.disabled_at)
            .bind(cols.canary)
            .bind(cols.legacy)
            .bind(cols.rotated_from)
            .bind(cols.exchange_only)
            .execute(&mut *tx)
            .await
            .map_err(sql::key_insert_error)?;
            notify(&mut tx, &self.channel, &Change::KeyCreated { id: "*".into(), legacy }).await?;
            tx.commit().await.map_err(g)?;
        }
        Ok(())
    }

    async fn key_by_digest(&self, digest: &Digest) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        sql::optional(&self.pool, sql::key_by_digest(digest), rows::key_from_digest_row).await
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.key_with_digest(id).await?.map(|(k, _)| k))
    }

    async fn key_with_digest(&self, id: &str) -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError> {
        sql::optional(&self.pool, sql::key_by_id(id), rows::key_from_row).await
    }

    async fn list_keys(&self, app_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        sql::all(&self.pool, sql::keys(app_id), |r| rows::key_from_row(r).map(|(k, _)| k)).await
    }

    async fn revoke_key(
        &self,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError> {
        let mut tx = self.begin().await?;
        let done = sql::revoke_key(id, at).execute(&mut *tx).await.map_err(g)?;
        let row = sql::key_by_id(id).fetch_optional(&mut *tx).await.map_err(g)?;
        if done.rows_affected() > 0 {
            notify(&mut tx, &self.channel, &Change::Key(id.to_owned())).await?;
        }
        tx.commit().await.map_err(g)?;
        row.as_ref().map(rows::key_from_row).transpose()
    }

    async fn update_key(
        &self,
        id: &str,
        update: &KeyUpdate,
    ) -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError> {
        let mut tx = self.begin().await?;
        for statement in sql::update_key(id, update) {
            statement.execute(&mut *tx).await.map_err(g)?;
        }
        let row = sql::key_by_id(id).fetch_optional(&mut *tx).await.map_err(g)?;
        if row.is_some() {
            notify(&mut tx, &self.channel, &Change::Key(id.to_owned())).await?;
        }
        tx.commit().await.map_err(g)?;
        row.as_ref().map(rows::key_from_row).transpose()
    }

    async fn update_app_policy(
        &self,
        id: &str,
        policy: &Policy,
    ) -> Result<Option<(AppRecord, Vec<Digest>)>, StoreError> {
        let mut tx = self.begin().await?;
        let row = sql::set_app_policy(id, policy)
            .fetch_optional(&mut *tx)
            .await
            .map_err(g)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let app = rows::app_from_row(&row)?;
        let found = sql::key_digests_of_app(id).fetch_all(&mut *tx).await.map_err(g)?;
        notify(&mut tx, &self.channel, &Change::App(id.to_owned())).await?;
        tx.commit().await.map_err(g)?;
        let digests = found
            .iter()
            .map(|r| r.digest("digest"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((app, digests)))
    }

    async fn rotate_key(
        &self,
        old_id: &str,
        successor: &KeyRecord,
        digest: &Digest,
        old_expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<(KeyRecord, Digest), StoreError> {
        let mut tx = self.begin().await?;
        // Row lock on the old key: a concurrent rotation waits here, then sees `rotated_to`
        // set and changes nothing (exactly one rotation wins).
        let done = sql::rotate_away(old_id, &successor.id, at, old_expires_at)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        if done.rows_affected() == 0 {
            let exists = sql::key_exists(old_id).fetch_optional(&mut *tx).await.map_err(g)?;
            return Err(match exists {
                None => StoreError::NotFound("key"),
                Some(_) => StoreError::Conflict("the key is revoked or was already rotated".into()),
            });
        }
        let old = sql::key_by_id(old_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(g)?
            .ok_or(StoreError::NotFound("key"))?;
        let old = rows::key_from_digest_row(&old)?;
        let row = sql::successor_row(successor, &old.0);
        sql::insert_key(&row, digest).execute(&mut *tx).await.map_err(g)?;
        notify(&mut tx, &self.channel, &Change::Key(old_id.to_owned())).await?;
        let created = Change::KeyCreated {
            id: successor.id.clone(),
            legacy: false,
        };
        notify(&mut tx, &self.channel, &created).await?;
        tx.commit().await.map_err(g)?;
        Ok(old)
    }

    async fn append_audit(&self, e: &AuditEvent) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        // The chain head's row lock: appends of every node queue here, so each event links to
        // the one committed before it and takes the next seq.
        let head = sqlx::query("SELECT seq, hash, legacy_seq FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *tx)
            .await
            .map_err(g)?;
        let head = rows::audit_head_from_row(&head)?;
        let row = sql::chain_row(e, head.seq + 1);
        let prev = head.hash.unwrap_or(GENESIS);
        let hash = row.compute_hash(&prev);
        sql::insert_chained_audit(&row, prev, hash)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        sql::set_audit_head(row.seq, hash).execute(&mut *tx).await.map_err(g)?;
        tx.commit().await.map_err(g)?;
        Ok(row.seq)
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        sql::all(&self.pool, sql::audit(f), rows::audit_from_row).await
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        let row = sqlx::query(sql::AUDIT_HEAD).fetch_one(&self.pool).await.map_err(g)?;
        rows::audit_head_from_row(&row)
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> Result<Vec<ChainRow>, StoreError> {
        sql::all(&self.pool, sql::audit_chain(after_seq, limit), rows::chain_row_from_row).await
    }

    async fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        sql::all(&self.pool, sql::audit_checkpoints(), rows::checkpoint_from_row).await
    }

    async fn add_audit_checkpoint(&self, cp: &Checkpoint) -> Result<bool, StoreError> {
        let done = sql::insert_checkpoint(cp).execute(&self.pool).await.map_err(g)?;
        Ok(done.rows_affected() > 0)
    }

    async fn audit_cut_point(&self, before: OffsetDateTime) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        sql::optional(&self.pool, sql::audit_cut_point(before), rows::cut_point_from_row).await
    }

    async fn delete_audit(&self, up_to_seq: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sql::delete_audit(up_to_seq, limit)
            .execute(&self.pool)
            .await
            .map_err(g)?;
        Ok(done.rows_affected())
    }

    async fn prune_audit_checkpoints(&self) -> Result<u64, StoreError> {
        let done = sql::prune_checkpoints().execute(&self.pool).await.map_err(g)?;
        Ok(done.rows_affected())
    }

    async fn delete_usage(&self, before_minute: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sql::delete_usage(before_minute, limit)
            .execute(&self.pool)
            .await
            .map_err(g)?;
        Ok(done.rows_affected())
    }

    async fn purge_keys(
        &self,
        ended_before: OffsetDateTime,
        at: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin().await?;
        let found = sql::purge_keys(ended_before, at, limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(g)?;
        let ids = found.iter().map(|r| r.text("id")).collect::<Result<Vec<_>, _>>()?;
        // Every node forgets what it cached about these keys (revoked or expired already, but
        // a cached record must not outlive its digest).
        for id in &ids {
            notify(&mut tx, &self.channel, &Change::Key(id.clone())).await?;
        }
        tx.commit().await.map_err(g)?;
        Ok(ids)
    }

    async fn delete_expired_tokens(&self, now: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        let tokens = sql::delete_expired_revoked_tokens(now, limit)
            .execute(&self.pool)
            .await
            .map_err(g)?;
        let jtis = sql::delete_expired_jtis(now, limit)
            .execute(&self.pool)
            .await
            .map_err(g)?;
        Ok(tokens.rows_affected() + jtis.rows_affected())
    }

    async fn delete_tombstones(&self, purged_before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        let done = sql::delete_tombstones(purged_before, limit)
            .execute(&self.pool)
            .await
            .map_err(g)?;
        Ok(done.rows_affected())
    }

    async fn retention_counts(&self, cut: &RetentionCut) -> Result<RetentionCounts, StoreError> {
        sql::retention_counts(&self.pool, cut, rows::count_from_row).await
    }

    async fn record_usage(&self, rows: &[UsageRow], last_used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        // One statement per table: rows aggregated by primary key (an upsert may not touch a
        // row twice) and sorted, so that concurrent flushes of several nodes lock in one order.
        let mut counts: BTreeMap<(&str, i64, &str), (&str, i64)> = BTreeMap::new();
        for r in rows {
            let e = counts
                .entry((r.key_id.as_str(), r.minute, r.outcome.as_str()))
                .or_insert((r.app_id.as_str(), 0));
            e.1 = e.1.saturating_add(i64::try_from(r.count).unwrap_or(i64::MAX));
        }
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for (id, at) in last_used {
            let e = last.entry(id.as_str()).or_insert(ts(*at));
            *e = (*e).max(ts(*at));
        }
        let mut tx = self.begin().await?;
        if !counts.is_empty() {
            let mut key_ids = Vec::with_capacity(counts.len());
            let mut app_ids = Vec::with_capacity(counts.len());
            let mut minutes = Vec::with_capacity(counts.len());
            let mut outcomes = Vec::with_capacity(counts.len());
            let mut ns = Vec::with_capacity(counts.len());
            for ((key_id, minute, outcome), (app_id, n)) in &counts {
                key_ids.push(*key_id);
                app_ids.push(*app_id);
                minutes.push(*minute);
                outcomes.push(*outcome);
                ns.push(*n);
            }
            sqlx::query(
                "INSERT INTO usage (key_id, app_id, minute, outcome, count) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::int8[]) \
                 ON CONFLICT (key_id, minute, outcome) DO UPDATE SET count = usage.count + excluded.count",
            )
            .bind(key_ids)
            .bind(app_ids)
            .bind(minutes)
            .bind(outcomes)
            .bind(ns)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        }
        if !last.is_empty() {
            let ids: Vec<&str> = last.keys().copied().collect();
            let ats: Vec<i64> = last.values().copied().collect();
            sqlx::query(
                "UPDATE keys SET last_used_at = GREATEST(COALESCE(keys.last_used_at, 0), v.at) \
                 FROM UNNEST($1::text[], $2::int8[]) AS v(id, at) WHERE keys.id = v.id",
            )
            .bind(ids)
            .bind(ats)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        }
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn count_legacy_keys(&self) -> Result<u64, StoreError> {
        let row = sql::count_legacy_keys().fetch_one(&self.pool).await.map_err(g)?;
        Ok(u64::try_from(row.int("n")?).unwrap_or(0))
    }

    async fn usage(
        &self,
        key_id: Option<&str>,
        app_id: Option<&str>,
        since_minute: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        sql::all(
            &self.pool,
            sql::usage(key_id, app_id, since_minute),
            rows::usage_from_row,
        )
        .await
    }

    async fn create_client(&self, c: &ClientRecord, secret: Option<(&Digest, &str)>) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sql::insert_client(c)
            .execute(&mut *tx)
            .await
            .map_err(sql::client_insert_error)?;
        if let Some((digest, hint)) = secret {
            sql::insert_client_secret(&c.id, digest, hint, c.created_at)
                .execute(&mut *tx)
                .await
                .map_err(g)?;
        }
        notify(&mut tx, &self.channel, &Change::Client(c.id.clone())).await?;
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        sql::optional(&self.pool, sql::client_by_id(id), rows::client_from_row).await
    }

    async fn list_clients(&self, app_id: Option<&str>) -> Result<Vec<ClientRecord>, StoreError> {
        sql::all(&self.pool, sql::clients(app_id), rows::client_from_row).await
    }

    async fn update_client(&self, c: &ClientRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sql::update_client(c).execute(&mut *tx).await.map_err(g)?;
        if done.rows_affected() > 0 {
            notify(&mut tx, &self.channel, &Change::Client(c.id.clone())).await?;
        }
        tx.commit().await.map_err(g)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        sql::delete_client_secrets(id).execute(&mut *tx).await.map_err(g)?;
        let done = sql::delete_client(id).execute(&mut *tx).await.map_err(g)?;
        if done.rows_affected() > 0 {
            notify(&mut tx, &self.channel, &Change::Client(id.to_owned())).await?;
        }
        tx.commit().await.map_err(g)?;
        Ok(done.rows_affected() > 0)
    }

    async fn client_secrets(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<(Digest, ClientSecretInfo)>, StoreError> {
        sql::all(
            &self.pool,
            sql::live_client_secrets(id, now),
            rows::client_secret_from_row,
        )
        .await
    }

    async fn rotate_client_secret(
        &self,
        id: &str,
        digest: &Digest,
        hint: &str,
        now: OffsetDateTime,
        old_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        // Row lock on the client: concurrent rotations of one client run one after the other.
        let exists = sqlx::query("SELECT 1 FROM clients WHERE id = $1 FOR UPDATE")
            .text(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(g)?;
        if exists.is_none() {
            return Ok(false);
        }
        sql::delete_expired_client_secrets(id, now)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        sql::cap_client_secrets(id, old_until)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        sql::insert_client_secret(id, digest, hint, now)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        notify(&mut tx, &self.channel, &Change::Client(id.to_owned())).await?;
        tx.commit().await.map_err(g)?;
        Ok(true)
    }

    async fn add_signing_key(&self, k: &SigningKeyRow) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sql::insert_signing_key(k).execute(&mut *tx).await.map_err(g)?;
        notify(&mut tx, &self.channel, &Change::SigningKeys).await?;
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn signing_keys(&self, now: OffsetDateTime) -> Result<Vec<SigningKeyRow>, StoreError> {
        sql::all(&self.pool, sql::signing_keys(now), rows::signing_key_from_row).await
    }

    async fn retire_signing_key(
        &self,
        kid: &str,
        at: OffsetDateTime,
        remove_after: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sql::retire_signing_key(kid, at, remove_after)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        if done.rows_affected() > 0 {
            notify(&mut tx, &self.channel, &Change::SigningKeys).await?;
        }
        tx.commit().await.map_err(g)?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_token(&self, jti: &str, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let done = sql::insert_revoked_token(jti, expires_at)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        if done.rows_affected() > 0 {
            notify(&mut tx, &self.channel, &Change::TokenRevoked).await?;
        }
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn revoked_tokens(&self, now: OffsetDateTime) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        sql::all(&self.pool, sql::revoked_tokens(now), rows::revoked_token_from_row).await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        sql::all(&self.pool, sql::webhooks(), rows::webhook_from_row).await
    }

    async fn create_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sql::insert_webhook(w)
            .execute(&mut *tx)
            .await
            .map_err(sql::webhook_insert_error)?;
        notify(&mut tx, &self.channel, &Change::Webhooks).await?;
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn update_webhook(&self, w: &WebhookRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sql::update_webhook(w)
            .execute(&mut *tx)
            .await
            .map_err(sql::webhook_insert_error)?;
        if done.rows_affected() > 0 {
            notify(&mut tx, &self.channel, &Change::Webhooks).await?;
        }
        tx.commit().await.map_err(g)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sql::delete_webhook(id).execute(&mut *tx).await.map_err(g)?;
        if done.rows_affected() > 0 {
            notify(&mut tx, &self.channel, &Change::Webhooks).await?;
        }
        tx.commit().await.map_err(g)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_admin_token(&self, t: &AdminTokenRecord, digest: &Digest) -> Result<(), StoreError> {
        sql::insert_admin_token(t, digest)
            .execute(&self.pool)
            .await
            .map_err(sql::admin_token_insert_error)?;
        Ok(())
    }

    async fn admin_token_by_digest(&self, digest: &Digest) -> Result<Option<(AdminTokenRecord, Digest)>, StoreError> {
        sql::optional(
            &self.pool,
            sql::admin_token_by_digest(digest),
            rows::admin_token_from_row,
        )
        .await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        sql::all(&self.pool, sql::admin_tokens(), |r| {
            rows::admin_token_from_row(r).map(|(t, _)| t)
        })
        .await
    }

    async fn revoke_admin_token(
        &self,
        id_or_name: &str,
        at: OffsetDateTime,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        sql::revoke_admin_token(id_or_name, at)
            .execute(&self.pool)
            .await
            .map_err(g)?;
        sql::optional(&self.pool, sql::admin_token_by_id_or_name(id_or_name), |r| {
            rows::admin_token_from_row(r).map(|(t, _)| t)
        })
        .await
    }

    async fn remember_jti(
        &self,
        scope: &str,
        jti: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // One statement: inserts, or takes over an expired entry; a live entry (a replay)
        // changes nothing. Concurrent callers serialise on the primary key: one wins.
        let done = sqlx::query(
            "INSERT INTO seen_jtis (scope, jti, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, jti) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE seen_jtis.expires_at <= $4",
        )
        .text(scope)
        .text(jti)
        .ts(expires_at)
        .ts(now)
        .execute(&self.pool)
        .await
        .map_err(g)?;
        Ok(done.rows_affected() == 1)
    }
}

/// Column arrays of a bulk key insert.
#[derive(Default)]
struct BulkKeys {
    id: Vec<String>,
    app_id: Vec<String>,
    name: Vec<Option<String>>,
    digest: Vec<Vec<u8>>,
    hint: Vec<String>,
    env: Vec<&'static str>,
    scopes: Vec<String>,
    expires_at: Vec<Option<i64>>,
    created_at: Vec<i64>,
    revoked_at: Vec<Option<i64>>,
    policy: Vec<String>,
    disabled_at: Vec<Option<i64>>,
    canary: Vec<i64>,
    legacy: Vec<i64>,
    rotated_from: Vec<Option<String>>,
    exchange_only: Vec<i64>,
}

impl BulkKeys {
    fn push(&mut self, k: &KeyRecord, d: &Digest) {
        self.id.push(k.id.clone());
        self.app_id.push(k.app_id.clone());
        self.name.push(k.name.clone());
        self.digest.push(d.as_bytes().to_vec());
        self.hint.push(k.hint.clone());
        self.env.push(k.env.as_str());
        self.scopes.push(scopes_json(&k.scopes));
        self.expires_at.push(k.expires_at.map(ts));
        self.created_at.push(ts(k.created_at));
        self.revoked_at.push(k.revoked_at.map(ts));
        self.policy.push(policy_json(&k.policy));
        self.disabled_at.push(k.lifecycle.disabled_at.map(ts));
        self.canary.push(i64::from(k.lifecycle.canary));
        self.legacy.push(i64::from(k.lifecycle.legacy));
        self.rotated_from.push(k.lifecycle.rotated_from.clone());
        self.exchange_only.push(i64::from(k.lifecycle.exchange_only));
    }
}
