//! `keyward apply` and `keyward export` (configuration as code).

use std::path::Path;

use crate::client::AdminClient;
use crate::error::{CliError, Result};

/// How `apply` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub prune: bool,
    pub json: bool,
}

pub async fn apply(_client: &AdminClient, _file: &Path, _opts: Options) -> Result<()> {
    Err(CliError::Usage("not yet".into()))
}

pub async fn export(_client: &AdminClient, _out: Option<&Path>, _tokens: bool) -> Result<()> {
    Err(CliError::Usage("not yet".into()))
}
