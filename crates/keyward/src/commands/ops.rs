//! Store operations, run straight on the store named by the configuration (not through the
//! admin API, so they work with the server stopped): `retention run`, `audit verify`, `backup`
//! and `restore`.

use std::path::Path;
use std::sync::Arc;

use keyward_engine::audit_chain::ChainReport;
use keyward_engine::retention::RetentionReport;
use keyward_engine::{Engine, SystemClock};
use keyward_store::{BackupReport, SqliteStore};
use serde_json::json;
use time::OffsetDateTime;

use crate::config::Config;
use crate::error::{CliError, Result};
use crate::support::env_vars;

/// What `backup` and `restore` say for PostgreSQL: its own tools do it.
const PG_PROCEDURE: &str = "the store is PostgreSQL: back it up with its own tools, e.g.\n\
     \x20 pg_dump --format=custom --file=keyward.dump \"$URL\"          (online, consistent)\n\
     \x20 pg_restore --clean --if-exists --no-owner --dbname=\"$URL\" keyward.dump   (every keyward node stopped)\n\
     and keep the pepper and the key-encryption key with it: without them the copy is useless. \
     docs/DEPLOYMENT.md gives the whole procedure.";

/// What a copy of the store needs besides itself.
fn keep_also(cfg: &Config) -> String {
    let where_ = |file: &Option<std::path::PathBuf>, var: &str| match file {
        Some(p) => format!("{} (or {var})", p.display()),
        None => var.to_owned(),
    };
    format!(
        "keep the pepper [{}] and the key-encryption key [{}] too, apart from this copy: without the pepper no \
         key or client secret in it ever verifies again, without the key-encryption key its token signing keys \
         cannot be opened",
        where_(&cfg.secrets.pepper_file, "KEYWARD_PEPPER"),
        where_(&cfg.secrets.kek_file, "KEYWARD_KEK")
    )
}

/// An engine over the configured store, for the commands that need the pepper.
async fn engine(cfg: &Config) -> Result<Engine> {
    let env = env_vars();
    let pepper = cfg.pepper(&env)?;
    let format = cfg.key_format().map_err(|e| CliError::startup(e.to_string()))?;
    let store = crate::server::open_store(&cfg.store).await?;
    let engine = Engine::with_options(store, pepper, format, cfg.engine_options(), Arc::new(SystemClock));
    if let Some(path) = cfg.audit_file()? {
        let sink = keyward_engine::audit_file::FileSink::open(&path)
            .map_err(|e| CliError::Io(format!("audit.path {}: {e}", path.display())))?;
        engine.add_audit_mirror(Arc::new(sink));
    }
    Ok(engine)
}

fn store_error(e: keyward_engine::EngineError) -> CliError {
    CliError::Io(format!("store: {e}"))
}

fn rfc3339(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// `keyward retention run [--dry-run]`.
pub async fn retention_run(cfg: &Config, dry_run: bool, json: bool) -> Result<()> {
    let settings = cfg.retention_settings()?;
    let engine = engine(cfg).await?;
    let r = engine
        .run_retention(&settings, dry_run, "cli", None)
        .await
        .map_err(store_error)?;
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        print_retention(&r);
    }
    Ok(())
}

fn print_retention(r: &RetentionReport) {
    let verb = if r.dry_run { "would go" } else { "went" };
    let c = &r.counts;
    println!(
        "retention {} at {}{}",
        if r.dry_run { "dry run" } else { "pass" },
        rfc3339(Some(r.at)),
        if r.dry_run { " (nothing changed)" } else { "" }
    );
    match r.usage_before {
        Some(t) => println!("  usage rows before {}: {} {verb}", rfc3339(Some(t)), c.usage_rows),
        None => println!("  usage rows: kept forever"),
    }
    match (r.audit_before, r.audit_cut_seq) {
        (Some(t), Some(seq)) => println!(
            "  audit events older than {} (up to event {seq}): {} {verb}",
            rfc3339(Some(t)),
            c.audit_events
        ),
        (Some(t), None) => println!("  audit events older than {}: none", rfc3339(Some(t))),
        (None, _) => println!("  audit events: kept forever"),
    }
    match r.keys_ended_before {
        Some(t) => println!(
            "  keys revoked or expired before {}: {} {} tombstones (digest removed, record kept)",
            rfc3339(Some(t)),
            c.keys_purged,
            if r.dry_run { "would become" } else { "became" }
        ),
        None => println!("  revoked and expired keys: kept forever"),
    }
    match r.tombstones_before {
        Some(t) => println!(
            "  tombstones made before {}: {} {verb}",
            rfc3339(Some(t)),
            c.tombstones_deleted
        ),
        None => println!("  tombstones: kept forever"),
    }
    println!(
        "  expired entries of the token denylist and the jti replay store: {} {verb}",
        c.expired_token_rows
    );
    if !r.dry_run {
        println!("  audit chain checkpoints signed: {}", r.checkpoints_written);
    }
}

/// `SEQ:HASH` (a positive event number, 64 hex digits).
fn parse_expect(s: &str) -> Result<(i64, [u8; 32])> {
    let bad = || {
        CliError::Usage(format!(
            "--expect {s:?}: give SEQ:HASH, an event number and 64 hex digits"
        ))
    };
    let (seq, hash) = s.split_once(':').ok_or_else(bad)?;
    let seq: i64 = seq.trim().parse().map_err(|_| bad())?;
    let hash = hash.trim();
    if seq < 1 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok((seq, out))
}

/// `keyward audit verify`: exit 0 when the chain is intact, 1 at the first broken link.
pub async fn audit_verify(cfg: &Config, expect: &[String], json: bool) -> Result<()> {
    let recorded = expect.iter().map(|s| parse_expect(s)).collect::<Result<Vec<_>>>()?;
    let engine = engine(cfg).await?;
    let r = engine
        .verify_audit_chain_expecting(&recorded)
        .await
        .map_err(store_error)?;
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        print_chain(&r);
    }
    match &r.broken {
        None => Ok(()),
        Some(b) => Err(CliError::Check(format!(
            "the audit chain is broken at event {}: {}",
            b.seq, b.reason
        ))),
    }
}

fn print_chain(r: &ChainReport) {
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!(" (events {a} to {b})"),
        _ => String::new(),
    };
    if r.ok {
        println!(
            "audit chain intact: {} events checked{range}, head at event {}",
            r.events, r.head_seq
        );
        if let Some(h) = &r.head_hash {
            println!(
                "  head {}:{h} (keep it outside the database: a later `audit verify --expect {}:{h}` proves that \
                 nothing up to it changed)",
                r.head_seq, r.head_seq
            );
        }
    } else {
        println!("audit chain BROKEN after {} events checked{range}", r.events);
    }
    if r.legacy_events > 0 {
        println!(
            "  {} events from before the chain existed carry no hash (not covered)",
            r.legacy_events
        );
    }
    println!(
        "  {} signed checkpoints; latest retention cut: {}; last checkpoint matched: {}",
        r.checkpoints,
        r.latest_cut.map_or_else(|| "none".into(), |s| format!("event {s}")),
        r.anchored_up_to.map_or_else(|| "none".into(), |s| format!("event {s}"))
    );
    if let Some(b) = &r.broken {
        println!("  first broken link: event {}: {}", b.seq, b.reason);
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// `keyward backup FILE`.
pub async fn backup(cfg: &Config, file: &Path, json: bool) -> Result<()> {
    if cfg.store.is_postgres() {
        return Err(CliError::Usage(format!("keyward backup: {PG_PROCEDURE}")));
    }
    let store = crate::server::open_sqlite(&cfg.store).await?;
    let r = store
        .backup(file)
        .await
        .map_err(|e| CliError::Io(format!("backup: {e}")))?;
    print_copy(cfg, &r, "backup", json);
    Ok(())
}

/// `keyward restore FILE [--force]`.
pub async fn restore(cfg: &Config, file: &Path, force: bool, json: bool) -> Result<()> {
    if cfg.store.is_postgres() {
        return Err(CliError::Usage(format!("keyward restore: {PG_PROCEDURE}")));
    }
    let to = SqliteStore::file_of_url(&cfg.store.url)
        .map_err(|e| CliError::Usage(format!("store.url: {e}")))?
        .ok_or_else(|| CliError::Usage("store.url names an in-memory store: nothing to restore into".into()))?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let r = SqliteStore::restore(file, &to, force, now)
        .await
        .map_err(|e| CliError::Io(format!("restore: {e}")))?;
    print_copy(cfg, &r, "restore", json);
    Ok(())
}

fn print_copy(cfg: &Config, r: &BackupReport, what: &str, json: bool) {
    let keep = keep_also(cfg);
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["keep_also"] = json!(["pepper", "kek"]);
        v["note"] = json!(keep);
        println!("{v}");
        return;
    }
    let verb = if what == "backup" { "wrote" } else { "restored" };
    println!(
        "{what}: {verb} {} ({}, {} apps, {} keys, {} audit events, schema {:04})",
        r.path.display(),
        mib(r.bytes),
        r.apps,
        r.keys,
        r.audit_events,
        r.schema_version
    );
    if let Some(p) = &r.replaced {
        println!("{what}: the store that was there is kept as {}", p.display());
    }
    if what == "restore" {
        println!("{what}: start keyward serve on it (it applies any newer migrations)");
    }
    println!("{what}: {keep}");
}
