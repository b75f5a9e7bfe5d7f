//! The admin API: apps and keys, behind an admin bearer token compared in constant time.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_core::model::{KeyState, KeyUpdate};
use keyward_core::policy::{IpAllowlist, Policy, QuotaSpec, RateSpec};
use keyward_core::secret::{ct_eq, SecretString};
use keyward_core::when::{check_expiry, parse_duration, parse_instant};
use keyward_core::{AppRecord, KeyEnv, KeyRecord, Scope};
use keyward_engine::{Engine, NewKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::problem::{self, Problem};

/// Largest admin request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

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
}

/// Routes of the admin listener.
pub fn admin_router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/v1/apps", post(create_app).get(list_apps))
        .route("/v1/apps/{app}", get(show_app).patch(update_app))
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{id}", get(show_key).patch(update_key))
        .route("/v1/keys/{id}/revoke", post(revoke_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
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

async fn healthz(State(st): State<Arc<AdminState>>) -> Response {
    match st.engine.store().ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok", "store": st.engine.store().backend()})).into_response(),
        Err(e) => problem::store(&e).into_response(),
    }
}

async fn require_admin(State(st): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match presented {
        Some(t) if st.token.matches(t) => next.run(req).await,
        Some(_) => unauthorized("the admin token is not valid"),
        None => unauthorized("an admin token is required: Authorization: Bearer <token>"),
    }
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

/// A JSON body: `application/json`, at most [`MAX_BODY`] bytes, unknown fields refused.
pub struct StrictJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let ct_ok = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let essence = v.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !ct_ok {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported Media Type",
            )
            .detail("send the body as application/json"));
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(_) => {
                return Err(
                    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "Payload Too Large")
                        .detail(format!("the body must be at most {MAX_BODY} bytes")),
                )
            }
        };
        serde_json::from_slice(&bytes).map(StrictJson).map_err(|e| {
            let status = if e.is_data() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            let msg = e.to_string();
            // serde messages name fields and types; cap them so nothing large is echoed back.
            let msg: String = msg.chars().take(200).collect();
            Problem::new(status, "invalid_body", "Invalid Request Body").detail(msg)
        })
    }
}

fn engine_err(e: keyward_engine::EngineError) -> Problem {
    problem::engine(&e)
}

// ---- apps ------------------------------------------------------------------------------

/// Absent → `None`; `null` → `Some(None)`; a value → `Some(Some(v))`.
fn double<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn allowlist(items: &[String]) -> Result<IpAllowlist, Problem> {
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
}

async fn create_app(
    State(st): State<Arc<AdminState>>,
    StrictJson(body): StrictJson<CreateApp>,
) -> Result<Response, Problem> {
    let policy = Policy {
        ips: allowlist(&body.ips)?,
        rate: body.rate,
        quota: body.quota,
    };
    let app = st.engine.create_app(&body.name, policy).await.map_err(engine_err)?;
    tracing::info!(app_id = %app.id, "app created");
    Ok((StatusCode::CREATED, Json(app)).into_response())
}

#[derive(Serialize)]
struct List<T> {
    items: Vec<T>,
}

async fn list_apps(State(st): State<Arc<AdminState>>) -> Result<Json<List<AppRecord>>, Problem> {
    Ok(Json(List {
        items: st.engine.list_apps().await.map_err(engine_err)?,
    }))
}

async fn show_app(State(st): State<Arc<AdminState>>, Path(app): Path<String>) -> Result<Json<AppRecord>, Problem> {
    Ok(Json(st.engine.get_app(&app).await.map_err(engine_err)?))
}

/// A change to an app's limits; absent fields stay, `null` clears.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatePolicy {
    #[serde(default)]
    ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double")]
    rate: Option<Option<RateSpec>>,
    #[serde(default, deserialize_with = "double")]
    quota: Option<Option<QuotaSpec>>,
}

impl UpdatePolicy {
    fn apply(&self, mut p: Policy) -> Result<Policy, Problem> {
        if let Some(ips) = &self.ips {
            p.ips = allowlist(ips)?;
        }
        if let Some(r) = self.rate {
            p.rate = r;
        }
        if let Some(q) = self.quota {
            p.quota = q;
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
        .update_app_policy(&current.id, policy)
        .await
        .map_err(engine_err)?;
    tracing::info!(app_id = %app.id, "app limits changed");
    Ok(Json(app))
}

// ---- keys ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// App id or name.
    app: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// RFC 3339 instant.
    #[serde(default)]
    expires_at: Option<String>,
    /// Duration from now (`90d`).
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    env: Option<KeyEnv>,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    rate: Option<RateSpec>,
    #[serde(default)]
    quota: Option<QuotaSpec>,
}

/// A change to a key; absent fields stay, `null` clears.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateKey {
    #[serde(default, deserialize_with = "double")]
    name: Option<Option<String>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(flatten)]
    policy: UpdatePolicyFields,
}

/// The policy part of [`UpdateKey`] (`flatten` cannot be combined with
/// `deny_unknown_fields` on the same struct, so unknown fields are refused here).
#[derive(Deserialize)]
struct UpdatePolicyFields {
    #[serde(default)]
    ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double")]
    rate: Option<Option<RateSpec>>,
    #[serde(default, deserialize_with = "double")]
    quota: Option<Option<QuotaSpec>>,
}

fn scopes_of(items: &[String]) -> Result<Vec<Scope>, Problem> {
    if items.len() > 256 {
        return Err(invalid("scopes", "at most 256 scopes per key"));
    }
    items
        .iter()
        .map(|s| Scope::new(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("scopes", e))
}

async fn update_key(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<serde_json::Value>,
) -> Result<Json<KeyView>, Problem> {
    // Unknown fields are refused explicitly (see `UpdatePolicyFields`).
    if let Some(obj) = body.as_object() {
        if let Some(k) = obj
            .keys()
            .find(|k| !["name", "scopes", "ips", "rate", "quota"].contains(&k.as_str()))
        {
            let k: String = k.chars().take(64).collect();
            return Err(
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "Invalid Request Body").detail(format!(
                    "unknown field `{k}`, expected one of name, scopes, ips, rate, quota"
                )),
            );
        }
    }
    let body: UpdateKey = serde_json::from_value(body).map_err(|e| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "Invalid Request Body")
            .detail(e.to_string().chars().take(200).collect::<String>())
    })?;
    let current = st.engine.get_key(&id).await.map_err(engine_err)?;
    let p = UpdatePolicy {
        ips: body.policy.ips,
        rate: body.policy.rate,
        quota: body.policy.quota,
    };
    let update = KeyUpdate {
        name: body.name,
        scopes: body.scopes.as_deref().map(scopes_of).transpose()?,
        policy: Some(p.apply(current.policy)?),
    };
    let k = st.engine.update_key(&id, update).await.map_err(engine_err)?;
    tracing::info!(key_id = %k.id, "key changed");
    Ok(Json(view(&st, k)))
}

/// A key as the admin API shows it: the record, its state, never the secret.
#[derive(Serialize)]
pub struct KeyView {
    #[serde(flatten)]
    record: KeyRecord,
    state: KeyState,
}

#[derive(Serialize)]
struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The plaintext key, shown this once.
    key: String,
}

fn view(st: &AdminState, record: KeyRecord) -> KeyView {
    let state = record.state(st.engine.now());
    KeyView { record, state }
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", "Invalid Request")
        .detail(format!("{field}: {msg}"))
}

async fn create_key(
    State(st): State<Arc<AdminState>>,
    StrictJson(body): StrictJson<CreateKey>,
) -> Result<Response, Problem> {
    let now = st.engine.now();
    let expires_at = match (body.expires_at.as_deref(), body.expires_in.as_deref()) {
        (Some(_), Some(_)) => return Err(invalid("expires_at", "give expires_at or expires_in, not both")),
        (Some(at), None) => {
            let at = parse_instant(at).map_err(|e| invalid("expires_at", e))?;
            Some(check_expiry(at, now).map_err(|e| invalid("expires_at", e))?)
        }
        (None, Some(d)) => {
            let d = parse_duration(d).map_err(|e| invalid("expires_in", e))?;
            Some(now + d)
        }
        (None, None) => None,
    };
    let scopes = scopes_of(&body.scopes)?;
    let policy = Policy {
        ips: allowlist(&body.ips)?,
        rate: body.rate,
        quota: body.quota,
    };
    let (record, secret) = st
        .engine
        .create_key(NewKey {
            app: body.app,
            name: body.name,
            scopes,
            expires_at,
            env: body.env.unwrap_or(KeyEnv::Live),
            policy,
        })
        .await
        .map_err(engine_err)?;
    tracing::info!(key_id = %record.id, app_id = %record.app_id, "key created");
    let created = CreatedKey {
        key: secret.expose().to_owned(),
        view: view(&st, record),
    };
    let mut resp = (StatusCode::CREATED, Json(created)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFilter {
    #[serde(default)]
    app: Option<String>,
}

async fn list_keys(
    State(st): State<Arc<AdminState>>,
    q: Result<Query<KeyFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<List<KeyView>>, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request("invalid_query", e.body_text()))?;
    let keys = st.engine.list_keys(q.app.as_deref()).await.map_err(engine_err)?;
    Ok(Json(List {
        items: keys.into_iter().map(|k| view(&st, k)).collect(),
    }))
}

async fn show_key(State(st): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Json<KeyView>, Problem> {
    let k = st.engine.get_key(&id).await.map_err(engine_err)?;
    Ok(Json(view(&st, k)))
}

async fn revoke_key(State(st): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Json<KeyView>, Problem> {
    let k = st.engine.revoke_key(&id).await.map_err(engine_err)?;
    tracing::info!(key_id = %k.id, "key revoked");
    Ok(Json(view(&st, k)))
}
