//! Read-through cache of key records by digest, with a bounded negative cache.
//!
//! Invalidation is race-free against concurrent fills: a fill that read the store before an
//! invalidation can never leave its stale record behind (see [`KeyCache::lookup`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(60),
            max_entries: 100_000,
            negative_ttl: Duration::from_secs(30),
            negative_max_entries: 100_000,
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
}

pub struct KeyCache {
    store: Arc<dyn Store>,
    positive: Cache<Digest, Arc<KeyRecord>>,
    negative: Cache<Digest, ()>,
    generation: AtomicU64,
    stats: CacheStats,
}

impl KeyCache {
    pub fn new(store: Arc<dyn Store>, cfg: CacheConfig) -> KeyCache {
        KeyCache {
            store,
            positive: Cache::builder()
                .max_capacity(cfg.max_entries)
                .time_to_live(cfg.ttl)
                .build(),
            negative: Cache::builder()
                .max_capacity(cfg.negative_max_entries)
                .time_to_live(cfg.negative_ttl)
                .build(),
            generation: AtomicU64::new(0),
            stats: CacheStats::default(),
        }
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The record for `digest`, from memory when possible, else from the store.
    ///
    /// The stored digest is compared with the presented one in constant time, so that the
    /// final decision never depends on a short-circuiting comparison.
    pub async fn lookup(&self, digest: &Digest) -> Result<Lookup, StoreError> {
        if let Some(rec) = self.positive.get(digest) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Lookup::Found(rec));
        }
        if self.negative.contains_key(digest) {
            self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Lookup::Unknown);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let before = self.generation.load(Ordering::Acquire);
        let found = self.store.key_by_digest(digest).await?;
        let result = match found {
            Some((rec, stored)) if stored.ct_eq(digest) => {
                let rec = Arc::new(rec);
                self.positive.insert(*digest, rec.clone());
                Lookup::Found(rec)
            }
            _ => {
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

    /// Forgets everything (e.g. after losing the invalidation channel).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.positive.invalidate_all();
        self.negative.invalidate_all();
    }
}
