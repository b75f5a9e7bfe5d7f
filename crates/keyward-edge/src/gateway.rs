//! The gateway: a reverse proxy that runs every request through the pipeline
//! (route → extract credential → authenticate → authorize → proxy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use ipnet::IpNet;
use keyward_core::decision::ScopeMode;
use keyward_core::Scope;
use keyward_engine::{Engine, Principal, Rejection, RouteFacts, RouteLimits};
use keyward_upstream::{
    hash_key, Balance, Group, GroupConfig, HashBy, RequestBody, SendOptions, TargetUrl, UpstreamError,
};

mod service;
mod table;

pub use crate::context::client_ip;
pub(crate) use crate::context::RequestView;
use crate::context::{lifecycle_headers, strip_hop_by_hop, upstream_headers, Forwarding};
use crate::metrics::Metrics;
use crate::problem::{self, Problem, RejectionStyle};
pub use service::GatewayService;
use table::status_of;
pub use table::{Table, UpstreamStatus};

/// What became of a gateway request, as a fixed label value for the metrics: `allowed`, a
/// rejection's or problem's stable code, `preflight`. Put in the response's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutcomeTag(pub &'static str);

fn tagged(mut resp: Response, outcome: &'static str) -> Response {
    resp.extensions_mut().insert(OutcomeTag(outcome));
    resp
}

/// Where a route's requests go: a URL (a group of one target of its own, named
/// `route.<route name>.<index>`) or an `[[upstreams]]` group by name; resolved to the group when the
/// route table is installed.
#[derive(Clone)]
pub struct Upstream {
    spec: UpstreamSpec,
    group: Option<Arc<Group>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum UpstreamSpec {
    Url(TargetUrl),
    Named(String),
    /// The routes the verify API makes up for requests that match no configured route: never
    /// proxied.
    Unused,
}

impl Upstream {
    pub(crate) fn unused() -> Upstream {
        Upstream {
            spec: UpstreamSpec::Unused,
            group: None,
        }
    }

    /// `http://host:port[/base]`, `https://…`, or the name of an `[[upstreams]]` group.
    pub fn parse(spec: &str) -> Result<Upstream, String> {
        let spec = if spec.contains("://") {
            UpstreamSpec::Url(
                spec.parse::<TargetUrl>()
                    .map_err(|e| format!("invalid upstream URL: {e}"))?,
            )
        } else if !spec.is_empty()
            && spec.len() <= 64
            && spec
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            UpstreamSpec::Named(spec.to_owned())
        } else {
            return Err(format!(
                "upstream {spec:?} is neither a URL (http://host:port/base, https://…) nor the name of an [[upstreams]] group"
            ));
        };
        Ok(Upstream { spec, group: None })
    }

    /// The upstream as configured (a URL or a group's name), for the admin API's route list.
    pub fn url(&self) -> String {
        match &self.spec {
            UpstreamSpec::Url(u) => u.to_string(),
            UpstreamSpec::Named(n) => n.clone(),
            UpstreamSpec::Unused => String::new(),
        }
    }

    /// The name of the group requests go to: for a URL, `route.<route name>.<index>` (the
    /// name's characters outside `[A-Za-z0-9._-]` as `_`, at most 40 of them).
    fn group_name(&self, route: &str, index: usize) -> Option<String> {
        match &self.spec {
            UpstreamSpec::Url(_) => {
                let name: String = route
                    .chars()
                    .take(40)
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                Some(format!("route.{name}.{index}"))
            }
            UpstreamSpec::Named(n) => Some(n.clone()),
            UpstreamSpec::Unused => None,
        }
    }
}

/// One entry of the route table.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Matches the path itself and everything below it (`/fact` matches `/fact` and
    /// `/fact/1`, not `/facts`).
    pub path_prefix: String,
    /// Allowed methods; empty means any.
    pub methods: Vec<Method>,
    pub upstream: Upstream,
    pub scopes: Vec<Scope>,
    pub scope_mode: ScopeMode,
    /// The route's own rate limit and the quota cost of one request.
    pub limits: RouteLimits,
    /// Accept keyward access tokens (`Authorization: Bearer <jwt>`).
    pub tokens: bool,
    /// Accept API keys.
    pub api_keys: bool,
    /// Accept callers by a registered TLS client certificate alone (RFC 8705 clients).
    pub client_certificates: bool,
    /// Public-safe: publishable keys are accepted here (from their allowed origins).
    pub publishable: bool,
    /// CORS policy: preflights answered here, headers on every response of the route.
    pub cors: Option<crate::cors::Cors>,
    /// The audience tokens must carry here.
    pub audience: String,
    /// Hosts, rewrites, header edits, timeout, body size, public access.
    pub options: crate::route::RouteOptions,
    /// The route's metric series, taken once per route table (`Default::default()` when
    /// building a route: the table gives every route fresh ones).
    pub series: crate::metrics::RouteSeries,
}

impl Route {
    fn matches_path(&self, path: &str) -> bool {
        let p = self.path_prefix.as_str();
        if p == "/" {
            return true;
        }
        match path.strip_prefix(p) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || p.ends_with('/'),
            None => false,
        }
    }

    /// Whether the route takes `m`; `HEAD` wherever `GET` is (RFC 9110 §9.3.2).
    fn allows(&self, m: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(m)
            || (m == Method::HEAD && self.methods.contains(&Method::GET))
    }

    /// What the engine's decision needs to know about the route.
    pub fn facts(&self) -> RouteFacts<'_> {
        RouteFacts {
            scopes: &self.scopes,
            scope_mode: self.scope_mode,
            api_keys: self.api_keys,
            tokens: self.tokens,
            client_certificates: self.client_certificates,
            publishable: self.publishable,
            audience: &self.audience,
            public: self.options.public,
        }
    }
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The initial route table ([`GatewayState`] keeps it swappable: see
    /// [`GatewayState::table`] and [`GatewayState::replace_routes`]).
    pub routes: Vec<Route>,
    /// Headers that carry an API key (default `x-api-key`).
    pub credential_headers: Vec<HeaderName>,
    /// Status for invalid credentials: 401 (default) or 403 (the classic static-key behaviour).
    pub invalid_credential_status: StatusCode,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Keys expiring within this window get `Deprecation` and `Sunset` headers.
    pub expiry_warning: Duration,
    /// The listener asks clients for TLS certificates (RFC 8705 client authentication and
    /// certificate-bound tokens are on).
    pub client_certificates: bool,
    /// The `[[upstreams]]` groups routes may name.
    pub upstreams: Vec<GroupConfig>,
}

/// Shared state of the gateway listener.
pub struct GatewayState {
    engine: Arc<Engine>,
    /// Everything but the routes (`cfg.routes` is left empty).
    cfg: GatewayConfig,
    /// The route table and its upstream groups: read once per request (a pointer load),
    /// replaced whole on reload (the old groups' health checks stop when the last request
    /// holding them ends).
    table: Arc<arc_swap::ArcSwap<Table>>,
    style: RejectionStyle,
    /// `<issuer>/.well-known/oauth-protected-resource` when the token service is on.
    resource_metadata: Option<String>,
    metrics: Arc<Metrics>,
    /// Open WebSocket tunnels, closed when their grant is revoked.
    tunnels: Arc<crate::tunnel::Tunnels>,
}

impl GatewayState {
    /// The gateway's state with its first route table (inside a tokio runtime: upstream health
    /// checks start here). Fails for an upstream group that cannot be built (a CA file that
    /// cannot be read, a route naming no group).
    pub fn new(engine: Arc<Engine>, mut cfg: GatewayConfig) -> Result<GatewayState, String> {
        let mut challenges = vec![HeaderValue::from_static("Bearer realm=\"keyward\"")];
        if cfg.routes.iter().any(|r| r.tokens) {
            challenges.push(HeaderValue::from_static("DPoP algs=\"ES256 EdDSA RS256 PS256\""));
        }
        for h in &cfg.credential_headers {
            if let Ok(v) = HeaderValue::from_str(&format!("ApiKey realm=\"keyward\", header=\"{}\"", h.as_str())) {
                challenges.push(v);
            }
        }
        let style = RejectionStyle {
            invalid_status: cfg.invalid_credential_status,
            challenges,
            bearer: false,
            resource_metadata: None,
        };
        // RFC 9728 §5.1: 401s of token-taking routes name the route's resource metadata.
        let resource_metadata = engine
            .token_service()
            .ok()
            .map(|svc| format!("{}{}", svc.config().issuer, crate::oauth::RESOURCE_METADATA_PATH));
        let routes = std::mem::take(&mut cfg.routes);
        let table = Table::build(routes, &cfg.upstreams, cfg.connect_timeout, cfg.upstream_timeout)?;
        let table = Arc::new(arc_swap::ArcSwap::from_pointee(table));
        let metrics = Arc::new(Metrics::with_upstreams(engine.clone(), status_of(&table)));
        metrics.set_routes(table.load().routes.len());
        let tunnels = Arc::new(crate::tunnel::Tunnels::default());
        tokio::spawn(tunnels.clone().watch(Arc::downgrade(&engine)));
        Ok(GatewayState {
            engine,
            cfg,
            table,
            style,
            resource_metadata,
            metrics,
            tunnels,
        })
    }

    /// The current route table and upstreams (held for the whole request, so a reload never
    /// changes the route of a request in flight).
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Swaps the route table and the upstream groups (configuration reload): the next request
    /// uses them. On error nothing changes.
    pub fn replace_routes(&self, routes: Vec<Route>, groups: &[GroupConfig]) -> Result<(), String> {
        let current = self.table.load();
        let (connect, upstream) = (current.connect_timeout, current.upstream_timeout);
        drop(current);
        self.replace_table(routes, groups, connect, upstream)
    }

    /// Like [`GatewayState::replace_routes`], with new gateway-wide timeouts
    /// (`gateway.connect_timeout`, `gateway.upstream_timeout`) in force with the new table.
    pub fn replace_table(
        &self,
        routes: Vec<Route>,
        groups: &[GroupConfig],
        connect_timeout: Duration,
        upstream_timeout: Duration,
    ) -> Result<(), String> {
        let table = Table::build(routes, groups, connect_timeout, upstream_timeout)?;
        self.metrics.set_routes(table.routes.len());
        self.table.store(Arc::new(table));
        Ok(())
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The status of the upstream groups in force, read at each call (after a reload: the new
    /// groups).
    pub fn upstream_status(&self) -> UpstreamStatus {
        status_of(&self.table)
    }

    /// The open WebSocket tunnels.
    pub fn tunnels(&self) -> &crate::tunnel::Tunnels {
        &self.tunnels
    }
}

/// The proxy's router: every request goes through [`handle`] (the crate's `gateway_router`
/// adds the OAuth endpoints in front).
pub(crate) fn proxy_router(state: Arc<GatewayState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

impl GatewayState {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.cfg.trusted_proxies
    }

    /// Everything but the routes, as at start (the timeouts in force are
    /// [`GatewayState::connect_timeout`] and [`GatewayState::upstream_timeout`]).
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// `gateway.connect_timeout` in force (changed by a reload).
    pub fn connect_timeout(&self) -> Duration {
        self.table.load().connect_timeout
    }

    /// `gateway.upstream_timeout` in force (changed by a reload).
    pub fn upstream_timeout(&self) -> Duration {
        self.table.load().upstream_timeout
    }

    /// The problem the gateway answers for a rejection (status, challenges, limit headers).
    pub(crate) fn rejection_problem(&self, r: &Rejection, bearer: bool) -> Problem {
        let mut style = self.style.clone();
        style.bearer = bearer;
        problem::rejection(r, &style)
    }

    /// [`GatewayState::rejection_problem`] for a request on `route`: a token-taking route's
    /// challenges also name its RFC 9728 metadata (`resource_metadata`).
    pub(crate) fn rejection_problem_on(&self, r: &Rejection, bearer: bool, route: &Route) -> Problem {
        let mut style = self.style.clone();
        style.bearer = bearer;
        if route.tokens {
            style.resource_metadata = self
                .resource_metadata
                .as_ref()
                .map(|base| format!("{base}{}", crate::oauth::resource_suffix(&route.path_prefix)));
        }
        problem::rejection(r, &style)
    }

    /// Every scope some route requires (for the metadata's `scopes_supported`).
    pub fn route_scopes(&self) -> Vec<String> {
        self.table()
            .routes
            .iter()
            .flat_map(|r| r.scopes.iter().map(|s| s.to_string()))
            .collect()
    }
}

/// Rejects paths with dot segments (raw or percent-encoded, also with `;` parameters), encoded
/// slashes, backslashes, double encoding or empty segments (`//`): the upstream might normalise
/// them into a path that the route table did not authorize (`//admin` is `/admin` to a server
/// that merges slashes, but matched the catch-all route here).
pub(crate) fn suspicious_path(path: &str) -> bool {
    // Every pattern below needs a `%`, a `.`, a `\` or `//`: most paths have none of them and
    // are judged without a copy.
    if !path.bytes().any(|c| matches!(c, b'%' | b'.' | b'\\')) && !path.contains("//") {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains('\\')
        || lower.contains("%25")
        || lower.contains("//")
    {
        return true;
    }
    lower.split('/').any(|seg| {
        // `..;x` is `..` to servlet containers (path parameters): judged without them.
        let seg = seg.split(';').next().unwrap_or("");
        let s = seg.replace("%2e", ".");
        s == "." || s == ".."
    })
}

/// Entry points for the fuzz targets in `fuzz/` (re-exported by `crate::fuzz_api`); not an API.
#[doc(hidden)]
pub mod fuzz {
    use super::{HeaderMap, HeaderName};
    pub use keyward_engine::{DpopHeader, KeyCredential, TokenCredential};

    /// The gateway's credential extraction (configured key headers, `Authorization: Bearer`
    /// and `DPoP`, the `DPoP` proof fields).
    pub fn extract<'a>(
        headers: &'a HeaderMap,
        names: &[HeaderName],
        format: &keyward_core::KeyFormat,
    ) -> (KeyCredential<'a>, TokenCredential<'a>, DpopHeader<'a>) {
        let e = crate::context::extract(headers, names, format);
        (e.key, e.token, e.dpop)
    }

    /// The path check run before routing.
    pub fn suspicious_path(path: &str) -> bool {
        super::suspicious_path(path)
    }
}

/// The route of a request: among the routes whose `hosts` match the request's host best
/// (exact, then wildcard, then routes without hosts) and that have a route for the path, the
/// longest path prefix, then the method (`HEAD` where `GET` is). `host` `None`: hosts are not
/// considered.
pub(crate) fn find_route<'r>(
    routes: &'r [Route],
    method: &Method,
    host: Option<&str>,
    path: &str,
) -> Result<&'r Route, Problem> {
    // One pass: the best (host rank, prefix length) seen so far, and the first route of that
    // rank that allows the method (routes keep their configured order within a rank).
    let mut best: Option<((u8, usize), Option<&'r Route>)> = None;
    for r in routes {
        if !r.matches_path(path) {
            continue;
        }
        let Some(rank) = r.options.host_rank(host) else {
            continue;
        };
        let key = (rank, r.path_prefix.len());
        let allowed = r.allows(method).then_some(r);
        match &mut best {
            Some((k, found)) if *k == key => {
                if found.is_none() {
                    *found = allowed;
                }
            }
            Some((k, _)) if *k > key => {}
            _ => best = Some((key, allowed)),
        }
    }
    let (key, found) = best.ok_or_else(Problem::not_found)?;
    if let Some(r) = found {
        return Ok(r);
    }
    // 405: the methods of every route of the best rank.
    let mut allow: Vec<&str> = Vec::new();
    for r in routes {
        if r.matches_path(path) && r.options.host_rank(host) == Some(key.0) && r.path_prefix.len() == key.1 {
            for m in &r.methods {
                if !allow.contains(&m.as_str()) {
                    allow.push(m.as_str());
                }
            }
        }
    }
    Err(Problem::method_not_allowed(&allow.join(", ")))
}

/// A request that passed authentication, authorization and the limits.
pub(crate) struct Admitted {
    pub principal: Principal,
    /// The credential came in `Authorization`.
    pub in_authorization: bool,
    /// Limit states after this request (for `RateLimit` fields).
    pub states: Vec<keyward_engine::LimitState>,
}

/// A refused request: the reason, and whether the credential came in `Authorization`.
pub(crate) struct Refused {
    pub rejection: Rejection,
    pub bearer: bool,
}

/// The decision, shared by the gateway, the verify API and forward-auth: extract → the
/// engine's `authenticate` → its `admit`. Whatever calls this consumes limits and records
/// usage exactly as a proxied request does; every refusal is accounted by the engine.
pub(crate) async fn decide(st: &GatewayState, route: &Route, req: &RequestView<'_>) -> Result<Admitted, Refused> {
    let ctx = crate::context::context(route.facts(), req, &st.cfg.credential_headers, st.engine.format());
    let bearer = ctx.in_authorization();
    let principal = st
        .engine
        .authenticate(&ctx)
        .await
        .map_err(|rejection| Refused { rejection, bearer })?;
    match st.engine.admit(&principal, &route.limits, Some(req.client)).await {
        Ok(states) => {
            st.metrics.limiter_decision("allowed");
            Ok(Admitted {
                principal,
                in_authorization: bearer,
                states,
            })
        }
        Err(rejection) => {
            st.metrics.limiter_decision(match rejection {
                Rejection::RateLimited { .. } => "rate_limited",
                Rejection::QuotaExhausted { .. } => "quota_exhausted",
                _ => "unavailable",
            });
            Err(Refused { rejection, bearer })
        }
    }
}

/// The per-request pipeline as an axum handler (the OAuth endpoints' fallback).
async fn handle(
    State(st): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    handle_request(&st, peer, req).await
}

/// The per-request pipeline, counted in the metrics by route name (never by path).
pub(crate) async fn handle_request(st: &Arc<GatewayState>, peer: SocketAddr, req: Request<Body>) -> Response {
    let started = Instant::now();
    let _in_flight = st.metrics.in_flight();
    let routes = st.table();
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let (route, mut resp) = route_request(st, &routes.routes, routes.any_hosts, peer, req).await;
    if grpc {
        resp = problem::as_grpc(resp);
    }
    let outcome = resp.extensions().get::<OutcomeTag>().map_or("other", |o| o.0);
    let route_name = route.map_or(crate::metrics::UNMATCHED, |r| r.name.as_str());
    let status = resp.status().as_u16();
    // On the request span (crate::ops), with the status, in one visit of the subscriber:
    // exported with it as OpenTelemetry attributes.
    crate::ops::record_fields(
        &tracing::Span::current(),
        [("route", &route_name), ("outcome", &outcome), ("status", &status)],
    );
    resp.extensions_mut().insert(crate::ops::StatusRecorded);
    match route {
        Some(r) => st
            .metrics
            .route_request(&r.series, route_name, outcome, status, started.elapsed()),
        None => st.metrics.request(route_name, outcome, status, started.elapsed()),
    }
    resp
}

/// Routes a request and runs it: the route it took (if any) and the response.
async fn route_request<'r>(
    st: &Arc<GatewayState>,
    routes: &'r [Route],
    any_hosts: bool,
    peer: SocketAddr,
    req: Request<Body>,
) -> (Option<&'r Route>, Response) {
    // The URI's parts are shared bytes: a clone is a reference count, not a copy of the path.
    let uri = req.uri().clone();
    let path = uri.path();
    // Without routes that name hosts, the host changes nothing: not worked out at all.
    let host = if any_hosts {
        crate::route::request_host(req.headers(), req.uri().authority().map(|a| a.as_str()))
    } else {
        None
    };
    let host = host.as_deref();
    if suspicious_path(path) {
        let p = Problem::bad_request("invalid_path", "the path contains dot segments or encoded separators");
        return (None, tagged(p.into_response(), "invalid_path"));
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A CORS preflight is answered here, for the route the actual request would take; the
    // upstream never sees it.
    if crate::cors::is_preflight(req.method(), req.headers()) {
        let wanted = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        // The route the actual request would take; failing that (a method the route does not
        // have), the longest CORS route for the path, whose policy then refuses the method.
        let route = match wanted.map(|m| find_route(routes, &m, host, path)) {
            Some(Ok(r)) => Some(r),
            _ => routes
                .iter()
                .filter(|r| r.cors.is_some() && r.matches_path(path) && r.options.host_rank(host).is_some())
                .max_by_key(|r| r.path_prefix.len()),
        };
        if let Some((r, cors)) = route.and_then(|r| r.cors.as_ref().map(|c| (r, c))) {
            return (Some(r), tagged(cors.preflight(req.headers()), "preflight"));
        }
    }
    let route = match find_route(routes, req.method(), host, path) {
        Ok(r) => r,
        Err(p) => {
            let code = p.code;
            return (None, tagged(p.into_response(), code));
        }
    };
    let mut resp = handle_route(st, peer, route, req).await;
    if let Some(cors) = &route.cors {
        cors.decorate(origin.as_deref(), resp.headers_mut());
    }
    (Some(route), resp)
}

/// The pipeline for a request that matched `route`.
async fn handle_route(st: &Arc<GatewayState>, peer: SocketAddr, route: &Route, req: Request<Body>) -> Response {
    // A body announced over the route's limit is refused before anything is decided or
    // consumed.
    if let Some(max) = route.options.max_body_size {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return tagged(problem::body_too_large(max).into_response(), "body_too_large");
        }
    }
    let websocket = match crate::tunnel::classify(req.method(), req.version(), req.headers()) {
        Ok(crate::tunnel::UpgradeRequest::None) => false,
        Ok(crate::tunnel::UpgradeRequest::WebSocket) if route.options.websocket => true,
        Ok(crate::tunnel::UpgradeRequest::WebSocket) => {
            let p = Problem::bad_request(
                "upgrade_not_allowed",
                "this route does not take WebSocket connections (websocket = true on the route)",
            );
            return tagged(p.into_response(), "upgrade_not_allowed");
        }
        Err(p) => return tagged(p.into_response(), "invalid_upgrade"),
    };
    let path = req.uri().path();
    let client = client_ip(peer.ip(), req.headers(), &st.cfg.trusted_proxies);
    let span = tracing::Span::current();
    crate::ops::record_fields(
        &span,
        [("path", &path), ("client_ip", &tracing::field::display(client))],
    );
    let peer_cert = req
        .extensions()
        .get::<crate::tls::PeerCertificates>()
        .and_then(crate::tls::PeerCertificates::presented);
    let view = RequestView {
        headers: req.headers(),
        method: req.method(),
        path,
        client,
        peer_cert,
        htu: None,
    };
    let decided = decide(st, route, &view).await;
    let who = match &decided {
        Ok(a) => Some(&a.principal),
        Err(_) => None,
    };
    if let Some(p) = who {
        let who = match p.client_id() {
            Some(c) => ("client_id", c),
            None => ("key_id", p.id()),
        };
        crate::ops::record_fields(&span, [("app_id", &p.app_id()), (who.0, &who.1)]);
    }
    let Admitted {
        principal,
        in_authorization,
        states,
    } = match decided {
        Ok(a) => a,
        Err(r) => return reject(st, &r.rejection, r.bearer, route),
    };
    let lifecycle = lifecycle_headers(&principal, st.engine.now(), st.cfg.expiry_warning);
    let forwarding = Forwarding {
        preserve_host: route.options.preserve_host,
        principal: &principal,
        in_authorization,
        credential_headers: &st.cfg.credential_headers,
        trusted_proxies: &st.cfg.trusted_proxies,
        peer: peer.ip(),
        client,
    };
    let mut resp = if websocket {
        let grant = keyward_engine::Granted {
            principal: principal.clone(),
            scopes: route.scopes.clone(),
            scope_mode: route.scope_mode,
            client_ip: client,
        };
        // Boxed: the tunnel's futures stay out of every plain request's future.
        Box::pin(proxy_upgrade(st, route, &forwarding, req, grant)).await
    } else {
        proxy(st, route, &forwarding, req).await
    };
    for (name, value) in problem::ratelimit_fields(&states).into_iter().chain(lifecycle) {
        resp.headers_mut().insert(name, value);
    }
    resp
}

fn reject(st: &GatewayState, r: &Rejection, bearer: bool, route: &Route) -> Response {
    tracing::debug!(route = %route.name, code = r.code(), "rejected");
    tagged(st.rejection_problem_on(r, bearer, route).into_response(), r.code())
}

async fn proxy(st: &GatewayState, route: &Route, forwarding: &Forwarding<'_>, req: Request<Body>) -> Response {
    let (mut parts, body) = req.into_parts();
    let client_version = parts.version;
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    upstream_headers(&mut parts.headers, authority.as_deref(), forwarding);
    route.options.request_headers.apply(&mut parts.headers);
    // A body the client got wrong (a bad chunk, a connection cut mid-body) fails the upstream
    // request too: that is the client's error (400), not the upstream's (502); one that grows
    // past the route's `max_body_size` is 413.
    // A request without a body (most GETs) has nothing to fail or to limit: nothing to wrap.
    if axum::body::HttpBody::is_end_stream(&body) {
        let fine = std::sync::atomic::AtomicU8::new(0);
        return send(
            st,
            route,
            forwarding,
            Request::from_parts(parts, RequestBody::Empty),
            &fine,
            client_version,
        )
        .await;
    }
    // What became of the client's body: 0 fine, 1 failed, 2 over `max_body_size`.
    let body_failed = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let flag = body_failed.clone();
    let body = match route.options.max_body_size {
        Some(max) => Body::new(http_body_util::Limited::new(
            body,
            usize::try_from(max).unwrap_or(usize::MAX),
        )),
        None => body,
    };
    let body = RequestBody::boxed(http_body_util::BodyExt::map_err(body, move |e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut too_large = false;
        while let Some(c) = cause {
            too_large |= c.is::<http_body_util::LengthLimitError>();
            cause = c.source();
        }
        flag.store(if too_large { 2 } else { 1 }, std::sync::atomic::Ordering::Relaxed);
        e
    }));
    send(
        st,
        route,
        forwarding,
        Request::from_parts(parts, body),
        &body_failed,
        client_version,
    )
    .await
}

/// Sends an admitted request to the route's group and makes the client's response of the
/// answer (`body_failed`: what became of the client's body, see [`proxy`]).
async fn send(
    st: &GatewayState,
    route: &Route,
    forwarding: &Forwarding<'_>,
    req: Request<RequestBody>,
    body_failed: &std::sync::atomic::AtomicU8,
    client_version: axum::http::Version,
) -> Response {
    let Some(group) = route.upstream.group.as_ref() else {
        return tagged(problem::upstream_unreachable().into_response(), "upstream_unavailable");
    };
    let hash_key = (group.balance() == Balance::Hash).then(|| {
        let p = forwarding.principal;
        match group.hash_by() {
            HashBy::Key => hash_key(p.id().as_bytes()),
            HashBy::App => hash_key(p.app_id().as_bytes()),
            HashBy::ClientIp => match forwarding.client {
                std::net::IpAddr::V4(a) => hash_key(&a.octets()),
                std::net::IpAddr::V6(a) => hash_key(&a.octets()),
            },
        }
    });
    let opts = SendOptions {
        connect_timeout: route.options.connect_timeout.unwrap_or(st.connect_timeout()),
        timeout: route.options.timeout.unwrap_or(st.upstream_timeout()),
        hash_key,
        strip_prefix: route.options.strip_prefix.then_some(route.path_prefix.as_str()),
    };
    let started = Instant::now();
    let answer = group.send(req, &opts).await;
    st.metrics.route_upstream(&route.series, &route.name, started.elapsed());
    match answer {
        Err(e) if body_failed.load(std::sync::atomic::Ordering::Relaxed) != 0 => {
            if let (2, Some(max)) = (
                body_failed.load(std::sync::atomic::Ordering::Relaxed),
                route.options.max_body_size,
            ) {
                return tagged(problem::body_too_large(max).into_response(), "body_too_large");
            }
            tracing::debug!(route = %route.name, error = %e, "the client's request body failed");
            let p = Problem::bad_request("invalid_body", "the request body could not be read");
            tagged(p.into_response(), "invalid_body")
        }
        Err(e) => upstream_failed(route, &e),
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            // The client gets its own protocol whatever the upstream spoke: an HTTP/1.0
            // upstream must not turn a keep-alive HTTP/1.1 client into an HTTP/1.0 one.
            parts.version = client_version;
            route.options.response_headers.apply(&mut parts.headers);
            tagged(Response::from_parts(parts, Body::new(body)), "allowed")
        }
    }
}

/// A WebSocket handshake through the route's upstream, then a tunnel (see [`crate::tunnel`]).
async fn proxy_upgrade(
    st: &GatewayState,
    route: &Route,
    forwarding: &Forwarding<'_>,
    req: Request<Body>,
    grant: keyward_engine::Granted,
) -> Response {
    let Some(group) = route.upstream.group.as_ref() else {
        return tagged(problem::upstream_unreachable().into_response(), "upstream_unavailable");
    };
    let (mut parts, _) = req.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    upstream_headers(&mut parts.headers, authority.as_deref(), forwarding);
    route.options.request_headers.apply(&mut parts.headers);
    // The hop-by-hop pair that asks the upstream to switch, put back after the hygiene.
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(u) = upgrade {
        parts.headers.insert(header::UPGRADE, u);
    }
    let opts = SendOptions {
        connect_timeout: route.options.connect_timeout.unwrap_or(st.connect_timeout()),
        timeout: route.options.timeout.unwrap_or(st.upstream_timeout()),
        hash_key: None,
        strip_prefix: route.options.strip_prefix.then_some(route.path_prefix.as_str()),
    };
    let settings = crate::tunnel::TunnelSettings {
        idle_timeout: route.options.idle_timeout,
        max_duration: route.options.max_tunnel_duration,
    };
    match crate::tunnel::proxy_upgrade(&st.tunnels, group, &opts, parts, grant, settings, st.engine.now()).await {
        Ok(resp) => tagged(resp, "allowed"),
        Err(e) => upstream_failed(route, &e),
    }
}

/// An upstream failure as the client sees it: never the upstream's internals (the reason is
/// logged).
fn upstream_failed(route: &Route, e: &UpstreamError) -> Response {
    let code = e.code();
    match e {
        UpstreamError::Timeout { .. } => {
            tracing::warn!(route = %route.name, error = %e, "upstream timed out");
            tagged(problem::upstream_timeout().into_response(), "upstream_timeout")
        }
        UpstreamError::NoHealthy { .. } => {
            tracing::warn!(route = %route.name, error = %e, "no healthy upstream");
            tagged(problem::no_healthy_upstream().into_response(), "no_healthy_upstream")
        }
        UpstreamError::Tls { .. } => {
            tracing::warn!(route = %route.name, error = %e, "upstream TLS failed");
            tagged(problem::upstream_tls().into_response(), "upstream_tls")
        }
        _ => {
            tracing::warn!(route = %route.name, error = %e, code, "upstream request failed");
            tagged(problem::upstream_unreachable().into_response(), "upstream_unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, methods: &[Method]) -> Route {
        Route {
            name: prefix.into(),
            path_prefix: prefix.into(),
            methods: methods.to_vec(),
            upstream: Upstream::parse("http://127.0.0.1:1").unwrap(),
            scopes: vec![],
            scope_mode: ScopeMode::AllOf,
            limits: RouteLimits::default(),
            tokens: false,
            api_keys: true,
            client_certificates: false,
            publishable: false,
            cors: None,
            audience: "keyward".into(),
            options: Default::default(),
            series: Default::default(),
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let r = route("/fact", &[]);
        assert!(r.matches_path("/fact"));
        assert!(r.matches_path("/fact/1"));
        assert!(!r.matches_path("/facts"));
        assert!(!r.matches_path("/fac"));
        assert!(route("/", &[]).matches_path("/anything"));
        assert!(route("/api/", &[]).matches_path("/api/x"));
    }

    #[test]
    fn longest_prefix_then_method() {
        let routes = vec![
            route("/facts", &[Method::GET]),
            route("/facts", &[Method::POST]),
            route("/", &[Method::GET]),
        ];
        assert_eq!(
            find_route(&routes, &Method::POST, None, "/facts").unwrap().methods,
            vec![Method::POST]
        );
        let err = find_route(&routes, &Method::DELETE, None, "/facts").unwrap_err();
        assert_eq!(err.status, 405);
        assert_eq!(
            find_route(&routes, &Method::GET, None, "/other").unwrap().path_prefix,
            "/"
        );
        assert_eq!(
            find_route(&routes[..2], &Method::GET, None, "/x").unwrap_err().status,
            404
        );
        // HEAD wherever GET is (RFC 9110 §9.3.2), and only there.
        assert_eq!(
            find_route(&routes, &Method::HEAD, None, "/facts").unwrap().methods,
            vec![Method::GET]
        );
        assert_eq!(
            find_route(&routes[1..2], &Method::HEAD, None, "/facts")
                .unwrap_err()
                .status,
            405
        );
    }

    #[test]
    fn hosts_are_matched_before_paths() {
        use crate::route::HostPattern;
        let on = |prefix: &str, hosts: &[&str]| {
            let mut r = route(prefix, &[]);
            r.name = format!("{prefix} {hosts:?}");
            r.options.hosts = hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect();
            r
        };
        let routes = vec![
            on("/", &[]),
            on("/api", &[]),
            on("/", &["api.example.com"]),
            on("/", &["*.example.com"]),
            on("/v2", &["*.example.com"]),
        ];
        let name = |host: Option<&str>, path: &str| find_route(&routes, &Method::GET, host, path).unwrap().name.clone();
        // An exact host beats a longer path on hostless routes.
        assert_eq!(name(Some("api.example.com"), "/api/x"), "/ [\"api.example.com\"]");
        // A wildcard host, then the longest prefix among its routes.
        assert_eq!(name(Some("eu.example.com"), "/v2/x"), "/v2 [\"*.example.com\"]");
        assert_eq!(name(Some("eu.example.com"), "/api"), "/ [\"*.example.com\"]");
        // Other hosts, and requests without a host (no hosts considered), take hostless routes.
        assert_eq!(name(Some("other.org"), "/api"), "/api []");
        assert_eq!(name(Some("example.com"), "/x"), "/ []");
        // Only host routes: another host finds nothing.
        assert_eq!(
            find_route(&routes[2..3], &Method::GET, Some("other.org"), "/")
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn suspicious_paths() {
        for p in [
            "/a/../b",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a%2fb",
            "/./a",
            "/a/..",
            "/a%5cb",
            "/a%252e%252e/",
            "/a/..;/b",
            "/a/%2e%2e;x=1/b",
            "//a",
            "/a//b",
        ] {
            assert!(suspicious_path(p), "{p}");
        }
        for p in ["/fact", "/facts/1", "/a.b/c..d", "/", "/a/", "/a;v=1/b"] {
            assert!(!suspicious_path(p), "{p}");
        }
    }

    #[test]
    fn upstream_urls() {
        assert!(Upstream::parse("http://127.0.0.1:9000").is_ok());
        assert_eq!(Upstream::parse("http://h:1/base/").unwrap().url(), "http://h:1/base");
        assert_eq!(Upstream::parse("https://h:8443").unwrap().url(), "https://h:8443");
        assert!(Upstream::parse("ftp://h").is_err());
        assert!(Upstream::parse("127.0.0.1:9000").is_err());
        assert!(Upstream::parse("http://h/?q=1").is_err());
        // A group's name.
        assert_eq!(Upstream::parse("cats-api").unwrap().url(), "cats-api");
        for bad in ["", "has space", "a/b", &"x".repeat(65)] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?}");
        }
    }
}
