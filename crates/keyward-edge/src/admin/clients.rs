//! OAuth clients: create (secret shown once), list, show, disable/enable, delete, rotate secret.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyward_core::model::{ClientAuthMethod, ClientRecord, ClientSecretInfo};
use keyward_core::policy::{Policy, QuotaSpec, RateSpec};
use keyward_core::when::parse_duration;
use keyward_engine::oauth::{ClientUpdate, NewClient, DEFAULT_TOKEN_TTL};
use serde::{Deserialize, Serialize};

use super::keys::optional_body;
use super::{actor, allowlist, engine_err, invalid, AdminState, StrictJson};
use crate::problem::Problem;
use crate::strict::StrictQuery;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateClient {
    app: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// `client_secret_basic` (default), `client_secret_post` or `private_key_jwt`.
    #[serde(default)]
    auth_method: Option<String>,
    /// Public keys for `private_key_jwt`.
    #[serde(default)]
    jwks: Option<serde_json::Value>,
    /// Access-token lifetime: a duration (`5m`) — default 5 minutes, at most 24 hours.
    #[serde(default)]
    token_ttl: Option<String>,
    #[serde(default)]
    dpop_bound_access_tokens: bool,
    /// `tls_client_auth` (RFC 8705 §2.1.2): exactly one of the following names the certificate.
    #[serde(default)]
    tls_client_auth_subject_dn: Option<String>,
    #[serde(default)]
    tls_client_auth_san_dns: Option<String>,
    #[serde(default)]
    tls_client_auth_san_uri: Option<String>,
    #[serde(default)]
    tls_client_auth_san_ip: Option<String>,
    #[serde(default)]
    tls_client_auth_san_email: Option<String>,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    rate: Option<RateSpec>,
    #[serde(default)]
    quota: Option<QuotaSpec>,
}

/// A change to a client; absent fields stay, `null` clears (`name`, `rate`, `quota`). The
/// authentication method and the app never change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateClient {
    #[serde(default, deserialize_with = "super::double")]
    name: Option<Option<String>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    jwks: Option<serde_json::Value>,
    #[serde(default)]
    token_ttl: Option<String>,
    #[serde(default)]
    dpop_bound_access_tokens: Option<bool>,
    #[serde(default)]
    tls_client_auth_subject_dn: Option<String>,
    #[serde(default)]
    tls_client_auth_san_dns: Option<String>,
    #[serde(default)]
    tls_client_auth_san_uri: Option<String>,
    #[serde(default)]
    tls_client_auth_san_ip: Option<String>,
    #[serde(default)]
    tls_client_auth_san_email: Option<String>,
    #[serde(default)]
    ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::double")]
    rate: Option<Option<RateSpec>>,
    #[serde(default, deserialize_with = "super::double")]
    quota: Option<Option<QuotaSpec>>,
}

/// A client as the admin API shows it.
#[derive(Serialize)]
pub(crate) struct ClientView {
    client_id: String,
    #[serde(flatten)]
    record: ClientRecord,
    state: &'static str,
}

#[derive(Serialize)]
pub(crate) struct CreatedClient {
    #[serde(flatten)]
    view: ClientView,
    /// Shown this once, for secret methods.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct ClientDetail {
    #[serde(flatten)]
    view: ClientView,
    /// Hints of the current secrets (the previous one during a rotation grace period).
    secrets: Vec<ClientSecretInfo>,
}

fn view(record: ClientRecord) -> ClientView {
    let state = if record.disabled_at.is_some() {
        "disabled"
    } else {
        "active"
    };
    ClientView {
        client_id: record.id.clone(),
        record,
        state,
    }
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    resp
}

/// Parses a token lifetime: a duration, 1 s to 24 h.
pub(crate) fn parse_ttl(s: &str) -> Result<u32, Problem> {
    let d = parse_duration(s).map_err(|e| invalid("token_ttl", e))?;
    let secs = d.whole_seconds();
    if !(1..=86_400).contains(&secs) {
        return Err(invalid("token_ttl", "from 1s to 24h"));
    }
    u32::try_from(secs).map_err(|_| invalid("token_ttl", "from 1s to 24h"))
}

pub(crate) async fn create_client(
    State(st): State<Arc<AdminState>>,
    StrictJson(body): StrictJson<CreateClient>,
) -> Result<Response, Problem> {
    let auth_method = match body.auth_method.as_deref() {
        None => ClientAuthMethod::ClientSecretBasic,
        Some(m) => ClientAuthMethod::parse(m).ok_or_else(|| {
            invalid(
                "auth_method",
                "one of client_secret_basic, client_secret_post, private_key_jwt, tls_client_auth, \
                 self_signed_tls_client_auth",
            )
        })?,
    };
    let token_ttl = match body.token_ttl.as_deref() {
        Some(t) => parse_ttl(t)?,
        None => DEFAULT_TOKEN_TTL,
    };
    let names: Vec<(String, String)> = [
        ("tls_client_auth_subject_dn", body.tls_client_auth_subject_dn),
        ("tls_client_auth_san_dns", body.tls_client_auth_san_dns),
        ("tls_client_auth_san_uri", body.tls_client_auth_san_uri),
        ("tls_client_auth_san_ip", body.tls_client_auth_san_ip),
        ("tls_client_auth_san_email", body.tls_client_auth_san_email),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
    .collect();
    if names.len() > 1 {
        return Err(one_tls_name());
    }
    let new = NewClient {
        tls_subject: names.into_iter().next(),
        app: body.app,
        name: body.name,
        scopes: super::keys::scopes_of(&body.scopes)?,
        auth_method,
        jwks: body.jwks,
        token_ttl,
        dpop_bound_access_tokens: body.dpop_bound_access_tokens,
        policy: Policy {
            ips: allowlist(&body.ips)?,
            rate: body.rate,
            quota: body.quota,
            ..Default::default()
        },
    };
    let (client, secret) = st.engine.create_client(&actor(), new).await.map_err(engine_err)?;
    tracing::info!(client_id = %client.id, "client created");
    let out = CreatedClient {
        view: view(client),
        client_secret: secret.map(|s| s.expose().to_owned()),
    };
    Ok(no_store((StatusCode::CREATED, Json(out)).into_response()))
}

fn one_tls_name() -> Problem {
    invalid(
        "tls_client_auth",
        "give exactly one of the tls_client_auth_* names (RFC 8705 §2.1.2)",
    )
}

/// `PATCH /v1/clients/{id}`.
pub(crate) async fn update_client(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<UpdateClient>,
) -> Result<Json<ClientView>, Problem> {
    let mut names: Vec<(String, String)> = [
        ("tls_client_auth_subject_dn", body.tls_client_auth_subject_dn),
        ("tls_client_auth_san_dns", body.tls_client_auth_san_dns),
        ("tls_client_auth_san_uri", body.tls_client_auth_san_uri),
        ("tls_client_auth_san_ip", body.tls_client_auth_san_ip),
        ("tls_client_auth_san_email", body.tls_client_auth_san_email),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
    .collect();
    if names.len() > 1 {
        return Err(one_tls_name());
    }
    let policy = if body.ips.is_some() || body.rate.is_some() || body.quota.is_some() {
        let current = st.engine.get_client(&id).await.map_err(engine_err)?;
        let mut p = current.policy;
        if let Some(ips) = &body.ips {
            p.ips = allowlist(ips)?;
        }
        if let Some(r) = body.rate {
            p.rate = r;
        }
        if let Some(q) = body.quota {
            p.quota = q;
        }
        Some(p)
    } else {
        None
    };
    let update = ClientUpdate {
        name: body.name,
        scopes: body.scopes.as_deref().map(super::keys::scopes_of).transpose()?,
        jwks: body.jwks,
        token_ttl: body.token_ttl.as_deref().map(parse_ttl).transpose()?,
        dpop_bound_access_tokens: body.dpop_bound_access_tokens,
        tls_subject: names.pop(),
        policy,
    };
    let c = st
        .engine
        .update_client(&actor(), &id, update)
        .await
        .map_err(engine_err)?;
    tracing::info!(client_id = %c.id, "client changed");
    Ok(Json(view(c)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ClientFilter {
    /// Only the clients of this app (id or name).
    #[serde(default)]
    app: Option<String>,
    /// `active` or `disabled`.
    #[serde(default)]
    state: Option<String>,
    /// Case-insensitive search in the client id and name.
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

pub(crate) async fn list_clients(
    State(st): State<Arc<AdminState>>,
    StrictQuery(q): StrictQuery<ClientFilter>,
) -> Result<Json<super::Page<ClientView>>, Problem> {
    if let Some(s) = q.state.as_deref() {
        if s != "active" && s != "disabled" {
            return Err(super::page::bad_query("state: active or disabled"));
        }
    }
    let text = super::query_text(q.q.as_deref())?;
    let clients = st.engine.list_clients(q.app.as_deref()).await.map_err(engine_err)?;
    let items: Vec<ClientView> = clients
        .into_iter()
        .map(view)
        .filter(|v| {
            q.state.as_deref().is_none_or(|s| v.state == s)
                && super::matches(&text, &[Some(&v.record.id), v.record.name.as_deref()])
        })
        .collect();
    Ok(Json(super::paginate(
        items,
        |v| (v.record.created_at.unix_timestamp(), v.record.id.clone()),
        q.limit,
        q.cursor.as_deref(),
    )?))
}

pub(crate) async fn show_client(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<ClientDetail>, Problem> {
    let c = st.engine.get_client(&id).await.map_err(engine_err)?;
    let secrets = st.engine.client_secret_info(&id).await.map_err(engine_err)?;
    Ok(Json(ClientDetail { view: view(c), secrets }))
}

pub(crate) async fn disable_client(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<ClientView>, Problem> {
    Ok(Json(view(
        st.engine
            .set_client_disabled(&actor(), &id, true)
            .await
            .map_err(engine_err)?,
    )))
}

pub(crate) async fn enable_client(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<ClientView>, Problem> {
    Ok(Json(view(
        st.engine
            .set_client_disabled(&actor(), &id, false)
            .await
            .map_err(engine_err)?,
    )))
}

pub(crate) async fn delete_client(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    st.engine.delete_client(&actor(), &id).await.map_err(engine_err)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateSecret {
    /// How long the previous secret keeps working (default 24h; `0s` for not at all).
    #[serde(default)]
    grace: Option<String>,
}

pub(crate) async fn rotate_secret(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let body: RotateSecret = optional_body(&body)?;
    let grace = match body.grace.as_deref() {
        None => time::Duration::hours(24),
        Some(g) => super::keys::parse_grace(g)?,
    };
    let (client, secret) = st
        .engine
        .rotate_client_secret(&actor(), &id, grace)
        .await
        .map_err(engine_err)?;
    let out = CreatedClient {
        view: view(client),
        client_secret: Some(secret.expose().to_owned()),
    };
    Ok(no_store((StatusCode::OK, Json(out)).into_response()))
}
