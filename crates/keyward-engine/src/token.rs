//! The OAuth 2.0 token service: signing keys (sealed at rest with the key-encryption key,
//! published before they sign, kept published until every token they signed has expired),
//! the client credentials and token exchange grants, introspection, revocation, and the
//! verification of access tokens at the gateway.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration as StdDuration;

use keyward_core::model::{AuditEvent, ClientAuthMethod, ClientRecord, Severity, SigningKeyRow};
use keyward_core::secret::random_base62;
use keyward_core::{RequestFacts, Scope};
use keyward_token::{
    mint, verify, verify_jws, AccessClaims, Algorithm, Audience, Expectations, Jwk, JwkSet, Kek, SigningKey,
    TokenError, VerifyKey,
};
use moka::sync::Cache;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::{Engine, EngineError, RequestMeta};

/// The RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// keyward's token type URI for API keys used as RFC 8693 subject tokens.
pub const API_KEY_TOKEN_TYPE: &str = "urn:keyward:params:oauth:token-type:api-key";
/// RFC 8693 token type of what keyward issues.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 9701 §5: the `typ` of signed introspection answers; `application/` + this is their
/// media type, asked for with `Accept`.
pub const INTROSPECTION_JWT_TYP: &str = "token-introspection+jwt";
/// The algorithms keyward's signing keys (and so its signed introspection answers) use.
pub const SIGNING_ALGS: [&str; 3] = ["EdDSA", "ES256", "RS256"];
/// Lifetime of a token obtained by exchanging an API key (unless the key expires sooner).
pub const EXCHANGE_TTL: u32 = 300;

/// Settings of the token service.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// `iss` of every token and the base of the endpoint URLs.
    pub issuer: String,
    /// Audience of tokens that ask for none.
    pub default_audience: String,
    /// Every audience a token may be issued for (the default plus the routes').
    pub audiences: Vec<String>,
    /// Algorithm of newly generated signing keys.
    pub signing_alg: Algorithm,
    /// Clock skew tolerated when verifying tokens and assertions.
    pub leeway: StdDuration,
    /// How long a new signing key is published before it signs (so that relying parties
    /// that cache the JWKS know it first).
    pub publish_delay: StdDuration,
    /// Rotate the signing key this often (none: only on command).
    pub rotate_every: Option<StdDuration>,
    /// DPoP proof checking (RFC 9449).
    pub dpop: crate::dpop::DpopConfig,
    /// Base URL of the RFC 8705 `mtls_endpoint_aliases` when it is not the issuer.
    pub mtls_base_url: Option<String>,
}

impl OAuthConfig {
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.issuer)
    }
}

/// An OAuth error response (RFC 6749 §5.2 and friends). `code()` is the `error` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    /// Client authentication failed; `basic` when it was attempted with HTTP Basic.
    #[error("client authentication failed")]
    InvalidClient { basic: bool },
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("the grant type is not supported")]
    UnsupportedGrantType,
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidTarget(String),
    #[error("{0}")]
    InvalidDpopProof(String),
    /// A DPoP nonce is required: answer with this nonce in `DPoP-Nonce`.
    #[error("use the DPoP-Nonce header's value as the proof's nonce")]
    UseDpopNonce(String),
    #[error("the token service is unavailable")]
    Unavailable,
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient { .. } => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidTarget(_) => "invalid_target",
            OAuthError::InvalidDpopProof(_) => "invalid_dpop_proof",
            OAuthError::UseDpopNonce(_) => "use_dpop_nonce",
            OAuthError::Unavailable => "temporarily_unavailable",
        }
    }
}

impl From<EngineError> for OAuthError {
    fn from(e: EngineError) -> Self {
        tracing::error!(error = %e, "token service failure");
        OAuthError::Unavailable
    }
}

/// How the client authenticated (parsed by the edge).
#[derive(Debug, Clone)]
pub enum ClientAuth<'a> {
    None,
    Basic {
        client_id: &'a str,
        secret: &'a str,
    },
    Post {
        client_id: &'a str,
        secret: &'a str,
    },
    Assertion {
        assertion: &'a str,
        client_id: Option<&'a str>,
    },
    /// RFC 8705 §2: `client_id` alone, authenticated by the TLS client certificate.
    Certificate {
        client_id: &'a str,
        cert: Option<crate::mtls::PresentedCert<'a>>,
    },
}

/// A token request, already strictly parsed.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub grant_type: &'a str,
    pub scope: Option<&'a str>,
    pub audience: Option<&'a str>,
    pub auth: ClientAuth<'a>,
    pub subject_token: Option<&'a str>,
    pub subject_token_type: Option<&'a str>,
    pub requested_token_type: Option<&'a str>,
    /// The request's `DPoP` header fields.
    pub dpop: crate::DpopHeader<'a>,
    /// The client certificate of the TLS connection, if any (RFC 8705).
    pub client_cert: Option<crate::mtls::PresentedCert<'a>>,
}

/// RFC 8705 §3.1: `x5t#S256`, the base64url SHA-256 of a certificate's DER.
pub use keyward_token::cert_thumbprint;

/// What the token endpoint answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuedToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// A verified access token, as the gateway uses it.
#[derive(Debug, Clone)]
pub struct TokenPrincipal {
    pub claims: AccessClaims,
    pub scopes: Vec<Scope>,
    pub app_id: String,
    pub app_name: String,
    /// The limits of the client (or of the exchanged key).
    pub policy: keyward_core::policy::Policy,
}

struct Keys {
    /// The key that signs now.
    active: Option<Arc<SigningKey>>,
    /// Every published key, by kid.
    verify: HashMap<String, VerifyKey>,
    /// The JWKS document.
    jwks: JwkSet,
}

/// The token service; one per engine, enabled by [`Engine::enable_oauth`].
pub struct TokenService {
    pub(crate) cfg: OAuthConfig,
    kek: Kek,
    keys: RwLock<Keys>,
    /// Verified tokens by SHA-256 of the token, each until its own `exp` (+ leeway): memory
    /// follows the tokens in use, not the tokens ever seen.
    verified: Cache<[u8; 32], CachedToken>,
    /// Revoked `jti`s until the tokens would have expired.
    revoked: RwLock<HashMap<String, i64>>,
    /// DPoP replay store and nonces.
    pub dpop: crate::dpop::Dpop,
}

/// A verified token in the cache, with how long it may stay (computed on the engine's clock).
#[derive(Clone)]
struct CachedToken {
    principal: Arc<TokenPrincipal>,
    ttl: StdDuration,
}

/// Cache expiry: each entry lives until its token expires (at most a day).
struct UntilTokenExpiry;

impl moka::Expiry<[u8; 32], CachedToken> for UntilTokenExpiry {
    fn expire_after_create(&self, _: &[u8; 32], v: &CachedToken, _: std::time::Instant) -> Option<StdDuration> {
        Some(v.ttl)
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    match l.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    match l.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl TokenService {
    pub fn config(&self) -> &OAuthConfig {
        &self.cfg
    }

    pub fn jwks(&self) -> JwkSet {
        read(&self.keys).jwks.clone()
    }

    fn verify_key(&self, kid: &str) -> Option<VerifyKey> {
        read(&self.keys).verify.get(kid).cloned()
    }

    fn is_revoked(&self, jti: &str) -> bool {
        read(&self.revoked).contains_key(jti)
    }
}

/// Whether a signing key row is the one that signs at `now`: active, not retired; the newest.
fn pick_active(rows: &[SigningKeyRow], now: OffsetDateTime) -> Option<&SigningKeyRow> {
    rows.iter()
        .filter(|r| r.active_at <= now && r.retired_at.is_none())
        .max_by_key(|r| (r.active_at, r.created_at))
}

impl Engine {
    /// Turns the token service on: loads (or, on first start, creates) the signing keys,
    /// opening their private parts with the key-encryption key, and the token denylist.
    pub async fn enable_oauth(&self, cfg: OAuthConfig, kek: Kek) -> Result<(), EngineError> {
        let cfg_dpop = cfg.dpop.clone();
        let svc = TokenService {
            cfg,
            kek,
            keys: RwLock::new(Keys {
                active: None,
                verify: HashMap::new(),
                jwks: JwkSet { keys: Vec::new() },
            }),
            verified: Cache::builder()
                .max_capacity(100_000)
                .expire_after(UntilTokenExpiry)
                .build(),
            revoked: RwLock::new(HashMap::new()),
            dpop: crate::dpop::Dpop::new(cfg_dpop)?.with_shared_replay(self.limiter().redis().cloned()),
        };
        if self.oauth.set(svc).is_err() {
            return Err(EngineError::Conflict("the token service is already enabled".into()));
        }
        self.reload_signing_keys().await?;
        if self
            .token_service()?
            .keys
            .read()
            .map(|k| k.active.is_none())
            .unwrap_or(true)
        {
            let alg = self.token_service()?.cfg.signing_alg;
            // First start: a key that signs at once (no token can predate it).
            self.add_signing_key("system", alg, Duration::ZERO).await?;
        }
        let now = self.now();
        let revoked = self.store.revoked_tokens(now).await?;
        *write(&self.token_service()?.revoked) = revoked.into_iter().map(|(j, t)| (j, t.unix_timestamp())).collect();
        Ok(())
    }

    pub fn token_service(&self) -> Result<&TokenService, EngineError> {
        self.oauth
            .get()
            .ok_or(EngineError::Conflict("the token service is not enabled".into()))
    }

    /// Reads the signing keys from the store and decides which one signs now.
    pub async fn reload_signing_keys(&self) -> Result<(), EngineError> {
        let svc = self.token_service()?;
        let now = self.now();
        let rows = self.store.signing_keys(now).await?;
        let mut verify = HashMap::new();
        let mut jwks = Vec::new();
        let mut active = None;
        let signer = pick_active(&rows, now).map(|r| r.kid.clone());
        for r in &rows {
            let alg = Algorithm::from_name(&r.alg)
                .ok_or_else(|| EngineError::Conflict(format!("signing key {} has an unknown algorithm", r.kid)))?;
            let jwk: Jwk = serde_json::from_value(r.public_jwk.clone())
                .map_err(|_| EngineError::Conflict(format!("signing key {} has an invalid public JWK", r.kid)))?;
            let vk = VerifyKey::from_jwk(&jwk, alg)
                .map_err(|_| EngineError::Conflict(format!("signing key {} cannot verify", r.kid)))?;
            verify.insert(r.kid.clone(), vk);
            jwks.push(jwk);
            if signer.as_deref() == Some(r.kid.as_str()) {
                let key = svc.kek.open_signing_key(alg, &r.kid, &r.private_sealed).map_err(|_| {
                    EngineError::Conflict(format!(
                        "signing key {} cannot be opened: wrong key-encryption key (KEYWARD_KEK)?",
                        r.kid
                    ))
                })?;
                active = Some(Arc::new(key));
            }
        }
        *write(&svc.keys) = Keys {
            active,
            verify,
            jwks: JwkSet { keys: jwks },
        };
        Ok(())
    }

    /// Generates a signing key, seals it and stores it. It is published at once and signs
    /// after `publish_delay`.
    pub async fn add_signing_key(
        &self,
        actor: &str,
        alg: Algorithm,
        publish_delay: Duration,
    ) -> Result<SigningKeyRow, EngineError> {
        let svc = self.token_service()?;
        let key = SigningKey::generate(alg, None)
            .map_err(|e| EngineError::Conflict(format!("key generation failed: {e}")))?;
        let sealed = svc
            .kek
            .seal_signing_key(&key)
            .map_err(|e| EngineError::Conflict(format!("sealing failed: {e}")))?;
        let now = self.now();
        let jwk = key.public_jwk();
        let row = SigningKeyRow {
            kid: key.kid().to_owned(),
            alg: alg.as_str().to_owned(),
            public_jwk: serde_json::to_value(&jwk).unwrap_or(serde_json::Value::Null),
            private_sealed: sealed,
            created_at: now,
            active_at: now + publish_delay,
            retired_at: None,
            remove_after: None,
        };
        self.store.add_signing_key(&row).await?;
        self.audit_token_event(
            actor,
            "signing_key.created",
            &row.kid,
            json!({"alg": row.alg, "active_at": row.active_at.unix_timestamp()}),
        )
        .await;
        self.reload_signing_keys().await?;
        Ok(row)
    }

    /// Retires a signing key: it stops signing now and leaves the JWKS once every token it
    /// could have signed has expired (the longest token lifetime from now).
    pub async fn retire_signing_key(&self, actor: &str, kid: &str) -> Result<(), EngineError> {
        let now = self.now();
        let remove_after = now + Duration::seconds(i64::from(crate::oauth::MAX_TOKEN_TTL)) + Duration::minutes(5);
        if !self.store.retire_signing_key(kid, now, remove_after).await? {
            return Err(EngineError::NotFound("signing key"));
        }
        self.audit_token_event(
            actor,
            "signing_key.retired",
            kid,
            json!({"remove_after": remove_after.unix_timestamp()}),
        )
        .await;
        self.reload_signing_keys().await?;
        let active = read(&self.token_service()?.keys).active.is_some();
        if !active {
            let alg = self.token_service()?.cfg.signing_alg;
            self.add_signing_key(actor, alg, Duration::ZERO).await?;
        }
        Ok(())
    }

    /// Rotates: a new key published now and signing after the publish delay; the current
    /// key is retired when the new one takes over (see [`Engine::signing_key_maintenance`]).
    pub async fn rotate_signing_key(&self, actor: &str, alg: Option<Algorithm>) -> Result<SigningKeyRow, EngineError> {
        let svc = self.token_service()?;
        let alg = alg.unwrap_or(svc.cfg.signing_alg);
        let delay = Duration::try_from(svc.cfg.publish_delay).unwrap_or(Duration::ZERO);
        self.add_signing_key(actor, alg, delay).await
    }

    /// Periodic work: switch to a newly active key (retiring the older ones), drop keys past
    /// their removal time, rotate on schedule.
    pub async fn signing_key_maintenance(&self) -> Result<(), EngineError> {
        let Ok(svc) = self.token_service() else { return Ok(()) };
        let now = self.now();
        let rows = self.store.signing_keys(now).await?;
        let newest = pick_active(&rows, now).map(|r| r.kid.clone());
        for r in &rows {
            if r.retired_at.is_none() && r.active_at <= now && Some(&r.kid) != newest.as_ref() {
                self.retire_signing_key("system", &r.kid).await?;
            }
        }
        if let (Some(every), Some(kid)) = (svc.cfg.rotate_every, newest) {
            let every = Duration::try_from(every).unwrap_or(Duration::days(3650));
            let pending = rows.iter().any(|r| r.active_at > now);
            if let Some(cur) = rows.iter().find(|r| r.kid == kid) {
                if !pending && cur.created_at + every <= now {
                    self.rotate_signing_key("system", None).await?;
                }
            }
        }
        self.reload_signing_keys().await
    }

    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>, EngineError> {
        Ok(self.store.signing_keys(self.now()).await?)
    }

    async fn audit_token_event(&self, actor: &str, kind: &str, target: &str, details: serde_json::Value) {
        let event = AuditEvent {
            seq: 0,
            at: self.now(),
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            severity: Severity::Info,
            target: Some(target.to_owned()),
            source_ip: None,
            details,
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %e, kind, "could not append to the audit log");
        }
    }

    // ---- client authentication -----------------------------------------------------------

    /// Authenticates the client of a request. `Ok(None)` when no credentials were given.
    pub async fn authenticate_client(&self, auth: &ClientAuth<'_>) -> Result<Option<ClientRecord>, OAuthError> {
        let svc = self.token_service().map_err(|_| OAuthError::Unavailable)?;
        match auth {
            ClientAuth::None => Ok(None),
            ClientAuth::Basic { client_id, secret } => self
                .authenticate_client_secret(client_id, secret, ClientAuthMethod::ClientSecretBasic)
                .await?
                .map(Some)
                .ok_or(OAuthError::InvalidClient { basic: true }),
            ClientAuth::Post { client_id, secret } => self
                .authenticate_client_secret(client_id, secret, ClientAuthMethod::ClientSecretPost)
                .await?
                .map(Some)
                .ok_or(OAuthError::InvalidClient { basic: false }),
            ClientAuth::Assertion { assertion, client_id } => {
                self.authenticate_assertion(svc, assertion, *client_id).await.map(Some)
            }
            ClientAuth::Certificate { client_id, cert } => self
                .authenticate_client_certificate(client_id, *cert)
                .await?
                .map(Some)
                .ok_or(OAuthError::InvalidClient { basic: false }),
        }
    }

    /// RFC 7523 §3: `iss` = `sub` = client_id, `aud` names the token endpoint or the issuer,
    /// `exp` in the future (at most an hour ahead), `jti` used once.
    async fn authenticate_assertion(
        &self,
        svc: &TokenService,
        assertion: &str,
        claimed: Option<&str>,
    ) -> Result<ClientRecord, OAuthError> {
        let bad = || OAuthError::InvalidClient { basic: false };
        // Find the client from the unverified `iss`, then verify with its keys only.
        let payload = assertion.split('.').nth(1).ok_or_else(bad)?;
        let raw = base64_url_decode(payload).ok_or_else(bad)?;
        let unverified: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
        let client_id = unverified
            .get("iss")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(bad)?;
        if claimed.is_some_and(|c| c != client_id) || client_id.len() > 64 {
            return Err(bad());
        }
        let client = self
            .store
            .get_client(client_id)
            .await
            .map_err(EngineError::from)?
            .ok_or_else(bad)?;
        if client.auth_method != ClientAuthMethod::PrivateKeyJwt || client.disabled_at.is_some() {
            return Err(bad());
        }
        let keys: Vec<Jwk> = client
            .jwks
            .as_ref()
            .and_then(|j| j.get("keys"))
            .and_then(|k| serde_json::from_value(k.clone()).ok())
            .unwrap_or_default();
        let allowed = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256];
        let claims = keys
            .iter()
            .find_map(|jwk| verify_jws(assertion, jwk, &allowed).ok().map(|(_, c)| c))
            .ok_or_else(bad)?;
        let s = |k: &str| claims.get(k).and_then(serde_json::Value::as_str);
        if s("iss") != Some(client_id) || s("sub") != Some(client_id) {
            return Err(bad());
        }
        let endpoint = svc.cfg.token_endpoint();
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => a == &endpoint || a == &svc.cfg.issuer,
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(serde_json::Value::as_str)
                .any(|a| a == endpoint || a == svc.cfg.issuer),
            _ => false,
        };
        if !aud_ok {
            return Err(bad());
        }
        let now = self.now().unix_timestamp();
        let leeway = i64::try_from(svc.cfg.leeway.as_secs()).unwrap_or(60);
        let exp = claims.get("exp").and_then(serde_json::Value::as_i64).ok_or_else(bad)?;
        if exp + leeway < now || exp > now + 3600 {
            return Err(bad());
        }
        if claims
            .get("nbf")
            .and_then(serde_json::Value::as_i64)
            .is_some_and(|nbf| nbf > now + leeway)
        {
            return Err(bad());
        }
        let jti = s("jti").filter(|j| !j.is_empty() && j.len() <= 256).ok_or_else(bad)?;
        let until = OffsetDateTime::from_unix_timestamp(exp + leeway).map_err(|_| bad())?;
        let fresh = self
            .store
            .remember_jti(&format!("client_assertion:{client_id}"), jti, until, self.now())
            .await
            .map_err(EngineError::from)?;
        if !fresh {
            return Err(OAuthError::InvalidClient { basic: false });
        }
        Ok(client)
    }

    // ---- grants ---------------------------------------------------------------------------

    fn narrow_scopes(requested: Option<&str>, allowed: &[Scope]) -> Result<Vec<Scope>, OAuthError> {
        let Some(req) = requested else {
            return Ok(allowed.to_vec());
        };
        let mut out = Vec::new();
        for s in req.split(' ').filter(|s| !s.is_empty()) {
            let scope = Scope::new(s).map_err(|_| OAuthError::InvalidScope("a requested scope is malformed".into()))?;
            if allowed.contains(&scope) && !out.contains(&scope) {
                out.push(scope);
            }
        }
        if out.is_empty() {
            return Err(OAuthError::InvalidScope(
                "none of the requested scopes may be granted".into(),
            ));
        }
        out.sort();
        Ok(out)
    }

    fn pick_audience<'a>(svc: &'a TokenService, requested: Option<&'a str>) -> Result<&'a str, OAuthError> {
        match requested {
            None => Ok(&svc.cfg.default_audience),
            Some(a) if svc.cfg.audiences.iter().any(|x| x == a) => Ok(a),
            Some(_) => Err(OAuthError::InvalidTarget(
                "the requested audience is not served here".into(),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        svc: &TokenService,
        sub: &str,
        client_id: &str,
        aud: &str,
        scopes: &[Scope],
        ttl: u32,
        cnf: Option<keyward_token::Confirmation>,
    ) -> Result<(String, String), OAuthError> {
        let key = read(&svc.keys).active.clone().ok_or(OAuthError::Unavailable)?;
        let now = self.now().unix_timestamp();
        let jti = random_base62(22).map_err(|_| OAuthError::Unavailable)?;
        let scope = scopes.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ");
        let claims = AccessClaims {
            iss: svc.cfg.issuer.clone(),
            sub: sub.to_owned(),
            aud: Audience::from(aud),
            client_id: client_id.to_owned(),
            iat: now,
            exp: now + i64::from(ttl),
            nbf: None,
            jti: jti.clone(),
            scope: if scope.is_empty() { None } else { Some(scope.clone()) },
            cnf,
        };
        let token = mint(&key, &claims).map_err(|_| OAuthError::Unavailable)?;
        Ok((token, scope))
    }

    /// The token endpoint's grant logic.
    pub async fn issue_token(&self, req: &TokenRequest<'_>, meta: &RequestMeta<'_>) -> Result<IssuedToken, OAuthError> {
        let svc = self.token_service().map_err(|_| OAuthError::Unavailable)?;
        let client = self.authenticate_client(&req.auth).await?;
        // A DPoP proof binds the token to the proof's key (RFC 9449 §5).
        let proof = self
            .check_dpop(req.dpop, "POST", &svc.cfg.token_endpoint(), None)
            .await
            .map_err(|f| match f.nonce {
                Some(nonce) => OAuthError::UseDpopNonce(nonce),
                None => OAuthError::InvalidDpopProof(f.reason),
            })?;
        let jkt = match proof {
            Some(p) => Some(p.jkt),
            None => {
                if client.as_ref().is_some_and(|c| c.options.dpop_bound_access_tokens) {
                    return Err(OAuthError::InvalidDpopProof(
                        "this client must present a DPoP proof".into(),
                    ));
                }
                None
            }
        };
        let token_type = if jkt.is_some() { "DPoP" } else { "Bearer" };
        // A DPoP proof binds to its key; otherwise a client certificate on the connection binds
        // the token to that certificate (RFC 8705 §3).
        let cnf = match (&jkt, req.client_cert) {
            (Some(j), _) => Some(keyward_token::Confirmation::jkt(j.clone())),
            (None, Some(c)) => Some(keyward_token::Confirmation::x5t_s256(cert_thumbprint(c.der))),
            (None, None) => None,
        };
        match req.grant_type {
            "client_credentials" => {
                let client = client.ok_or(OAuthError::InvalidClient { basic: false })?;
                let scopes = Self::narrow_scopes(req.scope, &client.scopes)?;
                let aud = Self::pick_audience(svc, req.audience)?;
                let (token, scope) =
                    self.sign(svc, &client.id, &client.id, aud, &scopes, client.token_ttl, cnf.clone())?;
                Ok(IssuedToken {
                    access_token: token,
                    token_type,
                    expires_in: client.token_ttl,
                    scope: if scope.is_empty() { None } else { Some(scope) },
                    issued_token_type: None,
                })
            }
            TOKEN_EXCHANGE => {
                let subject = req
                    .subject_token
                    .ok_or_else(|| OAuthError::InvalidRequest("subject_token is required".into()))?;
                match req.subject_token_type {
                    Some(API_KEY_TOKEN_TYPE) => {}
                    Some(_) => {
                        return Err(OAuthError::InvalidRequest(format!(
                            "subject_token_type must be {API_KEY_TOKEN_TYPE}"
                        )))
                    }
                    None => return Err(OAuthError::InvalidRequest("subject_token_type is required".into())),
                }
                if let Some(t) = req.requested_token_type {
                    if t != ACCESS_TOKEN_TYPE && t != "urn:ietf:params:oauth:token-type:jwt" {
                        return Err(OAuthError::InvalidRequest(
                            "requested_token_type is not supported".into(),
                        ));
                    }
                }
                let facts = RequestFacts {
                    required_scopes: &[],
                    scope_mode: Default::default(),
                    client_ip: meta.ip,
                };
                let key = self
                    .verify_key(subject, &facts, meta)
                    .await
                    .map_err(|_| OAuthError::InvalidGrant("the subject token is not a valid API key".into()))?;
                if key.kind() == keyward_core::KeyKind::Publishable {
                    return Err(OAuthError::InvalidGrant(
                        "publishable keys are never exchanged for tokens".into(),
                    ));
                }
                let scopes = Self::narrow_scopes(req.scope, &key.scopes)?;
                let aud = Self::pick_audience(svc, req.audience)?;
                let mut ttl = EXCHANGE_TTL;
                if let Some(exp) = key.expires_at {
                    let left = (exp - self.now()).whole_seconds();
                    ttl = ttl.min(u32::try_from(left.max(1)).unwrap_or(1));
                }
                let client_id = client.as_ref().map(|c| c.id.clone()).unwrap_or_else(|| key.id.clone());
                let (token, scope) = self.sign(svc, &key.id, &client_id, aud, &scopes, ttl, cnf.clone())?;
                Ok(IssuedToken {
                    access_token: token,
                    token_type,
                    expires_in: ttl,
                    scope: if scope.is_empty() { None } else { Some(scope) },
                    issued_token_type: Some(ACCESS_TOKEN_TYPE),
                })
            }
            "refresh_token" | "authorization_code" | "password" | "implicit" => {
                if client.is_none() {
                    return Err(OAuthError::InvalidClient { basic: false });
                }
                Err(OAuthError::UnsupportedGrantType)
            }
            _ => Err(OAuthError::UnsupportedGrantType),
        }
    }

    // ---- tokens at the gateway, introspection, revocation -----------------------------------

    /// Verifies an access token for `audience`: signature with keyward's own keys, `typ`,
    /// `iss`, `aud`, `exp`/`nbf` with leeway, then the denylist. Verified tokens are cached
    /// by their SHA-256 until they expire; the denylist is checked on every call.
    pub async fn verify_access_token(&self, token: &str, audience: &str) -> Result<Arc<TokenPrincipal>, TokenError> {
        let svc = self.token_service().map_err(|_| TokenError::UnknownKid)?;
        if token.len() > keyward_token::MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let now = self.now().unix_timestamp();
        let digest = sha256(token.as_bytes());
        let leeway = i64::try_from(svc.cfg.leeway.as_secs()).unwrap_or(0);
        let principal = match svc.verified.get(&digest).map(|c| c.principal) {
            // The same bound as a fresh verification: refused once `now >= exp + leeway`.
            Some(p) if p.claims.exp.saturating_add(leeway) > now => p,
            _ => {
                let expected = Expectations {
                    iss: &svc.cfg.issuer,
                    aud: audience,
                    leeway_secs: svc.cfg.leeway.as_secs(),
                    now,
                    allowed_algs: &[Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256],
                };
                let claims = verify(token, &|kid| svc.verify_key(kid), &expected)?;
                let scopes: Vec<Scope> = claims.scopes().filter_map(|s| Scope::new(s).ok()).collect();
                // App and limits come from the client, or from the exchanged key.
                let (app_id, app_name, policy) = match self.store.get_client(&claims.client_id).await {
                    Ok(Some(c)) => (c.app_id, c.app_name, c.policy),
                    _ => match self.store.get_key(&claims.sub).await {
                        Ok(Some(k)) => (k.app_id, k.app_name, k.policy),
                        _ => return Err(TokenError::UnknownKid),
                    },
                };
                let p = Arc::new(TokenPrincipal {
                    claims,
                    scopes,
                    app_id,
                    app_name,
                    policy,
                });
                let left = p.claims.exp.saturating_add(leeway).saturating_sub(now).clamp(1, 86_400);
                let ttl = StdDuration::from_secs(u64::try_from(left).unwrap_or(1));
                svc.verified.insert(
                    digest,
                    CachedToken {
                        principal: p.clone(),
                        ttl,
                    },
                );
                p
            }
        };
        if !principal.claims.aud.contains(audience) {
            return Err(TokenError::WrongAudience);
        }
        if svc.is_revoked(&principal.claims.jti) {
            return Err(TokenError::Revoked);
        }
        Ok(principal)
    }

    /// RFC 7662: the token's claims when it is active (signed by keyward, unexpired, not
    /// revoked), else `None`.
    pub async fn introspect(&self, token: &str) -> Option<AccessClaims> {
        let svc = self.token_service().ok()?;
        let now = self.now().unix_timestamp();
        let expected = Expectations {
            iss: &svc.cfg.issuer,
            aud: "",
            leeway_secs: 0,
            now,
            allowed_algs: &[Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256],
        };
        let claims = match verify(token, &|kid| svc.verify_key(kid), &expected) {
            Ok(c) => c,
            // Any audience is fine for introspection; everything else must hold.
            Err(TokenError::WrongAudience) => {
                let parts: Vec<&str> = token.split('.').collect();
                let raw = base64_url_decode(parts.get(1)?)?;
                let c: AccessClaims = serde_json::from_slice(&raw).ok()?;
                let expected = Expectations {
                    aud: aud_first(&c.aud)?,
                    ..expected
                };
                verify(token, &|kid| svc.verify_key(kid), &expected).ok()?
            }
            Err(_) => return None,
        };
        if svc.is_revoked(&claims.jti) {
            return None;
        }
        Some(claims)
    }

    /// RFC 9701: the introspection answer `answer` as a JWT signed by the active signing key,
    /// for the resource server `client_id` that asked: header `typ` =
    /// [`INTROSPECTION_JWT_TYP`], claims `iss`, `aud` (the client), `iat` and
    /// `token_introspection` (the answer). Neither `sub` nor `exp` (RFC 9701 §5: it must not
    /// pass for an access token).
    pub fn sign_introspection(&self, client_id: &str, answer: &serde_json::Value) -> Result<String, OAuthError> {
        use base64::Engine as _;
        let svc = self.token_service().map_err(|_| OAuthError::Unavailable)?;
        let key = read(&svc.keys).active.clone().ok_or(OAuthError::Unavailable)?;
        let header = json!({"typ": INTROSPECTION_JWT_TYP, "alg": key.alg().as_str(), "kid": key.kid()});
        let claims = json!({
            "iss": svc.cfg.issuer,
            "aud": client_id,
            "iat": self.now().unix_timestamp(),
            "token_introspection": answer,
        });
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let mut jwt = format!("{}.{}", b64(&header), b64(&claims));
        let signature = key.sign(jwt.as_bytes()).map_err(|_| OAuthError::Unavailable)?;
        jwt.push('.');
        jwt.push_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }

    /// RFC 7009: revokes a token issued to `client_id`. Unknown, invalid or foreign tokens
    /// are ignored (the endpoint answers 200 all the same).
    pub async fn revoke_token(&self, token: &str, client_id: &str) -> Result<bool, EngineError> {
        let Some(claims) = self.introspect(token).await else {
            return Ok(false);
        };
        if claims.client_id != client_id {
            return Ok(false);
        }
        let svc = self.token_service()?;
        let exp = OffsetDateTime::from_unix_timestamp(claims.exp).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        self.store.revoke_token(&claims.jti, exp).await?;
        write(&svc.revoked).insert(claims.jti.clone(), claims.exp);
        self.announce(crate::Changed::Tokens);
        // Every other node, at once: the shared denylist in Redis and its channel (each node
        // keeps a local copy, so verification never waits for Redis).
        if let Some(r) = self.limiter().redis() {
            if let Err(e) = r.deny(&claims.jti, claims.exp, self.now().unix_timestamp()).await {
                tracing::warn!(
                    error = %e,
                    "the revocation was not shared through redis yet; retrying in the background until it is or the token expires"
                );
            }
        }
        self.audit_token_event(
            client_id,
            "token.revoked",
            &claims.jti,
            json!({"client_id": claims.client_id, "exp": claims.exp}),
        )
        .await;
        Ok(true)
    }

    /// What the token service holds in memory: (verified tokens cached, revoked `jti`s in the
    /// denylist, DPoP proofs remembered for replay detection); zeros when OAuth is off.
    pub fn token_cache_entries(&self) -> (u64, u64, u64) {
        let Ok(svc) = self.token_service() else {
            return (0, 0, 0);
        };
        svc.verified.run_pending_tasks();
        let revoked = u64::try_from(read(&svc.revoked).len()).unwrap_or(u64::MAX);
        (svc.verified.entry_count(), revoked, svc.dpop.replay_entries())
    }

    /// Re-reads the token denylist from the store (a token was revoked through another node
    /// sharing the store, or announcements may have been missed).
    pub async fn reload_revoked_tokens(&self) -> Result<(), EngineError> {
        let svc = self.token_service()?;
        let revoked = self.store.revoked_tokens(self.now()).await?;
        *write(&svc.revoked) = revoked.into_iter().map(|(j, t)| (j, t.unix_timestamp())).collect();
        self.announce(crate::Changed::Tokens);
        Ok(())
    }

    /// Adds a revocation made on another node (from the Redis channel) to this node's denylist.
    pub(crate) fn deny_locally(&self, jti: String, exp: i64) {
        if let Ok(svc) = self.token_service() {
            write(&svc.revoked).insert(jti, exp);
            self.announce(crate::Changed::Tokens);
        }
    }

    /// Whether the token with this `jti` was revoked (the local denylist).
    pub fn token_revoked(&self, jti: &str) -> bool {
        self.token_service().is_ok_and(|svc| svc.is_revoked(jti))
    }

    /// Drops denylist entries of tokens that have expired anyway.
    pub fn prune_revoked_tokens(&self) {
        if let Ok(svc) = self.token_service() {
            let now = self.now().unix_timestamp();
            write(&svc.revoked).retain(|_, exp| *exp >= now);
        }
    }
}

fn aud_first(a: &Audience) -> Option<&str> {
    match a {
        Audience::One(s) => Some(s),
        Audience::Many(v) => v.first().map(String::as_str),
    }
}

/// base64url without padding (as in JWS).
fn base64_url_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}
