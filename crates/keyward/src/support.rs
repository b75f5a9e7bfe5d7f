//! Helpers shared by the commands, the demo and the scanner: the environment, where the
//! configuration is, the admin API client, the shutdown signal.

use std::path::PathBuf;

use crate::cli::Cli;
use crate::client::AdminClient;
use crate::config::Config;
use crate::error::{CliError, Result};

/// The process environment, as `Config::load` takes it.
pub fn env_vars() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// The configuration file: `--config`, else `KEYWARD_CONFIG` (when not empty), else
/// `./keyward.toml` when it exists.
pub fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config
        .clone()
        .or_else(|| {
            std::env::var_os("KEYWARD_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            let p = PathBuf::from("keyward.toml");
            p.exists().then_some(p)
        })
}

pub fn load_config(cli: &Cli) -> Result<Config> {
    Ok(Config::load(config_path(cli).as_deref(), &env_vars())?)
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The admin client from flags, environment and configuration.
pub fn admin_client(cli: &Cli) -> Result<AdminClient> {
    let env = env_vars();
    let cfg_path = config_path(cli);
    let cfg = Config::load(cfg_path.as_deref(), &env);
    let flag_or_env = cli.admin_url.clone().or_else(|| {
        env.iter()
            .find(|(k, v)| k == "KEYWARD_ADMIN_URL" && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
    });
    let url = match (&flag_or_env, &cfg) {
        (Some(u), _) => u.clone(),
        (None, Ok(c)) => format!("http://{}", c.admin.listen),
        (None, Err(e)) => return Err(CliError::Config(crate::config::ConfigError::Invalid(e.to_string()))),
    };
    let token = match env.iter().find(|(k, _)| k == "KEYWARD_ADMIN_TOKEN") {
        Some((_, t)) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => match &cfg {
            Ok(c) => c.admin_token(&env)?.expose().to_owned(),
            Err(_) => return Err(CliError::Usage("set KEYWARD_ADMIN_TOKEN".into())),
        },
    };
    AdminClient::new(&url, &token)
}
