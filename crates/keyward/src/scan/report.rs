//! What the key service says about each finding, and the report (text or JSON).

use super::*;

/// What the key service says about one finding.
#[derive(Debug, Clone, Default)]
pub(super) struct Verdict {
    pub(super) status: String,
    pub(super) id: Option<String>,
}

pub(super) const UNKNOWN_STATUS: &str = "unknown-status";

/// Whether a finding fails the run: anything that may still work (active, disabled), that
/// nobody could vouch for (unknown-status, unknown to this deployment, malformed to it), and
/// every client secret (the key service cannot tell their state). Revoked, expired and canary
/// keys do not, nor do publishable keys unless `fail_on_publishable`.
pub(super) fn fails_run(kind: KeyKind, status: &str, fail_on_publishable: bool) -> bool {
    let dead = matches!(status, "revoked" | "expired" | "canary");
    match kind {
        KeyKind::Secret => !dead,
        KeyKind::ClientSecret | KeyKind::AdminToken => true,
        KeyKind::Publishable => fail_on_publishable && !dead,
    }
}

/// What a finding's kind means for whoever reads the report.
pub(super) fn note(kind: KeyKind) -> Option<&'static str> {
    match kind {
        KeyKind::Secret => None,
        KeyKind::Publishable => Some("publishable key: fine in client code"),
        KeyKind::ClientSecret => {
            Some("OAuth client secret: rotate it (keyward client rotate-secret) and keep it on servers")
        }
        KeyKind::AdminToken => Some(
            "keyward admin token: revoke it (keyward admin-token revoke) and issue a new one; it manages your keys",
        ),
    }
}

pub(super) fn is_live(status: &str) -> bool {
    matches!(status, "active" | "disabled")
}

/// Asks `POST /v1/keys/check` about each distinct key, in batches.
pub(super) async fn check(client: &AdminClient, keys: &[&str]) -> Result<Vec<Verdict>> {
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(CHECK_BATCH) {
        let v = client
            .call(Method::POST, "/v1/keys/check", Some(json!({ "keys": batch })))
            .await?;
        let mut verdicts = vec![
            Verdict {
                status: UNKNOWN_STATUS.into(),
                id: None
            };
            batch.len()
        ];
        for item in v.get("items").and_then(Value::as_array).into_iter().flatten() {
            let idx = item
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok());
            if let Some(slot) = idx.and_then(|i| verdicts.get_mut(i)) {
                slot.status = item
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or(UNKNOWN_STATUS)
                    .to_owned();
                slot.id = item.get("id").and_then(Value::as_str).map(str::to_owned);
            }
        }
        out.extend(verdicts);
    }
    Ok(out)
}

pub(super) fn key_format(cli: &Cli, args: &ScanArgs) -> Result<KeyFormat> {
    let usage = |e: keyward_core::CoreError| CliError::Usage(format!("--prefix: {e}"));
    if let Some(p) = &args.prefix {
        return KeyFormat::new(p).map_err(usage);
    }
    let env = crate::support::env_vars();
    let path = crate::support::config_path(cli);
    Ok(Config::load(path.as_deref(), &env)
        .ok()
        .and_then(|c| c.key_format().ok())
        .unwrap_or_default())
}

#[derive(Serialize)]
pub(super) struct FindingOut {
    pub(super) file: String,
    pub(super) line: usize,
    pub(super) column: usize,
    pub(super) hint: String,
    pub(super) kind: KeyKind,
    /// `error` when the finding fails the run, `info` otherwise.
    pub(super) severity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) note: Option<&'static str>,
    pub(super) status: String,
    pub(super) id: Option<String>,
    /// Inside a source map's `sourcesContent`: the original source and the position in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) source: Option<SourcePos>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) inline_source_map: bool,
    /// Set when this run revoked the key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) revoked_now: bool,
}

/// `keyward scan`.
pub async fn run(cli: &Cli, args: &ScanArgs) -> Result<()> {
    for p in &args.paths {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(CliError::Usage(format!("{}: no such file or directory", p.display())));
        }
    }
    if args.max_size == 0 {
        return Err(CliError::Usage("--max-size must be at least 1 (MiB)".into()));
    }
    let matcher = Arc::new(key_format(cli, args).map(Matcher::new)?);
    // Admin access: flags, environment or configuration, like the management commands.
    let client = if args.offline {
        None
    } else {
        match crate::support::admin_client(cli) {
            Ok(c) => Some(c),
            Err(e) if args.revoke => {
                return Err(CliError::Usage(format!("--revoke needs admin access: {e}")));
            }
            Err(_) => None,
        }
    };

    let walk_args = ScanArgs {
        paths: args.paths.clone(),
        prefix: None,
        revoke: false,
        offline: true,
        hidden: args.hidden,
        no_hidden: args.no_hidden,
        no_ignore: args.no_ignore,
        max_size: args.max_size,
        json: false,
        fail_on_publishable: false,
    };
    let started = std::time::Instant::now();
    let outcome = tokio::task::spawn_blocking(move || walk(&walk_args, matcher))
        .await
        .map_err(|e| CliError::Io(format!("scan: {e}")))?;
    let elapsed = started.elapsed();

    // One status per distinct key.
    let mut distinct: Vec<&str> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    // Client secrets and admin tokens are not keys: the key service cannot tell anything about them.
    for f in outcome.findings.iter().filter(|f| f.kind.is_key()) {
        let k = f.key.expose();
        if !index_of.contains_key(k) {
            index_of.insert(k, distinct.len());
            distinct.push(k);
        }
    }
    let mut verdicts = vec![
        Verdict {
            status: UNKNOWN_STATUS.into(),
            id: None
        };
        distinct.len()
    ];
    let mut notes = Vec::new();
    match &client {
        Some(c) if !distinct.is_empty() => match check(c, &distinct).await {
            Ok(v) => verdicts = v,
            Err(e) if args.revoke => return Err(e),
            Err(e) => notes.push(format!(
                "cannot check the keys with the admin API ({e}); status unknown-status"
            )),
        },
        None if !distinct.is_empty() => {
            notes.push("no admin access (KEYWARD_ADMIN_TOKEN or a configuration): status unknown-status".into())
        }
        _ => {}
    }

    // Revoke live keys, once each, naming the first place each was found.
    let mut revoked_now = vec![false; distinct.len()];
    if let (true, Some(c)) = (args.revoke, &client) {
        // Publishable keys are public by design: never revoked for being found.
        for f in outcome.findings.iter().filter(|f| f.kind == KeyKind::Secret) {
            let Some(&i) = index_of.get(f.key.expose()) else {
                continue;
            };
            let Some(v) = verdicts.get(i) else { continue };
            if revoked_now[i] || !is_live(&v.status) {
                continue;
            }
            let Some(id) = &v.id else { continue };
            let reason = format!("found by keyward scan in {}:{}", f.file.display(), f.line);
            c.call(
                Method::POST,
                &format!("/v1/keys/{}/revoke", seg(id)),
                Some(json!({ "reason": reason })),
            )
            .await?;
            revoked_now[i] = true;
            if !args.json {
                eprintln!("revoked {id} ({}), {reason}", display_hint(f.key.expose()));
            }
        }
    }

    let out: Vec<FindingOut> = outcome
        .findings
        .iter()
        .map(|f| {
            let i = index_of.get(f.key.expose()).copied();
            let v = i.and_then(|i| verdicts.get(i)).cloned().unwrap_or_else(|| Verdict {
                status: UNKNOWN_STATUS.into(),
                id: None,
            });
            let fails = fails_run(f.kind, &v.status, args.fail_on_publishable);
            FindingOut {
                file: f.file.display().to_string(),
                line: f.line,
                column: f.column,
                hint: display_hint(f.key.expose()),
                kind: f.kind,
                severity: if fails { "error" } else { "info" },
                note: note(f.kind),
                status: v.status,
                id: v.id,
                source: f.source.clone(),
                inline_source_map: f.inline_source_map,
                revoked_now: i.and_then(|i| revoked_now.get(i)).copied().unwrap_or(false),
            }
        })
        .collect();
    let failing = out.iter().filter(|f| f.severity == "error").count();

    if args.json {
        let doc = json!({
            "findings": out,
            "failing": failing,
            "files_scanned": outcome.files,
            "bytes_scanned": outcome.bytes,
            "skipped": {"binary": outcome.binary, "too_large": outcome.too_large},
            "warnings": outcome.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        for f in &out {
            let mut what = f.status.clone();
            if let Some(id) = &f.id {
                what.push_str(&format!(", {id}"));
            }
            if f.revoked_now {
                what.push_str(", revoked now");
            }
            if let Some(n) = f.note {
                what.push_str(&format!("; {n}"));
            }
            let mut place = String::new();
            if let Some(s) = &f.source {
                place.push_str(&format!(" in {}:{}:{}", s.name, s.line, s.column));
            }
            if f.inline_source_map {
                place.push_str(" (inline source map)");
            }
            println!(
                "{}:{}:{}: {}: {} ({what}){place}",
                f.file, f.line, f.column, f.severity, f.hint
            );
        }
        for w in &outcome.warnings {
            eprintln!("warning: {w}");
        }
        for n in &notes {
            eprintln!("note: {n}");
        }
        eprintln!(
            "keyward scan: {} files ({}) in {:.2?}, skipped {} binary and {} over {} MiB; {} findings, {} failing",
            outcome.files,
            indicatif::HumanBytes(outcome.bytes),
            elapsed,
            outcome.binary,
            outcome.too_large,
            args.max_size,
            out.len(),
            failing
        );
    }
    if failing > 0 {
        return Err(CliError::Io(format!(
            "{failing} finding(s) may be live keys: revoke them (keyward key revoke, or scan --revoke) \
             and remove them from the files"
        )));
    }
    Ok(())
}
