//! The embedded default backend: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::model::{
    AuditEvent, AuditFilter, ClientAuthMethod, ClientRecord, ClientSecretInfo, KeyUpdate, Lifecycle, Severity,
    SigningKeyRow, UsageRow,
};
use keyward_core::policy::Policy;
use keyward_core::{AppRecord, Digest, KeyEnv, KeyRecord, Scope};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;

use crate::{AdminTokenRecord, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite store. Created and migrated on first open.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const KEY_COLUMNS: &str = "k.id, k.app_id, a.name AS app_name, k.name, k.digest, k.hint, k.env, k.scopes, \
     k.expires_at, k.created_at, k.revoked_at, k.policy, a.policy AS app_policy, \
     k.disabled_at, k.canary, k.legacy, k.rotated_from, k.rotated_to, k.rotated_at, k.last_used_at, k.exchange_only, k.limit_id";
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

fn admin_token_from_row(row: &SqliteRow) -> Result<(AdminTokenRecord, Digest), StoreError> {
    let g = |e| StoreError::from_sqlx(e);
    let digest: Vec<u8> = row.try_get("digest").map_err(g)?;
    let digest =
        Digest::from_slice(&digest).ok_or_else(|| StoreError::Corrupt("digest has the wrong length".into()))?;
    Ok((
        AdminTokenRecord {
            id: row.try_get("id").map_err(g)?,
            name: row.try_get("name").map_err(g)?,
            role: row.try_get("role").map_err(g)?,
            hint: row.try_get("hint").map_err(g)?,
            created_at: from_ts(row.try_get("created_at").map_err(g)?)?,
            expires_at: opt_ts(row.try_get("expires_at").map_err(g)?)?,
            revoked_at: opt_ts(row.try_get("revoked_at").map_err(g)?)?,
            created_by: row.try_get("created_by").map_err(g)?,
        },
        digest,
    ))
}

const ADMIN_TOKEN_COLUMNS: &str = "id, name, role, digest, hint, created_at, expires_at, revoked_at, created_by";

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
    Ok(AppRecord {
        id: row.try_get("id").map_err(StoreError::from_sqlx)?,
        name: row.try_get("name").map_err(StoreError::from_sqlx)?,
        created_at: from_ts(row.try_get("created_at").map_err(StoreError::from_sqlx)?)?,
        policy: policy_from(&row.try_get::<String, _>("policy").map_err(StoreError::from_sqlx)?)?,
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
            lifecycle: Lifecycle {
                disabled_at: opt_ts(row.try_get("disabled_at").map_err(g)?)?,
                canary: row.try_get::<i64, _>("canary").map_err(g)? != 0,
                legacy: row.try_get::<i64, _>("legacy").map_err(g)? != 0,
                exchange_only: row.try_get::<i64, _>("exchange_only").map_err(g)? != 0,
                rotated_from: row.try_get("rotated_from").map_err(g)?,
                rotated_to: row.try_get("rotated_to").map_err(g)?,
                limit_id: row.try_get("limit_id").map_err(g)?,
                rotated_at: opt_ts(row.try_get("rotated_at").map_err(g)?)?,
                last_used_at: opt_ts(row.try_get("last_used_at").map_err(g)?)?,
            },
        },
        digest,
    ))
}

const CLIENT_COLUMNS: &str = "c.id, c.app_id, a.name AS app_name, c.name, c.scopes, c.auth_method, c.jwks, \
     c.token_ttl, c.options, c.policy, c.created_at, c.disabled_at";

fn client_from_row(row: &SqliteRow) -> Result<ClientRecord, StoreError> {
    let g = |e| StoreError::from_sqlx(e);
    let scopes: String = row.try_get("scopes").map_err(g)?;
    let scopes: Vec<String> =
        serde_json::from_str(&scopes).map_err(|_| StoreError::Corrupt("client scopes are not a JSON array".into()))?;
    let scopes = scopes
        .iter()
        .map(|s| Scope::new(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| StoreError::Corrupt("a stored client scope is invalid".into()))?;
    let method: String = row.try_get("auth_method").map_err(g)?;
    let jwks: Option<String> = row.try_get("jwks").map_err(g)?;
    let options: String = row.try_get("options").map_err(g)?;
    let policy: String = row.try_get("policy").map_err(g)?;
    Ok(ClientRecord {
        id: row.try_get("id").map_err(g)?,
        app_id: row.try_get("app_id").map_err(g)?,
        app_name: row.try_get("app_name").map_err(g)?,
        name: row.try_get("name").map_err(g)?,
        scopes,
        auth_method: ClientAuthMethod::parse(&method)
            .ok_or_else(|| StoreError::Corrupt("unknown client auth method".into()))?,
        jwks: jwks
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|_| StoreError::Corrupt("client jwks are not JSON".into()))?,
        token_ttl: u32::try_from(row.try_get::<i64, _>("token_ttl").map_err(g)?).unwrap_or(300),
        options: serde_json::from_str(&options).map_err(|_| StoreError::Corrupt("client options".into()))?,
        policy: policy_from(&policy)?,
        created_at: from_ts(row.try_get("created_at").map_err(g)?)?,
        disabled_at: opt_ts(row.try_get("disabled_at").map_err(g)?)?,
    })
}

fn signing_key_from_row(row: &SqliteRow) -> Result<SigningKeyRow, StoreError> {
    let g = |e| StoreError::from_sqlx(e);
    let jwk: String = row.try_get("public_jwk").map_err(g)?;
    Ok(SigningKeyRow {
        kid: row.try_get("kid").map_err(g)?,
        alg: row.try_get("alg").map_err(g)?,
        public_jwk: serde_json::from_str(&jwk).map_err(|_| StoreError::Corrupt("public JWK is not JSON".into()))?,
        private_sealed: row.try_get("private_sealed").map_err(g)?,
        created_at: from_ts(row.try_get("created_at").map_err(g)?)?,
        active_at: from_ts(row.try_get("active_at").map_err(g)?)?,
        retired_at: opt_ts(row.try_get("retired_at").map_err(g)?)?,
        remove_after: opt_ts(row.try_get("remove_after").map_err(g)?)?,
    })
}

/// The key row with this id (and its app's policy), from a pool or inside a transaction.
async fn key_row_by_id<'e, E: sqlx::SqliteExecutor<'e>>(ex: E, id: &str) -> Result<Option<SqliteRow>, StoreError> {
    sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM keys k JOIN apps a ON a.id = k.app_id WHERE k.id = ?"
    ))
    .bind(id)
    .fetch_optional(ex)
    .await
    .map_err(StoreError::from_sqlx)
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
            "INSERT INTO keys (id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, policy, \
             disabled_at, canary, legacy, rotated_from, exchange_only) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(key.lifecycle.disabled_at.map(ts))
        .bind(i64::from(key.lifecycle.canary))
        .bind(i64::from(key.lifecycle.legacy))
        .bind(&key.lifecycle.rotated_from)
        .bind(i64::from(key.lifecycle.exchange_only))
        .execute(&self.pool)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::NotFound(_) => StoreError::NotFound("app"),
            StoreError::Conflict(_) => StoreError::Conflict("a key with the same id or digest exists".into()),
            other => other,
        })?;
        Ok(())
    }

    async fn create_keys_bulk(&self, keys: &[(KeyRecord, Digest)]) -> Result<(), StoreError> {
        // One transaction per 5,000 keys: SQLite inserts are cheap, commits are not.
        for chunk in keys.chunks(5_000) {
            let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
            for (key, digest) in chunk {
                sqlx::query(
                    "INSERT INTO keys (id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, \
                     policy, disabled_at, canary, legacy, rotated_from, exchange_only) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                .bind(key.lifecycle.disabled_at.map(ts))
                .bind(i64::from(key.lifecycle.canary))
                .bind(i64::from(key.lifecycle.legacy))
                .bind(&key.lifecycle.rotated_from)
                .bind(i64::from(key.lifecycle.exchange_only))
                .execute(&mut *tx)
                .await
                .map_err(|e| match StoreError::from_sqlx(e) {
                    StoreError::NotFound(_) => StoreError::NotFound("app"),
                    StoreError::Conflict(_) => StoreError::Conflict("a key with the same id or digest exists".into()),
                    other => other,
                })?;
            }
            tx.commit().await.map_err(StoreError::from_sqlx)?;
        }
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
        Ok(self.key_with_digest(id).await?.map(|(k, _)| k))
    }

    async fn key_with_digest(&self, id: &str) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        let row = key_row_by_id(&self.pool, id).await?;
        row.as_ref().map(key_from_row).transpose()
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
        let row = key_row_by_id(&self.pool, id).await?;
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
        if let Some(disabled) = &update.disabled_at {
            sqlx::query("UPDATE keys SET disabled_at = ? WHERE id = ?")
                .bind(disabled.map(ts))
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
        let row = key_row_by_id(&mut *tx, id).await?;
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

    async fn rotate_key(
        &self,
        old_id: &str,
        successor: &KeyRecord,
        digest: &Digest,
        old_expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<(KeyRecord, Digest), StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let done = sqlx::query(
            "UPDATE keys SET rotated_to = ?, rotated_at = ?, expires_at = ? \
             WHERE id = ? AND rotated_to IS NULL AND revoked_at IS NULL",
        )
        .bind(&successor.id)
        .bind(ts(at))
        .bind(ts(old_expires_at))
        .bind(old_id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM keys WHERE id = ?")
                .bind(old_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
            return Err(match exists {
                None => StoreError::NotFound("key"),
                Some(_) => StoreError::Conflict("the key is revoked or was already rotated".into()),
            });
        }
        sqlx::query(
            "INSERT INTO keys (id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, policy, \
             disabled_at, canary, legacy, rotated_from, exchange_only, limit_id) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, 0, 0, id, ?, COALESCE(limit_id, id) FROM keys WHERE id = ?",
        )
        .bind(&successor.id)
        .bind(&successor.app_id)
        .bind(&successor.name)
        .bind(&digest.as_bytes()[..])
        .bind(&successor.hint)
        .bind(successor.env.as_str())
        .bind(scopes_json(&successor.scopes))
        .bind(successor.expires_at.map(ts))
        .bind(ts(successor.created_at))
        .bind(policy_json(&successor.policy))
        .bind(i64::from(successor.lifecycle.exchange_only))
        .bind(old_id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        let row = key_row_by_id(&mut *tx, old_id)
            .await?
            .ok_or(StoreError::NotFound("key"))?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        key_from_row(&row)
    }

    async fn append_audit(&self, e: &AuditEvent) -> Result<i64, StoreError> {
        let details = serde_json::to_string(&e.details).unwrap_or_else(|_| "{}".into());
        let done = sqlx::query(
            "INSERT INTO audit (at, actor, kind, severity, target, source_ip, details) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(ts(e.at))
        .bind(&e.actor)
        .bind(&e.kind)
        .bind(e.severity.as_str())
        .bind(&e.target)
        .bind(&e.source_ip)
        .bind(details)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(done.last_insert_rowid())
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let (kind_exact, kind_prefix) = match f.kind.as_deref() {
            Some(k) if k.ends_with('.') => (None, Some(format!("{}%", k.replace('%', "").replace('_', "\\_")))),
            Some(k) => (Some(k.to_owned()), None),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT seq, at, actor, kind, severity, target, source_ip, details FROM audit \
             WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR target = ?2) AND (?3 IS NULL OR kind = ?3) \
             AND (?4 IS NULL OR kind LIKE ?4 ESCAPE '\\') AND (?5 IS NULL OR seq < ?5) \
             ORDER BY seq DESC LIMIT ?6",
        )
        .bind(f.since.map(ts))
        .bind(&f.target)
        .bind(kind_exact)
        .bind(kind_prefix)
        .bind(f.before_seq)
        .bind(i64::from(f.limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|r| {
                let g = |e| StoreError::from_sqlx(e);
                let severity = match r.try_get::<String, _>("severity").map_err(g)?.as_str() {
                    "high" => Severity::High,
                    "warning" => Severity::Warning,
                    _ => Severity::Info,
                };
                let details: String = r.try_get("details").map_err(g)?;
                Ok(AuditEvent {
                    seq: r.try_get("seq").map_err(g)?,
                    at: from_ts(r.try_get("at").map_err(g)?)?,
                    actor: r.try_get("actor").map_err(g)?,
                    kind: r.try_get("kind").map_err(g)?,
                    severity,
                    target: r.try_get("target").map_err(g)?,
                    source_ip: r.try_get("source_ip").map_err(g)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    async fn record_usage(&self, rows: &[UsageRow], last_used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        for r in rows {
            sqlx::query(
                "INSERT INTO usage (key_id, app_id, minute, outcome, count) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (key_id, minute, outcome) DO UPDATE SET count = count + excluded.count",
            )
            .bind(&r.key_id)
            .bind(&r.app_id)
            .bind(r.minute)
            .bind(&r.outcome)
            .bind(i64::try_from(r.count).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        }
        for (id, at) in last_used {
            sqlx::query("UPDATE keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?")
                .bind(ts(*at))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn count_legacy_keys(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys WHERE legacy = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn usage(
        &self,
        key_id: Option<&str>,
        app_id: Option<&str>,
        since_minute: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id, app_id, minute, outcome, count FROM usage \
             WHERE minute >= ?1 AND (?2 IS NULL OR key_id = ?2) AND (?3 IS NULL OR app_id = ?3) \
             ORDER BY minute, key_id, outcome LIMIT 100000",
        )
        .bind(since_minute)
        .bind(key_id)
        .bind(app_id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|r| {
                let g = |e| StoreError::from_sqlx(e);
                Ok(UsageRow {
                    key_id: r.try_get("key_id").map_err(g)?,
                    app_id: r.try_get("app_id").map_err(g)?,
                    minute: r.try_get("minute").map_err(g)?,
                    outcome: r.try_get("outcome").map_err(g)?,
                    count: u64::try_from(r.try_get::<i64, _>("count").map_err(g)?).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn create_client(&self, c: &ClientRecord, secret: Option<(&Digest, &str)>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        sqlx::query(
            "INSERT INTO clients (id, app_id, name, scopes, auth_method, jwks, token_ttl, options, policy, created_at, \
             disabled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.id)
        .bind(&c.app_id)
        .bind(&c.name)
        .bind(scopes_json(&c.scopes))
        .bind(c.auth_method.as_str())
        .bind(c.jwks.as_ref().map(|j| j.to_string()))
        .bind(i64::from(c.token_ttl))
        .bind(serde_json::to_string(&c.options).unwrap_or_else(|_| "{}".into()))
        .bind(policy_json(&c.policy))
        .bind(ts(c.created_at))
        .bind(c.disabled_at.map(ts))
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::NotFound(_) => StoreError::NotFound("app"),
            other => other,
        })?;
        if let Some((digest, hint)) = secret {
            sqlx::query("INSERT INTO client_secrets (client_id, digest, hint, created_at, expires_at) VALUES (?, ?, ?, ?, NULL)")
                .bind(&c.id)
                .bind(&digest.as_bytes()[..])
                .bind(hint)
                .bind(ts(c.created_at))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients c JOIN apps a ON a.id = c.app_id WHERE c.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self, app_id: Option<&str>) -> Result<Vec<ClientRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients c JOIN apps a ON a.id = c.app_id \
             WHERE (?1 IS NULL OR c.app_id = ?1) ORDER BY c.created_at, c.id"
        ))
        .bind(app_id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn update_client(&self, c: &ClientRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE clients SET name = ?, scopes = ?, jwks = ?, token_ttl = ?, options = ?, policy = ?, disabled_at = ? \
             WHERE id = ?",
        )
        .bind(&c.name)
        .bind(scopes_json(&c.scopes))
        .bind(c.jwks.as_ref().map(|j| j.to_string()))
        .bind(i64::from(c.token_ttl))
        .bind(serde_json::to_string(&c.options).unwrap_or_else(|_| "{}".into()))
        .bind(policy_json(&c.policy))
        .bind(c.disabled_at.map(ts))
        .bind(&c.id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        sqlx::query("DELETE FROM client_secrets WHERE client_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let done = sqlx::query("DELETE FROM clients WHERE id = ?")
            .bind(id)
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
        let rows = sqlx::query(
            "SELECT digest, hint, created_at, expires_at FROM client_secrets \
             WHERE client_id = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at",
        )
        .bind(id)
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|r| {
                let g = |e| StoreError::from_sqlx(e);
                let d: Vec<u8> = r.try_get("digest").map_err(g)?;
                Ok((
                    Digest::from_slice(&d).ok_or_else(|| StoreError::Corrupt("digest has the wrong length".into()))?,
                    ClientSecretInfo {
                        hint: r.try_get("hint").map_err(g)?,
                        created_at: from_ts(r.try_get("created_at").map_err(g)?)?,
                        expires_at: opt_ts(r.try_get("expires_at").map_err(g)?)?,
                    },
                ))
            })
            .collect()
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
        let exists = sqlx::query("SELECT 1 FROM clients WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM client_secrets WHERE client_id = ? AND expires_at IS NOT NULL AND expires_at <= ?")
            .bind(id)
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        sqlx::query("UPDATE client_secrets SET expires_at = MIN(COALESCE(expires_at, ?1), ?1) WHERE client_id = ?2")
            .bind(ts(old_until))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        sqlx::query(
            "INSERT INTO client_secrets (client_id, digest, hint, created_at, expires_at) VALUES (?, ?, ?, ?, NULL)",
        )
        .bind(id)
        .bind(&digest.as_bytes()[..])
        .bind(hint)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(true)
    }

    async fn add_signing_key(&self, k: &SigningKeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_at, active_at, retired_at, remove_after) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(k.public_jwk.to_string())
        .bind(&k.private_sealed)
        .bind(ts(k.created_at))
        .bind(ts(k.active_at))
        .bind(k.retired_at.map(ts))
        .bind(k.remove_after.map(ts))
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn signing_keys(&self, now: OffsetDateTime) -> Result<Vec<SigningKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, public_jwk, private_sealed, created_at, active_at, retired_at, remove_after FROM signing_keys \
             WHERE remove_after IS NULL OR remove_after > ? ORDER BY created_at, kid",
        )
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(signing_key_from_row).collect()
    }

    async fn retire_signing_key(
        &self,
        kid: &str,
        at: OffsetDateTime,
        remove_after: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET retired_at = COALESCE(retired_at, ?), remove_after = COALESCE(remove_after, ?) WHERE kid = ?",
        )
        .bind(ts(at))
        .bind(ts(remove_after))
        .bind(kid)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_token(&self, jti: &str, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING")
            .bind(jti)
            .bind(ts(expires_at))
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    async fn revoked_tokens(&self, now: OffsetDateTime) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > ?")
            .bind(ts(now))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|r| {
                let g = |e| StoreError::from_sqlx(e);
                Ok((
                    r.try_get("jti").map_err(g)?,
                    from_ts(r.try_get("expires_at").map_err(g)?)?,
                ))
            })
            .collect()
    }

    async fn create_admin_token(&self, t: &AdminTokenRecord, digest: &Digest) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, role, digest, hint, created_at, expires_at, revoked_at, created_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&digest.as_bytes()[..])
        .bind(&t.hint)
        .bind(ts(t.created_at))
        .bind(t.expires_at.map(ts))
        .bind(t.revoked_at.map(ts))
        .bind(&t.created_by)
        .execute(&self.pool)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::Conflict(_) => StoreError::Conflict("an admin token with this name already exists".into()),
            other => other,
        })?;
        Ok(())
    }

    async fn admin_token_by_digest(&self, digest: &Digest) -> Result<Option<(AdminTokenRecord, Digest)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE digest = ?1"
        ))
        .bind(&digest.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(admin_token_from_row).transpose()
    }

    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter().map(|r| admin_token_from_row(r).map(|(t, _)| t)).collect()
    }

    async fn revoke_admin_token(
        &self,
        id_or_name: &str,
        at: OffsetDateTime,
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        sqlx::query("UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2 OR name = ?2")
            .bind(ts(at))
            .bind(id_or_name)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        let row = sqlx::query(&format!(
            "SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE id = ?1 OR name = ?1 ORDER BY id LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(row.as_ref().map(admin_token_from_row).transpose()?.map(|(t, _)| t))
    }

    async fn remember_jti(
        &self,
        scope: &str,
        jti: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        sqlx::query("DELETE FROM seen_jtis WHERE scope = ? AND jti = ? AND expires_at <= ?")
            .bind(scope)
            .bind(jti)
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let done =
            sqlx::query("INSERT INTO seen_jtis (scope, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(scope)
                .bind(jti)
                .bind(ts(expires_at))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() == 1)
    }
}
