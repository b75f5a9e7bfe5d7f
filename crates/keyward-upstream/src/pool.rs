//! One target at run time: its health counters, its in-flight count, and its connections — an
//! idle list of HTTP/1.1 connections (keep-alive reuse, idle timeout, a cap) or one multiplexed
//! HTTP/2 connection shared by concurrent requests (re-made when it goes away). Each target has
//! its own small locks; nothing is shared between targets or groups.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::{RequestBody, ResponseBody};
use crate::config::Protocol;
use crate::error::{find_tls, reason, tls_reason, TimeoutPhase, UpstreamError};
use crate::target::{Scheme, TargetUrl};

/// Kept-alive connections found closed in a row before a request gives up.
const MAX_STALE: usize = 8;

const PROTO_UNKNOWN: u8 = 0;
const PROTO_H1: u8 = 1;
const PROTO_H2: u8 = 2;

/// Connection pool settings (per target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// An idle HTTP/1.1 connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per target (more are closed when released).
    pub max_idle_per_target: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            idle_timeout: Duration::from_secs(90),
            max_idle_per_target: 64,
        }
    }
}

pub(crate) struct TlsSide {
    pub(crate) connector: TlsConnector,
    pub(crate) name: ServerName<'static>,
}

struct Idle {
    conn: http1::SendRequest<RequestBody>,
    since: Instant,
}

struct Passive {
    window_start: u64,
    fails: u32,
}

/// A target of a group at run time.
pub struct Target {
    pub(crate) url: TargetUrl,
    pub(crate) seed: u64,
    host_value: HeaderValue,
    protocol: Protocol,
    tls: Option<TlsSide>,
    pool: PoolOptions,
    epoch: Instant,
    /// What the connections to this target speak (known up front except for `auto` over TLS).
    resolved: AtomicU8,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` (plus one) until which the target is ejected; 0: not ejected.
    ejected_until: AtomicU64,
    passive: Mutex<Passive>,
    pub(crate) active_down: AtomicBool,
    pub(crate) active_ok: AtomicU32,
    pub(crate) active_bad: AtomicU32,
    /// Kept-alive connections, one set per worker thread ([`crate::worker`]).
    shards: Box<[Shard]>,
    h2_gen: AtomicU64,
}

/// One worker thread's connections to a target.
struct Shard {
    idle: Mutex<Vec<Idle>>,
    /// The shared HTTP/2 connection and its generation (which one failed, when one does).
    h2: Mutex<Option<(u64, http2::SendRequest<RequestBody>)>>,
    h2_connecting: tokio::sync::Mutex<()>,
}

/// A failed attempt on one target, with the request when it never left keyward.
pub(crate) struct Failure {
    pub(crate) error: UpstreamError,
    pub(crate) request: Option<Request<RequestBody>>,
}

enum Conn {
    H1(http1::SendRequest<RequestBody>, bool),
    H2(http2::SendRequest<RequestBody>, bool, u64),
}

/// The per-call knobs a route brings.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions<'a> {
    /// TCP connect + TLS handshake (+ HTTP/2 preface) bound.
    pub connect_timeout: Duration,
    /// Bound from the request's start until the response header.
    pub timeout: Duration,
    /// The caller's hash for `balance = "hash"` (see [`crate::hash_key`]); ignored otherwise.
    /// Without one, a `hash` group falls back to round robin.
    pub hash_key: Option<u64>,
    /// The route prefix to remove from the path before the target's base path is added.
    pub strip_prefix: Option<&'a str>,
}

impl Default for SendOptions<'_> {
    fn default() -> Self {
        SendOptions {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            hash_key: None,
            strip_prefix: None,
        }
    }
}

impl Target {
    pub(crate) fn new(
        url: TargetUrl,
        seed: u64,
        protocol: Protocol,
        tls: Option<TlsSide>,
        pool: PoolOptions,
        epoch: Instant,
    ) -> Result<Self, UpstreamError> {
        let host_value = HeaderValue::from_str(url.authority().as_str()).map_err(|_| UpstreamError::InvalidUri)?;
        let resolved = match (url.scheme(), protocol) {
            (Scheme::Http, Protocol::H2c) | (Scheme::Https, Protocol::H2) => PROTO_H2,
            (Scheme::Https, Protocol::Auto) => PROTO_UNKNOWN,
            _ => PROTO_H1,
        };
        Ok(Target {
            url,
            seed,
            host_value,
            protocol,
            tls,
            pool,
            epoch,
            resolved: AtomicU8::new(resolved),
            in_flight: AtomicUsize::new(0),
            ejected_until: AtomicU64::new(0),
            passive: Mutex::new(Passive {
                window_start: 0,
                fails: 0,
            }),
            active_down: AtomicBool::new(false),
            active_ok: AtomicU32::new(0),
            active_bad: AtomicU32::new(0),
            shards: (0..crate::worker::count())
                .map(|_| Shard {
                    idle: Mutex::new(Vec::new()),
                    h2: Mutex::new(None),
                    h2_connecting: tokio::sync::Mutex::new(()),
                })
                .collect(),
            h2_gen: AtomicU64::new(0),
        })
    }

    /// The calling worker thread's connections.
    fn shard(&self) -> &Shard {
        let i = crate::worker::current();
        &self.shards[i % self.shards.len().max(1)]
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn finish_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Not ejected by passive health and not marked down by active health.
    pub(crate) fn available(&self, now_ms: u64) -> bool {
        !self.active_down.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now_ms
    }

    pub(crate) fn ejected_until_ms(&self) -> Option<u64> {
        let u = self.ejected_until.load(Ordering::Relaxed);
        (u > self.now_ms()).then_some(u)
    }

    pub(crate) fn recent_fails(&self, fail_timeout: Duration) -> u32 {
        let p = lock(&self.passive);
        if self.now_ms().saturating_sub(p.window_start) > fail_timeout.as_millis() as u64 {
            0
        } else {
            p.fails
        }
    }

    /// Passive health, as nginx: `max_fails` failures within `fail_timeout` eject the target for
    /// `fail_timeout`. Returns whether this failure ejected it.
    pub(crate) fn record_fail(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        if max_fails == 0 {
            return false;
        }
        let now = self.now_ms();
        let window = fail_timeout.as_millis() as u64;
        let mut p = lock(&self.passive);
        if p.fails == 0 || now.saturating_sub(p.window_start) > window {
            p.window_start = now;
            p.fails = 0;
        }
        p.fails += 1;
        if p.fails >= max_fails {
            p.fails = 0;
            self.ejected_until.store(now + window, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The protocol the target's connections speak (`auto` over TLS: once a connection said).
    pub(crate) fn protocol_name(&self) -> &'static str {
        match self.resolved.load(Ordering::Relaxed) {
            PROTO_H1 => "http1",
            PROTO_H2 if self.url.scheme() == Scheme::Http => "h2c",
            PROTO_H2 => "h2",
            _ => "auto",
        }
    }

    /// Sends `req` (its URI being the client's; `pq` its path and query) to this target.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        pq: &PathAndQuery,
        opts: &SendOptions<'_>,
    ) -> Result<Response<ResponseBody>, Failure> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let r = self.send_inner(&mut req, pq, opts).await;
        if r.is_err() {
            self.finish_request();
        }
        r.map_err(|(error, sent)| Failure {
            error,
            request: if sent { None } else { Some(req) },
        })
    }

    /// `Err((error, sent))` where `sent` says whether `req` was consumed.
    async fn send_inner(
        self: &Arc<Self>,
        req: &mut Request<RequestBody>,
        pq: &PathAndQuery,
        opts: &SendOptions<'_>,
    ) -> Result<Response<ResponseBody>, (UpstreamError, bool)> {
        // Kept-alive connections found closed are replaced; a bound keeps a misbehaving
        // upstream from looping us.
        for _ in 0..MAX_STALE {
            // A kept-alive connection ready to take the request is used without a timer; only
            // waiting for one (a connection being made, a busy one) runs under
            // `connect_timeout`, boxed so that the connect path's future (TCP, TLS, handshake)
            // is not part of every request's.
            let conn = match self.ready_conn() {
                Some(c) => c,
                None => match tokio::time::timeout(opts.connect_timeout, Box::pin(self.checkout())).await {
                    Err(_) => return Err((self.timeout(TimeoutPhase::Connect), false)),
                    Ok(Err(e)) => return Err((e, false)),
                    Ok(Ok(c)) => c,
                },
            };
            let taken = std::mem::take(req);
            match conn {
                Conn::H1(mut s, reused) => {
                    let r = self.prepare_h1(taken, pq, opts.strip_prefix);
                    let out = match tokio::time::timeout(opts.timeout, s.try_send_request(r)).await {
                        Err(_) => return Err((self.timeout(TimeoutPhase::Response), true)),
                        Ok(o) => o,
                    };
                    match out {
                        Ok(resp) => {
                            let keep = resp.status() != StatusCode::SWITCHING_PROTOCOLS;
                            let target = Arc::clone(self);
                            return Ok(resp.map(|b| ResponseBody::new(b, target, keep.then_some(s))));
                        }
                        Err(mut e) => match e.take_message() {
                            // A kept-alive connection closed by the upstream before the request
                            // went out: not a failure of the target. Its other idle connections
                            // are likely stale too (a restart): drop them, use a fresh one.
                            Some(back) if reused => {
                                for shard in self.shards.iter() {
                                    lock(&shard.idle).clear();
                                }
                                *req = back;
                            }
                            Some(back) => {
                                *req = back;
                                return Err((self.classify(e.error()), false));
                            }
                            None => return Err((self.classify(e.error()), true)),
                        },
                    }
                }
                Conn::H2(mut s, reused, gen) => {
                    let r = self.prepare_h2(taken, pq, opts.strip_prefix)?;
                    let out = match tokio::time::timeout(opts.timeout, s.try_send_request(r)).await {
                        Err(_) => return Err((self.timeout(TimeoutPhase::Response), true)),
                        Ok(o) => o,
                    };
                    match out {
                        Ok(resp) => {
                            let target = Arc::clone(self);
                            return Ok(resp.map(|b| ResponseBody::new(b, target, None)));
                        }
                        Err(mut e) => {
                            // The shared connection failed or went away (GOAWAY): forget it.
                            self.forget_h2(gen);
                            match e.take_message() {
                                Some(back) if reused => *req = back,
                                Some(back) => {
                                    *req = back;
                                    return Err((self.classify(e.error()), false));
                                }
                                None => return Err((self.classify(e.error()), true)),
                            }
                        }
                    }
                }
            }
        }
        Err((
            UpstreamError::Reset {
                target: self.url.to_string(),
                reason: "every kept-alive connection was closed before the request went out".to_owned(),
            },
            false,
        ))
    }

    fn timeout(&self, phase: TimeoutPhase) -> UpstreamError {
        UpstreamError::Timeout {
            target: self.url.to_string(),
            phase,
        }
    }

    fn classify(&self, e: &hyper::Error) -> UpstreamError {
        let target = self.url.to_string();
        if let Some(t) = find_tls(e) {
            return UpstreamError::Tls {
                target,
                reason: tls_reason(t),
            };
        }
        let text = reason(e);
        // h2 keeps an I/O error's message only (not the rustls error inside): recognise rustls'
        // wording for alerts and certificate errors.
        if text.contains("received fatal alert") || text.contains("invalid peer certificate") {
            let reason = if text.contains("CertificateRequired") {
                "the upstream requires a client certificate".to_owned()
            } else if text.contains("fatal alert: BadCertificate")
                || text.contains("fatal alert: UnknownCA")
                || text.contains("fatal alert: CertificateUnknown")
                || text.contains("fatal alert: AccessDenied")
            {
                format!("the upstream refused the client certificate ({text})")
            } else {
                text
            };
            return UpstreamError::Tls { target, reason };
        }
        if e.is_parse() || e.is_parse_status() {
            return UpstreamError::Protocol { target, reason: text };
        }
        UpstreamError::Reset { target, reason: text }
    }

    fn prepare_h1(
        &self,
        mut req: Request<RequestBody>,
        pq: &PathAndQuery,
        strip: Option<&str>,
    ) -> Request<RequestBody> {
        // Origin form; an invalid combination falls back to the client's path (cannot happen
        // for paths hyper accepted: both parts are valid path bytes).
        let path = self.url.path_for(pq, strip).unwrap_or_else(|_| pq.clone());
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
        // TE is hop-by-hop in HTTP/1.1; the gateway keeps only `TE: trailers`, for h2 upstreams.
        req.headers_mut().remove(http::header::TE);
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, self.host_value.clone());
        }
        req
    }

    fn prepare_h2(
        &self,
        mut req: Request<RequestBody>,
        pq: &PathAndQuery,
        strip: Option<&str>,
    ) -> Result<Request<RequestBody>, (UpstreamError, bool)> {
        let authority = match req.headers_mut().remove(HOST) {
            // `preserve_host`: the client's Host becomes `:authority`.
            Some(h) => Authority::try_from(h.as_bytes()).map_err(|_| (UpstreamError::InvalidUri, true))?,
            None => self.url.authority().clone(),
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(match self.url.scheme() {
            Scheme::Http => http::uri::Scheme::HTTP,
            Scheme::Https => http::uri::Scheme::HTTPS,
        });
        parts.authority = Some(authority);
        parts.path_and_query = Some(self.url.path_for(pq, strip).map_err(|e| (e, true))?);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| (UpstreamError::InvalidUri, true))?;
        *req.version_mut() = Version::HTTP_2;
        Ok(req)
    }

    /// A kept-alive connection that can take a request right now, if there is one: the shared
    /// HTTP/2 connection, or the most recent idle HTTP/1.1 connection when it is ready. Closed
    /// or expired idle connections on the way are dropped (as [`Target::checkout`] would); one
    /// that is not ready yet is left for `checkout` to wait for.
    fn ready_conn(&self) -> Option<Conn> {
        match self.resolved.load(Ordering::Relaxed) {
            PROTO_H2 => self.cached_h2().map(|(gen, s)| Conn::H2(s, true, gen)),
            PROTO_H1 => {
                let mut idle = lock(&self.shard().idle);
                let now = Instant::now();
                while let Some(i) = idle.last() {
                    if i.conn.is_closed() || now.duration_since(i.since) >= self.pool.idle_timeout {
                        idle.pop();
                        continue;
                    }
                    if i.conn.is_ready() {
                        return idle.pop().map(|i| Conn::H1(i.conn, true));
                    }
                    return None;
                }
                None
            }
            _ => None,
        }
    }

    async fn checkout(&self) -> Result<Conn, UpstreamError> {
        match self.resolved.load(Ordering::Relaxed) {
            PROTO_H2 => {
                if let Some((gen, s)) = self.cached_h2() {
                    return Ok(Conn::H2(s, true, gen));
                }
                let _one = self.shard().h2_connecting.lock().await;
                if let Some((gen, s)) = self.cached_h2() {
                    return Ok(Conn::H2(s, true, gen));
                }
                self.connect().await
            }
            PROTO_H1 => {
                while let Some(mut s) = self.take_idle() {
                    if s.ready().await.is_ok() {
                        return Ok(Conn::H1(s, true));
                    }
                }
                self.connect().await
            }
            _ => {
                let _one = self.shard().h2_connecting.lock().await;
                if let Some((gen, s)) = self.cached_h2() {
                    return Ok(Conn::H2(s, true, gen));
                }
                while let Some(mut s) = self.take_idle() {
                    if s.ready().await.is_ok() {
                        return Ok(Conn::H1(s, true));
                    }
                }
                self.connect().await
            }
        }
    }

    fn cached_h2(&self) -> Option<(u64, http2::SendRequest<RequestBody>)> {
        let g = lock(&self.shard().h2);
        g.as_ref().filter(|(_, s)| !s.is_closed()).cloned()
    }

    fn forget_h2(&self, gen: u64) {
        // Only the connection that failed (a concurrent request may have replaced it already).
        for shard in self.shards.iter() {
            let mut g = lock(&shard.h2);
            if g.as_ref().is_some_and(|(current, _)| *current == gen) {
                *g = None;
            }
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = lock(&self.shard().idle);
        let now = Instant::now();
        while let Some(i) = idle.pop() {
            if !i.conn.is_closed() && now.duration_since(i.since) < self.pool.idle_timeout {
                return Some(i.conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let target = || self.url.to_string();
        let tcp = TcpStream::connect((self.url.host(), self.url.port()))
            .await
            .map_err(|e| UpstreamError::Connect {
                target: target(),
                reason: e.to_string(),
            })?;
        // Without it, small writes wait for ACKs (Nagle); failure to set it is harmless.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return if self.resolved.load(Ordering::Relaxed) == PROTO_H2 {
                self.handshake_h2(TokioIo::new(tcp)).await
            } else {
                self.handshake_h1(TokioIo::new(tcp)).await
            };
        };
        let stream = tls
            .connector
            .connect(tls.name.clone(), tcp)
            .await
            .map_err(|e| UpstreamError::Tls {
                target: target(),
                reason: match find_tls(&e) {
                    Some(t) => tls_reason(t),
                    None => e.to_string(),
                },
            })?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        match self.protocol {
            Protocol::H2 if !h2 => {
                return Err(UpstreamError::Protocol {
                    target: target(),
                    reason: "the upstream does not offer h2 (ALPN); use protocol = \"auto\" or \"http1\"".to_owned(),
                })
            }
            Protocol::Auto => self
                .resolved
                .store(if h2 { PROTO_H2 } else { PROTO_H1 }, Ordering::Relaxed),
            _ => {}
        }
        if h2 {
            self.handshake_h2(TokioIo::new(stream)).await
        } else {
            self.handshake_h1(TokioIo::new(stream)).await
        }
    }

    async fn handshake_h1<T>(&self, io: T) -> Result<Conn, UpstreamError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (s, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| self.classify(&e))?;
        tokio::spawn(async move {
            // The connection's end (an error included) is seen by its requests.
            let _ = conn.with_upgrades().await;
        });
        Ok(Conn::H1(s, false))
    }

    async fn handshake_h2<T>(&self, io: T) -> Result<Conn, UpstreamError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (s, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| self.classify(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let gen = self.h2_gen.fetch_add(1, Ordering::Relaxed);
        *lock(&self.shard().h2) = Some((gen, s.clone()));
        Ok(Conn::H2(s, false, gen))
    }
}

/// Puts an HTTP/1.1 connection whose response was read to the end back in its target's idle
/// list (unless it is closed, the list is full, or the target is gone).
pub(crate) fn put_idle(target: &Target, conn: http1::SendRequest<RequestBody>) {
    if conn.is_closed() {
        return;
    }
    let now = Instant::now();
    let mut idle = lock(&target.shard().idle);
    idle.retain(|i| now.duration_since(i.since) < target.pool.idle_timeout && !i.conn.is_closed());
    // `max_idle_per_target` is the target's, shared out between the workers' sets.
    if idle.len() < target.pool.max_idle_per_target.div_ceil(target.shards.len()) {
        idle.push(Idle { conn, since: now });
    }
}

/// A poisoned lock only means a panic elsewhere while holding it; the data (counters, lists of
/// connections) stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
