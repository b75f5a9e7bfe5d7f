//! The cluster backend: PostgreSQL through a connection pool.
//!
//! Same schema and semantics as the SQLite store (timestamps as Unix seconds, JSON as text,
//! digests as `BYTEA`). Every write that changes keys, apps, clients, signing keys or token
//! revocations also runs `pg_notify(<channel>, <change>)` in the same transaction, so the
//! announcement goes out exactly when (and only if) the change commits; [`PgStore`]'s listener
//! turns the announcements of every node into [`Change`]s.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::model::{
    AuditEvent, AuditFilter, ClientAuthMethod, ClientRecord, ClientSecretInfo, KeyUpdate, Lifecycle, Severity,
    SigningKeyRow, UsageRow,
};
use keyward_core::policy::Policy;
use keyward_core::{AppRecord, Digest, KeyEnv, KeyRecord, Scope};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::{AdminTokenRecord, Change, Store, StoreError};

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

const KEY_COLUMNS: &str = "k.id, k.app_id, a.name AS app_name, k.name, k.digest, k.hint, k.env, k.scopes, \
     k.expires_at, k.created_at, k.revoked_at, k.policy, a.policy AS app_policy, \
     k.disabled_at, k.canary, k.legacy, k.rotated_from, k.rotated_to, k.rotated_at, k.last_used_at, k.exchange_only, k.limit_id";
const APP_COLUMNS: &str = "id, name, created_at, policy";

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

/// A driver error without anything that could come from the URL (passwords).
fn redact(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!("database error {}", db.code().unwrap_or_default()),
        sqlx::Error::Io(io) => format!("{}", io.kind()),
        sqlx::Error::PoolTimedOut => "timed out".into(),
        sqlx::Error::Tls(_) => "TLS error".into(),
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

fn admin_token_from_row(row: &PgRow) -> Result<(AdminTokenRecord, Digest), StoreError> {
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

fn scopes_json(scopes: &[Scope]) -> String {
    let v: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

fn g(e: sqlx::Error) -> StoreError {
    StoreError::from_sqlx(e)
}

fn app_from_row(row: &PgRow) -> Result<AppRecord, StoreError> {
    let policy: String = row.try_get("policy").map_err(g)?;
    Ok(AppRecord {
        id: row.try_get("id").map_err(g)?,
        name: row.try_get("name").map_err(g)?,
        created_at: from_ts(row.try_get("created_at").map_err(g)?)?,
        policy: policy_from(&policy)?,
    })
}

fn digest_from(bytes: &[u8]) -> Result<Digest, StoreError> {
    Digest::from_slice(bytes).ok_or_else(|| StoreError::Corrupt("digest has the wrong length".into()))
}

fn key_from_row(row: &PgRow) -> Result<(KeyRecord, Digest), StoreError> {
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
    let digest = digest_from(&digest)?;
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

fn client_from_row(row: &PgRow) -> Result<ClientRecord, StoreError> {
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

fn signing_key_from_row(row: &PgRow) -> Result<SigningKeyRow, StoreError> {
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
async fn key_row_by_id<'e, E: sqlx::PgExecutor<'e>>(ex: E, id: &str) -> Result<Option<PgRow>, StoreError> {
    sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM keys k JOIN apps a ON a.id = k.app_id WHERE k.id = $1"
    ))
    .bind(id)
    .fetch_optional(ex)
    .await
    .map_err(g)
}

fn key_create_error(e: sqlx::Error) -> StoreError {
    match StoreError::from_sqlx(e) {
        StoreError::NotFound(_) => StoreError::NotFound("app"),
        StoreError::Conflict(_) => StoreError::Conflict("a key with the same id or digest exists".into()),
        other => other,
    }
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
        sqlx::query("INSERT INTO apps (id, name, created_at, policy) VALUES ($1, $2, $3, $4)")
            .bind(&app.id)
            .bind(&app.name)
            .bind(ts(app.created_at))
            .bind(policy_json(&app.policy))
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from_sqlx(e) {
                StoreError::Conflict(_) => StoreError::Conflict("an app with this name already exists".into()),
                other => other,
            })?;
        notify(&mut tx, &self.channel, &Change::App(app.id.clone())).await?;
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn get_app(&self, id_or_name: &str) -> Result<Option<AppRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE id = $1 \
             UNION ALL SELECT {APP_COLUMNS} FROM apps WHERE name = $1 AND id <> $1 LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(g)?;
        row.as_ref().map(app_from_row).transpose()
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await
            .map_err(g)?;
        rows.iter().map(app_from_row).collect()
    }

    async fn create_key(&self, key: &KeyRecord, digest: &Digest) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO keys (id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, policy, \
             disabled_at, canary, legacy, rotated_from, exchange_only) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
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
        .map_err(key_create_error)?;
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
            .map_err(key_create_error)?;
            notify(&mut tx, &self.channel, &Change::KeyCreated { id: "*".into(), legacy }).await?;
            tx.commit().await.map_err(g)?;
        }
        Ok(())
    }

    async fn key_by_digest(&self, digest: &Digest) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM keys k JOIN apps a ON a.id = k.app_id WHERE k.digest = $1"
        ))
        .bind(&digest.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(g)?;
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
             WHERE ($1::text IS NULL OR k.app_id = $1) ORDER BY k.created_at, k.id"
        ))
        .bind(app_id)
        .fetch_all(&self.pool)
        .await
        .map_err(g)?;
        rows.iter().map(|r| key_from_row(r).map(|(k, _)| k)).collect()
    }

    async fn revoke_key(&self, id: &str, at: OffsetDateTime) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
            .bind(ts(at))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        let row = key_row_by_id(&mut *tx, id).await?;
        if done.rows_affected() > 0 {
            notify(&mut tx, &self.channel, &Change::Key(id.to_owned())).await?;
        }
        tx.commit().await.map_err(g)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(name) = &update.name {
            sqlx::query("UPDATE keys SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(g)?;
        }
        if let Some(scopes) = &update.scopes {
            sqlx::query("UPDATE keys SET scopes = $1 WHERE id = $2")
                .bind(scopes_json(scopes))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(g)?;
        }
        if let Some(disabled) = &update.disabled_at {
            sqlx::query("UPDATE keys SET disabled_at = $1 WHERE id = $2")
                .bind(disabled.map(ts))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(g)?;
        }
        if let Some(policy) = &update.policy {
            sqlx::query("UPDATE keys SET policy = $1 WHERE id = $2")
                .bind(policy_json(policy))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(g)?;
        }
        let row = key_row_by_id(&mut *tx, id).await?;
        if row.is_some() {
            notify(&mut tx, &self.channel, &Change::Key(id.to_owned())).await?;
        }
        tx.commit().await.map_err(g)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn update_app_policy(
        &self,
        id: &str,
        policy: &Policy,
    ) -> Result<Option<(AppRecord, Vec<Digest>)>, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE apps SET policy = $1 WHERE id = $2 RETURNING {APP_COLUMNS}"
        ))
        .bind(policy_json(policy))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(g)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let app = app_from_row(&row)?;
        let rows = sqlx::query("SELECT digest FROM keys WHERE app_id = $1 ORDER BY created_at, id")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(g)?;
        notify(&mut tx, &self.channel, &Change::App(id.to_owned())).await?;
        tx.commit().await.map_err(g)?;
        let digests = rows
            .iter()
            .map(|r| {
                let d: Vec<u8> = r.try_get("digest").map_err(g)?;
                digest_from(&d)
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
        let mut tx = self.begin().await?;
        // Row lock on the old key: a concurrent rotation waits here, then sees `rotated_to`
        // set and changes nothing (exactly one rotation wins).
        let done = sqlx::query(
            "UPDATE keys SET rotated_to = $1, rotated_at = $2, expires_at = $3 \
             WHERE id = $4 AND rotated_to IS NULL AND revoked_at IS NULL",
        )
        .bind(&successor.id)
        .bind(ts(at))
        .bind(ts(old_expires_at))
        .bind(old_id)
        .execute(&mut *tx)
        .await
        .map_err(g)?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM keys WHERE id = $1")
                .bind(old_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(g)?;
            return Err(match exists {
                None => StoreError::NotFound("key"),
                Some(_) => StoreError::Conflict("the key is revoked or was already rotated".into()),
            });
        }
        sqlx::query(
            "INSERT INTO keys (id, app_id, name, digest, hint, env, scopes, expires_at, created_at, revoked_at, policy, \
             disabled_at, canary, legacy, rotated_from, exchange_only, limit_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, NULL, 0, 0, $11, $12, \
             (SELECT COALESCE(limit_id, id) FROM keys WHERE id = $11))",
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
        .bind(old_id)
        .bind(i64::from(successor.lifecycle.exchange_only))
        .execute(&mut *tx)
        .await
        .map_err(g)?;
        let row = key_row_by_id(&mut *tx, old_id)
            .await?
            .ok_or(StoreError::NotFound("key"))?;
        notify(&mut tx, &self.channel, &Change::Key(old_id.to_owned())).await?;
        let created = Change::KeyCreated {
            id: successor.id.clone(),
            legacy: false,
        };
        notify(&mut tx, &self.channel, &created).await?;
        tx.commit().await.map_err(g)?;
        key_from_row(&row)
    }

    async fn append_audit(&self, e: &AuditEvent) -> Result<i64, StoreError> {
        let details = serde_json::to_string(&e.details).unwrap_or_else(|_| "{}".into());
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO audit (at, actor, kind, severity, target, source_ip, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
        )
        .bind(ts(e.at))
        .bind(&e.actor)
        .bind(&e.kind)
        .bind(e.severity.as_str())
        .bind(&e.target)
        .bind(&e.source_ip)
        .bind(details)
        .fetch_one(&self.pool)
        .await
        .map_err(g)?;
        Ok(seq)
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let (kind_exact, kind_prefix) = match f.kind.as_deref() {
            Some(k) if k.ends_with('.') => (None, Some(format!("{}%", k.replace('%', "").replace('_', "\\_")))),
            Some(k) => (Some(k.to_owned()), None),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT seq, at, actor, kind, severity, target, source_ip, details FROM audit \
             WHERE ($1::int8 IS NULL OR at >= $1) AND ($2::text IS NULL OR target = $2) \
             AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR kind LIKE $4 ESCAPE '\\') \
             AND ($5::int8 IS NULL OR seq < $5) ORDER BY seq DESC LIMIT $6",
        )
        .bind(f.since.map(ts))
        .bind(&f.target)
        .bind(kind_exact)
        .bind(kind_prefix)
        .bind(f.before_seq)
        .bind(i64::from(f.limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await
        .map_err(g)?;
        rows.iter()
            .map(|r| {
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
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys WHERE legacy = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(g)?;
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
             WHERE minute >= $1 AND ($2::text IS NULL OR key_id = $2) AND ($3::text IS NULL OR app_id = $3) \
             ORDER BY minute, key_id, outcome LIMIT 100000",
        )
        .bind(since_minute)
        .bind(key_id)
        .bind(app_id)
        .fetch_all(&self.pool)
        .await
        .map_err(g)?;
        rows.iter()
            .map(|r| {
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
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO clients (id, app_id, name, scopes, auth_method, jwks, token_ttl, options, policy, created_at, \
             disabled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
            sqlx::query(
                "INSERT INTO client_secrets (client_id, digest, hint, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, NULL)",
            )
            .bind(&c.id)
            .bind(&digest.as_bytes()[..])
            .bind(hint)
            .bind(ts(c.created_at))
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        }
        notify(&mut tx, &self.channel, &Change::Client(c.id.clone())).await?;
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients c JOIN apps a ON a.id = c.app_id WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(g)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self, app_id: Option<&str>) -> Result<Vec<ClientRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients c JOIN apps a ON a.id = c.app_id \
             WHERE ($1::text IS NULL OR c.app_id = $1) ORDER BY c.created_at, c.id"
        ))
        .bind(app_id)
        .fetch_all(&self.pool)
        .await
        .map_err(g)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn update_client(&self, c: &ClientRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE clients SET name = $1, scopes = $2, jwks = $3, token_ttl = $4, options = $5, policy = $6, \
             disabled_at = $7 WHERE id = $8",
        )
        .bind(&c.name)
        .bind(scopes_json(&c.scopes))
        .bind(c.jwks.as_ref().map(|j| j.to_string()))
        .bind(i64::from(c.token_ttl))
        .bind(serde_json::to_string(&c.options).unwrap_or_else(|_| "{}".into()))
        .bind(policy_json(&c.policy))
        .bind(c.disabled_at.map(ts))
        .bind(&c.id)
        .execute(&mut *tx)
        .await
        .map_err(g)?;
        if done.rows_affected() > 0 {
            notify(&mut tx, &self.channel, &Change::Client(c.id.clone())).await?;
        }
        tx.commit().await.map_err(g)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM client_secrets WHERE client_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        let done = sqlx::query("DELETE FROM clients WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
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
        let rows = sqlx::query(
            "SELECT digest, hint, created_at, expires_at FROM client_secrets \
             WHERE client_id = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at",
        )
        .bind(id)
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await
        .map_err(g)?;
        rows.iter()
            .map(|r| {
                let d: Vec<u8> = r.try_get("digest").map_err(g)?;
                Ok((
                    digest_from(&d)?,
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
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM clients WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(g)?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM client_secrets WHERE client_id = $1 AND expires_at IS NOT NULL AND expires_at <= $2")
            .bind(id)
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        sqlx::query("UPDATE client_secrets SET expires_at = LEAST(COALESCE(expires_at, $1), $1) WHERE client_id = $2")
            .bind(ts(old_until))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(g)?;
        sqlx::query(
            "INSERT INTO client_secrets (client_id, digest, hint, created_at, expires_at) VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(id)
        .bind(&digest.as_bytes()[..])
        .bind(hint)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .map_err(g)?;
        notify(&mut tx, &self.channel, &Change::Client(id.to_owned())).await?;
        tx.commit().await.map_err(g)?;
        Ok(true)
    }

    async fn add_signing_key(&self, k: &SigningKeyRow) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_at, active_at, retired_at, \
             remove_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(k.public_jwk.to_string())
        .bind(&k.private_sealed)
        .bind(ts(k.created_at))
        .bind(ts(k.active_at))
        .bind(k.retired_at.map(ts))
        .bind(k.remove_after.map(ts))
        .execute(&mut *tx)
        .await
        .map_err(g)?;
        notify(&mut tx, &self.channel, &Change::SigningKeys).await?;
        tx.commit().await.map_err(g)?;
        Ok(())
    }

    async fn signing_keys(&self, now: OffsetDateTime) -> Result<Vec<SigningKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, public_jwk, private_sealed, created_at, active_at, retired_at, remove_after \
             FROM signing_keys WHERE remove_after IS NULL OR remove_after > $1 ORDER BY created_at, kid",
        )
        .bind(ts(now))
        .fetch_all(&self.pool)
        .await
        .map_err(g)?;
        rows.iter().map(signing_key_from_row).collect()
    }

    async fn retire_signing_key(
        &self,
        kid: &str,
        at: OffsetDateTime,
        remove_after: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE signing_keys SET retired_at = COALESCE(retired_at, $1), remove_after = COALESCE(remove_after, $2) \
             WHERE kid = $3",
        )
        .bind(ts(at))
        .bind(ts(remove_after))
        .bind(kid)
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
        let done =
            sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
                .bind(jti)
                .bind(ts(expires_at))
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
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
            .bind(ts(now))
            .fetch_all(&self.pool)
            .await
            .map_err(g)?;
        rows.iter()
            .map(|r| {
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
            "SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE digest = $1"
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
        sqlx::query("UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 OR name = $2")
            .bind(ts(at))
            .bind(id_or_name)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        let row = sqlx::query(&format!(
            "SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE id = $1 OR name = $1 ORDER BY id LIMIT 1"
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
        // One statement: inserts, or takes over an expired entry; a live entry (a replay)
        // changes nothing. Concurrent callers serialise on the primary key: one wins.
        let done = sqlx::query(
            "INSERT INTO seen_jtis (scope, jti, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, jti) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE seen_jtis.expires_at <= $4",
        )
        .bind(scope)
        .bind(jti)
        .bind(ts(expires_at))
        .bind(ts(now))
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
