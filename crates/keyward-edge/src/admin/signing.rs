//! Token signing keys: list (public parts only), rotate, retire.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyward_core::model::SigningKeyRow;
use serde::{Deserialize, Serialize};

use super::keys::optional_body;
use super::{actor, engine_err, invalid, AdminState, List};
use crate::problem::Problem;

/// A signing key as the admin API shows it: never its private part.
#[derive(Serialize)]
pub(crate) struct SigningKeyView {
    kid: String,
    alg: String,
    public_jwk: serde_json::Value,
    /// `pending` (published, not signing yet), `active` (signing), `retired` (published until
    /// `remove_after`, verifying only).
    state: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    active_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    retired_at: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    remove_after: Option<time::OffsetDateTime>,
}

fn view(r: SigningKeyRow, now: time::OffsetDateTime) -> SigningKeyView {
    let state = if r.retired_at.is_some() {
        "retired"
    } else if r.active_at > now {
        "pending"
    } else {
        "active"
    };
    SigningKeyView {
        kid: r.kid,
        alg: r.alg,
        public_jwk: r.public_jwk,
        state,
        created_at: r.created_at,
        active_at: r.active_at,
        retired_at: r.retired_at,
        remove_after: r.remove_after,
    }
}

fn require_oauth(st: &AdminState) -> Result<(), Problem> {
    st.engine.token_service().map(|_| ()).map_err(|_| {
        Problem::new(StatusCode::CONFLICT, "oauth_disabled", "Conflict")
            .detail("the token service is not enabled ([oauth] enabled = true)")
    })
}

pub(crate) async fn list(State(st): State<Arc<AdminState>>) -> Result<Json<List<SigningKeyView>>, Problem> {
    require_oauth(&st)?;
    let now = st.engine.now();
    let rows = st.engine.signing_keys().await.map_err(engine_err)?;
    Ok(Json(List {
        items: rows.into_iter().map(|r| view(r, now)).collect(),
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// EdDSA, ES256 or RS256 (default: `oauth.signing_alg`).
    #[serde(default)]
    alg: Option<String>,
}

pub(crate) async fn rotate(State(st): State<Arc<AdminState>>, body: Bytes) -> Result<Response, Problem> {
    require_oauth(&st)?;
    let body: RotateBody = optional_body(&body)?;
    let alg = match body.alg.as_deref() {
        None => None,
        Some(a) => Some(
            keyward_token::Algorithm::from_name(a)
                .filter(|a| {
                    matches!(
                        a,
                        keyward_token::Algorithm::EdDSA
                            | keyward_token::Algorithm::ES256
                            | keyward_token::Algorithm::RS256
                    )
                })
                .ok_or_else(|| invalid("alg", "EdDSA, ES256 or RS256"))?,
        ),
    };
    let row = st.engine.rotate_signing_key(&actor(), alg).await.map_err(engine_err)?;
    Ok((StatusCode::CREATED, Json(view(row, st.engine.now()))).into_response())
}

pub(crate) async fn retire(State(st): State<Arc<AdminState>>, Path(kid): Path<String>) -> Result<StatusCode, Problem> {
    require_oauth(&st)?;
    st.engine.retire_signing_key(&actor(), &kid).await.map_err(engine_err)?;
    Ok(StatusCode::NO_CONTENT)
}
