//! Cross-node cache invalidation: every node sharing a PostgreSQL store hears every change
//! (announced by id in the writing transaction, see `keyward_store::PgStore`) and drops what
//! it has cached about the object, through the same paths a local admin change takes.
//!
//! Bounds when announcements are lost:
//! - the listener reconnects with backoff and, once back, announces `Resync`: every cache is
//!   dropped and the signing keys and the token denylist are read again;
//! - as a backstop, [`run`] re-reads the signing keys and the denylist every `revalidate`
//!   interval, the key cache re-reads a record once it is older than its `ttl` (which the
//!   server caps at `store.revalidate_interval` for a PostgreSQL store), and OAuth clients live
//!   30 s in their cache. So a lost announcement keeps a revoked key alive at most
//!   `revalidate_interval` (plus `stale_ttl` only while the store itself is unreachable).

use std::sync::Arc;
use std::time::Duration;

use keyward_store::Change;
use tokio::sync::broadcast::error::RecvError;

use crate::Engine;

/// Follows the store's change announcements until `stop` turns true. Returns at once for a
/// store without announcements (SQLite: one process, every change is local).
pub async fn run(engine: Arc<Engine>, revalidate: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(mut changes) = engine.store().changes() else {
        return;
    };
    let mut tick = tokio::time::interval(revalidate.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => engine.apply_change(&change).await,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "change announcements overflowed; dropping caches");
                    engine.apply_change(&Change::Resync).await;
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => engine.revalidate_token_state().await,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}

impl Engine {
    /// Drops what this node caches about a changed object (a change made by any node).
    pub async fn apply_change(&self, change: &Change) {
        tracing::debug!(change = %change.encode(), "change announced");
        match change {
            Change::Key(id) => self.announce(crate::Changed::Key(id.clone())),
            Change::App(id) => self.announce(crate::Changed::App(id.clone())),
            Change::Client(id) => self.announce(crate::Changed::Client(id.clone())),
            Change::Resync => self.announce(crate::Changed::All),
            // Token revocations are announced when the denylist is read again.
            Change::KeyCreated { .. } | Change::SigningKeys | Change::TokenRevoked | Change::Webhooks => {}
        }
        match change {
            Change::Key(id) => self.cache.invalidate_key_id(id),
            Change::KeyCreated { id, legacy } => {
                // The new key's digest may sit in the negative cache (tried before it existed).
                self.cache.forget_created(id).await;
                if *legacy {
                    self.set_legacy_present();
                }
            }
            Change::App(id) => self.cache.invalidate_app(id),
            Change::Client(id) => self.clients.invalidate(id),
            Change::SigningKeys => self.reload_signing_keys_logged().await,
            Change::TokenRevoked => self.reload_revoked_tokens_logged().await,
            Change::Webhooks => self.reload_webhooks_logged().await,
            Change::Resync => {
                self.cache.clear();
                self.clients.invalidate_all();
                if let Err(e) = self.load_legacy_flag().await {
                    tracing::warn!(error = %e, "resync: cannot read the legacy-key flag");
                }
                self.revalidate_token_state().await;
                self.reload_webhooks_logged().await;
            }
        }
    }

    /// Re-reads the signing keys and the token denylist (when the token service is on).
    pub async fn revalidate_token_state(&self) {
        self.reload_signing_keys_logged().await;
        self.reload_revoked_tokens_logged().await;
    }

    async fn reload_signing_keys_logged(&self) {
        if self.token_service().is_ok() {
            if let Err(e) = self.reload_signing_keys().await {
                tracing::warn!(error = %e, "cannot re-read the signing keys");
            }
        }
    }

    async fn reload_revoked_tokens_logged(&self) {
        if self.token_service().is_ok() {
            if let Err(e) = self.reload_revoked_tokens().await {
                tracing::warn!(error = %e, "cannot re-read the token denylist");
            }
        }
    }
}
