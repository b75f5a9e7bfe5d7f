//! Keys: create, list, show, change, disable/enable, rotate, revoke.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyward_core::model::{KeyState, KeyUpdate};
use keyward_core::policy::{Policy, QuotaSpec, RateSpec};
use keyward_core::when::{check_expiry, parse_duration, parse_instant};
use keyward_core::{KeyEnv, KeyKind, KeyRecord, Scope};
use keyward_engine::admin::SuccessorExpiry;
use keyward_engine::NewKey;
use serde::{Deserialize, Serialize};

use super::{actor, allowlist, double, engine_err, invalid, AdminState, List, StrictJson, UpdatePolicy};
use crate::problem::Problem;
use crate::strict::StrictQuery;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
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
    /// A canary: refused like an unknown key; any use raises a security event.
    #[serde(default)]
    canary: bool,
    /// Only exchangeable for tokens at the token endpoint.
    #[serde(default)]
    exchange_only: bool,
    /// Only usable over a TLS connection with a client certificate registered to the app.
    #[serde(default)]
    require_mtls: bool,
    /// `secret` (default) or `publishable` (embeddable in web pages; needs `origins`).
    #[serde(default)]
    kind: KeyKind,
    /// Publishable keys: the exact web origins allowed to use the key.
    #[serde(default)]
    origins: Vec<String>,
}

/// A change to a key; absent fields stay, `null` clears.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateKey {
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
pub(crate) struct UpdatePolicyFields {
    #[serde(default)]
    ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double")]
    rate: Option<Option<RateSpec>>,
    #[serde(default, deserialize_with = "double")]
    quota: Option<Option<QuotaSpec>>,
    #[serde(default)]
    require_mtls: Option<bool>,
    #[serde(default)]
    origins: Option<Vec<String>>,
}

/// Parses a list of web origins (publishable keys).
pub(crate) fn origins_of(items: &[String]) -> Result<Vec<keyward_core::policy::Origin>, Problem> {
    if items.len() > keyward_core::policy::MAX_ORIGINS {
        return Err(invalid("origins", "at most 64 origins per key"));
    }
    items
        .iter()
        .map(|o| keyward_core::policy::Origin::parse(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("origins", e))
}

pub(crate) fn scopes_of(items: &[String]) -> Result<Vec<Scope>, Problem> {
    if items.len() > 256 {
        return Err(invalid("scopes", "at most 256 scopes per key"));
    }
    items
        .iter()
        .map(|s| Scope::new(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("scopes", e))
}

pub(crate) async fn update_key(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<serde_json::Value>,
) -> Result<Json<KeyView>, Problem> {
    // Unknown fields are refused explicitly (see `UpdatePolicyFields`).
    if let Some(obj) = body.as_object() {
        if let Some(k) = obj
            .keys()
            .find(|k| !["name", "scopes", "ips", "rate", "quota", "require_mtls", "origins"].contains(&k.as_str()))
        {
            let k: String = k.chars().take(64).collect();
            return Err(
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "Invalid Request Body").detail(format!(
                    "unknown field `{k}`, expected one of name, scopes, ips, rate, quota, require_mtls, origins"
                )),
            );
        }
    }
    let body: UpdateKey = serde_json::from_value(body).map_err(|e| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "Invalid Request Body")
            .detail(e.to_string().chars().take(200).collect::<String>())
    })?;
    let current = st.engine.get_key(&id).await.map_err(engine_err)?;
    if let Some(o) = &body.policy.origins {
        if current.kind() != KeyKind::Publishable {
            return Err(invalid("origins", "only publishable keys are bound to web origins"));
        }
        if o.is_empty() {
            return Err(invalid(
                "origins",
                "a publishable key needs at least one allowed origin",
            ));
        }
    }
    let origins = body.policy.origins.as_deref().map(origins_of).transpose()?;
    let p = UpdatePolicy {
        ips: body.policy.ips,
        rate: body.policy.rate,
        quota: body.policy.quota,
        require_mtls: body.policy.require_mtls,
        max_key_lifetime: None,
        require_expiry: None,
        allowed_kinds: None,
    };
    let mut policy = p.apply(current.policy)?;
    if let Some(o) = origins {
        policy.origins = o;
    }
    let update = KeyUpdate {
        name: body.name,
        scopes: body.scopes.as_deref().map(scopes_of).transpose()?,
        policy: Some(policy),
        disabled_at: None,
    };
    let k = st.engine.update_key(&actor(), &id, update).await.map_err(engine_err)?;
    tracing::info!(key_id = %k.id, "key changed");
    Ok(Json(view(&st, k)))
}

/// A key as the admin API shows it: the record, its state, never the secret.
#[derive(Serialize)]
pub struct KeyView {
    #[serde(flatten)]
    record: KeyRecord,
    state: KeyState,
    /// `secret` or `publishable`.
    kind: KeyKind,
}

#[derive(Serialize)]
pub(crate) struct CreatedKey {
    #[serde(flatten)]
    view: KeyView,
    /// The plaintext key, shown this once.
    key: String,
}

fn view(st: &AdminState, record: KeyRecord) -> KeyView {
    let state = record.state(st.engine.now());
    let kind = record.kind();
    KeyView { record, state, kind }
}

/// `expires_at` (RFC 3339) or `expires_in` (a duration), never both; `expires_in = "never"`
/// is accepted only where `allow_never`; `default` applies when both are absent.
fn expiry_fields(
    at: Option<&str>,
    within: Option<&str>,
    now: time::OffsetDateTime,
    allow_never: bool,
    default: Option<time::OffsetDateTime>,
) -> Result<Option<time::OffsetDateTime>, Problem> {
    match (at, within) {
        (Some(_), Some(_)) => Err(invalid("expires_at", "give expires_at or expires_in, not both")),
        (Some(at), None) => {
            let at = parse_instant(at).map_err(|e| invalid("expires_at", e))?;
            Ok(Some(check_expiry(at, now).map_err(|e| invalid("expires_at", e))?))
        }
        (None, Some("never")) if allow_never => Ok(None),
        (None, Some(d)) => Ok(Some(now + parse_duration(d).map_err(|e| invalid("expires_in", e))?)),
        (None, None) => Ok(default),
    }
}

/// A 201 with `Cache-Control: no-store` (the body holds a secret shown once).
fn created_once(body: impl Serialize) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    resp
}

pub(crate) async fn create_key(
    State(st): State<Arc<AdminState>>,
    StrictJson(body): StrictJson<CreateKey>,
) -> Result<Response, Problem> {
    let now = st.engine.now();
    let expires_at = expiry_fields(body.expires_at.as_deref(), body.expires_in.as_deref(), now, false, None)?;
    let scopes = scopes_of(&body.scopes)?;
    let policy = Policy {
        ips: allowlist(&body.ips)?,
        rate: body.rate,
        quota: body.quota,
        require_mtls: body.require_mtls,
        origins: origins_of(&body.origins)?,
        ..Default::default()
    };
    let (record, secret) = st
        .engine
        .create_key(
            &actor(),
            NewKey {
                app: body.app,
                name: body.name,
                scopes,
                expires_at,
                env: body.env.unwrap_or(KeyEnv::Live),
                policy,
                canary: body.canary,
                exchange_only: body.exchange_only,
                kind: body.kind,
            },
        )
        .await
        .map_err(engine_err)?;
    tracing::info!(key_id = %record.id, app_id = %record.app_id, "key created");
    let created = CreatedKey {
        key: secret.expose().to_owned(),
        view: view(&st, record),
    };
    Ok(created_once(created))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyFilter {
    /// Only the keys of this app (id or name).
    #[serde(default)]
    app: Option<String>,
    /// `active`, `disabled`, `expired` or `revoked`.
    #[serde(default)]
    state: Option<String>,
    /// `live` or `test`.
    #[serde(default)]
    env: Option<String>,
    /// Case-insensitive search in the id, name and hint.
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

pub(crate) async fn list_keys(
    State(st): State<Arc<AdminState>>,
    StrictQuery(q): StrictQuery<KeyFilter>,
) -> Result<Json<super::Page<KeyView>>, Problem> {
    let state = match q.state.as_deref() {
        None => None,
        Some(s @ ("active" | "disabled" | "expired" | "revoked")) => Some(s.to_owned()),
        Some(_) => return Err(super::page::bad_query("state: active, disabled, expired or revoked")),
    };
    if let Some(e) = q.env.as_deref() {
        if e != "live" && e != "test" {
            return Err(super::page::bad_query("env: live or test"));
        }
    }
    let text = super::query_text(q.q.as_deref())?;
    let keys = st.engine.list_keys(q.app.as_deref()).await.map_err(engine_err)?;
    let items: Vec<KeyView> = keys
        .into_iter()
        .map(|k| view(&st, k))
        .filter(|v| {
            let env_ok = q.env.as_deref().is_none_or(|e| v.record.env.as_str() == e);
            let state_ok = state.as_deref().is_none_or(|s| key_state_name(v.state) == s);
            env_ok
                && state_ok
                && super::matches(
                    &text,
                    &[Some(&v.record.id), v.record.name.as_deref(), Some(&v.record.hint)],
                )
        })
        .collect();
    Ok(Json(super::paginate(
        items,
        |v| (v.record.created_at.unix_timestamp(), v.record.id.clone()),
        q.limit,
        q.cursor.as_deref(),
    )?))
}

pub(crate) fn key_state_name(s: KeyState) -> &'static str {
    match s {
        KeyState::Active => "active",
        KeyState::Disabled => "disabled",
        KeyState::Expired => "expired",
        KeyState::Revoked => "revoked",
    }
}

#[derive(Serialize)]
pub(crate) struct KeyDetail {
    #[serde(flatten)]
    view: KeyView,
    /// Requests of the last 24 hours by outcome (`allowed`, `denied:<reason>`, `limited:<rate|quota>`).
    usage_24h: std::collections::BTreeMap<String, u64>,
}

pub(crate) async fn show_key(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<KeyDetail>, Problem> {
    st.engine.get_key(&id).await.map_err(engine_err)?;
    // Counts still in memory are written first, so the record and the totals are current.
    st.engine.flush_usage().await.map_err(engine_err)?;
    let k = st.engine.get_key(&id).await.map_err(engine_err)?;
    let since = (st.engine.now() - time::Duration::hours(24))
        .unix_timestamp()
        .div_euclid(60);
    let rows = st
        .engine
        .store()
        .usage(Some(&id), None, since)
        .await
        .map_err(|e| crate::problem::store(&e))?;
    let mut usage_24h = std::collections::BTreeMap::new();
    for r in rows {
        *usage_24h.entry(r.outcome).or_insert(0) += r.count;
    }
    Ok(Json(KeyDetail {
        view: view(&st, k),
        usage_24h,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBody {
    /// Why (recorded in the audit log), e.g. "leaked in a public repository".
    #[serde(default)]
    reason: Option<String>,
}

/// An optional JSON body: empty is fine; otherwise it must be valid.
pub(crate) fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "Invalid Request Body")
            .detail(e.to_string().chars().take(200).collect::<String>())
    })
}

pub(crate) async fn revoke_key(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<KeyView>, Problem> {
    let body: RevokeBody = optional_body(&body)?;
    if let Some(r) = &body.reason {
        if r.chars().count() > 500 || r.chars().any(char::is_control) {
            return Err(invalid("reason", "at most 500 characters, no control characters"));
        }
    }
    let k = st
        .engine
        .revoke_key(&actor(), &id, body.reason.as_deref())
        .await
        .map_err(engine_err)?;
    tracing::info!(key_id = %k.id, "key revoked");
    Ok(Json(view(&st, k)))
}

pub(crate) async fn disable_key(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, Problem> {
    let k = st.engine.disable_key(&actor(), &id).await.map_err(engine_err)?;
    tracing::info!(key_id = %k.id, "key disabled");
    Ok(Json(view(&st, k)))
}

pub(crate) async fn enable_key(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, Problem> {
    let k = st.engine.enable_key(&actor(), &id).await.map_err(engine_err)?;
    tracing::info!(key_id = %k.id, "key enabled");
    Ok(Json(view(&st, k)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// How long the old key keeps working (`7d`, `0s` for not at all). Default 7 days.
    #[serde(default)]
    grace: Option<String>,
    /// Successor expiry as an RFC 3339 instant, or…
    #[serde(default)]
    expires_at: Option<String>,
    /// …as a duration from now; or
    #[serde(default)]
    expires_in: Option<String>,
    /// `true`: the successor never expires (explicitly dropping the old key's expiry policy).
    #[serde(default)]
    no_expiry: bool,
}

#[derive(Serialize)]
pub(crate) struct Rotated {
    #[serde(flatten)]
    successor: KeyView,
    /// The successor's plaintext, shown this once.
    key: String,
    /// The old key after the rotation (its `expires_at` is the end of the grace period).
    previous: KeyView,
}

/// Parses a grace period: a duration, where `0`/`0s` means "no grace".
pub(crate) fn parse_grace(s: &str) -> Result<time::Duration, Problem> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(invalid("grace", "the grace period cannot be negative"));
    }
    if t == "0" || t.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(time::Duration::ZERO);
    }
    parse_duration(t).map_err(|e| invalid("grace", e))
}

pub(crate) async fn rotate_key(
    State(st): State<Arc<AdminState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let body: RotateBody = optional_body(&body)?;
    let grace = match body.grace.as_deref() {
        Some(g) => parse_grace(g)?,
        None => time::Duration::days(7),
    };
    let now = st.engine.now();
    let expiry = match (body.expires_at.as_deref(), body.expires_in.as_deref(), body.no_expiry) {
        (None, None, false) => SuccessorExpiry::Keep,
        (None, None, true) => SuccessorExpiry::Never,
        (Some(at), None, false) => {
            let at = parse_instant(at).map_err(|e| invalid("expires_at", e))?;
            SuccessorExpiry::At(check_expiry(at, now).map_err(|e| invalid("expires_at", e))?)
        }
        (None, Some(d), false) => SuccessorExpiry::At(now + parse_duration(d).map_err(|e| invalid("expires_in", e))?),
        _ => {
            return Err(invalid(
                "expires_at",
                "give at most one of expires_at, expires_in and no_expiry",
            ))
        }
    };
    let (old, successor, secret) = st
        .engine
        .rotate_key(&actor(), &id, grace, expiry)
        .await
        .map_err(engine_err)?;
    tracing::info!(key_id = %old.id, successor = %successor.id, "key rotated");
    let body = Rotated {
        key: secret.expose().to_owned(),
        successor: view(&st, successor),
        previous: view(&st, old),
    };
    Ok(created_once(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckBody {
    /// Plaintext keys found somewhere (at most 1000 per call).
    keys: Vec<String>,
}

#[derive(Serialize)]
pub(crate) struct CheckItem {
    index: usize,
    #[serde(flatten)]
    check: keyward_engine::admin::KeyCheck,
}

/// `POST /v1/keys/check`: the state of each presented key (`active`, `disabled`, `expired`,
/// `revoked`, `canary`, `unknown`, `malformed`), by digest. Nothing is recorded or changed.
pub(crate) async fn check_keys(
    State(st): State<Arc<AdminState>>,
    StrictJson(body): StrictJson<CheckBody>,
) -> Result<Json<List<CheckItem>>, Problem> {
    if body.keys.len() > 1000 {
        return Err(invalid("keys", "at most 1000 keys per request"));
    }
    let checks = st.engine.check_keys(&body.keys).await.map_err(engine_err)?;
    Ok(Json(List {
        items: checks
            .into_iter()
            .enumerate()
            .map(|(index, check)| CheckItem { index, check })
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportBody {
    app: String,
    /// The existing static secret (stored only as a digest).
    secret: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// When it stops working: RFC 3339, or…
    #[serde(default)]
    expires_at: Option<String>,
    /// …a duration from now. Default `90d`; `"never"` for no sunset (not recommended).
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    rate: Option<RateSpec>,
    #[serde(default)]
    quota: Option<QuotaSpec>,
}

/// `POST /v1/keys/import`: brings an existing static secret under keyward's control.
pub(crate) async fn import_key(
    State(st): State<Arc<AdminState>>,
    StrictJson(body): StrictJson<ImportBody>,
) -> Result<Response, Problem> {
    let now = st.engine.now();
    let default_sunset = Some(now + time::Duration::days(90));
    let expires_at = expiry_fields(
        body.expires_at.as_deref(),
        body.expires_in.as_deref(),
        now,
        true,
        default_sunset,
    )?;
    let import = keyward_engine::admin::ImportKey {
        app: body.app,
        name: body.name,
        scopes: scopes_of(&body.scopes)?,
        expires_at,
        policy: Policy {
            ips: allowlist(&body.ips)?,
            rate: body.rate,
            quota: body.quota,
            ..Default::default()
        },
    };
    let k = st
        .engine
        .import_key(&actor(), &body.secret, import)
        .await
        .map_err(engine_err)?;
    tracing::info!(key_id = %k.id, "legacy key imported");
    Ok((StatusCode::CREATED, Json(view(&st, k))).into_response())
}
