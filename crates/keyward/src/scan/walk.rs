//! Walking the paths (ignore files, hidden files, size cap, binary files), in parallel.

use super::*;

#[derive(Default)]
pub(super) struct Stats {
    pub(super) files: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) binary: AtomicU64,
    pub(super) too_large: AtomicU64,
}

pub(super) struct WalkOutcome {
    pub(super) findings: Vec<RawFinding>,
    pub(super) warnings: Vec<String>,
    pub(super) files: u64,
    pub(super) bytes: u64,
    pub(super) binary: u64,
    pub(super) too_large: u64,
}

pub(super) enum FileResult {
    Scanned(u64, Vec<RawFinding>),
    Binary,
    TooLarge,
}

pub(super) fn scan_file(m: &Matcher, path: &Path, cap: u64) -> std::io::Result<FileResult> {
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

pub(super) fn progress_bar() -> indicatif::ProgressBar {
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

pub(super) fn walk(args: &ScanArgs, matcher: Arc<Matcher>) -> WalkOutcome {
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
        .hidden(args.no_hidden)
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
