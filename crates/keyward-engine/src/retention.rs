//! Retention: usage rows, audit events and revoked or expired keys' digests go after their
//! horizon, in small batches, off the request path; and the audit chain's signed checkpoints.
//!
//! One pass ([`Engine::run_retention`]), run by the server every `retention.interval` and by
//! `keyward retention run`:
//!
//! 1. **Audit.** The cut is the last event such that it and every event before it are older
//!    than the horizon. A signed *cut* checkpoint of it is stored first (the store's delete
//!    trigger allows deleting events only up to the latest cut checkpoint), then the events up
//!    to it are deleted, oldest first, `batch_size` at a time.
//! 2. **Usage** rows of minutes before the horizon, in batches.
//! 3. **Keys** revoked or expired before the horizon become tombstones (digest removed, record
//!    kept), in batches; each one's cached record is dropped (and, on PostgreSQL, every node's).
//! 4. **Tombstones** older than `retention.tombstones` (default: kept forever) are deleted;
//!    denylisted tokens and seen one-time `jti`s past their expiry too (they can never matter
//!    again).
//! 5. One `retention.run` audit event with the counts (only when something went), then a
//!    signed *anchor* checkpoint of the chain's head, and the checkpoints older than the latest
//!    cut are pruned.
//!
//! Between two batches the pass sleeps `batch_pause`, so that a large backlog never holds the
//! store (SQLite has one writer) for long: the usage flushes and admin writes interleave. The
//! request path never waits for any of it (it reads the cache; only usage flushes write).
//!
//! **Why the pepper signs checkpoints** (an HMAC under a key derived from it,
//! [`keyward_core::audit`]), not the token signing keys: the pepper exists on every deployment
//! (the token service and its key-encryption key are optional), it never rotates (rotating it
//! would invalidate every key), so a checkpoint made years ago still verifies, and it never
//! touches the database, so someone who can write the database cannot forge a checkpoint. The
//! price: verifying needs the pepper (`keyward audit verify` runs where the secrets are);
//! signing keys rotate and are removed after their tokens expire, so old checkpoints would
//! become unverifiable.

use std::time::Duration;

use keyward_core::audit::Checkpoint;
use keyward_core::model::{AuditEvent, Severity};
use keyward_store::{RetentionCounts, RetentionCut};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{Engine, EngineError};

/// What a pass keeps and how it deletes. A horizon of `None` keeps that data forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    pub usage: Option<Duration>,
    pub audit: Option<Duration>,
    /// After a key's revocation or expiry.
    pub revoked_keys: Option<Duration>,
    /// After a key became a tombstone.
    pub tombstones: Option<Duration>,
    /// Rows per delete statement (and transaction).
    pub batch_size: u32,
    /// Pause between two batches.
    pub batch_pause: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            usage: Some(Duration::from_secs(400 * 86_400)),
            audit: Some(Duration::from_secs(2 * 31_557_600)),
            revoked_keys: Some(Duration::from_secs(90 * 86_400)),
            tombstones: None,
            batch_size: 500,
            batch_pause: Duration::from_millis(50),
        }
    }
}

/// What a pass removed (or, dry, would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Usage rows of minutes before this instant.
    #[serde(with = "time::serde::rfc3339::option")]
    pub usage_before: Option<OffsetDateTime>,
    /// Audit events older than this instant.
    #[serde(with = "time::serde::rfc3339::option")]
    pub audit_before: Option<OffsetDateTime>,
    /// Keys revoked or expired at or before this instant.
    #[serde(with = "time::serde::rfc3339::option")]
    pub keys_ended_before: Option<OffsetDateTime>,
    /// Tombstones made at or before this instant.
    #[serde(with = "time::serde::rfc3339::option")]
    pub tombstones_before: Option<OffsetDateTime>,
    /// The audit events up to this seq go (the latest cut checkpoint).
    pub audit_cut_seq: Option<i64>,
    #[serde(flatten)]
    pub counts: RetentionCounts,
    /// Checkpoints written by this pass (a cut and/or an anchor of the head).
    pub checkpoints_written: u32,
    /// Whether the pass stopped early (shutdown) and left work for the next one.
    pub interrupted: bool,
}

fn horizon(now: OffsetDateTime, keep: Option<Duration>) -> Option<OffsetDateTime> {
    let keep = time::Duration::try_from(keep?).ok()?;
    now.checked_sub(keep)
}

impl Engine {
    /// One retention pass (see the module documentation). `dry_run` counts what would go and
    /// changes nothing. `stop` ends the pass between two batches (server shutdown). `actor`
    /// signs the `retention.run` audit event (`retention` for the server's job, `cli`).
    pub async fn run_retention(
        &self,
        s: &RetentionSettings,
        dry_run: bool,
        actor: &str,
        stop: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> Result<RetentionReport, EngineError> {
        let now = self.now();
        let stopped = || stop.is_some_and(|rx| *rx.borrow());
        let usage_before = horizon(now, s.usage);
        let audit_before = horizon(now, s.audit);
        let keys_ended_before = horizon(now, s.revoked_keys);
        let tombstones_before = horizon(now, s.tombstones);
        let batch = s.batch_size.max(1);
        let mut report = RetentionReport {
            dry_run,
            at: now,
            usage_before,
            audit_before,
            keys_ended_before,
            tombstones_before,
            audit_cut_seq: None,
            counts: RetentionCounts::default(),
            checkpoints_written: 0,
            interrupted: false,
        };

        // The audit cut: a new one when the horizon moved past the latest.
        let checkpoints = self.store.audit_checkpoints().await?;
        let latest_cut = checkpoints.iter().filter(|c| c.cut).map(|c| c.seq).max();
        let mut cut = latest_cut;
        if let Some(before) = audit_before {
            if let Some((seq, hash)) = self.store.audit_cut_point(before).await? {
                if latest_cut.is_none_or(|l| seq > l) {
                    if !dry_run {
                        let cp = Checkpoint::sign(&self.pepper, seq, hash, true, now.unix_timestamp());
                        if self.store.add_audit_checkpoint(&cp).await? {
                            report.checkpoints_written += 1;
                        }
                    }
                    cut = Some(seq);
                }
            }
        } else {
            // Audit events kept forever: nothing of the log goes, whatever older cuts allow.
            cut = None;
        }
        report.audit_cut_seq = cut;

        let plan = RetentionCut {
            usage_before_minute: usage_before.map(|t| t.unix_timestamp().div_euclid(60)),
            audit_up_to_seq: cut,
            keys_ended_before,
            tombstones_before,
            expired_before: Some(now),
        };
        if dry_run {
            report.counts = self.store.retention_counts(&plan).await?;
            return Ok(report);
        }

        // Each part in batches; `more` tells whether the batch was full (more may be left).
        let pause = || async {
            if !s.batch_pause.is_zero() {
                tokio::time::sleep(s.batch_pause).await;
            }
        };
        if let Some(seq) = plan.audit_up_to_seq {
            loop {
                let n = self.store.delete_audit(seq, batch).await?;
                report.counts.audit_events += n;
                if n < u64::from(batch) || stopped() {
                    break;
                }
                pause().await;
            }
        }
        if let Some(minute) = plan.usage_before_minute {
            while !stopped() {
                let n = self.store.delete_usage(minute, batch).await?;
                report.counts.usage_rows += n;
                if n < u64::from(batch) {
                    break;
                }
                pause().await;
            }
        }
        if let Some(ended) = plan.keys_ended_before {
            while !stopped() {
                let ids = self.store.purge_keys(ended, now, batch).await?;
                for id in &ids {
                    self.cache.invalidate_key_id(id);
                    self.announce(crate::Changed::Key(id.clone()));
                }
                report.counts.keys_purged += ids.len() as u64;
                if ids.len() < batch as usize {
                    break;
                }
                pause().await;
            }
        }
        if let Some(before) = plan.tombstones_before {
            while !stopped() {
                let n = self.store.delete_tombstones(before, batch).await?;
                report.counts.tombstones_deleted += n;
                if n < u64::from(batch) {
                    break;
                }
                pause().await;
            }
        }
        while !stopped() {
            let n = self.store.delete_expired_tokens(now, batch).await?;
            report.counts.expired_token_rows += n;
            if n < u64::from(batch) {
                break;
            }
            pause().await;
        }
        report.interrupted = stopped();

        let c = report.counts;
        if c.usage_rows + c.audit_events + c.keys_purged + c.tombstones_deleted + c.expired_token_rows > 0 {
            let event = AuditEvent {
                seq: 0,
                at: now,
                actor: actor.to_owned(),
                kind: "retention.run".into(),
                severity: Severity::Info,
                target: None,
                source_ip: None,
                details: serde_json::json!({
                    "usage_rows": c.usage_rows,
                    "audit_events": c.audit_events,
                    "audit_cut_seq": report.audit_cut_seq,
                    "keys_purged": c.keys_purged,
                    "tombstones_deleted": c.tombstones_deleted,
                    "expired_token_rows": c.expired_token_rows,
                }),
            };
            self.audit(event).await?;
        }
        report.checkpoints_written += self.anchor_audit_head(now).await?;
        self.store.prune_audit_checkpoints().await?;
        Ok(report)
    }

    /// Signs an anchor checkpoint of the chain's head unless a checkpoint already pins it.
    async fn anchor_audit_head(&self, now: OffsetDateTime) -> Result<u32, EngineError> {
        let head = self.store.audit_head().await?;
        let Some(hash) = head.hash else {
            return Ok(0);
        };
        let newest = self.store.audit_checkpoints().await?.iter().map(|c| c.seq).max();
        if newest.is_some_and(|s| s >= head.seq) {
            return Ok(0);
        }
        let cp = Checkpoint::sign(&self.pepper, head.seq, hash, false, now.unix_timestamp());
        Ok(u32::from(self.store.add_audit_checkpoint(&cp).await?))
    }

    /// Runs a retention pass every `every` until `stop` turns true (the first one `every`
    /// after start). A failed pass is logged and retried at the next tick.
    pub async fn retention_loop(
        self: std::sync::Arc<Self>,
        settings: RetentionSettings,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match self.run_retention(&settings, false, "retention", Some(&stop)).await {
                        Ok(r) => {
                            let c = r.counts;
                            if c.usage_rows + c.audit_events + c.keys_purged + c.tombstones_deleted + c.expired_token_rows > 0 {
                                tracing::info!(
                                    usage_rows = c.usage_rows,
                                    audit_events = c.audit_events,
                                    keys_purged = c.keys_purged,
                                    tombstones_deleted = c.tombstones_deleted,
                                    expired_token_rows = c.expired_token_rows,
                                    audit_cut_seq = r.audit_cut_seq,
                                    "retention pass"
                                );
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying at the next interval"),
                    }
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
        }
    }
}
