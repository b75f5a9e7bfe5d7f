//! The admin API: apps, keys, clients, signing keys, audit, usage, routes and scoped admin
//! tokens, behind an admin bearer token; its OpenAPI document and the web console.
//!
//! Authentication: the bootstrap token of the configuration (compared in constant time) has
//! every right; scoped tokens (`kwadm_…`, stored as digests) have the role `read` (GET only)
//! or `write` (everything but managing admin tokens). The audit log names the token's actor;
//! `GET /v1/session` tells the caller its role.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_core::policy::{IpAllowlist, Policy, QuotaSpec, RateSpec};
use keyward_core::secret::{ct_eq, SecretString};
use keyward_core::AppRecord;
use keyward_engine::admin_tokens::AdminRole;
use keyward_engine::Engine;
use serde::{Deserialize, Serialize};

use crate::gateway::Route;
use crate::problem::{self, Problem};

mod audit;
mod clients;
mod console;
mod keys;
pub mod openapi;
mod page;
mod session;
mod signing;
mod tokens;
mod webhooks;

use keys::*;
use page::{matches, paginate, query_text, Page};

/// The actor recorded in the audit log for changes made with the bootstrap admin token.
pub(crate) const ACTOR: &str = "admin";

tokio::task_local! {
    /// Who is making the current admin request (set by the authentication middleware).
    static PRINCIPAL: Principal;
}

/// The authenticated caller of an admin request.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// As written to the audit log: `admin` (bootstrap token) or `admin:<token name>`.
    pub(crate) actor: String,
    /// `None`: the bootstrap token (every right).
    pub(crate) role: Option<AdminRole>,
}

/// The actor of the current admin request, for the audit log.
pub(crate) fn actor() -> String {
    PRINCIPAL
        .try_with(|p| p.actor.clone())
        .unwrap_or_else(|_| ACTOR.to_owned())
}

pub use crate::strict::{StrictJson, StrictQuery, MAX_BODY};

/// The admin bearer token (from the environment or a 0600 file).
#[derive(Clone)]
pub struct AdminToken(SecretString);

impl AdminToken {
    pub fn new(token: SecretString) -> AdminToken {
        AdminToken(token)
    }
    fn matches(&self, presented: &str) -> bool {
        ct_eq(self.0.expose().as_bytes(), presented.as_bytes())
    }
}

pub struct AdminState {
    pub engine: Arc<Engine>,
    pub token: AdminToken,
    /// The gateway's routes, shown read-only by `GET /v1/routes`.
    pub routes: Vec<Route>,
    /// The upstream groups' status in force, shown by `GET /v1/upstreams` (none: an empty list).
    pub upstreams: Option<crate::gateway::UpstreamStatus>,
}

impl AdminState {
    pub fn new(engine: Arc<Engine>, token: AdminToken) -> AdminState {
        AdminState {
            engine,
            token,
            routes: Vec::new(),
            upstreams: None,
        }
    }

    /// The gateway routes that `GET /v1/routes` lists.
    pub fn with_routes(mut self, routes: Vec<Route>) -> AdminState {
        self.routes = routes;
        self
    }

    /// Where `GET /v1/upstreams` reads the upstream groups' status
    /// ([`crate::GatewayState::upstream_status`]).
    pub fn with_upstreams(mut self, status: crate::gateway::UpstreamStatus) -> AdminState {
        self.upstreams = Some(status);
        self
    }
}

/// Routes of the admin listener.
pub fn admin_router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/v1/apps", post(create_app).get(list_apps))
        .route("/v1/apps/{app}", get(show_app).patch(update_app))
        .route("/v1/apps/{app}/disable", post(disable_app))
        .route("/v1/apps/{app}/enable", post(enable_app))
        .route("/v1/routes", get(list_routes))
        .route("/v1/upstreams", get(list_upstreams))
        .route("/v1/session", get(session::show))
        .route("/v1/admin-tokens", post(tokens::create_token).get(tokens::list_tokens))
        .route("/v1/admin-tokens/{id}/revoke", post(tokens::revoke_token))
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{id}", get(show_key).patch(update_key))
        .route("/v1/keys/check", post(check_keys))
        .route("/v1/keys/import", post(import_key))
        .route("/v1/keys/{id}/revoke", post(revoke_key))
        .route("/v1/keys/{id}/rotate", post(rotate_key))
        .route("/v1/keys/{id}/disable", post(disable_key))
        .route("/v1/keys/{id}/enable", post(enable_key))
        .route("/v1/clients", post(clients::create_client).get(clients::list_clients))
        .route(
            "/v1/clients/{id}",
            get(clients::show_client)
                .patch(clients::update_client)
                .delete(clients::delete_client),
        )
        .route("/v1/clients/{id}/disable", post(clients::disable_client))
        .route("/v1/clients/{id}/enable", post(clients::enable_client))
        .route("/v1/clients/{id}/rotate-secret", post(clients::rotate_secret))
        .route("/v1/signing-keys", get(signing::list))
        .route("/v1/signing-keys/rotate", post(signing::rotate))
        .route("/v1/signing-keys/{kid}/retire", post(signing::retire))
        .route(
            "/v1/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::show_webhook)
                .patch(webhooks::update_webhook)
                .delete(webhooks::delete_webhook),
        )
        .route("/v1/audit", get(audit::list_audit))
        .route("/v1/usage", get(audit::usage))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        .merge(console::router())
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(crate::body::deadline))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::not_found()
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method Not Allowed",
    )
    .detail("this endpoint does not accept this method")
}

/// The admin listener's operations routes: the probes, and `/metrics` behind an admin token
/// (any role) unless `public`.
pub fn ops_routes(gateway: Arc<crate::GatewayState>, admin: Arc<AdminState>, public: bool) -> Router {
    let metrics = crate::ops::public_metrics(gateway.clone());
    let metrics = if public {
        metrics
    } else {
        metrics.route_layer(middleware::from_fn_with_state(admin, require_admin))
    };
    crate::ops::probes(gateway).merge(metrics)
}

pub(crate) async fn require_admin(State(st): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let principal = match presented {
        None => return unauthorized("an admin token is required: Authorization: Bearer <token>"),
        Some(t) if st.token.matches(t) => Principal {
            actor: ACTOR.to_owned(),
            role: None,
        },
        Some(t) => match st.engine.authenticate_admin_token(t).await {
            Ok(Some((record, role))) => Principal {
                actor: format!("admin:{}", record.name),
                role: Some(role),
            },
            Ok(None) => return unauthorized("the admin token is not valid"),
            Err(e) => return engine_err(e).into_response(),
        },
    };
    let principal = match tool_actor(&req, principal) {
        Ok(p) => p,
        Err(p) => return p.into_response(),
    };
    if let Err(p) = authorize(&principal, req.method(), req.uri().path()) {
        return p.into_response();
    }
    PRINCIPAL.scope(principal, next.run(req)).await
}

/// The header with which a tool names itself as the author of its changes in the audit log.
pub const ACTOR_HEADER: &str = "x-keyward-actor";
/// The tools that may name themselves: `keyward apply`.
const TOOL_ACTORS: &[&str] = &["apply"];

/// `X-Keyward-Actor: apply` (sent by `keyward apply`) records the changes as made by `apply`:
/// the actor becomes `apply` for the bootstrap token and `apply:admin:<name>` for a scoped
/// token, so the token stays named. It changes no right; any other value is refused (400).
fn tool_actor(req: &Request, principal: Principal) -> Result<Principal, Problem> {
    let Some(v) = req.headers().get(ACTOR_HEADER) else {
        return Ok(principal);
    };
    let tool = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|t| TOOL_ACTORS.contains(t))
        .ok_or_else(|| {
            Problem::new(StatusCode::BAD_REQUEST, "invalid_actor", "Bad Request").detail(format!(
                "{ACTOR_HEADER}: the only accepted value is {}",
                TOOL_ACTORS.join(", ")
            ))
        })?;
    let actor = if principal.role.is_none() {
        tool.to_owned()
    } else {
        format!("{tool}:{}", principal.actor)
    };
    Ok(Principal { actor, ..principal })
}

/// What each role may do: `read` only reads (and checks keys, which changes nothing);
/// `write` everything except managing admin tokens, which only the bootstrap token does.
fn authorize(p: &Principal, method: &Method, path: &str) -> Result<(), Problem> {
    let Some(role) = p.role else {
        return Ok(());
    };
    let forbidden =
        |detail: &str| Problem::new(StatusCode::FORBIDDEN, "insufficient_role", "Forbidden").detail(detail.to_owned());
    if path == "/v1/admin-tokens" || path.starts_with("/v1/admin-tokens/") {
        return Err(forbidden("only the bootstrap admin token manages admin tokens"));
    }
    let reads = method == Method::GET || method == Method::HEAD || path == "/v1/keys/check";
    if role == AdminRole::Read && !reads {
        return Err(forbidden("this admin token has the role read: it can only read"));
    }
    Ok(())
}

fn unauthorized(detail: &str) -> Response {
    Problem::new(StatusCode::UNAUTHORIZED, "admin_unauthorized", "Unauthorized")
        .detail(detail)
        .header(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"keyward-admin\""),
        )
        .into_response()
}

pub(crate) fn invalid(field: &str, msg: impl std::fmt::Display) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", "Invalid Request")
        .detail(format!("{field}: {msg}"))
}

pub(crate) fn engine_err(e: keyward_engine::EngineError) -> Problem {
    problem::engine(&e)
}

// ---- apps ------------------------------------------------------------------------------

/// Absent → `None`; `null` → `Some(None)`; a value → `Some(Some(v))`.
pub(crate) fn double<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub(crate) fn allowlist(items: &[String]) -> Result<IpAllowlist, Problem> {
    IpAllowlist::parse(items).map_err(|e| invalid("ips", e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    name: String,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    rate: Option<RateSpec>,
    #[serde(default)]
    quota: Option<QuotaSpec>,
    /// Every key of the app only works over mTLS with a certificate registered to the app.
    #[serde(default)]
    require_mtls: bool,
    /// Key rules: the longest lifetime of a new key (a duration such as `90d`).
    #[serde(default)]
    max_key_lifetime: Option<String>,
    /// Key rules: secret keys must have an expiry.
    #[serde(default)]
    require_expiry: bool,
    /// Key rules: the kinds of key the app may have (`secret`, `publishable`).
    #[serde(default)]
    allowed_kinds: Vec<keyward_core::KeyKind>,
}

/// Parses `max_key_lifetime` (1 second to 100 years).
fn lifetime_of(s: &str) -> Result<u64, Problem> {
    let d = keyward_core::when::parse_duration(s).map_err(|e| invalid("max_key_lifetime", e))?;
    let secs = d.whole_seconds();
    if secs < 1 || d > keyward_core::when::MAX_LIFETIME {
        return Err(invalid("max_key_lifetime", "from 1s to 100 years"));
    }
    u64::try_from(secs).map_err(|_| invalid("max_key_lifetime", "from 1s to 100 years"))
}

async fn create_app(
    State(st): State<Arc<AdminState>>,
    StrictJson(body): StrictJson<CreateApp>,
) -> Result<Response, Problem> {
    let policy = Policy {
        ips: allowlist(&body.ips)?,
        rate: body.rate,
        quota: body.quota,
        require_mtls: body.require_mtls,
        key_rules: keyward_core::policy::KeyRules {
            max_lifetime_secs: body.max_key_lifetime.as_deref().map(lifetime_of).transpose()?,
            require_expiry: body.require_expiry,
            allowed_kinds: body.allowed_kinds,
        },
        ..Default::default()
    };
    let app = st
        .engine
        .create_app(&actor(), &body.name, policy)
        .await
        .map_err(engine_err)?;
    tracing::info!(app_id = %app.id, "app created");
    Ok((StatusCode::CREATED, Json(app)).into_response())
}

#[derive(Serialize)]
pub(crate) struct List<T> {
    pub(crate) items: Vec<T>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AppFilter {
    /// Case-insensitive search in the id and name.
    #[serde(default)]
    q: Option<String>,
    /// Page size: 1 to 500, default 50.
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn list_apps(
    State(st): State<Arc<AdminState>>,
    StrictQuery(q): StrictQuery<AppFilter>,
) -> Result<Json<Page<AppRecord>>, Problem> {
    let text = query_text(q.q.as_deref())?;
    let apps: Vec<AppRecord> = st
        .engine
        .list_apps()
        .await
        .map_err(engine_err)?
        .into_iter()
        .filter(|a| matches(&text, &[Some(&a.id), Some(&a.name)]))
        .collect();
    Ok(Json(paginate(
        apps,
        |a| (a.created_at.unix_timestamp(), a.id.clone()),
        q.limit,
        q.cursor.as_deref(),
    )?))
}

async fn show_app(State(st): State<Arc<AdminState>>, Path(app): Path<String>) -> Result<Json<AppRecord>, Problem> {
    Ok(Json(st.engine.get_app(&app).await.map_err(engine_err)?))
}

/// A change to an app's limits; absent fields stay, `null` clears.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdatePolicy {
    #[serde(default)]
    pub(crate) ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double")]
    pub(crate) rate: Option<Option<RateSpec>>,
    #[serde(default, deserialize_with = "double")]
    pub(crate) quota: Option<Option<QuotaSpec>>,
    #[serde(default)]
    pub(crate) require_mtls: Option<bool>,
    /// Apps only: key rules (absent fields stay; `max_key_lifetime: null` clears it).
    #[serde(default, deserialize_with = "double")]
    pub(crate) max_key_lifetime: Option<Option<String>>,
    #[serde(default)]
    pub(crate) require_expiry: Option<bool>,
    #[serde(default)]
    pub(crate) allowed_kinds: Option<Vec<keyward_core::KeyKind>>,
}

impl UpdatePolicy {
    pub(crate) fn apply(&self, mut p: Policy) -> Result<Policy, Problem> {
        if let Some(ips) = &self.ips {
            p.ips = allowlist(ips)?;
        }
        if let Some(r) = self.rate {
            p.rate = r;
        }
        if let Some(q) = self.quota {
            p.quota = q;
        }
        if let Some(m) = self.require_mtls {
            p.require_mtls = m;
        }
        if let Some(l) = &self.max_key_lifetime {
            p.key_rules.max_lifetime_secs = l.as_deref().map(lifetime_of).transpose()?;
        }
        if let Some(r) = self.require_expiry {
            p.key_rules.require_expiry = r;
        }
        if let Some(k) = &self.allowed_kinds {
            p.key_rules.allowed_kinds = k.clone();
        }
        Ok(p)
    }
}

async fn update_app(
    State(st): State<Arc<AdminState>>,
    Path(app): Path<String>,
    StrictJson(body): StrictJson<UpdatePolicy>,
) -> Result<Json<AppRecord>, Problem> {
    let current = st.engine.get_app(&app).await.map_err(engine_err)?;
    let policy = body.apply(current.policy)?;
    let app = st
        .engine
        .update_app_policy(&actor(), &current.id, policy)
        .await
        .map_err(engine_err)?;
    tracing::info!(app_id = %app.id, "app limits changed");
    Ok(Json(app))
}

// ---- routes (read-only) -----------------------------------------------------------------

/// A gateway route as configured (read-only; change it in the configuration file).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RouteView {
    name: String,
    path_prefix: String,
    /// Allowed methods; empty means any.
    methods: Vec<String>,
    upstream: String,
    /// Scopes a credential needs here.
    scopes: Vec<String>,
    /// `all_of` or `any_of`.
    scope_mode: String,
    api_keys: bool,
    tokens: bool,
    client_certificates: bool,
    audience: String,
    /// The route's own rate limit (`100/s`), if any.
    rate: Option<String>,
    /// Quota units one request costs.
    cost: u64,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Page size: 1 to 500, default 50.
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn list_routes(
    State(st): State<Arc<AdminState>>,
    StrictQuery(q): StrictQuery<ListQuery>,
) -> Result<Json<Page<RouteView>>, Problem> {
    let items: Vec<RouteView> = st
        .routes
        .iter()
        .map(|r| RouteView {
            name: r.name.clone(),
            path_prefix: r.path_prefix.clone(),
            methods: r.methods.iter().map(|m| m.as_str().to_owned()).collect(),
            upstream: r.upstream.url(),
            scopes: r.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            scope_mode: match r.scope_mode {
                keyward_core::decision::ScopeMode::AllOf => "all_of".into(),
                keyward_core::decision::ScopeMode::AnyOf => "any_of".into(),
            },
            api_keys: r.api_keys,
            tokens: r.tokens,
            client_certificates: r.client_certificates,
            audience: r.audience.clone(),
            rate: r.limits.rate.map(|r| r.to_string()),
            cost: r.limits.cost,
        })
        .collect();
    // Routes keep their configured order; the cursor is the position.
    let numbered: Vec<(usize, RouteView)> = items.into_iter().enumerate().collect();
    let page = paginate(
        numbered,
        |(i, _)| (i64::try_from(*i).unwrap_or(i64::MAX), String::new()),
        q.limit,
        q.cursor.as_deref(),
    )?;
    Ok(Json(Page {
        items: page.items.into_iter().map(|(_, r)| r).collect(),
        next_cursor: page.next_cursor,
    }))
}

// ---- upstreams (read-only) --------------------------------------------------------------

/// `GET /v1/upstreams`: every upstream group in force (the `[[upstreams]]` ones, then one
/// `route.<name>.<i>` group per route with a URL upstream) and each target's health, as the
/// gateway sees it now. Any admin role reads it; no query parameters.
async fn list_upstreams(
    State(st): State<Arc<AdminState>>,
    StrictQuery(_): StrictQuery<NoQuery>,
) -> Json<List<keyward_upstream::GroupStatus>> {
    let items = st.upstreams.as_ref().map(|s| s()).unwrap_or_default();
    Json(List { items })
}

/// No query parameters (unknown ones are refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {}

// ---- app switch-off ------------------------------------------------------------------------

/// What disabling or enabling an app changed.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AppSwitch {
    app_id: String,
    /// Keys disabled (or enabled) by this call.
    keys: Vec<String>,
    /// OAuth clients disabled (or enabled) by this call.
    clients: Vec<String>,
}

/// `POST /v1/apps/{app}/disable`: disables every active key and every client of the app (each
/// change audited, plus one `app.disabled` event); the next request with any of them is refused.
/// Keys created afterwards are not affected.
async fn disable_app(State(st): State<Arc<AdminState>>, Path(app): Path<String>) -> Result<Json<AppSwitch>, Problem> {
    switch_app(&st, &app, true).await.map(Json)
}

/// `POST /v1/apps/{app}/enable`: enables every disabled (not revoked) key and client of the app.
async fn enable_app(State(st): State<Arc<AdminState>>, Path(app): Path<String>) -> Result<Json<AppSwitch>, Problem> {
    switch_app(&st, &app, false).await.map(Json)
}

async fn switch_app(st: &AdminState, app: &str, disable: bool) -> Result<AppSwitch, Problem> {
    let app = st.engine.get_app(app).await.map_err(engine_err)?;
    let who = actor();
    let now = st.engine.now();
    let mut keys = vec![];
    for k in st.engine.list_keys(Some(&app.id)).await.map_err(engine_err)? {
        let disabled = k.lifecycle.disabled_at.is_some();
        if k.revoked_at.is_some() || disabled == disable || k.expires_at.is_some_and(|e| e <= now) {
            continue;
        }
        if disable {
            st.engine.disable_key(&who, &k.id).await.map_err(engine_err)?;
        } else {
            st.engine.enable_key(&who, &k.id).await.map_err(engine_err)?;
        }
        keys.push(k.id);
    }
    let mut clients = vec![];
    for c in st.engine.list_clients(Some(&app.id)).await.map_err(engine_err)? {
        if c.disabled_at.is_some() == disable {
            continue;
        }
        st.engine
            .set_client_disabled(&who, &c.id, disable)
            .await
            .map_err(engine_err)?;
        clients.push(c.id);
    }
    let kind = if disable { "app.disabled" } else { "app.enabled" };
    let event = keyward_core::model::AuditEvent {
        seq: 0,
        at: now,
        actor: who,
        kind: kind.to_owned(),
        severity: keyward_core::model::Severity::Info,
        target: Some(app.id.clone()),
        source_ip: None,
        details: serde_json::json!({"keys": keys, "clients": clients}),
    };
    if let Err(e) = st.engine.audit(event).await {
        tracing::error!(error = %e, kind, "could not append to the audit log");
    }
    tracing::info!(app_id = %app.id, keys = keys.len(), clients = clients.len(), "{kind}");
    Ok(AppSwitch {
        app_id: app.id,
        keys,
        clients,
    })
}
