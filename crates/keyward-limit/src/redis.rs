//! Limits shared by a cluster of nodes through Redis, and what happens when Redis fails.
//!
//! [`RedisLimiter::check`] runs one Lua script (`gcra.lua`, sent with EVALSHA and loaded on
//! `NOSCRIPT`) that reads every limit of the request, decides them all with Redis `TIME` as the
//! clock, and writes only when all allow: the same semantics as [`LocalLimiter::check`]
//! (all-or-nothing, quotas set and never stacked at refill, costs), with microsecond resolution.
//! Rate keys expire when their bucket is full again, quota keys when their period ends.
//!
//! Keys are `kw:{<prefix>}:r:<hex>` (rates), `kw:{<prefix>}:q:<hex>` (quotas),
//! `kw:{<prefix>}:j:<jkt>:<jti>` (DPoP replay) and `kw:{<prefix>}:d:<jti>` (revoked tokens);
//! the denylist fans out on the channel `kw:{<prefix>}:deny`. With one endpoint or Sentinel
//! every key carries the hash tag `{<prefix>}`. Under Redis Cluster the state spreads over the
//! shards: limit keys are tagged by their group, `kw:{<prefix>:<group hex>}:r:<hex>` (a key's
//! and its app's limits share their app's tag, so their decision stays one script; a
//! route-wide limit has a tag of its own), DPoP claims by the proof
//! (`kw:{<prefix>:<hex>}:j:<jkt>:<jti>`); the denylist keeps `{<prefix>}` (revocations are rare,
//! and one slot lets a node read the whole list). A request whose limits span several slots is
//! decided slot by slot, its app's slot first; when a later slot refuses, what the earlier ones
//! took is given back (`refund.lua`), so nothing is consumed by a refused request, but a
//! concurrent request may see the taken units for the length of one round trip (it may be
//! refused where an atomic decision would have admitted it: never the other way round).
//!
//! Every call is bounded by `timeout` and goes through a [`Breaker`]; [`Limiter::check`] applies
//! the route's [`OnLimiterFailure`] when a call fails or the breaker is open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::{AsyncCommands, RedisResult};
use keyward_core::policy::{QuotaSpec, RateSpec, Refill};

use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::topology::{describe, kind_of, lock, Conn, Link, RedisTls, Topology};
use crate::{ceil_secs, LimitKey, LimitState, LocalLimiter, Outcome, QuotaCheck, RateCheck};

const SCRIPT: &str = concat!(include_str!("clock.lua"), include_str!("gcra.lua"));
const REFUND: &str = concat!(include_str!("clock.lua"), include_str!("refund.lua"));

/// Settings of the Redis backend (`[redis]`).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// One endpoint (`redis.url`), a Redis Cluster (`redis.cluster_nodes`) or Sentinel
    /// (`redis.sentinel_nodes` + `redis.sentinel_master`).
    pub topology: Topology,
    /// CA and client certificate for `rediss://` URLs.
    pub tls: RedisTls,
    /// Namespace of this deployment's keys (the hash tag).
    pub prefix: String,
    /// Bound on every Redis call, connection included.
    pub timeout: Duration,
    pub breaker: BreakerConfig,
    /// Number of gateway nodes: with `on_limiter_failure = "local"` each node enforces
    /// limit / `nodes_hint` on its own while Redis is unavailable.
    pub nodes_hint: u64,
    /// `on_limiter_failure` of routes that set one, by route name.
    pub route_modes: std::collections::HashMap<String, OnLimiterFailure>,
    /// For every other route (and the verify API).
    pub default_mode: OnLimiterFailure,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            topology: Topology::default(),
            tls: RedisTls::default(),
            prefix: "keyward".into(),
            timeout: Duration::from_millis(50),
            breaker: BreakerConfig::default(),
            nodes_hint: 1,
            route_modes: std::collections::HashMap::new(),
            default_mode: OnLimiterFailure::default(),
        }
    }
}

/// What a route does when the shared limiter cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnLimiterFailure {
    /// Admit without limits (never a 5xx).
    FailOpen,
    /// Refuse with 503 `limiter_unavailable` and `Retry-After`.
    FailClosed,
    /// Enforce limit / `nodes_hint` on this node alone (the default).
    #[default]
    Local,
}

impl OnLimiterFailure {
    pub fn parse(s: &str) -> Option<OnLimiterFailure> {
        match s {
            "fail_open" => Some(OnLimiterFailure::FailOpen),
            "fail_closed" => Some(OnLimiterFailure::FailClosed),
            "local" => Some(OnLimiterFailure::Local),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            OnLimiterFailure::FailOpen => "fail_open",
            OnLimiterFailure::FailClosed => "fail_closed",
            OnLimiterFailure::Local => "local",
        }
    }
}

/// The limiter could not decide and the route fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterUnavailable {
    pub retry_after: Duration,
}

/// Why a Redis call failed.
#[derive(Debug)]
pub enum RedisCallError {
    Timeout,
    BreakerOpen,
    Redis(::redis::RedisError),
    /// The script answered something else than expected.
    Protocol,
}

impl std::error::Error for RedisCallError {}

impl std::fmt::Display for RedisCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisCallError::Timeout => f.write_str("redis call timed out"),
            RedisCallError::BreakerOpen => f.write_str("redis circuit breaker is open"),
            RedisCallError::Redis(e) => write!(f, "redis error: {}", describe(e)),
            RedisCallError::Protocol => f.write_str("unexpected answer from redis"),
        }
    }
}

/// Counters of the Redis backend (read by metrics and health endpoints).
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Calls that reached Redis (or tried to).
    pub calls: AtomicU64,
    /// Calls that failed with an error.
    pub errors: AtomicU64,
    /// Calls that ran out of time.
    pub timeouts: AtomicU64,
    /// Calls not made because the breaker was open.
    pub short_circuits: AtomicU64,
    /// Decisions taken by each failure mode.
    pub fail_open: AtomicU64,
    pub fail_closed: AtomicU64,
    pub local_fallback: AtomicU64,
    /// Of those, refused because Redis had refused the same limit and the refusal had not
    /// lapsed yet.
    pub remembered_refusals: AtomicU64,
    /// Denylist entries received from other nodes.
    pub deny_received: AtomicU64,
}

impl RedisStats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Bound on each background attempt to share a revocation ([`RedisLimiter::deny`]).
pub const DENY_RETRY_TIMEOUT: Duration = Duration::from_secs(2);

/// Most revocations retried in the background at once; past it, a revocation that could not
/// be shared at once is only logged.
const MAX_DENY_RETRIES: usize = 10_000;

/// Most refusals remembered at once (about 100 bytes each); past it, new ones are not kept
/// (the `local` fallback then decides them on its own budget, as it would without the memory).
const MAX_REFUSALS: usize = 100_000;

/// What a limit is, to tell whether a remembered refusal still applies (a changed limit does
/// not inherit the old one's refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    Rate(RateSpec),
    Quota(QuotaSpec),
}

/// A refusal Redis answered for one limit, kept until it lapses (`retry_after` after the
/// answer): a request that costs at least as much is refused by that limit until then.
#[derive(Debug, Clone)]
struct Refusal {
    until: std::time::Instant,
    spec: Spec,
    cost: u64,
    state: LimitState,
}

/// The Redis backend.
pub struct RedisLimiter {
    link: Link,
    script: ::redis::Script,
    refund: ::redis::Script,
    cfg: RedisConfig,
    breaker: Breaker,
    stats: RedisStats,
    /// Per-node limits while Redis is unavailable (`on_limiter_failure = "local"`).
    fallback: LocalLimiter,
    /// The refusals Redis answered this node, by limit, until they lapse: while Redis is
    /// unavailable, the `local` fallback refuses what Redis has just refused instead of
    /// admitting it on its own budget (a quota Redis reported used up stays used up).
    refusals: std::sync::Mutex<std::collections::HashMap<LimitKey, Refusal>>,
    /// Revocations being retried in the background ([`RedisLimiter::deny`]).
    deny_retries: std::sync::atomic::AtomicUsize,
    /// Why the last failed call failed (`describe`: a TLS problem, an error kind), for
    /// `/readyz`; cleared by a success.
    last_error: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("topology", &self.cfg.topology.kind())
            .field("prefix", &self.cfg.prefix)
            .field("timeout", &self.cfg.timeout)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

fn rate_interval_us(spec: &RateSpec) -> f64 {
    spec.period.as_nanos() as f64 / 1000.0 / spec.count.max(1) as f64
}

fn quota_args(spec: &QuotaSpec) -> (&'static str, u64) {
    match spec.refill {
        Refill::Day => ("d", 86_400),
        Refill::Week => ("w", 604_800),
        Refill::Month => ("m", 0),
        Refill::Every(d) => ("e", d.as_secs().max(1)),
    }
}

/// The limits of one request that live in one slot: indices into the request's rates and
/// quotas, and the hash tag they share.
struct Slot {
    tag: String,
    rates: Vec<usize>,
    quotas: Vec<usize>,
}

impl RedisLimiter {
    /// Checks the settings; connects lazily (on the first call), so that keyward starts while
    /// Redis is down and follows its failure modes until it comes up. `serve` runs
    /// [`RedisLimiter::startup_check`] first.
    pub fn new(cfg: RedisConfig) -> Result<RedisLimiter, String> {
        if cfg.prefix.is_empty() || cfg.prefix.contains(['{', '}']) {
            return Err("redis.prefix must be non-empty and free of braces".into());
        }
        let link = Link::new(&cfg.topology, &cfg.tls, cfg.timeout)?;
        Ok(RedisLimiter {
            link,
            script: ::redis::Script::new(SCRIPT),
            refund: ::redis::Script::new(REFUND),
            breaker: Breaker::new(cfg.breaker),
            stats: RedisStats::default(),
            fallback: LocalLimiter::new(),
            refusals: std::sync::Mutex::new(std::collections::HashMap::new()),
            deny_retries: std::sync::atomic::AtomicUsize::new(0),
            last_error: std::sync::Mutex::new(None),
            cfg,
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &RedisStats {
        &self.stats
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Why the last failed call failed (`tls: …` for a certificate problem, else the error's
    /// kind or `timeout`); `None` after a success.
    pub fn last_error(&self) -> Option<String> {
        match self.last_error.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_last_error(&self, e: Option<String>) {
        let mut g = match self.last_error.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if *g != e {
            *g = e;
        }
    }

    /// What `serve` checks before accepting traffic (see [`Link::startup_check`]): `Err` is a
    /// start-up error; `Ok(Some(warning))` starts with a warning (one endpoint that is down).
    pub async fn startup_check(&self, budget: Duration) -> Result<Option<String>, String> {
        self.link.startup_check(budget).await
    }

    /// The hash tag of a limit: `{prefix}`, or under Cluster `{prefix:<group>}` (its own key
    /// when it has no group).
    fn tag_of(&self, group: Option<LimitKey>, key: &LimitKey) -> String {
        if self.cfg.topology.is_cluster() {
            format!("{}:{:016x}", self.cfg.prefix, group.unwrap_or(*key).value())
        } else {
            self.cfg.prefix.clone()
        }
    }

    fn key_name(tag: &str, kind: char, key: &LimitKey) -> String {
        format!("kw:{{{tag}}}:{kind}:{:016x}", key.value())
    }

    /// Runs `op` on a connection, bounded by the timeout and behind the breaker.
    async fn guarded<T, F, Fut>(&self, op: F) -> Result<T, RedisCallError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        if !self.breaker.allow() {
            RedisStats::bump(&self.stats.short_circuits);
            return Err(RedisCallError::BreakerOpen);
        }
        self.call(op, true).await
    }

    /// Runs `op` on a connection, bounded by the timeout; its outcome counts for the breaker
    /// when `track` (refunds neither wait for the breaker nor move it: a slot that just
    /// answered is asked to give back what it took, even while another slot fails).
    async fn call<T, F, Fut>(&self, op: F, track: bool) -> Result<T, RedisCallError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        self.call_within(op, track, self.cfg.timeout).await
    }

    /// As [`RedisLimiter::call`], bounded by `bound`.
    async fn call_within<T, F, Fut>(&self, op: F, track: bool, bound: Duration) -> Result<T, RedisCallError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        RedisStats::bump(&self.stats.calls);
        // The Sentinel generation of the connection used (0: none yet).
        let used = AtomicU64::new(0);
        let r = tokio::time::timeout(bound, async {
            let c = self.link.get().await?;
            if let Conn::Sentinel(g, _) = &c {
                used.store(*g, Ordering::Relaxed);
            }
            op(c).await
        })
        .await;
        match r {
            Ok(Ok(v)) => {
                if track {
                    self.breaker.success();
                    self.set_last_error(None);
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                RedisStats::bump(&self.stats.errors);
                if track {
                    self.breaker.failure();
                }
                self.link.failed(used.load(Ordering::Relaxed), Some(&e));
                let why = describe(&e);
                tracing::debug!(error = %why, "redis call failed");
                self.set_last_error(Some(why));
                Err(RedisCallError::Redis(e))
            }
            Err(_) => {
                RedisStats::bump(&self.stats.timeouts);
                if track {
                    self.breaker.failure();
                }
                self.link.failed(used.load(Ordering::Relaxed), None);
                self.set_last_error(Some("timeout".into()));
                Err(RedisCallError::Timeout)
            }
        }
    }

    /// Decides every limit of one request with Redis `TIME` as the clock.
    pub async fn check(&self, rates: &[RateCheck], quotas: &[QuotaCheck]) -> Result<Outcome, RedisCallError> {
        self.check_at(rates, quotas, None).await
    }

    /// As [`RedisLimiter::check`], at `now_us` (µs since the Unix epoch) instead of Redis
    /// `TIME` when given (tests).
    pub async fn check_at(
        &self,
        rates: &[RateCheck],
        quotas: &[QuotaCheck],
        now_us: Option<u64>,
    ) -> Result<Outcome, RedisCallError> {
        if rates.is_empty() && quotas.is_empty() {
            return Ok(Outcome::Allowed { states: Vec::new() });
        }
        let slots = self.slots(rates, quotas);
        if let [one] = slots.as_slice() {
            return self.decide(one, rates, quotas, now_us).await;
        }
        // Under Cluster, across slots: slot by slot, giving back on a refusal or a failure.
        let mut states: Vec<Option<LimitState>> = vec![None; rates.len() + quotas.len()];
        let mut taken: Vec<&Slot> = Vec::with_capacity(slots.len());
        for slot in &slots {
            match self.decide(slot, rates, quotas, now_us).await {
                Ok(Outcome::Allowed { states: s }) => {
                    let places = slot
                        .rates
                        .iter()
                        .copied()
                        .chain(slot.quotas.iter().map(|q| rates.len() + q));
                    for (place, st) in places.zip(s) {
                        states[place] = Some(st);
                    }
                    taken.push(slot);
                }
                other => {
                    for t in taken {
                        self.give_back(t, rates, quotas, now_us).await;
                    }
                    return other;
                }
            }
        }
        Ok(Outcome::Allowed {
            states: states.into_iter().flatten().collect(),
        })
    }

    /// The slots of one request's limits, in the order they are decided: one (every limit)
    /// unless under Cluster; there, grouped limits first (the app's: a tenant over its own
    /// limits is refused before it touches a route-wide one), then each limit of its own.
    fn slots(&self, rates: &[RateCheck], quotas: &[QuotaCheck]) -> Vec<Slot> {
        if !self.cfg.topology.is_cluster() {
            return vec![Slot {
                tag: self.cfg.prefix.clone(),
                rates: (0..rates.len()).collect(),
                quotas: (0..quotas.len()).collect(),
            }];
        }
        fn add(list: &mut Vec<Slot>, tag: String, rate: Option<usize>, quota: Option<usize>) {
            let i = match list.iter().position(|s| s.tag == tag) {
                Some(i) => i,
                None => {
                    list.push(Slot {
                        tag,
                        rates: Vec::new(),
                        quotas: Vec::new(),
                    });
                    list.len() - 1
                }
            };
            list[i].rates.extend(rate);
            list[i].quotas.extend(quota);
        }
        let (mut grouped, mut own) = (Vec::with_capacity(1), Vec::new());
        for (i, r) in rates.iter().enumerate() {
            let list = if r.group.is_some() { &mut grouped } else { &mut own };
            add(list, self.tag_of(r.group, &r.key), Some(i), None);
        }
        for (i, q) in quotas.iter().enumerate() {
            let list = if q.group.is_some() { &mut grouped } else { &mut own };
            add(list, self.tag_of(q.group, &q.key), None, Some(i));
        }
        grouped.append(&mut own);
        grouped
    }

    /// One script call: the limits of `slot`, all or nothing.
    async fn decide(
        &self,
        slot: &Slot,
        rates: &[RateCheck],
        quotas: &[QuotaCheck],
        now_us: Option<u64>,
    ) -> Result<Outcome, RedisCallError> {
        let rs: Vec<&RateCheck> = slot.rates.iter().filter_map(|&i| rates.get(i)).collect();
        let qs: Vec<&QuotaCheck> = slot.quotas.iter().filter_map(|&i| quotas.get(i)).collect();
        let mut inv = self.script.prepare_invoke();
        for r in &rs {
            inv.key(Self::key_name(&slot.tag, 'r', &r.key));
        }
        for q in &qs {
            inv.key(Self::key_name(&slot.tag, 'q', &q.key));
        }
        inv.arg(now_us.map(|n| n.to_string()).unwrap_or_default());
        inv.arg(rs.len()).arg(qs.len());
        for r in &rs {
            inv.arg(format!("{:.6}", rate_interval_us(&r.spec)))
                .arg(r.spec.burst)
                .arg(r.cost);
        }
        for q in &qs {
            let (kind, len) = quota_args(&q.spec);
            inv.arg(kind).arg(len).arg(q.spec.limit).arg(q.cost);
        }
        let inv = &inv;
        let raw: Vec<i64> = self
            .guarded(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let outcome = decode(&raw, &rs, &qs).ok_or(RedisCallError::Protocol)?;
        self.remember(&raw, &rs, &qs, &outcome);
        Ok(outcome)
    }

    /// Keeps a refusal of the script (`raw[1]` is the refused limit's index, 1-based, among
    /// the rates or the quotas) until its `retry_after` has passed.
    fn remember(&self, raw: &[i64], rates: &[&RateCheck], quotas: &[&QuotaCheck], outcome: &Outcome) {
        let (retry_after, states) = match outcome {
            Outcome::Allowed { .. } => return,
            Outcome::RateLimited {
                retry_after, states, ..
            }
            | Outcome::QuotaExhausted {
                retry_after, states, ..
            } => (*retry_after, states),
        };
        let Some(i) = raw
            .get(1)
            .and_then(|&i| usize::try_from(i).ok())
            .and_then(|i| i.checked_sub(1))
        else {
            return;
        };
        let (key, spec, cost, state) = match outcome {
            Outcome::RateLimited { .. } => match (rates.get(i), states.get(i)) {
                (Some(r), Some(st)) => (r.key, Spec::Rate(r.spec), r.cost, st),
                _ => return,
            },
            _ => match (quotas.get(i), states.get(rates.len() + i)) {
                (Some(q), Some(st)) => (q.key, Spec::Quota(q.spec), q.cost, st),
                _ => return,
            },
        };
        let Some(until) = std::time::Instant::now().checked_add(retry_after) else {
            return;
        };
        let mut m = lock(&self.refusals);
        if m.len() >= MAX_REFUSALS && !m.contains_key(&key) {
            let now = std::time::Instant::now();
            m.retain(|_, r| r.until > now);
            if m.len() >= MAX_REFUSALS {
                return;
            }
        }
        m.insert(
            key,
            Refusal {
                until,
                spec,
                cost,
                state: state.clone(),
            },
        );
    }

    /// A refusal Redis answered for one of these limits that has not lapsed (for the `local`
    /// fallback): the limit's name, what is left of its `retry_after`, and its state then.
    fn remembered(&self, rates: &[RateCheck], quotas: &[QuotaCheck]) -> Option<Outcome> {
        let now = std::time::Instant::now();
        let m = lock(&self.refusals);
        if m.is_empty() {
            return None;
        }
        let live = |key: &LimitKey, spec: Spec, cost: u64| {
            m.get(key)
                .filter(|r| r.until > now && r.spec == spec && cost >= r.cost)
                .map(|r| {
                    let left = r.until - now;
                    let mut st = r.state.clone();
                    st.reset_secs = st
                        .reset_secs
                        .min(ceil_secs(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)));
                    (left, st)
                })
        };
        for r in rates {
            if let Some((left, st)) = live(&r.key, Spec::Rate(r.spec), r.cost) {
                return Some(Outcome::RateLimited {
                    policy: r.name,
                    retry_after: left,
                    states: vec![st],
                });
            }
        }
        for q in quotas {
            if let Some((left, st)) = live(&q.key, Spec::Quota(q.spec), q.cost) {
                return Some(Outcome::QuotaExhausted {
                    policy: q.name,
                    retry_after: Duration::from_secs(left.as_secs().max(1)),
                    states: vec![st],
                });
            }
        }
        None
    }

    /// Gives back what an allowed decision of `slot` took (best effort: a failure is logged,
    /// and the units stay taken until their state expires).
    async fn give_back(&self, slot: &Slot, rates: &[RateCheck], quotas: &[QuotaCheck], now_us: Option<u64>) {
        let rs: Vec<&RateCheck> = slot.rates.iter().filter_map(|&i| rates.get(i)).collect();
        let qs: Vec<&QuotaCheck> = slot.quotas.iter().filter_map(|&i| quotas.get(i)).collect();
        let mut inv = self.refund.prepare_invoke();
        for r in &rs {
            inv.key(Self::key_name(&slot.tag, 'r', &r.key));
        }
        for q in &qs {
            inv.key(Self::key_name(&slot.tag, 'q', &q.key));
        }
        inv.arg(now_us.map(|n| n.to_string()).unwrap_or_default());
        inv.arg(rs.len()).arg(qs.len());
        for r in &rs {
            inv.arg(format!("{:.6}", rate_interval_us(&r.spec))).arg(r.cost);
        }
        for q in &qs {
            let (kind, len) = quota_args(&q.spec);
            inv.arg(kind).arg(len).arg(q.cost);
        }
        let inv = &inv;
        let r: Result<i64, _> = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await }, false)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "giving back a refused request's units failed; they stay taken until their state expires");
        }
    }

    /// `PING`, bounded by the timeout and behind the breaker (readiness checks).
    pub async fn ping(&self) -> Result<(), RedisCallError> {
        let _: String = self
            .guarded(|mut c| async move { ::redis::cmd("PING").query_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// Records the first use of a DPoP proof (`jkt:jti`) for `ttl`: true when it was new.
    pub async fn first_use(&self, entry: &str, ttl: Duration) -> Result<bool, RedisCallError> {
        let tag = self.tag_of(None, &LimitKey::stable(&["dpop", entry]));
        let key = format!("kw:{{{tag}}}:j:{entry}");
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .guarded(|mut c| async move {
                ::redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    fn deny_channel(&self) -> String {
        format!("kw:{{{}}}:deny", self.cfg.prefix)
    }

    /// Puts a revoked token's `jti` on the shared denylist until `exp` (Unix seconds) and
    /// tells every node at once (`SET` + `PUBLISH` in one pipeline, within `redis.timeout`,
    /// behind the breaker). When that fails, the error is returned and the revocation is not
    /// dropped: a background task keeps trying (each attempt bounded by [`DENY_RETRY_TIMEOUT`],
    /// past the breaker, waits doubling from 100 ms to 30 s) until it is shared or the token has
    /// expired. A call that outlives its timeout is not even sent when the connection's task
    /// had not picked it up yet (the redis client drops the commands nobody waits for), so on a
    /// busy node one attempt within the request budget could lose a revocation for every other
    /// node that shares no store notifications (SQLite).
    pub async fn deny(self: &Arc<Self>, jti: &str, exp: i64, now: i64) -> Result<(), RedisCallError> {
        if exp <= now {
            return Ok(());
        }
        let first = self.guarded(|c| self.denial(c, jti, exp)).await;
        if first.is_err() {
            let pending = self.deny_retries.fetch_add(1, Ordering::Relaxed);
            if pending >= MAX_DENY_RETRIES {
                self.deny_retries.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!("too many revocations waiting to be shared through redis; this one is not retried");
                return first;
            }
            tracing::warn!("a revocation was not shared through redis yet; retrying in the background");
            let (me, jti) = (Arc::clone(self), jti.to_owned());
            tokio::spawn(async move {
                me.deny_until_shared(&jti, exp).await;
                me.deny_retries.fetch_sub(1, Ordering::Relaxed);
            });
        }
        first
    }

    /// The retries of [`RedisLimiter::deny`].
    async fn deny_until_shared(&self, jti: &str, exp: i64) {
        let mut wait = Duration::from_millis(100);
        let bound = self.cfg.timeout.max(DENY_RETRY_TIMEOUT);
        loop {
            tokio::time::sleep(wait).await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            if exp <= now {
                tracing::warn!("a revocation could not be shared through redis before its token expired");
                return;
            }
            match self.call_within(|c| self.denial(c, jti, exp), false, bound).await {
                Ok(()) => {
                    tracing::info!("a revocation was shared through redis after a retry");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "sharing a revocation through redis failed again"),
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    /// One attempt of a revocation: the denylist entry and its message, one pipeline.
    async fn denial(&self, mut c: Conn, jti: &str, exp: i64) -> RedisResult<()> {
        ::redis::pipe()
            .cmd("SET")
            .arg(format!("kw:{{{}}}:d:{jti}", self.cfg.prefix))
            .arg(exp)
            .arg("EXAT")
            .arg(exp)
            .ignore()
            .publish(self.deny_channel(), format!("{exp}:{jti}"))
            .ignore()
            .query_async::<()>(&mut c)
            .await
    }

    /// Reads the whole shared denylist (on every (re)subscription). Its keys share the tag
    /// `{prefix}`: one slot, so under Cluster one master holds them all.
    async fn load_denylist(&self) -> RedisResult<Vec<(String, i64)>> {
        let mut c = self.link.get().await?;
        let pattern = format!("kw:{{{}}}:d:*", self.cfg.prefix);
        let strip = format!("kw:{{{}}}:d:", self.cfg.prefix);
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys) = self.link.scan(&mut c, &strip, cursor, &pattern).await?;
            if !keys.is_empty() {
                let values: Vec<Option<i64>> = c.mget(&keys).await?;
                for (k, v) in keys.iter().zip(values) {
                    if let (Some(jti), Some(exp)) = (k.strip_prefix(&strip), v) {
                        out.push((jti.to_owned(), exp));
                    }
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Keeps the local denylist in step with every node's revocations: subscribes to the
    /// channel, loads the whole list on every (re)subscription, then applies each message.
    /// Runs until `stop` turns true; reconnects after a second when the channel breaks (under
    /// Cluster to the next seed that answers; under Sentinel to the current master).
    pub async fn follow_denylist(
        self: Arc<Self>,
        sink: Arc<dyn Fn(String, i64) + Send + Sync>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        use futures_util::StreamExt;
        loop {
            let round = async {
                let mut ps = self.link.pubsub().await?;
                ps.subscribe(self.deny_channel()).await?;
                for (jti, exp) in self.load_denylist().await? {
                    sink(jti, exp);
                }
                let mut stream = ps.on_message();
                while let Some(msg) = stream.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some((exp, jti)) = payload.split_once(':') {
                        if let Ok(exp) = exp.parse::<i64>() {
                            RedisStats::bump(&self.stats.deny_received);
                            sink(jti.to_owned(), exp);
                        }
                    }
                }
                RedisResult::Ok(())
            };
            tokio::select! {
                r = round => {
                    if let Err(e) = r {
                        tracing::debug!(error = %describe(&e), kind = %kind_of(&e), "redis denylist channel lost; retrying");
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Per-node limits while Redis is unavailable: every rate and quota divided by
    /// `nodes_hint` (at least 1).
    fn check_fallback(&self, rates: &[RateCheck], quotas: &[QuotaCheck], now_ns: u64) -> Outcome {
        let n = self.cfg.nodes_hint.max(1);
        if n == 1 {
            return self.fallback.check(rates, quotas, now_ns);
        }
        let rates: Vec<RateCheck> = rates
            .iter()
            .map(|r| RateCheck {
                spec: RateSpec {
                    count: (r.spec.count / n).max(1),
                    period: r.spec.period,
                    burst: (r.spec.burst / n).max(1),
                },
                ..r.clone()
            })
            .collect();
        let quotas: Vec<QuotaCheck> = quotas
            .iter()
            .map(|q| QuotaCheck {
                spec: QuotaSpec {
                    limit: (q.spec.limit / n).max(1),
                    refill: q.spec.refill,
                },
                ..q.clone()
            })
            .collect();
        self.fallback.check(&rates, &quotas, now_ns)
    }
}

/// Turns the script's answer into an [`Outcome`].
fn decode(raw: &[i64], rates: &[&RateCheck], quotas: &[&QuotaCheck]) -> Option<Outcome> {
    let (&kind, rest) = raw.split_first()?;
    let (&index, rest) = rest.split_first()?;
    let (&retry_us, rest) = rest.split_first()?;
    if rest.len() != 2 * (rates.len() + quotas.len()) {
        return None;
    }
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    let mut states = Vec::with_capacity(rates.len() + quotas.len());
    let mut pairs = rest.chunks_exact(2);
    for r in rates {
        let p = pairs.next()?;
        let capacity = r.spec.emission_interval_ns().saturating_mul(r.spec.burst);
        states.push(LimitState {
            name: r.name,
            limit: r.spec.burst,
            window_secs: ceil_secs(capacity),
            remaining: u(p[0]),
            reset_secs: u(p[1]),
        });
    }
    for q in quotas {
        let p = pairs.next()?;
        states.push(LimitState {
            name: q.name,
            limit: q.spec.limit,
            window_secs: q.spec.window_secs(),
            remaining: u(p[0]),
            reset_secs: u(p[1]),
        });
    }
    let idx = usize::try_from(index).ok()?.checked_sub(1);
    Some(match kind {
        0 => Outcome::Allowed { states },
        1 => Outcome::RateLimited {
            policy: rates.get(idx?)?.name,
            retry_after: Duration::from_micros(u(retry_us)),
            states,
        },
        2 => Outcome::QuotaExhausted {
            policy: quotas.get(idx?)?.name,
            retry_after: Duration::from_secs((u(retry_us) / 1_000_000).max(1)),
            states,
        },
        _ => return None,
    })
}

/// What the engine holds: limits in process, or shared through Redis.
#[derive(Debug)]
pub enum Limiter {
    Local(LocalLimiter),
    Redis(Arc<RedisLimiter>),
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter").finish_non_exhaustive()
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::Local(LocalLimiter::new())
    }
}

impl Limiter {
    /// The key of a limit on `parts`: per-process keyed locally, the same on every node with
    /// Redis.
    pub fn key(&self, parts: &[&str]) -> LimitKey {
        match self {
            Limiter::Local(l) => l.key(parts),
            Limiter::Redis(_) => LimitKey::stable(parts),
        }
    }

    /// The failure mode of the route named `route` (irrelevant to local limits).
    pub fn on_failure(&self, route: &str) -> OnLimiterFailure {
        match self {
            Limiter::Local(_) => OnLimiterFailure::default(),
            Limiter::Redis(r) => r.cfg.route_modes.get(route).copied().unwrap_or(r.cfg.default_mode),
        }
    }

    pub fn redis(&self) -> Option<&Arc<RedisLimiter>> {
        match self {
            Limiter::Local(_) => None,
            Limiter::Redis(r) => Some(r),
        }
    }

    /// Decides every limit of one request, all or nothing. With Redis, a failed call (error,
    /// timeout, open breaker) is answered by `on_failure`: admitted (`fail_open`), refused
    /// (`fail_closed`, the `Err`), or decided by this node at limit / `nodes_hint` (`local`).
    pub async fn check(
        &self,
        rates: &[RateCheck],
        quotas: &[QuotaCheck],
        now_ns: u64,
        on_failure: OnLimiterFailure,
    ) -> Result<Outcome, LimiterUnavailable> {
        let r = match self {
            Limiter::Local(l) => return Ok(l.check(rates, quotas, now_ns)),
            Limiter::Redis(r) => r,
        };
        match r.check(rates, quotas).await {
            Ok(o) => Ok(o),
            Err(e) => {
                tracing::debug!(error = %e, mode = on_failure.as_str(), "shared limiter unavailable");
                match on_failure {
                    OnLimiterFailure::FailOpen => {
                        RedisStats::bump(&r.stats.fail_open);
                        Ok(Outcome::Allowed { states: Vec::new() })
                    }
                    OnLimiterFailure::FailClosed => {
                        RedisStats::bump(&r.stats.fail_closed);
                        Err(LimiterUnavailable {
                            retry_after: r.cfg.breaker.cooldown.max(Duration::from_secs(1)),
                        })
                    }
                    OnLimiterFailure::Local => {
                        RedisStats::bump(&r.stats.local_fallback);
                        if let Some(refused) = r.remembered(rates, quotas) {
                            RedisStats::bump(&r.stats.remembered_refusals);
                            return Ok(refused);
                        }
                        Ok(r.check_fallback(rates, quotas, now_ns))
                    }
                }
            }
        }
    }

    /// Limit states held in this process (rates + quotas; with Redis: the fallback's).
    pub fn local_entries(&self) -> usize {
        let (r, q) = match self {
            Limiter::Local(l) => l.len(),
            Limiter::Redis(r) => r.fallback.len(),
        };
        r + q
    }

    /// Drops idle local state (Redis expires its own).
    pub fn sweep(&self, now_ns: u64) -> usize {
        match self {
            Limiter::Local(l) => l.sweep(now_ns),
            Limiter::Redis(r) => {
                let now = std::time::Instant::now();
                let mut m = lock(&r.refusals);
                let before = m.len();
                m.retain(|_, f| f.until > now);
                let lapsed = before - m.len();
                drop(m);
                r.fallback.sweep(now_ns) + lapsed
            }
        }
    }
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
