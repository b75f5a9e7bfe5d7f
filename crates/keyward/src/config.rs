//! Configuration: TOML with unknown fields refused, every key overridable by a `KEYWARD_*`
//! environment variable (`KEYWARD_<SECTION>__<KEY>`, e.g. `KEYWARD_GATEWAY__LISTEN`;
//! top-level arrays such as `routes` as `KEYWARD_ROUTES` holding a TOML inline array).
//! Secrets never live in the file: the pepper and the admin token come from the environment
//! or from files readable by their owner only (mode 0600).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{HeaderName, Method, StatusCode};
use keyward_core::decision::ScopeMode;
use keyward_core::policy::{parse_cidr, RateSpec};
use keyward_core::secret::SecretString;
use keyward_core::{KeyFormat, Pepper, Scope};
use keyward_edge::gateway::Upstream;
use keyward_edge::{GatewayConfig, Route};
use keyward_engine::{RateBy, RouteLimits};
use keyward_store::CacheConfig;
use serde::{Deserialize, Deserializer, Serialize};

/// Environment variables with a `KEYWARD_` prefix that are not configuration overrides.
pub const RESERVED_ENV: &[&str] = &[
    "PEPPER",
    "ADMIN_TOKEN",
    "ADMIN_URL",
    "CONFIG",
    "LOG",
    "LOG_FORMAT",
    "KEK",
    "VERIFY_TOKEN",
];

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub keys: KeysSection,
    #[serde(default)]
    pub secrets: SecretsSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub oauth: OAuthSection,
    #[serde(default)]
    pub usage: UsageSection,
    #[serde(default)]
    pub security: SecuritySection,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub webhooks: Vec<WebhookSection>,
    #[serde(default)]
    pub leak_reports: LeakReportsSection,
    #[serde(default)]
    pub verify: VerifySection,
    /// Limits, the DPoP replay store and the token denylist shared through Redis (absent:
    /// everything per node).
    #[serde(default)]
    pub redis: Option<RedisSection>,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
}

/// What a route does when the shared limiter (Redis) cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimiterFailure {
    /// Admit without limits; never a 5xx.
    FailOpen,
    /// 503 `limiter_unavailable` with `Retry-After`.
    FailClosed,
    /// Per-node limits at limit / `redis.nodes_hint`.
    #[default]
    Local,
}

impl From<LimiterFailure> for keyward_engine::OnLimiterFailure {
    fn from(m: LimiterFailure) -> Self {
        match m {
            LimiterFailure::FailOpen => keyward_engine::OnLimiterFailure::FailOpen,
            LimiterFailure::FailClosed => keyward_engine::OnLimiterFailure::FailClosed,
            LimiterFailure::Local => keyward_engine::OnLimiterFailure::Local,
        }
    }
}

/// `[redis]`: cluster mode.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// `redis://[user:password@]host:port/db`.
    pub url: String,
    /// Namespace of this deployment's keys (every node of one cluster uses the same).
    pub prefix: String,
    /// Bound on every Redis call.
    #[serde(with = "dur")]
    pub timeout: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    #[serde(with = "dur")]
    pub breaker_cooldown: Duration,
    /// Number of gateway nodes (for `on_limiter_failure = "local"`: limit / nodes_hint each).
    pub nodes_hint: u64,
    /// Failure mode of routes that do not set `on_limiter_failure`.
    pub on_limiter_failure: LimiterFailure,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: String::new(),
            prefix: "keyward".into(),
            timeout: Duration::from_millis(50),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(1),
            nodes_hint: 1,
            on_limiter_failure: LimiterFailure::Local,
        }
    }
}

/// The verify API and forward-auth (keyward deciding for another proxy).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySection {
    /// A dedicated listener for `POST /v1/verify` and forward-auth (none: the verify API is
    /// served by the admin listener and forward-auth is off).
    pub listen: Option<SocketAddr>,
    /// File holding the service token (mode 0600). `KEYWARD_VERIFY_TOKEN` takes precedence.
    pub token_file: Option<PathBuf>,
    /// Direct peers allowed to call forward-auth.
    pub forward_auth_peers: Vec<String>,
    /// Forward-auth calls must also carry the service token in `x-keyward-verify-token`.
    pub forward_auth_require_token: bool,
}

impl Default for VerifySection {
    fn default() -> Self {
        VerifySection {
            listen: None,
            token_file: None,
            forward_auth_peers: vec!["127.0.0.0/8".into(), "::1/128".into()],
            forward_auth_require_token: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sqlite://PATH`, or a plain path to a SQLite file (relative to the config file), or
    /// `postgres://user@host:port/db` (cluster mode; `?options=-csearch_path%3Dschema` picks a
    /// schema).
    pub url: String,
    /// PostgreSQL: connections in the pool.
    pub max_connections: u32,
    /// PostgreSQL: bound on connecting and on waiting for a pooled connection.
    #[serde(with = "dur")]
    pub connect_timeout: Duration,
    /// PostgreSQL: longest time a cached key record is trusted without re-reading it (the
    /// bound on a lost change announcement); signing keys and the denylist are re-read as often.
    #[serde(with = "dur")]
    pub revalidate_interval: Duration,
    /// How long past its freshness a known key record is still served while the store is
    /// unreachable (revoked ones keep being refused).
    #[serde(with = "dur")]
    pub stale_ttl: Duration,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: "keyward.db".into(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(2),
            revalidate_interval: Duration::from_secs(30),
            stale_ttl: Duration::from_secs(300),
        }
    }
}

impl StoreSection {
    /// Whether the store is PostgreSQL (cluster mode).
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }

    pub fn pg_options(&self) -> keyward_store::PgOptions {
        keyward_store::PgOptions {
            max_connections: self.max_connections,
            connect_timeout: self.connect_timeout,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSection {
    /// Key prefix: 1–16 lowercase ASCII letters or digits.
    pub prefix: String,
}

impl Default for KeysSection {
    fn default() -> Self {
        KeysSection { prefix: "kw".into() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSection {
    /// File holding the pepper (mode 0600). `KEYWARD_PEPPER` takes precedence.
    pub pepper_file: Option<PathBuf>,
    /// File holding the admin token (mode 0600). `KEYWARD_ADMIN_TOKEN` takes precedence.
    pub admin_token_file: Option<PathBuf>,
    /// File holding the key-encryption key of the token signing keys (mode 0600).
    /// `KEYWARD_KEK` takes precedence.
    pub kek_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Worker threads of the runtime; 0 = one per core.
    #[serde(default)]
    pub worker_threads: usize,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish once the listeners
    /// stopped accepting; connections still open then are cut.
    #[serde(with = "dur")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            worker_threads: 0,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// `[metrics]`: Prometheus `/metrics`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve `/metrics` on the admin listener without an admin token (default: a token of
    /// any role is needed there).
    pub public: bool,
    /// A dedicated listener for `/metrics` (no token), `/healthz` and `/readyz`.
    pub listen: Option<SocketAddr>,
}

/// `[telemetry]`: OpenTelemetry trace export (needs a build with the `otel` feature).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// OTLP over HTTP/protobuf, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended);
    /// none: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            service_name: "keyward".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    pub listen: SocketAddr,
    pub credential_headers: Vec<String>,
    /// 401 (default) or 403 for malformed, unknown, revoked and expired credentials.
    pub invalid_credential_status: u16,
    #[serde(with = "dur")]
    pub connect_timeout: Duration,
    #[serde(with = "dur")]
    pub upstream_timeout: Duration,
    /// CIDRs of reverse proxies whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<String>,
    /// Keys expiring within this window get `Deprecation` and `Sunset` response headers.
    #[serde(with = "dur")]
    pub expiry_warning: Duration,
    /// The rate each client address gets with a publishable key (`none` turns it off).
    pub publishable_rate: String,
    /// PEM certificate chain (leaf first): with `tls_key_file`, the listener speaks TLS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM bundle of the CAs that client certificates must chain to.
    pub tls_client_ca_file: Option<PathBuf>,
    /// `none` (default), `optional` or `required` client certificates.
    pub tls_client_auth: keyward_edge::tls::ClientAuth,
    /// PEM revocation lists checked for client certificates.
    pub tls_crl_files: Vec<PathBuf>,
    /// Also accept client certificates that do not chain to `tls_client_ca_file` (self-signed
    /// ones, RFC 8705 `self_signed_tls_client_auth`); possession of the key is still proven.
    pub tls_accept_self_signed: bool,
    /// How often the certificate and key files are checked for changes (reloaded without restart).
    #[serde(with = "dur")]
    pub tls_reload_interval: Duration,
    /// How long a client has to complete the TLS handshake.
    #[serde(with = "dur")]
    pub tls_handshake_timeout: Duration,
    /// Open connections per listener (gateway, admin, verify) at most; beyond, new connections
    /// wait in the accept backlog until one ends.
    pub max_connections: usize,
    /// How long a client has to send a complete request head; on HTTP/1.1 also how long an idle
    /// keep-alive connection stays open. Every listener.
    #[serde(with = "dur")]
    pub header_read_timeout: Duration,
    /// Header fields per request at most (more: 431). Every listener.
    pub max_headers: usize,
    /// Bytes of a request head at most (more: 431; at least 8192). Every listener.
    pub max_header_bytes: usize,
    /// How long, from the arrival of its head, a request body that keyward reads itself (admin
    /// API, token endpoints, verify API) may take to arrive (later: 408). Every listener.
    #[serde(with = "dur")]
    pub body_read_timeout: Duration,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            credential_headers: vec!["x-api-key".into()],
            invalid_credential_status: 401,
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            expiry_warning: Duration::from_secs(7 * 86_400),
            publishable_rate: "60/min".into(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_client_auth: Default::default(),
            tls_crl_files: Vec::new(),
            tls_accept_self_signed: false,
            tls_reload_interval: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 8192,
            header_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    #[serde(with = "dur")]
    pub ttl: Duration,
    pub max_entries: u64,
    #[serde(with = "dur")]
    pub negative_ttl: Duration,
    pub negative_max_entries: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        let d = CacheConfig::default();
        CacheSection {
            ttl: d.ttl,
            max_entries: d.max_entries,
            negative_ttl: d.negative_ttl,
            negative_max_entries: d.negative_max_entries,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSection {
    /// How often usage counters are written to the store (in one batch).
    #[serde(with = "dur")]
    pub flush_interval: Duration,
}

impl Default for UsageSection {
    fn default() -> Self {
        UsageSection {
            flush_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Failed authentications from one address within a minute that raise a security event.
    pub failed_auth_burst: u32,
    /// How often keys expiring within `gateway.expiry_warning` are looked for
    /// (one `key.expiring_soon` event per key).
    #[serde(with = "dur")]
    pub expiring_check_interval: Duration,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            failed_auth_burst: 20,
            expiring_check_interval: Duration::from_secs(3600),
        }
    }
}

/// One `[[webhooks]]` entry: security events POSTed, signed, to `url`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSection {
    pub url: String,
    /// Name of the environment variable holding the signing secret.
    pub secret_env: Option<String>,
    /// File holding the signing secret (mode 0600).
    pub secret_file: Option<PathBuf>,
    /// Event kinds: exact kinds, prefixes ending in `.`, or `*`. Default: `security.` and
    /// `key.expiring_soon`.
    pub events: Option<Vec<String>>,
    #[serde(with = "dur")]
    pub timeout: Duration,
    pub max_attempts: u32,
    /// Wait before the first retry; doubles (with jitter) up to 5 minutes.
    #[serde(with = "dur")]
    pub backoff: Duration,
}

impl Default for WebhookSection {
    fn default() -> Self {
        WebhookSection {
            url: String::new(),
            secret_env: None,
            secret_file: None,
            events: None,
            timeout: Duration::from_secs(5),
            max_attempts: 6,
            backoff: Duration::from_secs(1),
        }
    }
}

/// `[leak_reports]`: GitHub secret-scanning reports on the gateway listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeakReportsSection {
    /// Path of the endpoint on the gateway listener.
    pub path: String,
    /// GitHub's `{"public_keys": [...]}` document; the endpoint is off without it.
    pub github_keys_file: Option<PathBuf>,
    /// `revoke` (default) or `flag`.
    pub action: keyward_engine::leaks::LeakAction,
}

impl Default for LeakReportsSection {
    fn default() -> Self {
        LeakReportsSection {
            path: keyward_edge::leaks::DEFAULT_PATH.into(),
            github_keys_file: None,
            action: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthSection {
    /// Run the token service (token, introspection, revocation, discovery, JWKS endpoints on
    /// the gateway listener). Needs a key-encryption key: `KEYWARD_KEK` or `secrets.kek_file`.
    pub enabled: bool,
    /// `iss` of the tokens; default `http://<gateway.listen>`.
    pub issuer: Option<String>,
    /// Audience of tokens that ask for none.
    pub audience: String,
    /// Algorithm of generated signing keys: EdDSA (default), ES256 or RS256.
    pub signing_alg: String,
    /// Clock skew tolerated for `exp`/`nbf` and client assertions.
    #[serde(with = "dur")]
    pub leeway: Duration,
    /// How long a new signing key is published in the JWKS before it signs.
    #[serde(with = "dur")]
    pub publish_delay: Duration,
    /// Rotate the signing key on this schedule (e.g. "30d"); none by default.
    pub rotate_every: Option<String>,
    /// DPoP (RFC 9449): how far a proof's `iat` may be from now, either way.
    #[serde(with = "dur")]
    pub dpop_iat_window: Duration,
    /// DPoP: require server nonces (`use_dpop_nonce` + `DPoP-Nonce`).
    pub dpop_require_nonce: bool,
    /// DPoP: how long a server nonce stays valid.
    #[serde(with = "dur")]
    pub dpop_nonce_lifetime: Duration,
    /// RFC 8705 `mtls_endpoint_aliases`: the base URL clients doing mutual TLS use, when it is
    /// not the issuer (e.g. a separate host name where a load balancer passes TLS through).
    pub mtls_base_url: Option<String>,
}

impl Default for OAuthSection {
    fn default() -> Self {
        OAuthSection {
            enabled: false,
            issuer: None,
            audience: "keyward".into(),
            signing_alg: "EdDSA".into(),
            leeway: Duration::from_secs(30),
            publish_delay: Duration::from_secs(300),
            rotate_every: None,
            dpop_iat_window: Duration::from_secs(60),
            dpop_require_nonce: false,
            dpop_nonce_lifetime: Duration::from_secs(300),
            mtls_base_url: None,
        }
    }
}

/// One `[[routes]]` entry. `Default` is for code that builds routes (demo, tests): set at least
/// `name`, `path_prefix`, `upstream` and `api_keys`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: String,
    pub path_prefix: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub upstream: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub scope_mode: ScopeMode,
    /// The route's own rate limit (`100/min`), shared as `rate_by` says.
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub rate_by: RateBy,
    /// Quota units one request costs (default 1).
    #[serde(default)]
    pub cost: Option<u64>,
    /// Accept access tokens (`Authorization: Bearer <jwt>`) issued by keyward's token service.
    #[serde(default)]
    pub tokens: bool,
    /// Accept API keys (default true).
    #[serde(default = "yes")]
    pub api_keys: bool,
    /// The audience tokens must carry on this route (default `oauth.audience`).
    #[serde(default)]
    pub audience: Option<String>,
    /// Accept callers by TLS client certificate alone: the certificate registered to a
    /// `tls_client_auth` or `self_signed_tls_client_auth` client makes the caller that client
    /// (its scopes, app and limits), like Kong's mtls-auth. Needs `gateway.tls_client_auth`.
    #[serde(default)]
    pub client_certificates: bool,
    /// With `[redis]`: what this route does when Redis cannot answer (default
    /// `redis.on_limiter_failure`, itself `local`).
    #[serde(default)]
    pub on_limiter_failure: Option<LimiterFailure>,
    /// Public-safe: publishable keys are accepted here (from their allowed origins); their
    /// scopes must be among this route's.
    #[serde(default)]
    pub publishable: bool,
    /// CORS for browsers calling this route from other origins.
    #[serde(default)]
    pub cors: Option<CorsSection>,
}

/// `[[routes]] cors = { … }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Exact origins (`https://shop.example`), or `["*"]` (never with credentials).
    pub allowed_origins: Vec<String>,
    /// Default: the route's methods (GET when the route takes any).
    #[serde(default)]
    pub allowed_methods: Vec<String>,
    /// Request headers pages may send, e.g. `["x-api-key", "authorization"]`.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers pages may read (keyward's RateLimit, Retry-After… always are).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight (default 10m, at most 24h).
    #[serde(default, with = "opt_dur")]
    pub max_age: Option<Duration>,
}

/// Optional durations as human strings.
mod opt_dur {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Some(super::dur::deserialize(d)?))
    }
}

fn yes() -> bool {
    true
}

/// Durations as human strings (`2s`, `500ms`, `1m`).
mod dur {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        let v = humantime::parse_duration(s.trim())
            .map_err(|_| serde::de::Error::custom(format!("invalid duration {s:?}: use e.g. 500ms, 2s, 1m")))?;
        if v.is_zero() {
            return Err(serde::de::Error::custom("a duration must be positive"));
        }
        Ok(v)
    }
}

/// A configuration error, with the file and (when known) the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("secret: {0}")]
    Secret(String),
}

impl Config {
    /// Loads `path` (if given) and applies `KEYWARD_*` overrides from `env`.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?;
                parse_table(&text, &p.display().to_string())?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(format!("configuration: {}", e.message())))?;
        if let Some(base) = path.and_then(Path::parent) {
            cfg.resolve_paths(base);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = self.secrets.pepper_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self.secrets.admin_token_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self.secrets.kek_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self.verify.token_file.as_mut() {
            abs(p);
        }
        for w in &mut self.webhooks {
            if let Some(p) = w.secret_file.as_mut() {
                abs(p);
            }
        }
        if let Some(p) = self.leak_reports.github_keys_file.as_mut() {
            abs(p);
        }
        let g = &mut self.gateway;
        for p in [&mut g.tls_cert_file, &mut g.tls_key_file, &mut g.tls_client_ca_file]
            .into_iter()
            .flatten()
        {
            abs(p);
        }
        for p in &mut g.tls_crl_files {
            abs(p);
        }
        if !self.store.url.contains("://") && !self.store.url.starts_with("sqlite:") {
            let mut p = PathBuf::from(&self.store.url);
            abs(&mut p);
            self.store.url = p.display().to_string();
        }
    }

    /// Everything that can be checked without touching the network (and, but for the TLS
    /// files being readable, the disk).
    pub fn validate(&self) -> Result<(), ConfigError> {
        KeyFormat::new(&self.keys.prefix).map_err(|e| ConfigError::Invalid(format!("keys.prefix: {e}")))?;
        self.gateway_config()?;
        self.http_limits()?;
        self.tls_settings()?;
        self.validate_webhooks()?;
        self.forward_auth_config()?;
        Ok(())
    }

    /// Connection limits of every listener, validated.
    pub fn http_limits(&self) -> Result<keyward_edge::serve::HttpLimits, ConfigError> {
        let g = &self.gateway;
        if g.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "gateway.max_connections must be at least 1".into(),
            ));
        }
        if g.header_read_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "gateway.header_read_timeout must be positive".into(),
            ));
        }
        if g.body_read_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "gateway.body_read_timeout must be positive".into(),
            ));
        }
        if g.max_headers == 0 {
            return Err(ConfigError::Invalid("gateway.max_headers must be at least 1".into()));
        }
        if g.max_header_bytes < keyward_edge::serve::MIN_HEADER_BYTES {
            return Err(ConfigError::Invalid(format!(
                "gateway.max_header_bytes must be at least {}",
                keyward_edge::serve::MIN_HEADER_BYTES
            )));
        }
        Ok(keyward_edge::serve::HttpLimits {
            max_connections: g.max_connections,
            header_read_timeout: g.header_read_timeout,
            max_headers: g.max_headers,
            max_header_bytes: g.max_header_bytes,
            body_read_timeout: g.body_read_timeout,
        })
    }

    /// Who may call forward-auth, validated.
    pub fn forward_auth_config(&self) -> Result<keyward_edge::verify::ForwardAuthConfig, ConfigError> {
        let peers = self
            .verify
            .forward_auth_peers
            .iter()
            .map(|c| parse_cidr(c).map_err(|e| ConfigError::Invalid(format!("verify.forward_auth_peers: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keyward_edge::verify::ForwardAuthConfig {
            peers,
            require_token: self.verify.forward_auth_require_token,
        })
    }

    /// Reads the verify service token: `KEYWARD_VERIFY_TOKEN`, else `verify.token_file`, else
    /// none (the verify API is then off). It must differ from the admin token.
    pub fn verify_token(&self, env: &[(String, String)]) -> Result<Option<SecretString>, ConfigError> {
        let present = env.iter().any(|(k, _)| k == "KEYWARD_VERIFY_TOKEN");
        if !present && self.verify.token_file.is_none() {
            if self.verify.forward_auth_require_token {
                return Err(ConfigError::Secret(
                    "verify.forward_auth_require_token needs KEYWARD_VERIFY_TOKEN or verify.token_file".into(),
                ));
            }
            return Ok(None);
        }
        let t = secret_from(
            env,
            "KEYWARD_VERIFY_TOKEN",
            self.verify.token_file.as_deref(),
            "verify.token_file",
        )?;
        if t.expose().len() < 16 {
            return Err(ConfigError::Secret(
                "the verify token must be at least 16 characters".into(),
            ));
        }
        Ok(Some(t))
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = format!("webhooks[{i}]");
            keyward_engine::webhook::parse_url(&w.url).map_err(|e| ConfigError::Invalid(format!("{at}: {e}")))?;
            if w.secret_env.is_some() == w.secret_file.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "{at}: set exactly one of secret_env and secret_file"
                )));
            }
            if w.max_attempts == 0 {
                return Err(ConfigError::Invalid(format!("{at}: max_attempts must be at least 1")));
            }
            if w.events
                .as_ref()
                .is_some_and(|e| e.is_empty() || e.iter().any(|k| k.is_empty()))
            {
                return Err(ConfigError::Invalid(format!(
                    "{at}: events must name at least one kind (or leave it out for the default)"
                )));
            }
        }
        let p = &self.leak_reports.path;
        if !p.starts_with('/') || p.contains(['{', '}', '*']) {
            return Err(ConfigError::Invalid(format!(
                "leak_reports.path: {p:?} must be a plain absolute path"
            )));
        }
        Ok(())
    }

    /// The gateway listener's TLS settings: `None` for plain HTTP. Checks that the certificate
    /// and key come together, that client certificates have a CA bundle, and that every file
    /// named can be read.
    pub fn tls_settings(&self) -> Result<Option<keyward_edge::tls::TlsSettings>, ConfigError> {
        use keyward_edge::tls::{ClientAuth, TlsSettings};
        let g = &self.gateway;
        let invalid = |m: &str| ConfigError::Invalid(format!("gateway.{m}"));
        let (cert_file, key_file) = match (&g.tls_cert_file, &g.tls_key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            (None, None) => {
                if g.tls_client_ca_file.is_some()
                    || g.tls_client_auth != ClientAuth::None
                    || !g.tls_crl_files.is_empty()
                    || g.tls_accept_self_signed
                {
                    return Err(invalid(
                        "tls_client_ca_file, tls_client_auth, tls_crl_files and tls_accept_self_signed need \
                         tls_cert_file and tls_key_file",
                    ));
                }
                return Ok(None);
            }
            _ => return Err(invalid("tls_cert_file and tls_key_file: set both or neither")),
        };
        match (g.tls_client_auth, &g.tls_client_ca_file) {
            (ClientAuth::None, Some(_)) => {
                return Err(invalid(
                    "tls_client_ca_file: set tls_client_auth = \"optional\" or \"required\" to use it",
                ))
            }
            (ClientAuth::None, None) if !g.tls_crl_files.is_empty() => {
                return Err(invalid("tls_crl_files: client certificates are off (tls_client_auth)"))
            }
            (ClientAuth::None, None) if g.tls_accept_self_signed => {
                return Err(invalid(
                    "tls_accept_self_signed: client certificates are off (tls_client_auth)",
                ))
            }
            (ClientAuth::Optional | ClientAuth::Required, None) if !g.tls_accept_self_signed => {
                return Err(invalid(
                    "tls_client_auth: client certificates need tls_client_ca_file (or tls_accept_self_signed = true)",
                ))
            }
            (_, None) if !g.tls_crl_files.is_empty() => {
                return Err(invalid("tls_crl_files: revocation lists need tls_client_ca_file"))
            }
            _ => {}
        }
        let readable = |key: &str, p: &Path| {
            std::fs::File::open(p)
                .map(drop)
                .map_err(|e| ConfigError::Invalid(format!("gateway.{key}: cannot read {}: {e}", p.display())))
        };
        readable("tls_cert_file", &cert_file)?;
        readable("tls_key_file", &key_file)?;
        if let Some(p) = &g.tls_client_ca_file {
            readable("tls_client_ca_file", p)?;
        }
        for p in &g.tls_crl_files {
            readable("tls_crl_files", p)?;
        }
        Ok(Some(TlsSettings {
            cert_file,
            key_file,
            client_ca_file: g.tls_client_ca_file.clone(),
            client_auth: g.tls_client_auth,
            crl_files: g.tls_crl_files.clone(),
            accept_self_signed: g.tls_accept_self_signed,
            reload_interval: g.tls_reload_interval,
            handshake_timeout: g.tls_handshake_timeout,
        }))
    }

    /// The webhooks with their secrets (`secret_env` read from `env`, or the 0600 file).
    pub fn webhook_configs(
        &self,
        env: &[(String, String)],
    ) -> Result<Vec<keyward_engine::webhook::WebhookConfig>, ConfigError> {
        self.validate_webhooks()?;
        let mut out = Vec::with_capacity(self.webhooks.len());
        for (i, w) in self.webhooks.iter().enumerate() {
            let secret = match (&w.secret_env, &w.secret_file) {
                (Some(var), _) => match env.iter().find(|(k, _)| k == var) {
                    Some((_, v)) if !v.trim().is_empty() => SecretString::new(v.trim().to_owned()),
                    _ => {
                        return Err(ConfigError::Secret(format!(
                            "webhooks[{i}].secret_env: {var} is not set or empty"
                        )))
                    }
                },
                (None, Some(file)) => read_secret_file(file)?,
                (None, None) => return Err(ConfigError::Secret(format!("webhooks[{i}]: no secret"))),
            };
            let mut c = keyward_engine::webhook::WebhookConfig::new(w.url.clone(), secret);
            if let Some(events) = &w.events {
                c.events = events.clone();
            }
            c.timeout = w.timeout;
            c.max_attempts = w.max_attempts;
            c.backoff = w.backoff;
            out.push(c);
        }
        Ok(out)
    }

    /// GitHub's signing keys, when `leak_reports.github_keys_file` is set.
    pub fn github_keys(&self) -> Result<Option<keyward_edge::leaks::GithubKeys>, ConfigError> {
        let Some(path) = &self.leak_reports.github_keys_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        keyward_edge::leaks::GithubKeys::parse(&text)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("leak_reports.github_keys_file {}: {e}", path.display())))
    }

    pub fn key_format(&self) -> Result<KeyFormat, ConfigError> {
        KeyFormat::new(&self.keys.prefix).map_err(|e| ConfigError::Invalid(format!("keys.prefix: {e}")))
    }

    pub fn cache_config(&self) -> CacheConfig {
        // Shared store: other nodes change it, so a record is trusted at most
        // `store.revalidate_interval` (announcements make it immediate; this is the backstop).
        let ttl = if self.store.is_postgres() {
            self.cache.ttl.min(self.store.revalidate_interval)
        } else {
            self.cache.ttl
        };
        CacheConfig {
            ttl,
            max_entries: self.cache.max_entries,
            negative_ttl: self.cache.negative_ttl,
            negative_max_entries: self.cache.negative_max_entries,
            stale_ttl: self.store.stale_ttl,
        }
    }

    /// The limiter: per node, or shared through Redis when `[redis]` is present.
    pub fn limiter(&self) -> Result<keyward_engine::limit::Limiter, ConfigError> {
        use keyward_engine::limit::{breaker::BreakerConfig, Limiter, RedisConfig, RedisLimiter};
        let invalid = ConfigError::Invalid;
        let Some(r) = &self.redis else {
            return Ok(Limiter::default());
        };
        if r.url.is_empty() {
            return Err(invalid("redis.url is required when [redis] is present".into()));
        }
        if r.breaker_failures == 0 {
            return Err(invalid("redis.breaker_failures must be at least 1".into()));
        }
        if r.nodes_hint == 0 {
            return Err(invalid("redis.nodes_hint must be at least 1".into()));
        }
        let cfg = RedisConfig {
            url: r.url.clone(),
            prefix: r.prefix.clone(),
            timeout: r.timeout,
            breaker: BreakerConfig {
                failures: r.breaker_failures,
                cooldown: r.breaker_cooldown,
            },
            nodes_hint: r.nodes_hint,
            route_modes: self
                .routes
                .iter()
                .filter_map(|rt| rt.on_limiter_failure.map(|m| (rt.name.clone(), m.into())))
                .collect(),
            default_mode: r.on_limiter_failure.into(),
        };
        RedisLimiter::new(cfg)
            .map(|l| Limiter::Redis(std::sync::Arc::new(l)))
            .map_err(invalid)
    }

    pub fn engine_options(&self) -> keyward_engine::EngineOptions {
        let mut public: Vec<keyward_core::Scope> = self
            .routes
            .iter()
            .filter(|r| r.publishable)
            .flat_map(|r| r.scopes.iter().filter_map(|s| keyward_core::Scope::new(s).ok()))
            .collect();
        public.sort();
        public.dedup();
        keyward_engine::EngineOptions {
            cache: self.cache_config(),
            failed_auth_burst: self.security.failed_auth_burst,
            usage_flush_interval: self.usage.flush_interval,
            // Validated by `gateway_config`; "none" turns the per-address rate off.
            publishable_rate: keyward_core::policy::RateSpec::parse(&self.gateway.publishable_rate, None).ok(),
            publishable_scopes: Some(public),
        }
    }

    /// The gateway's runtime configuration, validated.
    pub fn gateway_config(&self) -> Result<GatewayConfig, ConfigError> {
        let g = &self.gateway;
        let invalid = |m: String| ConfigError::Invalid(m);
        let invalid_credential_status = match g.invalid_credential_status {
            401 => StatusCode::UNAUTHORIZED,
            403 => StatusCode::FORBIDDEN,
            other => {
                return Err(invalid(format!(
                    "gateway.invalid_credential_status: {other} must be 401 or 403"
                )))
            }
        };
        if g.credential_headers.is_empty() {
            return Err(invalid("gateway.credential_headers: name at least one header".into()));
        }
        if g.publishable_rate != "none" {
            keyward_core::policy::RateSpec::parse(&g.publishable_rate, None)
                .map_err(|e| invalid(format!("gateway.publishable_rate: {e} (or \"none\")")))?;
        }
        let mut credential_headers = Vec::new();
        for h in &g.credential_headers {
            let name = HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| invalid(format!("gateway.credential_headers: {h:?} is not a valid header name")))?;
            if name == axum::http::header::AUTHORIZATION || name.as_str().starts_with("x-keyward-") {
                return Err(invalid(format!(
                    "gateway.credential_headers: {h:?} cannot carry API keys"
                )));
            }
            credential_headers.push(name);
        }
        let mut routes = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}] ({:?})", r.name);
            if r.name.is_empty() || !names.insert(r.name.clone()) {
                return Err(invalid(format!("{at}: route names must be present and unique")));
            }
            if !r.path_prefix.starts_with('/') {
                return Err(invalid(format!("{at}: path_prefix must start with '/'")));
            }
            let methods = r
                .methods
                .iter()
                .map(|m| {
                    let up = m.to_ascii_uppercase();
                    Method::from_bytes(up.as_bytes()).map_err(|_| invalid(format!("{at}: invalid method {m:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let upstream = Upstream::parse(&r.upstream).map_err(|e| invalid(format!("{at}: {e}")))?;
            let scopes = r
                .scopes
                .iter()
                .map(|s| Scope::new(s).map_err(|e| invalid(format!("{at}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let rate = match &r.rate {
                Some(spec) => Some(RateSpec::parse(spec, r.burst).map_err(|e| invalid(format!("{at}: {e}")))?),
                None if r.burst.is_some() => return Err(invalid(format!("{at}: burst needs a rate"))),
                None => None,
            };
            let cost = match r.cost {
                Some(0) => return Err(invalid(format!("{at}: cost must be at least 1"))),
                Some(c) if c > keyward_core::policy::MAX_COUNT => {
                    return Err(invalid(format!("{at}: cost is larger than 1,000,000,000")))
                }
                Some(c) => c,
                None => 1,
            };
            if !r.tokens && !r.api_keys && !r.client_certificates {
                return Err(invalid(format!(
                    "{at}: accepts neither API keys, tokens nor client certificates"
                )));
            }
            if r.tokens && !self.oauth.enabled {
                return Err(invalid(format!("{at}: tokens = true needs [oauth] enabled = true")));
            }
            routes.push(Route {
                name: r.name.clone(),
                path_prefix: r.path_prefix.clone(),
                methods,
                upstream,
                scopes,
                scope_mode: r.scope_mode,
                limits: RouteLimits {
                    route: r.name.clone(),
                    rate,
                    rate_by: r.rate_by,
                    cost,
                },
                tokens: r.tokens,
                api_keys: r.api_keys,
                client_certificates: r.client_certificates,
                publishable: r.publishable,
                cors: match &r.cors {
                    None => None,
                    Some(c) => {
                        let methods = if c.allowed_methods.is_empty() {
                            if r.methods.is_empty() {
                                vec!["GET".to_owned()]
                            } else {
                                r.methods.clone()
                            }
                        } else {
                            c.allowed_methods.clone()
                        };
                        let max_age = c.max_age.unwrap_or(Duration::from_secs(600)).as_secs();
                        Some(
                            keyward_edge::cors::Cors::new(
                                &c.allowed_origins,
                                &methods,
                                &c.allowed_headers,
                                &c.expose_headers,
                                c.allow_credentials,
                                u32::try_from(max_age).unwrap_or(u32::MAX),
                            )
                            .map_err(|e| invalid(format!("{at}: {e}")))?,
                        )
                    }
                },
                audience: r.audience.clone().unwrap_or_else(|| self.oauth.audience.clone()),
                options: Default::default(),
            });
        }
        let trusted_proxies = g
            .trusted_proxies
            .iter()
            .map(|c| parse_cidr(c).map_err(|e| invalid(format!("gateway.trusted_proxies: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if self.security.failed_auth_burst == 0 {
            return Err(invalid("security.failed_auth_burst: must be at least 1".into()));
        }
        let client_certificates = g.tls_client_auth != keyward_edge::tls::ClientAuth::None;
        if let Some(r) = self.routes.iter().find(|r| r.client_certificates) {
            if !client_certificates {
                return Err(ConfigError::Invalid(format!(
                    "route {:?}: client_certificates = true needs gateway.tls_client_auth = \"optional\" or \"required\"",
                    r.name
                )));
            }
        }
        Ok(GatewayConfig {
            client_certificates,
            expiry_warning: g.expiry_warning,
            trusted_proxies,
            routes,
            credential_headers,
            invalid_credential_status,
            connect_timeout: g.connect_timeout,
            upstream_timeout: g.upstream_timeout,
        })
    }

    /// Reads the pepper: `KEYWARD_PEPPER`, else `secrets.pepper_file`.
    pub fn pepper(&self, env: &[(String, String)]) -> Result<Pepper, ConfigError> {
        let text = secret_from(
            env,
            "KEYWARD_PEPPER",
            self.secrets.pepper_file.as_deref(),
            "secrets.pepper_file",
        )?;
        Pepper::from_text(text.expose()).map_err(|e| ConfigError::Secret(e.to_string()))
    }

    /// Reads the key-encryption key: `KEYWARD_KEK`, else `secrets.kek_file`.
    pub fn kek(&self, env: &[(String, String)]) -> Result<keyward_token::Kek, ConfigError> {
        let t = secret_from(env, "KEYWARD_KEK", self.secrets.kek_file.as_deref(), "secrets.kek_file")?;
        keyward_token::Kek::parse(t.expose()).map_err(|e| ConfigError::Secret(format!("key-encryption key: {e}")))
    }

    /// The token service's settings, validated.
    pub fn oauth_config(&self) -> Result<keyward_engine::token::OAuthConfig, ConfigError> {
        let o = &self.oauth;
        let invalid = |m: String| ConfigError::Invalid(m);
        let issuer = match &o.issuer {
            Some(i) => {
                let i = i.trim_end_matches('/').to_owned();
                if !(i.starts_with("https://") || i.starts_with("http://")) || i.contains('?') || i.contains('#') {
                    return Err(invalid("oauth.issuer: an http(s) URL without query or fragment".into()));
                }
                i
            }
            None => format!("http://{}", self.gateway.listen),
        };
        let signing_alg = keyward_token::Algorithm::from_name(&o.signing_alg)
            .filter(|a| {
                matches!(
                    a,
                    keyward_token::Algorithm::EdDSA | keyward_token::Algorithm::ES256 | keyward_token::Algorithm::RS256
                )
            })
            .ok_or_else(|| invalid("oauth.signing_alg: EdDSA, ES256 or RS256".into()))?;
        let check_aud = |a: &str| -> Result<String, ConfigError> {
            if a.is_empty() || a.len() > 256 || a.chars().any(|c| c.is_control() || c == ' ') {
                return Err(invalid(format!("audience {a:?}: 1 to 256 characters without spaces")));
            }
            Ok(a.to_owned())
        };
        let default_audience = check_aud(&o.audience)?;
        let mut audiences = vec![default_audience.clone()];
        for r in &self.routes {
            if let Some(a) = &r.audience {
                let a = check_aud(a)?;
                if !audiences.contains(&a) {
                    audiences.push(a);
                }
            }
        }
        let rotate_every = match &o.rotate_every {
            Some(r) => Some(
                humantime::parse_duration(r)
                    .ok()
                    .filter(|d| d.as_secs() >= 3600)
                    .ok_or_else(|| invalid("oauth.rotate_every: a duration of at least 1h".into()))?,
            ),
            None => None,
        };
        Ok(keyward_engine::token::OAuthConfig {
            issuer,
            default_audience,
            audiences,
            signing_alg,
            leeway: o.leeway,
            publish_delay: o.publish_delay,
            rotate_every,
            mtls_base_url: match &o.mtls_base_url {
                None => None,
                Some(u) if (u.starts_with("https://") || u.starts_with("http://")) && !u.ends_with('/') => {
                    Some(u.clone())
                }
                Some(_) => {
                    return Err(invalid(
                        "oauth.mtls_base_url: an http(s) URL without a trailing slash".into(),
                    ))
                }
            },
            dpop: keyward_engine::dpop::DpopConfig {
                iat_window: o.dpop_iat_window,
                require_nonce: o.dpop_require_nonce,
                nonce_lifetime: o.dpop_nonce_lifetime,
            },
        })
    }

    /// Reads the admin token: `KEYWARD_ADMIN_TOKEN`, else `secrets.admin_token_file`.
    pub fn admin_token(&self, env: &[(String, String)]) -> Result<SecretString, ConfigError> {
        let t = secret_from(
            env,
            "KEYWARD_ADMIN_TOKEN",
            self.secrets.admin_token_file.as_deref(),
            "secrets.admin_token_file",
        )?;
        if t.expose().len() < 16 {
            return Err(ConfigError::Secret(
                "the admin token must be at least 16 characters".into(),
            ));
        }
        Ok(t)
    }
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .map(|l| format!(" at line {l}"))
            .unwrap_or_default();
        ConfigError::Invalid(format!("{origin}{line}: {}", e.message()))
    })
}

/// Applies `KEYWARD_<SECTION>__<KEY>=value` overrides. Values are read as TOML when they
/// parse as a TOML value (numbers, booleans, arrays, inline tables), else as strings.
pub fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("KEYWARD_") else {
            continue;
        };
        if RESERVED_ENV.contains(&rest) || rest.starts_with("TEST_") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid(format!("{k}: malformed override name")));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.clone()));
        let mut cur = &mut *table;
        for (i, seg) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur.insert(seg.clone(), value.clone());
            } else {
                let entry = cur
                    .entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                cur = entry
                    .as_table_mut()
                    .ok_or_else(|| ConfigError::Invalid(format!("{k}: {seg} is not a section")))?;
            }
        }
    }
    Ok(())
}

fn secret_from(
    env: &[(String, String)],
    var: &str,
    file: Option<&Path>,
    key: &str,
) -> Result<SecretString, ConfigError> {
    if let Some((_, v)) = env.iter().find(|(k, _)| k == var) {
        let v = v.trim();
        if v.is_empty() {
            return Err(ConfigError::Secret(format!("{var} is set but empty")));
        }
        return Ok(SecretString::new(v.to_owned()));
    }
    let Some(path) = file else {
        return Err(ConfigError::Secret(format!("set {var} or {key} in the configuration")));
    };
    read_secret_file(path)
}

/// Reads a secret file, refusing files that others could read.
pub fn read_secret_file(path: &Path) -> Result<SecretString, ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta =
            std::fs::metadata(path).map_err(|e| ConfigError::Secret(format!("cannot read {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::Secret(format!(
                "{} has mode {mode:o}: secret files must be readable by their owner only (chmod 600)",
                path.display()
            )));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Secret(format!("cannot read {}: {e}", path.display())))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(ConfigError::Secret(format!("{} is empty", path.display())));
    }
    Ok(SecretString::new(t.to_owned()))
}

/// Writes a secret file with mode 0600, refusing to overwrite.
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.gateway.listen.port(), 8080);
        assert_eq!(c.keys.prefix, "kw");
    }

    #[test]
    fn env_overrides_every_kind_of_value() {
        let c = Config::load(
            None,
            &env(&[
                ("KEYWARD_GATEWAY__LISTEN", "127.0.0.1:9999"),
                ("KEYWARD_GATEWAY__INVALID_CREDENTIAL_STATUS", "403"),
                ("KEYWARD_GATEWAY__CREDENTIAL_HEADERS", "[\"x-key\", \"x-api-key\"]"),
                ("KEYWARD_CACHE__TTL", "5s"),
                ("KEYWARD_KEYS__PREFIX", "acme"),
                (
                    "KEYWARD_ROUTES",
                    "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://127.0.0.1:1\"}]",
                ),
                ("KEYWARD_PEPPER", "not a config key"),
                ("KEYWARD_TEST_POSTGRES_URL", "ignored"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.gateway.listen.port(), 9999);
        assert_eq!(c.gateway.invalid_credential_status, 403);
        assert_eq!(c.gateway.credential_headers, vec!["x-key", "x-api-key"]);
        assert_eq!(c.cache.ttl, Duration::from_secs(5));
        assert_eq!(c.keys.prefix, "acme");
        assert_eq!(c.routes.len(), 1);
        // The body read deadline reaches every listener's limits.
        let c = Config::load(None, &env(&[("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "7s")])).unwrap();
        assert_eq!(c.http_limits().unwrap().body_read_timeout, Duration::from_secs(7));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[gateway]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap();
        let e = Config::load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        std::fs::write(&p, "[gateway]\nlisten = \n").unwrap();
        let e = Config::load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = Config::load(None, &env(&[("KEYWARD_NOPE__X", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (k, v) in [
            ("KEYWARD_GATEWAY__INVALID_CREDENTIAL_STATUS", "500"),
            ("KEYWARD_GATEWAY__CONNECT_TIMEOUT", "0s"),
            ("KEYWARD_GATEWAY__CONNECT_TIMEOUT", "soon"),
            ("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "0s"),
            ("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "-5s"),
            ("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "\"30\""),
            ("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "99999999999999999999s"),
            ("KEYWARD_GATEWAY__CREDENTIAL_HEADERS", "[\"bad header\"]"),
            ("KEYWARD_GATEWAY__CREDENTIAL_HEADERS", "[\"authorization\"]"),
            ("KEYWARD_KEYS__PREFIX", "Bad_Prefix"),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"r\", upstream = \"http://h:1\"}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"https://h:1\"}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", scopes = [\"a b\"]}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", rate = \"0/min\"}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", rate = \"10/fortnight\"}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", burst = 5}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", cost = 0}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", rate_by = \"planet\"}]",
            ),
            ("KEYWARD_GATEWAY__TRUSTED_PROXIES", "[\"10.0.0.0/33\"]"),
            ("KEYWARD_GATEWAY__TRUSTED_PROXIES", "[\"fe80::1%eth0/64\"]"),
            ("KEYWARD_GATEWAY__LISTEN", "nowhere"),
        ] {
            assert!(Config::load(None, &env(&[(k, v)])).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn tls_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&key, "x").unwrap();
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        let missing = dir.path().join("nope.pem").display().to_string();
        let ok = Config::load(
            None,
            &env(&[
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", &c),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", &k),
            ]),
        )
        .unwrap();
        let t = ok.tls_settings().unwrap().unwrap();
        assert_eq!(t.reload_interval, Duration::from_secs(30));
        assert_eq!(t.client_auth, keyward_edge::tls::ClientAuth::None);
        assert!(Config::default().tls_settings().unwrap().is_none());
        for pairs in [
            vec![("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str())],
            vec![("KEYWARD_GATEWAY__TLS_KEY_FILE", k.as_str())],
            vec![
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str()),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", missing.as_str()),
            ],
            vec![
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str()),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", k.as_str()),
                ("KEYWARD_GATEWAY__TLS_CLIENT_AUTH", "required"),
            ],
            vec![
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str()),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", k.as_str()),
                ("KEYWARD_GATEWAY__TLS_CLIENT_AUTH", "sometimes"),
            ],
            vec![
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str()),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", k.as_str()),
                ("KEYWARD_GATEWAY__TLS_CLIENT_AUTH", "optional"),
                ("KEYWARD_GATEWAY__TLS_CLIENT_CA_FILE", missing.as_str()),
            ],
            vec![("KEYWARD_GATEWAY__TLS_CLIENT_AUTH", "optional")],
        ] {
            assert!(Config::load(None, &env(&pairs)).is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn secret_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pepper");
        write_secret_file(&p, &"a".repeat(64)).unwrap();
        assert!(read_secret_file(&p).is_ok());
        assert!(write_secret_file(&p, "x").is_err(), "never overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = read_secret_file(&p).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
        }
    }
}
