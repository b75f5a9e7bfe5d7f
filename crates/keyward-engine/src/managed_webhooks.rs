//! Webhooks managed at run time (admin API, `keyward apply`), besides the configuration's
//! static `[[webhooks]]`: stored in the store without their secret (only where each node reads
//! it: an environment variable's name or a 0600 file's path, resolved by the binary through a
//! [`SecretResolver`]), turned into [`WebhookSink`]s on every node, and rebuilt whenever the set
//! changes (here, or announced by another node as `Change::Webhooks`). A webhook whose record
//! did not change keeps its sink, queue and deliveries in flight.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use keyward_core::model::{validate_name, AuditEvent, Severity};
use keyward_core::secret::{new_id, SecretString};
use keyward_store::WebhookRecord;
use serde_json::json;

use crate::webhook::{parse_url, WebhookConfig, WebhookSink};
use crate::{Engine, EngineError, EventSink};

/// Reads a managed webhook's signing secret on this node (from the environment or a 0600 file);
/// the message of an error names what is missing, never a secret.
pub type SecretResolver = Arc<dyn Fn(&WebhookRecord) -> Result<SecretString, String> + Send + Sync>;

/// Managed webhooks read their secret only from variables with this prefix: an admin token
/// cannot point a webhook at `KEYWARD_PEPPER` or another secret of the node.
pub const SECRET_ENV_PREFIX: &str = "KEYWARD_WEBHOOK_";
/// ... and only from files with this suffix (never the pepper, admin token or KEK files, which
/// the binary refuses by path as well).
pub const SECRET_FILE_SUFFIX: &str = ".secret";

/// Most managed webhooks.
pub const MAX_WEBHOOKS: usize = 64;
/// Longest per-attempt timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Most attempts per delivery.
pub const MAX_ATTEMPTS: u32 = 20;
/// Longest initial backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

pub(crate) struct Managed {
    resolver: SecretResolver,
    engine: Weak<Engine>,
    sinks: Mutex<Vec<(WebhookRecord, Arc<WebhookSink>)>>,
}

/// What it takes to create or replace a managed webhook (the fields of [`WebhookRecord`] a
/// caller chooses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    pub name: String,
    pub url: String,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub events: Vec<String>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Duration,
}

impl WebhookSpec {
    /// The defaults of a configured webhook: security events and expiry warnings, 5 s, 6
    /// attempts, 1 s backoff.
    pub fn new(name: &str, url: &str) -> WebhookSpec {
        WebhookSpec {
            name: name.to_owned(),
            url: url.to_owned(),
            secret_env: None,
            secret_file: None,
            events: crate::webhook::DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(5),
            max_attempts: 6,
            backoff: Duration::from_secs(1),
        }
    }

    /// The spec of a stored record.
    pub fn of(r: &WebhookRecord) -> WebhookSpec {
        WebhookSpec {
            name: r.name.clone(),
            url: r.url.clone(),
            secret_env: r.secret_env.clone(),
            secret_file: r.secret_file.clone(),
            events: r.events.clone(),
            timeout: Duration::from_millis(r.timeout_ms),
            max_attempts: r.max_attempts,
            backoff: Duration::from_millis(r.backoff_ms),
        }
    }
}

fn invalid(field: &'static str, m: impl Into<String>) -> EngineError {
    EngineError::invalid(field, m.into())
}

/// Checks a spec (everything but whether its secret can be read here).
pub fn validate(spec: &WebhookSpec) -> Result<(), EngineError> {
    validate_name(&spec.name).map_err(|e| invalid("name", e.to_string()))?;
    if spec.url.len() > 2048 {
        return Err(invalid("url", "at most 2048 characters"));
    }
    parse_url(&spec.url).map_err(|e| invalid("url", e.to_string()))?;
    match (&spec.secret_env, &spec.secret_file) {
        (Some(var), None) => {
            let ok = (1..=128).contains(&var.len())
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && var.starts_with(SECRET_ENV_PREFIX);
            if !ok {
                return Err(invalid(
                    "secret_env",
                    format!(
                        "the name of an environment variable {SECRET_ENV_PREFIX}[A-Z0-9_]* (at most 128 characters), \
                         never the secret itself"
                    ),
                ));
            }
        }
        (None, Some(path)) => {
            let ok = path.starts_with('/')
                && path.len() <= 4096
                && !path.chars().any(char::is_control)
                && path.ends_with(SECRET_FILE_SUFFIX)
                && !path.split('/').any(|part| part == "..");
            if !ok {
                return Err(invalid(
                    "secret_file",
                    format!("an absolute path, without '..', of a 0600 file named *{SECRET_FILE_SUFFIX} on the keyward nodes"),
                ));
            }
        }
        _ => return Err(invalid("secret_env", "give exactly one of secret_env and secret_file")),
    }
    if spec.events.is_empty() || spec.events.len() > 64 {
        return Err(invalid(
            "events",
            "1 to 64 event kinds (exact kinds, prefixes ending in '.', or '*')",
        ));
    }
    if spec
        .events
        .iter()
        .any(|e| e.is_empty() || e.len() > 128 || e.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(invalid("events", "an event kind is 1 to 128 characters without spaces"));
    }
    if spec.timeout < Duration::from_millis(1) || spec.timeout > MAX_TIMEOUT {
        return Err(invalid("timeout", "from 1ms to 60s"));
    }
    if spec.max_attempts == 0 || spec.max_attempts > MAX_ATTEMPTS {
        return Err(invalid("max_attempts", format!("from 1 to {MAX_ATTEMPTS}")));
    }
    if spec.backoff > MAX_BACKOFF {
        return Err(invalid("backoff", "at most 1h"));
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Managed {
    /// The sinks for `records`, keeping the sink of every record that did not change.
    fn rebuild(&self, records: Vec<WebhookRecord>) -> Vec<Arc<dyn EventSink>> {
        let Some(engine) = self.engine.upgrade() else {
            return Vec::new();
        };
        let mut current = match self.sinks.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next: Vec<(WebhookRecord, Arc<WebhookSink>)> = Vec::with_capacity(records.len());
        for r in records {
            if let Some((_, sink)) = current.iter().find(|(old, _)| *old == r) {
                next.push((r, sink.clone()));
                continue;
            }
            let secret = match (self.resolver)(&r) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(webhook = %r.name, error = %e, "managed webhook not started on this node: its secret cannot be read");
                    continue;
                }
            };
            let cfg = WebhookConfig {
                url: r.url.clone(),
                secret,
                events: r.events.clone(),
                timeout: Duration::from_millis(r.timeout_ms),
                max_attempts: r.max_attempts,
                backoff: Duration::from_millis(r.backoff_ms),
            };
            match WebhookSink::start(&engine, cfg) {
                Ok(sink) => next.push((r, sink)),
                Err(e) => tracing::error!(webhook = %r.name, error = %e, "managed webhook not started"),
            }
        }
        let sinks = next.iter().map(|(_, s)| s.clone() as Arc<dyn EventSink>).collect();
        *current = next;
        sinks
    }
}

impl Engine {
    /// Turns on managed webhooks with the binary's way of reading their secrets, and starts the
    /// stored ones. Call once, at start.
    pub async fn enable_managed_webhooks(self: &Arc<Self>, resolver: SecretResolver) -> Result<(), EngineError> {
        let managed = Managed {
            resolver,
            engine: Arc::downgrade(self),
            sinks: Mutex::new(Vec::new()),
        };
        if self.webhooks.set(managed).is_err() {
            return Err(EngineError::Conflict("managed webhooks are already enabled".into()));
        }
        self.reload_webhooks().await
    }

    fn managed(&self) -> Result<&Managed, EngineError> {
        self.webhooks
            .get()
            .ok_or_else(|| EngineError::Conflict("managed webhooks are not enabled on this node".into()))
    }

    /// Reads the managed webhooks again and rebuilds their sinks.
    pub async fn reload_webhooks(&self) -> Result<(), EngineError> {
        let Some(managed) = self.webhooks.get() else {
            return Ok(());
        };
        let records = self.store.list_webhooks().await?;
        let sinks = managed.rebuild(records);
        self.security.set_managed(sinks);
        Ok(())
    }

    pub(crate) async fn reload_webhooks_logged(&self) {
        if let Err(e) = self.reload_webhooks().await {
            tracing::warn!(error = %e, "cannot re-read the managed webhooks");
        }
    }

    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, EngineError> {
        Ok(self.store.list_webhooks().await?)
    }

    /// A managed webhook by id or name.
    pub async fn get_webhook(&self, id_or_name: &str) -> Result<WebhookRecord, EngineError> {
        self.store
            .list_webhooks()
            .await?
            .into_iter()
            .find(|w| w.id == id_or_name || w.name == id_or_name)
            .ok_or(EngineError::NotFound("webhook"))
    }

    /// Checks a spec and that this node can read its secret now.
    fn check_spec(&self, spec: &WebhookSpec, probe: &WebhookRecord) -> Result<(), EngineError> {
        validate(spec)?;
        let field = if spec.secret_env.is_some() {
            "secret_env"
        } else {
            "secret_file"
        };
        (self.managed()?.resolver)(probe).map_err(|e| invalid(field, e))?;
        Ok(())
    }

    async fn audit_webhook(&self, actor: &str, kind: &str, id: &str, details: serde_json::Value) {
        let event = AuditEvent {
            seq: 0,
            at: self.now(),
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            severity: Severity::Info,
            target: Some(id.to_owned()),
            source_ip: None,
            details,
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %e, kind, "could not append to the audit log");
        }
    }

    /// Creates a managed webhook (audited as `webhook.created`).
    pub async fn create_webhook(&self, actor: &str, spec: WebhookSpec) -> Result<WebhookRecord, EngineError> {
        if self.store.list_webhooks().await?.len() >= MAX_WEBHOOKS {
            return Err(EngineError::Conflict(format!(
                "at most {MAX_WEBHOOKS} managed webhooks"
            )));
        }
        let now = self.now();
        let record = WebhookRecord {
            id: new_id("wh")?,
            name: spec.name.clone(),
            url: spec.url.clone(),
            secret_env: spec.secret_env.clone(),
            secret_file: spec.secret_file.clone(),
            events: spec.events.clone(),
            timeout_ms: millis(spec.timeout),
            max_attempts: spec.max_attempts,
            backoff_ms: millis(spec.backoff),
            created_at: now,
            updated_at: now,
        };
        self.check_spec(&spec, &record)?;
        self.store.create_webhook(&record).await?;
        self.reload_webhooks_logged().await;
        self.audit_webhook(actor, "webhook.created", &record.id, json!({"after": record}))
            .await;
        Ok(record)
    }

    /// Replaces a managed webhook's settings (audited as `webhook.updated`).
    pub async fn update_webhook(
        &self,
        actor: &str,
        id_or_name: &str,
        spec: WebhookSpec,
    ) -> Result<WebhookRecord, EngineError> {
        let before = self.get_webhook(id_or_name).await?;
        let after = WebhookRecord {
            name: spec.name.clone(),
            url: spec.url.clone(),
            secret_env: spec.secret_env.clone(),
            secret_file: spec.secret_file.clone(),
            events: spec.events.clone(),
            timeout_ms: millis(spec.timeout),
            max_attempts: spec.max_attempts,
            backoff_ms: millis(spec.backoff),
            updated_at: self.now(),
            ..before.clone()
        };
        self.check_spec(&spec, &after)?;
        if WebhookSpec::of(&after) == WebhookSpec::of(&before) {
            return Ok(before);
        }
        if !self.store.update_webhook(&after).await? {
            return Err(EngineError::NotFound("webhook"));
        }
        self.reload_webhooks_logged().await;
        self.audit_webhook(
            actor,
            "webhook.updated",
            &after.id,
            json!({"before": before, "after": after}),
        )
        .await;
        Ok(after)
    }

    /// Deletes a managed webhook (audited as `webhook.deleted`); deliveries in flight finish.
    pub async fn delete_webhook(&self, actor: &str, id_or_name: &str) -> Result<(), EngineError> {
        let before = self.get_webhook(id_or_name).await?;
        if !self.store.delete_webhook(&before.id).await? {
            return Err(EngineError::NotFound("webhook"));
        }
        self.reload_webhooks_logged().await;
        self.audit_webhook(actor, "webhook.deleted", &before.id, json!({"before": before}))
            .await;
        Ok(())
    }
}

/// Keeps the type names short in `lib.rs`.
pub(crate) type ManagedCell = OnceLock<Managed>;
