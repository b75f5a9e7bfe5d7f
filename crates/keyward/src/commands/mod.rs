//! What each command does: dispatch, `serve` and `cat-facts` here; `init`, the key and app
//! commands, the client / signing-key / admin-token commands, the store operations (`ops`:
//! retention, audit verification, backup and restore) and the flag helpers in submodules.

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{
    AdminTokenCommand, AppCommand, ClearFlags, Cli, ClientCommand, Command, KeyCommand, LimitFlags, SigningKeyCommand,
    UpstreamCommand,
};
use crate::client::{print_table, seg};
use crate::config::{write_secret_file, Config};
use crate::error::{CliError, Result};
use crate::server::{self, Secrets};

mod clients;
mod flags;
mod init;
mod keys;
mod ops;
mod upstreams;

pub(crate) use clients::jwks_of_certificate;
use clients::{admin_token, client, signing_key};
use flags::*;
use init::init;
use keys::{app, key};

pub use crate::support::shutdown_signal;
use crate::support::{admin_client, config_path, env_vars, load_config};

/// Worker threads wanted by the configuration (0 = default), read before the runtime starts.
pub fn worker_threads(cli: &Cli) -> usize {
    match cli.command {
        Command::Serve => load_config(cli).map(|c| c.server.worker_threads).unwrap_or(0),
        _ => 0,
    }
}

/// The OpenTelemetry export `serve` is configured for, read before the subscriber is installed
/// (a configuration that does not load is reported by `serve` itself).
pub fn telemetry_export(cli: &Cli) -> Option<crate::telemetry::Export> {
    match cli.command {
        Command::Serve => load_config(cli)
            .ok()
            .and_then(|c| crate::telemetry::Export::from_config(&c.telemetry)),
        _ => None,
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Init { dir, data_dir } => init(dir, data_dir.as_deref()),
        Command::Serve => serve(&cli).await,
        Command::CheckConfig { file } => match file.clone().or_else(|| config_path(&cli)) {
            Some(file) => crate::check_config::run(&file, &env_vars()),
            None => Err(CliError::Usage(
                "no configuration file to check: name it (keyward check-config FILE), or set --config or \
                 KEYWARD_CONFIG (./keyward.toml is used when it exists)"
                    .into(),
            )),
        },
        Command::Demo { listen, json } => crate::demo::run(*listen, *json).await,
        Command::CatFacts {
            listen,
            tls_cert,
            tls_key,
        } => cat_facts(*listen, tls_cert.as_deref().zip(tls_key.as_deref())).await,
        Command::App(cmd) => app(&cli, cmd).await,
        Command::Key(cmd) => key(&cli, cmd).await,
        Command::Client(cmd) => client(&cli, cmd).await,
        Command::SigningKey(cmd) => signing_key(&cli, cmd).await,
        Command::AdminToken(cmd) => admin_token(&cli, cmd).await,
        Command::Upstream(cmd) => upstreams::upstream(&cli, cmd).await,
        Command::Usage { key, app, since, out } => {
            crate::report::usage(&admin_client(&cli)?, key, app, since, out.json).await
        }
        Command::Audit {
            action: Some(crate::cli::AuditCommand::Verify { expect, out }),
            ..
        } => ops::audit_verify(&load_config(&cli)?, expect, out.json).await,
        Command::Audit { action: None, list } => {
            crate::report::audit(
                &admin_client(&cli)?,
                list.since.as_deref(),
                list.key.as_deref(),
                list.kind.as_deref(),
                list.limit,
                list.out.json,
            )
            .await
        }
        Command::Retention(crate::cli::RetentionCommand::Run { dry_run, out }) => {
            ops::retention_run(&load_config(&cli)?, *dry_run, out.json).await
        }
        Command::Backup { file, out } => ops::backup(&load_config(&cli)?, file, out.json).await,
        Command::Restore { file, force, out } => ops::restore(&load_config(&cli)?, file, *force, out.json).await,
        Command::Scan { args } => crate::scan::run(&cli, args).await,
        Command::Migrate => crate::seed::migrate(&load_config(&cli)?).await,
        Command::Apply {
            file,
            dry_run,
            prune,
            out,
        } => {
            crate::apply::apply(
                &admin_client(&cli)?.as_tool("apply"),
                file,
                crate::apply::Options {
                    dry_run: *dry_run,
                    prune: *prune,
                    json: out.json,
                },
            )
            .await
        }
        Command::Export {
            output,
            no_admin_tokens,
        } => crate::apply::export(&admin_client(&cli)?, output.as_deref(), !*no_admin_tokens).await,
        Command::Completions { shell } => crate::packaging::completions(*shell),
        Command::Man { dir } => crate::packaging::man(dir.as_deref()),
        Command::Dev(crate::cli::DevCommand::Seed {
            keys,
            app,
            sample_out,
            samples,
            batch,
            quiet,
        }) => {
            let cfg = load_config(&cli)?;
            let pepper = cfg.pepper(&env_vars())?;
            let opts = crate::seed::SeedOptions {
                keys: *keys,
                app: app.clone(),
                sample_out: sample_out.clone(),
                samples: *samples,
                batch: *batch,
                progress: !*quiet,
            };
            let r = crate::seed::seed(&cfg, pepper, &opts).await?;
            let secs = r.elapsed.as_secs_f64();
            println!(
                "seeded {} keys into app {} ({}) in {secs:.1} s ({:.0} keys/s)",
                r.keys,
                r.app_id,
                r.backend,
                r.keys as f64 / secs.max(1e-9)
            );
            Ok(())
        }
    }
}

async fn serve(cli: &Cli) -> Result<()> {
    let env = env_vars();
    // Exactly what `keyward check-config` checks, every problem at once.
    let cfg = Config::read(config_path(cli).as_deref(), &env)?;
    crate::config::ConfigError::from_problems(cfg.check(&env))?;
    let secrets = Secrets {
        pepper: cfg.pepper(&env)?,
        admin_token: cfg.admin_token(&env)?,
        kek: if cfg.oauth.enabled { Some(cfg.kek(&env)?) } else { None },
        verify_token: cfg.verify_token(&env)?,
    };
    let running = server::start(&cfg, secrets).await?;
    crate::log_listening(running.gateway, running.admin);
    // SIGHUP: re-read the configuration and swap the route table (routes and their limits);
    // a configuration that does not load or validate is logged and the current one stays.
    let path = config_path(cli);
    let reloads = async {
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                while hup.recv().await.is_some() {
                    reload(&running, path.as_deref());
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP: no configuration reload"),
        }
        std::future::pending::<()>().await
    };
    tokio::select! { _ = shutdown_signal() => {}, _ = reloads => {} }
    tracing::info!(
        timeout = ?cfg.server.shutdown_timeout,
        "shutting down: no new connections, draining in-flight requests"
    );
    running.shutdown().await;
    Ok(())
}

/// One SIGHUP: load and validate the file again, then swap the routes.
fn reload(running: &server::Running, path: Option<&Path>) {
    match Config::load(path, &env_vars()) {
        Ok(cfg) => match running.reload(&cfg) {
            Ok(r) if r.not_applied.is_empty() => tracing::info!(
                routes = r.routes,
                upstream_groups = r.upstream_groups,
                "configuration reloaded: {} routes, {} upstream groups",
                r.routes,
                r.upstream_groups
            ),
            Ok(r) => tracing::warn!(
                routes = r.routes,
                upstream_groups = r.upstream_groups,
                not_applied = %r.not_applied.join(", "),
                "configuration reloaded: {} routes, {} upstream groups; not applied until restart: {}",
                r.routes,
                r.upstream_groups,
                r.not_applied.join(", ")
            ),
            Err(e) => tracing::error!(error = %e, "configuration reload refused; the previous configuration stays"),
        },
        Err(e) => {
            running.reload_rejected();
            tracing::error!(error = %e, "configuration reload refused; the previous configuration stays");
        }
    }
}

async fn cat_facts(listen: std::net::SocketAddr, tls: Option<(&std::path::Path, &std::path::Path)>) -> Result<()> {
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::startup(format!("cannot listen on {listen}: {e}")))?;
    let addr = l.local_addr().map_err(|e| CliError::Io(e.to_string()))?;
    let Some((cert_file, key_file)) = tls else {
        tracing::info!(target: crate::LISTENING, listen = %addr, "cat-facts API on http://{addr}");
        return crate::catfacts::serve(l, shutdown_signal())
            .await
            .map_err(|e| CliError::Io(e.to_string()));
    };
    // The same TLS listener as the gateway's (HTTP/1.1 and h2 by ALPN), without client
    // certificates: an HTTPS upstream for the proxy's tests and benchmarks.
    let settings = keyward_edge::tls::TlsSettings {
        cert_file: cert_file.to_path_buf(),
        key_file: key_file.to_path_buf(),
        client_ca_file: None,
        client_auth: keyward_edge::tls::ClientAuth::None,
        crl_files: Vec::new(),
        accept_self_signed: false,
        reload_interval: std::time::Duration::from_secs(3600),
        handshake_timeout: std::time::Duration::from_secs(10),
    };
    let server = keyward_edge::tls::TlsServer::load(&settings).map_err(|e| CliError::startup(e.to_string()))?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    tracing::info!(target: crate::LISTENING, listen = %addr, "cat-facts API on https://{addr}");
    server
        .serve(
            l,
            crate::catfacts::router(),
            keyward_edge::serve::HttpLimits::default(),
            rx,
        )
        .await
        .map_err(|e| CliError::Io(e.to_string()))
}
