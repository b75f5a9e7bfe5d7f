//! Read-through cache of key records by digest, with a bounded negative cache.
//!
//! Invalidation is race-free against concurrent fills: a fill that read the store before an
//! invalidation can never leave its stale record behind (see [`KeyCache::lookup`]).
//!
//! Known records are fresh for `ttl`; after that they are read again. When that read fails
//! because the store is unavailable (not when it answers "unknown"), the record keeps being
//! served for up to `stale_ttl` more — revoked, disabled or expired records included, so a
//! known revocation keeps being refused. Entries can also be dropped by key id or by app id
//! (cross-node invalidation announces ids, never digests): a side index maps ids to digests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::{Digest, KeyRecord};
use moka::sync::Cache;

use crate::{Store, StoreError};

/// Sizes and lifetimes of the caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// How long a known key's record is served from memory before it is read again.
    pub ttl: Duration,
    pub max_entries: u64,
    /// How long an unknown digest is remembered as unknown.
    pub negative_ttl: Duration,
    pub negative_max_entries: u64,
    /// How long past `ttl` a known record is still served while the store is unavailable.
    pub stale_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(60),
            max_entries: 100_000,
            negative_ttl: Duration::from_secs(30),
            negative_max_entries: 100_000,
            stale_ttl: Duration::from_secs(300),
        }
    }
}

/// Result of a lookup.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<KeyRecord>),
    Unknown,
}

/// Hit/miss counters.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub negative_hits: AtomicU64,
    pub misses: AtomicU64,
    /// Records served past their `ttl` because the store was unavailable.
    pub stale_hits: AtomicU64,
    /// How long the store took to answer the lookups the cache could not (for metrics).
    pub store_reads: LatencyHistogram,
}

/// Upper bounds (seconds) of [`LatencyHistogram`]'s buckets; the last bucket is `+Inf`.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A lock-free latency histogram with fixed buckets ([`LATENCY_BUCKETS`] and `+Inf`).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; 13],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// `(sum in seconds, count, per-bucket counts — not cumulative — with their upper bounds)`.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut count = 0;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            count += n;
            out.push((LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        (self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9, count, out)
    }
}

#[derive(Clone)]
struct Entry {
    record: Arc<KeyRecord>,
    filled: Instant,
}

/// After a store failure, stale records are served without asking the store again for this
/// long (so that an unreachable database costs the hot path nothing but the first timeout).
const STORE_DOWN_BACKOFF: Duration = Duration::from_secs(1);

/// Clears the probing flag however the probe ends (also when the request is dropped).
struct ProbeGuard<'a>(&'a AtomicBool);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

pub struct KeyCache {
    store: Arc<dyn Store>,
    positive: Cache<Digest, Entry>,
    negative: Cache<Digest, ()>,
    /// Key id → digest of the cached record (for invalidation by id).
    ids: Cache<String, Digest>,
    generation: AtomicU64,
    stats: CacheStats,
    ttl: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` until which the store is considered down; 0 once it answers.
    down_until_ms: AtomicU64,
    /// While the store is (or was last seen) down, one lookup at a time probes it; the others
    /// serve what they know.
    probing: AtomicBool,
}

impl KeyCache {
    pub fn new(store: Arc<dyn Store>, cfg: CacheConfig) -> KeyCache {
        let keep = cfg.ttl.saturating_add(cfg.stale_ttl);
        KeyCache {
            store,
            positive: Cache::builder()
                .max_capacity(cfg.max_entries)
                .time_to_live(keep)
                .build(),
            negative: Cache::builder()
                .max_capacity(cfg.negative_max_entries)
                .time_to_live(cfg.negative_ttl)
                .build(),
            ids: Cache::builder()
                .max_capacity(cfg.max_entries)
                .time_to_live(keep)
                .build(),
            generation: AtomicU64::new(0),
            stats: CacheStats::default(),
            ttl: cfg.ttl,
            epoch: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a store failure was seen within the last second.
    pub fn store_recently_down(&self) -> bool {
        self.now_ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    /// Whether the last store access failed and no later one succeeded.
    pub fn store_down(&self) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) != 0
    }

    /// Serve a known (stale) record without asking the store: it failed within the last
    /// second, or it is down and another lookup is probing it right now.
    fn skip_store(&self) -> bool {
        self.store_down() && (self.store_recently_down() || self.probing.load(Ordering::Acquire))
    }

    fn mark_down(&self) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(STORE_DOWN_BACKOFF.as_millis()).unwrap_or(1000))
            .max(1);
        self.down_until_ms.store(until, Ordering::Relaxed);
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Entries held now: (key records, unknown digests). Runs the caches' pending
    /// maintenance first, so expired entries are not counted.
    pub fn entries(&self) -> (u64, u64) {
        self.positive.run_pending_tasks();
        self.negative.run_pending_tasks();
        (self.positive.entry_count(), self.negative.entry_count())
    }

    /// The record for `digest`, from memory when possible, else from the store.
    ///
    /// The stored digest is compared with the presented one in constant time, so that the
    /// final decision never depends on a short-circuiting comparison.
    pub async fn lookup(&self, digest: &Digest) -> Result<Lookup, StoreError> {
        let stale = match self.positive.get(digest) {
            Some(e) if e.filled.elapsed() < self.ttl => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Lookup::Found(e.record));
            }
            Some(e) if self.skip_store() => {
                self.stats.stale_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Lookup::Found(e.record));
            }
            other => other,
        };
        if stale.is_none() && self.negative.contains_key(digest) {
            self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Lookup::Unknown);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let before = self.generation.load(Ordering::Acquire);
        let probe =
            (self.store_down() && !self.probing.swap(true, Ordering::AcqRel)).then_some(ProbeGuard(&self.probing));
        let started = Instant::now();
        let answer = self.store.key_by_digest(digest).await;
        self.stats.store_reads.observe(started.elapsed());
        drop(probe);
        let found = match answer {
            Ok(found) => {
                self.down_until_ms.store(0, Ordering::Relaxed);
                found
            }
            Err(StoreError::Unavailable(msg)) => {
                self.mark_down();
                // Known before the store went away: keep serving it (within `stale_ttl`,
                // the entry's lifetime), unless it was invalidated meanwhile.
                return match stale {
                    Some(e) if self.positive.contains_key(digest) => {
                        self.stats.stale_hits.fetch_add(1, Ordering::Relaxed);
                        Ok(Lookup::Found(e.record))
                    }
                    _ => Err(StoreError::Unavailable(msg)),
                };
            }
            Err(e) => return Err(e),
        };
        let result = match found {
            Some((rec, stored)) if stored.ct_eq(digest) => {
                let rec = Arc::new(rec);
                self.ids.insert(rec.id.clone(), *digest);
                self.positive.insert(
                    *digest,
                    Entry {
                        record: rec.clone(),
                        filled: Instant::now(),
                    },
                );
                Lookup::Found(rec)
            }
            _ => {
                self.positive.invalidate(digest);
                self.negative.insert(*digest, ());
                Lookup::Unknown
            }
        };
        // An invalidation that ran while we read the store may have missed our insert:
        // undo it, so that the next request reads the store again.
        if self.generation.load(Ordering::Acquire) != before {
            self.positive.invalidate(digest);
            self.negative.invalidate(digest);
        }
        Ok(result)
    }

    /// Forgets everything about `digest` (after a change to its key, or its creation).
    pub fn invalidate(&self, digest: &Digest) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.positive.invalidate(digest);
        self.negative.invalidate(digest);
    }

    /// Forgets the record of the key with this id, if cached (a change announced by id).
    pub fn invalidate_key_id(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(digest) = self.ids.remove(id) {
            self.positive.invalidate(&digest);
            self.negative.invalidate(&digest);
        }
    }

    /// Forgets the records of every key of this app (their records embed the app's policy).
    pub fn invalidate_app(&self, app_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for (digest, entry) in self.positive.iter() {
            if entry.record.app_id == app_id {
                self.positive.invalidate(&*digest);
            }
        }
    }

    /// A key was created on another node: its digest may be cached as unknown here. Forgets
    /// that digest (read from the store by id); every unknown digest when the id is `*` (a
    /// bulk load) or the read fails.
    pub async fn forget_created(&self, id: &str) {
        if id != "*" {
            match self.store.key_with_digest(id).await {
                Ok(Some((_, Some(digest)))) => {
                    self.invalidate(&digest);
                    return;
                }
                // Already a tombstone: its digest is nobody's any more.
                Ok(Some((_, None))) => return,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read a new key's digest; forgetting every unknown key"),
            }
        }
        self.clear_negative();
    }

    /// Forgets every unknown digest (a key was created somewhere: its digest may be one).
    pub fn clear_negative(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.negative.invalidate_all();
    }

    /// Forgets everything (e.g. after losing the invalidation channel).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.positive.invalidate_all();
        self.negative.invalidate_all();
        self.ids.invalidate_all();
    }
}
