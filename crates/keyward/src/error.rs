//! The binary's error enum: one variant per kind of failure, with a stable code and exit status.

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Startup(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin API at {url}: {reason} (is `keyward serve` running? set KEYWARD_ADMIN_URL)")]
    Unreachable { url: String, reason: String },
    #[error("{title} ({status}): {detail}")]
    Api {
        status: u16,
        title: String,
        detail: String,
        code: String,
    },
    #[error("{0}")]
    Io(String),
    /// A check found a problem (`audit verify`: a broken link). Exit status 1.
    #[error("{0}")]
    Check(String),
}

impl CliError {
    pub fn startup(m: impl Into<String>) -> CliError {
        CliError::Startup(m.into())
    }

    pub fn code(&self) -> &str {
        match self {
            CliError::Config(_) => "config",
            CliError::Startup(_) => "startup",
            CliError::Usage(_) => "usage",
            CliError::Unreachable { .. } => "unreachable",
            CliError::Api { code, .. } => code,
            CliError::Io(_) => "io",
            CliError::Check(_) => "check_failed",
        }
    }

    /// 2 for usage errors (as clap), 3 when the admin API cannot be reached, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            _ => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, CliError>;
