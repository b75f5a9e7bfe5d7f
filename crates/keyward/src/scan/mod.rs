//! `keyward scan PATH...`: finds keyward keys in files (sources, minified bundles, source maps)
//! and, with admin access, asks the key service what each one is (issue 4 point 8, issue 11
//! point 5). See docs/SCANNING.md.
//!
//! - The walk honours `.gitignore`, `.ignore` and Git exclude files like ripgrep (the `ignore`
//!   crate), also outside a Git checkout; hidden files are scanned (`.env`), `.git/` is not
//!   (`--no-hidden` skips hidden files); binary files (a NUL byte in the first 8 KiB) and files
//!   over the size cap are skipped.
//! - A finding is a string that parses as a key with a valid CRC32 checksum (secret and
//!   publishable keys) or has the shape of a client secret, on token boundaries (the bytes
//!   around it are not `[A-Za-z0-9_]`), where an escape such as `\n`, `\u0022`, `\x22` or `%22`
//!   right before a key counts as a boundary (JSON strings, source maps).
//! - Escapes that stand for word characters (`\u005f`, `\u{5f}`, `\x5f`, `%5F`, also behind more
//!   backslashes) are decoded first, in one linear pass that records only the escapes it decoded,
//!   so positions are reported in the file as written.
//! - The strings of a `sourcesContent` array (source maps, also inline base64 ones in a
//!   `sourceMappingURL=data:` comment) are JSON-decoded and scanned as the source text they are:
//!   findings carry `sources[i]` and the line and column in that source.
//! - Publishable keys are information (they are meant for client code); secret keys and client
//!   secrets fail the run. Only masked hints are printed, never a key.

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
use keyward_engine::admin_tokens::{ADMIN_TOKEN_PREFIX, ADMIN_TOKEN_RANDOM};
use memchr::memmem;
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::Cli;
use crate::client::{seg, AdminClient};
use crate::config::Config;
use crate::error::{CliError, Result};

mod decode;
mod matcher;
mod report;
#[cfg(test)]
mod tests;
mod walk;

pub use decode::{scan_bytes, RawFinding, SourcePos};
use matcher::*;
pub use matcher::{KeyKind, Match, Matcher};
pub use report::run;
use walk::*;

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
    /// Skip hidden files and directories (dot files). By default they are scanned (`.env` is
    /// where keys leak), except `.git` itself, which is always skipped.
    #[arg(long)]
    pub no_hidden: bool,
    /// No effect, kept for compatibility: hidden files are scanned by default.
    #[arg(long, conflicts_with = "no_hidden")]
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
    /// Publishable keys fail the run too (by default they are information: they are meant to
    /// sit in client code).
    #[arg(long)]
    pub fail_on_publishable: bool,
}
