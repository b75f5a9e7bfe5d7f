//! The embedded default backend: one SQLite file in WAL mode.
//!
//! The statements it shares with PostgreSQL are in [`crate::sql`], the row mapping in
//! [`crate::rows`]; what is here is the connection, the transactions and the few statements
//! whose SQL is SQLite's own.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::model::{
    AuditEvent, AuditFilter, ClientRecord, ClientSecretInfo, KeyUpdate, SigningKeyRow, UsageRow,
};
use keyward_core::policy::Policy;
use keyward_core::{AppRecord, Digest, KeyRecord};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use time::OffsetDateTime;

use crate::rows::{self, Cols};
use crate::sql::{self, Bind};
use crate::{AdminTokenRecord, Store, StoreError, WebhookRecord};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite store. Created and migrated on first open.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, in WAL mode, and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        Self::connect(opts, 8).await
    }

    /// Opens a store from a `sqlite://` URL (e.g. `sqlite://keyward.db`).
    pub async fn open_url(url: &str) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        Self::connect(opts, 8).await
    }

    async fn connect(opts: SqliteConnectOptions, max: u32) -> Result<SqliteStore, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Open(format!("migration failed: {e}")))?;
        Ok(SqliteStore { pool })
    }
}

/// One write of a usage count (added to the minute's count).
const ADD_USAGE: &str = "INSERT INTO usage (key_id, app_id, minute, outcome, count) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (key_id, minute, outcome) DO UPDATE SET count = count + excluded.count";

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn create_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        sql::insert_app(app)
            .execute(&self.pool)
            .await
            .map_err(sql::app_insert_error)?;
        Ok(())
    }

    async fn get_app(&self, id_or_name: &str) -> Result<Option<AppRecord>, StoreError> {
        sql::optional(&self.pool, sql::app_by_id_or_name(id_or_name), rows::app_from_row).await
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        sql::all(&self.pool, sql::apps(), rows::app_from_row).await
    }

    async fn create_key(&self, key: &KeyRecord, digest: &Digest) -> Result<(), StoreError> {
        sql::insert_key(key, digest)
            .execute(&self.pool)
            .await
            .map_err(sql::key_insert_error)?;
        Ok(())
    }

    async fn create_keys_bulk(&self, keys: &[(KeyRecord, Digest)]) -> Result<(), StoreError> {
        // One transaction per 5,000 keys: SQLite inserts are cheap, commits are not.
        for chunk in keys.chunks(5_000) {
            let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
            for (key, digest) in chunk {
                sql::insert_key(key, digest)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql::key_insert_error)?;
            }
            tx.commit().await.map_err(StoreError::from_sqlx)?;
        }
        Ok(())
    }

    async fn key_by_digest(&self, digest: &Digest) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        sql::optional(&self.pool, sql::key_by_digest(digest), rows::key_from_row).await
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.key_with_digest(id).await?.map(|(k, _)| k))
    }

    async fn key_with_digest(&self, id: &str) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        sql::optional(&self.pool, sql::key_by_id(id), rows::key_from_row).await
    }

    async fn list_keys(&self, app_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        sql::all(&self.pool, sql::keys(app_id), |r| rows::key_from_row(r).map(|(k, _)| k)).await
    }

    async fn revoke_key(&self, id: &str, at: OffsetDateTime) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        sql::revoke_key(id, at)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        self.key_with_digest(id).await
    }

    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        for statement in sql::update_key(id, update) {
            statement.execute(&mut *tx).await.map_err(StoreError::from_sqlx)?;
        }
        let row = sql::key_by_id(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        row.as_ref().map(rows::key_from_row).transpose()
    }

    async fn update_app_policy(
        &self,
        id: &str,
        policy: &Policy,
    ) -> Result<Option<(AppRecord, Vec<Digest>)>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let row = sql::set_app_policy(id, policy)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let app = rows::app_from_row(&row)?;
        let found = sql::key_digests_of_app(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
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
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let done = sql::rotate_away(old_id, &successor.id, at, old_expires_at)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            let exists = sql::key_exists(old_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
            return Err(match exists {
                None => StoreError::NotFound("key"),
                Some(_) => StoreError::Conflict("the key is revoked or was already rotated".into()),
            });
        }
        let old = sql::key_by_id(old_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?
            .ok_or(StoreError::NotFound("key"))?;
        let old = rows::key_from_row(&old)?;
        let row = sql::successor_row(successor, &old.0);
        sql::insert_key(&row, digest)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(old)
    }

    async fn append_audit(&self, e: &AuditEvent) -> Result<i64, StoreError> {
        let row = sql::insert_audit(e)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.int("seq")
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        sql::all(&self.pool, sql::audit(f), rows::audit_from_row).await
    }

    async fn record_usage(&self, rows: &[UsageRow], last_used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        for r in rows {
            sqlx::query(ADD_USAGE)
                .text(&r.key_id)
                .text(&r.app_id)
                .int(r.minute)
                .text(&r.outcome)
                .int(i64::try_from(r.count).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        for (id, at) in last_used {
            sqlx::query("UPDATE keys SET last_used_at = MAX(COALESCE(last_used_at, 0), $1) WHERE id = $2")
                .ts(*at)
                .text(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn count_legacy_keys(&self) -> Result<u64, StoreError> {
        let row = sql::count_legacy_keys()
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
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
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        sql::insert_client(c)
            .execute(&mut *tx)
            .await
            .map_err(sql::client_insert_error)?;
        if let Some((digest, hint)) = secret {
            sql::insert_client_secret(&c.id, digest, hint, c.created_at)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        sql::optional(&self.pool, sql::client_by_id(id), rows::client_from_row).await
    }

    async fn list_clients(&self, app_id: Option<&str>) -> Result<Vec<ClientRecord>, StoreError> {
        sql::all(&self.pool, sql::clients(app_id), rows::client_from_row).await
    }

    async fn update_client(&self, c: &ClientRecord) -> Result<bool, StoreError> {
        let done = sql::update_client(c)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        sql::delete_client_secrets(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let done = sql::delete_client(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
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
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        // No row lock in SQLite: the write transaction itself is exclusive.
        let exists = sqlx::query("SELECT 1 FROM clients WHERE id = $1")
            .text(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        if exists.is_none() {
            return Ok(false);
        }
        sql::delete_expired_client_secrets(id, now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        sql::cap_client_secrets(id, old_until)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        sql::insert_client_secret(id, digest, hint, now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(true)
    }

    async fn add_signing_key(&self, k: &SigningKeyRow) -> Result<(), StoreError> {
        sql::insert_signing_key(k)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
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
        let done = sql::retire_signing_key(kid, at, remove_after)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_token(&self, jti: &str, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        sql::insert_revoked_token(jti, expires_at)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn revoked_tokens(&self, now: OffsetDateTime) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        sql::all(&self.pool, sql::revoked_tokens(now), rows::revoked_token_from_row).await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        sql::all(&self.pool, sql::webhooks(), rows::webhook_from_row).await
    }

    async fn create_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        sql::insert_webhook(w)
            .execute(&self.pool)
            .await
            .map_err(sql::webhook_insert_error)?;
        Ok(())
    }

    async fn update_webhook(&self, w: &WebhookRecord) -> Result<bool, StoreError> {
        let done = sql::update_webhook(w)
            .execute(&self.pool)
            .await
            .map_err(sql::webhook_insert_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let done = sql::delete_webhook(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
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
            .map_err(StoreError::from_sqlx)?;
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
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        sqlx::query("DELETE FROM seen_jtis WHERE scope = $1 AND jti = $2 AND expires_at <= $3")
            .text(scope)
            .text(jti)
            .ts(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let done =
            sqlx::query("INSERT INTO seen_jtis (scope, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .text(scope)
                .text(jti)
                .ts(expires_at)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() == 1)
    }
}
