//! `keyward audit verify`: walks the audit chain and reports the first broken link.
//!
//! What it checks, in order:
//!
//! - every checkpoint's MAC (made with the pepper: a forged or altered checkpoint fails);
//! - every event after the legacy ones (stored before the chain existed) carries `prev_hash`
//!   and `hash`; its `prev_hash` is the hash of the event before it ([`GENESIS`] for the first
//!   event of the chain, the cut checkpoint's hash for the first event after a cut); its `hash`
//!   is the SHA-256 of its content as stored — an event edited in place fails here;
//! - seqs are contiguous, except for events at or before the latest cut checkpoint (deleted by
//!   retention, possibly while the walk runs);
//! - an event with a checkpoint has the checkpoint's hash — a chain rewritten with recomputed
//!   hashes fails at the first checkpoint after the rewrite;
//! - the last event is the chain head (seq and hash): removing the newest events is seen;
//! - events recorded earlier elsewhere (`--expect SEQ:HASH`, the `head_hash` of an earlier
//!   report) still have that hash.
//!
//! The walk stops at the head read when it starts, so events appended meanwhile do not count.
//!
//! What it cannot see: a rewrite of the events after the newest checkpoint whose author also
//! recomputed every later hash and moved the head (SHA-256 is keyless). Checkpoints are written
//! by every retention pass (`retention.interval`), so that window is one interval at most. And
//! whoever can write the database can also delete every checkpoint and rewrite the whole log:
//! only something kept outside the database tells that apart — a head hash recorded earlier
//! (`--expect`), or the file sink's copy (`[audit] sink = "file"`).

use std::collections::BTreeMap;

use keyward_core::audit::{hash32, hex, Checkpoint, GENESIS};
use serde::Serialize;

use crate::{Engine, EngineError};

/// Events read per page.
const PAGE: u32 = 1000;

/// The outcome of a walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// No broken link.
    pub ok: bool,
    /// Events of the chain checked (hash and link).
    pub events: u64,
    /// Events from before the chain existed (no hashes: not covered).
    pub legacy_events: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// The chain head when the walk started, and its hash (hex): keep it somewhere else and pass
    /// it to a later `audit verify --expect SEQ:HASH`.
    pub head_seq: i64,
    pub head_hash: Option<String>,
    pub checkpoints: usize,
    /// Events up to here may have been deleted by retention.
    pub latest_cut: Option<i64>,
    /// The newest checkpoint matched by an event still stored.
    pub anchored_up_to: Option<i64>,
    pub broken: Option<BrokenLink>,
}

/// The first broken link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

/// Checkpoints by seq, their MACs checked.
struct Pins {
    by_seq: BTreeMap<i64, Vec<Checkpoint>>,
    latest_cut: i64,
    count: usize,
}

impl Engine {
    async fn load_pins(&self) -> Result<Result<Pins, BrokenLink>, EngineError> {
        let all = self.store.audit_checkpoints().await?;
        let mut by_seq: BTreeMap<i64, Vec<Checkpoint>> = BTreeMap::new();
        let count = all.len();
        let mut latest_cut = 0;
        for cp in all {
            if !cp.verify(&self.pepper) {
                let kind = if cp.cut { "cut" } else { "anchor" };
                return Ok(Err(BrokenLink {
                    seq: cp.seq,
                    reason: format!(
                        "the {kind} checkpoint at seq {} has an invalid MAC: it was forged or altered, or made \
                         under another pepper",
                        cp.seq
                    ),
                }));
            }
            if cp.cut {
                latest_cut = latest_cut.max(cp.seq);
            }
            by_seq.entry(cp.seq).or_default().push(cp);
        }
        Ok(Ok(Pins {
            by_seq,
            latest_cut,
            count,
        }))
    }

    /// Walks the whole audit chain (see the module documentation).
    pub async fn verify_audit_chain(&self) -> Result<ChainReport, EngineError> {
        self.verify_audit_chain_expecting(&[]).await
    }

    /// [`Engine::verify_audit_chain`], also checking that each `(seq, hash)` of `expected` (a
    /// head recorded elsewhere earlier: `head_hash` of a previous report) is still in the chain
    /// with that hash — which proves that nothing up to it changed even against someone who
    /// rewrote the whole log and every checkpoint. An expected event deleted by retention
    /// (at or below the latest cut) can no longer be checked and is skipped.
    pub async fn verify_audit_chain_expecting(&self, recorded: &[(i64, [u8; 32])]) -> Result<ChainReport, EngineError> {
        // Checkpoints before the head: a checkpoint is written after the event it pins, so
        // none of these may be beyond the head read next.
        let first_pins = self.load_pins().await?;
        let head = self.store.audit_head().await?;
        let mut report = ChainReport {
            ok: false,
            events: 0,
            legacy_events: 0,
            first_seq: None,
            last_seq: None,
            head_seq: head.seq,
            head_hash: head.hash.map(|h| hex(&h)),
            checkpoints: 0,
            latest_cut: None,
            anchored_up_to: None,
            broken: None,
        };
        let mut pins = match first_pins {
            Ok(p) => p,
            Err(b) => return Ok(report.broken_at(b)),
        };
        let pinned_max = pins.by_seq.keys().next_back().copied();
        // The previous event seen: its seq and hash (`None`: an event from before the chain).
        let mut prev: Option<(i64, Option<[u8; 32]>)> = None;
        let mut after = 0;
        'walk: loop {
            let page = self.store.audit_chain(after, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for r in page {
                if r.seq > head.seq {
                    break 'walk;
                }
                after = r.seq;
                report.first_seq.get_or_insert(r.seq);
                // What this event must link to: `Some(hash)`, or `None` when the events before
                // it were deleted by retention and nothing pins the one just before.
                let next = prev.map_or(1, |(s, _)| s + 1);
                let expected = if r.seq == next {
                    Some(prev.and_then(|(_, h)| h).unwrap_or(GENESIS))
                } else {
                    if r.seq - 1 > pins.latest_cut {
                        // A cut made while we walk may explain the gap.
                        pins = match self.load_pins().await? {
                            Ok(p) => p,
                            Err(b) => return Ok(report.broken_at(b)),
                        };
                    }
                    if r.seq - 1 > pins.latest_cut {
                        return Ok(report.broken_at(BrokenLink {
                            seq: r.seq,
                            reason: format!(
                                "events {} to {} are missing: deleted without a retention checkpoint",
                                next,
                                r.seq - 1
                            ),
                        }));
                    }
                    match pins.by_seq.get(&(r.seq - 1)).and_then(|c| c.first()) {
                        Some(cp) => Some(cp.hash),
                        None if r.seq - 1 == head.legacy_seq => Some(GENESIS),
                        None => None,
                    }
                };
                // An event from before the chain: no hashes, at or below `legacy_seq`, and
                // before every chained event (a chain never goes back to unhashed events, so
                // raising `legacy_seq` and wiping hashes cannot hide events after the first
                // chained one, nor any event a checkpoint pins).
                if r.seq <= head.legacy_seq && r.hash.is_none() && r.prev_hash.is_none() && report.events == 0 {
                    if pins
                        .by_seq
                        .get(&r.seq)
                        .is_some_and(|c| c.iter().any(|cp| cp.hash != GENESIS))
                    {
                        return Ok(report.broken_at(BrokenLink {
                            seq: r.seq,
                            reason: format!(
                                "event {} has no chain hashes but a signed checkpoint pins one: its hashes were removed",
                                r.seq
                            ),
                        }));
                    }
                    report.legacy_events += 1;
                    prev = Some((r.seq, None));
                    continue;
                }
                let (Some(p), Some(h)) = (
                    r.prev_hash.as_deref().and_then(hash32),
                    r.hash.as_deref().and_then(hash32),
                ) else {
                    return Ok(report.broken_at(BrokenLink {
                        seq: r.seq,
                        reason: format!("event {} has no chain hashes (they were removed)", r.seq),
                    }));
                };
                if expected.is_some_and(|e| e != p) {
                    return Ok(report.broken_at(BrokenLink {
                        seq: r.seq,
                        reason: format!(
                            "event {} does not link to the event before it (its prev_hash differs): event {} \
                             was changed, removed or replaced",
                            r.seq,
                            r.seq - 1
                        ),
                    }));
                }
                if r.compute_hash(&p) != h {
                    return Ok(report.broken_at(BrokenLink {
                        seq: r.seq,
                        reason: format!(
                            "event {} does not match its hash: it was changed after it was written",
                            r.seq
                        ),
                    }));
                }
                if let Some((_, want)) = recorded.iter().find(|(seq, _)| *seq == r.seq) {
                    if *want != h {
                        return Ok(report.broken_at(BrokenLink {
                            seq: r.seq,
                            reason: format!(
                                "event {} is not the one recorded earlier (hash {} then, {} now): the log was rewritten",
                                r.seq,
                                short(want),
                                short(&h)
                            ),
                        }));
                    }
                }
                if let Some(cps) = pins.by_seq.get(&r.seq) {
                    if let Some(cp) = cps.iter().find(|cp| cp.hash != h) {
                        return Ok(report.broken_at(BrokenLink {
                            seq: r.seq,
                            reason: format!(
                                "event {} differs from the signed checkpoint made at {} (hash {} there, {} now): \
                                 the chain was rewritten",
                                r.seq,
                                cp.at,
                                short(&cp.hash),
                                short(&h)
                            ),
                        }));
                    }
                    report.anchored_up_to = Some(r.seq);
                }
                report.events += 1;
                prev = Some((r.seq, Some(h)));
            }
        }
        report.checkpoints = pins.count;
        report.latest_cut = (pins.latest_cut > 0).then_some(pins.latest_cut);
        let last = prev.map(|(s, _)| s);
        report.last_seq = last;
        let end = match prev {
            // Everything deleted by retention (or nothing ever written).
            None if head.seq <= pins.latest_cut.max(head.legacy_seq) => None,
            None => Some(BrokenLink {
                seq: head.seq,
                reason: format!("the chain head is at event {} but no event is stored", head.seq),
            }),
            Some((s, _)) if s != head.seq => Some(BrokenLink {
                seq: s,
                reason: format!(
                    "the last event is {s} but the chain head is at {}: the newest events were removed",
                    head.seq
                ),
            }),
            Some((s, h)) if s > head.legacy_seq && h != head.hash => Some(BrokenLink {
                seq: s,
                reason: format!("event {s} is not the chain head's event (their hashes differ)"),
            }),
            Some(_) => None,
        };
        if let Some(b) = end {
            return Ok(report.broken_at(b));
        }
        if let Some((seq, _)) = recorded.iter().find(|(seq, _)| *seq > head.seq) {
            return Ok(report.broken_at(BrokenLink {
                seq: *seq,
                reason: format!(
                    "event {seq} was recorded earlier but the chain head is at {}: the newest events were removed",
                    head.seq
                ),
            }));
        }
        if let Some(seq) = pinned_max.filter(|&s| s > head.seq) {
            return Ok(report.broken_at(BrokenLink {
                seq,
                reason: format!(
                    "a checkpoint pins event {seq}, beyond the chain head ({}): the newest events were removed",
                    head.seq
                ),
            }));
        }
        report.ok = true;
        Ok(report)
    }
}

impl ChainReport {
    fn broken_at(mut self, b: BrokenLink) -> ChainReport {
        self.ok = false;
        self.broken = Some(b);
        self
    }
}

fn short(h: &[u8; 32]) -> String {
    let mut s = hex(h);
    s.truncate(12);
    s
}
