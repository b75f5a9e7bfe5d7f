//! The admin API: apps and keys, behind an admin bearer token compared in constant time.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_core::policy::{IpAllowlist, Policy, QuotaSpec, RateSpec};
use keyward_core::secret::{ct_eq, SecretString};
use keyward_core::AppRecord;
use keyward_engine::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::problem::{self, Problem};

mod audit;
mod clients;
mod keys;
mod signing;

use keys::*;

/// The actor recorded in the audit log for changes made with the root admin token.
pub(crate) const ACTOR: &str = "admin";

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
        .route("/v1/keys/check", post(check_keys))
        .route("/v1/keys/import", post(import_key))
        .route("/v1/keys/{id}/revoke", post(revoke_key))
        .route("/v1/keys/{id}/rotate", post(rotate_key))
        .route("/v1/keys/{id}/disable", post(disable_key))
        .route("/v1/keys/{id}/enable", post(enable_key))
        .route("/v1/clients", post(clients::create_client).get(clients::list_clients))
        .route(
            "/v1/clients/{id}",
            get(clients::show_client).delete(clients::delete_client),
        )
        .route("/v1/clients/{id}/disable", post(clients::disable_client))
        .route("/v1/clients/{id}/enable", post(clients::enable_client))
        .route("/v1/clients/{id}/rotate-secret", post(clients::rotate_secret))
        .route("/v1/signing-keys", get(signing::list))
        .route("/v1/signing-keys/rotate", post(signing::rotate))
        .route("/v1/signing-keys/{kid}/retire", post(signing::retire))
        .route("/v1/audit", get(audit::list_audit))
        .route("/v1/usage", get(audit::usage))
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
    let store = st.engine.store();
    match store.ping().await {
        Ok(()) => {
            let mut body = serde_json::json!({"status": "ok", "store": store.backend()});
            // Shared store: without its change channel this node learns of other nodes'
            // changes only by revalidation (`store.revalidate_interval`).
            if let Some(up) = store.changes_connected() {
                body["store_changes"] = serde_json::json!(if up { "connected" } else { "reconnecting" });
                if !up {
                    body["status"] = serde_json::json!("degraded");
                }
            }
            Json(body).into_response()
        }
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
    };
    let app = st
        .engine
        .create_app(ACTOR, &body.name, policy)
        .await
        .map_err(engine_err)?;
    tracing::info!(app_id = %app.id, "app created");
    Ok((StatusCode::CREATED, Json(app)).into_response())
}

#[derive(Serialize)]
pub(crate) struct List<T> {
    pub(crate) items: Vec<T>,
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
pub(crate) struct UpdatePolicy {
    #[serde(default)]
    pub(crate) ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double")]
    pub(crate) rate: Option<Option<RateSpec>>,
    #[serde(default, deserialize_with = "double")]
    pub(crate) quota: Option<Option<QuotaSpec>>,
    #[serde(default)]
    pub(crate) require_mtls: Option<bool>,
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
        .update_app_policy(ACTOR, &current.id, policy)
        .await
        .map_err(engine_err)?;
    tracing::info!(app_id = %app.id, "app limits changed");
    Ok(Json(app))
}
