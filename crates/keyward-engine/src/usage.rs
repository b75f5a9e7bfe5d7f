//! Usage counters: per key, per minute, per outcome, aggregated in memory and written to the
//! store in batches by [`crate::Engine::maintenance`] — never one write per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use keyward_core::model::UsageRow;
use keyward_core::KeyRecord;
use keyward_store::Store;
use time::OffsetDateTime;

use crate::EngineError;

/// Counts by (minute, outcome), then by key or client id (with its app id). Two levels so that
/// counting a request looks the id up by `&str`: nothing is allocated per request once the id
/// has been seen in this minute (the hot path records every proxied request).
type Counts = HashMap<(i64, &'static str), HashMap<String, (String, u64)>>;

fn add(counts: &mut Counts, id: &str, app_id: &str, minute: i64, outcome: &'static str, n: u64) {
    let ids = counts.entry((minute, outcome)).or_default();
    match ids.get_mut(id) {
        Some((_, c)) => *c += n,
        None => {
            ids.insert(id.to_owned(), (app_id.to_owned(), n));
        }
    }
}

fn row_count(counts: &Counts) -> usize {
    counts.values().map(HashMap::len).sum()
}

const MAX_PENDING_ROWS: usize = 200_000;

#[derive(Default)]
struct Pending {
    counts: Counts,
    last_used: HashMap<String, OffsetDateTime>,
}

/// Buffers usage in memory until the next flush.
#[derive(Default)]
pub struct UsageRecorder {
    pending: Mutex<Pending>,
    flushes: AtomicU64,
    recorded: AtomicU64,
}

impl UsageRecorder {
    /// Counts one request of `key` with `outcome` (`allowed`, `denied:…`, `limited:…`).
    pub fn record(&self, key: &KeyRecord, outcome: &'static str, now: OffsetDateTime) {
        self.record_as(&key.id, &key.app_id, outcome, now);
    }

    /// Counts one request of the key or client `id` of app `app_id` with `outcome`.
    pub fn record_as(&self, id: &str, app_id: &str, outcome: &'static str, now: OffsetDateTime) {
        let minute = now.unix_timestamp().div_euclid(60);
        let mut p = match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        add(&mut p.counts, id, app_id, minute, outcome, 1);
        if outcome == "allowed" {
            match p.last_used.get_mut(id) {
                Some(t) => *t = now,
                None => {
                    p.last_used.insert(id.to_owned(), now);
                }
            }
        }
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts not yet written, by (id, outcome), summed over minutes: what a flush would
    /// write now.
    pub fn pending(&self) -> HashMap<(String, &'static str), u64> {
        let p = match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = HashMap::new();
        for ((_, outcome), ids) in &p.counts {
            for (id, (_, n)) in ids {
                *out.entry((id.clone(), *outcome)).or_insert(0) += n;
            }
        }
        out
    }

    /// How many batches were written so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// How many requests were counted so far.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// Writes everything buffered in one transaction. On failure the counts go back into the
    /// buffer, so nothing is lost.
    pub async fn flush(&self, store: &dyn Store) -> Result<usize, EngineError> {
        let taken = {
            let mut p = match self.pending.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            std::mem::take(&mut *p)
        };
        if taken.counts.is_empty() && taken.last_used.is_empty() {
            return Ok(0);
        }
        let rows: Vec<UsageRow> = taken
            .counts
            .iter()
            .flat_map(|((minute, outcome), ids)| {
                ids.iter().map(|(key_id, (app_id, count))| UsageRow {
                    key_id: key_id.clone(),
                    app_id: app_id.clone(),
                    minute: *minute,
                    outcome: (*outcome).to_owned(),
                    count: *count,
                })
            })
            .collect();
        let last_used: Vec<(String, OffsetDateTime)> = taken.last_used.iter().map(|(k, t)| (k.clone(), *t)).collect();
        match store.record_usage(&rows, &last_used).await {
            Ok(()) => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                Ok(rows.len())
            }
            Err(e) => {
                let mut p = match self.pending.lock() {
                    Ok(p) => p,
                    Err(poisoned) => poisoned.into_inner(),
                };
                for ((minute, outcome), ids) in taken.counts {
                    for (id, (app, v)) in ids {
                        add(&mut p.counts, &id, &app, minute, outcome, v);
                    }
                }
                if row_count(&p.counts) > MAX_PENDING_ROWS {
                    let before = row_count(&p.counts);
                    let counts = std::mem::take(&mut p.counts);
                    for ((minute, outcome), ids) in counts {
                        for (id, (app, v)) in ids {
                            add(&mut p.counts, &id, &app, minute - minute.rem_euclid(60), outcome, v);
                        }
                    }
                    tracing::warn!(
                        before,
                        after = row_count(&p.counts),
                        "usage flushes keep failing: pending counts folded into hourly rows"
                    );
                }
                for (k, t) in taken.last_used {
                    let e = p.last_used.entry(k).or_insert(t);
                    if *e < t {
                        *e = t;
                    }
                }
                Err(e.into())
            }
        }
    }
}
