//! The decision without HTTP: every `Rejection` path of [`Engine::authenticate`] and
//! [`Engine::admit`], for every principal kind, over a real SQLite store with the manual
//! clock; each refusal's accounting checked (usage of a known principal by outcome, failed
//! authentications of the address as `security.failed_auth_burst` audit events with a burst
//! of 1).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use keyward_core::decision::ScopeMode;
use keyward_core::model::{AuditFilter, ClientAuthMethod};
use keyward_core::policy::{IpAllowlist, Origin, Policy, QuotaSpec, RateSpec};
use keyward_core::{KeyEnv, KeyFormat, KeyKind, Pepper, Scope};
use keyward_store::SqliteStore;
use keyward_token::{Algorithm, Kek, SigningKey};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::dpop::DpopConfig;
use crate::mtls::PresentedCert;
use crate::oauth::NewClient;
use crate::token::{ClientAuth, OAuthConfig, TokenRequest};
use crate::{
    DpopHeader, Engine, EngineOptions, KeyCredential, ManualClock, NewKey, Principal, Rejection, RequestContext,
    RequestMeta, RouteFacts, RouteLimits, TokenCredential,
};

const PEPPER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ISSUER: &str = "https://kw.test";

struct Fx {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn fx_with(limiter: Option<crate::limit::Limiter>) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("pipeline.db")).await.unwrap();
    let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let options = EngineOptions {
        failed_auth_burst: 1,
        ..Default::default()
    };
    let mut engine = Engine::with_options(
        Arc::new(store),
        Pepper::from_text(PEPPER).unwrap(),
        KeyFormat::default(),
        options,
        clock.clone(),
    );
    if let Some(l) = limiter {
        engine = engine.with_limiter(l);
    }
    let cfg = OAuthConfig {
        issuer: ISSUER.into(),
        default_audience: "api".into(),
        audiences: vec!["api".into()],
        signing_alg: Algorithm::EdDSA,
        leeway: Duration::from_secs(30),
        publish_delay: Duration::ZERO,
        rotate_every: None,
        dpop: DpopConfig::default(),
        mtls_base_url: None,
    };
    engine.enable_oauth(cfg, Kek::generate().unwrap().0).await.unwrap();
    engine.create_app("test", "cats", Policy::default()).await.unwrap();
    Fx {
        engine: Arc::new(engine),
        clock,
        _dir: dir,
    }
}

async fn fx() -> Fx {
    fx_with(None).await
}

fn scope(s: &str) -> Scope {
    Scope::new(s).unwrap()
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, n])
}

/// A route that takes keys and tokens and needs `scopes`.
fn route(scopes: &[Scope]) -> RouteFacts<'_> {
    RouteFacts {
        scopes,
        scope_mode: ScopeMode::AllOf,
        api_keys: true,
        tokens: true,
        client_certificates: false,
        publishable: false,
        audience: "api",
        public: false,
    }
}

fn ctx<'a>(route: RouteFacts<'a>, client: IpAddr) -> RequestContext<'a> {
    RequestContext {
        route,
        key: KeyCredential::None,
        token: TokenCredential::None,
        dpop: DpopHeader::Absent,
        client_ip: client,
        peer_cert: None,
        origin: None,
        method: "GET",
        path: "/fact",
        htu: None,
        user_agent: None,
    }
}

fn with_key<'a>(mut c: RequestContext<'a>, value: &'a str) -> RequestContext<'a> {
    c.key = KeyCredential::One { value, bearer: false };
    c
}

fn with_token<'a>(mut c: RequestContext<'a>, value: &'a str, dpop: bool) -> RequestContext<'a> {
    c.token = TokenCredential::One { value, dpop };
    c
}

struct KeyOpts {
    scopes: Vec<&'static str>,
    policy: Policy,
    expires_in: Option<i64>,
    canary: bool,
    exchange_only: bool,
    kind: KeyKind,
}

impl Default for KeyOpts {
    fn default() -> Self {
        KeyOpts {
            scopes: vec!["facts:read"],
            policy: Policy::default(),
            expires_in: None,
            canary: false,
            exchange_only: false,
            kind: KeyKind::Secret,
        }
    }
}

impl Fx {
    async fn key(&self, o: KeyOpts) -> (String, String) {
        let (rec, secret) = self
            .engine
            .create_key(
                "test",
                NewKey {
                    app: "cats".into(),
                    name: None,
                    scopes: o.scopes.iter().map(|s| scope(s)).collect(),
                    expires_at: o.expires_in.map(|s| self.engine.now() + time::Duration::seconds(s)),
                    env: KeyEnv::Live,
                    policy: o.policy,
                    canary: o.canary,
                    exchange_only: o.exchange_only,
                    kind: o.kind,
                },
            )
            .await
            .unwrap();
        (rec.id, secret.expose().to_owned())
    }

    async fn client(&self, method: ClientAuthMethod, jwks: Option<Value>, policy: Policy) -> (String, Option<String>) {
        let (rec, secret) = self
            .engine
            .create_client(
                "test",
                NewClient {
                    app: "cats".into(),
                    name: None,
                    scopes: vec![scope("facts:read")],
                    auth_method: method,
                    jwks,
                    token_ttl: 300,
                    dpop_bound_access_tokens: false,
                    tls_subject: None,
                    policy,
                },
            )
            .await
            .unwrap();
        (rec.id, secret.map(|s| s.expose().to_owned()))
    }

    /// A client-credentials token, bound to `dpop_key` (by a proof) or to `cert`, if given.
    async fn token(&self, policy: Policy, dpop_key: Option<&SigningKey>, cert: Option<&[u8]>) -> (String, String) {
        let (id, secret) = self.client(ClientAuthMethod::ClientSecretBasic, None, policy).await;
        let secret = secret.unwrap();
        let proof = dpop_key.map(|k| self.proof(k, "POST", &format!("{ISSUER}/oauth/token"), None));
        let req = TokenRequest {
            grant_type: "client_credentials",
            scope: None,
            audience: None,
            auth: ClientAuth::Basic {
                client_id: &id,
                secret: &secret,
            },
            subject_token: None,
            subject_token_type: None,
            requested_token_type: None,
            dpop: proof.as_deref().map_or(DpopHeader::Absent, DpopHeader::One),
            client_cert: cert.map(|der| PresentedCert {
                der,
                chain_verified: true,
            }),
        };
        let issued = self.engine.issue_token(&req, &RequestMeta::default()).await.unwrap();
        (id, issued.access_token)
    }

    fn proof(&self, key: &SigningKey, htm: &str, htu: &str, token: Option<&str>) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = json!({"typ": "dpop+jwt", "alg": key.alg().as_str(), "jwk": key.public_jwk()});
        let mut claims = json!({
            "jti": keyward_core::secret::random_base62(16).unwrap(),
            "htm": htm,
            "htu": htu,
            "iat": self.engine.now().unix_timestamp(),
        });
        if let Some(t) = token {
            claims["ath"] = json!(crate::dpop::ath(t));
        }
        let h = b64(header.to_string().as_bytes());
        let p = b64(claims.to_string().as_bytes());
        let sig = key.sign(format!("{h}.{p}").as_bytes()).unwrap();
        format!("{h}.{p}.{}", b64(&sig))
    }

    /// Authenticates and expects the refusal `code`.
    async fn refused(&self, c: &RequestContext<'_>, code: &str) -> Rejection {
        match self.engine.authenticate(c).await {
            Ok(p) => panic!("expected {code}, allowed {}", p.id()),
            Err(r) => {
                assert_eq!(r.code(), code, "{r}");
                r
            }
        }
    }

    /// How often `id` was counted with `outcome` (not yet flushed).
    fn usage(&self, id: &str, outcome: &'static str) -> u64 {
        self.engine
            .usage_recorder()
            .pending()
            .get(&(id.to_owned(), outcome))
            .copied()
            .unwrap_or(0)
    }

    /// Whether a failed-authentication burst of `client` reached the audit log (written by a
    /// spawned task: waited for, at most 5 s).
    async fn burst_of(&self, client: IpAddr) -> bool {
        for _ in 0..100 {
            let events = self
                .engine
                .list_audit(&AuditFilter {
                    kind: Some("security.failed_auth_burst".into()),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap();
            if events
                .iter()
                .any(|e| e.source_ip.as_deref() == Some(&client.to_string()))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// No burst for `client` after the other checks had time to write theirs.
    async fn no_burst_of(&self, client: IpAddr) -> bool {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let events = self
            .engine
            .list_audit(&AuditFilter {
                kind: Some("security.failed_auth_burst".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        !events
            .iter()
            .any(|e| e.source_ip.as_deref() == Some(&client.to_string()))
    }
}

fn self_signed() -> (Vec<u8>, Value) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["svc.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().to_vec();
    let mut jwk = serde_json::to_value(keyward_token::ClientCert::parse(&der).unwrap().public_key.unwrap()).unwrap();
    jwk["x5c"] = json!([base64::engine::general_purpose::STANDARD.encode(&der)]);
    (der, json!({"keys": [jwk]}))
}

// ---- credentials the route does not decide by ----------------------------------------------

#[tokio::test]
async fn no_usable_credential() {
    let fx = fx().await;
    let none: [Scope; 0] = [];
    // Nothing at all.
    fx.refused(&ctx(route(&none), ip(1)), "missing_credential").await;
    assert!(fx.no_burst_of(ip(1)).await, "no credential is no failed authentication");
    // Two keys, a key and a token, two tokens.
    let mut c = ctx(route(&none), ip(2));
    c.key = KeyCredential::Multiple;
    fx.refused(&c, "multiple_credentials").await;
    let c = with_token(with_key(ctx(route(&none), ip(2)), "kw_live_x"), "a.b.c", false);
    fx.refused(&c, "multiple_credentials").await;
    assert!(c.in_authorization(), "the token route decides by Authorization");
    let mut c = ctx(route(&none), ip(2));
    c.token = TokenCredential::Multiple;
    fx.refused(&c, "multiple_credentials").await;
    // A key header that is not text.
    let mut c = ctx(route(&none), ip(3));
    c.key = KeyCredential::Malformed { bearer: false };
    fx.refused(&c, "malformed_credential").await;
    assert!(
        fx.burst_of(ip(3)).await,
        "a malformed credential is a failed authentication"
    );
    // A key of the wrong shape: refused before any lookup, counted.
    fx.refused(
        &with_key(ctx(route(&none), ip(4)), "kw_live_short"),
        "malformed_credential",
    )
    .await;
    assert!(fx.burst_of(ip(4)).await);
}

#[tokio::test]
async fn credentials_the_route_does_not_take() {
    let fx = fx().await;
    let none: [Scope; 0] = [];
    // A token on a key-only route: not missing, not accepted; it stays the upstream's.
    let mut keys_only = route(&none);
    keys_only.tokens = false;
    let c = with_token(ctx(keys_only, ip(10)), "eyJ.e30.sig", false);
    let r = fx.refused(&c, "credential_not_accepted").await;
    assert!(matches!(r, Rejection::CredentialNotAccepted { accepted: "an API key" }));
    // With a key beside it, the key decides and the token is the upstream's.
    let (_, key) = fx.key(KeyOpts::default()).await;
    let c = with_token(with_key(ctx(keys_only, ip(10)), &key), "eyJ.e30.sig", false);
    assert!(fx.engine.authenticate(&c).await.is_ok());
    assert!(
        !c.in_authorization(),
        "Authorization is not keyward's on a key-only route"
    );
    // A key on a token-only route.
    let mut tokens_only = route(&none);
    tokens_only.api_keys = false;
    let r = fx
        .refused(&with_key(ctx(tokens_only, ip(11)), &key), "credential_not_accepted")
        .await;
    assert!(matches!(
        r,
        Rejection::CredentialNotAccepted {
            accepted: "an access token"
        }
    ));
    assert!(fx.no_burst_of(ip(10)).await && fx.no_burst_of(ip(11)).await);
}

// ---- keys ------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_through_their_lifecycle() {
    let fx = fx().await;
    let read = [scope("facts:read")];
    let (id, key) = fx.key(KeyOpts::default()).await;
    let p = fx
        .engine
        .authenticate(&with_key(ctx(route(&read), ip(20)), &key))
        .await
        .unwrap();
    assert!(matches!(&p, Principal::Key(k) if k.id == id));
    assert_eq!((p.id(), p.client_id(), p.app_name()), (id.as_str(), None, "cats"));

    // Unknown (a well-formed key nobody has), and a canary.
    let unknown = KeyFormat::default().generate(KeyEnv::Live).unwrap();
    fx.refused(
        &with_key(ctx(route(&read), ip(21)), unknown.expose()),
        "invalid_credential",
    )
    .await;
    assert!(fx.burst_of(ip(21)).await);
    let (canary_id, canary) = fx
        .key(KeyOpts {
            canary: true,
            ..Default::default()
        })
        .await;
    fx.refused(&with_key(ctx(route(&read), ip(22)), &canary), "invalid_credential")
        .await;
    assert_eq!(fx.usage(&canary_id, "denied:other"), 0, "a canary looks unknown");

    // Scope and address.
    let write = [scope("facts:write")];
    let r = fx
        .refused(&with_key(ctx(route(&write), ip(23)), &key), "insufficient_scope")
        .await;
    assert!(matches!(r, Rejection::InsufficientScope { ref missing, .. } if missing == &write.to_vec()));
    assert_eq!(fx.usage(&id, "denied:insufficient_scope"), 1);
    let (fenced, fenced_key) = fx
        .key(KeyOpts {
            policy: Policy {
                ips: IpAllowlist::parse(&["198.51.100.0/24"]).unwrap(),
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
    fx.refused(&with_key(ctx(route(&read), ip(24)), &fenced_key), "ip_not_allowed")
        .await;
    assert_eq!(fx.usage(&fenced, "denied:ip_not_allowed"), 1);
    assert!(
        fx.no_burst_of(ip(24)).await,
        "a valid key refused by policy is no failed authentication"
    );

    // Disabled, revoked.
    fx.engine.disable_key("test", &id).await.unwrap();
    fx.refused(&with_key(ctx(route(&read), ip(25)), &key), "disabled_credential")
        .await;
    assert_eq!(fx.usage(&id, "denied:disabled"), 1);
    fx.engine.revoke_key("test", &id, None).await.unwrap();
    fx.refused(&with_key(ctx(route(&read), ip(26)), &key), "revoked_credential")
        .await;
    assert_eq!(fx.usage(&id, "denied:revoked"), 1);
    assert!(fx.burst_of(ip(26)).await);

    // Expired, on the manual clock (expiry is inclusive).
    let (short, short_key) = fx
        .key(KeyOpts {
            expires_in: Some(60),
            ..Default::default()
        })
        .await;
    assert!(fx
        .engine
        .authenticate(&with_key(ctx(route(&read), ip(27)), &short_key))
        .await
        .is_ok());
    fx.clock.advance(time::Duration::seconds(60));
    fx.refused(&with_key(ctx(route(&read), ip(27)), &short_key), "expired_credential")
        .await;
    assert_eq!(fx.usage(&short, "denied:expired"), 1);
}

#[tokio::test]
async fn key_kinds_and_mtls_requirement() {
    let fx = fx().await;
    let none: [Scope; 0] = [];
    // Exchange-only: refused on a route, counted.
    let (xid, xkey) = fx
        .key(KeyOpts {
            exchange_only: true,
            ..Default::default()
        })
        .await;
    fx.refused(&with_key(ctx(route(&none), ip(30)), &xkey), "exchange_only_credential")
        .await;
    assert_eq!(fx.usage(&xid, "denied:exchange_only"), 1);

    // Publishable: only on public-safe routes, only from its origins.
    let (pid, pkey) = fx
        .key(KeyOpts {
            kind: KeyKind::Publishable,
            policy: Policy {
                origins: vec![Origin::parse("https://cats.example").unwrap()],
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
    fx.refused(
        &with_key(ctx(route(&none), ip(31)), &pkey),
        "publishable_key_not_allowed",
    )
    .await;
    assert_eq!(fx.usage(&pid, "denied:publishable_not_allowed"), 1);
    let mut public = route(&none);
    public.publishable = true;
    let mut c = with_key(ctx(public, ip(31)), &pkey);
    c.origin = Some("https://evil.example");
    fx.refused(&c, "origin_not_allowed").await;
    assert_eq!(fx.usage(&pid, "denied:origin_not_allowed"), 1);
    c.origin = Some("https://cats.example");
    let p = fx.engine.authenticate(&c).await.unwrap();
    assert!(p.limit_subject().publishable);

    // A key that requires mTLS: only with a certificate registered to a client of its app.
    let (mid, mkey) = fx
        .key(KeyOpts {
            policy: Policy {
                require_mtls: true,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
    fx.refused(&with_key(ctx(route(&none), ip(32)), &mkey), "mtls_required")
        .await;
    assert_eq!(fx.usage(&mid, "denied:mtls_required"), 1);
    let (der, jwks) = self_signed();
    fx.client(ClientAuthMethod::SelfSignedTlsClientAuth, Some(jwks), Policy::default())
        .await;
    let mut c = with_key(ctx(route(&none), ip(32)), &mkey);
    c.peer_cert = Some(PresentedCert {
        der: &der,
        chain_verified: false,
    });
    assert!(matches!(fx.engine.authenticate(&c).await, Ok(Principal::Key(_))));
    let (other, _) = self_signed();
    c.peer_cert = Some(PresentedCert {
        der: &other,
        chain_verified: false,
    });
    fx.refused(&c, "mtls_required").await;
    assert_eq!(fx.usage(&mid, "denied:mtls_required"), 2);
}

// ---- tokens ----------------------------------------------------------------------------------

#[tokio::test]
async fn bearer_tokens() {
    let fx = fx().await;
    let read = [scope("facts:read")];
    let (cid, token) = fx.token(Policy::default(), None, None).await;
    let p = fx
        .engine
        .authenticate(&with_token(ctx(route(&read), ip(40)), &token, false))
        .await
        .unwrap();
    assert!(matches!(&p, Principal::Token(t) if t.claims.client_id == cid));
    assert_eq!(
        (p.id(), p.client_id(), p.app_name()),
        (cid.as_str(), Some(cid.as_str()), "cats")
    );
    assert!(p.key().is_none() && p.expires_at().is_none());

    // Garbage, another audience, a DPoP scheme on a plain token.
    let r = fx
        .refused(
            &with_token(ctx(route(&read), ip(41)), "not.a.token", false),
            "invalid_token",
        )
        .await;
    assert!(matches!(r, Rejection::InvalidToken { reason: "malformed" }));
    assert!(fx.burst_of(ip(41)).await, "an invalid token is a failed authentication");
    let mut elsewhere = route(&read);
    elsewhere.audience = "other";
    let r = fx
        .refused(&with_token(ctx(elsewhere, ip(42)), &token, false), "invalid_token")
        .await;
    assert!(matches!(
        r,
        Rejection::InvalidToken {
            reason: "wrong_audience"
        }
    ));
    let r = fx
        .refused(&with_token(ctx(route(&read), ip(43)), &token, true), "invalid_token")
        .await;
    assert!(matches!(
        r,
        Rejection::InvalidToken {
            reason: "token_not_dpop_bound"
        }
    ));
    assert_eq!(
        fx.usage(&cid, "denied:invalid_token"),
        1,
        "counted for the token's client"
    );

    // Scope, address.
    let write = [scope("facts:write")];
    fx.refused(
        &with_token(ctx(route(&write), ip(44)), &token, false),
        "insufficient_scope",
    )
    .await;
    assert_eq!(fx.usage(&cid, "denied:insufficient_scope"), 1);
    let fenced = Policy {
        ips: IpAllowlist::parse(&["198.51.100.0/24"]).unwrap(),
        ..Default::default()
    };
    let (fid, ftoken) = fx.token(fenced, None, None).await;
    fx.refused(&with_token(ctx(route(&read), ip(45)), &ftoken, false), "ip_not_allowed")
        .await;
    assert_eq!(fx.usage(&fid, "denied:ip_not_allowed"), 1);

    // Revoked: said so.
    assert!(fx.engine.revoke_token(&token, &cid).await.unwrap());
    let r = fx
        .refused(&with_token(ctx(route(&read), ip(46)), &token, false), "invalid_token")
        .await;
    assert!(matches!(r, Rejection::InvalidToken { reason: "revoked" }), "{r}");
    assert!(r.to_string().contains("revoked"));

    // Expired, on the manual clock (beyond the 30 s leeway).
    let (_, t2) = fx.token(Policy::default(), None, None).await;
    fx.clock.advance(time::Duration::seconds(300 + 31));
    let r = fx
        .refused(&with_token(ctx(route(&read), ip(47)), &t2, false), "invalid_token")
        .await;
    assert!(matches!(r, Rejection::InvalidToken { reason: "expired" }));
}

#[tokio::test]
async fn dpop_bound_tokens() {
    let fx = fx().await;
    let read = [scope("facts:read")];
    let holder = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let (cid, token) = fx.token(Policy::default(), Some(&holder), None).await;
    let htu = format!("{ISSUER}/fact");
    let good = fx.proof(&holder, "GET", &htu, Some(&token));
    let mut c = with_token(ctx(route(&read), ip(50)), &token, true);
    c.dpop = DpopHeader::One(&good);
    assert!(matches!(fx.engine.authenticate(&c).await, Ok(Principal::Token(_))));
    // The same proof again: a replay.
    let r = fx.refused(&c, "invalid_dpop_proof").await;
    assert!(r.to_string().contains("used before"), "{r}");
    // Sent as Bearer.
    let r = fx
        .refused(&with_token(ctx(route(&read), ip(51)), &token, false), "invalid_token")
        .await;
    assert!(matches!(
        r,
        Rejection::InvalidToken {
            reason: "dpop_bound_token_sent_as_bearer"
        }
    ));
    // No proof, several, not ASCII, another key's proof, another URL.
    let mut c = with_token(ctx(route(&read), ip(52)), &token, true);
    for (header, says) in [
        (DpopHeader::Absent, "a DPoP proof is required"),
        (DpopHeader::Several, "send exactly one DPoP header"),
        (DpopHeader::NotAscii, "not ASCII"),
    ] {
        c.dpop = header;
        let r = fx.refused(&c, "invalid_dpop_proof").await;
        assert!(r.to_string().contains(says), "{r}");
    }
    let thief = SigningKey::generate(Algorithm::EdDSA, None).unwrap();
    let stolen = fx.proof(&thief, "GET", &htu, Some(&token));
    c.dpop = DpopHeader::One(&stolen);
    let r = fx.refused(&c, "invalid_dpop_proof").await;
    assert!(r.to_string().contains("another key"), "{r}");
    let wrong_url = fx.proof(&holder, "GET", &format!("{ISSUER}/other"), Some(&token));
    c.dpop = DpopHeader::One(&wrong_url);
    fx.refused(&c, "invalid_dpop_proof").await;
    // The verify API's `url` names the htu instead of issuer + path.
    let elsewhere = fx.proof(&holder, "GET", "https://api.example/fact", Some(&token));
    c.dpop = DpopHeader::One(&elsewhere);
    c.htu = Some("https://api.example/fact");
    assert!(fx.engine.authenticate(&c).await.is_ok());
    assert_eq!(fx.usage(&cid, "denied:invalid_dpop_proof"), 6);
}

#[tokio::test]
async fn certificate_bound_tokens() {
    let fx = fx().await;
    let read = [scope("facts:read")];
    let (der, _) = self_signed();
    let (cid, token) = fx.token(Policy::default(), None, Some(&der)).await;
    let mut c = with_token(ctx(route(&read), ip(60)), &token, false);
    let r = fx.refused(&c, "invalid_token").await;
    assert!(matches!(
        r,
        Rejection::InvalidToken {
            reason: "certificate_binding_mismatch"
        }
    ));
    let (other, _) = self_signed();
    c.peer_cert = Some(PresentedCert {
        der: &other,
        chain_verified: true,
    });
    fx.refused(&c, "invalid_token").await;
    assert_eq!(fx.usage(&cid, "denied:invalid_token"), 2);
    c.peer_cert = Some(PresentedCert {
        der: &der,
        chain_verified: true,
    });
    assert!(fx.engine.authenticate(&c).await.is_ok());
    // Introspection names the binding (RFC 8705 §3.2).
    let claims = fx.engine.introspect(&token).await.unwrap();
    let x5t = claims.cnf.and_then(|c| c.x5t_s256).unwrap();
    assert_eq!(x5t, crate::token::cert_thumbprint(&der));
}

// ---- certificate clients -----------------------------------------------------------------------

#[tokio::test]
async fn certificate_clients() {
    let fx = fx().await;
    let read = [scope("facts:read")];
    let mut certs_only = route(&read);
    certs_only.api_keys = false;
    certs_only.tokens = false;
    certs_only.client_certificates = true;
    fx.refused(&ctx(certs_only, ip(70)), "client_certificate_required")
        .await;
    let (der, jwks) = self_signed();
    let mut c = ctx(certs_only, ip(70));
    c.peer_cert = Some(PresentedCert {
        der: &der,
        chain_verified: false,
    });
    fx.refused(&c, "client_certificate_required").await;
    let fenced = Policy {
        ips: IpAllowlist::parse(&["192.0.2.71/32"]).unwrap(),
        ..Default::default()
    };
    let (cid, _) = fx
        .client(ClientAuthMethod::SelfSignedTlsClientAuth, Some(jwks), fenced)
        .await;
    fx.refused(&c, "ip_not_allowed").await;
    assert_eq!(fx.usage(&cid, "denied:ip_not_allowed"), 1);
    c.client_ip = ip(71);
    let p = fx.engine.authenticate(&c).await.unwrap();
    assert!(matches!(&p, Principal::Certificate(cl) if cl.id == cid));
    assert_eq!(p.client_id(), Some(cid.as_str()));
    let write = [scope("facts:write")];
    let mut needs_write = certs_only;
    needs_write.scopes = &write;
    c.route = needs_write;
    fx.refused(&c, "insufficient_scope").await;
    assert_eq!(fx.usage(&cid, "denied:insufficient_scope"), 1);
}

// ---- limits ------------------------------------------------------------------------------------

#[tokio::test]
async fn limits_for_every_principal_kind() {
    let fx = fx().await;
    let none: [Scope; 0] = [];
    let limits = RouteLimits {
        route: "r".into(),
        ..Default::default()
    };
    let two_a_minute = Policy {
        rate: Some(RateSpec::parse("2/min", None).unwrap()),
        ..Default::default()
    };
    // A key: its rate, then 429 counted as limited:rate.
    let (kid, key) = fx
        .key(KeyOpts {
            policy: two_a_minute.clone(),
            ..Default::default()
        })
        .await;
    let p = fx
        .engine
        .authenticate(&with_key(ctx(route(&none), ip(80)), &key))
        .await
        .unwrap();
    for left in [1, 0] {
        let states = fx.engine.admit(&p, &limits, Some(ip(80))).await.unwrap();
        assert_eq!(states[0].remaining, left);
    }
    let r = fx.engine.admit(&p, &limits, Some(ip(80))).await.unwrap_err();
    assert!(matches!(r, Rejection::RateLimited { policy: "key", .. }), "{r}");
    assert_eq!(fx.usage(&kid, "allowed"), 2);
    assert_eq!(fx.usage(&kid, "limited:rate"), 1);
    // A token client: its own rate, under its id.
    let (cid, token) = fx.token(two_a_minute.clone(), None, None).await;
    let p = fx
        .engine
        .authenticate(&with_token(ctx(route(&none), ip(81)), &token, false))
        .await
        .unwrap();
    fx.engine.admit(&p, &limits, None).await.unwrap();
    fx.engine.admit(&p, &limits, None).await.unwrap();
    assert!(matches!(
        fx.engine.admit(&p, &limits, None).await,
        Err(Rejection::RateLimited { .. })
    ));
    assert_eq!(fx.usage(&cid, "limited:rate"), 1);
    // A quota, refilled by the clock.
    let (qid, qkey) = fx
        .key(KeyOpts {
            policy: Policy {
                quota: Some(QuotaSpec::parse("1/day").unwrap()),
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
    let p = fx
        .engine
        .authenticate(&with_key(ctx(route(&none), ip(82)), &qkey))
        .await
        .unwrap();
    fx.engine.admit(&p, &limits, None).await.unwrap();
    let r = fx.engine.admit(&p, &limits, None).await.unwrap_err();
    assert_eq!(r.code(), "quota_exhausted");
    assert_eq!(fx.usage(&qid, "limited:quota"), 1);
    fx.clock.advance(time::Duration::days(1));
    assert!(
        fx.engine.admit(&p, &limits, None).await.is_ok(),
        "refilled the next day"
    );
}

#[tokio::test]
async fn an_unreachable_shared_limiter_fails_closed() {
    let redis = crate::limit::redis::RedisLimiter::new(crate::limit::redis::RedisConfig {
        // Nothing listens on port 1: every call fails at once.
        topology: keyward_limit::Topology::Single("redis://127.0.0.1:1/".into()),
        timeout: Duration::from_millis(200),
        default_mode: crate::limit::OnLimiterFailure::FailClosed,
        ..Default::default()
    })
    .unwrap();
    let fx = fx_with(Some(crate::limit::Limiter::Redis(Arc::new(redis)))).await;
    let none: [Scope; 0] = [];
    let (kid, key) = fx
        .key(KeyOpts {
            policy: Policy {
                rate: Some(RateSpec::parse("5/min", None).unwrap()),
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
    let p = fx
        .engine
        .authenticate(&with_key(ctx(route(&none), ip(90)), &key))
        .await
        .unwrap();
    let limits = RouteLimits {
        route: "r".into(),
        ..Default::default()
    };
    let r = fx.engine.admit(&p, &limits, None).await.unwrap_err();
    assert_eq!(r.code(), "limiter_unavailable");
    assert_eq!(fx.usage(&kid, "limited:unavailable"), 1);
}

// ---- grants that outlive a request (tunnels) -------------------------------------------------

#[tokio::test]
async fn changes_reach_long_lived_grants() {
    use crate::Changed;
    use keyward_core::model::KeyUpdate;
    let fx = fx().await;
    let read = [scope("facts:read")];
    let mut changes = fx.engine.subscribe_changes();
    let granted = |p: Principal, c: &RequestContext<'_>| crate::Granted::new(p, c);

    // A key: scope taken away, then disabled, then revoked; each announced and re-checked.
    let (id, key) = fx.key(KeyOpts::default()).await;
    let c = with_key(ctx(route(&read), ip(100)), &key);
    let g = granted(fx.engine.authenticate(&c).await.unwrap(), &c);
    assert!(fx.engine.still_granted(&g).await);
    fx.engine
        .update_key(
            "test",
            &id,
            KeyUpdate {
                scopes: Some(vec![scope("other:read")]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let change = changes.recv().await.unwrap();
    assert_eq!(change, Changed::Key(id.clone()));
    assert!(change.concerns(&g.principal));
    assert!(
        !fx.engine.still_granted(&g).await,
        "the scope the tunnel needed is gone"
    );
    let (id2, key2) = fx.key(KeyOpts::default()).await;
    let c = with_key(ctx(route(&read), ip(100)), &key2);
    let g = granted(fx.engine.authenticate(&c).await.unwrap(), &c);
    fx.engine.revoke_key("test", &id2, None).await.unwrap();
    let change = changes.recv().await.unwrap();
    assert!(change.concerns(&g.principal) && !Changed::Key(id.clone()).concerns(&g.principal));
    assert!(!fx.engine.still_granted(&g).await);

    // Expiry on the clock.
    let (_, short) = fx
        .key(KeyOpts {
            expires_in: Some(30),
            ..Default::default()
        })
        .await;
    let c = with_key(ctx(route(&read), ip(101)), &short);
    let g = granted(fx.engine.authenticate(&c).await.unwrap(), &c);
    assert!(g.expires_at().is_some());
    assert!(fx.engine.still_granted(&g).await);
    fx.clock.advance(time::Duration::seconds(30));
    assert!(!fx.engine.still_granted(&g).await);

    // A token: revoked (the denylist grew), and its client disabled.
    let (cid, token) = fx.token(Policy::default(), None, None).await;
    let c = with_token(ctx(route(&read), ip(102)), &token, false);
    let g = granted(fx.engine.authenticate(&c).await.unwrap(), &c);
    while changes.try_recv().is_ok() {}
    assert!(fx.engine.still_granted(&g).await);
    fx.engine.revoke_token(&token, &cid).await.unwrap();
    let change = changes.recv().await.unwrap();
    assert_eq!(change, Changed::Tokens);
    assert!(change.concerns(&g.principal));
    assert!(!fx.engine.still_granted(&g).await);
    let (cid2, token2) = fx.token(Policy::default(), None, None).await;
    let c = with_token(ctx(route(&read), ip(102)), &token2, false);
    let g = granted(fx.engine.authenticate(&c).await.unwrap(), &c);
    fx.engine.set_client_disabled("test", &cid2, true).await.unwrap();
    let change = changes.recv().await.unwrap();
    assert_eq!(change, Changed::Client(cid2.clone()));
    assert!(change.concerns(&g.principal));
    assert!(!fx.engine.still_granted(&g).await);

    // The anonymous caller of a public route: nothing to take away.
    assert!(!Changed::All.concerns(&Principal::Anonymous));
}
