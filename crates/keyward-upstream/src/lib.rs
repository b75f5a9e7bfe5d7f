//! keyward's data plane, upstream side: targets, balancing, passive and active health,
//! connection pools for HTTP/1.1, h2c and h2 over rustls, and tunnels for upgraded connections
//! with their registry (for revocation). It knows HTTP as a client; the decision (who may pass)
//! never lives here.
//!
//! # Interface
//!
//! - [`Upstreams::build`]`(&[GroupConfig], PoolOptions)` — validates the `[[upstreams]]` groups,
//!   loads their TLS material and spawns one active-health task per group that has
//!   `[upstreams.health]` (call it inside a tokio runtime). Dropping the `Upstreams` (or
//!   [`Upstreams::stop`]) stops the tasks: a reload builds a new one and drops the old.
//! - [`Upstreams::group`]`(name) -> Option<Arc<Group>>`, and [`Upstreams::single`] for a
//!   route's plain `upstream = "URL"` (a group of one target).
//! - [`Group::send`]`(Request<B>, &SendOptions) -> Result<Response<ResponseBody>, UpstreamError>`:
//!   the request's URI is the client's (its path and query are used: `strip_prefix`, then the
//!   target's base path); `Host` is set to the target unless present (`preserve_host`: for h2 it
//!   becomes `:authority`). Hop-by-hop headers are the caller's to remove. `SendOptions` carries
//!   the route's `connect_timeout` and `timeout` (until the response header), the caller's hash
//!   ([`hash_key`]) and the route prefix to strip. The response's `version` is the upstream's
//!   (an HTTP/1.0 upstream answers `HTTP/1.0`): the gateway answers its client in the client's
//!   version regardless. The body streams, trailers included (gRPC).
//! - [`UpstreamError::code`] — stable codes; statuses are chosen in keyward-edge's `problem.rs`.
//! - [`Upstreams::status`] — per group and target: URL, healthy, ejected until, recent fails,
//!   in flight, protocol (serializable, for `/metrics` and `GET /v1/upstreams`).
//! - [`tunnel::pump`], [`tunnel::Registry`], [`tunnel::Owner`] — upgraded connections.
//!
//! # Behaviour
//!
//! - Balancing: `round_robin`; `least_requests` (fewest in-flight requests, response bodies
//!   included; ties in rotation); `hash` — rendezvous (highest random weight) hashing of the
//!   caller's `u64`, so a caller keeps its target while it is available and ejecting a target
//!   moves only that target's callers.
//! - Passive health as nginx: `max_fails` failures (connect, TLS, timeout, reset, invalid
//!   response) within `fail_timeout` eject the target for `fail_timeout`. Active health marks
//!   targets down and up. A request goes only to available targets; none → `no_healthy_upstream`.
//! - Retry: a request without a body, or with an idempotent method, that fails to connect (or
//!   TLS), or whose connection is closed or reset before any response byte, is retried once on
//!   another target. An idempotent request whose body already went out cannot be re-sent and is
//!   not retried. A response-header timeout is not retried (the time is the route's).
//! - Pools: per target, no lock shared between targets. HTTP/1.1: idle connections reused
//!   (most recent first), closed after `idle_timeout`, at most `max_idle_per_target` kept; a
//!   connection goes back once its response body was read to the end (an upgraded one never).
//!   A kept-alive connection the upstream closed before the request went out is replaced
//!   silently. h2c / h2: one multiplexed connection per target shared by concurrent requests,
//!   re-made when it closes or goes away (GOAWAY). `auto`: ALPN over TLS (h2 if the upstream
//!   offers it, else HTTP/1.1); plain `http` + `auto` is HTTP/1.1.
//! - Workers: a process serving on several event-loop threads ([`worker`]) keeps each target's
//!   idle HTTP/1.1 connections and its HTTP/2 connection per worker thread, as nginx's workers
//!   each keep their own: a connection is driven by the thread that made it and used only by
//!   requests of that thread.
//! - TLS: rustls on aws-lc-rs; the system's roots unless `ca_file` (which replaces them);
//!   `server_name` for SNI and the certificate's name; client certificate for mutual TLS.
//!   Certificate problems are `upstream_tls` with the reason (unknown issuer, name, expired,
//!   client certificate required…).

#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod error;
mod group;
mod health;
mod pool;
pub mod target;
mod tls;
pub mod tunnel;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

pub use body::{RequestBody, ResponseBody};
pub use config::{Balance, ConfigError, GroupConfig, HashBy, HealthConfig, Protocol};
pub use error::{TimeoutPhase, UpstreamError};
pub use group::{hash_key, Group, GroupStatus, TargetStatus};
pub use pool::{PoolOptions, SendOptions};
pub use target::TargetUrl;

/// Every upstream group of a configuration.
pub struct Upstreams {
    groups: HashMap<String, Arc<Group>>,
    order: Vec<Arc<Group>>,
    pool: PoolOptions,
    stop: watch::Sender<bool>,
}

impl Upstreams {
    /// Builds the groups and starts their active health checks (inside a tokio runtime).
    pub fn build(groups: &[GroupConfig], pool: PoolOptions) -> Result<Self, UpstreamError> {
        config::validate_all(groups).map_err(|e| UpstreamError::Config {
            group: e.group,
            reason: e.message,
        })?;
        if groups.iter().any(|g| g.health.is_some()) && tokio::runtime::Handle::try_current().is_err() {
            return Err(UpstreamError::Config {
                group: groups
                    .iter()
                    .find(|g| g.health.is_some())
                    .map(|g| g.name.clone())
                    .unwrap_or_default(),
                reason: "active health checks need a tokio runtime: build the upstreams inside it".to_owned(),
            });
        }
        let (stop, _) = watch::channel(false);
        let mut map = HashMap::with_capacity(groups.len());
        let mut order = Vec::with_capacity(groups.len());
        for cfg in groups {
            let g = Arc::new(Group::build(cfg, pool)?);
            if let Some(h) = &cfg.health {
                health::spawn(&g, h.clone(), stop.subscribe());
            }
            map.insert(cfg.name.clone(), Arc::clone(&g));
            order.push(g);
        }
        Ok(Upstreams {
            groups: map,
            order,
            pool,
            stop,
        })
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups.get(name).cloned()
    }

    /// A group of one target with default settings, for a route whose `upstream` is a URL
    /// (build it once per route, at configuration time). Passive health is off (one target).
    pub fn single(&self, name: &str, url: TargetUrl) -> Result<Arc<Group>, UpstreamError> {
        let mut cfg = GroupConfig::new("single", vec![url]);
        cfg.max_fails = 0;
        cfg.validate().map_err(|e| UpstreamError::Config {
            group: name.to_owned(),
            reason: e.message,
        })?;
        cfg.name = name.to_owned();
        Ok(Arc::new(Group::build_valid(&cfg, self.pool)?))
    }

    /// Every group's status, in configuration order.
    pub fn status(&self) -> Vec<GroupStatus> {
        self.order.iter().map(|g| g.status()).collect()
    }

    /// Stops the active health tasks (dropping `Upstreams` does too).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
