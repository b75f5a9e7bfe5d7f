//! `keyward demo`: the whole product on loopback, on a temporary SQLite store, plus the
//! cat-facts web page on its own origin ([`site`]): a publishable key bound to that origin,
//! and the backend-for-frontend that trades a server-held key for short-lived tokens.

pub mod site;

use std::net::SocketAddr;
use std::sync::Arc;

use keyward_core::{KeyEnv, Pepper, Scope};
use keyward_engine::{NewKey, SystemClock};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{Config, CorsSection, RouteSection};
use crate::error::{CliError, Result};
use crate::server::{start_on, Secrets};
use crate::support::shutdown_signal;

fn io(e: impl std::fmt::Display) -> CliError {
    CliError::startup(e.to_string())
}

/// The demo's route table in front of the cat-facts upstream at `upstream`; `GET /fact` is
/// public-safe (publishable keys) and callable from the pages of `site_origins` (CORS, with
/// `x-api-key` or `Authorization: Bearer <token>`).
pub fn demo_routes(upstream: &str, site_origins: &[String]) -> Vec<RouteSection> {
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
    let mut fact = r("fact", "/fact", "GET", "facts:read");
    if !site_origins.is_empty() {
        fact.publishable = true;
        fact.cors = Some(CorsSection {
            allowed_origins: site_origins.to_vec(),
            allowed_methods: vec!["GET".into()],
            allowed_headers: vec!["x-api-key".into(), "authorization".into()],
            ..Default::default()
        });
    }
    vec![
        fact,
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
    // The cat-facts web site and a foreign site, each on its own origin.
    let site_listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(io)?;
    let foreign_listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(io)?;
    let site_origin = format!("http://{}", site_listener.local_addr().map_err(io)?);
    let foreign_origin = format!("http://{}", foreign_listener.local_addr().map_err(io)?);
    let mut cfg = Config::default();
    cfg.store.url = dir.path().join("keyward.db").display().to_string();
    cfg.routes = demo_routes(&format!("http://{upstream_addr}"), std::slice::from_ref(&site_origin));
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

    // The web page's keys: a publishable key bound to the site's origin (it sits in the page),
    // and the site backend's secret key, good only for token exchange (it stays in the backend).
    let web = engine
        .create_app("demo", "cat-facts-web", Default::default())
        .await
        .map_err(io)?;
    let (_, publishable) = engine
        .create_key(
            "demo",
            NewKey {
                app: web.id.clone(),
                name: Some("web-page".into()),
                scopes: vec![scope("facts:read")?],
                expires_at: None,
                env: KeyEnv::Test,
                policy: keyward_core::policy::Policy {
                    origins: vec![keyward_core::policy::Origin::parse(&site_origin).map_err(io)?],
                    ..Default::default()
                },
                canary: false,
                exchange_only: false,
                kind: keyward_core::KeyKind::Publishable,
            },
        )
        .await
        .map_err(io)?;
    let (_, backend_key) = engine
        .create_key(
            "demo",
            NewKey {
                app: web.id.clone(),
                name: Some("web-backend".into()),
                scopes: vec![scope(site::BFF_SCOPE)?],
                expires_at: None,
                env: KeyEnv::Test,
                policy: Default::default(),
                canary: false,
                exchange_only: true,
                kind: Default::default(),
            },
        )
        .await
        .map_err(io)?;

    let gw = format!("http://{}", running.gateway);
    let admin_url = format!("http://{}", running.admin);
    let site_cfg = Arc::new(site::SiteConfig {
        gateway: gw.clone(),
        token_url: format!("{gw}/oauth/token"),
        publishable_key: publishable.expose().to_owned(),
        exchange_key: keyward_core::secret::SecretString::new(backend_key.expose().to_owned()),
        site_origin: site_origin.clone(),
    });
    drop(backend_key);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let site_task = tokio::spawn(site::serve(
        site_listener,
        site::site_router(site_cfg.clone()),
        stopped(stop_tx.subscribe()),
    ));
    let foreign_task = tokio::spawn(site::serve(
        foreign_listener,
        site::foreign_router(site_cfg),
        stopped(stop_tx.subscribe()),
    ));
    if json_out {
        let line = json!({
            "gateway": gw,
            "admin": admin_url,
            "admin_token": admin_token,
            "keys": {"read": read.expose(), "write": write.expose(), "publishable": publishable.expose()},
            "site": format!("{site_origin}/"),
            "foreign_site": format!("{foreign_origin}/"),
        });
        println!("{line}");
    } else {
        let wrong = engine.format().generate(KeyEnv::Test).map_err(io)?;
        println!("keyward demo is running (store: {}, temporary)", dir.path().display());
        println!();
        println!("  gateway    {gw}");
        println!("  admin API  {admin_url}   (token: {admin_token})");
        println!("  console    {admin_url}/console/   (open it in a browser; sign in with the admin token above)");
        println!("  upstream   http://{upstream_addr}   (the cat-facts API, reachable only through the gateway in real life)");
        println!("  web page   {site_origin}/   (open it in a browser: a publishable key, and short-lived tokens from its backend)");
        println!(
            "  foreign    {foreign_origin}/   (another origin with a copy of the page's publishable key: refused)"
        );
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
        println!("The web page's publishable key works only from its origin (docs/FRONTEND.md):");
        println!();
        println!("  # from the page's origin: 200");
        println!(
            "  curl -i -H 'x-api-key: {}' -H 'Origin: {site_origin}' {gw}/fact",
            publishable.expose()
        );
        println!("  # from any other origin, or without one: 403 origin_not_allowed");
        println!(
            "  curl -i -H 'x-api-key: {}' -H 'Origin: {foreign_origin}' {gw}/fact",
            publishable.expose()
        );
        println!();
        println!("Manage it:");
        println!();
        println!("  export KEYWARD_ADMIN_URL={admin_url} KEYWARD_ADMIN_TOKEN={admin_token}");
        println!("  keyward key list");
        println!("  keyward key revoke <id>      # the next request with that key gets 401");
        println!();
        println!("  # or in a browser: {admin_url}/console/ (sign in with the KEYWARD_ADMIN_TOKEN above)");
        println!();
        println!("Press Ctrl-C to stop; the temporary store is deleted.");
    }
    shutdown_signal().await;
    running.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = upstream_task.await;
    let _ = site_task.await;
    let _ = foreign_task.await;
    drop(dir);
    Ok(())
}
