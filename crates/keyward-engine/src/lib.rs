//! keyward engine: the request pipeline without HTTP and the admin operations.
//!
//! The edge crates translate HTTP into calls of [`Engine`] and its results back into HTTP;
//! everything that decides lives here or below.
#![forbid(unsafe_code)]

mod clock;
mod error;

use std::sync::Arc;

use keyward_core::key::display_hint;
use keyward_core::model::{validate_name, KeyUpdate};
use keyward_core::policy::{Policy, QuotaSpec, RateSpec};
use keyward_core::secret::{new_id, SecretString};
use keyward_core::{authorize, AppRecord, Decision, Denial, KeyEnv, KeyFormat, KeyRecord, Pepper, RequestFacts, Scope};
use keyward_limit::{LocalLimiter, QuotaCheck, RateCheck};
use keyward_store::{CacheConfig, KeyCache, Lookup, Store};
use time::OffsetDateTime;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{EngineError, Rejection};
pub use keyward_limit::{LimitState, Outcome};

/// What it takes to create a key.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// App id or name.
    pub app: String,
    pub name: Option<String>,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<OffsetDateTime>,
    pub env: KeyEnv,
    pub policy: Policy,
}

/// Who shares a route's rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateBy {
    /// Each key gets the route's rate (default).
    #[default]
    Key,
    /// All keys of an app share it.
    App,
    /// Everyone shares it.
    Global,
}

/// The limits a route adds to those of the key and its app.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    pub route: String,
    pub rate: Option<RateSpec>,
    pub rate_by: RateBy,
    /// Quota units one request costs (default 1).
    pub cost: u64,
}

/// The pipeline and the admin operations over one store.
pub struct Engine {
    store: Arc<dyn Store>,
    cache: KeyCache,
    pepper: Pepper,
    format: KeyFormat,
    clock: Arc<dyn Clock>,
    limiter: LocalLimiter,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        pepper: Pepper,
        format: KeyFormat,
        cache: CacheConfig,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        Engine {
            cache: KeyCache::new(store.clone(), cache),
            store,
            pepper,
            format,
            clock,
            limiter: LocalLimiter::new(),
        }
    }

    pub fn limiter(&self) -> &LocalLimiter {
        &self.limiter
    }

    /// Now in nanoseconds since the Unix epoch (the limiter's clock).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.now().unix_timestamp_nanos()).unwrap_or(0)
    }

    /// Consumes from every limit that applies to this request, all or nothing: the key's and
    /// its app's rate and quota, and the route's rate. A refused request consumes nothing.
    pub fn admit(&self, record: &KeyRecord, route: &RouteLimits) -> Outcome {
        let l = &self.limiter;
        let mut rates = Vec::with_capacity(3);
        let mut quotas = Vec::with_capacity(2);
        if let Some(spec) = record.policy.rate {
            rates.push(RateCheck {
                name: "key",
                key: l.key(&["key-rate", &record.id]),
                spec,
                cost: 1,
            });
        }
        if let Some(spec) = record.app_policy.rate {
            rates.push(RateCheck {
                name: "app",
                key: l.key(&["app-rate", &record.app_id]),
                spec,
                cost: 1,
            });
        }
        if let Some(spec) = route.rate {
            let key = match route.rate_by {
                RateBy::Key => l.key(&["route-rate", &route.route, "key", &record.id]),
                RateBy::App => l.key(&["route-rate", &route.route, "app", &record.app_id]),
                RateBy::Global => l.key(&["route-rate", &route.route]),
            };
            rates.push(RateCheck {
                name: "route",
                key,
                spec,
                cost: 1,
            });
        }
        let cost = route.cost.max(1);
        let quota = |name: &'static str, key, spec: QuotaSpec| QuotaCheck { name, key, spec, cost };
        if let Some(spec) = record.policy.quota {
            quotas.push(quota("key-quota", l.key(&["key-quota", &record.id]), spec));
        }
        if let Some(spec) = record.app_policy.quota {
            quotas.push(quota("app-quota", l.key(&["app-quota", &record.app_id]), spec));
        }
        l.check(&rates, &quotas, self.now_ns())
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    pub fn format(&self) -> &KeyFormat {
        &self.format
    }

    /// Now, to the second: the precision of every stored timestamp.
    pub fn now(&self) -> OffsetDateTime {
        let t = self.clock.now();
        t.replace_nanosecond(0).unwrap_or(t)
    }

    /// Authenticates a presented key and authorizes it for a request.
    ///
    /// Order: parse (length, prefix, alphabet, checksum) → digest → cached lookup by digest
    /// → the pure decision. Malformed input never reaches the store.
    pub async fn verify_key(&self, presented: &str, facts: &RequestFacts<'_>) -> Result<Arc<KeyRecord>, Rejection> {
        self.format.parse(presented).map_err(Rejection::Malformed)?;
        let digest = self.pepper.digest(presented.as_bytes());
        let record = match self.cache.lookup(&digest).await.map_err(Rejection::Store)? {
            Lookup::Found(r) => r,
            Lookup::Unknown => return Err(Rejection::Unknown),
        };
        match authorize(&record, facts, self.clock.now()) {
            Decision::Allow => Ok(record),
            Decision::Deny(Denial::Revoked) => Err(Rejection::Revoked {
                key_id: record.id.clone(),
            }),
            Decision::Deny(Denial::Expired) => Err(Rejection::Expired {
                key_id: record.id.clone(),
            }),
            Decision::Deny(Denial::IpNotAllowed) => Err(Rejection::IpNotAllowed {
                key_id: record.id.clone(),
            }),
            Decision::Deny(Denial::InsufficientScope { missing }) => Err(Rejection::InsufficientScope {
                key_id: record.id.clone(),
                missing,
            }),
        }
    }

    // ---- admin operations -------------------------------------------------------------

    pub async fn create_app(&self, name: &str, policy: Policy) -> Result<AppRecord, EngineError> {
        validate_name(name).map_err(|e| EngineError::invalid("name", e.to_string()))?;
        let app = AppRecord {
            id: new_id("app")?,
            name: name.to_owned(),
            created_at: self.now(),
            policy,
        };
        self.store.create_app(&app).await?;
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
    pub async fn create_key(&self, new: NewKey) -> Result<(KeyRecord, SecretString), EngineError> {
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
        let secret = self.format.generate(new.env)?;
        let digest = self.pepper.digest(secret.expose().as_bytes());
        let record = KeyRecord {
            id: new_id("key")?,
            app_id: app.id,
            app_name: app.name,
            name: new.name,
            hint: display_hint(secret.expose()),
            env: new.env,
            scopes,
            expires_at: new.expires_at,
            created_at: now,
            revoked_at: None,
            policy: new.policy,
            app_policy: app.policy,
        };
        self.store.create_key(&record, &digest).await?;
        // The digest may sit in the negative cache (someone tried this exact key before it
        // existed: practically impossible, but cheap to rule out).
        self.cache.invalidate(&digest);
        Ok((record, secret))
    }

    /// Changes a key's name, scopes or limits; the next request sees the change.
    pub async fn update_key(&self, id: &str, mut update: KeyUpdate) -> Result<KeyRecord, EngineError> {
        if let Some(Some(name)) = &update.name {
            validate_name(name).map_err(|e| EngineError::invalid("name", e.to_string()))?;
        }
        if let Some(scopes) = update.scopes.as_mut() {
            scopes.sort();
            scopes.dedup();
        }
        let (record, digest) = self
            .store
            .update_key(id, &update)
            .await?
            .ok_or(EngineError::NotFound("key"))?;
        self.cache.invalidate(&digest);
        Ok(record)
    }

    /// Replaces an app's limits; the next request of any of its keys sees the change.
    pub async fn update_app_policy(&self, app: &str, policy: Policy) -> Result<AppRecord, EngineError> {
        let id = self.get_app(app).await?.id;
        let (app, digests) = self
            .store
            .update_app_policy(&id, &policy)
            .await?
            .ok_or(EngineError::NotFound("app"))?;
        for d in &digests {
            self.cache.invalidate(d);
        }
        Ok(app)
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

    /// Revokes a key; the very next request with it is refused (the cache entry is dropped
    /// before this returns).
    pub async fn revoke_key(&self, id: &str) -> Result<KeyRecord, EngineError> {
        let (record, digest) = self
            .store
            .revoke_key(id, self.now())
            .await?
            .ok_or(EngineError::NotFound("key"))?;
        self.cache.invalidate(&digest);
        Ok(record)
    }
}
