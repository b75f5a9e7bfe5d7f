//! OAuth 2.0 clients (client credentials): management and client authentication.
//!
//! Client secrets are 256-bit random strings shown once and stored only as
//! HMAC-SHA256(pepper, secret): with that much entropy a slow hash adds latency, not safety
//! (see ARCHITECTURE.md).

use keyward_core::model::{validate_name, AuditEvent, ClientAuthMethod, ClientRecord, ClientSecretInfo, Severity};
use keyward_core::policy::Policy;
use keyward_core::secret::{new_id, random_base62, SecretString};
use keyward_core::Scope;
use serde_json::json;
use time::Duration;

use crate::{Engine, EngineError};

/// A client and its current secrets (digest, expiry), cached for the token endpoint.
pub(crate) struct CachedClient {
    record: ClientRecord,
    secrets: Vec<(keyward_core::Digest, Option<time::OffsetDateTime>)>,
}

/// Read-through cache of clients by id; entries live 30 s at most and are dropped on every
/// change made through this engine. `by_cert` maps a certificate (thumbprint and chain status)
/// to the client it is registered to (RFC 8705); any client change empties it.
pub(crate) struct ClientCache {
    pub(crate) by_id: moka::sync::Cache<String, std::sync::Arc<CachedClient>>,
    pub(crate) by_cert: moka::sync::Cache<String, Option<std::sync::Arc<ClientRecord>>>,
    generation: std::sync::atomic::AtomicU64,
}

impl ClientCache {
    pub(crate) fn new() -> ClientCache {
        let ttl = std::time::Duration::from_secs(30);
        ClientCache {
            by_id: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            by_cert: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn invalidate(&self, id: &str) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.by_id.invalidate(id);
        self.by_cert.invalidate_all();
    }

    /// Drops everything (a lost change notification, a resync).
    pub(crate) fn invalidate_all(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.by_id.invalidate_all();
        self.by_cert.invalidate_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Longest access-token lifetime a client may ask for (24 hours).
pub const MAX_TOKEN_TTL: u32 = 86_400;
/// Default access-token lifetime (5 minutes).
pub const DEFAULT_TOKEN_TTL: u32 = 300;

/// What it takes to create a client.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub app: String,
    pub name: Option<String>,
    pub scopes: Vec<Scope>,
    pub auth_method: ClientAuthMethod,
    pub jwks: Option<serde_json::Value>,
    pub token_ttl: u32,
    pub dpop_bound_access_tokens: bool,
    /// For `tls_client_auth`: the one registration naming the certificate, as (RFC 8705
    /// metadata name, value), e.g. `("tls_client_auth_subject_dn", "CN=svc,O=Example")`.
    pub tls_subject: Option<(String, String)>,
    pub policy: Policy,
}

/// A change to a client (fields left `None` stay as they are). Its authentication method and
/// app never change: make a new client for another one.
#[derive(Debug, Clone, Default)]
pub struct ClientUpdate {
    pub name: Option<Option<String>>,
    pub scopes: Option<Vec<Scope>>,
    /// The JWK Set of a `private_key_jwt` or `self_signed_tls_client_auth` client.
    pub jwks: Option<serde_json::Value>,
    pub token_ttl: Option<u32>,
    pub dpop_bound_access_tokens: Option<bool>,
    /// A `tls_client_auth` client's registration, replacing the current one.
    pub tls_subject: Option<(String, String)>,
    pub policy: Option<Policy>,
}

/// Checks a `tls_client_auth` registration and puts it into the client's options.
fn tls_options(name: &str, value: &str, opts: &mut keyward_core::model::ClientOptions) -> Result<(), EngineError> {
    let bad = |m: &str| Err(EngineError::invalid("tls_client_auth", m.to_owned()));
    if value.is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
        return bad("the certificate name must be 1 to 1024 printable characters");
    }
    let slot = match name {
        "tls_client_auth_subject_dn" => {
            if let Err(e) = keyward_token::DistinguishedName::parse_registration(value) {
                return bad(&e.to_string());
            }
            &mut opts.tls_client_auth_subject_dn
        }
        "tls_client_auth_san_dns" => &mut opts.tls_client_auth_san_dns,
        "tls_client_auth_san_uri" => &mut opts.tls_client_auth_san_uri,
        "tls_client_auth_san_email" => &mut opts.tls_client_auth_san_email,
        "tls_client_auth_san_ip" => {
            if value.parse::<std::net::IpAddr>().is_err() {
                return bad("tls_client_auth_san_ip must be an IP address");
            }
            &mut opts.tls_client_auth_san_ip
        }
        _ => return bad("unknown certificate name kind"),
    };
    *slot = Some(value.to_owned());
    Ok(())
}

/// Checks a client's JWK Set: an object with a non-empty `keys` array of public JWKs.
pub fn validate_jwks(jwks: &serde_json::Value) -> Result<(), EngineError> {
    let keys = jwks
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| EngineError::invalid("jwks", "expected a JWK Set: {\"keys\": [...]}".into()))?;
    if keys.is_empty() || keys.len() > 16 {
        return Err(EngineError::invalid("jwks", "a JWK Set holds 1 to 16 keys".into()));
    }
    for k in keys {
        let obj = k
            .as_object()
            .ok_or_else(|| EngineError::invalid("jwks", "every key must be an object".into()))?;
        if !matches!(
            obj.get("kty").and_then(serde_json::Value::as_str),
            Some("OKP" | "EC" | "RSA")
        ) {
            return Err(EngineError::invalid("jwks", "kty must be OKP, EC or RSA".into()));
        }
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            if obj.contains_key(private) {
                return Err(EngineError::invalid(
                    "jwks",
                    "a JWK Set for a client must hold public keys only".into(),
                ));
            }
        }
    }
    Ok(())
}

fn secret_hint(s: &str) -> String {
    format!("{}…{}", &s[..s.len().min(9)], &s[s.len().saturating_sub(4)..])
}

impl Engine {
    fn new_client_secret(&self) -> Result<SecretString, EngineError> {
        Ok(SecretString::new(format!(
            "{}cs_{}",
            self.format.prefix(),
            random_base62(43)?
        )))
    }

    async fn audit_client(&self, actor: &str, kind: &str, id: &str, details: serde_json::Value) {
        let event = AuditEvent {
            seq: 0,
            at: self.now(),
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            severity: Severity::Info,
            target: Some(id.to_owned()),
            source_ip: None,
            details,
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %e, kind, "could not append to the audit log");
        }
    }

    /// Creates a client; for secret methods, returns the secret (shown once).
    pub async fn create_client(
        &self,
        actor: &str,
        new: NewClient,
    ) -> Result<(ClientRecord, Option<SecretString>), EngineError> {
        if let Some(n) = &new.name {
            validate_name(n).map_err(|e| EngineError::invalid("name", e.to_string()))?;
        }
        if !(1..=MAX_TOKEN_TTL).contains(&new.token_ttl) {
            return Err(EngineError::invalid(
                "token_ttl",
                format!("from 1 second to {MAX_TOKEN_TTL} seconds"),
            ));
        }
        match (new.auth_method, &new.jwks) {
            (ClientAuthMethod::PrivateKeyJwt | ClientAuthMethod::SelfSignedTlsClientAuth, None) => {
                return Err(EngineError::invalid(
                    "jwks",
                    format!("{} needs the client's public keys", new.auth_method.as_str()),
                ))
            }
            (ClientAuthMethod::PrivateKeyJwt | ClientAuthMethod::SelfSignedTlsClientAuth, Some(j)) => validate_jwks(j)?,
            (_, Some(_)) => {
                return Err(EngineError::invalid(
                    "jwks",
                    "only private_key_jwt and self_signed_tls_client_auth clients have keys".into(),
                ))
            }
            (_, None) => {}
        }
        let mut options = keyward_core::model::ClientOptions {
            dpop_bound_access_tokens: new.dpop_bound_access_tokens,
            ..Default::default()
        };
        match (new.auth_method, &new.tls_subject) {
            (ClientAuthMethod::TlsClientAuth, Some((name, value))) => tls_options(name, value, &mut options)?,
            (ClientAuthMethod::TlsClientAuth, None) => {
                return Err(EngineError::invalid(
                    "tls_client_auth",
                    "tls_client_auth needs one of tls_client_auth_subject_dn, tls_client_auth_san_dns, \
                     tls_client_auth_san_uri, tls_client_auth_san_ip, tls_client_auth_san_email"
                        .into(),
                ))
            }
            (_, Some(_)) => {
                return Err(EngineError::invalid(
                    "tls_client_auth",
                    "only tls_client_auth clients register a certificate name".into(),
                ))
            }
            (_, None) => {}
        }
        let app = self.get_app(&new.app).await?;
        let mut scopes = new.scopes;
        scopes.sort();
        scopes.dedup();
        let client = ClientRecord {
            id: new_id("cl")?,
            app_id: app.id,
            app_name: app.name,
            name: new.name,
            scopes,
            auth_method: new.auth_method,
            jwks: new.jwks,
            token_ttl: new.token_ttl,
            options,
            policy: new.policy,
            created_at: self.now(),
            disabled_at: None,
        };
        let secret = if client.auth_method.uses_secret() {
            Some(self.new_client_secret()?)
        } else {
            None
        };
        let stored = secret
            .as_ref()
            .map(|s| (self.pepper.digest(s.expose().as_bytes()), secret_hint(s.expose())));
        self.store
            .create_client(&client, stored.as_ref().map(|(d, h)| (d, h.as_str())))
            .await?;
        // A cached "no client for this certificate" must not outlive a new registration.
        self.clients.invalidate(&client.id);
        self.audit_client(actor, "client.created", &client.id, json!({"after": client}))
            .await;
        Ok((client, secret))
    }

    /// Changes a client's name, scopes, keys or certificate registration, token lifetime, DPoP
    /// requirement or limits; takes effect on its next token request (audited as
    /// `client.updated` with the records before and after).
    pub async fn update_client(
        &self,
        actor: &str,
        id: &str,
        update: ClientUpdate,
    ) -> Result<ClientRecord, EngineError> {
        let before = self.get_client(id).await?;
        let mut after = before.clone();
        if let Some(name) = update.name {
            if let Some(n) = &name {
                validate_name(n).map_err(|e| EngineError::invalid("name", e.to_string()))?;
            }
            after.name = name;
        }
        if let Some(mut scopes) = update.scopes {
            scopes.sort();
            scopes.dedup();
            after.scopes = scopes;
        }
        if let Some(ttl) = update.token_ttl {
            if !(1..=MAX_TOKEN_TTL).contains(&ttl) {
                return Err(EngineError::invalid(
                    "token_ttl",
                    format!("from 1 second to {MAX_TOKEN_TTL} seconds"),
                ));
            }
            after.token_ttl = ttl;
        }
        if let Some(jwks) = update.jwks {
            if !matches!(
                before.auth_method,
                ClientAuthMethod::PrivateKeyJwt | ClientAuthMethod::SelfSignedTlsClientAuth
            ) {
                return Err(EngineError::invalid(
                    "jwks",
                    "only private_key_jwt and self_signed_tls_client_auth clients have keys".into(),
                ));
            }
            validate_jwks(&jwks)?;
            after.jwks = Some(jwks);
        }
        if let Some(d) = update.dpop_bound_access_tokens {
            after.options.dpop_bound_access_tokens = d;
        }
        if let Some((name, value)) = update.tls_subject {
            if before.auth_method != ClientAuthMethod::TlsClientAuth {
                return Err(EngineError::invalid(
                    "tls_client_auth",
                    "only tls_client_auth clients register a certificate name".into(),
                ));
            }
            let mut options = keyward_core::model::ClientOptions {
                dpop_bound_access_tokens: after.options.dpop_bound_access_tokens,
                ..Default::default()
            };
            tls_options(&name, &value, &mut options)?;
            after.options = options;
        }
        if let Some(policy) = update.policy {
            after.policy = policy;
        }
        if after == before {
            return Ok(after);
        }
        if !self.store.update_client(&after).await? {
            return Err(EngineError::NotFound("client"));
        }
        self.clients.invalidate(id);
        self.announce(crate::Changed::Client(id.to_owned()));
        self.audit_client(actor, "client.updated", id, json!({"before": before, "after": after}))
            .await;
        Ok(after)
    }

    /// Drops every cached client and certificate registration (a change made elsewhere, e.g.
    /// by another node, or a lost change notification).
    pub fn forget_clients(&self) {
        self.clients.invalidate_all();
    }

    pub async fn get_client(&self, id: &str) -> Result<ClientRecord, EngineError> {
        self.store.get_client(id).await?.ok_or(EngineError::NotFound("client"))
    }

    /// A client and the hints of its current secrets.
    pub async fn client_secret_info(&self, id: &str) -> Result<Vec<ClientSecretInfo>, EngineError> {
        Ok(self
            .store
            .client_secrets(id, self.now())
            .await?
            .into_iter()
            .map(|(_, i)| i)
            .collect())
    }

    pub async fn list_clients(&self, app: Option<&str>) -> Result<Vec<ClientRecord>, EngineError> {
        let app_id = match app {
            Some(a) => Some(self.get_app(a).await?.id),
            None => None,
        };
        Ok(self.store.list_clients(app_id.as_deref()).await?)
    }

    /// Disables or enables a client; takes effect on its next token request.
    pub async fn set_client_disabled(
        &self,
        actor: &str,
        id: &str,
        disabled: bool,
    ) -> Result<ClientRecord, EngineError> {
        let before = self.get_client(id).await?;
        let mut after = before.clone();
        after.disabled_at = if disabled {
            before.disabled_at.or(Some(self.now()))
        } else {
            None
        };
        if !self.store.update_client(&after).await? {
            return Err(EngineError::NotFound("client"));
        }
        self.clients.invalidate(id);
        self.announce(crate::Changed::Client(id.to_owned()));
        let kind = if disabled { "client.disabled" } else { "client.enabled" };
        self.audit_client(actor, kind, id, json!({"before": before, "after": after}))
            .await;
        Ok(after)
    }

    pub async fn delete_client(&self, actor: &str, id: &str) -> Result<(), EngineError> {
        let before = self.get_client(id).await?;
        if !self.store.delete_client(id).await? {
            return Err(EngineError::NotFound("client"));
        }
        self.clients.invalidate(id);
        self.announce(crate::Changed::Client(id.to_owned()));
        self.audit_client(actor, "client.deleted", id, json!({"before": before}))
            .await;
        Ok(())
    }

    /// A new secret; the current ones keep working for `grace`.
    pub async fn rotate_client_secret(
        &self,
        actor: &str,
        id: &str,
        grace: Duration,
    ) -> Result<(ClientRecord, SecretString), EngineError> {
        if grace.is_negative() || grace > Duration::days(365) {
            return Err(EngineError::invalid("grace", "from 0 to 365 days".into()));
        }
        let client = self.get_client(id).await?;
        if !client.auth_method.uses_secret() {
            return Err(EngineError::Conflict(format!(
                "the client authenticates with {}",
                client.auth_method.as_str()
            )));
        }
        let secret = self.new_client_secret()?;
        let digest = self.pepper.digest(secret.expose().as_bytes());
        let now = self.now();
        if !self
            .store
            .rotate_client_secret(id, &digest, &secret_hint(secret.expose()), now, now + grace)
            .await?
        {
            return Err(EngineError::NotFound("client"));
        }
        self.clients.invalidate(id);
        self.audit_client(
            actor,
            "client.secret_rotated",
            id,
            json!({"grace_seconds": grace.whole_seconds()}),
        )
        .await;
        Ok((client, secret))
    }

    /// Checks a client secret in constant time against every current secret of the client.
    /// `Ok(None)` when the client is unknown, disabled, does not use this method, or the
    /// secret does not match — callers answer `invalid_client` without telling which.
    pub async fn authenticate_client_secret(
        &self,
        client_id: &str,
        secret: &str,
        method: ClientAuthMethod,
    ) -> Result<Option<ClientRecord>, EngineError> {
        if client_id.is_empty() || client_id.len() > 64 || secret.len() > 256 {
            return Ok(None);
        }
        let presented = self.pepper.digest(secret.as_bytes());
        let now = self.now();
        let cached = match self.clients.by_id.get(client_id) {
            Some(c) => c,
            None => {
                let Some(record) = self.store.get_client(client_id).await? else {
                    return Ok(None);
                };
                let secrets = self
                    .store
                    .client_secrets(client_id, now)
                    .await?
                    .into_iter()
                    .map(|(d, i)| (d, i.expires_at))
                    .collect();
                let c = std::sync::Arc::new(CachedClient { record, secrets });
                self.clients.by_id.insert(client_id.to_owned(), c.clone());
                c
            }
        };
        let mut ok = false;
        for (d, expires) in &cached.secrets {
            ok |= d.ct_eq(&presented) & expires.is_none_or(|t| t > now);
        }
        if !ok || cached.record.disabled_at.is_some() || cached.record.auth_method != method {
            return Ok(None);
        }
        Ok(Some(cached.record.clone()))
    }
}
