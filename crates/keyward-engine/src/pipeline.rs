//! The request decision, without HTTP: [`Engine::authenticate`] turns a [`RequestContext`]
//! (what the edge extracted from a request) into a [`Principal`], and [`Engine::admit`] runs
//! the limits for it. Every denial, wherever in these two calls it is decided, is accounted
//! here the same way: a denial of a known principal is counted in its usage by outcome, and a
//! failure to authenticate counts towards the client address's failed-authentication burst.
//!
//! The edge (gateway, verify API, forward-auth, Envoy) only extracts, calls these two and
//! renders the result; it decides nothing.

use std::net::IpAddr;
use std::sync::Arc;

use keyward_core::decision::{check_key_use, ScopeMode};
use keyward_core::error::KeyFormatError;
use keyward_core::model::ClientRecord;
use keyward_core::policy::Policy;
use keyward_core::{authorize_client, Decision, Denial, KeyKind, KeyRecord, KeyUse, RequestFacts, Scope};
use time::OffsetDateTime;

use crate::mtls::PresentedCert;
use crate::token::TokenPrincipal;
use crate::{Engine, LimitState, Outcome, Rejection, RequestMeta, RouteLimits};

/// An API key found in the request: in a configured key header, or in
/// `Authorization: Bearer` when the value is shaped like a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCredential<'a> {
    None,
    One {
        value: &'a str,
        /// It came in `Authorization`.
        bearer: bool,
    },
    /// A key header whose value is not text.
    Malformed {
        bearer: bool,
    },
    /// More than one key (several headers, or a header and `Authorization`).
    Multiple,
}

/// An access token found in the request: an `Authorization: Bearer` value that is not shaped
/// like a key, or any `Authorization: DPoP` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCredential<'a> {
    None,
    One {
        value: &'a str,
        /// It came with the `DPoP` scheme.
        dpop: bool,
    },
    Multiple,
}

/// The `DPoP` header fields of a request (RFC 9449 §4.3: exactly one proof).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopHeader<'a> {
    Absent,
    One(&'a str),
    /// One field, but not ASCII text.
    NotAscii,
    /// More than one field.
    Several,
}

impl<'a> DpopHeader<'a> {
    /// From the raw values of every `DPoP` field of a request.
    pub fn from_values<I: IntoIterator<Item = &'a [u8]>>(values: I) -> DpopHeader<'a> {
        let mut it = values.into_iter();
        match (it.next(), it.next()) {
            (None, _) => DpopHeader::Absent,
            (Some(_), Some(_)) => DpopHeader::Several,
            (Some(v), None) => match std::str::from_utf8(v) {
                Ok(s) if s.is_ascii() => DpopHeader::One(s),
                _ => DpopHeader::NotAscii,
            },
        }
    }
}

/// What a route accepts and requires: the decision-relevant facts of a route.
#[derive(Debug, Clone, Copy)]
pub struct RouteFacts<'a> {
    pub scopes: &'a [Scope],
    pub scope_mode: ScopeMode,
    /// API keys are accepted.
    pub api_keys: bool,
    /// keyward access tokens are accepted.
    pub tokens: bool,
    /// Callers are accepted by a registered TLS client certificate alone.
    pub client_certificates: bool,
    /// Publishable keys are accepted (from their origins).
    pub publishable: bool,
    /// The audience tokens must carry.
    pub audience: &'a str,
    /// A public route: no credential is checked; callers are anonymous (limits by address).
    pub public: bool,
}

impl RouteFacts<'_> {
    /// What the route takes, in words (for `credential_not_accepted`).
    fn accepted(&self) -> &'static str {
        match (self.api_keys, self.tokens, self.client_certificates) {
            (true, true, _) => "an API key or an access token",
            (true, false, _) => "an API key",
            (false, true, _) => "an access token",
            (false, false, true) => "a registered TLS client certificate",
            (false, false, false) => "no credential at all",
        }
    }
}

/// Everything the decision needs to know about one request, as the edge extracted it.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    pub route: RouteFacts<'a>,
    pub key: KeyCredential<'a>,
    pub token: TokenCredential<'a>,
    pub dpop: DpopHeader<'a>,
    /// The client's address (after trusted-proxy resolution).
    pub client_ip: IpAddr,
    /// The TLS client certificate of the connection, if any.
    pub peer_cert: Option<PresentedCert<'a>>,
    /// The browser's `Origin` header.
    pub origin: Option<&'a str>,
    pub method: &'a str,
    /// The request path (no query).
    pub path: &'a str,
    /// The URL a DPoP proof must name (`htu`), when it is not `oauth.issuer` + `path`.
    pub htu: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Which credential decides a request.
enum Choice<'a> {
    Key(&'a str),
    Token { value: &'a str, dpop: bool },
    Certificate(PresentedCert<'a>),
    Refuse(Rejection),
}

impl<'a> RequestContext<'a> {
    /// The credential the request is decided by, and whether it came in `Authorization`. A
    /// token is a credential only on routes that take tokens: elsewhere an `Authorization`
    /// value belongs to the upstream and passes through.
    fn choice(&self) -> (Choice<'a>, bool) {
        let r = &self.route;
        if r.tokens && self.token != TokenCredential::None {
            if self.key != KeyCredential::None {
                return (Choice::Refuse(Rejection::Multiple), true);
            }
            return match self.token {
                TokenCredential::One { value, dpop } => (Choice::Token { value, dpop }, true),
                _ => (Choice::Refuse(Rejection::Multiple), true),
            };
        }
        match self.key {
            KeyCredential::None => match (r.client_certificates, self.peer_cert) {
                (true, Some(c)) => (Choice::Certificate(c), false),
                (true, None) => (Choice::Refuse(Rejection::CertificateRequired), false),
                _ if self.token != TokenCredential::None => (
                    Choice::Refuse(Rejection::CredentialNotAccepted { accepted: r.accepted() }),
                    true,
                ),
                _ => (Choice::Refuse(Rejection::Missing), false),
            },
            KeyCredential::One { bearer, .. } if !r.api_keys => (
                Choice::Refuse(Rejection::CredentialNotAccepted { accepted: r.accepted() }),
                bearer,
            ),
            KeyCredential::One { value, bearer } => (Choice::Key(value), bearer),
            KeyCredential::Multiple => (Choice::Refuse(Rejection::Multiple), false),
            KeyCredential::Malformed { bearer } => {
                (Choice::Refuse(Rejection::Malformed(KeyFormatError::Alphabet)), bearer)
            }
        }
    }

    /// The deciding credential came in `Authorization` (Bearer or DPoP): the edge removes that
    /// header before proxying and answers with `Bearer` challenges.
    pub fn in_authorization(&self) -> bool {
        !self.route.public && self.choice().1
    }

    pub fn facts(&self) -> RequestFacts<'a> {
        RequestFacts {
            required_scopes: self.route.scopes,
            scope_mode: self.route.scope_mode,
            client_ip: Some(self.client_ip),
        }
    }

    pub fn meta(&self) -> RequestMeta<'a> {
        RequestMeta {
            ip: Some(self.client_ip),
            method: self.method,
            path: self.path,
            user_agent: self.user_agent,
        }
    }
}

/// Who a request is made by.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An API key.
    Key(Arc<KeyRecord>),
    /// A keyward access token (its client, or the key it was exchanged for).
    Token(Arc<TokenPrincipal>),
    /// The OAuth client a TLS client certificate is registered to.
    Certificate(Arc<ClientRecord>),
    /// Anyone, on a public route.
    Anonymous,
}

/// The limits of the anonymous principal: none of its own.
static NO_POLICY: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(Policy::default);

/// Whom limits and usage are counted for.
#[derive(Debug, Clone, Copy)]
pub struct LimitSubject<'a> {
    pub id: &'a str,
    /// The id its own limits are counted under: for a key, the first key of its rotation
    /// chain ([`KeyRecord::limit_id`]); else `id`.
    pub limit_id: &'a str,
    pub app_id: &'a str,
    pub policy: &'a Policy,
    /// The app's own limits (keys only).
    pub app_policy: Option<&'a Policy>,
    pub publishable: bool,
    /// Counted in usage (everyone but the anonymous principal of public routes).
    pub counted: bool,
}

impl Principal {
    /// The key id, or the OAuth client id: what limits and usage are counted by.
    pub fn id(&self) -> &str {
        match self {
            Principal::Key(k) => &k.id,
            Principal::Token(t) => &t.claims.client_id,
            Principal::Certificate(c) => &c.id,
            Principal::Anonymous => "anonymous",
        }
    }

    /// The OAuth client, when a token or a certificate stands for the caller.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Principal::Key(_) | Principal::Anonymous => None,
            Principal::Token(t) => Some(&t.claims.client_id),
            Principal::Certificate(c) => Some(&c.id),
        }
    }

    /// The key record, when the caller is an API key.
    pub fn key(&self) -> Option<&KeyRecord> {
        match self {
            Principal::Key(k) => Some(k),
            _ => None,
        }
    }

    pub fn app_id(&self) -> &str {
        match self {
            Principal::Key(k) => &k.app_id,
            Principal::Token(t) => &t.app_id,
            Principal::Certificate(c) => &c.app_id,
            Principal::Anonymous => "",
        }
    }

    pub fn app_name(&self) -> &str {
        match self {
            Principal::Key(k) => &k.app_name,
            Principal::Token(t) => &t.app_name,
            Principal::Certificate(c) => &c.app_name,
            Principal::Anonymous => "",
        }
    }

    /// The scopes the caller holds (a token's: those it was issued with).
    pub fn scopes(&self) -> &[Scope] {
        match self {
            Principal::Key(k) => &k.scopes,
            Principal::Token(t) => &t.scopes,
            Principal::Certificate(c) => &c.scopes,
            Principal::Anonymous => &[],
        }
    }

    /// When the credential stops working (keys only; tokens are short-lived by design).
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.key().and_then(|k| k.expires_at)
    }

    /// How long an allow of this principal may be reused without asking again (a proxy that
    /// caches forward-auth answers: a route's `decision_cache`), at most `max`, and never past
    /// the credential's own expiry. `None` (never reuse) when the decision depends on more than
    /// the credential, the route and the client address, or would have to count something: a
    /// publishable key (its origins), a DPoP- or certificate-bound token, a required client
    /// certificate, an address allowlist, any rate or quota of the key, its app or the client
    /// (a reused allow consumes nothing); also below one second of remaining life.
    pub fn reusable_for(&self, now: OffsetDateTime, max: std::time::Duration) -> Option<std::time::Duration> {
        fn plain(p: &Policy) -> bool {
            p.ips.is_empty() && p.rate.is_none() && p.quota.is_none() && !p.require_mtls && p.origins.is_empty()
        }
        let until = match self {
            Principal::Anonymous => None,
            Principal::Key(k) => {
                if k.kind() == KeyKind::Publishable || !plain(&k.policy) || !plain(&k.app_policy) {
                    return None;
                }
                k.expires_at
            }
            Principal::Token(t) => {
                if t.claims.cnf.is_some() || !plain(&t.policy) {
                    return None;
                }
                Some(OffsetDateTime::from_unix_timestamp(t.claims.exp).ok()?)
            }
            Principal::Certificate(_) => return None,
        };
        let max = std::time::Duration::from_secs(max.as_secs());
        let ttl = match until {
            None => max,
            Some(t) => {
                let left = u64::try_from((t - now).whole_seconds()).unwrap_or(0);
                max.min(std::time::Duration::from_secs(left))
            }
        };
        (ttl.as_secs() >= 1).then_some(ttl)
    }

    pub fn limit_subject(&self) -> LimitSubject<'_> {
        match self {
            Principal::Key(k) => LimitSubject {
                id: &k.id,
                limit_id: k.limit_id(),
                app_id: &k.app_id,
                policy: &k.policy,
                app_policy: Some(&k.app_policy),
                publishable: k.kind() == KeyKind::Publishable,
                counted: true,
            },
            Principal::Token(t) => LimitSubject {
                id: &t.claims.client_id,
                limit_id: &t.claims.client_id,
                app_id: &t.app_id,
                policy: &t.policy,
                app_policy: None,
                publishable: false,
                counted: true,
            },
            Principal::Certificate(c) => LimitSubject {
                id: &c.id,
                limit_id: &c.id,
                app_id: &c.app_id,
                policy: &c.policy,
                app_policy: None,
                publishable: false,
                counted: true,
            },
            Principal::Anonymous => LimitSubject {
                id: "anonymous",
                limit_id: "anonymous",
                app_id: "",
                policy: &NO_POLICY,
                app_policy: None,
                publishable: false,
                counted: false,
            },
        }
    }
}

/// A refusal, and the principal it concerns when the credential was authentic.
pub(crate) struct Denied {
    pub rejection: Rejection,
    pub principal: Option<Principal>,
}

impl Denied {
    pub(crate) fn anonymous(rejection: Rejection) -> Denied {
        Denied {
            rejection,
            principal: None,
        }
    }

    pub(crate) fn of(principal: &Principal, rejection: Rejection) -> Denied {
        Denied {
            rejection,
            principal: Some(principal.clone()),
        }
    }
}

/// The rejection for a denial of the pure decision.
pub(crate) fn rejection_for(id: &str, denial: Denial) -> Rejection {
    let key_id = id.to_owned();
    match denial {
        Denial::Revoked => Rejection::Revoked { key_id },
        Denial::Expired => Rejection::Expired { key_id },
        Denial::Disabled => Rejection::Disabled { key_id },
        Denial::IpNotAllowed => Rejection::IpNotAllowed { key_id },
        Denial::InsufficientScope { missing } => Rejection::InsufficientScope { key_id, missing },
        Denial::ExchangeOnly => Rejection::ExchangeOnly { key_id },
        Denial::PublishableNotAllowed => Rejection::PublishableNotAllowed { key_id },
        Denial::OriginNotAllowed => Rejection::OriginNotAllowed { key_id },
    }
}

impl Engine {
    /// Authenticates and authorizes a request: the credential the route takes (key, token or
    /// certificate) → the principal → its lifecycle, kind, binding (DPoP, mTLS), address
    /// allowlist and scopes. Limits are [`Engine::admit`]'s. Every refusal is accounted.
    pub async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Principal, Rejection> {
        if ctx.route.public {
            return Ok(Principal::Anonymous);
        }
        let result = match ctx.choice().0 {
            Choice::Refuse(r) => Err(Denied::anonymous(r)),
            Choice::Key(value) => self.key_principal(value, ctx).await,
            // Boxed: their futures (JWT and DPoP checks, store lookups) would otherwise be
            // part of every request's future, key requests included, and be moved with it.
            Choice::Token { value, dpop } => Box::pin(self.token_principal(value, dpop, ctx)).await,
            Choice::Certificate(cert) => Box::pin(self.certificate_principal(cert, ctx)).await,
        };
        result.map_err(|d| self.account(d, Some(ctx.client_ip)))
    }

    /// Counts a refusal (usage of its principal by outcome; failed authentications of the
    /// address) and gives back its rejection.
    pub(crate) fn account(&self, denied: Denied, ip: Option<IpAddr>) -> Rejection {
        let now = self.now();
        if let Some(p) = &denied.principal {
            self.usage
                .record_as(p.id(), p.app_id(), denied.rejection.usage_outcome(), now);
        }
        if let (Some(ip), true) = (ip, denied.rejection.is_authentication_failure()) {
            self.security.failed_authentication(self, ip, now);
        }
        denied.rejection
    }

    async fn key_principal(&self, value: &str, ctx: &RequestContext<'_>) -> Result<Principal, Denied> {
        let record = self.check_key(value, &ctx.facts(), &ctx.meta()).await?;
        let principal = Principal::Key(record.clone());
        let usage = KeyUse {
            route_takes_publishable: ctx.route.publishable,
            origin: ctx.origin,
        };
        if let Decision::Deny(d) = check_key_use(&record, &usage) {
            return Err(Denied::of(&principal, rejection_for(&record.id, d)));
        }
        self.check_mtls_requirement(&record, ctx.peer_cert)
            .await
            .map_err(|r| Denied::of(&principal, r))?;
        Ok(principal)
    }

    async fn token_principal(&self, token: &str, dpop: bool, ctx: &RequestContext<'_>) -> Result<Principal, Denied> {
        let verified = self
            .verify_access_token(token, ctx.route.audience)
            .await
            .map_err(|e| Denied::anonymous(Rejection::InvalidToken { reason: e.code() }))?;
        let principal = Principal::Token(verified.clone());
        self.check_token_binding(verified.claims.cnf.as_ref(), dpop, token, ctx)
            .await
            .map_err(|r| Denied::of(&principal, r))?;
        if let Decision::Deny(d) = authorize_client(&verified.scopes, &verified.policy, &ctx.facts()) {
            return Err(Denied::of(&principal, rejection_for(&verified.claims.client_id, d)));
        }
        Ok(principal)
    }

    async fn certificate_principal(
        &self,
        cert: PresentedCert<'_>,
        ctx: &RequestContext<'_>,
    ) -> Result<Principal, Denied> {
        let client = match self.client_for_certificate(cert).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(Denied::anonymous(Rejection::CertificateRequired)),
            Err(crate::EngineError::Store(e)) => return Err(Denied::anonymous(Rejection::Store(e))),
            Err(_) => return Err(Denied::anonymous(Rejection::CertificateRequired)),
        };
        let principal = Principal::Certificate(client.clone());
        if let Decision::Deny(d) = authorize_client(&client.scopes, &client.policy, &ctx.facts()) {
            return Err(Denied::of(&principal, rejection_for(&client.id, d)));
        }
        Ok(principal)
    }

    /// Consumes from every limit that applies to this request, all or nothing: the principal's
    /// and (for keys) its app's rate and quota, the route's rate, and a publishable key's
    /// per-address rate. A refused request consumes nothing. The outcome is counted in the
    /// principal's usage. With Redis limits, a failure of Redis is answered by the route's
    /// `on_limiter_failure`; `fail_closed` is `LimiterUnavailable`.
    pub async fn admit(
        &self,
        principal: &Principal,
        route: &RouteLimits,
        client: Option<IpAddr>,
    ) -> Result<Vec<LimitState>, Rejection> {
        let outcome = self.limit(&principal.limit_subject(), route, client).await;
        let rejection = match outcome {
            Ok(Outcome::Allowed { states }) => return Ok(states),
            Ok(Outcome::RateLimited {
                policy,
                retry_after,
                states,
            }) => Rejection::RateLimited {
                policy,
                retry_after,
                states,
            },
            Ok(Outcome::QuotaExhausted {
                policy,
                retry_after,
                states,
            }) => Rejection::QuotaExhausted {
                policy,
                retry_after,
                states,
            },
            Err(r) => r,
        };
        // Limits are no authentication failure: only the usage counts them (done by `limit`).
        Err(rejection)
    }
}

/// A change that may take rights away from principals, made on this node or announced by
/// another: what holders of long-lived state (open tunnels) re-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Key(String),
    App(String),
    Client(String),
    /// The token denylist grew.
    Tokens,
    /// Announcements may have been missed: re-check everything.
    All,
}

impl Changed {
    /// Whether the change may concern `p`.
    pub fn concerns(&self, p: &Principal) -> bool {
        match (self, p) {
            (_, Principal::Anonymous) => false,
            (Changed::All, _) => true,
            (Changed::Key(id), Principal::Key(k)) => &k.id == id,
            (Changed::App(id), Principal::Key(k)) => &k.app_id == id,
            (Changed::Client(id), Principal::Token(t)) => &t.claims.client_id == id,
            (Changed::Client(id), Principal::Certificate(c)) => &c.id == id,
            (Changed::Tokens, Principal::Token(_)) => true,
            _ => false,
        }
    }
}

/// What a request was granted, kept by whoever holds a connection open on it (a tunnel) to
/// re-check it when something changes.
#[derive(Debug, Clone)]
pub struct Granted {
    pub principal: Principal,
    pub scopes: Vec<Scope>,
    pub scope_mode: ScopeMode,
    pub client_ip: IpAddr,
}

impl Granted {
    pub fn new(principal: Principal, ctx: &RequestContext<'_>) -> Granted {
        Granted {
            principal,
            scopes: ctx.route.scopes.to_vec(),
            scope_mode: ctx.route.scope_mode,
            client_ip: ctx.client_ip,
        }
    }

    /// When the grant runs out on its own: the key's expiry, the token's `exp`.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        match &self.principal {
            Principal::Key(k) => k.expires_at,
            Principal::Token(t) => OffsetDateTime::from_unix_timestamp(t.claims.exp).ok(),
            Principal::Certificate(_) | Principal::Anonymous => None,
        }
    }
}

impl Engine {
    /// Announces a change to the holders of long-lived grants (no receiver: nothing to do).
    pub(crate) fn announce(&self, change: Changed) {
        let _ = self.changed.send(change);
    }

    /// Changes that may take rights away, as they happen (on this node, or announced by
    /// another through the store or Redis).
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<Changed> {
        self.changed.subscribe()
    }

    /// Whether a grant still holds now: the key re-read from the store and decided again
    /// (revoked, disabled, expired, allowlists, scopes), the token not revoked nor expired and
    /// its client still there and enabled, the certificate's client likewise. A store that
    /// cannot answer keeps the grant (like stale serving: the caller re-checks later).
    pub async fn still_granted(&self, g: &Granted) -> bool {
        let now = self.clock.now();
        let facts = RequestFacts {
            required_scopes: &g.scopes,
            scope_mode: g.scope_mode,
            client_ip: Some(g.client_ip),
        };
        match &g.principal {
            Principal::Anonymous => true,
            Principal::Key(k) => match self.store.get_key(&k.id).await {
                Ok(Some(fresh)) => {
                    keyward_core::authorize(&fresh, &facts, now) == Decision::Allow
                        && check_key_use(
                            &fresh,
                            &KeyUse {
                                route_takes_publishable: true,
                                origin: None,
                            },
                        ) != Decision::Deny(Denial::ExchangeOnly)
                }
                Ok(None) => false,
                Err(_) => true,
            },
            Principal::Token(t) => {
                if self.token_revoked(&t.claims.jti) || t.claims.exp <= now.unix_timestamp() {
                    return false;
                }
                self.client_still_enabled(&t.claims.client_id, &t.claims.sub).await
            }
            Principal::Certificate(c) => self.client_still_enabled(&c.id, &c.id).await,
        }
    }

    /// A client (or, for a token exchanged for a key, that key) that still exists and is
    /// enabled.
    async fn client_still_enabled(&self, client_id: &str, sub: &str) -> bool {
        match self.store.get_client(client_id).await {
            Ok(Some(c)) => c.disabled_at.is_none(),
            Ok(None) => match self.store.get_key(sub).await {
                Ok(Some(k)) => k.state(self.clock.now()) == keyward_core::model::KeyState::Active,
                Ok(None) => false,
                Err(_) => true,
            },
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    use keyward_core::policy::{IpAllowlist, QuotaSpec, RateSpec};
    use keyward_token::jwt::{AccessClaims, Audience, Confirmation};

    fn key(now: OffsetDateTime) -> KeyRecord {
        KeyRecord {
            id: "key_1".into(),
            app_id: "app_1".into(),
            app_name: "a".into(),
            name: None,
            hint: "kw_live_AbCd…9xYz".into(),
            env: keyward_core::KeyEnv::Live,
            scopes: vec![],
            expires_at: None,
            created_at: now,
            revoked_at: None,
            policy: Default::default(),
            app_policy: Default::default(),
            lifecycle: Default::default(),
        }
    }

    fn token(now: OffsetDateTime, exp_in: i64) -> TokenPrincipal {
        TokenPrincipal {
            claims: AccessClaims {
                iss: "https://kw".into(),
                sub: "c".into(),
                aud: Audience::One("api".into()),
                client_id: "client_1".into(),
                iat: now.unix_timestamp(),
                exp: now.unix_timestamp() + exp_in,
                nbf: None,
                jti: "j".into(),
                scope: None,
                cnf: None,
            },
            scopes: vec![],
            app_id: "app_1".into(),
            app_name: "a".into(),
            policy: Default::default(),
        }
    }

    #[test]
    fn only_plain_credentials_are_reusable_and_never_past_their_expiry() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let five = Duration::from_secs(5);
        let k = |f: &dyn Fn(&mut KeyRecord)| {
            let mut r = key(now);
            f(&mut r);
            Principal::Key(Arc::new(r)).reusable_for(now, five)
        };
        assert_eq!(k(&|_| {}), Some(five));
        assert_eq!(Principal::Anonymous.reusable_for(now, five), Some(five));
        // Capped at the credential's life; nothing below a second.
        assert_eq!(
            k(&|r| r.expires_at = Some(now + time::Duration::seconds(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            k(&|r| r.expires_at = Some(now + time::Duration::milliseconds(900))),
            None
        );
        assert_eq!(k(&|r| r.expires_at = Some(now - time::Duration::seconds(1))), None);
        // Sub-second parts of the maximum are dropped (max-age is whole seconds).
        assert_eq!(
            Principal::Anonymous.reusable_for(now, Duration::from_millis(1500)),
            Some(Duration::from_secs(1))
        );
        // Anything that makes the decision depend on more than the credential, or count.
        let ips = IpAllowlist::parse(&["10.0.0.0/8"]).unwrap();
        let rate = RateSpec::parse("10/min", None).unwrap();
        let quota = QuotaSpec::parse("10/day").unwrap();
        assert_eq!(k(&|r| r.policy.ips = ips.clone()), None);
        assert_eq!(k(&|r| r.app_policy.ips = ips.clone()), None);
        assert_eq!(k(&|r| r.policy.rate = Some(rate)), None);
        assert_eq!(k(&|r| r.app_policy.rate = Some(rate)), None);
        assert_eq!(k(&|r| r.policy.quota = Some(quota)), None);
        assert_eq!(k(&|r| r.app_policy.quota = Some(quota)), None);
        assert_eq!(k(&|r| r.policy.require_mtls = true), None);
        assert_eq!(k(&|r| r.hint = "kw_pk_AbCd…9xYz".into()), None, "publishable");
        // Tokens: until their exp, never when sender-constrained.
        let t = |f: &dyn Fn(&mut TokenPrincipal), exp_in: i64| {
            let mut p = token(now, exp_in);
            f(&mut p);
            Principal::Token(Arc::new(p)).reusable_for(now, five)
        };
        assert_eq!(t(&|_| {}, 600), Some(five));
        assert_eq!(t(&|_| {}, 2), Some(Duration::from_secs(2)));
        assert_eq!(t(&|_| {}, 0), None);
        assert_eq!(t(&|p| p.claims.cnf = Some(Confirmation::jkt("thumb")), 600), None);
        assert_eq!(t(&|p| p.policy.ips = ips.clone(), 600), None);
        assert_eq!(t(&|p| p.policy.rate = Some(rate), 600), None);
    }
}
