//! The embedded default backend: one SQLite file in WAL mode.
//!
//! The statements it shares with PostgreSQL are in [`crate::sql`], the row mapping in
//! [`crate::rows`]; what is here is the connection, the transactions and the few statements
//! whose SQL is SQLite's own.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::audit::{ChainRow, Checkpoint, GENESIS};
use keyward_core::model::{
    AuditEvent, AuditFilter, ClientRecord, ClientSecretInfo, KeyUpdate, SigningKeyRow, UsageRow,
};
use keyward_core::policy::Policy;
use keyward_core::{AppRecord, Digest, KeyRecord};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use time::OffsetDateTime;

use crate::lock::{Busy, StoreLock};
use crate::rows::{self, Cols};
use crate::sql::{self, Bind};
use crate::{AdminTokenRecord, AuditHead, RetentionCounts, RetentionCut, Store, StoreError, WebhookRecord};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite store. Created and migrated on first open.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The store file (none in memory).
    path: Option<PathBuf>,
    /// This process's shared lock on the store ([`crate::lock`]), held while any clone lives.
    _lock: Option<Arc<StoreLock>>,
}

/// What `backup` wrote (or what `restore` installed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub apps: i64,
    pub keys: i64,
    pub audit_events: i64,
    /// The last migration the copy has.
    pub schema_version: i64,
    /// Where the store that was replaced went (restore only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<PathBuf>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, in WAL mode, and migrates it.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::new().filename(path);
        Self::connect(opts).await
    }

    /// Opens a store from a `sqlite://` URL (e.g. `sqlite://keyward.db`).
    pub async fn open_url(url: &str) -> Result<SqliteStore, StoreError> {
        let opts =
            SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Open(format!("invalid SQLite URL: {e}")))?;
        Self::connect(opts).await
    }

    async fn connect(opts: SqliteConnectOptions) -> Result<SqliteStore, StoreError> {
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let path = file_of(&opts);
        // The lock first: a store being restored is not opened at all.
        let lock = match &path {
            Some(p) => Some(Arc::new(StoreLock::shared(p)?)),
            None => None,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Open(format!("migration failed: {e}")))?;
        Ok(SqliteStore {
            pool,
            path,
            _lock: lock,
        })
    }

    /// The file of the store named by `url` as `keyward serve` reads `store.url`: a
    /// `sqlite://` or `sqlite:` URL, or a plain path. `None` for an in-memory store.
    pub fn file_of_url(url: &str) -> Result<Option<PathBuf>, StoreError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Open(format!("invalid SQLite URL: {e}")))?;
            Ok(file_of(&opts))
        } else {
            Ok(Some(PathBuf::from(url)))
        }
    }

    /// The store file (`None` for an in-memory store).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A consistent copy of the live store at `to` (mode 0600), made with `VACUUM INTO`: one
    /// read transaction, so the copy is the store as of one instant while writers go on (WAL);
    /// not a file copy, which could catch a page mid-write or miss what is still in the WAL.
    /// The copy is written next to `to`, checked (`PRAGMA integrity_check`), then renamed into
    /// place: `to` either is a complete copy or does not exist. `Conflict` when `to` exists.
    pub async fn backup(&self, to: &Path) -> Result<BackupReport, StoreError> {
        if self.path.as_deref().is_some_and(|p| same_file(p, to)) {
            return Err(StoreError::Conflict("the backup cannot be the store itself".into()));
        }
        if to.exists() {
            return Err(StoreError::Conflict(format!(
                "{} exists; a backup never overwrites a file",
                to.display()
            )));
        }
        let partial = sibling(to, ".partial");
        create_private_file(&partial)?;
        let result = async {
            sqlx::query("VACUUM INTO $1")
                .text(&path_text(&partial)?)
                .execute(&self.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
            let report = inspect_copy(&partial).await?;
            sync_file(&partial)?;
            std::fs::rename(&partial, to)
                .map_err(|e| StoreError::Unavailable(format!("cannot rename the backup into place: {e}")))?;
            sync_parent(to);
            Ok(BackupReport {
                path: to.to_path_buf(),
                ..report
            })
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    /// Installs the backup `from` as the store at `to`. Refused while any process has the store
    /// open (its lock: [`crate::lock`]), and nothing can open it until the restore is done. The
    /// backup is checked first (a SQLite file, `PRAGMA integrity_check`, keyward's schema, no
    /// migration this build does not know), then copied with `VACUUM INTO` next to `to` and
    /// renamed into place. An existing store is moved aside (with its `-wal` and `-shm` files,
    /// which must never meet another database) to `<to>.replaced-<unix time>` when `replace`,
    /// else the restore is refused. The next open migrates the restored store if it is older.
    pub async fn restore(from: &Path, to: &Path, replace: bool, now_unix: i64) -> Result<BackupReport, StoreError> {
        if same_file(from, to) {
            return Err(StoreError::Conflict("the backup is the store itself".into()));
        }
        let meta = std::fs::metadata(from).map_err(|e| StoreError::Open(format!("{}: {e}", from.display())))?;
        if !meta.is_file() {
            return Err(StoreError::Open(format!("{} is not a file", from.display())));
        }
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", dir.display())))?;
        }
        let _lock = match StoreLock::exclusive(to) {
            Ok(l) => l,
            Err(Busy::InUse) => {
                return Err(StoreError::Conflict(format!(
                    "{} is in use (a running keyward serve, or another keyward command, has it open: \
                     stop it first)",
                    to.display()
                )))
            }
            Err(Busy::Failed(e)) => return Err(e),
        };
        inspect_copy(from).await?;
        let exists = to.exists();
        if exists && !replace {
            return Err(StoreError::Conflict(format!(
                "{} exists: pass --force to replace it (it is kept aside)",
                to.display()
            )));
        }
        let incoming = sibling(to, ".restoring");
        let _ = std::fs::remove_file(&incoming);
        create_private_file(&incoming)?;
        let copied = async {
            let source = read_only_pool(from).await?;
            let done = sqlx::query("VACUUM INTO $1")
                .text(&path_text(&incoming)?)
                .execute(&source)
                .await
                .map_err(StoreError::from_sqlx);
            source.close().await;
            done?;
            let report = inspect_copy(&incoming).await?;
            sync_file(&incoming)?;
            Ok::<_, StoreError>(report)
        }
        .await;
        let report = match copied {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&incoming);
                return Err(e);
            }
        };
        let mut replaced = None;
        if exists {
            let aside = sibling(to, &format!(".replaced-{now_unix}"));
            for suffix in ["", "-wal", "-shm"] {
                let from_file = sibling(to, suffix);
                if from_file.exists() {
                    std::fs::rename(&from_file, sibling(&aside, suffix)).map_err(|e| {
                        StoreError::Unavailable(format!("cannot move {} aside: {e}", from_file.display()))
                    })?;
                }
            }
            replaced = Some(aside);
        }
        // A WAL left without its database (a crash) must not be applied to the restored file.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(sibling(to, suffix));
        }
        std::fs::rename(&incoming, to)
            .map_err(|e| StoreError::Unavailable(format!("cannot rename the restored store into place: {e}")))?;
        sync_parent(to);
        Ok(BackupReport {
            path: to.to_path_buf(),
            replaced,
            ..report
        })
    }
}

/// The file of a SQLite store's options (`None` in memory).
fn file_of(opts: &SqliteConnectOptions) -> Option<PathBuf> {
    let p = opts.get_filename();
    let s = p.to_string_lossy();
    if s.is_empty() || s == ":memory:" || s.starts_with("file::memory:") {
        None
    } else {
        Some(p.to_path_buf())
    }
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn path_text(p: &Path) -> Result<String, StoreError> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Open(format!("{} is not a UTF-8 path", p.display())))
}

/// A new, empty file only its owner may read (`VACUUM INTO` fills an empty file).
fn create_private_file(p: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(p)
        .map(drop)
        .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", p.display())))
}

fn sync_file(p: &Path) -> Result<(), StoreError> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Unavailable(format!("cannot sync {}: {e}", p.display())))
}

/// Makes a rename durable (best effort: not every platform can sync a directory).
fn sync_parent(p: &Path) {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

async fn read_only_pool(path: &Path) -> Result<SqlitePool, StoreError> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|_| StoreError::Open(format!("{} is not a SQLite database", path.display())))
}

/// Checks that `path` is a sound keyward store this build can open; what it holds.
async fn inspect_copy(path: &Path) -> Result<BackupReport, StoreError> {
    let pool = read_only_pool(path).await?;
    let report = inspect(&pool, path).await;
    pool.close().await;
    report
}

async fn inspect(pool: &SqlitePool, path: &Path) -> Result<BackupReport, StoreError> {
    let not_keyward = |what: &str| StoreError::Open(format!("{} is not a keyward store: {what}", path.display()));
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(pool)
        .await
        .map_err(|_| not_keyward("it is not a SQLite database"))?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!(
            "{} fails SQLite's integrity check",
            path.display()
        )));
    }
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
        .map_err(|_| not_keyward("no migration table"))?;
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    if let Some(v) = versions.iter().find(|v| !known.contains(v)) {
        return Err(StoreError::Open(format!(
            "{} has migration {v:04}, which this keyward does not know (a newer version made it)",
            path.display()
        )));
    }
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(match table {
            "apps" => "SELECT COUNT(*) FROM apps",
            "keys" => "SELECT COUNT(*) FROM keys",
            _ => "SELECT COUNT(*) FROM audit",
        })
        .fetch_one(pool)
        .await
        .map_err(|_| not_keyward(&format!("no {table} table")))
    };
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        path: path.to_path_buf(),
        bytes,
        apps: count("apps").await?,
        keys: count("keys").await?,
        audit_events: count("audit").await?,
        schema_version: versions.last().copied().unwrap_or(0),
        replaced: None,
    })
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
        sql::revoke_key(id, at)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        self.key_with_digest(id).await
    }

    async fn update_key(
        &self,
        id: &str,
        update: &KeyUpdate,
    ) -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError> {
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
        let old = rows::key_from_digest_row(&old)?;
        let row = sql::successor_row(successor, &old.0);
        sql::insert_key(&row, digest)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(old)
    }

    async fn append_audit(&self, e: &AuditEvent) -> Result<i64, StoreError> {
        // BEGIN IMMEDIATE: the write lock before the head is read, so no other writer can
        // append between the read and the insert.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::from_sqlx)?;
        let head = sqlx::query(sql::AUDIT_HEAD)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let head = rows::audit_head_from_row(&head)?;
        let row = sql::chain_row(e, head.seq + 1);
        let prev = head.hash.unwrap_or(GENESIS);
        let hash = row.compute_hash(&prev);
        sql::insert_chained_audit(&row, prev, hash)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        sql::set_audit_head(row.seq, hash)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(row.seq)
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        sql::all(&self.pool, sql::audit(f), rows::audit_from_row).await
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        let row = sqlx::query(sql::AUDIT_HEAD)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows::audit_head_from_row(&row)
    }

    async fn audit_chain(&self, after_seq: i64, limit: u32) -> Result<Vec<ChainRow>, StoreError> {
        sql::all(&self.pool, sql::audit_chain(after_seq, limit), rows::chain_row_from_row).await
    }

    async fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        sql::all(&self.pool, sql::audit_checkpoints(), rows::checkpoint_from_row).await
    }

    async fn add_audit_checkpoint(&self, cp: &Checkpoint) -> Result<bool, StoreError> {
        let done = sql::insert_checkpoint(cp)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn audit_cut_point(&self, before: OffsetDateTime) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        sql::optional(&self.pool, sql::audit_cut_point(before), rows::cut_point_from_row).await
    }

    async fn delete_audit(&self, up_to_seq: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sql::delete_audit(up_to_seq, limit)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn prune_audit_checkpoints(&self) -> Result<u64, StoreError> {
        let done = sql::prune_checkpoints()
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn delete_usage(&self, before_minute: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sql::delete_usage(before_minute, limit)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn purge_keys(
        &self,
        ended_before: OffsetDateTime,
        at: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let found = sql::purge_keys(ended_before, at, limit)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        found.iter().map(|r| r.text("id")).collect()
    }

    async fn delete_expired_tokens(&self, now: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        let tokens = sql::delete_expired_revoked_tokens(now, limit)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        let jtis = sql::delete_expired_jtis(now, limit)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(tokens.rows_affected() + jtis.rows_affected())
    }

    async fn delete_tombstones(&self, purged_before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        let done = sql::delete_tombstones(purged_before, limit)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn retention_counts(&self, cut: &RetentionCut) -> Result<RetentionCounts, StoreError> {
        sql::retention_counts(&self.pool, cut, rows::count_from_row).await
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
