//! `GET /v1/session`: who the caller's admin token is and what it may do, so that a client
//! (the web console) offers only what the token allows. Any valid admin token may call it.

use axum::Json;
use keyward_engine::admin_tokens::AdminRole;
use serde::{Deserialize, Serialize};

use super::{Principal, ACTOR, PRINCIPAL};
use crate::strict::StrictQuery;

/// No query parameter is accepted (unknown ones are refused, as everywhere in the admin API).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {}

/// The caller of the admin API.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionView {
    /// `admin` (the bootstrap token: everything), `write` (everything but managing admin
    /// tokens) or `read` (reads only).
    #[schema(value_type = String)]
    role: &'static str,
    /// As the audit log records the caller's changes: `admin` or `admin:<token name>`.
    actor: String,
    /// Whether the token may change things (create, rotate, disable, revoke…).
    can_write: bool,
    /// Whether the token may create, list and revoke admin tokens (the bootstrap token only).
    can_manage_admin_tokens: bool,
}

fn view(p: &Principal) -> SessionView {
    let role = match p.role {
        None => "admin",
        Some(r) => r.as_str(),
    };
    SessionView {
        role,
        actor: p.actor.clone(),
        can_write: p.role != Some(AdminRole::Read),
        can_manage_admin_tokens: p.role.is_none(),
    }
}

pub(crate) async fn show(StrictQuery(_): StrictQuery<NoQuery>) -> Json<SessionView> {
    // The authentication middleware always sets the principal before a handler runs.
    let v = PRINCIPAL.try_with(view).unwrap_or_else(|_| SessionView {
        role: "read",
        actor: ACTOR.to_owned(),
        can_write: false,
        can_manage_admin_tokens: false,
    });
    Json(v)
}
