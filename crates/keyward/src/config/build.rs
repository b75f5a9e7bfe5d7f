//! Building the runtime: a validated configuration turned into the gateway's, the engine's,
//! the listeners' and the token service's settings. Each builder checks what it builds.

use std::path::Path;

use keyward_core::policy::parse_cidr;
use keyward_core::KeyFormat;
use keyward_store::CacheConfig;

use super::{Config, ConfigError};

/// Most gateway workers `server.worker_threads` may ask for: each is a thread with an event
/// loop and a socket of its own, so a typo (`20000`) must not start twenty thousand threads.
pub const MAX_GATEWAY_WORKERS: usize = 1024;

impl Config {
    /// How many gateway workers `server.worker_threads` asks for (0: one per core), validated.
    pub fn gateway_workers(&self) -> Result<usize, ConfigError> {
        match self.server.worker_threads {
            0 => Ok(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
            n if n > MAX_GATEWAY_WORKERS => Err(ConfigError::Invalid(format!(
                "server.worker_threads must be at most {MAX_GATEWAY_WORKERS} (0: one per core), not {n}"
            ))),
            n => Ok(n),
        }
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
            let secret = self.webhook_secret(i, env)?;
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

    /// The limiter: per node, or shared through Redis when `[redis]` is present (one endpoint,
    /// a Cluster or Sentinel, with TLS for `rediss://`; the TLS files are read here, so that
    /// `check-config` names an unreadable or malformed one).
    pub fn limiter(&self) -> Result<keyward_engine::limit::Limiter, ConfigError> {
        use keyward_engine::limit::{breaker::BreakerConfig, Limiter, RedisConfig, RedisLimiter, RedisTls, Topology};
        let invalid = ConfigError::Invalid;
        let Some(r) = &self.redis else {
            return Ok(Limiter::default());
        };
        let topology = match (
            !r.url.is_empty(),
            !r.cluster_nodes.is_empty(),
            !r.sentinel_nodes.is_empty(),
        ) {
            (true, false, false) => Topology::Single(r.url.clone()),
            (false, true, false) => Topology::Cluster(r.cluster_nodes.clone()),
            (false, false, true) => Topology::Sentinel {
                nodes: r.sentinel_nodes.clone(),
                master: r
                    .sentinel_master
                    .clone()
                    .ok_or_else(|| invalid("redis.sentinel_master is required with redis.sentinel_nodes".into()))?,
            },
            (false, false, false) => {
                return Err(invalid(
                    "redis.url, redis.cluster_nodes or redis.sentinel_nodes is required when [redis] is present".into(),
                ))
            }
            _ => {
                return Err(invalid(
                    "redis.url, redis.cluster_nodes and redis.sentinel_nodes: set exactly one".into(),
                ))
            }
        };
        if r.sentinel_master.is_some() && !matches!(topology, Topology::Sentinel { .. }) {
            return Err(invalid("redis.sentinel_master: only with redis.sentinel_nodes".into()));
        }
        if r.breaker_failures == 0 {
            return Err(invalid("redis.breaker_failures must be at least 1".into()));
        }
        if r.nodes_hint == 0 {
            return Err(invalid("redis.nodes_hint must be at least 1".into()));
        }
        let read = |key: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| invalid(format!("redis.{key}: cannot read {}: {}", p.display(), e.kind())))
        };
        let tls = RedisTls {
            ca_pem: r.ca_file.as_deref().map(|p| read("ca_file", p)).transpose()?,
            client: match (&r.client_cert_file, &r.client_key_file) {
                (Some(c), Some(k)) => Some((read("client_cert_file", c)?, read("client_key_file", k)?)),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "redis.client_cert_file and redis.client_key_file: set both or neither".into(),
                    ))
                }
            },
        };
        let cfg = RedisConfig {
            topology,
            tls,
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

    /// The retention pass's settings, validated.
    pub fn retention_settings(&self) -> Result<keyward_engine::retention::RetentionSettings, ConfigError> {
        let r = &self.retention;
        if !(1..=10_000).contains(&r.batch_size) {
            return Err(ConfigError::Invalid(format!(
                "retention.batch_size: {} is out of range (1 to 10000)",
                r.batch_size
            )));
        }
        if r.interval < std::time::Duration::from_secs(1) {
            return Err(ConfigError::Invalid("retention.interval: at least 1s".into()));
        }
        Ok(keyward_engine::retention::RetentionSettings {
            usage: r.usage,
            audit: r.audit,
            revoked_keys: r.revoked_keys,
            tombstones: r.tombstones,
            batch_size: r.batch_size,
            batch_pause: r.batch_pause,
        })
    }

    /// Where the file sink of `[audit]` appends, if any.
    pub fn audit_file(&self) -> Result<Option<std::path::PathBuf>, ConfigError> {
        match (self.audit.sink, &self.audit.path) {
            (super::AuditSink::None, None) => Ok(None),
            (super::AuditSink::None, Some(_)) => Err(ConfigError::Invalid(
                "audit.path is set but audit.sink is not \"file\"".into(),
            )),
            (super::AuditSink::File, None) => {
                Err(ConfigError::Invalid("audit.sink = \"file\" needs audit.path".into()))
            }
            (super::AuditSink::File, Some(p)) => Ok(Some(p.clone())),
        }
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
        let replay = keyward_engine::dpop::REPLAY_CAPACITY_RANGE;
        let replay_capacity = Some(o.dpop_replay_capacity)
            .filter(|n| replay.contains(n))
            .ok_or_else(|| {
                invalid(format!(
                    "oauth.dpop_replay_capacity: {} proofs is outside {}..={} (20 to 40 bytes each)",
                    o.dpop_replay_capacity,
                    replay.start(),
                    replay.end()
                ))
            })?;
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
                replay_capacity,
            },
        })
    }
}
