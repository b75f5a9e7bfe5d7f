//! Wiring: store, engine, gateway and admin listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use keyward_core::secret::SecretString;
use keyward_core::Pepper;
use keyward_edge::{admin_router, gateway_router, AdminState, AdminToken, GatewayState};
use keyward_engine::{Clock, Engine, SystemClock};
use keyward_store::{SqliteStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::error::{CliError, Result};

/// The secrets a server needs, read from the environment or 0600 files.
pub struct Secrets {
    pub pepper: Pepper,
    pub admin_token: SecretString,
    /// The key-encryption key of the token signing keys; `Some` turns the token service on.
    pub kek: Option<keyward_token::Kek>,
    /// The verify API's service token (`KEYWARD_VERIFY_TOKEN` or `verify.token_file`); `None`
    /// turns `POST /v1/verify` off.
    pub verify_token: Option<SecretString>,
}

/// A running keyward: its bound addresses and a way to stop it.
pub struct Running {
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    /// The dedicated verify / forward-auth listener (`verify.listen`), if any.
    pub verify: Option<SocketAddr>,
    /// The Envoy `ext_authz` gRPC listener (`verify.grpc_listen`), if any.
    pub verify_grpc: Option<SocketAddr>,
    /// The dedicated metrics listener (`metrics.listen`), if any.
    pub metrics: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    pub gateway_state: Arc<GatewayState>,
    /// Stops the listeners (they drain their in-flight requests).
    shutdown: watch::Sender<bool>,
    /// Stops the background tasks (the last usage flush), once the listeners are done.
    stop_background: watch::Sender<bool>,
    listeners: JoinSet<std::io::Result<()>>,
    background: JoinSet<std::io::Result<()>>,
    shutdown_timeout: std::time::Duration,
    /// The configuration the process started with (as JSON values): what a reload compares a
    /// new file with to name the settings it cannot apply.
    started: serde_json::Value,
}

/// What a reload applied, and the settings it could not apply without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub routes: usize,
    /// `[[upstreams]]` groups.
    pub upstream_groups: usize,
    /// Dotted paths (`gateway.listen`, `store.url`, `routes` never) of the settings that differ
    /// from the running configuration and need a restart.
    pub not_applied: Vec<String>,
}

/// Settings a reload applies: the routes, the upstream groups and the gateway-wide upstream
/// timeouts (installed with the new route table).
const APPLIED_ON_RELOAD: &[&str] = &[
    "routes",
    "upstreams",
    "gateway.upstream_timeout",
    "gateway.connect_timeout",
];

/// The dotted paths of the settings that differ between two configurations (tables compared
/// key by key, anything else as a whole), leaving out what a reload applies.
pub fn not_applied(running: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, a: Option<&serde_json::Value>, b: Option<&serde_json::Value>, out: &mut Vec<String>) {
        if APPLIED_ON_RELOAD.contains(&path) {
            return;
        }
        match (a, b) {
            // A duration (`{"secs", "nanos"}`) is one setting.
            (Some(serde_json::Value::Object(x)), Some(serde_json::Value::Object(y)))
                if !is_duration(x) && !is_duration(y) =>
            {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&sub, x.get(k), y.get(k), out);
                }
            }
            (a, b) if a == b => {}
            _ => out.push(path.to_owned()),
        }
    }
    fn is_duration(m: &serde_json::Map<String, serde_json::Value>) -> bool {
        m.len() == 2 && m.contains_key("secs") && m.contains_key("nanos")
    }
    let mut out = Vec::new();
    walk("", Some(running), Some(new), &mut out);
    out
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (for at most `server.shutdown_timeout`;
    /// then it stops waiting for them), then stops the background tasks, which flush the usage
    /// counters one last time.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let listeners = &mut self.listeners;
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while let Some(r) = listeners.join_next().await {
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "listener ended with an error");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                timeout = ?self.shutdown_timeout,
                "server.shutdown_timeout reached with requests still in flight: not waiting for them"
            );
            self.listeners.abort_all();
            while self.listeners.join_next().await.is_some() {}
        }
        let _ = self.stop_background.send(true);
        while let Some(r) = self.background.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "background task ended with an error");
            }
        }
        tracing::info!("stopped");
    }

    /// Applies a new configuration's routes (and so their limits), upstream groups and
    /// `gateway.upstream_timeout` / `gateway.connect_timeout` to the running gateway. The
    /// configuration must have been loaded and validated (`Config::load`); nothing else of it
    /// is applied (listeners, store, secrets, Redis… need a restart): the settings that differ
    /// from the running ones are named in [`Reloaded::not_applied`].
    pub fn reload(&self, cfg: &Config) -> Result<Reloaded> {
        match cfg.gateway_config() {
            Ok(gw) => {
                let routes = gw.routes.len();
                let upstream_groups = gw.upstreams.len();
                if let Err(e) =
                    self.gateway_state
                        .replace_table(gw.routes, &gw.upstreams, gw.connect_timeout, gw.upstream_timeout)
                {
                    self.gateway_state.metrics().reload("rejected");
                    return Err(CliError::startup(e));
                }
                self.gateway_state.metrics().reload("applied");
                let new = serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null);
                Ok(Reloaded {
                    routes,
                    upstream_groups,
                    not_applied: not_applied(&self.started, &new),
                })
            }
            Err(e) => {
                self.gateway_state.metrics().reload("rejected");
                Err(e.into())
            }
        }
    }

    /// Counts a reload refused before it reached [`Running::reload`] (a file that does not load).
    pub fn reload_rejected(&self) {
        self.gateway_state.metrics().reload("rejected");
    }
}

/// Opens (and migrates) the store named by `store.url`: `postgres://…` (cluster mode),
/// `sqlite://PATH`, `sqlite:PATH` or a plain file path.
pub async fn open_store(section: &crate::config::StoreSection) -> Result<Arc<dyn Store>> {
    let url = section.url.as_str();
    if section.is_postgres() {
        let store = keyward_store::PgStore::open(url, section.pg_options())
            .await
            .map_err(|e| CliError::startup(format!("store: {e}")))?;
        return Ok(Arc::new(store));
    }
    Ok(Arc::new(open_sqlite(section).await?))
}

/// Opens (and migrates) the SQLite store named by `store.url` (`sqlite://PATH`, `sqlite:PATH`
/// or a plain file path).
pub async fn open_sqlite(section: &crate::config::StoreSection) -> Result<SqliteStore> {
    let url = section.url.as_str();
    if url.starts_with("sqlite:") {
        SqliteStore::open_url(url).await
    } else {
        SqliteStore::open(&PathBuf::from(url)).await
    }
    .map_err(|e| CliError::startup(format!("store: {e}")))
}

/// How long `serve` waits for Redis's start-up check (cluster slot map, sentinels, TLS).
const REDIS_STARTUP_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// A listening socket on `addr` with `SO_REUSEPORT` (when `shared`): every gateway worker
/// has its own on the same address, and the kernel spreads new connections over them.
fn bind_gateway(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds both listeners and starts serving: `server.worker_threads` gateway workers (see
/// [`start_on`]), each with its own socket on `gateway.listen`.
pub async fn start(cfg: &Config, secrets: Secrets) -> Result<Running> {
    let workers = cfg.gateway_workers().map_err(|e| CliError::startup(e.to_string()))?;
    let cannot = |addr: SocketAddr, e: std::io::Error| {
        CliError::startup(format!("cannot listen on {addr} (gateway.listen): {e}"))
    };
    let gateway_listener = bind_gateway(cfg.gateway.listen, workers > 1).map_err(|e| cannot(cfg.gateway.listen, e))?;
    // The others on the address the first one got (`gateway.listen` may name port 0).
    let bound = gateway_listener
        .local_addr()
        .map_err(|e| cannot(cfg.gateway.listen, e))?;
    let mut more = Vec::with_capacity(workers.saturating_sub(1));
    for _ in 1..workers {
        let l = bind_gateway(bound, true)
            .and_then(TcpListener::into_std)
            .map_err(|e| cannot(bound, e))?;
        more.push(l);
    }
    let admin_listener = TcpListener::bind(cfg.admin.listen)
        .await
        .map_err(|e| CliError::startup(format!("cannot listen on {} (admin.listen): {e}", cfg.admin.listen)))?;
    start_workers(
        cfg,
        secrets,
        gateway_listener,
        more,
        admin_listener,
        Arc::new(SystemClock),
    )
    .await
}

/// Starts serving on listeners the caller bound (tests, demo), with one gateway worker.
pub async fn start_on(
    cfg: &Config,
    secrets: Secrets,
    gateway_listener: TcpListener,
    admin_listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> Result<Running> {
    start_workers(cfg, secrets, gateway_listener, Vec::new(), admin_listener, clock).await
}

/// Runs one more gateway worker: a thread of its own with a current-thread runtime, serving
/// `listener` with `serve` until it returns (the shutdown signal, then the drain). The
/// receiver gets its result.
fn spawn_worker<F, Fut>(
    index: usize,
    listener: std::net::TcpListener,
    serve: F,
) -> Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>>
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("keyward-gw-{index}"))
        .spawn(move || {
            keyward_upstream::worker::set_current(index);
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        serve(listener).await
                    })
                });
            let _ = done.send(outcome);
        })
        .map_err(|e| CliError::startup(format!("cannot start gateway worker {index}: {e}")))?;
    Ok(result)
}

/// Starts serving: the gateway on `gateway_listener` on the caller's runtime (worker 0, which
/// also runs the admin API, the other listeners and the background tasks), and on each of
/// `more` (sockets on the same address, `SO_REUSEPORT`) in a worker thread of its own: N
/// event loops that share nothing per request but the route table, the engine's caches and
/// the counters, as nginx's worker processes (issue 19). `server.max_connections` is shared
/// out between the workers.
async fn start_workers(
    cfg: &Config,
    secrets: Secrets,
    gateway_listener: TcpListener,
    more: Vec<std::net::TcpListener>,
    admin_listener: TcpListener,
    clock: Arc<dyn Clock>,
) -> Result<Running> {
    // Upstream connections are kept per worker: the count must be known before the route
    // table's targets are built.
    keyward_upstream::worker::set_count(more.len() + 1);
    let gw_cfg = cfg.gateway_config().map_err(|e| CliError::startup(e.to_string()))?;
    if !crate::telemetry::ENABLED && cfg.telemetry.otlp_endpoint.is_some() {
        // Refused rather than ignored: an operator who asked for traces must not think they
        // are exported. With the `otel` feature, main installs the exporting layer.
        return Err(CliError::startup(crate::telemetry::NOT_BUILT));
    }
    let limits = cfg.http_limits().map_err(|e| CliError::startup(e.to_string()))?;
    let format = cfg.key_format().map_err(|e| CliError::startup(e.to_string()))?;
    let store = open_store(&cfg.store).await?;
    let limiter = cfg.limiter().map_err(|e| CliError::startup(e.to_string()))?;
    if let Some(r) = limiter.redis() {
        // A certificate that does not verify, a cluster without a seed that answers or with
        // slots that no master serves, sentinels that know no such master: refused now, not
        // discovered request by request. One endpoint that is down only warns (routes follow
        // their on_limiter_failure until it is back).
        match r.startup_check(REDIS_STARTUP_BUDGET).await {
            Ok(None) => {}
            Ok(Some(warning)) => tracing::warn!("redis: {warning}"),
            Err(e) => return Err(CliError::startup(format!("redis: {e}"))),
        }
    }
    let engine = Arc::new(
        Engine::with_options(store, secrets.pepper, format, cfg.engine_options(), clock).with_limiter(limiter),
    );
    engine
        .load_legacy_flag()
        .await
        .map_err(|e| CliError::startup(format!("store: {e}")))?;
    if let Some(kek) = secrets.kek {
        let mut oauth = cfg.oauth_config().map_err(|e| CliError::startup(e.to_string()))?;
        if cfg.oauth.issuer.is_none() {
            // Default issuer: the address the gateway really listens on.
            let addr = gateway_listener
                .local_addr()
                .map_err(|e| CliError::startup(e.to_string()))?;
            let scheme = if cfg.gateway.tls_cert_file.is_some() {
                "https"
            } else {
                "http"
            };
            oauth.issuer = format!("{scheme}://{addr}");
        }
        engine
            .enable_oauth(oauth, kek)
            .await
            .map_err(|e| CliError::startup(format!("token service: {e}")))?;
    }
    // A copy of every audit event in a file ([audit] sink = "file").
    if let Some(path) = cfg.audit_file().map_err(|e| CliError::startup(e.to_string()))? {
        let sink = keyward_engine::audit_file::FileSink::open(&path)
            .map_err(|e| CliError::startup(format!("audit.path {}: {e}", path.display())))?;
        engine.add_audit_mirror(Arc::new(sink));
    }
    // Webhooks (security events, signed) and GitHub secret-scanning reports.
    let env: Vec<(String, String)> = std::env::vars().collect();
    for w in cfg
        .webhook_configs(&env)
        .map_err(|e| CliError::startup(e.to_string()))?
    {
        let sink = keyward_engine::webhook::WebhookSink::start(&engine, w)
            .map_err(|e| CliError::startup(format!("webhooks: {e}")))?;
        engine.add_sink(sink);
    }
    // Webhooks managed at run time (admin API, `keyward apply`): their secrets are read here,
    // from this process's environment or a 0600 file, never from the store.
    // Never one of the node's own secret files (the engine already limits the names).
    let own_secrets: Vec<std::path::PathBuf> = [
        cfg.secrets.pepper_file.as_ref(),
        cfg.secrets.admin_token_file.as_ref(),
        cfg.secrets.kek_file.as_ref(),
        cfg.verify.token_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|p| std::fs::canonicalize(p).ok())
    .collect();
    let resolver: keyward_engine::managed_webhooks::SecretResolver = Arc::new(
        move |w: &keyward_store::WebhookRecord| match (&w.secret_env, &w.secret_file) {
            (Some(var), _) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(keyward_core::secret::SecretString::new(v.trim().to_owned())),
                _ => Err(format!(
                    "{var} is not set (or empty) in the environment of this keyward node"
                )),
            },
            (None, Some(file)) => {
                let path = std::path::Path::new(file);
                if std::fs::canonicalize(path).is_ok_and(|c| own_secrets.contains(&c)) {
                    return Err(format!("{file} is one of keyward's own secret files"));
                }
                crate::config::read_secret_file(path).map_err(|e| e.to_string())
            }
            (None, None) => Err("no secret_env or secret_file".into()),
        },
    );
    engine
        .enable_managed_webhooks(resolver)
        .await
        .map_err(|e| CliError::startup(format!("managed webhooks: {e}")))?;
    let expiry_window = gw_cfg.expiry_warning;
    let leaks = cfg
        .github_keys()
        .map_err(|e| CliError::startup(e.to_string()))?
        .map(|keys| {
            let state = keyward_edge::leaks::LeakReports::new(engine.clone(), keys, cfg.leak_reports.action);
            (
                cfg.leak_reports.path.clone(),
                keyward_edge::leaks::router(&cfg.leak_reports.path, Arc::new(state)),
            )
        });
    let admin_routes = gw_cfg.routes.clone();
    let gateway_state = Arc::new(GatewayState::new(engine.clone(), gw_cfg).map_err(CliError::startup)?);
    let metrics_listener = match cfg.metrics.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| CliError::startup(format!("cannot listen on {addr} (metrics.listen): {e}")))?,
        ),
        None => None,
    };
    // The verify API and forward-auth run the gateway's own decision phases.
    if let Some(t) = &secrets.verify_token {
        if keyward_core::secret::ct_eq(t.expose().as_bytes(), secrets.admin_token.expose().as_bytes()) {
            return Err(CliError::startup(
                "the verify token must differ from the admin token (it can only verify)",
            ));
        }
    }
    let verify_state = Arc::new(keyward_edge::verify::VerifyState::new(
        gateway_state.clone(),
        secrets.verify_token.map(keyward_edge::verify::ServiceToken::new),
        cfg.forward_auth_config()
            .map_err(|e| CliError::startup(e.to_string()))?,
    ));
    let verify_listener = match cfg.verify.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| CliError::startup(format!("cannot listen on {addr} (verify.listen): {e}")))?,
        ),
        None => None,
    };
    let grpc_listener = match cfg.verify.grpc_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| CliError::startup(format!("cannot listen on {addr} (verify.grpc_listen): {e}")))?,
        ),
        None => None,
    };
    // Every listener: a sane incoming `x-request-id` or a new one, on the span, upstream and
    // on every response (the gateway's service does it itself, without a middleware stack).
    let gateway = gateway_router(gateway_state.clone(), leaks);
    let request_id = || axum::middleware::from_fn(keyward_edge::ops::request_id);
    let admin_state = Arc::new(
        AdminState::new(engine.clone(), AdminToken::new(secrets.admin_token))
            .with_routes(admin_routes)
            .with_upstreams(gateway_state.upstream_status()),
    );
    let admin = admin_router(admin_state.clone())
        .merge(keyward_edge::verify::verify_api(verify_state.clone()))
        .merge(keyward_edge::admin::ops_routes(
            gateway_state.clone(),
            admin_state,
            cfg.metrics.public,
        ))
        .layer(request_id());
    let gateway_addr = gateway_listener
        .local_addr()
        .map_err(|e| CliError::startup(e.to_string()))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| CliError::startup(e.to_string()))?;
    // Two stop signals: the listeners first (they drain), the background tasks after them (so
    // the last usage flush counts the drained requests too).
    let (tx, rx) = watch::channel(false);
    let (stop_background, bg_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // Limiter sweeps and batched usage writes, with a last flush on shutdown.
    {
        let engine = engine.clone();
        let rx = bg_rx.clone();
        tasks.spawn(async move {
            engine.maintenance(rx).await;
            Ok(())
        });
    }
    // Shared store (PostgreSQL): changes made by other nodes reach this node's caches.
    {
        let engine = engine.clone();
        let rx = bg_rx.clone();
        let every = cfg.store.revalidate_interval;
        tasks.spawn(async move {
            keyward_engine::sync::run(engine, every, rx).await;
            Ok(())
        });
    }
    // Retention in small batches, and a signed checkpoint of the audit chain, every
    // `retention.interval`.
    {
        let engine = engine.clone();
        let rx = bg_rx.clone();
        let settings = cfg.retention_settings().map_err(|e| CliError::startup(e.to_string()))?;
        let every = cfg.retention.interval;
        tasks.spawn(async move {
            engine.retention_loop(settings, every, rx).await;
            Ok(())
        });
    }
    // One `key.expiring_soon` event per key entering the expiry-warning window.
    {
        let engine = engine.clone();
        let rx = bg_rx.clone();
        let every = cfg.security.expiring_check_interval;
        tasks.spawn(async move {
            engine.expiring_soon_loop(every, expiry_window, rx).await;
            Ok(())
        });
    }
    // The gateway speaks TLS when a certificate is configured; the certificate, the client CA
    // bundle and the CRLs are re-read when their files change.
    let tls = match cfg.tls_settings().map_err(|e| CliError::startup(e.to_string()))? {
        Some(t) => {
            let server =
                keyward_edge::tls::TlsServer::load(&t).map_err(|e| CliError::startup(format!("gateway TLS: {e}")))?;
            let rx = bg_rx.clone();
            let reloader = server.clone();
            tasks.spawn(async move {
                reloader.reload_loop(rx).await;
                Ok(())
            });
            Some(server)
        }
        None => None,
    };
    let mut plain = vec![(admin_listener, admin)];
    let mut verify_addr = None;
    if let Some(l) = verify_listener {
        verify_addr = Some(l.local_addr().map_err(|e| CliError::startup(e.to_string()))?);
        plain.push((
            l,
            keyward_edge::verify::verify_listener(verify_state.clone()).layer(request_id()),
        ));
    }
    // Envoy ext_authz over gRPC: plain HTTP/2 (h2c) like the verify listener, which has no TLS.
    let mut verify_grpc_addr = None;
    if let Some(l) = grpc_listener {
        verify_grpc_addr = Some(l.local_addr().map_err(|e| CliError::startup(e.to_string()))?);
        plain.push((
            l,
            keyward_edge::ext_authz::grpc_listener(verify_state, &limits).layer(request_id()),
        ));
    }
    let mut metrics_addr = None;
    if let Some(l) = metrics_listener {
        metrics_addr = Some(l.local_addr().map_err(|e| CliError::startup(e.to_string()))?);
        plain.push((
            l,
            keyward_edge::ops::metrics_listener(gateway_state.clone()).layer(request_id()),
        ));
    }
    let mut listeners = JoinSet::new();
    // The gateway's connection cap, shared out between its workers.
    let mut gateway_limits = limits.clone();
    gateway_limits.max_connections = limits.max_connections.div_ceil(more.len() + 1).max(1);
    for (i, listener) in more.into_iter().enumerate() {
        let (router, limits, rx, tls) = (gateway.clone(), gateway_limits.clone(), rx.clone(), tls.clone());
        let done = spawn_worker(i + 1, listener, move |l| async move {
            match tls {
                Some(server) => server.serve(l, router, limits, rx).await,
                None => keyward_edge::serve::serve(l, router, limits, rx).await,
            }
        })?;
        listeners.spawn(async move {
            done.await
                .unwrap_or_else(|_| Err(std::io::Error::other("a gateway worker stopped unexpectedly")))
        });
    }
    match tls {
        Some(server) => {
            let rx = rx.clone();
            listeners.spawn(server.serve(gateway_listener, gateway, gateway_limits, rx));
        }
        None => {
            let rx = rx.clone();
            listeners.spawn(keyward_edge::serve::serve(
                gateway_listener,
                gateway,
                gateway_limits,
                rx,
            ));
        }
    }
    for (listener, router) in plain {
        // Connection cap, header deadline and header limits on every listener (crate::serve).
        listeners.spawn(keyward_edge::serve::serve(listener, router, limits.clone(), rx.clone()));
    }
    tracing::info!(gateway = %gateway_addr, admin = %admin_addr, "keyward is serving");
    Ok(Running {
        gateway: gateway_addr,
        admin: admin_addr,
        verify: verify_addr,
        verify_grpc: verify_grpc_addr,
        metrics: metrics_addr,
        engine,
        gateway_state,
        shutdown: tx,
        stop_background,
        listeners,
        background: tasks,
        shutdown_timeout: cfg.server.shutdown_timeout,
        started: serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_reload_names_each_changed_setting_it_cannot_apply() {
        let old = serde_json::json!({
            "gateway": {"listen": "127.0.0.1:8080", "upstream_timeout": "30s", "connect_timeout": "5s"},
            "store": {"url": "a.db", "pool": 4, "stale_ttl": {"secs": 30, "nanos": 0}},
            "routes": [{"name": "a"}],
            "upstreams": [],
            "redis": null,
        });
        let new = serde_json::json!({
            "gateway": {"listen": "127.0.0.1:9090", "upstream_timeout": "5s", "connect_timeout": "1s"},
            "store": {"url": "b.db", "pool": 4, "stale_ttl": {"secs": 60, "nanos": 0}},
            "routes": [{"name": "b"}],
            "upstreams": [{"name": "g"}],
            "redis": {"url": "redis://x"},
            "metrics": {"public": true},
        });
        assert_eq!(
            not_applied(&old, &new),
            vec!["gateway.listen", "metrics", "redis", "store.stale_ttl", "store.url"]
        );
        assert!(not_applied(&old, &old).is_empty());
    }
}
