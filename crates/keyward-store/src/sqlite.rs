//! The embedded default backend: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::model::KeyUpdate;
use keyward_core::policy::Policy;
use keyward_core::{AppRecord, Digest, KeyEnv, KeyRecord, Scope};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;

use crate::{Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite store. Created and migrated on first open.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const KEY_COLUMNS: &str = "k.id, k.app_id, a.name AS app_name, k.name, k.digest, k.hint, k.env, k.scopes, \
     k.expires_at, k.created_at, k.revoked_at, k.policy, a.policy AS app_policy";
const APP_COLUMNS: &str = "id, name, created_at, policy";

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

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(v: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(v).map_err(|_| StoreError::Corrupt("timestamp out of range".into()))
}

fn opt_ts(v: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    v.map(from_ts).transpose()
}

fn policy_from(text: &str) -> Result<Policy, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt("a stored policy is invalid".into()))
}

fn policy_json(p: &Policy) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| "{}".into())
}

fn app_from_row(row: &SqliteRow) -> Result<AppRecord, StoreError> {
    let policy: String = row.try_get("policy").map_err(StoreError::from_sqlx)?;
    Ok(AppRecord {
        id: row.try_get("id").map_err(StoreError::from_sqlx)?,
        name: row.try_get("name").map_err(StoreError::from_sqlx)?,
        created_at: from_ts(row.try_get("created_at").map_err(StoreError::from_sqlx)?)?,
        policy: policy_from(&policy)?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<(KeyRecord, Digest), StoreError> {
    let g = |e| StoreError::from_sqlx(e);
    let scopes_json: String = row.try_get("scopes").map_err(g)?;
    let scopes: Vec<String> =
        serde_json::from_str(&scopes_json).map_err(|_| StoreError::Corrupt("scopes are not a JSON array".into()))?;
    let scopes = scopes
        .iter()
        .map(|s| Scope::new(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| StoreError::Corrupt("a stored scope is invalid".into()))?;
    let env: String = row.try_get("env").map_err(g)?;
    let env = KeyEnv::from_str(&env).map_err(|_| StoreError::Corrupt("unknown key env".into()))?;
    let digest: Vec<u8> = row.try_get("digest").map_err(g)?;
    let digest =
        Digest::from_slice(&digest).ok_or_else(|| StoreError::Corrupt("digest has the wrong length".into()))?;
    Ok((
        KeyRecord {
            id: row.try_get("id").map_err(g)?,
            app_id: row.try_get("app_id").map_err(g)?,
            app_name: row.try_get("app_name").map_err(g)?,
            name: row.try_get("name").map_err(g)?,
            hint: row.try_get("hint").map_err(g)?,
            env,
            scopes,
            expires_at: opt_ts(row.try_get("expires_at").map_err(g)?)?,
            created_at: from_ts(row.try_get("created_at").map_err(g)?)?,
            revoked_at: opt_ts(row.try_get("revoked_at").map_err(g)?)?,
            policy: policy_from(&row.try_get::<String, _>("policy").map_err(g)?)?,
            app_policy: policy_from(&row.try_get::<String, _>("app_policy").map_err(g)?)?,
        },
        digest,
    ))
}

fn scopes_json(scopes: &[Scope]) -> String {
    let v: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

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
        sqlx::query("INSERT INTO apps (id, name, created_at, policy) VALUES (?, ?, ?, ?)")
            .bind(&app.id)
            .bind(&app.name)
            .bind(ts(app.created_at))
            .bind(policy_json(&app.policy))
            .execute(&self.pool)
            .await
            .map_err(|e| match StoreError::from_sqlx(e) {
                StoreError::Conflict(_) => StoreError::Conflict("an app with this name already exists".into()),
                other => other,
            })?;
        Ok(())
    }

    async fn get_app(&self, id_or_name: &str) -> Result<Option<AppRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE id = ?1 \
             UNION ALL SELECT {APP_COLUMNS} FROM apps WHERE name = ?1 AND id <> ?1 LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(app_from_row).transpose()
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter().map(app_from_row).collect()
    }

    async fn create_key(&self, key: &KeyRecord, digest: &Digest) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO keys (id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, policy) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(&key.app_id)
        .bind(&key.name)
        .bind(&digest.as_bytes()[..])
        .bind(&key.hint)
        .bind(key.env.as_str())
        .bind(scopes_json(&key.scopes))
        .bind(key.expires_at.map(ts))
        .bind(ts(key.created_at))
        .bind(key.revoked_at.map(ts))
        .bind(policy_json(&key.policy))
        .execute(&self.pool)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::NotFound(_) => StoreError::NotFound("app"),
            StoreError::Conflict(_) => StoreError::Conflict("a key with the same id or digest exists".into()),
            other => other,
        })?;
        Ok(())
    }

    async fn key_by_digest(&self, digest: &Digest) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM keys k JOIN apps a ON a.id = k.app_id WHERE k.digest = ?"
        ))
        .bind(&digest.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM keys k JOIN apps a ON a.id = k.app_id WHERE k.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(row.as_ref().map(key_from_row).transpose()?.map(|(k, _)| k))
    }

    async fn list_keys(&self, app_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM keys k JOIN apps a ON a.id = k.app_id \
             WHERE (?1 IS NULL OR k.app_id = ?1) ORDER BY k.created_at, k.id"
        ))
        .bind(app_id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(|r| key_from_row(r).map(|(k, _)| k)).collect()
    }

    async fn revoke_key(&self, id: &str, at: OffsetDateTime) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        sqlx::query("UPDATE keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(ts(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM keys k JOIN apps a ON a.id = k.app_id WHERE k.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        if let Some(name) = &update.name {
            sqlx::query("UPDATE keys SET name = ? WHERE id = ?")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        if let Some(scopes) = &update.scopes {
            sqlx::query("UPDATE keys SET scopes = ? WHERE id = ?")
                .bind(scopes_json(scopes))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        if let Some(policy) = &update.policy {
            sqlx::query("UPDATE keys SET policy = ? WHERE id = ?")
                .bind(policy_json(policy))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM keys k JOIN apps a ON a.id = k.app_id WHERE k.id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn update_app_policy(
        &self,
        id: &str,
        policy: &Policy,
    ) -> Result<Option<(AppRecord, Vec<Digest>)>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        sqlx::query("UPDATE apps SET policy = ? WHERE id = ?")
            .bind(policy_json(policy))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let app = app_from_row(&row)?;
        let rows = sqlx::query("SELECT digest FROM keys WHERE app_id = ?")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        let digests = rows
            .iter()
            .map(|r| {
                let d: Vec<u8> = r.try_get("digest").map_err(StoreError::from_sqlx)?;
                Digest::from_slice(&d).ok_or_else(|| StoreError::Corrupt("digest has the wrong length".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((app, digests)))
    }
}
