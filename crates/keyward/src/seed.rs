//! Store maintenance commands: `keyward migrate` and `keyward dev seed`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use keyward_core::key::display_hint;
use keyward_core::model::{AuditEvent, Lifecycle, Severity};
use keyward_core::policy::Policy;
use keyward_core::secret::new_id;
use keyward_core::{AppRecord, Digest, KeyEnv, KeyRecord, Pepper};
use keyward_store::PgStore;
use time::OffsetDateTime;

use crate::config::Config;
use crate::error::{CliError, Result};

/// Applies the store's pending migrations (they also run when `keyward serve` starts).
pub async fn migrate(cfg: &Config) -> Result<()> {
    if cfg.store.is_postgres() {
        let store = PgStore::connect(&cfg.store.url, cfg.store.pg_options())
            .await
            .map_err(|e| CliError::startup(format!("store: {e}")))?;
        let applied = store
            .migrate()
            .await
            .map_err(|e| CliError::startup(format!("store: {e}")))?;
        if applied.is_empty() {
            println!("PostgreSQL store: up to date");
        } else {
            let list: Vec<String> = applied.iter().map(|v| format!("{v:04}")).collect();
            println!("PostgreSQL store: applied {}", list.join(", "));
        }
    } else {
        crate::server::open_store(&cfg.store).await?;
        println!("SQLite store {}: up to date", cfg.store.url);
    }
    Ok(())
}

/// What `keyward dev seed` loads.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub keys: u64,
    pub app: String,
    /// Write the plaintexts of `samples` seeded keys here (mode 0600, one per line), for
    /// benchmarks.
    pub sample_out: Option<std::path::PathBuf>,
    pub samples: usize,
    pub batch: usize,
    pub progress: bool,
}

/// Inserts `keys` real keys (real format, digests under the configured pepper) into one app,
/// in batched transactions, with a progress bar. Prints counts and timing, never a secret.
pub async fn seed(cfg: &Config, pepper: Pepper, opts: &SeedOptions) -> Result<SeedReport> {
    let format = cfg.key_format().map_err(|e| CliError::startup(e.to_string()))?;
    let store = crate::server::open_store(&cfg.store).await?;
    let store_err = |e: keyward_store::StoreError| CliError::startup(format!("store: {e}"));
    let now = now();
    let app = match store.get_app(&opts.app).await.map_err(store_err)? {
        Some(a) => a,
        None => {
            let a = AppRecord {
                id: new_id("app").map_err(|e| CliError::startup(e.to_string()))?,
                name: opts.app.clone(),
                created_at: now,
                policy: Policy::default(),
            };
            store.create_app(&a).await.map_err(store_err)?;
            a
        }
    };
    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(opts.keys);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} seeding [{elapsed_precise}] {wide_bar} {pos}/{len} keys ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut left = opts.keys;
    let batch = opts.batch.max(1) as u64;
    // Generation (CPU) of the next batch overlaps the insert (IO) of the current one.
    let make = |n: u64, want_samples: usize| {
        let format = format.clone();
        let pepper = pepper.clone();
        let app = app.clone();
        tokio::task::spawn_blocking(move || make_batch(&format, &pepper, &app, n, now, want_samples))
    };
    let first = left.min(batch);
    left -= first;
    let wanted = if opts.sample_out.is_some() {
        opts.samples.max(1)
    } else {
        0
    };
    let mut next = Some(make(first, wanted));
    let mut inserted = 0u64;
    while let Some(job) = next.take() {
        let (rows, samples) = job
            .await
            .map_err(|e| CliError::startup(format!("key generation failed: {e}")))??;
        if left > 0 {
            let n = left.min(batch);
            left -= n;
            next = Some(make(n, 0));
        }
        if let (Some(path), false) = (&opts.sample_out, samples.is_empty()) {
            let lines: Vec<&str> = samples.iter().map(|s| s.expose()).collect();
            write_secret_file(path, &(lines.join("\n") + "\n"))?;
        }
        store.create_keys_bulk(&rows).await.map_err(store_err)?;
        inserted += rows.len() as u64;
        bar.set_position(inserted);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let event = AuditEvent {
        seq: 0,
        at: now,
        actor: "cli".into(),
        kind: "keys.seeded".into(),
        severity: Severity::Info,
        target: Some(app.id.clone()),
        source_ip: None,
        details: serde_json::json!({"count": inserted, "app": app.name}),
    };
    store.append_audit(&event).await.map_err(store_err)?;
    Ok(SeedReport {
        keys: inserted,
        app_id: app.id,
        elapsed,
        backend: store.backend(),
    })
}

/// What a seeding did.
#[derive(Debug)]
pub struct SeedReport {
    pub keys: u64,
    pub app_id: String,
    pub elapsed: Duration,
    pub backend: &'static str,
}

type Batch = (Vec<(KeyRecord, Digest)>, Vec<keyward_core::secret::SecretString>);

fn make_batch(
    format: &keyward_core::KeyFormat,
    pepper: &Pepper,
    app: &AppRecord,
    n: u64,
    now: OffsetDateTime,
    want_samples: usize,
) -> Result<Batch> {
    let mut rows = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut samples = Vec::new();
    for _ in 0..n {
        let secret = format
            .generate(KeyEnv::Live)
            .map_err(|e| CliError::startup(e.to_string()))?;
        let digest = pepper.digest(secret.expose().as_bytes());
        let record = KeyRecord {
            id: new_id("key").map_err(|e| CliError::startup(e.to_string()))?,
            app_id: app.id.clone(),
            app_name: app.name.clone(),
            name: None,
            hint: display_hint(secret.expose()),
            env: KeyEnv::Live,
            scopes: Vec::new(),
            expires_at: None,
            created_at: now,
            revoked_at: None,
            policy: Policy::default(),
            app_policy: app.policy.clone(),
            lifecycle: Lifecycle::default(),
        };
        rows.push((record, digest));
        if samples.len() < want_samples {
            samples.push(secret);
        }
    }
    Ok((rows, samples))
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Writes a secret to a new file readable by its owner only.
fn write_secret_file(path: &Path, secret: &str) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| CliError::Io(format!("cannot restrict {}: {e}", path.display())))?;
    }
    f.write_all(secret.as_bytes())
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}
