//! keyward limits: GCRA rate limits and quotas, kept in process.
//!
//! A request may be subject to several limits at once (per key, per app, per route, a quota).
//! [`LocalLimiter::check`] decides all of them together and is all-or-nothing: when any limit
//! refuses, none of them is consumed. State lives in sharded maps keyed by a 64-bit hash of the
//! limit's identity; idle state (a GCRA cell whose bucket is full again, a quota whose period
//! has ended) is dropped by [`LocalLimiter::sweep`].
//!
//! [`redis::RedisLimiter`] keeps the same state in Redis for a cluster of nodes (one Lua
//! script, Redis `TIME` as the clock), behind a timeout and a [`breaker::Breaker`];
//! [`Limiter`] is what the engine holds: local, or Redis with a per-route failure mode.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod redis;
pub mod topology;

pub use redis::{Limiter, LimiterUnavailable, OnLimiterFailure, RedisConfig, RedisLimiter, RedisStats};
pub use topology::{RedisTls, Topology};

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use keyward_core::policy::{QuotaSpec, RateSpec};

const SHARDS: usize = 64;
const NS_PER_SEC: u64 = 1_000_000_000;

/// The identity of one limit's state (a hash of what it limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitKey(u64);

impl LimitKey {
    /// A key that every node computes alike (for state shared through Redis): FNV-1a over
    /// the length-prefixed parts, then a SplitMix64 finaliser. Not keyed: the parts are ids
    /// that keyward generates and route names from the configuration, which no client
    /// chooses.
    pub fn stable(parts: &[&str]) -> LimitKey {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        };
        for p in parts {
            for b in (p.len() as u64).to_le_bytes() {
                eat(b);
            }
            for b in p.bytes() {
                eat(b);
            }
        }
        let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        LimitKey(z ^ (z >> 31))
    }

    /// The 64-bit value (hex in Redis key names).
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// One rate limit that applies to a request.
#[derive(Debug, Clone)]
pub struct RateCheck {
    /// Policy name for the `RateLimit` fields (`key`, `app`, `route`).
    pub name: &'static str,
    pub key: LimitKey,
    pub spec: RateSpec,
    /// Units this request consumes (the route's cost).
    pub cost: u64,
    /// The limits decided together with this one under Redis Cluster (see [`QuotaCheck::group`]).
    pub group: Option<LimitKey>,
}

/// One quota that applies to a request.
#[derive(Debug, Clone)]
pub struct QuotaCheck {
    pub name: &'static str,
    pub key: LimitKey,
    pub spec: QuotaSpec,
    pub cost: u64,
    /// Under Redis Cluster, the limits of one request that carry the same group share a hash
    /// tag, hence a slot, and are decided all or nothing by one script (the engine groups a
    /// key's and its app's limits by app). `None`: a slot of its own (route-wide limits).
    /// Elsewhere (in process, one Redis, Sentinel) every limit of a request is decided in one
    /// step whatever its group.
    pub group: Option<LimitKey>,
}

/// The state of one limit after a decision, for the `RateLimit-Policy` and `RateLimit` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitState {
    pub name: &'static str,
    /// Quota units of the policy (`q`).
    pub limit: u64,
    /// Window in seconds (`w`).
    pub window_secs: u64,
    /// Units left (`r`).
    pub remaining: u64,
    /// Seconds until the limit is fully available again (`t`).
    pub reset_secs: u64,
}

/// The decision. `states` has one entry per rate, then per quota, in the order given: after
/// the request when it is allowed; as they are (nothing consumed) when it is refused, so that
/// `remaining` is exactly how many requests would be admitted at the moment of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allowed {
        states: Vec<LimitState>,
    },
    /// A rate limit refused; retry after the given time.
    RateLimited {
        policy: &'static str,
        retry_after: Duration,
        states: Vec<LimitState>,
    },
    /// A quota is used up until its next refill.
    QuotaExhausted {
        policy: &'static str,
        retry_after: Duration,
        states: Vec<LimitState>,
    },
}

#[derive(Default)]
struct Shard {
    /// GCRA theoretical arrival time (ns since the Unix epoch).
    rates: HashMap<LimitKey, u64>,
    /// Quota: (period index, used units, period end in Unix seconds).
    quotas: HashMap<LimitKey, QuotaCell>,
}

/// A quota's state, packed into 12 bytes (1,000,000 quotas fit in about 45 MB): the period
/// it counts (`u32`: Unix days, months or intervals of at least a second all fit until 2106),
/// the units used in it (at most 2 × 10^9, see `MAX_COUNT`), and the period's end (Unix
/// seconds, for the sweep).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct QuotaCell {
    period: u32,
    used: u32,
    end: u32,
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// The in-process limiter.
pub struct LocalLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter::new()
    }
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(NS_PER_SEC)
}

impl LocalLimiter {
    pub fn new() -> LocalLimiter {
        LocalLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The key of a limit on `parts` (e.g. `("key", key_id)`), hashed with a per-process
    /// random key so that nobody can aim collisions.
    pub fn key(&self, parts: &[&str]) -> LimitKey {
        let mut h = self.hasher.build_hasher();
        for p in parts {
            p.hash(&mut h);
        }
        LimitKey(h.finish())
    }

    fn shard_of(key: &LimitKey) -> usize {
        (key.0 % SHARDS as u64) as usize
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        match self.shards.get(i).map(Mutex::lock) {
            Some(Ok(g)) => g,
            Some(Err(p)) => p.into_inner(),
            // `i` always comes from `shard_of`, so this cannot happen; fall back to shard 0.
            None => match self.shards[0].lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            },
        }
    }

    /// Decides every limit of one request at `now_ns` (ns since the Unix epoch), all or nothing.
    pub fn check(&self, rates: &[RateCheck], quotas: &[QuotaCheck], now_ns: u64) -> Outcome {
        if rates.is_empty() && quotas.is_empty() {
            return Outcome::Allowed { states: Vec::new() };
        }
        let now_secs = i64::try_from(now_ns / NS_PER_SEC).unwrap_or(i64::MAX);
        // Lock every shard involved, in index order (no deadlock), for the whole decision.
        let mut idx: Vec<usize> = rates
            .iter()
            .map(|r| Self::shard_of(&r.key))
            .chain(quotas.iter().map(|q| Self::shard_of(&q.key)))
            .collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> = idx.iter().map(|&i| (i, self.lock(i))).collect();
        let shard = |key: &LimitKey| -> usize {
            let i = Self::shard_of(key);
            guards.iter().position(|(j, _)| *j == i).unwrap_or(0)
        };

        // Phase 1: compute every new state without writing anything. Each limit's fields are
        // computed twice: as they are now (`before`: what a refused request leaves, since a
        // refused request consumes from no limit) and as they are once this request is
        // admitted (`after`).
        let mut new_tats = Vec::with_capacity(rates.len());
        let mut before = Vec::with_capacity(rates.len() + quotas.len());
        let mut after = Vec::with_capacity(rates.len() + quotas.len());
        let mut rate_refusal: Option<(&'static str, u64)> = None;
        for r in rates {
            let g = shard(&r.key);
            let t = r.spec.emission_interval_ns();
            let capacity = t.saturating_mul(r.spec.burst);
            let tat = guards[g].1.rates.get(&r.key).copied().unwrap_or(now_ns).max(now_ns);
            let new_tat = tat.saturating_add(t.saturating_mul(r.cost));
            let ahead = new_tat - now_ns;
            let state = |used_ns: u64| LimitState {
                name: r.name,
                limit: r.spec.burst,
                window_secs: ceil_secs(capacity),
                // How many more unit-cost requests fit right now.
                remaining: capacity.saturating_sub(used_ns) / t,
                reset_secs: ceil_secs(used_ns),
            };
            before.push(state(tat - now_ns));
            if ahead > capacity {
                let wait = ahead - capacity;
                if rate_refusal.is_none_or(|(_, w)| wait > w) {
                    rate_refusal = Some((r.name, wait));
                }
                after.push(state(tat - now_ns));
            } else {
                after.push(state(ahead));
            }
            new_tats.push((g, r.key, new_tat));
        }
        let mut new_quotas = Vec::with_capacity(quotas.len());
        let mut quota_refusal: Option<(&'static str, u64)> = None;
        for q in quotas {
            let g = shard(&q.key);
            let (period, end) = q.spec.period_of(now_secs);
            let period = to_u32(period);
            let used = match guards[g].1.quotas.get(&q.key) {
                Some(c) if c.period == period => u64::from(c.used),
                _ => 0, // a new period: the balance is the limit again (no stacking)
            };
            let reset = u64::try_from(end.saturating_sub(now_secs)).unwrap_or(0);
            let used_after = used.saturating_add(q.cost);
            let state = |used: u64| LimitState {
                name: q.name,
                limit: q.spec.limit,
                window_secs: q.spec.window_secs(),
                remaining: q.spec.limit.saturating_sub(used),
                reset_secs: reset,
            };
            before.push(state(used));
            if used_after > q.spec.limit {
                if quota_refusal.is_none_or(|(_, w)| reset > w) {
                    quota_refusal = Some((q.name, reset));
                }
                after.push(state(used));
            } else {
                after.push(state(used_after));
            }
            let cell = QuotaCell {
                period,
                used: u32::try_from(used_after).unwrap_or(u32::MAX),
                end: to_u32(end),
            };
            new_quotas.push((g, q.key, cell));
        }

        if let Some((policy, secs)) = quota_refusal {
            return Outcome::QuotaExhausted {
                policy,
                retry_after: Duration::from_secs(secs.max(1)),
                states: before,
            };
        }
        if let Some((policy, ns)) = rate_refusal {
            return Outcome::RateLimited {
                policy,
                retry_after: Duration::from_nanos(ns),
                states: before,
            };
        }
        // Phase 2: everything allows; commit every change.
        for (g, key, tat) in new_tats {
            guards[g].1.rates.insert(key, tat);
        }
        for (g, key, q) in new_quotas {
            guards[g].1.quotas.insert(key, q);
        }
        Outcome::Allowed { states: after }
    }

    /// Drops idle state: full GCRA buckets and quotas whose period has ended. Returns how many
    /// entries were dropped.
    pub fn sweep(&self, now_ns: u64) -> usize {
        let now_secs = i64::try_from(now_ns / NS_PER_SEC).unwrap_or(i64::MAX);
        let mut dropped = 0;
        for i in 0..self.shards.len() {
            let mut g = self.lock(i);
            let before = g.rates.len() + g.quotas.len();
            g.rates.retain(|_, tat| *tat > now_ns);
            g.quotas.retain(|_, c| i64::from(c.end) > now_secs);
            let (r, q) = (g.rates.len(), g.quotas.len());
            g.rates.shrink_to(r * 2);
            g.quotas.shrink_to(q * 2);
            dropped += before - g.rates.len() - g.quotas.len();
        }
        dropped
    }

    /// Entries held (rates, quotas).
    pub fn len(&self) -> (usize, usize) {
        (0..self.shards.len()).fold((0, 0), |(r, q), i| {
            let g = self.lock(i);
            (r + g.rates.len(), q + g.quotas.len())
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests;
