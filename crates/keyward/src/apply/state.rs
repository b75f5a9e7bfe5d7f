//! The state file of `keyward apply` / `keyward export`: TOML, unknown fields refused, every
//! value checked while it is read (so a bad CIDR, duration, rate or scope is reported at its
//! line and column), then the checks across entries (duplicate names, combinations).
//!
//! Collections are optional: a collection the file leaves out (`apps`, `admin_tokens`,
//! `webhooks`, and an app's `keys` or `clients`) is not managed at all, not even by `--prune`;
//! a collection that is present (empty included) is the whole truth for what it holds.

use std::fmt;
use std::path::{Path, PathBuf};

use keyward_core::policy::{IpAllowlist, Origin, QuotaSpec, RateSpec};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{CliError, Result};

/// Largest state file read (bytes).
pub const MAX_FILE: u64 = 1024 * 1024;
/// The format version this binary reads and writes.
pub const VERSION: u32 = 1;

// ---- values checked while read ---------------------------------------------------------------

macro_rules! checked_text {
    ($(#[$m:meta])* $name:ident, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub String);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> std::result::Result<Self, String> {
                let check: fn(&str) -> std::result::Result<(), String> = $check;
                check(&s)?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_text!(
    /// A name of an app, key, client, admin token or webhook.
    Name,
    |s| keyward_core::model::validate_name(s).map_err(|e| format!("invalid name: {e}"))
);
checked_text!(
    /// An address or CIDR of an allowlist.
    Cidr,
    |s| keyward_core::policy::parse_cidr(s).map(drop).map_err(|e| e.to_string())
);
checked_text!(
    /// `N/unit`.
    Rate,
    |s| RateSpec::parse(s, None).map(drop).map_err(|e| e.to_string())
);
checked_text!(
    /// `N/period`.
    Quota,
    |s| QuotaSpec::parse(s).map(drop).map_err(|e| e.to_string())
);
checked_text!(
    /// A positive duration (`90d`, `5m`).
    Dur,
    |s| keyward_core::when::parse_duration(s).map(drop).map_err(|e| e.to_string())
);
checked_text!(
    /// A duration that may be zero (`0s`).
    Dur0,
    |s| if matches!(s.trim(), "0" | "0s" | "0ms") {
        Ok(())
    } else {
        keyward_core::when::parse_duration(s).map(drop).map_err(|e| e.to_string())
    }
);
checked_text!(
    /// A duration from now or an RFC 3339 time.
    Expiry,
    |s| keyward_core::when::parse_expiry(s, time::OffsetDateTime::now_utc())
        .map(drop)
        .or_else(|e| {
            // An instant in the past is fine in a file (it only matters at creation).
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(drop)
                .map_err(|_| e.to_string())
        })
);
checked_text!(
    /// An OAuth scope.
    ScopeText,
    |s| keyward_core::Scope::new(s).map(drop).map_err(|e| e.to_string())
);
checked_text!(
    /// A web origin of a publishable key.
    OriginText,
    |s| Origin::parse(s).map(drop).map_err(|e| e.to_string())
);
checked_text!(
    /// The name of an environment variable (never a secret).
    EnvVar,
    |s| {
        let ok = (1..=128).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(())
        } else {
            Err("secret_env is the name of an environment variable (KEYWARD_WEBHOOK_…), never the secret".into())
        }
    }
);

fn is_false(b: &bool) -> bool {
    !*b
}

// ---- the file ---------------------------------------------------------------------------------

/// The whole state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// The format version (1).
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<AppState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tokens: Option<Vec<AdminTokenState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<WebhookState>>,
}

/// One app and its policy (limits and key rules), with its keys and clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppState {
    pub name: Spanned<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_mtls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_key_lifetime: Option<Dur>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_expiry: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_kinds: Vec<keyward_core::KeyKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<ClientState>>,
}

/// A named key of an app. Its plaintext is never in the file: `apply` creates a missing key and
/// prints its plaintext once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyState {
    pub name: Spanned<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<ScopeText>,
    /// `live` (default) or `test`; fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<keyward_core::KeyEnv>,
    /// `secret` (default) or `publishable`; fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<keyward_core::KeyKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<OriginText>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_mtls: bool,
    /// Fixed at creation.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exchange_only: bool,
    /// Fixed at creation.
    #[serde(default, skip_serializing_if = "is_false")]
    pub canary: bool,
    /// An imported legacy secret: matched, never created (its secret is not in the file).
    #[serde(default, skip_serializing_if = "is_false")]
    pub legacy: bool,
    /// The expiry given to the key when `apply` creates it (a duration or an RFC 3339 time);
    /// an existing key keeps its own (rotate it to change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expiry>,
    /// Left out: `apply` leaves the key enabled or disabled as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// An OAuth client of an app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientState {
    pub name: Spanned<Name>,
    /// `client_secret_basic` (default), `client_secret_post`, `private_key_jwt`,
    /// `tls_client_auth` or `self_signed_tls_client_auth`; fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<keyward_core::model::ClientAuthMethod>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<ScopeText>,
    /// The client's public keys (a JWK Set as a TOML table: `keys = [{kty = …}]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<toml::Table>,
    /// Or a JSON JWK Set file (relative to the state file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Or, for `self_signed_tls_client_auth`, the client's PEM certificate (relative to the
    /// state file), registered as a JWK with `x5c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_subject_dn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_san_dns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_san_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_san_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_san_email: Option<String>,
    /// Access-token lifetime (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl: Option<Dur>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dpop_bound: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Left out: `apply` leaves the client enabled or disabled as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// A scoped admin token, by name. The token itself is never in the file: `apply` creates a
/// missing one and prints it once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenState {
    pub name: Spanned<Name>,
    pub role: Role,
    /// The lifetime given at creation; an existing token keeps its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Dur>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

/// A webhook managed at run time (the configuration file's `[[webhooks]]` are not these).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookState {
    pub name: Spanned<Name>,
    pub url: String,
    /// The environment variable holding the signing secret on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<EnvVar>,
    /// Or the path of a 0600 file holding it on every node (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Default: `security.` and `key.expiring_soon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Dur0>,
}

// ---- reading ----------------------------------------------------------------------------------

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Reads and checks a state file: every problem found by the cross-entry checks at once, each
/// as `FILE:LINE: message`; a TOML error (syntax, unknown field, bad value) with its line and
/// column. Exit status 2 (usage) for any problem.
pub fn read(path: &Path) -> Result<StateFile> {
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| CliError::Usage(format!("{name}: {e}")))?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!("{name}: not a regular file")));
    }
    if meta.len() > MAX_FILE {
        return Err(CliError::Usage(format!(
            "{name}: {} bytes: a state file is at most {MAX_FILE} bytes",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| CliError::Usage(format!("{name}: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| CliError::Usage(format!("{name}: not UTF-8 text")))?;
    parse(&text, path)
}

/// [`read`] on text already in memory (`path` for messages and relative file names).
pub fn parse(text: &str, path: &Path) -> Result<StateFile> {
    let name = path.display();
    if let Some((line, what)) = secret_in(text) {
        return Err(CliError::Usage(format!(
            "{name}:{line}: this looks like {what}: secrets never belong in a state file \
             (keys and tokens are created by apply and printed once; webhook secrets are named by secret_env or secret_file)"
        )));
    }
    let file: StateFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        let msg = e.message().trim().to_owned();
        CliError::Usage(match line {
            Some(l) => format!("{name}:{l}: {msg}"),
            None => format!("{name}: {msg}"),
        })
    })?;
    let problems = check(&file, text, path);
    if !problems.is_empty() {
        let mut out = String::new();
        for (i, (line, m)) in problems.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&format!("{name}:{line}: {m}"));
        }
        return Err(CliError::Usage(out));
    }
    Ok(file)
}

/// The first thing in `text` that looks like a secret: a keyward key, client secret or admin
/// token (any key prefix of the default format), or a PEM private key.
fn secret_in(text: &str) -> Option<(usize, &'static str)> {
    let m = crate::scan::Matcher::new(keyward_core::KeyFormat::default());
    if let Some(found) = m.find_all(text.as_bytes()).first() {
        let what = match found.kind {
            crate::scan::KeyKind::Secret => "a keyward API key",
            crate::scan::KeyKind::Publishable => "a keyward publishable key",
            crate::scan::KeyKind::ClientSecret => "an OAuth client secret",
            crate::scan::KeyKind::AdminToken => "an admin token",
        };
        return Some((line_of(text, found.offset), what));
    }
    if let Some(i) = text.find("PRIVATE KEY-----") {
        return Some((line_of(text, i), "a PEM private key"));
    }
    None
}

/// The cross-entry checks: (line, message) for each problem.
fn check(file: &StateFile, text: &str, path: &Path) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let at = |s: &Spanned<Name>| line_of(text, s.span().start);
    if file.version != VERSION {
        out.push((
            1,
            format!("version = {}: this keyward reads version {VERSION}", file.version),
        ));
    }
    fn dups<'a>(
        items: impl Iterator<Item = &'a Spanned<Name>>,
        what: &str,
        text: &str,
        out: &mut Vec<(usize, String)>,
    ) {
        let mut seen: Vec<&str> = Vec::new();
        for n in items {
            let v = n.get_ref().0.as_str();
            if seen.contains(&v) {
                out.push((line_of(text, n.span().start), format!("{what} {v:?} is declared twice")));
            }
            seen.push(v);
        }
    }
    let apps = file.apps.as_deref().unwrap_or_default();
    dups(apps.iter().map(|a| &a.name), "app", text, &mut out);
    for app in apps {
        let an = &app.name.get_ref().0;
        if app.burst.is_some() && app.rate.is_none() {
            out.push((at(&app.name), format!("app {an:?}: burst needs a rate")));
        }
        if let Err(e) = IpAllowlist::parse(&app.ips) {
            out.push((at(&app.name), format!("app {an:?}: ips: {e}")));
        }
        if let (Some(r), Some(b)) = (&app.rate, app.burst) {
            if let Err(e) = RateSpec::parse(&r.0, Some(b)) {
                out.push((at(&app.name), format!("app {an:?}: burst: {e}")));
            }
        }
        let keys = app.keys.as_deref().unwrap_or_default();
        dups(
            keys.iter().map(|k| &k.name),
            &format!("app {an:?}: key"),
            text,
            &mut out,
        );
        for k in keys {
            let kn = &k.name.get_ref().0;
            let mut bad = |m: String| out.push((at(&k.name), format!("app {an:?}, key {kn:?}: {m}")));
            if k.burst.is_some() && k.rate.is_none() {
                bad("burst needs a rate".into());
            }
            if let (Some(r), Some(b)) = (&k.rate, k.burst) {
                if let Err(e) = RateSpec::parse(&r.0, Some(b)) {
                    bad(format!("burst: {e}"));
                }
            }
            if let Err(e) = IpAllowlist::parse(&k.ips) {
                bad(format!("ips: {e}"));
            }
            let publishable = k.kind == Some(keyward_core::KeyKind::Publishable);
            if publishable && k.origins.is_empty() {
                bad("a publishable key needs at least one origin".into());
            }
            if !publishable && !k.origins.is_empty() {
                bad("origins are for publishable keys (kind = \"publishable\")".into());
            }
            if [k.canary, k.exchange_only, k.legacy, publishable]
                .iter()
                .filter(|b| **b)
                .count()
                > 1
            {
                bad("at most one of canary, exchange_only, legacy and kind = \"publishable\"".into());
            }
            if k.origins.len() > keyward_core::policy::MAX_ORIGINS {
                bad("at most 64 origins".into());
            }
            let kind = k.kind.unwrap_or_default();
            if !app.allowed_kinds.is_empty() && !app.allowed_kinds.contains(&kind) && !k.legacy {
                bad(format!("the app's allowed_kinds does not allow {kind:?} keys"));
            }
            let secret = kind == keyward_core::KeyKind::Secret && !k.legacy;
            if app.require_expiry && app.max_key_lifetime.is_none() && secret && k.expires.is_none() {
                bad("the app has require_expiry: give the key an expires (or the app a max_key_lifetime)".into());
            }
        }
        let clients = app.clients.as_deref().unwrap_or_default();
        dups(
            clients.iter().map(|c| &c.name),
            &format!("app {an:?}: client"),
            text,
            &mut out,
        );
        for c in clients {
            let cn = &c.name.get_ref().0;
            let mut bad = |m: String| out.push((at(&c.name), format!("app {an:?}, client {cn:?}: {m}")));
            if c.burst.is_some() && c.rate.is_none() {
                bad("burst needs a rate".into());
            }
            if let Err(e) = IpAllowlist::parse(&c.ips) {
                bad(format!("ips: {e}"));
            }
            if let Err(e) = client_keys(c, path) {
                bad(e);
            }
            if let Err(e) = tls_registration(c) {
                bad(e);
            }
            if let Some(t) = &c.token_ttl {
                let secs = keyward_core::when::parse_duration(&t.0)
                    .map(|d| d.whole_seconds())
                    .unwrap_or(0);
                if !(1..=86_400).contains(&secs) {
                    bad("token_ttl: from 1s to 24h".into());
                }
            }
        }
    }
    let tokens = file.admin_tokens.as_deref().unwrap_or_default();
    dups(tokens.iter().map(|t| &t.name), "admin token", text, &mut out);
    let hooks = file.webhooks.as_deref().unwrap_or_default();
    dups(hooks.iter().map(|w| &w.name), "webhook", text, &mut out);
    for w in hooks {
        let spec = match webhook_spec(w) {
            Ok(s) => s,
            Err(e) => {
                out.push((at(&w.name), format!("webhook {:?}: {e}", w.name.get_ref().0)));
                continue;
            }
        };
        if let Err(e) = keyward_engine::managed_webhooks::validate(&spec) {
            out.push((at(&w.name), format!("webhook {:?}: {e}", w.name.get_ref().0)));
        }
    }
    out.sort();
    out
}

/// A client's JWK Set from `jwks`, `jwks_file` or `cert_file` (relative to the state file), as
/// JSON; `None` for methods without keys.
pub fn client_keys(c: &ClientState, path: &Path) -> std::result::Result<Option<serde_json::Value>, String> {
    use keyward_core::model::ClientAuthMethod as M;
    let method = c.auth.unwrap_or(M::ClientSecretBasic);
    let keyed = matches!(method, M::PrivateKeyJwt | M::SelfSignedTlsClientAuth);
    let given = [c.jwks.is_some(), c.jwks_file.is_some(), c.cert_file.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if !keyed {
        return if given > 0 {
            Err(format!(
                "{} clients have no keys (jwks, jwks_file, cert_file)",
                method.as_str()
            ))
        } else {
            Ok(None)
        };
    }
    if given != 1 {
        return Err(format!(
            "{} needs exactly one of jwks, jwks_file, cert_file",
            method.as_str()
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let jwks = if let Some(t) = &c.jwks {
        serde_json::to_value(t).map_err(|e| format!("jwks: {e}"))?
    } else if let Some(f) = &c.jwks_file {
        let p = base.join(f);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("jwks_file {}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("jwks_file {}: not JSON: {e}", p.display()))?
    } else if let Some(f) = &c.cert_file {
        if method != M::SelfSignedTlsClientAuth {
            return Err("cert_file is for self_signed_tls_client_auth clients".into());
        }
        crate::commands::jwks_of_certificate(&base.join(f))
            .map_err(|e| format!("cert_file {}", e.to_string().trim_start_matches("--cert-file ")))?
    } else {
        return Err("no keys".into());
    };
    keyward_engine::oauth::validate_jwks(&jwks).map_err(|e| e.to_string())?;
    Ok(Some(jwks))
}

/// A `tls_client_auth` client's one registration, as (RFC 8705 metadata name, value).
pub fn tls_registration(c: &ClientState) -> std::result::Result<Option<(&'static str, String)>, String> {
    use keyward_core::model::ClientAuthMethod as M;
    let names: Vec<(&'static str, String)> = [
        ("tls_client_auth_subject_dn", &c.tls_subject_dn),
        ("tls_client_auth_san_dns", &c.tls_san_dns),
        ("tls_client_auth_san_uri", &c.tls_san_uri),
        ("tls_client_auth_san_ip", &c.tls_san_ip),
        ("tls_client_auth_san_email", &c.tls_san_email),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect();
    let method = c.auth.unwrap_or(M::ClientSecretBasic);
    match (method, names.len()) {
        (M::TlsClientAuth, 1) => {
            let (k, v) = names.into_iter().next().ok_or("no registration")?;
            if k == "tls_client_auth_subject_dn" {
                keyward_token::DistinguishedName::parse_registration(&v).map_err(|e| format!("tls_subject_dn: {e}"))?;
            }
            Ok(Some((k, v)))
        }
        (M::TlsClientAuth, _) => Err(
            "tls_client_auth needs exactly one of tls_subject_dn, tls_san_dns, tls_san_uri, tls_san_ip, tls_san_email"
                .into(),
        ),
        (_, 0) => Ok(None),
        _ => Err("tls_subject_dn and tls_san_* are for tls_client_auth clients".into()),
    }
}

/// A webhook entry as the engine's spec (defaults filled in).
pub fn webhook_spec(w: &WebhookState) -> std::result::Result<keyward_engine::managed_webhooks::WebhookSpec, String> {
    let mut spec = keyward_engine::managed_webhooks::WebhookSpec::new(&w.name.get_ref().0, &w.url);
    spec.secret_env = w.secret_env.as_ref().map(|e| e.0.clone());
    spec.secret_file = w.secret_file.clone();
    if let Some(e) = &w.events {
        spec.events = e.clone();
    }
    let dur = |d: &str| -> std::result::Result<std::time::Duration, String> {
        if matches!(d.trim(), "0" | "0s" | "0ms") {
            return Ok(std::time::Duration::ZERO);
        }
        let d = keyward_core::when::parse_duration(d).map_err(|e| e.to_string())?;
        std::time::Duration::try_from(d).map_err(|e| e.to_string())
    };
    if let Some(t) = &w.timeout {
        spec.timeout = dur(&t.0)?;
    }
    if let Some(a) = w.max_attempts {
        spec.max_attempts = a;
    }
    if let Some(b) = &w.backoff {
        spec.backoff = dur(&b.0)?;
    }
    Ok(spec)
}
