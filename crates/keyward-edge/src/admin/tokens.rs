//! Scoped admin tokens: create (the token shown once), list, revoke. Only the bootstrap
//! admin token may call these (see `authorize`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyward_engine::admin_tokens::AdminRole;
use keyward_store::AdminTokenRecord;
use serde::{Deserialize, Serialize};

use super::{actor, engine_err, invalid, paginate, AdminState, ListQuery, Page, StrictJson};
use crate::problem::Problem;
use crate::strict::StrictQuery;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// A unique name (recorded as the actor `admin:<name>` in the audit log).
    name: String,
    /// `read` (GET only) or `write` (everything except managing admin tokens).
    role: String,
    /// A duration from now (`90d`); absent: no expiry.
    #[serde(default)]
    expires_in: Option<String>,
}

/// An admin token as the API shows it: never the token itself.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenView {
    id: String,
    name: String,
    /// `read` or `write`.
    role: String,
    /// `kwadm_` + first 4 + `…` + last 4.
    hint: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    created_by: String,
    /// `active`, `expired` or `revoked`.
    #[schema(value_type = String)]
    state: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedToken {
    #[serde(flatten)]
    view: TokenView,
    /// The token, shown this once.
    token: String,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn view(t: AdminTokenRecord, now: time::OffsetDateTime) -> TokenView {
    let state = if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    };
    TokenView {
        id: t.id,
        name: t.name,
        role: t.role,
        hint: t.hint,
        created_at: rfc3339(t.created_at),
        expires_at: t.expires_at.map(rfc3339),
        revoked_at: t.revoked_at.map(rfc3339),
        created_by: t.created_by,
        state,
    }
}

pub(crate) async fn create_token(
    State(st): State<Arc<AdminState>>,
    StrictJson(body): StrictJson<CreateToken>,
) -> Result<Response, Problem> {
    let role = AdminRole::parse(&body.role).ok_or_else(|| invalid("role", "read or write"))?;
    let now = st.engine.now();
    let expires_at = match body.expires_in.as_deref() {
        None => None,
        Some(d) => Some(now + keyward_core::when::parse_duration(d).map_err(|e| invalid("expires_in", e))?),
    };
    let (record, secret) = st
        .engine
        .create_admin_token(&actor(), &body.name, role, expires_at)
        .await
        .map_err(engine_err)?;
    tracing::info!(admin_token_id = %record.id, "admin token created");
    let out = CreatedToken {
        view: view(record, now),
        token: secret.expose().to_owned(),
    };
    let mut resp = (StatusCode::CREATED, Json(out)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub(crate) async fn list_tokens(
    State(st): State<Arc<AdminState>>,
    StrictQuery(q): StrictQuery<ListQuery>,
) -> Result<Json<Page<TokenView>>, Problem> {
    let now = st.engine.now();
    let all = st.engine.list_admin_tokens().await.map_err(engine_err)?;
    let page = paginate(
        all,
        |t| (t.created_at.unix_timestamp(), t.id.clone()),
        q.limit,
        q.cursor.as_deref(),
    )?;
    Ok(Json(Page {
        items: page.items.into_iter().map(|t| view(t, now)).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub(crate) async fn revoke_token(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, Problem> {
    let t = st.engine.revoke_admin_token(&actor(), &id).await.map_err(engine_err)?;
    tracing::info!(admin_token_id = %t.id, "admin token revoked");
    Ok(Json(view(t, st.engine.now())))
}
