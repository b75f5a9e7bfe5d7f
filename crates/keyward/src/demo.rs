//! `keyward demo`: the whole product on loopback, on a temporary SQLite store.

use std::net::SocketAddr;
use std::sync::Arc;

use keyward_core::{KeyEnv, Pepper, Scope};
use keyward_engine::{NewKey, SystemClock};
use serde_json::json;
use tokio::net::TcpListener;

use crate::commands::shutdown_signal;
use crate::config::{Config, RouteSection};
use crate::error::{CliError, Result};
use crate::server::{start_on, Secrets};

fn io(e: impl std::fmt::Display) -> CliError {
    CliError::startup(e.to_string())
}

/// The demo's route table in front of the cat-facts upstream at `upstream`.
pub fn demo_routes(upstream: &str) -> Vec<RouteSection> {
    let r = |name: &str, prefix: &str, method: &str, scope: &str| RouteSection {
        name: name.into(),
        path_prefix: prefix.into(),
        methods: vec![method.into()],
        upstream: upstream.into(),
        scopes: vec![scope.into()],
        scope_mode: Default::default(),
        rate: None,
        burst: None,
        rate_by: Default::default(),
        cost: None,
        tokens: true,
        api_keys: true,
        client_certificates: false,
        audience: None,
        on_limiter_failure: None,
        ..Default::default()
    };
    vec![
        r("fact", "/fact", "GET", "facts:read"),
        r("facts-read", "/facts", "GET", "facts:read"),
        r("facts-write", "/facts", "POST", "facts:write"),
    ]
}

async fn bind_gateway(listen: Option<SocketAddr>) -> Result<TcpListener> {
    match listen {
        Some(a) => TcpListener::bind(a)
            .await
            .map_err(|e| CliError::startup(format!("cannot listen on {a}: {e}"))),
        None => match TcpListener::bind(("127.0.0.1", 8080)).await {
            Ok(l) => Ok(l),
            Err(_) => {
                eprintln!("note: 127.0.0.1:8080 is busy; the gateway takes a free port (use --listen to choose)");
                TcpListener::bind(("127.0.0.1", 0)).await.map_err(io)
            }
        },
    }
}

pub async fn run(listen: Option<SocketAddr>, json_out: bool) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("keyward-demo-").tempdir().map_err(io)?;
    let upstream = TcpListener::bind(("127.0.0.1", 0)).await.map_err(io)?;
    let upstream_addr = upstream.local_addr().map_err(io)?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let upstream_task = tokio::spawn(crate::catfacts::serve(upstream, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let gateway = bind_gateway(listen).await?;
    let admin = TcpListener::bind(("127.0.0.1", 0)).await.map_err(io)?;
    let mut cfg = Config::default();
    cfg.store.url = dir.path().join("keyward.db").display().to_string();
    cfg.routes = demo_routes(&format!("http://{upstream_addr}"));
    cfg.oauth.enabled = true;
    cfg.oauth.issuer = Some(format!("http://{}", gateway.local_addr().map_err(io)?));
    let pepper_text = Pepper::generate_text().map_err(io)?;
    let admin_token = keyward_core::secret::random_base62(43).map_err(io)?;
    let secrets = Secrets {
        pepper: Pepper::from_text(pepper_text.expose()).map_err(io)?,
        admin_token: keyward_core::secret::SecretString::new(admin_token.clone()),
        kek: Some(keyward_token::Kek::generate().map_err(io)?.0),
        verify_token: None,
    };
    let running = start_on(&cfg, secrets, gateway, admin, Arc::new(SystemClock)).await?;

    let engine = running.engine.clone();
    let app = engine
        .create_app("demo", "cat-facts-demo", Default::default())
        .await
        .map_err(io)?;
    let scope = |s: &str| Scope::new(s).map_err(io);
    let (_, read) = engine
        .create_key(
            "demo",
            NewKey {
                app: app.id.clone(),
                name: Some("read-only".into()),
                scopes: vec![scope("facts:read")?],
                expires_at: None,
                env: KeyEnv::Test,
                policy: Default::default(),
                canary: false,
                exchange_only: false,
                kind: Default::default(),
            },
        )
        .await
        .map_err(io)?;
    let (_, write) = engine
        .create_key(
            "demo",
            NewKey {
                app: app.id.clone(),
                name: Some("read-write".into()),
                scopes: vec![scope("facts:read")?, scope("facts:write")?],
                expires_at: None,
                env: KeyEnv::Test,
                policy: Default::default(),
                canary: false,
                exchange_only: false,
                kind: Default::default(),
            },
        )
        .await
        .map_err(io)?;

    let gw = format!("http://{}", running.gateway);
    let admin_url = format!("http://{}", running.admin);
    if json_out {
        let line = json!({
            "gateway": gw,
            "admin": admin_url,
            "admin_token": admin_token,
            "keys": {"read": read.expose(), "write": write.expose()},
        });
        println!("{line}");
    } else {
        let wrong = engine.format().generate(KeyEnv::Test).map_err(io)?;
        println!("keyward demo is running (store: {}, temporary)", dir.path().display());
        println!();
        println!("  gateway    {gw}");
        println!("  admin API  {admin_url}   (token: {admin_token})");
        println!("  upstream   http://{upstream_addr}   (the cat-facts API, reachable only through the gateway in real life)");
        println!();
        println!("Try it:");
        println!();
        println!("  # no key: 401");
        println!("  curl -i {gw}/fact");
        println!("  # a wrong key: 401");
        println!("  curl -i -H 'x-api-key: {}' {gw}/fact", wrong.expose());
        println!("  # the read key: 200 and a fact");
        println!("  curl -i -H 'x-api-key: {}' {gw}/fact", read.expose());
        println!("  # the read key cannot write: 403");
        println!(
            "  curl -i -H 'x-api-key: {}' -H 'content-type: application/json' -d '{{\"fact\":\"Cats purr at 25 Hz.\"}}' {gw}/facts",
            read.expose()
        );
        println!("  # the write key can: 201");
        println!(
            "  curl -i -H 'x-api-key: {}' -H 'content-type: application/json' -d '{{\"fact\":\"Cats purr at 25 Hz.\"}}' {gw}/facts",
            write.expose()
        );
        println!();
        // The way past static keys: a client that trades its credentials for a 5-minute token.
        let (client, secret) = engine
            .create_client(
                "demo",
                keyward_engine::oauth::NewClient {
                    app: app.id.clone(),
                    name: Some("batch-job".into()),
                    scopes: vec![scope("facts:read")?],
                    auth_method: keyward_core::model::ClientAuthMethod::ClientSecretBasic,
                    jwks: None,
                    token_ttl: keyward_engine::oauth::DEFAULT_TOKEN_TTL,
                    dpop_bound_access_tokens: false,
                    tls_subject: None,
                    policy: Default::default(),
                },
            )
            .await
            .map_err(io)?;
        let secret = secret.map(|s| s.expose().to_owned()).unwrap_or_default();
        println!("Short-lived tokens instead of a static key (OAuth 2.0 client credentials):");
        println!();
        println!("  curl -s {gw}/.well-known/oauth-authorization-server");
        println!(
            "  TOKEN=$(curl -s -u '{}:{secret}' -d grant_type=client_credentials {gw}/oauth/token | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')",
            client.id
        );
        println!("  curl -i -H \"Authorization: Bearer $TOKEN\" {gw}/fact");
        println!("  # or trade the read key for a token (RFC 8693 token exchange):");
        println!(
            "  curl -s -d grant_type={} -d subject_token_type={} -d subject_token={} {gw}/oauth/token",
            keyward_engine::token::TOKEN_EXCHANGE,
            keyward_engine::token::API_KEY_TOKEN_TYPE,
            read.expose()
        );
        println!();
        println!("Manage it:");
        println!();
        println!("  export KEYWARD_ADMIN_URL={admin_url} KEYWARD_ADMIN_TOKEN={admin_token}");
        println!("  keyward key list");
        println!("  keyward key revoke <id>      # the next request with that key gets 401");
        println!();
        println!("Press Ctrl-C to stop; the temporary store is deleted.");
    }
    shutdown_signal().await;
    running.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = upstream_task.await;
    drop(dir);
    Ok(())
}
