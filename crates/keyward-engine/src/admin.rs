//! Admin operations. Every change is audited with its actor and the record before and after
//! (records never hold a secret).

use keyward_core::key::display_hint;
use keyward_core::model::{validate_name, AuditEvent, KeyUpdate, Lifecycle, Severity};
use keyward_core::policy::Policy;
use keyward_core::secret::{new_id, SecretString};
use keyward_core::when::MAX_LIFETIME;
use keyward_core::{AppRecord, KeyKind, KeyRecord};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::{Engine, EngineError, NewKey};

/// How a rotation should treat the successor's expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SuccessorExpiry {
    /// Keep the old key's policy: a key that expired after L keeps a lifetime of L; a key
    /// without expiry gets none.
    #[default]
    Keep,
    /// Expire at this instant.
    At(OffsetDateTime),
    /// No expiry.
    Never,
}

impl Engine {
    /// Drops what the cache holds about a key after a change: by digest, or by id for a
    /// tombstone (no digest any more).
    pub(crate) fn forget_key(&self, id: &str, digest: Option<&keyward_core::Digest>) {
        match digest {
            Some(d) => self.cache.invalidate(d),
            None => self.cache.invalidate_key_id(id),
        }
    }

    async fn audit_change(
        &self,
        actor: &str,
        kind: &str,
        target: &str,
        before: Option<&impl serde::Serialize>,
        after: Option<&impl serde::Serialize>,
    ) {
        let event = AuditEvent {
            seq: 0,
            at: self.now(),
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            severity: Severity::Info,
            target: Some(target.to_owned()),
            source_ip: None,
            details: json!({"before": before, "after": after}),
        };
        if let Err(e) = self.audit(event).await {
            // The change itself succeeded; losing its audit row is an operational alarm.
            tracing::error!(error = %e, kind, target, "could not append to the audit log");
        }
    }

    pub async fn create_app(&self, actor: &str, name: &str, policy: Policy) -> Result<AppRecord, EngineError> {
        validate_name(name).map_err(|e| EngineError::invalid("name", e.to_string()))?;
        let app = AppRecord {
            id: new_id("app")?,
            name: name.to_owned(),
            created_at: self.now(),
            policy,
        };
        self.store.create_app(&app).await?;
        self.audit_change(actor, "app.created", &app.id, None::<&AppRecord>, Some(&app))
            .await;
        Ok(app)
    }

    pub async fn get_app(&self, id_or_name: &str) -> Result<AppRecord, EngineError> {
        self.store
            .get_app(id_or_name)
            .await?
            .ok_or(EngineError::NotFound("app"))
    }

    pub async fn list_apps(&self) -> Result<Vec<AppRecord>, EngineError> {
        Ok(self.store.list_apps().await?)
    }

    /// Creates a key and returns its record and its plaintext, which is never stored nor
    /// shown again.
    pub async fn create_key(&self, actor: &str, new: NewKey) -> Result<(KeyRecord, SecretString), EngineError> {
        if let Some(name) = &new.name {
            validate_name(name).map_err(|e| EngineError::invalid("name", e.to_string()))?;
        }
        let now = self.now();
        if let Some(exp) = new.expires_at {
            if exp <= now {
                return Err(EngineError::invalid(
                    "expires_at",
                    "the expiry must be in the future".into(),
                ));
            }
        }
        let app = self.get_app(&new.app).await?;
        let mut scopes = new.scopes;
        scopes.sort();
        scopes.dedup();
        self.check_kind(new.kind, &scopes, &new.policy, new.exchange_only)?;
        let expires_at = apply_key_rules(&app.policy.key_rules, new.kind, new.expires_at, now)?;
        let secret = self.format.generate_kind(new.kind, new.env)?;
        let digest = self.pepper.digest(secret.expose().as_bytes());
        let record = KeyRecord {
            id: new_id("key")?,
            app_id: app.id,
            app_name: app.name,
            name: new.name,
            hint: display_hint(secret.expose()),
            env: new.env,
            scopes,
            expires_at,
            created_at: now,
            revoked_at: None,
            policy: new.policy,
            app_policy: app.policy,
            lifecycle: Lifecycle {
                canary: new.canary,
                exchange_only: new.exchange_only,
                ..Default::default()
            },
        };
        self.store.create_key(&record, &digest).await?;
        // The digest may sit in the negative cache (someone tried this exact key before it
        // existed: practically impossible, but cheap to rule out).
        self.cache.invalidate(&digest);
        self.audit_change(actor, "key.created", &record.id, None::<&KeyRecord>, Some(&record))
            .await;
        Ok((record, secret))
    }

    /// What a key of `kind` may carry. Publishable keys sit in web pages: they need at least one
    /// allowed origin, may only carry public-safe scopes (those of routes marked
    /// `publishable = true`) and never anything that reads as a write, and are never
    /// exchange-only; secret keys have no origins.
    fn check_kind(
        &self,
        kind: KeyKind,
        scopes: &[keyward_core::Scope],
        policy: &keyward_core::policy::Policy,
        exchange_only: bool,
    ) -> Result<(), EngineError> {
        match kind {
            KeyKind::Secret => {
                if !policy.origins.is_empty() {
                    return Err(EngineError::invalid(
                        "origins",
                        "only publishable keys are bound to web origins".into(),
                    ));
                }
            }
            KeyKind::Publishable => {
                if policy.origins.is_empty() {
                    return Err(EngineError::invalid(
                        "origins",
                        "a publishable key needs at least one allowed origin (https://your.site)".into(),
                    ));
                }
                if exchange_only {
                    return Err(EngineError::invalid(
                        "exchange_only",
                        "publishable keys are never accepted at the token endpoint".into(),
                    ));
                }
                for s in scopes {
                    let w = s.as_str().to_ascii_lowercase();
                    let writeish = ["write", "admin", "delete", "manage", "create", "update"]
                        .iter()
                        .any(|v| w.split([':', '.', '/', '-', '_']).any(|part| part == *v));
                    if writeish {
                        return Err(EngineError::invalid(
                            "scopes",
                            format!("publishable keys are read-only: {s} reads as a write scope"),
                        ));
                    }
                    if let Some(public) = &self.options.publishable_scopes {
                        if !public.contains(s) {
                            return Err(EngineError::invalid(
                                "scopes",
                                format!("{s} is not a scope of any route marked publishable"),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn get_key(&self, id: &str) -> Result<KeyRecord, EngineError> {
        self.store.get_key(id).await?.ok_or(EngineError::NotFound("key"))
    }

    pub async fn list_keys(&self, app: Option<&str>) -> Result<Vec<KeyRecord>, EngineError> {
        let app_id = match app {
            Some(a) => Some(self.get_app(a).await?.id),
            None => None,
        };
        Ok(self.store.list_keys(app_id.as_deref()).await?)
    }

    /// Changes a key's name, scopes, limits or disabled state; the next request sees it.
    pub async fn update_key(&self, actor: &str, id: &str, mut update: KeyUpdate) -> Result<KeyRecord, EngineError> {
        if let Some(Some(name)) = &update.name {
            validate_name(name).map_err(|e| EngineError::invalid("name", e.to_string()))?;
        }
        if let Some(scopes) = update.scopes.as_mut() {
            scopes.sort();
            scopes.dedup();
        }
        let before = self.get_key(id).await?;
        if before.lifecycle.purged_at.is_some() {
            return Err(EngineError::Conflict(
                "the key was purged by retention: its record is a tombstone".into(),
            ));
        }
        let (record, digest) = self
            .store
            .update_key(id, &update)
            .await?
            .ok_or(EngineError::NotFound("key"))?;
        self.forget_key(id, digest.as_ref());
        self.announce(crate::Changed::Key(id.to_owned()));
        let kind = match update.disabled_at {
            Some(Some(_)) => "key.disabled",
            Some(None) => "key.enabled",
            None => "key.updated",
        };
        self.audit_change(actor, kind, id, Some(&before), Some(&record)).await;
        Ok(record)
    }

    /// Disables a key until [`Engine::enable_key`]; takes effect on the next request.
    pub async fn disable_key(&self, actor: &str, id: &str) -> Result<KeyRecord, EngineError> {
        let k = self.get_key(id).await?;
        if k.revoked_at.is_some() {
            return Err(EngineError::Conflict("the key is revoked; revocation is final".into()));
        }
        if k.lifecycle.disabled_at.is_some() {
            return Ok(k);
        }
        self.update_key(
            actor,
            id,
            KeyUpdate {
                disabled_at: Some(Some(self.now())),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn enable_key(&self, actor: &str, id: &str) -> Result<KeyRecord, EngineError> {
        let k = self.get_key(id).await?;
        if k.revoked_at.is_some() {
            return Err(EngineError::Conflict("the key is revoked; revocation is final".into()));
        }
        if k.lifecycle.disabled_at.is_none() {
            return Ok(k);
        }
        self.update_key(
            actor,
            id,
            KeyUpdate {
                disabled_at: Some(None),
                ..Default::default()
            },
        )
        .await
    }

    /// Replaces an app's limits; the next request of any of its keys sees the change.
    pub async fn update_app_policy(&self, actor: &str, app: &str, policy: Policy) -> Result<AppRecord, EngineError> {
        let before = self.get_app(app).await?;
        let (app, digests) = self
            .store
            .update_app_policy(&before.id, &policy)
            .await?
            .ok_or(EngineError::NotFound("app"))?;
        for d in &digests {
            self.cache.invalidate(d);
        }
        self.announce(crate::Changed::App(app.id.clone()));
        self.audit_change(actor, "app.updated", &app.id, Some(&before), Some(&app))
            .await;
        Ok(app)
    }

    /// Revokes a key; the very next request with it is refused (the cache entry is dropped
    /// before this returns). Idempotent.
    pub async fn revoke_key(&self, actor: &str, id: &str, reason: Option<&str>) -> Result<KeyRecord, EngineError> {
        let before = self.get_key(id).await?;
        let (record, digest) = self
            .store
            .revoke_key(id, self.now())
            .await?
            .ok_or(EngineError::NotFound("key"))?;
        self.forget_key(id, digest.as_ref());
        self.announce(crate::Changed::Key(id.to_owned()));
        if before.revoked_at.is_none() {
            let event = AuditEvent {
                seq: 0,
                at: self.now(),
                actor: actor.to_owned(),
                kind: "key.revoked".into(),
                severity: Severity::Info,
                target: Some(id.to_owned()),
                source_ip: None,
                details: json!({"before": before, "after": record, "reason": reason}),
            };
            if let Err(e) = self.audit(event).await {
                tracing::error!(error = %e, "could not append to the audit log");
            }
        }
        Ok(record)
    }

    /// Rotates a key: a successor with the same app, name, scopes, limits and allowlists,
    /// and the old key kept working until `grace` has passed (never beyond its own expiry).
    /// Returns (old key after the change, successor, successor's plaintext).
    pub async fn rotate_key(
        &self,
        actor: &str,
        id: &str,
        grace: Duration,
        expiry: SuccessorExpiry,
    ) -> Result<(KeyRecord, KeyRecord, SecretString), EngineError> {
        if grace.is_negative() {
            return Err(EngineError::invalid(
                "grace",
                "the grace period cannot be negative".into(),
            ));
        }
        if grace > MAX_LIFETIME {
            return Err(EngineError::invalid(
                "grace",
                "the grace period is longer than 100 years".into(),
            ));
        }
        let now = self.now();
        let old = self.get_key(id).await?;
        if old.revoked_at.is_some() {
            return Err(EngineError::Conflict(
                "the key is revoked; create a new key instead".into(),
            ));
        }
        if let Some(next) = &old.lifecycle.rotated_to {
            return Err(EngineError::Conflict(format!(
                "the key was already rotated; its successor is {next}"
            )));
        }
        if old.lifecycle.canary {
            return Err(EngineError::Conflict("canary keys are not rotated".into()));
        }
        if old.expires_at.is_some_and(|t| t <= now) {
            return Err(EngineError::Conflict(
                "the key has expired; create a new key instead".into(),
            ));
        }
        let successor_expiry = match expiry {
            SuccessorExpiry::Never => None,
            SuccessorExpiry::At(t) => {
                if t <= now {
                    return Err(EngineError::invalid(
                        "expires_at",
                        "the expiry must be in the future".into(),
                    ));
                }
                Some(t)
            }
            SuccessorExpiry::Keep => old
                .expires_at
                .map(|exp| now + (exp - old.created_at).max(Duration::SECOND)),
        };
        // The app's rules apply to the successor as to any new key.
        let app = self.get_app(&old.app_id).await?;
        let successor_expiry = apply_key_rules(&app.policy.key_rules, old.kind(), successor_expiry, now)?;
        let end_of_grace = now + grace;
        let old_expires_at = match old.expires_at {
            Some(t) if t < end_of_grace => t,
            _ => end_of_grace,
        };
        let secret = self.format.generate_kind(old.kind(), old.env)?;
        let digest = self.pepper.digest(secret.expose().as_bytes());
        let successor = KeyRecord {
            id: new_id("key")?,
            hint: display_hint(secret.expose()),
            expires_at: successor_expiry,
            created_at: now,
            revoked_at: None,
            lifecycle: Lifecycle {
                rotated_from: Some(old.id.clone()),
                exchange_only: old.lifecycle.exchange_only,
                // The successor counts its rate and quota where its predecessor did: a rotation
                // resets no limit, and both keys share one budget during the grace period.
                limit_id: Some(old.limit_id().to_owned()),
                ..Default::default()
            },
            ..old.clone()
        };
        let (old_after, old_digest) = self
            .store
            .rotate_key(id, &successor, &digest, old_expires_at, now)
            .await?;
        self.cache.invalidate(&old_digest);
        self.cache.invalidate(&digest);
        self.announce(crate::Changed::Key(id.to_owned()));
        let event = AuditEvent {
            seq: 0,
            at: now,
            actor: actor.to_owned(),
            kind: "key.rotated".into(),
            severity: Severity::Info,
            target: Some(id.to_owned()),
            source_ip: None,
            details: json!({"before": old, "after": old_after, "successor": successor}),
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %e, "could not append to the audit log");
        }
        Ok((old_after, successor, secret))
    }
}

/// What the store knows about a presented key (for `keyward scan`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyCheck {
    /// `active`, `disabled`, `expired`, `revoked`, `canary`, `unknown` or `malformed`.
    pub status: &'static str,
    pub id: Option<String>,
    pub app_id: Option<String>,
    pub hint: Option<String>,
}

impl Engine {
    /// Looks presented keys up by digest and reports their state; never records usage and
    /// never changes anything. Canary keys are reported as such (the caller is an admin).
    pub async fn check_keys(&self, keys: &[String]) -> Result<Vec<KeyCheck>, EngineError> {
        let now = self.now();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if self.format.parse(k).is_err() {
                out.push(KeyCheck {
                    status: "malformed",
                    id: None,
                    app_id: None,
                    hint: None,
                });
                continue;
            }
            let digest = self.pepper.digest(k.as_bytes());
            let found = self.store.key_by_digest(&digest).await?;
            out.push(match found {
                Some((rec, stored)) if stored.ct_eq(&digest) => KeyCheck {
                    status: if rec.lifecycle.canary {
                        "canary"
                    } else {
                        match rec.state(now) {
                            keyward_core::model::KeyState::Active => "active",
                            keyward_core::model::KeyState::Disabled => "disabled",
                            keyward_core::model::KeyState::Expired => "expired",
                            keyward_core::model::KeyState::Revoked => "revoked",
                        }
                    },
                    id: Some(rec.id.clone()),
                    app_id: Some(rec.app_id.clone()),
                    hint: Some(rec.hint.clone()),
                },
                _ => KeyCheck {
                    status: "unknown",
                    id: None,
                    app_id: None,
                    hint: None,
                },
            });
        }
        Ok(out)
    }
}

/// Shortest and longest secret accepted by `key import`.
pub const LEGACY_MIN_LEN: usize = 8;
pub const LEGACY_MAX_LEN: usize = 512;

/// Whether `s` could be an imported legacy secret (visible ASCII, sane length).
pub fn plausible_legacy(s: &str) -> bool {
    (LEGACY_MIN_LEN..=LEGACY_MAX_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// A display hint for a legacy secret that never reveals more than a third of it.
fn legacy_hint(s: &str) -> String {
    if s.len() >= 24 {
        format!("legacy:{}…{}", &s[..4], &s[s.len() - 4..])
    } else {
        "legacy:…".to_owned()
    }
}

/// What it takes to import a legacy static secret.
#[derive(Debug, Clone)]
pub struct ImportKey {
    pub app: String,
    pub name: Option<String>,
    pub scopes: Vec<keyward_core::Scope>,
    /// When the legacy secret stops working (a default sunset nudges clients to rotate).
    pub expires_at: Option<OffsetDateTime>,
    pub policy: Policy,
}

impl Engine {
    /// Imports an existing static secret: stores only its digest, marks it legacy. Its
    /// responses carry `Deprecation` and `Sunset` from the start.
    pub async fn import_key(&self, actor: &str, secret: &str, new: ImportKey) -> Result<KeyRecord, EngineError> {
        let secret = secret.trim();
        if !plausible_legacy(secret) {
            return Err(EngineError::invalid(
                "secret",
                format!("a legacy secret is {LEGACY_MIN_LEN} to {LEGACY_MAX_LEN} visible ASCII characters"),
            ));
        }
        if self.format.parse(secret).is_ok() {
            return Err(EngineError::invalid(
                "secret",
                "this is a keyward key, not a legacy secret".into(),
            ));
        }
        if let Some(name) = &new.name {
            validate_name(name).map_err(|e| EngineError::invalid("name", e.to_string()))?;
        }
        let now = self.now();
        if new.expires_at.is_some_and(|t| t <= now) {
            return Err(EngineError::invalid(
                "expires_at",
                "the sunset must be in the future".into(),
            ));
        }
        let app = self.get_app(&new.app).await?;
        let digest = self.pepper.digest(secret.as_bytes());
        let mut scopes = new.scopes;
        scopes.sort();
        scopes.dedup();
        let record = KeyRecord {
            id: new_id("key")?,
            app_id: app.id,
            app_name: app.name,
            name: new.name,
            hint: legacy_hint(secret),
            env: keyward_core::KeyEnv::Live,
            scopes,
            expires_at: new.expires_at,
            created_at: now,
            revoked_at: None,
            policy: new.policy,
            app_policy: app.policy,
            lifecycle: Lifecycle {
                legacy: true,
                ..Default::default()
            },
        };
        self.store.create_key(&record, &digest).await.map_err(|e| match e {
            keyward_store::StoreError::Conflict(_) => EngineError::Conflict("this secret is already imported".into()),
            other => other.into(),
        })?;
        self.set_legacy_present();
        self.cache.invalidate(&digest);
        self.audit_change(actor, "key.imported", &record.id, None::<&KeyRecord>, Some(&record))
            .await;
        Ok(record)
    }
}

/// An app's key rules applied to a new key's expiry: refuses kinds the app does not allow
/// (checked by the caller through `allows`) and secret keys without expiry when one is
/// required; caps the lifetime at the maximum (a key without expiry gets the maximum).
fn apply_key_rules(
    rules: &keyward_core::policy::KeyRules,
    kind: KeyKind,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, EngineError> {
    if !rules.allows(kind) {
        return Err(EngineError::invalid(
            "kind",
            format!("the app does not allow {} keys", kind.as_str()),
        ));
    }
    if let Some(max) = rules.max_lifetime_secs {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let latest = now + Duration::seconds(max);
        return Ok(Some(match expires_at {
            Some(t) if t <= latest => t,
            _ => latest,
        }));
    }
    if rules.require_expiry && kind == KeyKind::Secret && expires_at.is_none() {
        return Err(EngineError::invalid(
            "expires_at",
            "the app requires an expiry on secret keys (expires_at or expires_in)".into(),
        ));
    }
    Ok(expires_at)
}
