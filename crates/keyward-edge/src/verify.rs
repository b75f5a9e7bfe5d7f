//! The decision without the proxying, for users who keep their own proxy:
//!
//! - `POST /v1/verify`: a JSON description of a request in, a JSON decision out (always 200
//!   for a decision, valid or not), behind a service token that can do nothing else;
//! - forward-auth (`/v1/forward-auth`, any method) in the conventions of nginx `auth_request`,
//!   Traefik `forwardAuth` and Envoy `ext_authz` in HTTP mode (`/v1/forward-auth/envoy` as the
//!   path prefix): the proxy forwards the original request's headers, keyward answers 200 with
//!   identity headers or the gateway's own 401/403/429 problem.
//!
//! Both run [`crate::gateway::decide`], the gateway's own authenticate → authorize → limit
//! phases: limits and usage are consumed exactly as by a proxied request. So does Envoy's
//! `ext_authz` over gRPC ([`crate::ext_authz`]), which shares the forward-auth pieces here. A
//! route's `decision_cache` makes allowed forward-auth answers reusable by a caching proxy.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ipnet::IpNet;
use keyward_core::decision::ScopeMode;
use keyward_core::secret::{ct_eq, SecretString};
use keyward_core::Scope;
use keyward_engine::{LimitState, Principal, RateBy, Rejection, RouteLimits};
use serde::{Deserialize, Serialize};

use crate::context;
use crate::gateway::{self, Admitted, GatewayState, RequestView, Route, Upstream};
use crate::problem::{self, Problem};
use crate::strict::{StrictJson, MAX_BODY};

/// Header that carries the service token on forward-auth calls (where `Authorization`
/// belongs to the client) when `verify.forward_auth_require_token` is on.
pub const SERVICE_TOKEN_HEADER: &str = "x-keyward-verify-token";
/// Path of the forward-auth endpoint; `<this>/envoy` is Envoy's `path_prefix`.
pub const FORWARD_AUTH_PATH: &str = "/v1/forward-auth";
const ENVOY_PREFIX: &str = "/v1/forward-auth/envoy";
/// Longest request target a verify or forward-auth call may describe.
pub const MAX_PATH: usize = 8 * 1024;
/// Longest method name.
pub const MAX_METHOD: usize = 32;
/// Most scopes a verify call may require.
pub const MAX_SCOPES: usize = 64;

/// The service token: it can verify, nothing else (the admin token is not accepted here).
#[derive(Clone)]
pub struct ServiceToken(SecretString);

impl ServiceToken {
    pub fn new(token: SecretString) -> ServiceToken {
        ServiceToken(token)
    }
    pub(crate) fn matches(&self, presented: &str) -> bool {
        ct_eq(self.0.expose().as_bytes(), presented.as_bytes())
    }
}

/// Who may call forward-auth.
#[derive(Debug, Clone)]
pub struct ForwardAuthConfig {
    /// Direct peers (the proxies) allowed to call forward-auth; default loopback only.
    pub peers: Vec<IpNet>,
    /// Also require the service token in `x-keyward-verify-token`.
    pub require_token: bool,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        ForwardAuthConfig {
            peers: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            require_token: false,
        }
    }
}

pub struct VerifyState {
    pub(crate) gateway: Arc<GatewayState>,
    pub(crate) token: Option<ServiceToken>,
    pub(crate) forward: ForwardAuthConfig,
}

impl VerifyState {
    pub fn new(gateway: Arc<GatewayState>, token: Option<ServiceToken>, forward: ForwardAuthConfig) -> VerifyState {
        VerifyState {
            gateway,
            token,
            forward,
        }
    }
}

/// `POST /v1/verify` alone, to merge into the admin listener's router.
pub fn verify_api(state: Arc<VerifyState>) -> Router {
    Router::new()
        .route("/v1/verify", post(verify).fallback(method_not_allowed))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_service_token))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(crate::body::deadline))
        .with_state(state)
}

/// The dedicated verify listener (`verify.listen`): `POST /v1/verify`, forward-auth and
/// `GET /healthz`.
pub fn verify_listener(state: Arc<VerifyState>) -> Router {
    let fwd = Router::new().fallback(forward_auth).with_state(state.clone());
    let probes = crate::ops::probes(state.gateway.clone());
    verify_api(state).merge(probes).merge(fwd)
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method Not Allowed",
    )
    .detail("this endpoint does not accept this method")
    .header(header::ALLOW, HeaderValue::from_static("POST"))
}

fn bearer_value(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

async fn require_service_token(State(st): State<Arc<VerifyState>>, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        return problem::verify_disabled().into_response();
    };
    match bearer_value(req.headers()) {
        Some(t) if token.matches(t) => next.run(req).await,
        Some(_) => problem::verify_unauthorized("the service token is not valid").into_response(),
        None => problem::verify_unauthorized("a service token is required: Authorization: Bearer <verify token>")
            .into_response(),
    }
}

// ---- the verify API ----------------------------------------------------------------------

/// A request to decide on. Exactly one of `key` and `token` (neither: `missing_credential`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// An API key.
    #[serde(default)]
    pub key: Option<String>,
    /// An access token (`Bearer`, or `DPoP` with `dpop`).
    #[serde(default)]
    pub token: Option<String>,
    /// The DPoP proof that came with the token.
    #[serde(default)]
    pub dpop: Option<String>,
    /// The request's method (default `GET`).
    #[serde(default)]
    pub method: Option<String>,
    /// The request target: path and optional query.
    pub path: String,
    /// The full URL the DPoP proof must name (`htu`), default `oauth.issuer` + path.
    #[serde(default)]
    pub url: Option<String>,
    /// The client's address as the proxy resolved it.
    pub client_ip: String,
    /// Scopes required when no configured route matches.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Quota cost when no configured route matches (default 1).
    #[serde(default)]
    pub cost: Option<u64>,
    /// Decide as this configured route (by name) instead of matching the path.
    #[serde(default)]
    pub route: Option<String>,
    /// For security events (canary use).
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// One limit's state after the request (the `RateLimit` fields, as numbers).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct LimitView {
    pub name: &'static str,
    /// Units of the policy (`q`).
    pub limit: u64,
    /// Window in seconds (`w`).
    pub window: u64,
    /// Units left (`r`).
    pub remaining: u64,
    /// Seconds until the limit is fully available again (`t`).
    pub reset: u64,
}

impl From<&LimitState> for LimitView {
    fn from(s: &LimitState) -> Self {
        LimitView {
            name: s.name,
            limit: s.limit,
            window: s.window_secs,
            remaining: s.remaining,
            reset: s.reset_secs,
        }
    }
}

/// Non-secret facts about the credential.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The key's display hint (`kw_live_AbCd…9xYz`), never the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The decision. `status` and `headers` are what a gateway should answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = VerifyDecision)]
pub struct VerifyResponse {
    pub valid: bool,
    /// `valid`, or the gateway's problem code (`missing_credential`, `invalid_credential`, ...).
    pub code: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The configured route the request matched, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_scopes: Option<Vec<String>>,
    pub metadata: Metadata,
    pub limits: Vec<LimitView>,
    /// Response headers for the client (several values of one field joined with `, `).
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A request target checked for sanity: method, path (without query) and target.
pub(crate) struct Target {
    pub(crate) method: Method,
    path_and_query: PathAndQuery,
    /// The original request's host, when known (routes with `hosts` match on it).
    pub(crate) host: Option<String>,
}

impl Target {
    pub(crate) fn path(&self) -> &str {
        self.path_and_query.path()
    }
}

fn parse_method(m: &str) -> Result<Method, Problem> {
    if m.is_empty() || m.len() > MAX_METHOD {
        return Err(problem::invalid_verify_request(format!(
            "the method must be 1 to {MAX_METHOD} characters"
        )));
    }
    if !m
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(problem::invalid_verify_request("the method is not an HTTP token"));
    }
    Method::from_bytes(m.as_bytes()).map_err(|_| problem::invalid_verify_request("the method is not an HTTP token"))
}

pub(crate) fn parse_target(method: &str, target: &str) -> Result<Target, Problem> {
    let method = parse_method(method)?;
    if target.len() > MAX_PATH {
        return Err(problem::invalid_verify_request(format!(
            "the path must be at most {MAX_PATH} bytes"
        )));
    }
    if !target.starts_with('/') {
        return Err(problem::invalid_verify_request("the path must start with '/'"));
    }
    let path_and_query = PathAndQuery::try_from(target)
        .map_err(|_| problem::invalid_verify_request("the path is not a valid request target"))?;
    Ok(Target {
        method,
        path_and_query,
        host: None,
    })
}

pub(crate) fn bad(detail: impl Into<String>) -> Problem {
    problem::invalid_verify_request(detail)
}

/// The route to decide as: a named route, the matching configured route, or (no route
/// matches) one made of the caller's scopes and cost.
pub(crate) enum Chosen<'a> {
    Configured(&'a Route),
    Adhoc(Box<Route>),
}

impl Chosen<'_> {
    pub(crate) fn route(&self) -> &Route {
        match self {
            Chosen::Configured(r) => r,
            Chosen::Adhoc(r) => r,
        }
    }
}

impl VerifyState {
    fn adhoc_route(&self, scopes: Vec<Scope>, cost: u64) -> Route {
        let svc = self.gateway.engine().token_service().ok();
        Route {
            name: "verify".into(),
            path_prefix: "/".into(),
            methods: Vec::new(),
            upstream: Upstream::unused(),
            scopes,
            scope_mode: ScopeMode::AllOf,
            limits: RouteLimits {
                route: "verify".into(),
                rate: None,
                rate_by: RateBy::Key,
                cost,
            },
            tokens: svc.is_some(),
            api_keys: true,
            client_certificates: false,
            publishable: false,
            cors: None,
            audience: svc
                .map(|s| s.config().default_audience.clone())
                .unwrap_or_else(|| "keyward".into()),
            options: Default::default(),
            series: Default::default(),
        }
    }

    /// Picks the route; a refusal (`invalid_path`, `method_not_allowed`) is a decision too.
    pub(crate) fn choose<'a>(
        &'a self,
        routes: &'a [Route],
        target: &Target,
        named: Option<&str>,
        scopes: Vec<Scope>,
        cost: u64,
    ) -> Result<Result<Chosen<'a>, Problem>, Problem> {
        if let Some(name) = named {
            return match routes.iter().find(|r| r.name == name) {
                Some(r) => Ok(Ok(Chosen::Configured(r))),
                None => Err(bad("no configured route has this name")),
            };
        }
        if gateway::suspicious_path(target.path()) {
            return Ok(Err(Problem::bad_request(
                "invalid_path",
                "the path contains dot segments or encoded separators",
            )));
        }
        match gateway::find_route(routes, &target.method, target.host.as_deref(), target.path()) {
            Ok(r) => Ok(Ok(Chosen::Configured(r))),
            Err(p) if p.status == 404 => Ok(Ok(Chosen::Adhoc(Box::new(self.adhoc_route(scopes, cost))))),
            Err(p) => Ok(Err(p)),
        }
    }
}

/// The decision on a verify call; `Err` only for a bad call (or an unavailable store).
async fn verify(
    State(st): State<Arc<VerifyState>>,
    StrictJson(body): StrictJson<VerifyRequest>,
) -> Result<Json<VerifyResponse>, Problem> {
    Ok(Json(decide_verify(&st, body).await?))
}

/// Runs a verify call (also what the in-process benchmark measures).
pub async fn decide_verify(st: &VerifyState, body: VerifyRequest) -> Result<VerifyResponse, Problem> {
    if body.key.is_some() && body.token.is_some() {
        return Err(bad("send either key or token, not both"));
    }
    if body.dpop.is_some() && body.token.is_none() {
        return Err(bad("dpop needs a token"));
    }
    let mut target = parse_target(body.method.as_deref().unwrap_or("GET"), &body.path)?;
    let client: IpAddr = body
        .client_ip
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| bad("client_ip is not an IP address"))?
        .to_canonical();
    if body.scopes.len() > MAX_SCOPES {
        return Err(bad(format!("at most {MAX_SCOPES} scopes")));
    }
    let scopes = body
        .scopes
        .iter()
        .map(|s| Scope::new(s).map_err(|e| bad(format!("scopes: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let cost = match body.cost {
        None => 1,
        Some(c) if (1..=keyward_core::policy::MAX_COUNT).contains(&c) => c,
        Some(_) => return Err(bad("cost must be between 1 and 1,000,000,000")),
    };
    let htu = match &body.url {
        None => None,
        Some(u) => Some(parse_htu(u)?),
    };
    // The URL's host picks among routes with `hosts`.
    target.host = htu
        .as_deref()
        .and_then(|u| u.parse::<Uri>().ok())
        .and_then(|u| crate::route::request_host(&HeaderMap::new(), u.authority().map(|a| a.as_str())));
    let user_agent = match &body.user_agent {
        Some(ua) if ua.len() <= 1024 => HeaderValue::from_str(ua).ok(),
        _ => None,
    };
    let routes = st.gateway.table();
    let chosen = match st.choose(&routes.routes, &target, body.route.as_deref(), scopes, cost)? {
        Ok(c) => c,
        Err(p) => return Ok(refusal_response(p, None, None)),
    };
    let route = chosen.route();
    // The credential goes where the gateway would have found it.
    let mut headers = HeaderMap::new();
    if let Some(ua) = user_agent {
        headers.insert(header::USER_AGENT, ua);
    }
    let gw = st.gateway.config();
    let malformed = || Rejection::Malformed(keyward_core::error::KeyFormatError::Alphabet);
    if let Some(key) = &body.key {
        match (gw.credential_headers.first(), HeaderValue::from_str(key)) {
            (Some(name), Ok(v)) => {
                headers.insert(name.clone(), v);
            }
            _ => return Ok(rejection_response(st, &malformed(), false)),
        }
    }
    if let Some(token) = &body.token {
        let scheme = if body.dpop.is_some() { "DPoP" } else { "Bearer" };
        match HeaderValue::from_str(&format!("{scheme} {token}")) {
            Ok(v) => {
                headers.insert(header::AUTHORIZATION, v);
            }
            Err(_) => return Ok(rejection_response(st, &malformed(), true)),
        }
        if let Some(proof) = &body.dpop {
            match HeaderValue::from_str(proof) {
                Ok(v) => {
                    headers.insert(HeaderName::from_static("dpop"), v);
                }
                Err(_) => {
                    let r = Rejection::InvalidDpop {
                        reason: "the DPoP proof is not ASCII".into(),
                        nonce: None,
                    };
                    return Ok(rejection_response(st, &r, true));
                }
            }
        }
    }
    let view = RequestView {
        headers: &headers,
        method: &target.method,
        path: target.path(),
        client,
        peer_cert: None,
        htu: htu.as_deref(),
    };
    let route_name = match &chosen {
        Chosen::Configured(r) => Some(r.name.clone()),
        Chosen::Adhoc(_) => None,
    };
    match gateway::decide(&st.gateway, route, &view).await {
        Ok(a) => Ok(allowed_response(st, a, route_name)),
        Err(r) => {
            if let Rejection::Store(_) = r.rejection {
                return Err(st.gateway.rejection_problem(&r.rejection, r.bearer));
            }
            let mut resp = rejection_response(st, &r.rejection, r.bearer);
            resp.route = route_name;
            Ok(resp)
        }
    }
}

/// `htu` (RFC 9449): the URL without query and fragment.
fn parse_htu(u: &str) -> Result<String, Problem> {
    if u.len() > MAX_PATH {
        return Err(bad(format!("url must be at most {MAX_PATH} bytes")));
    }
    let uri: Uri = u.parse().map_err(|_| bad("url is not an absolute URL"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(s @ ("http" | "https")), Some(a)) => Ok(format!("{s}://{a}{}", uri.path())),
        _ => Err(bad("url must be an absolute http or https URL")),
    }
}

fn rejection_response(st: &VerifyState, r: &Rejection, bearer: bool) -> VerifyResponse {
    let p = st.gateway.rejection_problem(r, bearer);
    let key_id = match r {
        Rejection::Revoked { key_id }
        | Rejection::Expired { key_id }
        | Rejection::Disabled { key_id }
        | Rejection::ExchangeOnly { key_id }
        | Rejection::IpNotAllowed { key_id }
        | Rejection::InsufficientScope { key_id, .. } => Some(key_id.clone()),
        _ => None,
    };
    let states = match r {
        Rejection::RateLimited { states, .. } | Rejection::QuotaExhausted { states, .. } => Some(states.as_slice()),
        _ => None,
    };
    refusal_response(p, key_id, states)
}

fn refusal_response(p: Problem, key_id: Option<String>, states: Option<&[LimitState]>) -> VerifyResponse {
    VerifyResponse {
        valid: false,
        code: p.code,
        status: p.status,
        detail: p.detail.clone(),
        route: None,
        app_id: None,
        key_id,
        client_id: None,
        scopes: Vec::new(),
        missing_scopes: p.missing_scopes.clone(),
        metadata: Metadata::default(),
        limits: states.unwrap_or_default().iter().map(LimitView::from).collect(),
        headers: header_map(&p.headers),
        expires_at: None,
    }
}

pub(crate) fn header_map(pairs: &[(HeaderName, HeaderValue)]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in pairs {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_owned())
            .and_modify(|cur| {
                cur.push_str(", ");
                cur.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

pub(crate) fn success_headers(st: &VerifyState, a: &Admitted) -> Vec<(HeaderName, HeaderValue)> {
    let window = st.gateway.config().expiry_warning;
    let lifecycle = context::lifecycle_headers(&a.principal, st.gateway.engine().now(), window);
    problem::ratelimit_fields(&a.states)
        .into_iter()
        .chain(lifecycle)
        .collect()
}

fn allowed_response(st: &VerifyState, a: Admitted, route: Option<String>) -> VerifyResponse {
    let headers = header_map(&success_headers(st, &a));
    let p = &a.principal;
    let key = p.key();
    let expires_at = p
        .expires_at()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    VerifyResponse {
        valid: true,
        code: "valid",
        status: 200,
        detail: None,
        route,
        app_id: (!matches!(p, Principal::Anonymous)).then(|| p.app_id().to_owned()),
        key_id: key.map(|k| k.id.clone()),
        client_id: p.client_id().map(str::to_owned),
        scopes: p.scopes().iter().map(|s| s.to_string()).collect(),
        missing_scopes: None,
        metadata: Metadata {
            app_name: (!matches!(p, Principal::Anonymous)).then(|| p.app_name().to_owned()),
            key_name: key.and_then(|k| k.name.clone()),
            env: key.map(|k| k.env.as_str().to_owned()),
            hint: key.map(|k| k.hint.clone()),
        },
        limits: a.states.iter().map(LimitView::from).collect(),
        headers,
        expires_at,
    }
}

// ---- forward-auth ------------------------------------------------------------------------

/// One value of a header the proxy sets; several values are ambiguous.
fn single<'h>(h: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Problem> {
    let mut it = h.get_all(name).iter();
    let Some(first) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(bad(format!("{name} is present more than once")));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| bad(format!("{name} is not visible ASCII")))
}

/// The original request a forward-auth call asks about: the method and target from
/// `X-Original-Method`/`X-Original-URI` (nginx), `X-Forwarded-Method`/`X-Forwarded-Uri`
/// (Traefik), or, under `/v1/forward-auth/envoy`, the call's own method and the path after
/// the prefix (Envoy `ext_authz`).
fn original_request(req: &Parts) -> Result<(Target, bool), Problem> {
    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let h = &req.headers;
    if let Some(rest) = pq.strip_prefix(ENVOY_PREFIX) {
        // Envoy's check request carries the original request's `Host`.
        let with_host = |mut t: Target| {
            t.host = crate::route::request_host(h, None);
            (t, true)
        };
        if rest.is_empty() || rest.starts_with('?') {
            return parse_target(req.method.as_str(), &format!("/{rest}")).map(with_host);
        }
        if rest.starts_with('/') {
            return parse_target(req.method.as_str(), rest).map(with_host);
        }
    }
    // Both conventions may arrive: a proxy sets its own, and passes on whatever the client
    // sent under the other's names (Traefik forwards a client's X-Original-URI untouched). A
    // value that disagrees with the other convention's is refused, so a client can never pick
    // the method or target its request is judged by.
    let agree = |nginx: Option<&'_ str>, traefik: Option<&'_ str>, what: &str| match (nginx, traefik) {
        (Some(a), Some(b)) if a != b => Err(bad(format!(
            "X-Original-{what} and X-Forwarded-{what} disagree; the proxy must set one and remove the other"
        ))),
        (Some(a), _) => Ok(Some(a.to_owned())),
        (None, b) => Ok(b.map(str::to_owned)),
    };
    let method = agree(
        single(h, "x-original-method")?,
        single(h, "x-forwarded-method")?,
        "Method",
    )?;
    let uri = agree(single(h, "x-original-uri")?, single(h, "x-forwarded-uri")?, "URI")?;
    // The original host: `X-Forwarded-Host` (Traefik; nginx configs set it, see
    // examples/nginx), one value only.
    let host = single(h, "x-forwarded-host")?.and_then(|v| {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(v).ok()?);
        crate::route::request_host(&m, None)
    });
    match (method, uri) {
        (Some(m), Some(u)) => parse_target(&m, &u).map(|mut t| {
            t.host = host;
            (t, false)
        }),
        _ => Err(bad(
            "forward-auth needs the original method and URI: X-Original-Method and X-Original-URI \
             (nginx), X-Forwarded-Method and X-Forwarded-Uri (Traefik), or the Envoy path prefix \
             /v1/forward-auth/envoy",
        )),
    }
}

/// The client address of a forward-auth call: `X-Forwarded-For` when the proxy is trusted,
/// never `Forwarded` (RFC 7239) or `X-Real-IP`. nginx, Traefik and Envoy maintain
/// `X-Forwarded-For`, but pass a client's `Forwarded` header on untouched, and the gateway's
/// rule (`Forwarded` wins) would then let the client choose its address.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !headers.contains_key(header::FORWARDED) {
        return context::client_ip(peer, headers, trusted);
    }
    let mut only_xff = HeaderMap::new();
    for v in headers.get_all("x-forwarded-for") {
        only_xff.append(HeaderName::from_static("x-forwarded-for"), v.clone());
    }
    context::client_ip(peer, &only_xff, trusted)
}

/// `scope` (repeatable), `cost` and `route` from the forward-auth URL's own query: set in the
/// proxy's configuration, out of the client's reach.
fn call_options(query: Option<&str>) -> Result<(Vec<Scope>, u64, Option<String>), Problem> {
    options(
        form_urlencoded::parse(query.unwrap_or("").as_bytes()),
        "the forward-auth URL takes only scope, cost and route",
    )
}

/// The call options (`scope`, space-separated and repeatable; `cost`; `route`) from the
/// forward-auth URL's query or Envoy's `context_extensions`; anything else is refused with
/// `unknown`.
pub(crate) fn options<K: AsRef<str>, V: AsRef<str>>(
    pairs: impl IntoIterator<Item = (K, V)>,
    unknown: &str,
) -> Result<(Vec<Scope>, u64, Option<String>), Problem> {
    let mut scopes = Vec::new();
    let mut cost = 1;
    let mut route = None;
    for (k, v) in pairs {
        let v = v.as_ref();
        match k.as_ref() {
            "scope" => {
                for s in v.split(' ').filter(|s| !s.is_empty()) {
                    scopes.push(Scope::new(s).map_err(|e| bad(format!("scope: {e}")))?);
                }
            }
            "cost" => {
                cost = v
                    .parse::<u64>()
                    .ok()
                    .filter(|c| (1..=keyward_core::policy::MAX_COUNT).contains(c))
                    .ok_or_else(|| bad("cost must be between 1 and 1,000,000,000"))?;
            }
            "route" => route = Some(v.to_owned()),
            _ => return Err(bad(unknown)),
        }
        if scopes.len() > MAX_SCOPES {
            return Err(bad(format!("at most {MAX_SCOPES} scopes")));
        }
    }
    Ok((scopes, cost, route))
}

async fn forward_auth(
    State(st): State<Arc<VerifyState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let path = req.uri().path();
    if path != FORWARD_AUTH_PATH && !path.starts_with("/v1/forward-auth/") {
        return Problem::not_found().detail("no such endpoint").into_response();
    }
    if !context::trusted(peer.ip(), &st.forward.peers) {
        tracing::debug!(peer = %peer.ip(), "forward-auth call from a peer that is not allowed");
        return problem::forward_auth_forbidden().into_response();
    }
    if st.forward.require_token {
        let ok = match (
            &st.token,
            req.headers().get(SERVICE_TOKEN_HEADER).and_then(|v| v.to_str().ok()),
        ) {
            (Some(t), Some(p)) => t.matches(p.trim()),
            _ => false,
        };
        if !ok {
            return problem::verify_unauthorized("forward-auth needs the service token in x-keyward-verify-token")
                .into_response();
        }
    }
    let (parts, _body) = req.into_parts();
    match forward_decision(&st, peer, &parts).await {
        Ok(r) | Err(r) => r,
    }
}

/// A forward-auth refusal: the problem, plus its code in `x-keyward-code` for proxies that
/// keep headers but not bodies (nginx `auth_request`).
fn coded(p: Problem) -> Response {
    match HeaderValue::from_str(p.code) {
        Ok(code) => p
            .header(HeaderName::from_static("x-keyward-code"), code)
            .into_response(),
        Err(_) => p.into_response(),
    }
}

async fn forward_decision(st: &VerifyState, peer: SocketAddr, req: &Parts) -> Result<Response, Response> {
    let (target, envoy) = original_request(req).map_err(coded)?;
    let (scopes, cost, named) = if envoy {
        (Vec::new(), 1, None)
    } else {
        call_options(req.uri.query()).map_err(coded)?
    };
    let routes = st.gateway.table();
    let chosen = match st.choose(&routes.routes, &target, named.as_deref(), scopes, cost) {
        Err(p) | Ok(Err(p)) => return Err(coded(p)),
        Ok(Ok(c)) => c,
    };
    let route = chosen.route();
    let client = forwarded_client(peer.ip(), &req.headers, st.gateway.trusted_proxies());
    let view = RequestView {
        headers: &req.headers,
        method: &target.method,
        path: target.path(),
        client,
        peer_cert: None,
        htu: None,
    };
    let a = match gateway::decide(&st.gateway, route, &view).await {
        Ok(a) => a,
        Err(r) => {
            tracing::debug!(route = %route.name, code = r.rejection.code(), "forward-auth refused");
            return Err(coded(st.gateway.rejection_problem(&r.rejection, r.bearer)));
        }
    };
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    context::insert_identity(h, &a.principal, client);
    let reuse = match &chosen {
        Chosen::Configured(r) => decision_reuse(st, r, &a),
        Chosen::Adhoc(_) => None,
    };
    match reuse {
        Some(ttl) => {
            let secs = ttl.as_secs();
            if let Ok(v) = HeaderValue::from_str(&format!("private, max-age={secs}")) {
                h.insert(header::CACHE_CONTROL, v);
            }
            // nginx stores nothing marked `private`; its own lifetime field lets the example's
            // auth subrequest cache (`proxy_ignore_headers Cache-Control`) use the same one.
            h.insert(HeaderName::from_static("x-accel-expires"), HeaderValue::from(secs));
            h.insert(header::VARY, vary(&st.gateway.config().credential_headers));
        }
        None => {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    for (name, value) in success_headers(st, &a) {
        h.insert(name, value);
    }
    Ok(resp)
}

/// How long a caching proxy may reuse this allowed answer: the route's `decision_cache`,
/// when no limit took part in the decision (a reused answer counts nothing) and the principal's
/// decision depends on nothing else than its credential, the route and the client address
/// ([`Principal::reusable_for`]).
fn decision_reuse(st: &VerifyState, route: &Route, a: &Admitted) -> Option<std::time::Duration> {
    let ttl = route.options.decision_cache?;
    if !a.states.is_empty() {
        return None;
    }
    a.principal.reusable_for(st.gateway.engine().now(), ttl)
}

/// `Vary` of a reusable answer: what it was decided on besides the route — every header that
/// may carry the credential, and the client address the proxy reported.
fn vary(credential_headers: &[HeaderName]) -> HeaderValue {
    let names: Vec<&str> = credential_headers
        .iter()
        .map(HeaderName::as_str)
        .chain(["authorization", "x-forwarded-for"])
        .collect();
    HeaderValue::from_str(&names.join(", ")).unwrap_or_else(|_| HeaderValue::from_static("*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        assert!(parse_target("GET", "/facts?limit=2").is_ok());
        assert_eq!(parse_target("GET", "/facts?limit=2").unwrap().path(), "/facts");
        for (m, p) in [
            ("", "/"),
            ("G ET", "/"),
            ("GET\0", "/"),
            (&"X".repeat(33) as &str, "/"),
            ("GET", "facts"),
            ("GET", ""),
            ("GET", "/a b"),
            ("GET", "/a\0b"),
            ("GET", &format!("/{}", "a".repeat(MAX_PATH))),
        ] {
            assert!(parse_target(m, p).is_err(), "{m:?} {p:?}");
        }
    }

    #[test]
    fn call_options_parse() {
        let (s, c, r) = call_options(Some("scope=facts:read&scope=a+b&cost=3&route=x")).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(c, 3);
        assert_eq!(r.as_deref(), Some("x"));
        assert!(call_options(Some("cost=0")).is_err());
        assert!(call_options(Some("other=1")).is_err());
        assert_eq!(call_options(None).unwrap().1, 1);
        let many = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect::<Vec<_>>().join("+");
        assert!(call_options(Some(&format!("scope={many}"))).is_err());
        let ext = [("scope", "facts:read"), ("route", "r")];
        let (s, c, r) = options(ext, "x").unwrap();
        assert_eq!((s.len(), c, r.as_deref()), (1, 1, Some("r")));
        assert_eq!(
            options([("other", "1")], "only these").unwrap_err().detail.as_deref(),
            Some("only these")
        );
    }

    #[test]
    fn htu_drops_query() {
        assert_eq!(
            parse_htu("https://api.example/facts?x=1").unwrap(),
            "https://api.example/facts"
        );
        assert!(parse_htu("/facts").is_err());
        assert!(parse_htu("ftp://x/y").is_err());
    }
}
