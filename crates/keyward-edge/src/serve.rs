//! Accepting HTTP connections with explicit limits (every listener: gateway, admin, verify; the
//! TLS gateway too).
//!
//! - **A cap on open connections per listener** (`max_connections`): when it is reached the
//!   listener stops accepting; further connections wait in the kernel's accept backlog (and,
//!   once that is full, the kernel drops their SYNs, so clients retry) until a connection ends.
//!   Waiting rather than closing means a burst of well-behaved clients sees latency, not errors,
//!   and an attacker holding connections cannot make keyward use more than the cap of file
//!   descriptors and memory.
//! - **A header read deadline** (`header_read_timeout`): a connection whose first request head
//!   has not arrived within the deadline (nothing sent, a slowly dripped head, a stalled
//!   HTTP/2 preface) is closed; on HTTP/1.1, hyper applies the same deadline to every later
//!   request head, which is also the **idle keep-alive timeout**.
//! - **Header limits**: at most `max_headers` header fields (HTTP/1.1; more: 431) and at most
//!   `max_header_bytes` for the request head (HTTP/1.1: 431; HTTP/2: the header list size).
//! - **A body read deadline** (`body_read_timeout`) for the bodies keyward buffers itself:
//!   every request is stamped with it here and [`crate::body::deadline`] enforces it (408).
//! - HTTP/2: at most 100 concurrent streams per connection, keep-alive pings every 30 s (a
//!   peer that does not answer within 20 s is dropped).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// hyper's smallest read buffer: `max_header_bytes` below it is raised to it.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Limits of one listener's connections.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Open connections at most; beyond, new connections wait to be accepted.
    pub max_connections: usize,
    /// How long a client has to send a complete request head (and, on HTTP/1.1, how long an
    /// idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// Header fields per request at most (HTTP/1.1).
    pub max_headers: usize,
    /// Bytes of a request head at most (HTTP/1.1 read buffer; HTTP/2 header list size).
    pub max_header_bytes: usize,
    /// How long, from the arrival of its head, a request body that keyward reads itself (admin
    /// API, token endpoints, `/v1/verify`) may take to arrive; later: 408 ([`crate::body`]).
    pub body_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 8192,
            header_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            body_read_timeout: crate::body::DEFAULT_BODY_READ_TIMEOUT,
        }
    }
}

/// The connection builder with the limits applied (HTTP/1.1 and HTTP/2, chosen per connection).
pub fn builder(limits: &HttpLimits) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    let head = limits.max_header_bytes.max(MIN_HEADER_BYTES);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(head);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX))
        .max_concurrent_streams(100)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Serves one accepted connection with `router` until it ends; on `shutdown`, finishes the
/// requests in flight and closes. `extend` adds per-connection request extensions (the peer's
/// address, its TLS certificates).
pub async fn connection<I, F>(
    io: I,
    router: Router,
    limits: &HttpLimits,
    shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
    extend: F,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(&mut http::Extensions) + Clone + Send + Sync + 'static,
{
    // Set by the first request head: until then the header read deadline is ours to enforce
    // (hyper's HTTP/1.1 deadline starts only once it knows the protocol, and HTTP/2 has none).
    let started = Arc::new(AtomicBool::new(false));
    let seen = started.clone();
    let body_read_timeout = limits.body_read_timeout;
    let service = router.map_request(move |mut req: http::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(crate::body::BodyDeadline(
            tokio::time::Instant::now() + body_read_timeout,
        ));
        extend(req.extensions_mut());
        req
    });
    let builder = builder(limits);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    let deadline = tokio::time::sleep(limits.header_read_timeout);
    let mut deadline = std::pin::pin!(deadline);
    let mut armed = true;
    let mut shutdown = shutdown;
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let mut stop = std::pin::pin!(stop);
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = deadline.as_mut(), if armed => {
                armed = false;
                if !started.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request head within the header read timeout; closing");
                    return;
                }
            }
            _ = stop.as_mut() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// What a connection task holds while it runs: its place under `max_connections` and its
/// share of the listener's count of live connections ([`accept_loop`] returns once every guard
/// is dropped).
pub struct ConnectionGuard {
    _slot: OwnedSemaphorePermit,
    _alive: mpsc::Sender<Infallible>,
}

/// The accept loop of every listener (plain HTTP here, TLS in [`crate::tls`]): at most
/// `max_connections` connections at once (beyond, new ones wait in the accept backlog), each
/// handed to `start` with its [`ConnectionGuard`], which the connection's task must hold until
/// it ends. When `shutdown` turns true, stops accepting and returns once every guard is gone.
pub async fn accept_loop<F>(
    listener: TcpListener,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
    mut start: F,
) -> io::Result<()>
where
    F: FnMut(TcpStream, SocketAddr, ConnectionGuard),
{
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    // Every guard holds a sender; `recv` returns `None` once they all have been dropped.
    let (alive, mut all_done) = mpsc::channel::<Infallible>(1);
    loop {
        // A free slot first: at the cap, connections wait in the accept backlog.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let Ok(slot) = slot else {
            break;
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Responses (and streamed body chunks) go out as soon as hyper writes them, never held
        // back by Nagle waiting for the client's ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
        start(
            tcp,
            peer,
            ConnectionGuard {
                _slot: slot,
                _alive: alive.clone(),
            },
        );
    }
    drop(listener);
    drop(alive);
    let _ = all_done.recv().await;
    Ok(())
}

/// Serves `router` on `listener` (plain HTTP) until `shutdown` turns true, then lets open
/// connections finish their requests before returning. Every request carries
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let max = limits.max_connections;
    let stop = shutdown.clone();
    accept_loop(listener, max, stop, move |tcp, peer, guard| {
        let router = router.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _guard = guard;
            connection(tcp, router, &limits, shutdown, peer, move |ext| {
                ext.insert(ConnectInfo(peer));
            })
            .await;
        });
    })
    .await
}
