//! The plan: what the admin API holds now ([`Current`]), compared with the state file, as an
//! ordered list of [`Step`]s (each one admin API call) and the conflicts that stop `apply`
//! before it changes anything.

use std::collections::BTreeSet;

use keyward_core::model::{ClientAuthMethod, ClientRecord};
use keyward_core::policy::{IpAllowlist, Origin, Policy, QuotaSpec, RateSpec};
use keyward_core::{AppRecord, KeyEnv, KeyKind, KeyRecord};
use keyward_store::WebhookRecord;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::state::{self, AppState, ClientState, KeyState, StateFile, WebhookState};
use crate::client::{seg, AdminClient};
use crate::error::{CliError, Result};

/// An admin token as the API lists it (never the token).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub state: String,
}

/// A key as the API lists it, with its state as the server sees it (its clock).
#[derive(Debug, Clone)]
pub struct KeyView {
    pub record: KeyRecord,
    pub state: String,
}

/// Everything `apply` compares with the file, read through the admin API.
#[derive(Debug, Clone, Default)]
pub struct Current {
    pub apps: Vec<AppRecord>,
    pub keys: Vec<KeyView>,
    pub clients: Vec<ClientRecord>,
    /// `None`: not read (the file does not manage admin tokens).
    pub tokens: Option<Vec<TokenView>>,
    pub webhooks: Vec<WebhookRecord>,
}

fn items<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<Vec<T>> {
    let items = v.get("items").cloned().unwrap_or(Value::Array(vec![]));
    serde_json::from_value(items)
        .map_err(|e| CliError::Io(format!("unexpected {what} listing from the admin API: {e}")))
}

/// Which keys and clients [`Current::read`] lists.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every key and client (export).
    All,
    /// What a plan for this file needs: the keys and clients of the apps whose `keys` or
    /// `clients` the file manages, and with `prune`, whether other apps have any active one
    /// (one item each), so that a store with a million keys is not read whole.
    For(&'a StateFile, bool),
}

async fn key_views(client: &AdminClient, path: &str) -> Result<Vec<KeyView>> {
    let raw: Vec<Value> = items(client.call(Method::GET, path, None).await?, "keys")?;
    let mut keys = Vec::with_capacity(raw.len());
    for k in raw {
        let state = k.get("state").and_then(Value::as_str).unwrap_or("active").to_owned();
        let record: KeyRecord = serde_json::from_value(k)
            .map_err(|e| CliError::Io(format!("unexpected key record from the admin API: {e}")))?;
        keys.push(KeyView { record, state });
    }
    Ok(keys)
}

impl Current {
    pub async fn read(client: &AdminClient, tokens: bool, scope: Scope<'_>) -> Result<Current> {
        let apps: Vec<AppRecord> = items(client.call(Method::GET, "/v1/apps", None).await?, "apps")?;
        let (keys, clients) = match scope {
            Scope::All => (
                key_views(client, "/v1/keys").await?,
                items(client.call(Method::GET, "/v1/clients", None).await?, "clients")?,
            ),
            Scope::For(file, prune) => {
                let declared = file.apps.as_deref().unwrap_or_default();
                let mut keys = Vec::new();
                let mut clients: Vec<ClientRecord> = Vec::new();
                for app in &apps {
                    let a = declared.iter().find(|d| d.name.get_ref().0 == app.name);
                    let id = seg(&app.id);
                    match a {
                        Some(a) => {
                            if a.keys.is_some() {
                                keys.extend(key_views(client, &format!("/v1/keys?app={id}")).await?);
                            }
                            if a.clients.is_some() {
                                let v = client.call(Method::GET, &format!("/v1/clients?app={id}"), None).await?;
                                clients.extend(items::<ClientRecord>(v, "clients")?);
                            }
                        }
                        None if prune && file.apps.is_some() => {
                            keys.extend(key_views(client, &format!("/v1/keys?app={id}&state=active&limit=1")).await?);
                            let v = client
                                .call(Method::GET, &format!("/v1/clients?app={id}&state=active&limit=1"), None)
                                .await?;
                            clients.extend(items::<ClientRecord>(v, "clients")?);
                        }
                        None => {}
                    }
                }
                (keys, clients)
            }
        };
        let tokens = if tokens {
            let v = client
                .call(Method::GET, "/v1/admin-tokens", None)
                .await
                .map_err(|e| match e {
                    CliError::Api { status: 403, .. } => CliError::Usage(
                        "listing admin tokens needs the bootstrap admin token (KEYWARD_ADMIN_TOKEN): leave \
                         admin_tokens out of the state file, or use keyward export --no-admin-tokens"
                            .into(),
                    ),
                    other => other,
                })?;
            Some(items(v, "admin tokens")?)
        } else {
            None
        };
        let webhooks = items(client.call(Method::GET, "/v1/webhooks", None).await?, "webhooks")?;
        Ok(Current {
            apps,
            keys,
            clients,
            tokens,
            webhooks,
        })
    }

    fn app(&self, name: &str) -> Option<&AppRecord> {
        self.apps.iter().find(|a| a.name == name)
    }
}

/// One admin API call of the plan.
#[derive(Debug, Clone)]
pub struct Step {
    /// `+` create, `~` change, `-` disable / revoke / delete.
    pub sign: char,
    /// `app`, `key`, `client`, `admin token`, `webhook`.
    pub kind: &'static str,
    /// `cats`, `cats/ci`, …
    pub label: String,
    /// What it does, when not plain create or change (`disable`, `revoke`, `delete`, `enable`).
    pub action: Option<String>,
    /// Field lines: `rate: none → 100/min burst 100` (changes) or `rate: 100/min` (creations).
    pub fields: Vec<String>,
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    /// The field of the answer holding a secret to print once (`key`, `client_secret`, `token`).
    pub secret: Option<&'static str>,
    /// A creation the file wants disabled: `POST {this}/{new id}/disable` right after it.
    pub disable_after: Option<&'static str>,
}

impl Step {
    pub fn headline(&self) -> String {
        match &self.action {
            Some(a) => format!("{} {} {}: {a}", self.sign, self.kind, self.label),
            None => format!("{} {} {}", self.sign, self.kind, self.label),
        }
    }
}

/// The plan and the conflicts that forbid it.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub conflicts: Vec<String>,
    /// Things worth knowing that change nothing.
    pub notes: Vec<String>,
}

// ---- canonical field values -----------------------------------------------------------------

fn ips_text(ips: &IpAllowlist) -> String {
    if ips.is_empty() {
        "any".into()
    } else {
        ips.nets().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
    }
}

fn rate_text(r: &Option<RateSpec>) -> String {
    match r {
        Some(r) => format!("{r} burst {}", r.burst),
        None => "none".into(),
    }
}

fn quota_text(q: &Option<QuotaSpec>) -> String {
    q.map(|q| q.to_string()).unwrap_or_else(|| "none".into())
}

/// A duration in the largest unit that divides it: `90d`, `36h`, `5m`, `45s`, `250ms`.
pub fn ms_text(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    for (unit, len) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms / len * len == ms {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

pub fn secs_text(s: u64) -> String {
    ms_text(s.saturating_mul(1000))
}

fn list_text<I: IntoIterator<Item = String>>(items: I, empty: &str) -> String {
    let set: BTreeSet<String> = items.into_iter().collect();
    if set.is_empty() {
        empty.into()
    } else {
        set.into_iter().collect::<Vec<_>>().join(", ")
    }
}

fn kind_text(k: KeyKind) -> String {
    match k {
        KeyKind::Secret => "secret".into(),
        KeyKind::Publishable => "publishable".into(),
    }
}

fn app_fields(p: &Policy) -> Vec<(&'static str, String)> {
    vec![
        ("ips", ips_text(&p.ips)),
        ("rate", rate_text(&p.rate)),
        ("quota", quota_text(&p.quota)),
        ("require_mtls", p.require_mtls.to_string()),
        (
            "max_key_lifetime",
            p.key_rules
                .max_lifetime_secs
                .map(secs_text)
                .unwrap_or_else(|| "none".into()),
        ),
        ("require_expiry", p.key_rules.require_expiry.to_string()),
        (
            "allowed_kinds",
            list_text(p.key_rules.allowed_kinds.iter().map(|k| kind_text(*k)), "any"),
        ),
    ]
}

fn key_fields(scopes: &[String], p: &Policy) -> Vec<(&'static str, String)> {
    vec![
        ("scopes", list_text(scopes.iter().cloned(), "none")),
        ("ips", ips_text(&p.ips)),
        ("rate", rate_text(&p.rate)),
        ("quota", quota_text(&p.quota)),
        ("require_mtls", p.require_mtls.to_string()),
        ("origins", list_text(p.origins.iter().map(|o| o.to_string()), "none")),
    ]
}

fn jwks_text(j: &Option<Value>) -> String {
    match j {
        None => "none".into(),
        Some(v) => {
            let keys = v.get("keys").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
            // A short fingerprint of the set, to tell two sets apart in a diff.
            format!(
                "{keys} key{} ({})",
                if keys == 1 { "" } else { "s" },
                fingerprint(&v.to_string())
            )
        }
    }
}

/// FNV-1a of the canonical JSON text: a fingerprint for display, not a security check.
fn fingerprint(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h >> 32)
}

fn client_fields(c: &ClientRecord) -> Vec<(&'static str, String)> {
    let scopes: Vec<String> = c.scopes.iter().map(|s| s.to_string()).collect();
    let tls = c
        .options
        .tls_subjects()
        .into_iter()
        .map(|(k, v)| format!("{}={v}", k.trim_start_matches("tls_client_auth_")))
        .collect::<Vec<_>>();
    vec![
        ("scopes", list_text(scopes, "none")),
        ("jwks", jwks_text(&c.jwks)),
        ("tls", list_text(tls, "none")),
        ("token_ttl", secs_text(u64::from(c.token_ttl))),
        ("dpop_bound", c.options.dpop_bound_access_tokens.to_string()),
        ("ips", ips_text(&c.policy.ips)),
        ("rate", rate_text(&c.policy.rate)),
        ("quota", quota_text(&c.policy.quota)),
    ]
}

fn webhook_fields(w: &WebhookRecord) -> Vec<(&'static str, String)> {
    let secret = match (&w.secret_env, &w.secret_file) {
        (Some(e), _) => format!("env {e}"),
        (None, Some(f)) => format!("file {f}"),
        (None, None) => "none".into(),
    };
    let ms = ms_text;
    vec![
        ("url", w.url.clone()),
        ("secret", secret),
        ("events", list_text(w.events.iter().cloned(), "none")),
        ("timeout", ms(w.timeout_ms)),
        ("max_attempts", w.max_attempts.to_string()),
        ("backoff", ms(w.backoff_ms)),
    ]
}

/// Field lines of a creation: every field that is not at its default.
fn created(fields: &[(&'static str, String)], defaults: &[(&'static str, String)]) -> Vec<String> {
    fields
        .iter()
        .filter(|(k, v)| !defaults.iter().any(|(dk, dv)| dk == k && dv == v))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect()
}

/// Field lines of a change: every field that differs.
fn changed(before: &[(&'static str, String)], after: &[(&'static str, String)]) -> Vec<String> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let old = before
                .iter()
                .find(|(bk, _)| bk == k)
                .map(|(_, b)| b.as_str())
                .unwrap_or("none");
            (old != v).then(|| format!("{k}: {old} → {v}"))
        })
        .collect()
}

// ---- desired state as core values ------------------------------------------------------------

fn rate_of(rate: &Option<state::Rate>, burst: Option<u64>) -> Result<Option<RateSpec>> {
    rate.as_ref()
        .map(|r| RateSpec::parse(&r.0, burst))
        .transpose()
        .map_err(|e| CliError::Usage(e.to_string()))
}

fn quota_of(q: &Option<state::Quota>) -> Result<Option<QuotaSpec>> {
    q.as_ref()
        .map(|q| QuotaSpec::parse(&q.0))
        .transpose()
        .map_err(|e| CliError::Usage(e.to_string()))
}

fn ips_of(ips: &[state::Cidr]) -> Result<IpAllowlist> {
    IpAllowlist::parse(&ips.iter().map(|c| c.0.clone()).collect::<Vec<_>>()).map_err(|e| CliError::Usage(e.to_string()))
}

fn secs_of(d: &state::Dur) -> Result<u64> {
    let d = keyward_core::when::parse_duration(&d.0).map_err(|e| CliError::Usage(e.to_string()))?;
    u64::try_from(d.whole_seconds()).map_err(|_| CliError::Usage("duration out of range".into()))
}

fn app_policy(a: &AppState) -> Result<Policy> {
    let mut kinds = a.allowed_kinds.clone();
    kinds.sort_by_key(|k| kind_text(*k));
    kinds.dedup();
    Ok(Policy {
        ips: ips_of(&a.ips)?,
        rate: rate_of(&a.rate, a.burst)?,
        quota: quota_of(&a.quota)?,
        require_mtls: a.require_mtls,
        key_rules: keyward_core::policy::KeyRules {
            max_lifetime_secs: a.max_key_lifetime.as_ref().map(secs_of).transpose()?,
            require_expiry: a.require_expiry,
            allowed_kinds: kinds,
        },
        ..Default::default()
    })
}

fn rate_json(r: &Option<RateSpec>) -> Value {
    match r {
        Some(r) => json!({"limit": r.to_string(), "burst": r.burst}),
        None => Value::Null,
    }
}

fn quota_json(q: &Option<QuotaSpec>) -> Value {
    q.map(|q| json!(q.to_string())).unwrap_or(Value::Null)
}

fn ips_json(ips: &IpAllowlist) -> Value {
    json!(ips.nets().iter().map(|n| n.to_string()).collect::<Vec<_>>())
}

fn app_body(p: &Policy) -> Value {
    json!({
        "ips": ips_json(&p.ips),
        "rate": rate_json(&p.rate),
        "quota": quota_json(&p.quota),
        "require_mtls": p.require_mtls,
        "max_key_lifetime": p.key_rules.max_lifetime_secs.map(|s| format!("{s}s")),
        "require_expiry": p.key_rules.require_expiry,
        "allowed_kinds": p.key_rules.allowed_kinds,
    })
}

fn key_policy(k: &KeyState) -> Result<Policy> {
    let mut origins = k
        .origins
        .iter()
        .map(|o| Origin::parse(&o.0))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    origins.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    origins.dedup();
    Ok(Policy {
        ips: ips_of(&k.ips)?,
        rate: rate_of(&k.rate, k.burst)?,
        quota: quota_of(&k.quota)?,
        require_mtls: k.require_mtls,
        origins,
        ..Default::default()
    })
}

fn key_scopes(k: &KeyState) -> Vec<String> {
    let set: BTreeSet<String> = k.scopes.iter().map(|s| s.0.clone()).collect();
    set.into_iter().collect()
}

/// The desired client as a record (for comparison), its JWK Set and TLS registration.
fn desired_client(c: &ClientState, app: &AppRecord, path: &std::path::Path) -> Result<ClientRecord> {
    let usage = |m: String| CliError::Usage(format!("client {:?}: {m}", c.name.get_ref().0));
    let jwks = state::client_keys(c, path).map_err(usage)?;
    let mut options = keyward_core::model::ClientOptions {
        dpop_bound_access_tokens: c.dpop_bound,
        ..Default::default()
    };
    if let Some((k, v)) = state::tls_registration(c).map_err(usage)? {
        let slot = match k {
            "tls_client_auth_subject_dn" => &mut options.tls_client_auth_subject_dn,
            "tls_client_auth_san_dns" => &mut options.tls_client_auth_san_dns,
            "tls_client_auth_san_uri" => &mut options.tls_client_auth_san_uri,
            "tls_client_auth_san_ip" => &mut options.tls_client_auth_san_ip,
            _ => &mut options.tls_client_auth_san_email,
        };
        *slot = Some(v);
    }
    let mut scopes = c
        .scopes
        .iter()
        .map(|s| keyward_core::Scope::new(&s.0))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| usage(e.to_string()))?;
    scopes.sort();
    scopes.dedup();
    let ttl = match &c.token_ttl {
        Some(t) => u32::try_from(secs_of(t)?).map_err(|_| usage("token_ttl out of range".into()))?,
        None => keyward_engine::oauth::DEFAULT_TOKEN_TTL,
    };
    Ok(ClientRecord {
        id: String::new(),
        app_id: app.id.clone(),
        app_name: app.name.clone(),
        name: Some(c.name.get_ref().0.clone()),
        scopes,
        auth_method: c.auth.unwrap_or(ClientAuthMethod::ClientSecretBasic),
        jwks,
        token_ttl: ttl,
        options,
        policy: Policy {
            ips: ips_of(&c.ips)?,
            rate: rate_of(&c.rate, c.burst)?,
            quota: quota_of(&c.quota)?,
            ..Default::default()
        },
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        disabled_at: None,
    })
}

fn client_body(d: &ClientRecord, create: bool) -> Value {
    // `null` clears a limit on a change; a creation leaves absent limits out.
    let mut b = json!({
        "scopes": d.scopes,
        "token_ttl": format!("{}s", d.token_ttl),
        "dpop_bound_access_tokens": d.options.dpop_bound_access_tokens,
        "ips": ips_json(&d.policy.ips),
        "rate": rate_json(&d.policy.rate),
        "quota": quota_json(&d.policy.quota),
    });
    if let Some(j) = &d.jwks {
        b["jwks"] = j.clone();
    }
    for (k, v) in d.options.tls_subjects() {
        b[k] = json!(v);
    }
    if create {
        b["app"] = json!(d.app_id);
        b["name"] = json!(d.name);
        b["auth_method"] = json!(d.auth_method.as_str());
        for k in ["rate", "quota"] {
            if b[k].is_null() {
                if let Some(o) = b.as_object_mut() {
                    o.remove(k);
                }
            }
        }
    }
    b
}

// ---- the plan -------------------------------------------------------------------------------

fn step(sign: char, kind: &'static str, label: String, method: Method, path: String, body: Option<Value>) -> Step {
    Step {
        sign,
        kind,
        label,
        action: None,
        fields: Vec::new(),
        method,
        path,
        body,
        secret: None,
        disable_after: None,
    }
}

/// Compares the file with what the API holds. `prune`: also remove what the file does not
/// name, in the collections it declares.
pub fn plan(file: &StateFile, cur: &Current, prune: bool, path: &std::path::Path) -> Result<Plan> {
    let mut p = Plan::default();
    let mut removals: Vec<Step> = Vec::new();
    let default_app = app_fields(&Policy::default());
    for a in file.apps.as_deref().unwrap_or_default() {
        let name = a.name.get_ref().0.clone();
        let want = app_policy(a)?;
        let after = app_fields(&want);
        let existing = cur.app(&name);
        match existing {
            None => {
                let mut body = app_body(&want);
                body["name"] = json!(name);
                for k in ["rate", "quota", "max_key_lifetime"] {
                    if body[k].is_null() {
                        if let Some(o) = body.as_object_mut() {
                            o.remove(k);
                        }
                    }
                }
                let mut s = step('+', "app", name.clone(), Method::POST, "/v1/apps".into(), Some(body));
                s.fields = created(&after, &default_app);
                p.steps.push(s);
            }
            Some(app) => {
                let diff = changed(&app_fields(&app.policy), &after);
                if !diff.is_empty() {
                    let mut s = step(
                        '~',
                        "app",
                        name.clone(),
                        Method::PATCH,
                        format!("/v1/apps/{}", seg(&app.id)),
                        Some(app_body(&want)),
                    );
                    s.fields = diff;
                    p.steps.push(s);
                }
            }
        }
        // The app as it will be (its id is not known before it is created: calls name it).
        let app_ref = existing.cloned().unwrap_or_else(|| AppRecord {
            id: name.clone(),
            name: name.clone(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            policy: want.clone(),
        });
        if let Some(keys) = &a.keys {
            plan_keys(&mut p, &mut removals, keys, &app_ref, existing.is_some(), cur, prune);
        }
        if let Some(clients) = &a.clients {
            plan_clients(
                &mut p,
                &mut removals,
                clients,
                &app_ref,
                existing.is_some(),
                cur,
                prune,
                path,
            )?;
        }
    }
    if prune {
        if let Some(apps) = &file.apps {
            for app in &cur.apps {
                if apps.iter().any(|a| a.name.get_ref().0 == app.name) {
                    continue;
                }
                let keys = cur
                    .keys
                    .iter()
                    .filter(|k| k.record.app_id == app.id && k.state == "active")
                    .count();
                let clients = cur
                    .clients
                    .iter()
                    .filter(|c| c.app_id == app.id && c.disabled_at.is_none())
                    .count();
                if keys + clients == 0 {
                    continue;
                }
                let mut s = step(
                    '-',
                    "app",
                    app.name.clone(),
                    Method::POST,
                    format!("/v1/apps/{}/disable", seg(&app.id)),
                    None,
                );
                s.action = Some("disable its active keys and clients (apps are never deleted)".into());
                removals.push(s);
            }
        }
    }
    if let Some(tokens) = &file.admin_tokens {
        let have = cur.tokens.as_deref().unwrap_or_default();
        for t in tokens {
            let name = t.name.get_ref().0.clone();
            match have.iter().find(|h| h.name == name) {
                None => {
                    let mut body = json!({"name": name, "role": t.role.as_str()});
                    if let Some(e) = &t.expires {
                        body["expires_in"] = json!(e.0);
                    }
                    let mut s = step(
                        '+',
                        "admin token",
                        name.clone(),
                        Method::POST,
                        "/v1/admin-tokens".into(),
                        Some(body),
                    );
                    s.fields = vec![format!("role: {}", t.role.as_str())];
                    if let Some(e) = &t.expires {
                        s.fields.push(format!("expires: in {}", e.0));
                    }
                    s.secret = Some("token");
                    p.steps.push(s);
                }
                Some(h) if h.state != "active" => p.conflicts.push(format!(
                    "admin token {name:?} exists but is {} ({}): admin token names are never reused; name another one",
                    h.state, h.id
                )),
                Some(h) if h.role != t.role.as_str() => p.conflicts.push(format!(
                    "admin token {name:?} ({}) has the role {}, the file says {}: a role never changes; \
                     revoke it (keyward admin-token revoke {name}) and declare a token with another name",
                    h.id,
                    h.role,
                    t.role.as_str()
                )),
                Some(_) => {}
            }
        }
        if prune {
            for h in have.iter().filter(|h| h.state == "active") {
                if tokens.iter().any(|t| t.name.get_ref().0 == h.name) {
                    continue;
                }
                let mut s = step(
                    '-',
                    "admin token",
                    h.name.clone(),
                    Method::POST,
                    format!("/v1/admin-tokens/{}/revoke", seg(&h.id)),
                    None,
                );
                s.action = Some("revoke (admin tokens are never deleted)".into());
                removals.push(s);
            }
        }
    }
    if let Some(hooks) = &file.webhooks {
        plan_webhooks(&mut p, &mut removals, hooks, cur, prune)?;
    }
    p.steps.extend(removals);
    Ok(p)
}

fn plan_keys(
    p: &mut Plan,
    removals: &mut Vec<Step>,
    keys: &[KeyState],
    app: &AppRecord,
    app_exists: bool,
    cur: &Current,
    prune: bool,
) {
    let of_app: Vec<&KeyView> = if app_exists {
        cur.keys.iter().filter(|k| k.record.app_id == app.id).collect()
    } else {
        Vec::new()
    };
    let default_fields = key_fields(&[], &Policy::default());
    for k in keys {
        let name = k.name.get_ref().0.clone();
        let label = format!("{}/{name}", app.name);
        let (policy, scopes) = match key_policy(k) {
            Ok(pol) => (pol, key_scopes(k)),
            Err(e) => {
                p.conflicts.push(format!("key {label}: {e}"));
                continue;
            }
        };
        let after = key_fields(&scopes, &policy);
        let current: Vec<&&KeyView> = of_app
            .iter()
            .filter(|v| {
                v.record.name.as_deref() == Some(name.as_str())
                    && (v.state == "active" || v.state == "disabled")
                    && v.record.lifecycle.rotated_to.is_none()
            })
            .collect();
        let want_kind = k.kind.unwrap_or_default();
        let want_env = k.env.unwrap_or(KeyEnv::Live);
        match current.as_slice() {
            [] => {
                if k.legacy {
                    p.conflicts.push(format!(
                        "key {label}: a legacy key cannot be created by apply (its secret is not in the file): \
                         import it with keyward key import --app {} --name {name}",
                        app.name
                    ));
                    continue;
                }
                let mut body = json!({
                    "app": app.name, "name": name, "scopes": scopes,
                    "env": want_env, "kind": want_kind,
                    "ips": ips_json(&policy.ips), "require_mtls": policy.require_mtls,
                    "exchange_only": k.exchange_only, "canary": k.canary,
                });
                if !policy.origins.is_empty() {
                    body["origins"] = json!(policy.origins);
                }
                if policy.rate.is_some() {
                    body["rate"] = rate_json(&policy.rate);
                }
                if policy.quota.is_some() {
                    body["quota"] = quota_json(&policy.quota);
                }
                let mut extra = Vec::new();
                if let Some(e) = &k.expires {
                    let instant = time::OffsetDateTime::parse(&e.0, &time::format_description::well_known::Rfc3339);
                    if instant.is_ok() {
                        body["expires_at"] = json!(e.0);
                    } else {
                        body["expires_in"] = json!(e.0);
                    }
                    extra.push(format!("expires: {}", e.0));
                }
                if want_env != KeyEnv::Live {
                    extra.push("env: test".into());
                }
                if want_kind != KeyKind::Secret {
                    extra.push("kind: publishable".into());
                }
                if k.exchange_only {
                    extra.push("exchange_only: true".into());
                }
                if k.canary {
                    extra.push("canary: true".into());
                }
                let mut s = step('+', "key", label.clone(), Method::POST, "/v1/keys".into(), Some(body));
                s.fields = created(&after, &default_fields);
                s.fields.extend(extra);
                s.secret = Some("key");
                if k.disabled == Some(true) {
                    s.fields.push("disabled: true".into());
                    s.disable_after = Some("/v1/keys");
                }
                p.steps.push(s);
            }
            [one] => {
                let r = &one.record;
                let mut fixed = Vec::new();
                if r.env != want_env {
                    fixed.push(format!("env {:?} (file: {:?})", r.env, want_env));
                }
                if r.kind() != want_kind {
                    fixed.push(format!("kind {} (file: {})", kind_text(r.kind()), kind_text(want_kind)));
                }
                for (what, have, want) in [
                    ("exchange_only", r.lifecycle.exchange_only, k.exchange_only),
                    ("canary", r.lifecycle.canary, k.canary),
                    ("legacy", r.lifecycle.legacy, k.legacy),
                ] {
                    if have != want {
                        fixed.push(format!("{what} {have} (file: {want})"));
                    }
                }
                if !fixed.is_empty() {
                    p.conflicts.push(format!(
                        "key {label} ({}): {} cannot change on an existing key; rotate or revoke it by hand, or \
                         give the file's key another name",
                        r.id,
                        fixed.join(", ")
                    ));
                    continue;
                }
                let have_scopes: Vec<String> = r.scopes.iter().map(|s| s.to_string()).collect();
                let before = key_fields(&have_scopes, &r.policy);
                let diff = changed(&before, &after);
                if !diff.is_empty() {
                    let mut body = json!({
                        "scopes": scopes, "ips": ips_json(&policy.ips),
                        "rate": rate_json(&policy.rate), "quota": quota_json(&policy.quota),
                        "require_mtls": policy.require_mtls,
                    });
                    if want_kind == KeyKind::Publishable {
                        body["origins"] = json!(policy.origins);
                    }
                    let mut s = step(
                        '~',
                        "key",
                        format!("{label} ({})", r.id),
                        Method::PATCH,
                        format!("/v1/keys/{}", seg(&r.id)),
                        Some(body),
                    );
                    s.fields = diff;
                    p.steps.push(s);
                }
                if let Some(want_disabled) = k.disabled {
                    let is_disabled = one.state == "disabled";
                    if want_disabled != is_disabled {
                        let verb = if want_disabled { "disable" } else { "enable" };
                        let mut s = step(
                            '~',
                            "key",
                            format!("{label} ({})", r.id),
                            Method::POST,
                            format!("/v1/keys/{}/{verb}", seg(&r.id)),
                            None,
                        );
                        s.action = Some(verb.into());
                        p.steps.push(s);
                    }
                }
            }
            many => p.conflicts.push(format!(
                "app {} has {} current keys named {name:?} ({}): apply cannot tell which one the file means; \
                 rename (keyward key update ID --name …) or revoke all but one",
                app.name,
                many.len(),
                many.iter().map(|v| v.record.id.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
    if prune {
        for v in &of_app {
            if v.state != "active" {
                continue;
            }
            let declared = v
                .record
                .name
                .as_deref()
                .is_some_and(|n| keys.iter().any(|k| k.name.get_ref().0 == n));
            if declared {
                continue;
            }
            let label = match &v.record.name {
                Some(n) => format!("{}/{n} ({})", app.name, v.record.id),
                None => format!("{}/({})", app.name, v.record.id),
            };
            let mut s = step(
                '-',
                "key",
                label,
                Method::POST,
                format!("/v1/keys/{}/disable", seg(&v.record.id)),
                None,
            );
            s.action = Some("disable (keys are never deleted; keyward key enable brings it back)".into());
            removals.push(s);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_clients(
    p: &mut Plan,
    removals: &mut Vec<Step>,
    clients: &[ClientState],
    app: &AppRecord,
    app_exists: bool,
    cur: &Current,
    prune: bool,
    path: &std::path::Path,
) -> Result<()> {
    let of_app: Vec<&ClientRecord> = if app_exists {
        cur.clients.iter().filter(|c| c.app_id == app.id).collect()
    } else {
        Vec::new()
    };
    for c in clients {
        let name = c.name.get_ref().0.clone();
        let label = format!("{}/{name}", app.name);
        let mut want = desired_client(c, app, path)?;
        let after = client_fields(&want);
        let current: Vec<&&ClientRecord> = of_app
            .iter()
            .filter(|r| r.name.as_deref() == Some(name.as_str()))
            .collect();
        match current.as_slice() {
            [] => {
                want.app_id = app.name.clone();
                let mut s = step(
                    '+',
                    "client",
                    label.clone(),
                    Method::POST,
                    "/v1/clients".into(),
                    Some(client_body(&want, true)),
                );
                let default = ClientRecord {
                    jwks: None,
                    options: Default::default(),
                    scopes: vec![],
                    token_ttl: keyward_engine::oauth::DEFAULT_TOKEN_TTL,
                    policy: Policy::default(),
                    ..want.clone()
                };
                s.fields = vec![format!("auth: {}", want.auth_method.as_str())];
                s.fields.extend(created(&after, &client_fields(&default)));
                s.secret = Some("client_secret");
                if c.disabled == Some(true) {
                    s.fields.push("disabled: true".into());
                    s.disable_after = Some("/v1/clients");
                }
                p.steps.push(s);
            }
            [one] => {
                if one.auth_method != want.auth_method {
                    p.conflicts.push(format!(
                        "client {label} ({}) authenticates with {}, the file says {}: the method never changes; \
                         delete it by hand or give the file's client another name",
                        one.id,
                        one.auth_method.as_str(),
                        want.auth_method.as_str()
                    ));
                    continue;
                }
                let diff = changed(&client_fields(one), &after);
                if !diff.is_empty() {
                    let mut s = step(
                        '~',
                        "client",
                        format!("{label} ({})", one.id),
                        Method::PATCH,
                        format!("/v1/clients/{}", seg(&one.id)),
                        Some(client_body(&want, false)),
                    );
                    s.fields = diff;
                    p.steps.push(s);
                }
                if let Some(want_disabled) = c.disabled {
                    if want_disabled != one.disabled_at.is_some() {
                        let verb = if want_disabled { "disable" } else { "enable" };
                        let mut s = step(
                            '~',
                            "client",
                            format!("{label} ({})", one.id),
                            Method::POST,
                            format!("/v1/clients/{}/{verb}", seg(&one.id)),
                            None,
                        );
                        s.action = Some(verb.into());
                        p.steps.push(s);
                    }
                }
            }
            many => p.conflicts.push(format!(
                "app {} has {} clients named {name:?} ({}): apply cannot tell which one the file means; delete all but one",
                app.name,
                many.len(),
                many.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
    if prune {
        for r in &of_app {
            let declared = r
                .name
                .as_deref()
                .is_some_and(|n| clients.iter().any(|c| c.name.get_ref().0 == n));
            if declared {
                continue;
            }
            let label = match &r.name {
                Some(n) => format!("{}/{n} ({})", app.name, r.id),
                None => format!("{}/({})", app.name, r.id),
            };
            let mut s = step(
                '-',
                "client",
                label,
                Method::DELETE,
                format!("/v1/clients/{}", seg(&r.id)),
                None,
            );
            s.action = Some("delete (with its secrets)".into());
            removals.push(s);
        }
    }
    Ok(())
}

fn plan_webhooks(
    p: &mut Plan,
    removals: &mut Vec<Step>,
    hooks: &[WebhookState],
    cur: &Current,
    prune: bool,
) -> Result<()> {
    for w in hooks {
        let name = w.name.get_ref().0.clone();
        let spec = state::webhook_spec(w).map_err(|e| CliError::Usage(format!("webhook {name:?}: {e}")))?;
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let want = WebhookRecord {
            id: String::new(),
            name: name.clone(),
            url: spec.url.clone(),
            secret_env: spec.secret_env.clone(),
            secret_file: spec.secret_file.clone(),
            events: spec.events.clone(),
            timeout_ms: millis(spec.timeout),
            max_attempts: spec.max_attempts,
            backoff_ms: millis(spec.backoff),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let after = webhook_fields(&want);
        let body = json!({
            "name": name, "url": spec.url, "secret_env": spec.secret_env, "secret_file": spec.secret_file,
            "events": spec.events, "timeout": format!("{}ms", want.timeout_ms),
            "max_attempts": spec.max_attempts, "backoff": format!("{}ms", want.backoff_ms),
        });
        let mut body = body;
        if let Some(o) = body.as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
        match cur.webhooks.iter().find(|h| h.name == name) {
            None => {
                let mut s = step(
                    '+',
                    "webhook",
                    name.clone(),
                    Method::POST,
                    "/v1/webhooks".into(),
                    Some(body),
                );
                s.fields = after.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                p.steps.push(s);
            }
            Some(h) => {
                let diff = changed(&webhook_fields(h), &after);
                if !diff.is_empty() {
                    let mut s = step(
                        '~',
                        "webhook",
                        name.clone(),
                        Method::PATCH,
                        format!("/v1/webhooks/{}", seg(&h.id)),
                        Some(body),
                    );
                    s.fields = diff;
                    p.steps.push(s);
                }
            }
        }
    }
    if prune {
        for h in &cur.webhooks {
            if hooks.iter().any(|w| w.name.get_ref().0 == h.name) {
                continue;
            }
            let mut s = step(
                '-',
                "webhook",
                h.name.clone(),
                Method::DELETE,
                format!("/v1/webhooks/{}", seg(&h.id)),
                None,
            );
            s.action = Some("delete".into());
            removals.push(s);
        }
    }
    Ok(())
}
