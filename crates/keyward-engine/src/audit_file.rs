//! The `[audit] sink = "file"` mirror: every stored audit event appended to a file as one JSON
//! line (`seq`, `at`, `actor`, `kind`, `severity`, `target`, `source_ip`, `details`: what the
//! audit log holds, so never a secret), for shipping to a SIEM. The file is opened in append
//! mode (created 0600); one `write` per line, so lines of concurrent events never interleave
//! and a log shipper can follow it. Events are rare (admin changes, security events), so the
//! write happens on the caller's task.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use keyward_core::model::AuditEvent;

use crate::security::EventSink;

pub struct FileSink {
    path: PathBuf,
    file: Mutex<File>,
}

impl FileSink {
    /// Opens (creating, mode 0600) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<FileSink> {
        let mut opts = std::fs::OpenOptions::new();
        opts.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path)?;
        Ok(FileSink {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }
}

impl EventSink for FileSink {
    fn emit(&self, event: &AuditEvent) {
        let mut line = match serde_json::to_vec(event) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit file sink: cannot serialise an event");
                return;
            }
        };
        line.push(b'\n');
        let mut f = match self.file.lock() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
        };
        if let Err(e) = f.write_all(&line) {
            tracing::error!(error = %e, path = %self.path.display(), seq = event.seq, "audit file sink: write failed");
        }
    }
}
