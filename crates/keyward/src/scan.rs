//! `keyward scan PATH...`: finds keyward keys in files (sources, minified bundles, source maps)
//! and, with admin access, asks the key service what each one is (issue 4 point 8, issue 11
//! point 5). See docs/SCANNING.md.
//!
//! - The walk honours `.gitignore`, `.ignore` and hidden-file rules like ripgrep (the `ignore`
//!   crate), also outside a Git checkout; binary files (a NUL byte in the first 8 KiB) and files
//!   over the size cap are skipped.
//! - A finding is a string that parses as a key with a valid CRC32 checksum, on token boundaries
//!   (the bytes around it are not `[A-Za-z0-9_]`), where an escape such as `\n`, `\u0022`,
//!   `\x22` or `%22` right before a key counts as a boundary (JSON strings, source maps).
//! - Only masked hints are printed, never a key.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use keyward_core::key::display_hint;
use keyward_core::secret::SecretString;
use keyward_core::KeyFormat;
use memchr::memmem;
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::Cli;
use crate::client::{seg, AdminClient};
use crate::config::Config;
use crate::error::{CliError, Result};

/// Default size cap, in MiB.
pub const DEFAULT_MAX_SIZE_MIB: u64 = 10;
/// A NUL byte within this many leading bytes marks a file as binary.
const BINARY_PROBE: usize = 8 * 1024;
/// Keys per `POST /v1/keys/check` call (the admin API's limit).
const CHECK_BATCH: usize = 1000;

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or directories to scan (directories recursively).
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Key prefix (default: `keys.prefix` from the configuration when one loads, else `kw`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Revoke every live (active or disabled) key found; the reason names the file and line.
    #[arg(long, conflicts_with = "offline")]
    pub revoke: bool,
    /// Do not ask the admin API, even when it is configured (every status is unknown-status).
    #[arg(long)]
    pub offline: bool,
    /// Also scan hidden files and directories (`.git` itself is always skipped).
    #[arg(long)]
    pub hidden: bool,
    /// Do not honour .gitignore, .ignore and Git exclude files.
    #[arg(long)]
    pub no_ignore: bool,
    /// Skip files larger than this many MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_SIZE_MIB)]
    pub max_size: u64,
    /// One JSON document with the findings on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What kind of credential a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A secret key, `<prefix>_<env>_...`.
    Secret,
    /// A publishable key, `<prefix>_pk_<env>_...` (issue 11): meant to be public, never fails a run.
    Publishable,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Publishable => "publishable",
        }
    }
}

/// One key found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Byte offset of the key's first byte.
    pub offset: usize,
    /// Length of the key in bytes.
    pub len: usize,
    pub kind: KeyKind,
}

/// Finds keys of one format in byte buffers.
pub struct Matcher {
    format: KeyFormat,
    finder: memmem::Finder<'static>,
    prefix_len: usize,
    key_len: usize,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn all_hex(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_hexdigit)
}

/// Publishable keys (issue 11) would read `<prefix>_pk_<env>_<random><checksum>`. `KeyFormat`
/// cannot parse them yet, so no candidate is ever accepted; once it can, return its verdict here
/// and the scanner reports them with kind `publishable`.
fn parse_publishable(_format: &KeyFormat, _candidate: &str) -> bool {
    false
}

impl Matcher {
    pub fn new(format: KeyFormat) -> Matcher {
        let needle = format!("{}_", format.prefix());
        let finder = memmem::Finder::new(needle.as_bytes()).into_owned();
        Matcher {
            prefix_len: format.prefix().len(),
            key_len: format.key_len(),
            finder,
            format,
        }
    }

    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    /// Every key in `hay`, in order.
    pub fn find_all(&self, hay: &[u8]) -> Vec<Match> {
        self.finder
            .find_iter(hay)
            .filter_map(|i| self.candidate_at(hay, i))
            .collect()
    }

    fn candidate_at(&self, hay: &[u8], i: usize) -> Option<Match> {
        if !boundary_before(hay, i) {
            return None;
        }
        let rest = hay.get(i + self.prefix_len + 1..)?;
        let (kind, len) = if rest.starts_with(b"live_") || rest.starts_with(b"test_") {
            (KeyKind::Secret, self.key_len)
        } else if rest.starts_with(b"pk_live_") || rest.starts_with(b"pk_test_") {
            (KeyKind::Publishable, self.key_len + 3)
        } else {
            return None;
        };
        let end = i + len;
        let candidate = hay.get(i..end)?;
        if hay.get(end).is_some_and(|&b| is_word(b)) {
            return None;
        }
        let candidate = std::str::from_utf8(candidate).ok()?;
        let ok = match kind {
            KeyKind::Secret => self.format.parse(candidate).is_ok(),
            KeyKind::Publishable => parse_publishable(&self.format, candidate),
        };
        ok.then_some(Match { offset: i, len, kind })
    }
}

/// Whether a key may start at `i`: at the start, after a non-word byte, or right after an
/// escape sequence (`\n`, `\u0022`, `\x22`, `%22`), as found in JSON strings and source maps.
fn boundary_before(hay: &[u8], i: usize) -> bool {
    let Some(&b) = i.checked_sub(1).and_then(|j| hay.get(j)) else {
        return true;
    };
    if !is_word(b) {
        return true;
    }
    let before = &hay[..i];
    let n = before.len();
    // `\n`, `\t`, `\r` ... (one escaped character)
    (n >= 2 && before[n - 2] == b'\\')
        // `\u0022`
        || (n >= 6 && &before[n - 6..n - 4] == b"\\u" && all_hex(&before[n - 4..]))
        // `\x22`
        || (n >= 4 && &before[n - 4..n - 2] == b"\\x" && all_hex(&before[n - 2..]))
        // `%22` (URL encoding)
        || (n >= 3 && before[n - 3] == b'%' && all_hex(&before[n - 2..]))
}

/// A key found in a file. The plaintext stays inside a [`SecretString`] and is only sent to the
/// admin API; everything printed uses the hint.
pub struct RawFinding {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub kind: KeyKind,
    pub key: SecretString,
}

/// Finds keys in one buffer and locates them (1-based line, 1-based byte column).
pub fn scan_bytes(m: &Matcher, file: &Path, hay: &[u8]) -> Vec<RawFinding> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut counted_to = 0;
    for hit in m.find_all(hay) {
        line += memchr::memchr_iter(b'\n', &hay[counted_to..hit.offset]).count();
        counted_to = hit.offset;
        let line_start = memchr::memrchr(b'\n', &hay[..hit.offset]).map_or(0, |p| p + 1);
        // The candidate was checked to be ASCII.
        let key = String::from_utf8_lossy(&hay[hit.offset..hit.offset + hit.len]).into_owned();
        out.push(RawFinding {
            file: file.to_owned(),
            line,
            column: hit.offset - line_start + 1,
            kind: hit.kind,
            key: SecretString::new(key),
        });
    }
    out
}

#[derive(Default)]
struct Stats {
    files: AtomicU64,
    bytes: AtomicU64,
    binary: AtomicU64,
    too_large: AtomicU64,
}

struct WalkOutcome {
    findings: Vec<RawFinding>,
    warnings: Vec<String>,
    files: u64,
    bytes: u64,
    binary: u64,
    too_large: u64,
}

enum FileResult {
    Scanned(u64, Vec<RawFinding>),
    Binary,
    TooLarge,
}

fn scan_file(m: &Matcher, path: &Path, cap: u64) -> std::io::Result<FileResult> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > cap {
        return Ok(FileResult::TooLarge);
    }
    let data = std::fs::read(path)?;
    if data.len() as u64 > cap {
        return Ok(FileResult::TooLarge);
    }
    if memchr::memchr(0, &data[..data.len().min(BINARY_PROBE)]).is_some() {
        return Ok(FileResult::Binary);
    }
    Ok(FileResult::Scanned(data.len() as u64, scan_bytes(m, path, &data)))
}

fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} scanning: {binary_bytes} ({binary_bytes_per_sec}) {wide_msg}",
    ) {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn walk(args: &ScanArgs, matcher: Arc<Matcher>) -> WalkOutcome {
    let cap = args.max_size.saturating_mul(1024 * 1024);
    let (first, rest) = args
        .paths
        .split_first()
        .map_or((Path::new("."), &[][..]), |(f, r)| (f.as_path(), r));
    let mut builder = ignore::WalkBuilder::new(first);
    for p in rest {
        builder.add(p);
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    builder
        .hidden(!args.hidden)
        .ignore(!args.no_ignore)
        .git_ignore(!args.no_ignore)
        .git_exclude(!args.no_ignore)
        .git_global(!args.no_ignore)
        .parents(!args.no_ignore)
        // Honour .gitignore files also outside a Git checkout (a release tarball, a CI artefact).
        .require_git(false)
        .filter_entry(|e| e.file_name() != ".git")
        .threads(threads);
    let findings = Mutex::new(Vec::new());
    let warnings = Mutex::new(Vec::new());
    let stats = Stats::default();
    let pb = progress_bar();
    builder.build_parallel().run(|| {
        let (matcher, findings, warnings, stats, pb) = (matcher.clone(), &findings, &warnings, &stats, pb.clone());
        Box::new(move |entry| {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    if let Ok(mut w) = warnings.lock() {
                        w.push(e.to_string());
                    }
                    return ignore::WalkState::Continue;
                }
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return ignore::WalkState::Continue;
            }
            let path = entry.path();
            match scan_file(&matcher, path, cap) {
                Ok(FileResult::Scanned(n, found)) => {
                    stats.files.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(n, Ordering::Relaxed);
                    pb.inc(n);
                    if !pb.is_hidden() {
                        pb.set_message(path.display().to_string());
                    }
                    if !found.is_empty() {
                        if let Ok(mut f) = findings.lock() {
                            f.extend(found);
                        }
                    }
                }
                Ok(FileResult::Binary) => {
                    stats.binary.fetch_add(1, Ordering::Relaxed);
                }
                Ok(FileResult::TooLarge) => {
                    stats.too_large.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut w) = warnings.lock() {
                        w.push(format!("{}: skipped, larger than {} MiB", path.display(), cap >> 20));
                    }
                }
                Err(e) => {
                    if let Ok(mut w) = warnings.lock() {
                        w.push(format!("{}: {e}", path.display()));
                    }
                }
            }
            ignore::WalkState::Continue
        })
    });
    pb.finish_and_clear();
    let mut findings = findings.into_inner().unwrap_or_default();
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    let mut warnings = warnings.into_inner().unwrap_or_default();
    warnings.sort();
    WalkOutcome {
        findings,
        warnings,
        files: stats.files.into_inner(),
        bytes: stats.bytes.into_inner(),
        binary: stats.binary.into_inner(),
        too_large: stats.too_large.into_inner(),
    }
}

/// What the key service says about one finding.
#[derive(Debug, Clone, Default)]
struct Verdict {
    status: String,
    id: Option<String>,
}

const UNKNOWN_STATUS: &str = "unknown-status";

/// Whether a finding fails the run: anything that may still work (active, disabled), that
/// nobody could vouch for (unknown-status, unknown to this deployment, malformed to it).
/// Revoked, expired and canary keys and publishable keys do not.
fn fails_run(kind: KeyKind, status: &str) -> bool {
    kind == KeyKind::Secret && !matches!(status, "revoked" | "expired" | "canary")
}

fn is_live(status: &str) -> bool {
    matches!(status, "active" | "disabled")
}

/// Asks `POST /v1/keys/check` about each distinct key, in batches.
async fn check(client: &AdminClient, keys: &[&str]) -> Result<Vec<Verdict>> {
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

fn key_format(cli: &Cli, args: &ScanArgs) -> Result<KeyFormat> {
    let usage = |e: keyward_core::CoreError| CliError::Usage(format!("--prefix: {e}"));
    if let Some(p) = &args.prefix {
        return KeyFormat::new(p).map_err(usage);
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let path = cli.config.clone().or_else(|| {
        let p = PathBuf::from("keyward.toml");
        p.exists().then_some(p)
    });
    Ok(Config::load(path.as_deref(), &env)
        .ok()
        .and_then(|c| c.key_format().ok())
        .unwrap_or_default())
}

#[derive(Serialize)]
struct FindingOut {
    file: String,
    line: usize,
    column: usize,
    hint: String,
    kind: KeyKind,
    status: String,
    id: Option<String>,
    /// Set when this run revoked the key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    revoked_now: bool,
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
        match crate::commands::admin_client(cli) {
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
        no_ignore: args.no_ignore,
        max_size: args.max_size,
        json: false,
    };
    let started = std::time::Instant::now();
    let outcome = tokio::task::spawn_blocking(move || walk(&walk_args, matcher))
        .await
        .map_err(|e| CliError::Io(format!("scan: {e}")))?;
    let elapsed = started.elapsed();

    // One status per distinct key.
    let mut distinct: Vec<&str> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for f in &outcome.findings {
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
        for f in &outcome.findings {
            let i = index_of.get(f.key.expose()).copied().unwrap_or(0);
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
            let i = index_of.get(f.key.expose()).copied().unwrap_or(0);
            let v = verdicts.get(i).cloned().unwrap_or_default();
            FindingOut {
                file: f.file.display().to_string(),
                line: f.line,
                column: f.column,
                hint: display_hint(f.key.expose()),
                kind: f.kind,
                status: if f.kind == KeyKind::Publishable {
                    "publishable".into()
                } else {
                    v.status
                },
                id: v.id,
                revoked_now: revoked_now.get(i).copied().unwrap_or(false),
            }
        })
        .collect();
    let failing = out.iter().filter(|f| fails_run(f.kind, &f.status)).count();

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
            if f.kind == KeyKind::Publishable {
                println!("{}:{}: {} (publishable)", f.file, f.line, f.hint);
            } else {
                println!("{}:{}: {} ({what})", f.file, f.line, f.hint);
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use keyward_core::key::{KeyEnv, CHECKSUM_LEN, RANDOM_LEN};

    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=";

    /// SplitMix64: seeded, fast even unoptimised.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn fill(&mut self, out: &mut Vec<u8>, alphabet: &[u8], n: usize) {
            let mut bits = 0u64;
            let mut left = 0;
            for _ in 0..n {
                if left == 0 {
                    bits = self.next();
                    left = 8;
                }
                out.push(alphabet[(bits & 0xff) as usize % alphabet.len()]);
                bits >>= 8;
                left -= 1;
            }
        }
    }

    fn key() -> String {
        KeyFormat::default().generate(KeyEnv::Live).unwrap().expose().to_owned()
    }

    fn found(hay: &str) -> Vec<String> {
        let m = Matcher::new(KeyFormat::default());
        m.find_all(hay.as_bytes())
            .into_iter()
            .map(|x| hay[x.offset..x.offset + x.len].to_owned())
            .collect()
    }

    #[test]
    fn finds_keys_in_minified_js_json_and_source_maps() {
        let k = key();
        let contexts = [
            k.clone(),
            format!("var a=\"{k}\",b=1;"),
            format!("{{\"apiKey\":\"{k}\"}}"),
            format!("headers:{{'x-api-key':'{k}'}}"),
            format!("\"sourcesContent\":[\"const k = 1;\\n{k}\\nmore\"]"),
            format!("\"const KEY = \\u0022{k}\\u0022;\""),
            format!("s=\"\\x22{k}\\x22\""),
            format!("https://x.test/?key=%22{k}%22&a=1"),
            format!("KEY={k}\n"),
            format!("`${{a}}{k}`"),
        ];
        for c in &contexts {
            assert_eq!(found(c), vec![k.clone()], "{c}");
        }
        let test_key = KeyFormat::default().generate(KeyEnv::Test).unwrap().expose().to_owned();
        assert_eq!(found(&format!("{k} {test_key}")), vec![k.clone(), test_key]);
    }

    #[test]
    fn refuses_near_misses() {
        let k = key();
        let mut flipped = k.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).unwrap();
        for c in [
            format!("x{k}"),
            format!("_{k}"),
            format!("{k}x"),
            format!("{k}_"),
            k[..k.len() - 1].to_owned(),
            flipped,
            k.replacen("kw_", "kx_", 1),
            k.replacen("_live_", "_prod_", 1),
            k.replacen("_live_", "_pk_live_", 1),
        ] {
            assert!(found(&c).is_empty(), "{c}");
        }
    }

    #[test]
    fn other_prefixes() {
        let f = KeyFormat::new("acme").unwrap();
        let k = f.generate(KeyEnv::Live).unwrap();
        let m = Matcher::new(f);
        assert_eq!(m.find_all(format!("'{}'", k.expose()).as_bytes()).len(), 1);
        // The default format does not report another deployment's keys.
        assert!(found(k.expose()).is_empty());
    }

    #[test]
    fn locates_line_and_column() {
        let k = key();
        let text = format!("one\ntwo {k}\n\nx=\"{k}\"");
        let m = Matcher::new(KeyFormat::default());
        let f = scan_bytes(&m, Path::new("a.js"), text.as_bytes());
        let at: Vec<(usize, usize)> = f.iter().map(|f| (f.line, f.column)).collect();
        assert_eq!(at, vec![(2, 5), (4, 4)]);
        assert_eq!(
            format!("{:?}", f[0].key),
            format!("{:?}", SecretString::new(String::new()))
        );
    }

    /// Issue 4 point 8: no false positive on a million random high-entropy strings, half of
    /// them of the exact shape of a key (prefix, environment, 49 base62 symbols; only the
    /// checksum tells them apart), half random base62/base64 blobs with key-like prefixes mixed in.
    #[test]
    fn no_false_positives_on_a_million_random_strings() {
        let m = Matcher::new(KeyFormat::default());
        let mut rng = Rng(0x6b65_7977_6172_6421);
        let mut buf = Vec::with_capacity(256);
        let mut hits = 0usize;
        let started = std::time::Instant::now();
        for i in 0..1_000_000u32 {
            buf.clear();
            match i % 4 {
                0 | 1 => {
                    buf.extend_from_slice(if i % 8 < 4 { b"kw_live_" } else { b"kw_test_" });
                    rng.fill(&mut buf, B62, RANDOM_LEN + CHECKSUM_LEN);
                }
                2 => {
                    let n = 40 + (rng.next() % 120) as usize;
                    rng.fill(&mut buf, B62, n);
                }
                _ => {
                    rng.fill(&mut buf, B64, 20);
                    buf.extend_from_slice(b"\"kw_live_");
                    rng.fill(&mut buf, B64, 60);
                }
            }
            hits += m.find_all(&buf).len();
        }
        assert_eq!(hits, 0);
        // Sanity: the same loop does find a real key.
        assert_eq!(m.find_all(key().as_bytes()).len(), 1);
        eprintln!("1,000,000 random strings in {:?}", started.elapsed());
    }

    #[test]
    fn exit_rules() {
        for s in ["active", "disabled", "unknown", "malformed", UNKNOWN_STATUS] {
            assert!(fails_run(KeyKind::Secret, s), "{s}");
        }
        for s in ["revoked", "expired", "canary"] {
            assert!(!fails_run(KeyKind::Secret, s), "{s}");
        }
        assert!(!fails_run(KeyKind::Publishable, "publishable"));
    }
}
