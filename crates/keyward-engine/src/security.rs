//! Security events: canary use and bursts of failed authentications per source address.
//! Events are appended to the audit log off the request path and passed to the sinks
//! (webhooks) once stored.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use keyward_core::model::{AuditEvent, Severity};
use keyward_core::KeyRecord;
use serde_json::json;
use time::OffsetDateTime;

use crate::{Engine, RequestMeta};

/// Receives security events (severity warning or high) after they are stored.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: &AuditEvent);
}

/// Most addresses tracked for failed authentications; the table is reset past this.
const MAX_TRACKED: usize = 100_000;
/// Longest client-supplied text kept in an event (path, user agent).
const MAX_TEXT: usize = 256;

pub(crate) struct Security {
    sinks: RwLock<Vec<Arc<dyn EventSink>>>,
    /// The managed webhooks' sinks, replaced whole when their set changes.
    managed: RwLock<Vec<Arc<dyn EventSink>>>,
    /// Receivers of every stored audit event, whatever its severity (the `[audit]` file sink).
    mirrors: RwLock<Vec<Arc<dyn EventSink>>>,
    /// Per address: (minute, failures in that minute).
    failures: Mutex<HashMap<IpAddr, (i64, u32)>>,
    burst: u32,
}

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(MAX_TEXT).collect()
}

impl Security {
    pub(crate) fn new(burst: u32) -> Security {
        Security {
            sinks: RwLock::new(Vec::new()),
            managed: RwLock::new(Vec::new()),
            mirrors: RwLock::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
            burst: burst.max(1),
        }
    }

    pub(crate) fn add_sink(&self, sink: Arc<dyn EventSink>) {
        match self.sinks.write() {
            Ok(mut s) => s.push(sink),
            Err(p) => p.into_inner().push(sink),
        }
    }

    pub(crate) fn add_mirror(&self, sink: Arc<dyn EventSink>) {
        match self.mirrors.write() {
            Ok(mut s) => s.push(sink),
            Err(p) => p.into_inner().push(sink),
        }
    }

    /// Passes a stored event to every mirror.
    pub(crate) fn mirror(&self, event: &AuditEvent) {
        let mirrors = match self.mirrors.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for m in mirrors {
            m.emit(event);
        }
    }

    /// Replaces the managed webhooks' sinks.
    pub(crate) fn set_managed(&self, sinks: Vec<Arc<dyn EventSink>>) {
        match self.managed.write() {
            Ok(mut s) => *s = sinks,
            Err(p) => *p.into_inner() = sinks,
        }
    }

    /// Every sink: the configured ones, then the managed ones.
    fn all_sinks(&self) -> Vec<Arc<dyn EventSink>> {
        let mut all = match self.sinks.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        match self.managed.read() {
            Ok(s) => all.extend(s.iter().cloned()),
            Err(p) => all.extend(p.into_inner().iter().cloned()),
        }
        all
    }

    pub(crate) fn emit(&self, event: &AuditEvent) {
        for s in self.all_sinks() {
            s.emit(event);
        }
    }

    /// Stores an event without blocking the caller.
    fn spawn_audit(&self, engine: &Engine, event: AuditEvent) {
        let store = engine.store.clone();
        let mut sinks = match self.mirrors.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        sinks.extend(self.all_sinks());
        tokio::spawn(async move {
            match store.append_audit(&event).await {
                Ok(seq) => {
                    let stored = AuditEvent { seq, ..event };
                    for s in sinks {
                        s.emit(&stored);
                    }
                }
                Err(e) => tracing::error!(error = %e, kind = %event.kind, "could not store a security event"),
            }
        });
    }

    /// A canary key was used: a high-severity event with where it came from.
    pub(crate) fn canary_used(&self, engine: &Engine, key: &KeyRecord, meta: &RequestMeta<'_>, now: OffsetDateTime) {
        tracing::warn!(key_id = %key.id, "canary key used");
        let event = AuditEvent {
            seq: 0,
            at: now,
            actor: "gateway".into(),
            kind: "security.canary_used".into(),
            severity: Severity::High,
            target: Some(key.id.clone()),
            source_ip: meta.ip.map(|ip| ip.to_string()),
            details: json!({
                "key_id": key.id,
                "app_id": key.app_id,
                "hint": key.hint,
                "method": clip(meta.method),
                "path": clip(meta.path),
                "user_agent": meta.user_agent.map(clip),
            }),
        };
        self.spawn_audit(engine, event);
    }

    /// Counts a failed authentication from `ip`; the `burst`-th in one minute raises one event.
    pub(crate) fn failed_authentication(&self, engine: &Engine, ip: IpAddr, now: OffsetDateTime) {
        let minute = now.unix_timestamp().div_euclid(60);
        let count = {
            let mut f = match self.failures.lock() {
                Ok(f) => f,
                Err(p) => p.into_inner(),
            };
            if f.len() >= MAX_TRACKED && !f.contains_key(&ip) {
                f.retain(|_, (m, _)| *m == minute);
                if f.len() >= MAX_TRACKED {
                    f.clear();
                }
            }
            let e = f.entry(ip).or_insert((minute, 0));
            if e.0 != minute {
                *e = (minute, 0);
            }
            e.1 = e.1.saturating_add(1);
            e.1
        };
        if count == self.burst {
            let event = AuditEvent {
                seq: 0,
                at: now,
                actor: "gateway".into(),
                kind: "security.failed_auth_burst".into(),
                severity: Severity::Warning,
                target: None,
                source_ip: Some(ip.to_string()),
                details: json!({"failures_in_minute": count, "minute_start": minute * 60}),
            };
            self.spawn_audit(engine, event);
        }
    }
}
