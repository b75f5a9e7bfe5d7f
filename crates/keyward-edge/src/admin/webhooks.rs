//! Managed webhooks: list, create, show, change, delete. Their signing secret never passes
//! through the API: a webhook names where every node reads it (`secret_env`, the name of an
//! environment variable, or `secret_file`, the path of a 0600 file), and the node answering the
//! call checks that it can read it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyward_engine::managed_webhooks::WebhookSpec;
use keyward_store::WebhookRecord;
use serde::Deserialize;

use super::{actor, engine_err, invalid, paginate, AdminState, ListQuery, Page, StrictJson};
use crate::problem::Problem;
use crate::strict::StrictQuery;

/// `POST /v1/webhooks`, and `PATCH /v1/webhooks/{id}` (absent fields stay; giving
/// `secret_env` or `secret_file` replaces the other).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    secret_file: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    /// A duration (`5s`).
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    /// A duration (`1s`, `0s`).
    #[serde(default)]
    backoff: Option<String>,
}

fn duration(field: &'static str, s: &str) -> Result<Duration, Problem> {
    if matches!(s.trim(), "0" | "0s" | "0ms") {
        return Ok(Duration::ZERO);
    }
    let d = keyward_core::when::parse_duration(s).map_err(|e| invalid(field, e))?;
    Duration::try_from(d).map_err(|_| invalid(field, "out of range"))
}

impl WebhookBody {
    fn onto(self, mut spec: WebhookSpec) -> Result<WebhookSpec, Problem> {
        if let Some(n) = self.name {
            spec.name = n;
        }
        if let Some(u) = self.url {
            spec.url = u;
        }
        match (self.secret_env, self.secret_file) {
            (Some(_), Some(_)) => return Err(invalid("secret_env", "give one of secret_env and secret_file")),
            (Some(e), None) => {
                spec.secret_env = Some(e);
                spec.secret_file = None;
            }
            (None, Some(f)) => {
                spec.secret_file = Some(f);
                spec.secret_env = None;
            }
            (None, None) => {}
        }
        if let Some(e) = self.events {
            spec.events = e;
        }
        if let Some(t) = self.timeout {
            spec.timeout = duration("timeout", &t)?;
        }
        if let Some(a) = self.max_attempts {
            spec.max_attempts = a;
        }
        if let Some(b) = self.backoff {
            spec.backoff = duration("backoff", &b)?;
        }
        Ok(spec)
    }
}

pub(crate) async fn create_webhook(
    State(st): State<Arc<AdminState>>,
    StrictJson(body): StrictJson<WebhookBody>,
) -> Result<Response, Problem> {
    let name = body.name.clone().ok_or_else(|| invalid("name", "required"))?;
    let url = body.url.clone().ok_or_else(|| invalid("url", "required"))?;
    let spec = body.onto(WebhookSpec::new(&name, &url))?;
    let w = st.engine.create_webhook(&actor(), spec).await.map_err(engine_err)?;
    tracing::info!(webhook_id = %w.id, "webhook created");
    Ok((StatusCode::CREATED, Json(w)).into_response())
}

pub(crate) async fn list_webhooks(
    State(st): State<Arc<AdminState>>,
    StrictQuery(q): StrictQuery<ListQuery>,
) -> Result<Json<Page<WebhookRecord>>, Problem> {
    let all = st.engine.list_webhooks().await.map_err(engine_err)?;
    Ok(Json(paginate(
        all,
        |w| (w.created_at.unix_timestamp(), w.id.clone()),
        q.limit,
        q.cursor.as_deref(),
    )?))
}

pub(crate) async fn show_webhook(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<WebhookRecord>, Problem> {
    Ok(Json(st.engine.get_webhook(&id).await.map_err(engine_err)?))
}

pub(crate) async fn update_webhook(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<WebhookBody>,
) -> Result<Json<WebhookRecord>, Problem> {
    let current = st.engine.get_webhook(&id).await.map_err(engine_err)?;
    let spec = body.onto(WebhookSpec::of(&current))?;
    let w = st
        .engine
        .update_webhook(&actor(), &current.id, spec)
        .await
        .map_err(engine_err)?;
    tracing::info!(webhook_id = %w.id, "webhook changed");
    Ok(Json(w))
}

pub(crate) async fn delete_webhook(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    st.engine.delete_webhook(&actor(), &id).await.map_err(engine_err)?;
    Ok(StatusCode::NO_CONTENT)
}
