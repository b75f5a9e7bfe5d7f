//! Leak reports: a third party (e.g. GitHub secret scanning) tells us that a key was found in
//! public. Known keys are revoked (or only flagged) and a `security.leak_reported` event is
//! raised, which reaches the webhooks. The presented token is never stored nor logged.

use keyward_core::model::{AuditEvent, Severity};
use serde_json::json;

use crate::{Engine, EngineError};

/// Longest reporter-supplied text kept in an event (URL, source).
const MAX_TEXT: usize = 512;

/// What to do with a reported key that is ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakAction {
    /// Revoke it at once (default).
    #[default]
    Revoke,
    /// Only raise the event; a human decides.
    Flag,
}

/// One reported token.
#[derive(Debug, Clone, Copy)]
pub struct LeakReport<'a> {
    /// Who reports (the audit actor), e.g. `github-secret-scanning`.
    pub reporter: &'a str,
    pub token: &'a str,
    /// Where it was found.
    pub url: Option<&'a str>,
    /// The reporter's name for where it looked (e.g. `content`, `commit`).
    pub source: Option<&'a str>,
    /// Revocation reason for the audit log.
    pub reason: &'a str,
    pub action: LeakAction,
}

/// The verdict for one reported token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeakVerdict {
    /// One of our keys (canary keys included).
    Ours { key_id: String, revoked: bool },
    /// Not a key of ours (malformed or unknown).
    NotOurs,
}

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(MAX_TEXT).collect()
}

impl Engine {
    /// Handles one reported token: parse (no lookup for malformed tokens), look up by digest,
    /// revoke (unless flagging, or a canary, whose whole point is to be found) and raise a
    /// `security.leak_reported` event with the key id and hint, never the token.
    pub async fn report_leak(&self, r: &LeakReport<'_>) -> Result<LeakVerdict, EngineError> {
        if self.format.parse(r.token).is_err() {
            return Ok(LeakVerdict::NotOurs);
        }
        let digest = self.pepper.digest(r.token.as_bytes());
        let record = match self.store.key_by_digest(&digest).await? {
            Some((rec, stored)) if stored.ct_eq(&digest) => rec,
            _ => return Ok(LeakVerdict::NotOurs),
        };
        let already_revoked = record.revoked_at.is_some();
        let revoke = r.action == LeakAction::Revoke && !record.lifecycle.canary && !already_revoked;
        if revoke {
            self.revoke_key(r.reporter, &record.id, Some(r.reason)).await?;
        }
        tracing::warn!(key_id = %record.id, revoked = revoke, "key reported as leaked");
        let event = AuditEvent {
            seq: 0,
            at: self.now(),
            actor: r.reporter.to_owned(),
            kind: "security.leak_reported".into(),
            severity: Severity::High,
            target: Some(record.id.clone()),
            source_ip: None,
            details: json!({
                "key_id": record.id,
                "app_id": record.app_id,
                "hint": record.hint,
                "url": r.url.map(clip),
                "source": r.source.map(clip),
                "action": r.action,
                "revoked": revoke,
                "already_revoked": already_revoked,
                "canary": record.lifecycle.canary,
            }),
        };
        self.audit(event).await?;
        Ok(LeakVerdict::Ours {
            key_id: record.id,
            revoked: revoke || already_revoked,
        })
    }
}
