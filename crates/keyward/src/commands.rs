//! What each command does.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{
    AdminTokenCommand, AppCommand, ClearFlags, Cli, ClientCommand, Command, KeyCommand, LimitFlags, SigningKeyCommand,
};
use crate::client::{print_table, seg, AdminClient};
use crate::config::{write_secret_file, Config};
use crate::error::{CliError, Result};
use crate::server::{self, Secrets};

fn env_vars() -> Vec<(String, String)> {
    std::env::vars().collect()
}

fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config.clone().or_else(|| {
        let p = PathBuf::from("keyward.toml");
        p.exists().then_some(p)
    })
}

fn load_config(cli: &Cli) -> Result<Config> {
    Ok(Config::load(config_path(cli).as_deref(), &env_vars())?)
}

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
        Command::Init { dir } => init(dir),
        Command::Serve => serve(&cli).await,
        Command::CheckConfig { file } => crate::check_config::run(file, &env_vars()),
        Command::Demo { listen, json } => crate::demo::run(*listen, *json).await,
        Command::CatFacts { listen } => cat_facts(*listen).await,
        Command::App(cmd) => app(&cli, cmd).await,
        Command::Key(cmd) => key(&cli, cmd).await,
        Command::Client(cmd) => client(&cli, cmd).await,
        Command::SigningKey(cmd) => signing_key(&cli, cmd).await,
        Command::AdminToken(cmd) => admin_token(&cli, cmd).await,
        Command::Usage { key, app, since, out } => {
            crate::report::usage(&admin_client(&cli)?, key, app, since, out.json).await
        }
        Command::Audit {
            since,
            key,
            kind,
            limit,
            out,
        } => {
            crate::report::audit(
                &admin_client(&cli)?,
                since.as_deref(),
                key.as_deref(),
                kind.as_deref(),
                *limit,
                out.json,
            )
            .await
        }
        Command::Scan { args } => crate::scan::run(&cli, args).await,
        Command::Migrate => crate::seed::migrate(&load_config(&cli)?).await,
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

const CONFIG_TEMPLATE: &str = r#"# keyward configuration. Every key can be overridden by an environment variable:
# KEYWARD_<SECTION>__<KEY>, e.g. KEYWARD_GATEWAY__LISTEN=0.0.0.0:8080.

[store]
# A SQLite file (relative to this file), created and migrated on first start.
url = "keyward.db"

[keys]
prefix = "kw"

[secrets]
# Mode 0600 files. KEYWARD_PEPPER and KEYWARD_ADMIN_TOKEN take precedence.
pepper_file = "keyward.pepper"
admin_token_file = "admin.token"
# Seals the token signing keys (AES-256-GCM). KEYWARD_KEK takes precedence.
kek_file = "keyward.kek"

[gateway]
listen = "127.0.0.1:8080"
credential_headers = ["x-api-key"]
# 403 reproduces the classic static-key behaviour for invalid keys.
invalid_credential_status = 401
connect_timeout = "2s"
upstream_timeout = "30s"

[admin]
listen = "127.0.0.1:8081"

# The OAuth 2.0 token service on the gateway listener: /oauth/token, /oauth/introspect,
# /oauth/revoke, /.well-known/oauth-authorization-server, /.well-known/jwks.json.
[oauth]
enabled = true
audience = "keyward"
signing_alg = "EdDSA"

# Routes: the longest matching path_prefix wins, then the method.
# `keyward cat-facts --listen 127.0.0.1:9000` runs the example upstream.
[[routes]]
name = "fact"
path_prefix = "/fact"
methods = ["GET"]
upstream = "http://127.0.0.1:9000"
scopes = ["facts:read"]
tokens = true

[[routes]]
name = "facts-read"
path_prefix = "/facts"
methods = ["GET"]
upstream = "http://127.0.0.1:9000"
scopes = ["facts:read"]
tokens = true

[[routes]]
name = "facts-write"
path_prefix = "/facts"
methods = ["POST"]
upstream = "http://127.0.0.1:9000"
scopes = ["facts:write"]
tokens = true
"#;

fn init(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let cfg = dir.join("keyward.toml");
    let pepper = dir.join("keyward.pepper");
    let token = dir.join("admin.token");
    let kek = dir.join("keyward.kek");
    for p in [&cfg, &pepper, &token, &kek] {
        if p.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists; refusing to overwrite it",
                p.display()
            )));
        }
    }
    let pepper_text = keyward_core::Pepper::generate_text().map_err(|e| CliError::Io(e.to_string()))?;
    let token_text = keyward_core::secret::random_base62(43).map_err(|e| CliError::Io(e.to_string()))?;
    let io = |p: &Path, e: std::io::Error| CliError::Io(format!("cannot write {}: {e}", p.display()));
    write_secret_file(&pepper, pepper_text.expose()).map_err(|e| io(&pepper, e))?;
    write_secret_file(&token, &token_text).map_err(|e| io(&token, e))?;
    let (_, kek_text) = keyward_token::Kek::generate().map_err(|e| CliError::Io(e.to_string()))?;
    write_secret_file(&kek, &kek_text).map_err(|e| io(&kek, e))?;
    std::fs::write(&cfg, CONFIG_TEMPLATE).map_err(|e| io(&cfg, e))?;
    println!("wrote {} (configuration)", cfg.display());
    println!(
        "wrote {} (pepper, mode 0600: back it up; keys cannot be verified without it)",
        pepper.display()
    );
    println!("wrote {} (admin token, mode 0600)", token.display());
    println!(
        "wrote {} (key-encryption key of the token signing keys, mode 0600: back it up)",
        kek.display()
    );
    println!();
    println!("next:");
    println!("  keyward cat-facts --listen 127.0.0.1:9000 &   # the example upstream");
    println!("  keyward serve --config {}", cfg.display());
    println!("  export KEYWARD_ADMIN_TOKEN=$(cat {})", token.display());
    println!("  keyward app create cats && keyward key create --app cats --scope facts:read");
    Ok(())
}

async fn serve(cli: &Cli) -> Result<()> {
    let cfg = load_config(cli)?;
    let env = env_vars();
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
            Ok(n) => tracing::info!(routes = n, "configuration reloaded: new route table in force"),
            Err(e) => tracing::error!(error = %e, "configuration reload refused; the previous configuration stays"),
        },
        Err(e) => {
            running.reload_rejected();
            tracing::error!(error = %e, "configuration reload refused; the previous configuration stays");
        }
    }
}

async fn cat_facts(listen: std::net::SocketAddr) -> Result<()> {
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::startup(format!("cannot listen on {listen}: {e}")))?;
    let addr = l.local_addr().map_err(|e| CliError::Io(e.to_string()))?;
    tracing::info!(target: crate::LISTENING, listen = %addr, "cat-facts API on http://{addr}");
    crate::catfacts::serve(l, shutdown_signal())
        .await
        .map_err(|e| CliError::Io(e.to_string()))
}

/// The admin client from flags, environment and configuration.
pub(crate) fn admin_client(cli: &Cli) -> Result<AdminClient> {
    let env = env_vars();
    let cfg_path = config_path(cli);
    let cfg = Config::load(cfg_path.as_deref(), &env);
    let url = match (&cli.admin_url, &cfg) {
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

/// Checks `--scope` values locally (a clear error and exit status 2, no request).
fn check_scope_flags(scopes: &[String]) -> Result<()> {
    for scope in scopes {
        keyward_core::Scope::new(scope).map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
    }
    Ok(())
}

/// An expiry flag (`90d` or RFC 3339, in the future) as an RFC 3339 instant.
fn instant_flag(flag: &str, value: &str) -> Result<String> {
    let at = keyward_core::when::parse_expiry(value, time::OffsetDateTime::now_utc())
        .map_err(|e| CliError::Usage(format!("{flag}: {e}")))?;
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| CliError::Usage(format!("{flag}: {e}")))
}

/// Reads a secret from standard input: one line, trailing newline removed.
fn read_secret_stdin() -> Result<String> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("paste the secret, then press Enter and Ctrl-D:");
    }
    let mut buf = String::new();
    stdin
        .lock()
        .take(64 * 1024)
        .read_to_string(&mut buf)
        .map_err(|e| CliError::Usage(format!("cannot read the secret from standard input: {e}")))?;
    let secret = buf.trim().to_owned();
    if secret.is_empty() {
        return Err(CliError::Usage(
            "no secret on standard input (e.g. `keyward key import --app X < secret.txt`)".into(),
        ));
    }
    if secret.contains('\n') {
        return Err(CliError::Usage(
            "standard input holds more than one line; import one secret at a time".into(),
        ));
    }
    if !keyward_engine::admin::plausible_legacy(&secret) {
        return Err(CliError::Usage(format!(
            "a legacy secret is {} to {} visible ASCII characters",
            keyward_engine::admin::LEGACY_MIN_LEN,
            keyward_engine::admin::LEGACY_MAX_LEN
        )));
    }
    Ok(secret)
}

/// Checks limit flags locally (a clear error and exit status 2, no request) and adds them to
/// a request body.
fn limits_into(body: &mut Value, l: &LimitFlags, clear: Option<&ClearFlags>) -> Result<()> {
    use keyward_core::policy::{IpAllowlist, QuotaSpec, RateSpec};
    let usage = |flag: &str, e: keyward_core::CoreError| CliError::Usage(format!("{flag}: {e}"));
    if !l.ips.is_empty() {
        IpAllowlist::parse(&l.ips).map_err(|e| usage("--ip", e))?;
        body["ips"] = json!(l.ips);
    }
    if let Some(r) = &l.rate {
        RateSpec::parse(r, l.burst).map_err(|e| usage("--rate", e))?;
        body["rate"] = json!({"limit": r, "burst": l.burst});
    }
    if let Some(q) = &l.quota {
        QuotaSpec::parse(q).map_err(|e| usage("--quota", e))?;
        body["quota"] = json!(q);
    }
    if let Some(c) = clear {
        if c.no_ips {
            body["ips"] = json!([]);
        }
        if c.no_rate {
            body["rate"] = Value::Null;
        }
        if c.no_quota {
            body["quota"] = Value::Null;
        }
    }
    Ok(())
}

fn rules_into(body: &mut Value, r: &crate::cli::KeyRuleFlags, update: bool) -> Result<()> {
    match r.max_key_lifetime.as_deref() {
        None => {}
        Some("none") if update => body["max_key_lifetime"] = Value::Null,
        Some(d) => {
            keyward_core::when::parse_duration(d).map_err(|e| CliError::Usage(format!("--max-key-lifetime: {e}")))?;
            body["max_key_lifetime"] = json!(d);
        }
    }
    if r.require_expiry {
        body["require_expiry"] = json!(true);
    } else if r.no_require_expiry {
        body["require_expiry"] = json!(false);
    }
    if !r.allowed_kinds.is_empty() {
        body["allowed_kinds"] = json!(r.allowed_kinds);
    }
    Ok(())
}

fn mtls_into(body: &mut Value, m: &crate::cli::MtlsFlags) {
    if m.require_mtls {
        body["require_mtls"] = json!(true);
    } else if m.no_require_mtls {
        body["require_mtls"] = json!(false);
    }
}

fn policy_text(v: &Value) -> String {
    let p = v.get("policy").cloned().unwrap_or(Value::Null);
    let mut parts = Vec::new();
    if let Some(ips) = p.get("ips").and_then(Value::as_array) {
        let list: Vec<&str> = ips.iter().filter_map(Value::as_str).collect();
        parts.push(format!("ips {}", list.join(",")));
    }
    if let Some(r) = p.get("rate") {
        parts.push(format!("rate {} burst {}", s(r, "limit"), s(r, "burst")));
    }
    if let Some(q) = p.get("quota").and_then(Value::as_str) {
        parts.push(format!("quota {q}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn scopes(v: &Value) -> String {
    let list: Vec<String> = v
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(" ")
    }
}

fn items(v: &Value) -> Vec<Value> {
    v.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
}

async fn app(cli: &Cli, cmd: &AppCommand) -> Result<()> {
    let c = admin_client(cli)?;
    match cmd {
        AppCommand::Create {
            name,
            limits,
            mtls,
            rules,
            out,
        } => {
            let mut body = json!({"name": name});
            limits_into(&mut body, limits, None)?;
            mtls_into(&mut body, mtls);
            rules_into(&mut body, rules, false)?;
            let v = c.call(Method::POST, "/v1/apps", Some(body)).await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "created app {} ({}); limits: {}",
                    s(&v, "name"),
                    s(&v, "id"),
                    policy_text(&v)
                );
            }
        }
        AppCommand::Update {
            app,
            limits,
            mtls,
            rules,
            clear,
            out,
        } => {
            let mut body = json!({});
            limits_into(&mut body, limits, Some(clear))?;
            mtls_into(&mut body, mtls);
            rules_into(&mut body, rules, true)?;
            let v = c
                .call(Method::PATCH, &format!("/v1/apps/{}", seg(app)), Some(body))
                .await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "updated app {} ({}); limits: {}",
                    s(&v, "name"),
                    s(&v, "id"),
                    policy_text(&v)
                );
            }
        }
        AppCommand::List { out } => {
            let v = c.call(Method::GET, "/v1/apps", None).await?;
            if out.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|a| vec![s(a, "id"), s(a, "name"), s(a, "created_at")])
                    .collect();
                print_table(&["ID", "NAME", "CREATED"], &rows);
            }
        }
        AppCommand::Show { app, out } => {
            let v = c.call(Method::GET, &format!("/v1/apps/{}", seg(app)), None).await?;
            if out.json {
                print_json(&v);
            } else {
                for k in ["id", "name", "created_at"] {
                    println!("{k:<12} {}", s(&v, k));
                }
                println!("{:<12} {}", "limits", policy_text(&v));
            }
        }
    }
    Ok(())
}

fn print_key(v: &Value) {
    for k in ["id", "app_name", "app_id", "name", "hint", "env", "state"] {
        println!("{:<12} {}", k, s(v, k));
    }
    println!("{:<12} {}", "scopes", scopes(v));
    println!("{:<12} {}", "limits", policy_text(v));
    for k in [
        "expires_at",
        "created_at",
        "revoked_at",
        "disabled_at",
        "rotated_from",
        "rotated_to",
        "last_used_at",
    ] {
        println!("{:<12} {}", k, s(v, k));
    }
    if v.get("canary").and_then(Value::as_bool) == Some(true) {
        println!("{:<12} yes (any use raises a security event)", "canary");
    }
    if let Some(u) = v.get("usage_24h").and_then(Value::as_object) {
        let parts: Vec<String> = u
            .iter()
            .map(|(k, n)| format!("{k}={}", n.as_u64().unwrap_or(0)))
            .collect();
        println!(
            "{:<12} {}",
            "usage 24h",
            if parts.is_empty() { "-".into() } else { parts.join(" ") }
        );
    }
}

async fn key(cli: &Cli, cmd: &KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Create {
            app,
            name,
            scopes: sc,
            expires,
            env,
            canary,
            exchange_only,
            publishable,
            origins,
            limits,
            mtls,
            out,
        } => {
            // Check what can be checked locally first: no request for a bad flag.
            check_scope_flags(sc)?;
            for o in origins {
                keyward_core::policy::Origin::parse(o).map_err(|e| CliError::Usage(format!("--origin: {e}")))?;
            }
            let mut body =
                json!({"app": app, "scopes": sc, "env": env, "canary": canary, "exchange_only": exchange_only});
            if *publishable {
                body["kind"] = json!("publishable");
                body["origins"] = json!(origins);
            }
            limits_into(&mut body, limits, None)?;
            mtls_into(&mut body, mtls);
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(x) = expires {
                let now = time::OffsetDateTime::now_utc();
                let at =
                    keyward_core::when::parse_expiry(x, now).map_err(|e| CliError::Usage(format!("--expires: {e}")))?;
                let at = at
                    .format(&time::format_description::well_known::Rfc3339)
                    .map_err(|e| CliError::Usage(format!("--expires: {e}")))?;
                body["expires_at"] = json!(at);
            }
            let c = admin_client(cli)?;
            let v = c.call(Method::POST, "/v1/keys", Some(body)).await?;
            if out.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                println!(
                    "created key {} for app {} (scopes: {}; expires: {})",
                    s(&v, "id"),
                    s(&v, "app_name"),
                    scopes(&v),
                    match s(&v, "expires_at").as_str() {
                        "-" => "never".into(),
                        other => other.to_owned(),
                    }
                );
                println!();
                println!("    {}", s(&v, "key"));
                println!();
                println!("Store it now: keyward keeps only a digest and will never show it again.");
            }
        }
        KeyCommand::Update {
            id,
            scopes: sc,
            no_scopes,
            limits,
            mtls,
            clear,
            out,
        } => {
            check_scope_flags(sc)?;
            let mut body = json!({});
            if !sc.is_empty() || *no_scopes {
                body["scopes"] = json!(sc);
            }
            limits_into(&mut body, limits, Some(clear))?;
            mtls_into(&mut body, mtls);
            let c = admin_client(cli)?;
            let v = c
                .call(Method::PATCH, &format!("/v1/keys/{}", seg(id)), Some(body))
                .await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "updated key {} (scopes: {}; limits: {})",
                    s(&v, "id"),
                    scopes(&v),
                    policy_text(&v)
                );
            }
        }
        KeyCommand::Import {
            app,
            name,
            scopes: sc,
            sunset,
            limits,
            out,
        } => {
            check_scope_flags(sc)?;
            let mut body = json!({"app": app, "scopes": sc});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if sunset == "never" {
                body["expires_in"] = json!("never");
            } else {
                let at = instant_flag("--sunset", sunset)?;
                body["expires_at"] = json!(at);
            }
            limits_into(&mut body, limits, None)?;
            let secret = read_secret_stdin()?;
            body["secret"] = json!(secret);
            let c = admin_client(cli)?;
            let v = c.call(Method::POST, "/v1/keys/import", Some(body)).await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "imported legacy key {} for app {} (hint {}; sunset: {})",
                    s(&v, "id"),
                    s(&v, "app_name"),
                    s(&v, "hint"),
                    s(&v, "expires_at")
                );
                println!("Its responses now carry Deprecation and Sunset headers; issue real keys and rotate clients off it.");
            }
        }
        KeyCommand::List { app, out } => {
            let c = admin_client(cli)?;
            let path = match app {
                Some(a) => format!("/v1/keys?app={}", seg(a)),
                None => "/v1/keys".into(),
            };
            let v = c.call(Method::GET, &path, None).await?;
            if out.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|k| {
                        vec![
                            s(k, "id"),
                            s(k, "app_name"),
                            s(k, "name"),
                            s(k, "hint"),
                            scopes(k),
                            s(k, "state"),
                            s(k, "expires_at"),
                        ]
                    })
                    .collect();
                print_table(&["ID", "APP", "NAME", "HINT", "SCOPES", "STATE", "EXPIRES"], &rows);
            }
        }
        KeyCommand::Show { id, out } => {
            let c = admin_client(cli)?;
            let v = c.call(Method::GET, &format!("/v1/keys/{}", seg(id)), None).await?;
            if out.json {
                print_json(&v);
            } else {
                print_key(&v);
            }
        }
        KeyCommand::Revoke { id, reason, out } => {
            let c = admin_client(cli)?;
            let body = reason.as_ref().map(|r| json!({"reason": r}));
            let v = c
                .call(Method::POST, &format!("/v1/keys/{}/revoke", seg(id)), body)
                .await?;
            if out.json {
                print_json(&v);
            } else {
                println!("revoked key {} at {}", s(&v, "id"), s(&v, "revoked_at"));
            }
        }
        KeyCommand::Disable { id, out } | KeyCommand::Enable { id, out } => {
            let verb = if matches!(cmd, KeyCommand::Disable { .. }) {
                "disable"
            } else {
                "enable"
            };
            let c = admin_client(cli)?;
            let v = c
                .call(Method::POST, &format!("/v1/keys/{}/{verb}", seg(id)), None)
                .await?;
            if out.json {
                print_json(&v);
            } else {
                println!("{verb}d key {} (state: {})", s(&v, "id"), s(&v, "state"));
            }
        }
        KeyCommand::Rotate {
            id,
            grace,
            expires,
            no_expiry,
            out,
        } => {
            let g = grace.trim();
            if g.starts_with('-') {
                return Err(CliError::Usage("--grace: the grace period cannot be negative".into()));
            }
            let zero = g.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0";
            if !zero {
                keyward_core::when::parse_duration(g).map_err(|e| CliError::Usage(format!("--grace: {e}")))?;
            }
            let mut body = json!({"grace": g, "no_expiry": no_expiry});
            if let Some(x) = expires {
                let at = instant_flag("--expires", x)?;
                body["expires_at"] = json!(at);
            }
            let c = admin_client(cli)?;
            let v = c
                .call(Method::POST, &format!("/v1/keys/{}/rotate", seg(id)), Some(body))
                .await?;
            if out.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                let prev = v.get("previous").cloned().unwrap_or(Value::Null);
                println!(
                    "rotated {} → {} (the old key works until {}; the new one expires: {})",
                    s(&prev, "id"),
                    s(&v, "id"),
                    s(&prev, "expires_at"),
                    match s(&v, "expires_at").as_str() {
                        "-" => "never".into(),
                        other => other.to_owned(),
                    }
                );
                println!();
                println!("    {}", s(&v, "key"));
                println!();
                println!("Store it now: keyward keeps only a digest and will never show it again.");
            }
        }
    }
    Ok(())
}

fn print_client(v: &Value) {
    for k in [
        "client_id",
        "app_name",
        "app_id",
        "name",
        "auth_method",
        "state",
        "token_ttl",
        "created_at",
        "disabled_at",
    ] {
        println!("{k:<12} {}", s(v, k));
    }
    println!("{:<12} {}", "scopes", scopes(v));
    println!("{:<12} {}", "limits", policy_text(v));
    if let Some(secrets) = v.get("secrets").and_then(Value::as_array) {
        for sec in secrets {
            println!(
                "{:<12} {} (expires: {})",
                "secret",
                s(sec, "hint"),
                s(sec, "expires_at")
            );
        }
    }
}

/// A JWK Set holding the public key of a PEM certificate, with the certificate as `x5c`
/// (RFC 8705 §2.2: self-signed client certificates are registered in the client's JWKS).
fn jwks_of_certificate(f: &std::path::Path) -> Result<Value> {
    use base64::Engine as _;
    use rustls_pki_types::pem::PemObject;
    let bad = |m: String| CliError::Usage(format!("--cert-file {}: {m}", f.display()));
    let der = rustls_pki_types::CertificateDer::from_pem_file(f).map_err(|e| bad(e.to_string()))?;
    let cert = keyward_token::ClientCert::parse(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let jwk = cert
        .public_key
        .ok_or_else(|| bad("the certificate's key type is not one JOSE knows (EC, Ed25519, RSA)".into()))?;
    let mut jwk = serde_json::to_value(jwk).map_err(|e| bad(e.to_string()))?;
    jwk["x5c"] = json!([base64::engine::general_purpose::STANDARD.encode(der.as_ref())]);
    Ok(json!({"keys": [jwk]}))
}

async fn client(cli: &Cli, cmd: &ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Create {
            app,
            name,
            scopes: sc,
            auth,
            jwks_file,
            cert_file,
            tls_subject_dn,
            tls_san_dns,
            tls_san_uri,
            tls_san_ip,
            tls_san_email,
            token_ttl,
            dpop_bound,
            limits,
            out,
        } => {
            check_scope_flags(sc)?;
            let mut body = json!({"app": app, "scopes": sc, "auth_method": auth, "token_ttl": token_ttl,
                                  "dpop_bound_access_tokens": dpop_bound});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let keyed = matches!(auth.as_str(), "private_key_jwt" | "self_signed_tls_client_auth");
            match (keyed, jwks_file, cert_file) {
                (true, Some(f), _) => {
                    let text = std::fs::read_to_string(f)
                        .map_err(|e| CliError::Usage(format!("--jwks-file {}: {e}", f.display())))?;
                    let jwks: Value = serde_json::from_str(&text)
                        .map_err(|e| CliError::Usage(format!("--jwks-file {}: not JSON: {e}", f.display())))?;
                    keyward_engine::oauth::validate_jwks(&jwks)
                        .map_err(|e| CliError::Usage(format!("--jwks-file: {e}")))?;
                    body["jwks"] = jwks;
                }
                (true, None, Some(f)) if auth == "self_signed_tls_client_auth" => {
                    body["jwks"] = jwks_of_certificate(f)?;
                }
                (true, None, _) => {
                    return Err(CliError::Usage(format!(
                        "--auth {auth} needs --jwks-file{}",
                        if auth == "self_signed_tls_client_auth" {
                            " or --cert-file"
                        } else {
                            ""
                        }
                    )));
                }
                (false, Some(_), _) | (false, _, Some(_)) => {
                    return Err(CliError::Usage(
                        "--jwks-file goes with --auth private_key_jwt or self_signed_tls_client_auth, \
                         --cert-file with self_signed_tls_client_auth"
                            .into(),
                    ))
                }
                (false, None, None) => {}
            }
            let names = [
                ("tls_client_auth_subject_dn", tls_subject_dn),
                ("tls_client_auth_san_dns", tls_san_dns),
                ("tls_client_auth_san_uri", tls_san_uri),
                ("tls_client_auth_san_ip", tls_san_ip),
                ("tls_client_auth_san_email", tls_san_email),
            ];
            let given: Vec<_> = names.iter().filter_map(|(k, v)| v.as_ref().map(|v| (*k, v))).collect();
            match (auth.as_str(), given.as_slice()) {
                ("tls_client_auth", [(k, v)]) => body[*k] = json!(v),
                ("tls_client_auth", _) => {
                    return Err(CliError::Usage(
                        "--auth tls_client_auth needs one of --tls-subject-dn, --tls-san-dns, --tls-san-uri, \
                         --tls-san-ip, --tls-san-email"
                            .into(),
                    ))
                }
                (_, []) => {}
                (_, _) => {
                    return Err(CliError::Usage(
                        "--tls-subject-dn and --tls-san-* go with --auth tls_client_auth".into(),
                    ))
                }
            }
            limits_into(&mut body, limits, None)?;
            let c = admin_client(cli)?;
            let v = c.call(Method::POST, "/v1/clients", Some(body)).await?;
            if out.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                println!(
                    "created client {} for app {} ({})",
                    s(&v, "client_id"),
                    s(&v, "app_name"),
                    s(&v, "auth_method")
                );
                if let Some(secret) = v.get("client_secret").and_then(Value::as_str) {
                    println!();
                    println!("    client_id:     {}", s(&v, "client_id"));
                    println!("    client_secret: {secret}");
                    println!();
                    println!("Store the secret now: keyward keeps only a digest and will never show it again.");
                }
            }
        }
        ClientCommand::List { app, out } => {
            let c = admin_client(cli)?;
            let path = match app {
                Some(a) => format!("/v1/clients?app={}", seg(a)),
                None => "/v1/clients".into(),
            };
            let v = c.call(Method::GET, &path, None).await?;
            if out.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|k| {
                        vec![
                            s(k, "client_id"),
                            s(k, "app_name"),
                            s(k, "name"),
                            s(k, "auth_method"),
                            scopes(k),
                            s(k, "state"),
                        ]
                    })
                    .collect();
                print_table(&["CLIENT_ID", "APP", "NAME", "AUTH", "SCOPES", "STATE"], &rows);
            }
        }
        ClientCommand::Show { id, out } | ClientCommand::Disable { id, out } | ClientCommand::Enable { id, out } => {
            let c = admin_client(cli)?;
            let (method, path) = match cmd {
                ClientCommand::Disable { .. } => (Method::POST, format!("/v1/clients/{}/disable", seg(id))),
                ClientCommand::Enable { .. } => (Method::POST, format!("/v1/clients/{}/enable", seg(id))),
                _ => (Method::GET, format!("/v1/clients/{}", seg(id))),
            };
            let v = c.call(method, &path, None).await?;
            if out.json {
                print_json(&v);
            } else {
                print_client(&v);
            }
        }
        ClientCommand::Delete { id } => {
            let c = admin_client(cli)?;
            c.call(Method::DELETE, &format!("/v1/clients/{}", seg(id)), None)
                .await?;
            println!("deleted client {id}");
        }
        ClientCommand::RotateSecret { id, grace, out } => {
            let g = grace.trim();
            if g.starts_with('-') {
                return Err(CliError::Usage("--grace: the grace period cannot be negative".into()));
            }
            let c = admin_client(cli)?;
            let v = c
                .call(
                    Method::POST,
                    &format!("/v1/clients/{}/rotate-secret", seg(id)),
                    Some(json!({"grace": g})),
                )
                .await?;
            if out.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                println!(
                    "new secret for client {} (the previous one keeps working for {g}):",
                    s(&v, "client_id")
                );
                println!();
                println!("    client_secret: {}", s(&v, "client_secret"));
                println!();
                println!("Store it now: keyward keeps only a digest and will never show it again.");
            }
        }
    }
    Ok(())
}

async fn signing_key(cli: &Cli, cmd: &SigningKeyCommand) -> Result<()> {
    let c = admin_client(cli)?;
    match cmd {
        SigningKeyCommand::List { out } => {
            let v = c.call(Method::GET, "/v1/signing-keys", None).await?;
            if out.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|k| {
                        vec![
                            s(k, "kid"),
                            s(k, "alg"),
                            s(k, "state"),
                            s(k, "active_at"),
                            s(k, "remove_after"),
                        ]
                    })
                    .collect();
                print_table(&["KID", "ALG", "STATE", "SIGNS FROM", "LEAVES JWKS"], &rows);
            }
        }
        SigningKeyCommand::Rotate { alg, out } => {
            let body = alg.as_ref().map(|a| json!({"alg": a}));
            let v = c.call(Method::POST, "/v1/signing-keys/rotate", body).await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "new signing key {} ({}), published now, signing from {}",
                    s(&v, "kid"),
                    s(&v, "alg"),
                    s(&v, "active_at")
                );
            }
        }
        SigningKeyCommand::Retire { kid } => {
            c.call(Method::POST, &format!("/v1/signing-keys/{}/retire", seg(kid)), None)
                .await?;
            println!("retired signing key {kid}; it stays in the JWKS until its last token has expired");
        }
    }
    Ok(())
}

async fn admin_token(cli: &Cli, cmd: &AdminTokenCommand) -> Result<()> {
    let c = admin_client(cli)?;
    match cmd {
        AdminTokenCommand::Create {
            name,
            role,
            expires,
            out,
        } => {
            let mut body = json!({"name": name, "role": role});
            if let Some(e) = expires {
                body["expires_in"] = json!(e);
            }
            let v = c.call(Method::POST, "/v1/admin-tokens", Some(body)).await?;
            if out.json {
                print_json(&v);
            } else {
                println!("{}", s(&v, "token"));
                eprintln!(
                    "admin token {} ({}, role {}): shown once, store it now",
                    s(&v, "id"),
                    s(&v, "name"),
                    s(&v, "role")
                );
            }
        }
        AdminTokenCommand::List { out } => {
            let v = c.call(Method::GET, "/v1/admin-tokens", None).await?;
            if out.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|t| {
                        vec![
                            s(t, "id"),
                            s(t, "name"),
                            s(t, "role"),
                            s(t, "hint"),
                            s(t, "state"),
                            s(t, "expires_at"),
                        ]
                    })
                    .collect();
                print_table(&["ID", "NAME", "ROLE", "HINT", "STATE", "EXPIRES"], &rows);
            }
        }
        AdminTokenCommand::Revoke { id } => {
            let v = c
                .call(Method::POST, &format!("/v1/admin-tokens/{}/revoke", seg(id)), None)
                .await?;
            println!("revoked admin token {} ({})", s(&v, "id"), s(&v, "name"));
        }
    }
    Ok(())
}
