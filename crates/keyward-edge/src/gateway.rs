//! The gateway: a reverse proxy that runs every request through the pipeline
//! (route → extract credential → authenticate → authorize → proxy).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use keyward_core::decision::ScopeMode;
use keyward_core::{KeyRecord, RequestFacts, Scope};
use keyward_engine::{Engine, Outcome, Rejection, RequestMeta, RouteLimits};

use crate::metrics::Metrics;
use crate::problem::{self, Problem, RejectionStyle};

/// What became of a gateway request, as a fixed label value for the metrics: `allowed`, a
/// rejection's or problem's stable code, `preflight`. Put in the response's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutcomeTag(pub &'static str);

fn tagged(mut resp: Response, outcome: &'static str) -> Response {
    resp.extensions_mut().insert(OutcomeTag(outcome));
    resp
}

/// An upstream base URL, split once at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    scheme: String,
    authority: String,
    base_path: String,
}

impl Upstream {
    /// No upstream at all: the routes the verify API makes up for requests that match no
    /// configured route are never proxied.
    pub(crate) fn unused() -> Upstream {
        Upstream {
            scheme: "http".into(),
            authority: "0.0.0.0:0".into(),
            base_path: String::new(),
        }
    }

    /// Parses `http://host:port[/base]`. Only plain HTTP upstreams for now.
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let uri: Uri = url.parse().map_err(|e| format!("invalid upstream URL {url:?}: {e}"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| format!("upstream URL {url:?} has no scheme"))?;
        if scheme != "http" {
            return Err(format!("upstream URL {url:?}: only http:// upstreams are supported"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("upstream URL {url:?} has no host"))?
            .to_string();
        if uri.query().is_some() {
            return Err(format!("upstream URL {url:?} must not have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Upstream {
            scheme: scheme.to_owned(),
            authority,
            base_path,
        })
    }

    /// The upstream as a URL (`http://host:port/base`), for the admin API's route list.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
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

    fn allows(&self, m: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(m)
    }
}

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The initial route table ([`GatewayState`] keeps it swappable: see
    /// [`GatewayState::routes`] and [`GatewayState::replace_routes`]).
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
}

/// Shared state of the gateway listener.
pub struct GatewayState {
    engine: Arc<Engine>,
    /// Everything but the routes (`cfg.routes` is left empty).
    cfg: GatewayConfig,
    /// The route table: read once per request (a pointer load), replaced whole on reload.
    routes: arc_swap::ArcSwap<Vec<Route>>,
    client: Client<HttpConnector, Body>,
    style: RejectionStyle,
    metrics: Arc<Metrics>,
}

impl GatewayState {
    pub fn new(engine: Arc<Engine>, mut cfg: GatewayConfig) -> GatewayState {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(512)
            .build(connector);
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
        };
        let routes = std::mem::take(&mut cfg.routes);
        let metrics = Arc::new(Metrics::new(engine.clone()));
        metrics.set_routes(routes.len());
        GatewayState {
            engine,
            cfg,
            routes: arc_swap::ArcSwap::from_pointee(routes),
            client,
            style,
            metrics,
        }
    }

    /// The current route table (held for the whole request, so a reload never changes the
    /// route of a request in flight).
    pub fn routes(&self) -> Arc<Vec<Route>> {
        self.routes.load_full()
    }

    /// Swaps the route table (configuration reload): the next request uses `routes`.
    pub fn replace_routes(&self, routes: Vec<Route>) {
        self.metrics.set_routes(routes.len());
        self.routes.store(Arc::new(routes));
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The gateway's router: every request goes through [`handle`].
pub fn gateway_router(state: Arc<GatewayState>) -> Router {
    let base = Router::new().fallback(handle).with_state(state.clone());
    if state.engine.token_service().is_ok() {
        crate::oauth::routes(state).merge(base)
    } else {
        base
    }
}

impl GatewayState {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.cfg.trusted_proxies
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// The problem the gateway answers for a rejection (status, challenges, limit headers).
    pub(crate) fn rejection_problem(&self, r: &Rejection, bearer: bool) -> Problem {
        let mut style = self.style.clone();
        style.bearer = bearer;
        problem::rejection(r, &style)
    }

    /// Every scope some route requires (for the metadata's `scopes_supported`).
    pub fn route_scopes(&self) -> Vec<String> {
        self.routes()
            .iter()
            .flat_map(|r| r.scopes.iter().map(|s| s.to_string()))
            .collect()
    }
}

/// A credential found in the request.
struct Credential<'a> {
    value: &'a str,
    /// Came in `Authorization: Bearer`.
    bearer: bool,
}

/// Where the credential was, so that it can be stripped.
enum Extracted<'a> {
    None,
    One(Credential<'a>),
    Malformed { bearer: bool },
    Multiple,
}

fn extract<'a>(headers: &'a HeaderMap, names: &[HeaderName], looks_like_key: impl Fn(&str) -> bool) -> Extracted<'a> {
    let mut found: Option<Extracted<'a>> = None;
    let mut count = 0usize;
    for name in names {
        for v in headers.get_all(name) {
            count += 1;
            if v.is_empty() {
                // An empty header is treated as no credential at all (classic behaviour).
                count -= 1;
                continue;
            }
            found = Some(match v.to_str() {
                Ok(s) => Extracted::One(Credential {
                    value: s.trim(),
                    bearer: false,
                }),
                Err(_) => Extracted::Malformed { bearer: false },
            });
        }
    }
    for v in headers.get_all(header::AUTHORIZATION) {
        let Ok(s) = v.to_str() else { continue };
        let Some((scheme, rest)) = s.split_once(' ') else {
            continue;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let token = rest.trim();
        if looks_like_key(token) {
            count += 1;
            found = Some(Extracted::One(Credential {
                value: token,
                bearer: true,
            }));
        }
    }
    match count {
        0 => found.unwrap_or(Extracted::None),
        1 => found.unwrap_or(Extracted::None),
        _ => Extracted::Multiple,
    }
}

/// Rejects paths with dot segments (raw or percent-encoded, also with `;` parameters), encoded
/// slashes, backslashes, double encoding or empty segments (`//`): the upstream might normalise
/// them into a path that the route table did not authorize (`//admin` is `/admin` to a server
/// that merges slashes, but matched the catch-all route here).
pub(crate) fn suspicious_path(path: &str) -> bool {
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

pub(crate) fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|n| n.contains(&ip))
}

/// Parses one forwarded-for element: `203.0.113.7`, `203.0.113.7:4711`, `[2001:db8::1]:4711`,
/// `"[2001:db8::1]"`, `2001:db8::1`. `unknown` and obfuscated identifiers give `None`.
fn parse_forwarded_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let inner = rest.split(']').next()?;
        return inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (host, port) = s.rsplit_once(':')?;
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    None
}

/// The addresses a chain of proxies reported, oldest first: `Forwarded` (RFC 7239) when
/// present, else `X-Forwarded-For`. Unparsable elements are kept as `None`.
fn forwarded_chain(h: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = h
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|elem| {
                elem.split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_forwarded_addr(v))
            })
            .collect();
    }
    h.get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .flat_map(|v| v.unwrap_or("\u{0}").split(',').collect::<Vec<_>>())
        .map(parse_forwarded_addr)
        .collect()
}

/// The client's address: the direct peer, unless the peer is a trusted proxy, in which case
/// the right-most address of the forwarded chain that is not itself a trusted proxy. An
/// unparsable element stops the walk at the last trusted hop.
pub fn client_ip(peer: IpAddr, h: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_chain(h).into_iter().rev() {
        match hop {
            None => return client,
            Some(ip) => {
                client = ip;
                if !trusted(ip, proxies) {
                    return ip;
                }
            }
        }
    }
    client
}

/// A `Bearer` value that is not shaped like an API key: an access token.
fn bearer_jwt(headers: &HeaderMap, looks_like_key: impl Fn(&str) -> bool) -> Option<(&str, bool)> {
    let mut found = None;
    for v in headers.get_all(header::AUTHORIZATION) {
        let s = v.to_str().ok()?;
        let (scheme, rest) = s.split_once(' ')?;
        let dpop = scheme.eq_ignore_ascii_case("dpop");
        if !dpop && !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let t = rest.trim();
        if t.is_empty() || looks_like_key(t) {
            return None;
        }
        if found.is_some() {
            return None;
        }
        found = Some((t, dpop));
    }
    found
}

/// Entry points for the fuzz targets in `fuzz/` (re-exported by `crate::fuzz_api`); not an API.
#[doc(hidden)]
pub mod fuzz {
    use super::{HeaderMap, HeaderName};

    /// What the credential extraction found, with the private types spelled out.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Found<'a> {
        None,
        One { value: &'a str, bearer: bool },
        Malformed { bearer: bool },
        Multiple,
    }

    /// The gateway's credential extraction (configured header names, then `Authorization: Bearer`).
    pub fn extract<'a>(
        headers: &'a HeaderMap,
        names: &[HeaderName],
        looks_like_key: impl Fn(&str) -> bool,
    ) -> Found<'a> {
        match super::extract(headers, names, looks_like_key) {
            super::Extracted::None => Found::None,
            super::Extracted::One(c) => Found::One {
                value: c.value,
                bearer: c.bearer,
            },
            super::Extracted::Malformed { bearer } => Found::Malformed { bearer },
            super::Extracted::Multiple => Found::Multiple,
        }
    }

    /// The gateway's access-token extraction (`Bearer` or `DPoP` values not shaped like a key).
    pub fn bearer_jwt(headers: &HeaderMap, looks_like_key: impl Fn(&str) -> bool) -> Option<(&str, bool)> {
        super::bearer_jwt(headers, looks_like_key)
    }

    /// The path check run before routing.
    pub fn suspicious_path(path: &str) -> bool {
        super::suspicious_path(path)
    }
}

/// Verifies an access token for `route` and turns it into the record the rest of the
/// pipeline uses: the client (or exchanged key) as subject, its scopes, its app and limits.
/// What a DPoP check needs from the request.
struct ProofInput<'a> {
    /// The token came with the `DPoP` scheme.
    dpop: bool,
    headers: &'a HeaderMap,
    method: &'a str,
    path: &'a str,
    /// Overrides `oauth.issuer` + `path` as the `htu` the proof must name.
    htu: Option<&'a str>,
    /// The client certificate (DER) of the TLS connection, if any.
    peer_cert: Option<&'a [u8]>,
}

async fn token_principal(
    st: &GatewayState,
    route: &Route,
    token: &str,
    client: IpAddr,
    proof: &ProofInput<'_>,
) -> Result<Arc<KeyRecord>, Rejection> {
    let p = st
        .engine
        .verify_access_token(token, &route.audience)
        .await
        .map_err(|e| Rejection::InvalidToken { reason: e.code() })?;
    // Certificate binding (RFC 8705 §3): the connection must carry the certificate the token
    // was issued to.
    if let Some(x5t) = p.claims.cnf.as_ref().and_then(|c| c.x5t_s256.as_deref()) {
        let presented = proof.peer_cert.map(keyward_engine::token::cert_thumbprint);
        if !presented.is_some_and(|t| keyward_core::secret::ct_eq(t.as_bytes(), x5t.as_bytes())) {
            return Err(Rejection::InvalidToken {
                reason: "certificate_binding_mismatch",
            });
        }
    }
    // Sender constraint (RFC 9449 §7): a DPoP-bound token needs the DPoP scheme and a proof
    // by the bound key; a plain token must not pretend to be bound.
    let bound = p.claims.cnf.as_ref().and_then(|c| c.jkt.as_deref());
    match (proof.dpop, bound) {
        (false, Some(_)) => {
            return Err(Rejection::InvalidToken {
                reason: "dpop_bound_token_sent_as_bearer",
            })
        }
        (true, None) => {
            return Err(Rejection::InvalidToken {
                reason: "token_not_dpop_bound",
            })
        }
        (false, None) => {}
        (true, Some(jkt)) => {
            let svc = st
                .engine
                .token_service()
                .map_err(|_| Rejection::InvalidToken { reason: "unknown_kid" })?;
            let proofs: Vec<_> = proof.headers.get_all("dpop").iter().collect();
            let value = match proofs.as_slice() {
                [one] => one.to_str().map_err(|_| Rejection::InvalidDpop {
                    reason: "the DPoP header is not ASCII".into(),
                    nonce: None,
                })?,
                [] => {
                    return Err(Rejection::InvalidDpop {
                        reason: "a DPoP proof is required".into(),
                        nonce: None,
                    })
                }
                _ => {
                    return Err(Rejection::InvalidDpop {
                        reason: "send exactly one DPoP header".into(),
                        nonce: None,
                    })
                }
            };
            let htu = match proof.htu {
                Some(u) => u.to_owned(),
                None => format!("{}{}", svc.config().issuer, proof.path),
            };
            let now = st.engine.now().unix_timestamp();
            match svc
                .dpop
                .verify_shared(value, proof.method, &htu, Some(token), now)
                .await
            {
                Ok(v) if keyward_core::secret::ct_eq(v.jkt.as_bytes(), jkt.as_bytes()) => {}
                Ok(_) => {
                    return Err(Rejection::InvalidDpop {
                        reason: "the proof is signed by another key".into(),
                        nonce: None,
                    })
                }
                Err(keyward_engine::dpop::DpopError::UseNonce) => {
                    return Err(Rejection::InvalidDpop {
                        reason: "a DPoP nonce is required".into(),
                        nonce: Some(svc.dpop.current_nonce(now)),
                    })
                }
                Err(e) => {
                    return Err(Rejection::InvalidDpop {
                        reason: e.to_string(),
                        nonce: None,
                    })
                }
            }
        }
    }
    let facts = RequestFacts {
        required_scopes: &route.scopes,
        scope_mode: route.scope_mode,
        client_ip: Some(client),
    };
    if let keyward_core::Decision::Deny(keyward_core::Denial::InsufficientScope { missing }) =
        keyward_core::decision::check_scopes(&p.scopes, &facts)
    {
        return Err(Rejection::InsufficientScope {
            key_id: p.claims.client_id.clone(),
            missing,
        });
    }
    if !p.policy.ips.allows(client) {
        return Err(Rejection::IpNotAllowed {
            key_id: p.claims.client_id.clone(),
        });
    }
    Ok(p.record.clone())
}

pub(crate) fn find_route<'r>(routes: &'r [Route], method: &Method, path: &str) -> Result<&'r Route, Problem> {
    let best_len = routes
        .iter()
        .filter(|r| r.matches_path(path))
        .map(|r| r.path_prefix.len())
        .max()
        .ok_or_else(Problem::not_found)?;
    let candidates = routes
        .iter()
        .filter(|r| r.path_prefix.len() == best_len && r.matches_path(path));
    let mut allow: Vec<&str> = Vec::new();
    for r in candidates {
        if r.allows(method) {
            return Ok(r);
        }
        for m in &r.methods {
            if !allow.contains(&m.as_str()) {
                allow.push(m.as_str());
            }
        }
    }
    Err(Problem::method_not_allowed(&allow.join(", ")))
}

/// What the decision phases need to know about a request: the gateway's own request, or one
/// described to the verify API or the forward-auth endpoint.
pub(crate) struct RequestView<'a> {
    /// Headers that may carry the credential (and the DPoP proof).
    pub headers: &'a HeaderMap,
    pub method: &'a Method,
    pub path: &'a str,
    pub client: IpAddr,
    /// The client certificate of the TLS connection, if any.
    pub peer_cert: Option<keyward_engine::mtls::PresentedCert<'a>>,
    /// The `htu` a DPoP proof must name, when it is not `oauth.issuer` + `path`.
    pub htu: Option<&'a str>,
}

/// A request that passed authentication, authorization and the limits.
pub(crate) struct Admitted {
    pub record: Arc<KeyRecord>,
    /// The OAuth client, when an access token stood in for a key.
    pub token_client: Option<String>,
    /// The credential came in `Authorization`.
    pub bearer: bool,
    /// Limit states after this request (for `RateLimit` fields).
    pub states: Vec<keyward_engine::LimitState>,
}

/// A refused request: the reason, and whether the credential came in `Authorization`.
pub(crate) struct Refused {
    pub rejection: Rejection,
    pub bearer: bool,
}

fn refused(rejection: Rejection, bearer: bool) -> Refused {
    Refused { rejection, bearer }
}

/// The decision phases of the pipeline, shared by the gateway, the verify API and
/// forward-auth: extract credential → authenticate → authorize → limit (and account, which
/// `verify_key` and `admit` do). Whatever calls this consumes limits and records usage exactly
/// as a proxied request does.
pub(crate) async fn decide(st: &GatewayState, route: &Route, req: &RequestView<'_>) -> Result<Admitted, Refused> {
    let client = req.client;
    let format = st.engine.format();
    let jwt = if route.tokens {
        bearer_jwt(req.headers, |t| format.looks_like_key(t))
    } else {
        None
    };
    let mut token_client: Option<String> = None;
    let (record, bearer) = if let Some((token, dpop)) = jwt {
        let has_key = st
            .cfg
            .credential_headers
            .iter()
            .any(|h| req.headers.get(h).is_some_and(|v| !v.is_empty()));
        if has_key {
            return Err(refused(Rejection::Multiple, true));
        }
        let proof = ProofInput {
            dpop,
            headers: req.headers,
            method: req.method.as_str(),
            path: req.path,
            htu: req.htu,
            peer_cert: req.peer_cert.map(|c| c.der),
        };
        match token_principal(st, route, token, client, &proof).await {
            Ok(rec) => {
                token_client = Some(rec.id.clone());
                (rec, true)
            }
            Err(r) => return Err(refused(r, true)),
        }
    } else {
        match extract(req.headers, &st.cfg.credential_headers, |t| format.looks_like_key(t)) {
            // A certificate-only route: the registered client certificate is the credential.
            Extracted::None if route.client_certificates && req.peer_cert.is_some() => {
                let facts = RequestFacts {
                    required_scopes: &route.scopes,
                    scope_mode: route.scope_mode,
                    client_ip: Some(client),
                };
                match st.engine.certificate_principal(req.peer_cert, &facts).await {
                    Ok(rec) => {
                        token_client = Some(rec.id.clone());
                        (Arc::new(rec), false)
                    }
                    Err(r) => return Err(refused(r, false)),
                }
            }
            Extracted::None if route.client_certificates => return Err(refused(Rejection::CertificateRequired, false)),
            Extracted::None => return Err(refused(Rejection::Missing, false)),
            Extracted::One(_) if !route.api_keys => return Err(refused(Rejection::Missing, false)),
            Extracted::Multiple => return Err(refused(Rejection::Multiple, false)),
            Extracted::Malformed { bearer } => {
                return Err(refused(
                    Rejection::Malformed(keyward_core::error::KeyFormatError::Alphabet),
                    bearer,
                ))
            }
            Extracted::One(c) => {
                let facts = RequestFacts {
                    required_scopes: &route.scopes,
                    scope_mode: route.scope_mode,
                    client_ip: Some(client),
                };
                let meta = RequestMeta {
                    ip: Some(client),
                    method: req.method.as_str(),
                    path: req.path,
                    user_agent: req.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
                };
                match st.engine.verify_key(c.value, &facts, &meta).await {
                    Ok(rec) => {
                        if rec.lifecycle.exchange_only {
                            return Err(refused(Rejection::ExchangeOnly { key_id: rec.id.clone() }, c.bearer));
                        }
                        if let Err(r) = st.engine.check_mtls_requirement(&rec, req.peer_cert).await {
                            return Err(refused(r, c.bearer));
                        }
                        let origin = req.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
                        if let Err(r) = st.engine.check_publishable(&rec, route.publishable, origin) {
                            return Err(refused(r, c.bearer));
                        }
                        (rec, c.bearer)
                    }
                    Err(r) => return Err(refused(r, c.bearer)),
                }
            }
        }
    };
    let outcome = match st.engine.admit_from(&record, &route.limits, Some(client)).await {
        Ok(o) => o,
        Err(r) => {
            if matches!(r, Rejection::LimiterUnavailable { .. }) {
                st.metrics.limiter_decision("unavailable");
            }
            return Err(refused(r, bearer));
        }
    };
    st.metrics.limiter_decision(match &outcome {
        Outcome::Allowed { .. } => "allowed",
        Outcome::RateLimited { .. } => "rate_limited",
        Outcome::QuotaExhausted { .. } => "quota_exhausted",
    });
    let states = match outcome {
        Outcome::Allowed { states } => states,
        Outcome::RateLimited {
            policy,
            retry_after,
            states,
        } => {
            return Err(refused(
                Rejection::RateLimited {
                    policy,
                    retry_after,
                    states,
                },
                bearer,
            ))
        }
        Outcome::QuotaExhausted {
            policy,
            retry_after,
            states,
        } => {
            return Err(refused(
                Rejection::QuotaExhausted {
                    policy,
                    retry_after,
                    states,
                },
                bearer,
            ))
        }
    };
    Ok(Admitted {
        record,
        token_client,
        bearer,
        states,
    })
}

/// The per-request pipeline, counted in the metrics by route name (never by path).
async fn handle(
    State(st): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let started = Instant::now();
    let _in_flight = st.metrics.in_flight();
    let routes = st.routes();
    let (route, resp) = route_request(&st, &routes, peer, req).await;
    let outcome = resp.extensions().get::<OutcomeTag>().map_or("other", |o| o.0);
    let route_name = route.map_or(crate::metrics::UNMATCHED, |r| r.name.as_str());
    // On the request span (crate::ops): exported with it as OpenTelemetry attributes.
    let span = tracing::Span::current();
    span.record("route", route_name);
    span.record("outcome", outcome);
    st.metrics
        .request(route_name, outcome, resp.status().as_u16(), started.elapsed());
    resp
}

/// Routes a request and runs it: the route it took (if any) and the response.
async fn route_request<'r>(
    st: &Arc<GatewayState>,
    routes: &'r [Route],
    peer: SocketAddr,
    req: Request<Body>,
) -> (Option<&'r Route>, Response) {
    let path = req.uri().path().to_owned();
    let path = path.as_str();
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
        let route = match wanted.map(|m| find_route(routes, &m, path)) {
            Some(Ok(r)) => Some(r),
            _ => routes
                .iter()
                .filter(|r| r.cors.is_some() && r.matches_path(path))
                .max_by_key(|r| r.path_prefix.len()),
        };
        if let Some((r, cors)) = route.and_then(|r| r.cors.as_ref().map(|c| (r, c))) {
            return (Some(r), tagged(cors.preflight(req.headers()), "preflight"));
        }
    }
    let route = match find_route(routes, req.method(), path) {
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
    let st = st.clone();
    let path = req.uri().path();
    let client = client_ip(peer.ip(), req.headers(), &st.cfg.trusted_proxies);
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
    let Admitted {
        record,
        token_client,
        bearer,
        states,
    } = match decide(&st, route, &view).await {
        Ok(a) => a,
        Err(r) => return reject(&st, &r.rejection, r.bearer, route),
    };
    tracing::debug!(route = %route.name, key_id = %record.id, app_id = %record.app_id, "allowed");
    let lifecycle = lifecycle_headers(&record, st.engine.now(), st.cfg.expiry_warning);
    let mut resp = proxy(
        &st,
        route,
        record,
        token_client.as_deref(),
        bearer,
        peer.ip(),
        client,
        req,
    )
    .await;
    for (name, value) in problem::ratelimit_fields(&states).into_iter().chain(lifecycle) {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// An HTTP-date (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&fmt).unwrap_or_default()
}

/// `Deprecation` (RFC 9745, `@<unix seconds>`) and `Sunset` (RFC 8594, an HTTP-date) for a
/// key in its rotation grace period, or expiring within `window`: clients learn before they
/// break.
pub fn lifecycle_headers(
    record: &KeyRecord,
    now: time::OffsetDateTime,
    window: Duration,
) -> Vec<(HeaderName, HeaderValue)> {
    let Some(expires) = record.expires_at else {
        return Vec::new();
    };
    let since = match record.lifecycle.rotated_at {
        Some(rotated) => rotated,
        // An imported legacy secret is deprecated from the day it was imported.
        None if record.lifecycle.legacy => record.created_at,
        None => {
            let window = time::Duration::try_from(window).unwrap_or(time::Duration::ZERO);
            let from = expires - window;
            if now < from {
                return Vec::new();
            }
            from
        }
    };
    let mut out = Vec::with_capacity(2);
    if let Ok(v) = HeaderValue::from_str(&format!("@{}", since.unix_timestamp())) {
        out.push((HeaderName::from_static("deprecation"), v));
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(expires)) {
        out.push((HeaderName::from_static("sunset"), v));
    }
    out
}

fn reject(st: &GatewayState, r: &Rejection, bearer: bool, route: &Route) -> Response {
    tracing::debug!(route = %route.name, code = r.code(), "rejected");
    let mut style = st.style.clone();
    style.bearer = bearer;
    tagged(problem::rejection(r, &style).into_response(), r.code())
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// Header-safe text: visible ASCII kept, everything else percent-encoded.
pub(crate) fn header_text(s: &str) -> HeaderValue {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[allow(clippy::too_many_arguments)]
async fn proxy(
    st: &GatewayState,
    route: &Route,
    record: Arc<KeyRecord>,
    token_client: Option<&str>,
    bearer: bool,
    peer: IpAddr,
    client: IpAddr,
    req: Request<Body>,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = format!(
        "{}://{}{}{}",
        route.upstream.scheme, route.upstream.authority, route.upstream.base_path, pq
    );
    let Ok(uri) = target.parse::<Uri>() else {
        let p = Problem::bad_request("invalid_path", "the request target cannot be forwarded");
        return tagged(p.into_response(), "invalid_path");
    };
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    for name in &st.cfg.credential_headers {
        h.remove(name);
    }
    if bearer {
        h.remove(header::AUTHORIZATION);
    }
    h.remove("dpop");
    let spoofed: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-keyward-"))
        .cloned()
        .collect();
    for k in spoofed {
        h.remove(k);
    }
    if let Some(host) = h.remove(header::HOST) {
        h.insert(HeaderName::from_static("x-forwarded-host"), host);
    } else if let Some(a) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            h.insert(HeaderName::from_static("x-forwarded-host"), v);
        }
    }
    // Forwarded-for headers from an untrusted peer are dropped, never passed on.
    let peer_ip = peer.to_canonical();
    let from_trusted = trusted(peer_ip, &st.cfg.trusted_proxies);
    let prev: Vec<String> = if from_trusted {
        h.get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    } else {
        h.remove(header::FORWARDED);
        Vec::new()
    };
    let mut chain = prev;
    chain.push(peer_ip.to_string());
    let xff = chain.join(", ");
    if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
        h.insert(HeaderName::from_static("x-keyward-client-ip"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    h.insert(HeaderName::from_static("x-keyward-app"), header_text(&record.app_name));
    h.insert(HeaderName::from_static("x-keyward-app-id"), header_text(&record.app_id));
    match token_client {
        Some(c) => h.insert(HeaderName::from_static("x-keyward-client-id"), header_text(c)),
        None => h.insert(HeaderName::from_static("x-keyward-key-id"), header_text(&record.id)),
    };
    let scopes = record.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
    h.insert(HeaderName::from_static("x-keyward-scopes"), header_text(&scopes));
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    // A body the client got wrong (a bad chunk, a connection cut mid-body) fails the upstream
    // request too: that is the client's error (400), not the upstream's (502).
    let body_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = body_failed.clone();
    let body = Body::new(http_body_util::BodyExt::map_err(body, move |e| {
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        e
    }));
    let upstream_req = Request::from_parts(parts, body);
    let started = Instant::now();
    let answer = tokio::time::timeout(st.cfg.upstream_timeout, st.client.request(upstream_req)).await;
    st.metrics.upstream(&route.name, started.elapsed());
    match answer {
        Err(_) => tagged(problem::upstream_timeout().into_response(), "upstream_timeout"),
        Ok(Err(e)) if body_failed.load(std::sync::atomic::Ordering::Relaxed) => {
            tracing::debug!(route = %route.name, error = %e, "the client's request body failed");
            let p = Problem::bad_request("invalid_body", "the request body could not be read");
            tagged(p.into_response(), "invalid_body")
        }
        Ok(Err(e)) => {
            tracing::warn!(route = %route.name, error = %e, "upstream request failed");
            tagged(problem::upstream_unreachable().into_response(), "upstream_unavailable")
        }
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            tagged(Response::from_parts(parts, Body::new(body)), "allowed")
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
            find_route(&routes, &Method::POST, "/facts").unwrap().methods,
            vec![Method::POST]
        );
        let err = find_route(&routes, &Method::DELETE, "/facts").unwrap_err();
        assert_eq!(err.status, 405);
        assert_eq!(find_route(&routes, &Method::GET, "/other").unwrap().path_prefix, "/");
        assert_eq!(find_route(&routes[..2], &Method::GET, "/x").unwrap_err().status, 404);
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
        assert_eq!(Upstream::parse("http://h:1/base/").unwrap().base_path, "/base");
        assert!(Upstream::parse("ftp://h").is_err());
        assert!(Upstream::parse("127.0.0.1:9000").is_err());
        assert!(Upstream::parse("http://h/?q=1").is_err());
    }

    #[test]
    fn http_dates_and_lifecycle_headers() {
        let t = time::OffsetDateTime::from_unix_timestamp(784_111_777).unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut r = KeyRecord {
            id: "key_1".into(),
            app_id: "app_1".into(),
            app_name: "a".into(),
            name: None,
            hint: "h".into(),
            env: keyward_core::KeyEnv::Live,
            scopes: vec![],
            expires_at: None,
            created_at: now,
            revoked_at: None,
            policy: Default::default(),
            app_policy: Default::default(),
            lifecycle: Default::default(),
        };
        let week = Duration::from_secs(7 * 86_400);
        assert!(lifecycle_headers(&r, now, week).is_empty(), "no expiry, no headers");
        r.expires_at = Some(now + time::Duration::days(30));
        assert!(lifecycle_headers(&r, now, week).is_empty(), "far from expiry");
        r.expires_at = Some(now + time::Duration::days(3));
        let h = lifecycle_headers(&r, now, week);
        assert_eq!(
            h[0].1,
            format!(
                "@{}",
                (now + time::Duration::days(3) - time::Duration::days(7)).unix_timestamp()
            )
        );
        assert_eq!(h[1].1, http_date(now + time::Duration::days(3)).as_str());
        r.lifecycle.rotated_at = Some(now - time::Duration::hours(1));
        r.expires_at = Some(now + time::Duration::days(6));
        let h = lifecycle_headers(&r, now, Duration::from_secs(1));
        assert_eq!(
            h[0].1,
            format!("@{}", (now - time::Duration::hours(1)).unix_timestamp())
        );
    }

    #[test]
    fn header_text_encodes_non_ascii() {
        assert_eq!(header_text("Café app").to_str().unwrap(), "Caf%C3%A9 app");
        assert_eq!(header_text("a\r\nb").to_str().unwrap(), "a%0D%0Ab");
    }

    #[test]
    fn client_ip_believes_only_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let spoof = h(&[("x-forwarded-for", "1.2.3.4")]);
        // Untrusted peer: headers ignored.
        assert_eq!(client_ip(ip("203.0.113.9"), &spoof, &proxies), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("203.0.113.9"), &spoof, &[]), ip("203.0.113.9"));
        // Trusted peer: right-most untrusted address.
        assert_eq!(client_ip(ip("10.0.0.1"), &spoof, &proxies), ip("1.2.3.4"));
        let chain = h(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &proxies), ip("1.2.3.4"));
        let split = h(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4:5555, 10.1.1.1"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.1"), &split, &proxies), ip("1.2.3.4"));
        // All trusted: the left-most.
        let all = h(&[("x-forwarded-for", "10.9.9.9, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &all, &proxies), ip("10.9.9.9"));
        // Garbage stops the walk at the last trusted hop.
        let junk = h(&[("x-forwarded-for", "1.2.3.4, garbage, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &junk, &proxies), ip("10.0.0.7"));
        // RFC 7239 Forwarded wins over X-Forwarded-For; IPv6 with brackets and ports.
        let fwd = h(&[
            ("forwarded", "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https"),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(client_ip(ip("::1"), &fwd, &proxies), ip("2001:db8::1"));
        let hidden = h(&[("forwarded", "for=_hidden, for=10.0.0.5")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &hidden, &proxies), ip("10.0.0.5"));
        // IPv4-mapped peers are normalised before matching.
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &spoof, &proxies), ip("1.2.3.4"));
        assert_eq!(client_ip(ip("::ffff:203.0.113.9"), &spoof, &proxies), ip("203.0.113.9"));
    }

    #[test]
    fn connection_named_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-foo, keep-alive"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-foo").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get("x-bar").unwrap(), "2");
    }
}
