//! A group of targets: choosing one (round robin, least requests, rendezvous hashing), passive
//! health, the one retry, and the status snapshot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, Request, Response};
use hyper::body::Body;
use serde::Serialize;

use crate::body::{RequestBody, ResponseBody};
use crate::config::{Balance, GroupConfig, HashBy, Protocol};
use crate::error::UpstreamError;
use crate::pool::{PoolOptions, SendOptions, Target, TlsSide};
use crate::target::Scheme;

/// One `[[upstreams]]` group at run time.
pub struct Group {
    name: String,
    balance: Balance,
    hash_by: HashBy,
    protocol: Protocol,
    max_fails: u32,
    fail_timeout: Duration,
    pub(crate) targets: Box<[Arc<Target>]>,
    rr: AtomicUsize,
    epoch_wall: SystemTime,
}

impl Group {
    pub(crate) fn build(cfg: &GroupConfig, pool: PoolOptions) -> Result<Self, UpstreamError> {
        cfg.validate().map_err(|e| UpstreamError::Config {
            group: cfg.name.clone(),
            reason: e.message,
        })?;
        Group::build_valid(cfg, pool)
    }

    /// `build` for a configuration already validated (the name aside: a route's name may be any).
    pub(crate) fn build_valid(cfg: &GroupConfig, pool: PoolOptions) -> Result<Self, UpstreamError> {
        let tls = if cfg.targets.iter().any(|t| t.scheme() == Scheme::Https) {
            Some(crate::tls::build(cfg)?)
        } else {
            None
        };
        let epoch = Instant::now();
        let mut targets = Vec::with_capacity(cfg.targets.len());
        for url in &cfg.targets {
            let side = match (&tls, url.scheme()) {
                (Some(t), Scheme::Https) => {
                    let name = match &t.server_name {
                        Some(n) => n.clone(),
                        None => rustls_pki_types::ServerName::try_from(url.host().to_owned()).map_err(|_| {
                            UpstreamError::Config {
                                group: cfg.name.clone(),
                                reason: format!("{url}: the host is not a valid TLS server name; set server_name"),
                            }
                        })?,
                    };
                    Some(TlsSide {
                        connector: tokio_rustls::TlsConnector::from(Arc::clone(&t.config)),
                        name,
                    })
                }
                _ => None,
            };
            let seed = hash_key(url.to_string().as_bytes());
            targets.push(Arc::new(Target::new(
                url.clone(),
                seed,
                cfg.protocol,
                side,
                pool,
                epoch,
            )?));
        }
        Ok(Group {
            name: cfg.name.clone(),
            balance: cfg.balance,
            hash_by: cfg.hash_by,
            protocol: cfg.protocol,
            max_fails: cfg.max_fails,
            fail_timeout: cfg.fail_timeout,
            targets: targets.into_boxed_slice(),
            rr: AtomicUsize::new(0),
            epoch_wall: SystemTime::now(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the gateway should hash for [`SendOptions::hash_key`].
    pub fn hash_by(&self) -> HashBy {
        self.hash_by
    }

    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// Sends `req` to a target of this group; `req`'s URI is the client's (only its path and
    /// query are used). A request without a body or with an idempotent method that fails to
    /// connect, or is closed or reset before any response byte, is retried once on another target.
    pub async fn send<B: Into<RequestBody>>(
        &self,
        req: Request<B>,
        opts: &SendOptions<'_>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let req = req.map(Into::into);
        let pq = match req.uri().path_and_query() {
            Some(pq) => pq.clone(),
            None => http::uri::PathAndQuery::from_static("/"),
        };
        let no_body = req.body().is_end_stream();
        let retryable = no_body || is_idempotent(req.method());
        let first = self.pick(opts.hash_key, None)?;
        // A body-less request can be re-made after it went out; keep what it takes only when
        // there is somewhere else to send it.
        let copy = (no_body && self.targets.len() > 1).then(|| head_copy(&req));
        let failure = match self.targets[first].send(req, &pq, opts).await {
            Ok(resp) => return Ok(resp),
            Err(f) => f,
        };
        self.failed(first, &failure.error);
        let again = retryable
            && matches!(
                failure.error,
                UpstreamError::Connect { .. }
                    | UpstreamError::Tls { .. }
                    | UpstreamError::Reset { .. }
                    | UpstreamError::Timeout {
                        phase: crate::error::TimeoutPhase::Connect,
                        ..
                    }
            );
        if !again {
            return Err(failure.error);
        }
        let Some(req) = failure.request.or(copy) else {
            return Err(failure.error);
        };
        let Ok(second) = self.pick(opts.hash_key, Some(first)) else {
            return Err(failure.error);
        };
        match self.targets[second].send(req, &pq, opts).await {
            Ok(resp) => Ok(resp),
            Err(f) => {
                self.failed(second, &f.error);
                Err(f.error)
            }
        }
    }

    fn failed(&self, i: usize, e: &UpstreamError) {
        if !e.counts_as_fail() {
            return;
        }
        let t = &self.targets[i];
        if t.record_fail(self.max_fails, self.fail_timeout) {
            tracing::warn!(group = %self.name, target = %t.url, error = %e, code = e.code(), "upstream target ejected");
        } else {
            tracing::debug!(group = %self.name, target = %t.url, error = %e, code = e.code(), "upstream request failed");
        }
    }

    /// The index of the target for the next request, not `exclude`.
    fn pick(&self, hash: Option<u64>, exclude: Option<usize>) -> Result<usize, UpstreamError> {
        let n = self.targets.len();
        let now = self.targets[0].now_ms();
        let ok = |i: usize| Some(i) != exclude && self.targets[i].available(now);
        let chosen = match (self.balance, hash) {
            (Balance::Hash, Some(key)) => {
                // Rendezvous (highest random weight) hashing: each target scores the key; the
                // best available one wins, so ejecting a target moves only its own callers.
                let mut best: Option<(u64, usize)> = None;
                for i in (0..n).filter(|&i| ok(i)) {
                    let score = mix(key ^ self.targets[i].seed);
                    if best.is_none_or(|(s, _)| score > s) {
                        best = Some((score, i));
                    }
                }
                best.map(|(_, i)| i)
            }
            (Balance::LeastRequests, _) => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                let mut best: Option<(usize, usize)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    if ok(i) {
                        let load = self.targets[i].in_flight();
                        if best.is_none_or(|(l, _)| load < l) {
                            best = Some((load, i));
                        }
                    }
                }
                best.map(|(_, i)| i)
            }
            _ => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
            }
        };
        chosen.ok_or_else(|| UpstreamError::NoHealthy {
            group: self.name.clone(),
        })
    }

    /// Target health and load, for `/metrics` and `GET /v1/upstreams`.
    pub fn status(&self) -> GroupStatus {
        GroupStatus {
            name: self.name.clone(),
            balance: self.balance.as_str(),
            protocol: self.protocol.as_str(),
            targets: self
                .targets
                .iter()
                .map(|t| {
                    let until = t.ejected_until_ms();
                    let ejected_until = until.map(|u| {
                        let wall = self.epoch_wall + Duration::from_millis(u.saturating_sub(1));
                        time::OffsetDateTime::from(wall)
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default()
                    });
                    let active_down = t.active_down.load(Ordering::Relaxed);
                    TargetStatus {
                        url: t.url.to_string(),
                        healthy: until.is_none() && !active_down,
                        ejected_until,
                        active_down,
                        recent_fails: t.recent_fails(self.fail_timeout),
                        in_flight: t.in_flight(),
                        protocol: t.protocol_name(),
                    }
                })
                .collect(),
        }
    }
}

/// A group's status (serializable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub balance: &'static str,
    pub protocol: &'static str,
    pub targets: Vec<TargetStatus>,
}

/// A target's status: `url` is the configured URL (which never carries credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    pub url: String,
    /// Neither ejected by passive health nor down by active health.
    pub healthy: bool,
    /// RFC 3339 time until which passive health keeps the target out.
    pub ejected_until: Option<String>,
    /// Marked down by the active health checks.
    pub active_down: bool,
    /// Failures counted in the current `fail_timeout` window.
    pub recent_fails: u32,
    pub in_flight: usize,
    /// `http1`, `h2c`, `h2`, or `auto` until the first TLS connection said.
    pub protocol: &'static str,
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

fn head_copy(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut r = Request::new(RequestBody::Empty);
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}

/// A 64-bit hash of `bytes` for [`SendOptions::hash_key`] (FNV-1a, then a finalizer): stable
/// across processes and nodes, so every node sends a caller to the same target.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_ejected_targets_callers() {
        let seeds: Vec<u64> = (0..5)
            .map(|i| hash_key(format!("http://10.0.0.{i}:80").as_bytes()))
            .collect();
        let pick = |key: u64, skip: Option<usize>| {
            (0..5)
                .filter(|&i| Some(i) != skip)
                .max_by_key(|&i| mix(key ^ seeds[i]))
                .unwrap()
        };
        let mut counts = [0usize; 5];
        for k in 0..5000u64 {
            let key = hash_key(&k.to_le_bytes());
            let before = pick(key, None);
            counts[before] += 1;
            let after = pick(key, Some(2));
            if before != 2 {
                assert_eq!(before, after, "a caller of another target moved");
            }
        }
        // Spread: every target gets a fair share (each ≈ 1000).
        assert!(counts.iter().all(|&c| c > 700 && c < 1300), "{counts:?}");
    }

    #[test]
    fn hash_key_is_stable() {
        assert_eq!(hash_key(b"key_1"), hash_key(b"key_1"));
        assert_ne!(hash_key(b"key_1"), hash_key(b"key_2"));
        assert_eq!(hash_key(b""), mix(0xcbf2_9ce4_8422_2325));
    }
}
