//! keyward engine: the request pipeline without HTTP and the admin operations.
//!
//! The edge crates translate HTTP into calls of [`Engine`] and its results back into HTTP;
//! everything that decides lives here or below.
//!
//! - `lib.rs`: the engine, the request pipeline (`verify_key`, `admit`);
//! - [`admin`]: admin operations (each one audited);
//! - [`usage`]: per-key usage counters, aggregated per minute and written in batches;
//! - [`security`]: security events (canary use, bursts of failed authentications) and sinks;
//! - [`retention`]: the retention pass and the audit chain's checkpoints; [`audit_chain`]: its
//!   verification.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_tokens;
pub mod audit_chain;
pub mod audit_file;
mod binding;
mod clock;
pub mod dpop;
mod error;
pub mod leaks;
pub mod managed_webhooks;
pub mod mtls;
pub mod oauth;
mod pipeline;
#[cfg(test)]
mod pipeline_tests;
pub mod retention;
pub mod security;
pub mod sync;
pub mod token;
pub mod usage;
pub mod webhook;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::model::{AuditEvent, AuditFilter, Severity};
use keyward_core::policy::{Policy, QuotaSpec, RateSpec};
use keyward_core::{authorize, Decision, KeyEnv, KeyFormat, KeyKind, KeyRecord, Pepper, RequestFacts, Scope};
use keyward_limit::{Limiter, QuotaCheck, RateCheck};
use keyward_store::{CacheConfig, KeyCache, Lookup, Store};
use time::OffsetDateTime;

pub use binding::DpopFailure;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{EngineError, Rejection};
/// The limit crate (Redis backend, breaker), for the wiring.
pub use keyward_limit as limit;
pub use keyward_limit::{LimitState, OnLimiterFailure, Outcome};
pub use pipeline::{
    Changed, DpopHeader, Granted, KeyCredential, LimitSubject, Principal, RequestContext, RouteFacts, TokenCredential,
};
pub use security::EventSink;

/// What it takes to create a key.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// App id or name.
    pub app: String,
    pub name: Option<String>,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<OffsetDateTime>,
    pub env: KeyEnv,
    pub policy: Policy,
    /// A canary key: refused like an unknown key, and any use raises a security event.
    pub canary: bool,
    /// Only exchangeable for tokens at the token endpoint; refused on API routes.
    pub exchange_only: bool,
    /// Secret (default) or publishable.
    pub kind: KeyKind,
}

/// Who shares a route's rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateBy {
    /// Each key gets the route's rate (default).
    #[default]
    Key,
    /// All keys of an app share it.
    App,
    /// Everyone shares it.
    Global,
    /// Each client address gets the route's rate (public routes, or per address on top of
    /// the key's limits).
    ClientIp,
}

/// The limits a route adds to those of the key and its app.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    pub route: String,
    pub rate: Option<RateSpec>,
    pub rate_by: RateBy,
    /// Quota units one request costs (default 1).
    pub cost: u64,
}

/// Facts about a request that security events record (never a credential).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestMeta<'a> {
    pub ip: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub user_agent: Option<&'a str>,
}

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub cache: CacheConfig,
    /// Failed authentications from one address within a minute that raise a security event.
    pub failed_auth_burst: u32,
    /// How often usage counters are written to the store.
    pub usage_flush_interval: Duration,
    /// The rate every client address gets with a publishable key (on top of the key's own).
    pub publishable_rate: Option<RateSpec>,
    /// The public-safe scopes (those of routes that take publishable keys); `None`: any scope
    /// that does not read as a write.
    pub publishable_scopes: Option<Vec<Scope>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache: CacheConfig::default(),
            failed_auth_burst: 20,
            usage_flush_interval: Duration::from_secs(5),
            publishable_rate: RateSpec::parse("60/min", None).ok(),
            publishable_scopes: None,
        }
    }
}

/// The pipeline and the admin operations over one store.
pub struct Engine {
    store: Arc<dyn Store>,
    cache: KeyCache,
    pepper: Pepper,
    format: KeyFormat,
    clock: Arc<dyn Clock>,
    limiter: Limiter,
    usage: usage::UsageRecorder,
    security: security::Security,
    options: EngineOptions,
    /// Set while legacy (imported, unformatted) keys exist: only then are credentials that
    /// fail the format check looked up at all.
    legacy_present: std::sync::atomic::AtomicBool,
    /// The OAuth 2.0 token service, once enabled.
    pub(crate) oauth: std::sync::OnceLock<token::TokenService>,
    /// Clients and their secret digests, by client_id (dropped on every change).
    pub(crate) clients: oauth::ClientCache,
    /// Webhooks managed at run time, once enabled.
    pub(crate) webhooks: managed_webhooks::ManagedCell,
    /// Changes that may take rights away, made here or announced by another node (for state
    /// that outlives a request: open tunnels).
    changed: tokio::sync::broadcast::Sender<pipeline::Changed>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        pepper: Pepper,
        format: KeyFormat,
        cache: CacheConfig,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        Engine::with_options(
            store,
            pepper,
            format,
            EngineOptions {
                cache,
                ..Default::default()
            },
            clock,
        )
    }

    pub fn with_options(
        store: Arc<dyn Store>,
        pepper: Pepper,
        format: KeyFormat,
        options: EngineOptions,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        Engine {
            cache: KeyCache::new(store.clone(), options.cache),
            store,
            pepper,
            format,
            clock,
            limiter: Limiter::default(),
            usage: usage::UsageRecorder::default(),
            security: security::Security::new(options.failed_auth_burst),
            options,
            legacy_present: std::sync::atomic::AtomicBool::new(false),
            oauth: std::sync::OnceLock::new(),
            clients: oauth::ClientCache::new(),
            webhooks: std::sync::OnceLock::new(),
            changed: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Reads from the store whether legacy keys exist (call once at start).
    pub async fn load_legacy_flag(&self) -> Result<(), EngineError> {
        let n = self.store.count_legacy_keys().await?;
        self.legacy_present.store(n > 0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn set_legacy_present(&self) {
        self.legacy_present.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    pub fn pepper(&self) -> &Pepper {
        &self.pepper
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Replaces the (local) limiter, e.g. by limits shared through Redis. Call before the
    /// engine serves.
    pub fn with_limiter(mut self, limiter: Limiter) -> Engine {
        self.limiter = limiter;
        self
    }

    pub fn usage_recorder(&self) -> &usage::UsageRecorder {
        &self.usage
    }

    /// Adds a receiver of security events (e.g. webhooks).
    pub fn add_sink(&self, sink: Arc<dyn EventSink>) {
        self.security.add_sink(sink);
    }

    /// Now, to the second: the precision of every stored timestamp.
    pub fn now(&self) -> OffsetDateTime {
        let t = self.clock.now();
        t.replace_nanosecond(0).unwrap_or(t)
    }

    /// Now in nanoseconds since the Unix epoch (the limiter's clock).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.now().unix_timestamp_nanos()).unwrap_or(0)
    }

    /// Authenticates a presented API key and authorizes it for a request (lifecycle, address
    /// allowlists, scopes), accounting a refusal like [`Engine::authenticate`] does. The token
    /// endpoint's key exchange uses it; requests go through [`Engine::authenticate`].
    ///
    /// Order: parse (length, prefix, alphabet, checksum) → digest → cached lookup by digest
    /// → the pure decision. Malformed input never reaches the store.
    pub async fn verify_key(
        &self,
        presented: &str,
        facts: &RequestFacts<'_>,
        meta: &RequestMeta<'_>,
    ) -> Result<Arc<KeyRecord>, Rejection> {
        self.check_key(presented, facts, meta)
            .await
            .map_err(|d| self.account(d, meta.ip))
    }

    /// [`Engine::verify_key`] without the accounting.
    pub(crate) async fn check_key(
        &self,
        presented: &str,
        facts: &RequestFacts<'_>,
        meta: &RequestMeta<'_>,
    ) -> Result<Arc<KeyRecord>, pipeline::Denied> {
        use pipeline::Denied;
        let well_formed = match self.format.parse(presented) {
            Ok(_) => true,
            // Imported static secrets have no format: only while some exist, and only for
            // plausible secrets, is a malformed credential looked up, and only a legacy record
            // may match it.
            Err(e) => {
                if !self.legacy_present.load(std::sync::atomic::Ordering::Relaxed)
                    || !admin::plausible_legacy(presented)
                {
                    return Err(Denied::anonymous(Rejection::Malformed(e)));
                }
                false
            }
        };
        let digest = self.pepper.digest(presented.as_bytes());
        let record = match self.cache.lookup(&digest).await {
            Ok(Lookup::Found(r)) if well_formed || r.lifecycle.legacy => r,
            Ok(_) => return Err(Denied::anonymous(Rejection::Unknown)),
            Err(e) => return Err(Denied::anonymous(Rejection::Store(e))),
        };
        if record.lifecycle.canary {
            self.security.canary_used(self, &record, meta, self.now());
            return Err(Denied::anonymous(Rejection::Unknown));
        }
        match authorize(&record, facts, self.clock.now()) {
            Decision::Allow => Ok(record),
            Decision::Deny(d) => {
                let rejection = pipeline::rejection_for(&record.id, d);
                Err(Denied::of(&Principal::Key(record), rejection))
            }
        }
    }

    /// The limits of one request for `who`, all or nothing, counted in its usage.
    pub(crate) async fn limit(
        &self,
        who: &LimitSubject<'_>,
        route: &RouteLimits,
        client: Option<IpAddr>,
    ) -> Result<Outcome, Rejection> {
        let l = &self.limiter;
        // Empty until a limit applies: a request without limits allocates nothing here.
        let mut rates = Vec::new();
        let mut quotas = Vec::new();
        // Under Redis Cluster, a key's limits and its app's share the app's slot (one atomic
        // script); route-wide limits (global, per client address) have slots of their own.
        // Worked out once, and only with Redis: the local limiter decides all of a request's
        // limits in one step whatever their groups.
        let app_group = l.redis().map(|_| l.key(&["app-group", who.app_id]));
        let app = || app_group;
        if let (Some(spec), Some(ip), true) = (self.options.publishable_rate, client, who.publishable) {
            rates.push(RateCheck {
                name: "client",
                key: l.key(&["pk-client-rate", who.limit_id, &ip.to_string()]),
                spec,
                cost: 1,
                group: app(),
            });
        }
        if let Some(spec) = who.policy.rate {
            rates.push(RateCheck {
                name: "key",
                key: l.key(&["key-rate", who.limit_id]),
                spec,
                cost: 1,
                group: app(),
            });
        }
        if let Some(spec) = who.app_policy.and_then(|p| p.rate) {
            rates.push(RateCheck {
                name: "app",
                key: l.key(&["app-rate", who.app_id]),
                spec,
                cost: 1,
                group: app(),
            });
        }
        if let Some(spec) = route.rate {
            let (key, group) = match route.rate_by {
                RateBy::Key => (l.key(&["route-rate", &route.route, "key", who.limit_id]), app()),
                RateBy::App => (l.key(&["route-rate", &route.route, "app", who.app_id]), app()),
                RateBy::Global => (l.key(&["route-rate", &route.route]), None),
                RateBy::ClientIp => {
                    let ip = client.map(|ip| ip.to_string()).unwrap_or_default();
                    (l.key(&["route-rate", &route.route, "ip", &ip]), None)
                }
            };
            rates.push(RateCheck {
                name: "route",
                key,
                spec,
                cost: 1,
                group,
            });
        }
        let cost = route.cost.max(1);
        let quota = |name: &'static str, key, spec: QuotaSpec| QuotaCheck {
            name,
            key,
            spec,
            cost,
            group: app(),
        };
        if let Some(spec) = who.policy.quota {
            quotas.push(quota("key-quota", l.key(&["key-quota", who.limit_id]), spec));
        }
        if let Some(spec) = who.app_policy.and_then(|p| p.quota) {
            quotas.push(quota("app-quota", l.key(&["app-quota", who.app_id]), spec));
        }
        let outcome = if rates.is_empty() && quotas.is_empty() {
            // Nothing to decide (and nothing to ask Redis).
            Ok(Outcome::Allowed { states: Vec::new() })
        } else if let Limiter::Local(local) = l {
            Ok(local.check(&rates, &quotas, self.now_ns()))
        } else {
            // The shared limiter's call, boxed: its future stays out of every request's
            // future (moved whole at each await point above it) when limits are local.
            Box::pin(l.check(&rates, &quotas, self.now_ns(), l.on_failure(&route.route))).await
        };
        let code = match &outcome {
            Ok(Outcome::Allowed { .. }) => "allowed",
            Ok(Outcome::RateLimited { .. }) => "limited:rate",
            Ok(Outcome::QuotaExhausted { .. }) => "limited:quota",
            Err(_) => "limited:unavailable",
        };
        if who.counted {
            self.usage.record_as(who.id, who.app_id, code, self.now());
        }
        outcome.map_err(|u| Rejection::LimiterUnavailable {
            retry_after: u.retry_after,
        })
    }

    /// Appends an event to the audit log and passes security events to the sinks.
    pub async fn audit(&self, event: AuditEvent) -> Result<i64, EngineError> {
        let seq = self.store.append_audit(&event).await?;
        let stored = AuditEvent { seq, ..event };
        self.security.mirror(&stored);
        if stored.severity != Severity::Info {
            self.security.emit(&stored);
        }
        Ok(seq)
    }

    /// Adds a receiver of every stored audit event (the `[audit]` file sink).
    pub fn add_audit_mirror(&self, sink: Arc<dyn EventSink>) {
        self.security.add_mirror(sink);
    }

    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, EngineError> {
        Ok(self.store.list_audit(filter).await?)
    }

    /// Writes the buffered usage counters in one batch. Returns how many rows were written.
    pub async fn flush_usage(&self) -> Result<usize, EngineError> {
        self.usage.flush(self.store.as_ref()).await
    }

    /// Runs the background work until `stop` turns true: limiter sweeps every 10 s, usage
    /// flushes every `usage_flush_interval`, and a last flush on the way out.
    pub async fn maintenance(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        let mut flush = tokio::time::interval(self.options.usage_flush_interval);
        let mut keys = tokio::time::interval(Duration::from_secs(60));
        if let (Some(redis), Ok(_)) = (self.limiter.redis(), self.token_service()) {
            // Revocations made on other nodes, into this node's denylist as they happen.
            let engine = Arc::downgrade(&self);
            let sink = Arc::new(move |jti: String, exp: i64| {
                if let Some(e) = engine.upgrade() {
                    e.deny_locally(jti, exp);
                }
            });
            tokio::spawn(redis.clone().follow_denylist(sink, stop.clone()));
        }
        loop {
            tokio::select! {
                _ = sweep.tick() => { self.limiter.sweep(self.now_ns()); }
                _ = keys.tick() => {
                    self.prune_revoked_tokens();
                    if let Err(e) = self.signing_key_maintenance().await {
                        tracing::warn!(error = %e, "signing key maintenance failed");
                    }
                }
                _ = flush.tick() => {
                    if let Err(e) = self.flush_usage().await {
                        tracing::warn!(error = %e, "usage flush failed; counters kept for the next try");
                    }
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    if let Err(e) = self.flush_usage().await {
                        tracing::warn!(error = %e, "final usage flush failed");
                    }
                    return;
                }
            }
        }
    }
}
