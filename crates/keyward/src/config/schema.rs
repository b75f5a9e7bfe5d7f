//! The configuration's schema: the serde structs of every section, with their defaults and
//! `deny_unknown_fields`. Validation is in `validate`, the runtime settings in `build`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keyward_core::decision::ScopeMode;
use keyward_engine::RateBy;
use keyward_store::CacheConfig;
use serde::{Deserialize, Deserializer, Serialize};

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
    /// Upstream groups routes name with `upstream = "NAME"`: targets, balancing, health, TLS.
    #[serde(default)]
    pub upstreams: Vec<keyward_upstream::GroupConfig>,
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
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub audit: AuditSection,
}

/// `[retention]`: how long usage rows, audit events and revoked or expired keys' digests are
/// kept, and how the background job deletes (small batches, never on the request path).
/// A horizon is a duration (`400d`, `2y`, `12h`) or `"forever"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Per-minute usage rows older than this go.
    #[serde(with = "keep")]
    pub usage: Option<Duration>,
    /// Audit events older than this go (after a signed checkpoint of the chain at the cut).
    #[serde(with = "keep")]
    pub audit: Option<Duration>,
    /// This long after a key's revocation or expiry its digest goes: the record stays as a
    /// tombstone (the id stays taken, the key can never verify again).
    #[serde(with = "keep")]
    pub revoked_keys: Option<Duration>,
    /// This long after a key became a tombstone, the tombstone itself goes (default: kept
    /// forever).
    #[serde(with = "keep")]
    pub tombstones: Option<Duration>,
    /// How often the server runs a retention pass (each pass also signs a checkpoint of the
    /// audit chain's head).
    #[serde(with = "dur")]
    pub interval: Duration,
    /// Rows per delete statement (1–10000).
    pub batch_size: u32,
    /// Pause between two batches, so that other writes interleave.
    #[serde(with = "dur")]
    pub batch_pause: Duration,
}

impl Default for RetentionSection {
    fn default() -> Self {
        let d = keyward_engine::retention::RetentionSettings::default();
        RetentionSection {
            usage: d.usage,
            audit: d.audit,
            revoked_keys: d.revoked_keys,
            tombstones: d.tombstones,
            interval: Duration::from_secs(3600),
            batch_size: d.batch_size,
            batch_pause: d.batch_pause,
        }
    }
}

/// Where audit events go besides the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSink {
    /// The store only.
    #[default]
    None,
    /// Also one JSON line per event appended to `audit.path`.
    File,
}

/// `[audit]`: a copy of every audit event outside the database (for shipping to a SIEM).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    pub sink: AuditSink,
    /// The file `sink = "file"` appends to (created mode 0600; relative to the configuration).
    pub path: Option<PathBuf>,
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
    /// One endpoint: `redis://[user:password@]host:port/db` (`rediss://` for TLS).
    pub url: String,
    /// Redis Cluster instead: seed nodes (`redis://host:port` or `rediss://…`); the rest of the
    /// cluster is discovered from them.
    pub cluster_nodes: Vec<String>,
    /// Sentinel instead: the sentinels (`redis://host:26379`; user, password and database of
    /// the first apply to the sentinels and to the master alike) …
    pub sentinel_nodes: Vec<String>,
    /// … and the name of the master they watch.
    pub sentinel_master: Option<String>,
    /// CA certificates (PEM) that Redis's certificates must chain to (`rediss://`; default:
    /// the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for Redis servers that require one; with
    /// `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key_file: Option<PathBuf>,
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
            cluster_nodes: Vec::new(),
            sentinel_nodes: Vec::new(),
            sentinel_master: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
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
    /// A listener for Envoy `ext_authz` over gRPC (`envoy.service.auth.v3.Authorization/Check`,
    /// plain HTTP/2), fenced like forward-auth (`forward_auth_peers`,
    /// `forward_auth_require_token`); none: off.
    pub grpc_listen: Option<SocketAddr>,
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
            grpc_listen: None,
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
    /// Gateway workers: each an event loop on a thread of its own with its own socket on
    /// `gateway.listen` (`SO_REUSEPORT`), as nginx's `worker_processes`; the first also runs
    /// the admin API, the other listeners and the background tasks. 0 = one per core.
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
    /// DPoP: proofs this node remembers for replay detection at most (20 to 40 bytes each).
    /// Each proof is kept for 2 × `dpop_iat_window` + 5 s at least; a full store refuses new
    /// proofs rather than forget one early.
    pub dpop_replay_capacity: usize,
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
            dpop_replay_capacity: keyward_engine::dpop::DEFAULT_REPLAY_CAPACITY,
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
    /// Host names this route answers (`api.example.com`, `*.example.com`), matched before
    /// paths; empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// No credential is checked (callers are anonymous; `rate_by = "client_ip"` limits them).
    #[serde(default)]
    pub public: bool,
    /// The route's prefix is removed before the upstream's base path is added.
    #[serde(default)]
    pub strip_prefix: bool,
    /// The client's `Host` goes to the upstream.
    #[serde(default)]
    pub preserve_host: bool,
    /// Headers set on / removed from the request to the upstream.
    #[serde(default)]
    pub request_headers: Option<HeaderRulesSection>,
    /// Headers set on / removed from the upstream's responses.
    #[serde(default)]
    pub response_headers: Option<HeaderRulesSection>,
    /// Until the upstream's response header (default `gateway.upstream_timeout`).
    #[serde(default, with = "opt_dur", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Connecting to the upstream, TLS included (default `gateway.connect_timeout`).
    #[serde(default, with = "opt_dur", skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Forward-auth: allowed answers on this route may be reused by a caching proxy for this
    /// long (`Cache-Control: private, max-age=N`, whole seconds, 1s to 300s); off by default.
    /// Refused with a route `rate` or `cost` (a reused answer would not count); see
    /// docs/FORWARD-AUTH.md for the answers that are never cacheable.
    #[serde(default, with = "opt_dur", skip_serializing_if = "Option::is_none")]
    pub decision_cache: Option<Duration>,
    /// Largest request body in bytes (413 beyond).
    #[serde(default)]
    pub max_body_size: Option<u64>,
    /// WebSocket handshakes are tunnelled.
    #[serde(default)]
    pub websocket: bool,
    /// A tunnel with no byte either way for this long is closed (default 60s).
    #[serde(default, with = "opt_dur", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// A tunnel is closed this long after it opened (default 24h).
    #[serde(default, with = "opt_dur", skip_serializing_if = "Option::is_none")]
    pub max_tunnel_duration: Option<Duration>,
    /// For a URL upstream: the protocol towards it (`http1`, `h2c`, `h2`, `auto`).
    #[serde(default)]
    pub protocol: Option<keyward_upstream::Protocol>,
    /// For an `https://` URL upstream: the CA bundle that signs its certificate.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// For an `https://` URL upstream: the name sent as SNI and checked in its certificate.
    #[serde(default)]
    pub server_name: Option<String>,
    /// For an `https://` URL upstream: a client certificate (mutual TLS), with its key.
    #[serde(default)]
    pub client_cert_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<std::path::PathBuf>,
}

/// `[routes.request_headers]` / `[routes.response_headers]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesSection {
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
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
    #[serde(default, with = "opt_dur", skip_serializing_if = "Option::is_none")]
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

/// Retention horizons: a positive duration (`400d`, `2y`) or `"forever"` (`None`).
mod keep {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("forever"),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "forever" {
            return Ok(None);
        }
        let v = humantime::parse_duration(s.trim()).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid retention {s:?}: use a duration such as 90d, 400d, 2y, or \"forever\""
            ))
        })?;
        if v.is_zero() {
            return Err(serde::de::Error::custom(
                "a retention must be positive (or \"forever\")",
            ));
        }
        Ok(Some(v))
    }
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
