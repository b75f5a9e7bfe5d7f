//! Tunnels for upgraded connections (WebSocket and other `Upgrade`s): [`pump`] copies bytes both
//! ways, untouched, until both sides closed, an idle timeout, a maximum duration or a stop
//! signal; the [`Registry`] knows every open tunnel with its [`Owner`] so that revocation
//! (`close_matching`) closes the tunnels a revoked key, token, client or app opened.
//!
//! ```text
//! let handle = registry.open(Owner { key_id: Some(id), app_id: Some(app), ..Default::default() });
//! let end = tunnel::pump(TokioIo::new(client_upgraded), TokioIo::new(upstream_upgraded), &limits, handle.stopped()).await;
//! // elsewhere, on a revocation event:
//! registry.close_matching(|o| o.key_id.as_deref() == Some(revoked));
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Who opened a tunnel (plain strings; any may be absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    pub key_id: Option<String>,
    pub app_id: Option<String>,
    /// The access token's `jti` (or any token id).
    pub token_id: Option<String>,
    pub client_id: Option<String>,
}

/// Limits of one tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// No byte in either direction for this long closes the tunnel.
    pub idle_timeout: Duration,
    /// The tunnel closes this long after it opened, busy or not.
    pub max_duration: Duration,
}

/// Why a tunnel ended, and what went through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    pub reason: EndReason,
    /// Bytes copied from `a` to `b`, and from `b` to `a`.
    pub a_to_b: u64,
    pub b_to_a: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Both sides closed (each side's close was passed on to the other).
    Closed,
    Idle,
    MaxDuration,
    /// The stop signal fired (revocation, shutdown).
    Stopped,
    /// A read or write failed (a reset, for example).
    Error,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::Idle => "idle_timeout",
            EndReason::MaxDuration => "max_duration",
            EndReason::Stopped => "stopped",
            EndReason::Error => "error",
        }
    }
}

const BUF: usize = 16 * 1024;

/// Copies bytes both ways between `a` and `b`. When one side ends its stream, the other side's
/// write half is shut down and the other direction goes on (half-close), until both ended.
pub async fn pump<A, B, S>(mut a: A, mut b: B, limits: &Limits, stop: S) -> End
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    S: Future<Output = ()>,
{
    let started = Instant::now();
    let max_at = started + limits.max_duration;
    let mut idle_at = started + limits.idle_timeout;
    let mut buf_a = vec![0u8; BUF];
    let mut buf_b = vec![0u8; BUF];
    let (mut a_open, mut b_open) = (true, true);
    let mut end = End {
        reason: EndReason::Closed,
        a_to_b: 0,
        b_to_a: 0,
    };
    tokio::pin!(stop);
    while a_open || b_open {
        tokio::select! {
            r = a.read(&mut buf_a), if a_open => match r {
                Ok(0) => {
                    a_open = false;
                    let _ = b.shutdown().await;
                }
                Ok(n) => {
                    if b.write_all(&buf_a[..n]).await.is_err() || b.flush().await.is_err() {
                        end.reason = EndReason::Error;
                        break;
                    }
                    end.a_to_b += n as u64;
                    idle_at = Instant::now() + limits.idle_timeout;
                }
                Err(_) => {
                    end.reason = EndReason::Error;
                    break;
                }
            },
            r = b.read(&mut buf_b), if b_open => match r {
                Ok(0) => {
                    b_open = false;
                    let _ = a.shutdown().await;
                }
                Ok(n) => {
                    if a.write_all(&buf_b[..n]).await.is_err() || a.flush().await.is_err() {
                        end.reason = EndReason::Error;
                        break;
                    }
                    end.b_to_a += n as u64;
                    idle_at = Instant::now() + limits.idle_timeout;
                }
                Err(_) => {
                    end.reason = EndReason::Error;
                    break;
                }
            },
            _ = tokio::time::sleep_until(idle_at) => {
                end.reason = EndReason::Idle;
                break;
            }
            _ = tokio::time::sleep_until(max_at) => {
                end.reason = EndReason::MaxDuration;
                break;
            }
            _ = &mut stop => {
                end.reason = EndReason::Stopped;
                break;
            }
        }
    }
    if end.reason != EndReason::Closed {
        // Both sides learn that the tunnel is gone.
        let _ = a.shutdown().await;
        let _ = b.shutdown().await;
    }
    end
}

struct Entry {
    owner: Owner,
    stop: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
}

/// The open tunnels of this node and their owners.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// One registered tunnel; dropping it removes the tunnel from the registry.
pub struct Handle {
    id: u64,
    stop: Arc<Notify>,
    registry: Weak<Inner>,
}

impl Handle {
    /// Resolves when the registry closes this tunnel (pass it to [`pump`]).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let stop = Arc::clone(&self.stop);
        async move { stop.notified().await }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(inner) = self.registry.upgrade() {
            lock(&inner.open).remove(&self.id);
        }
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers a tunnel opened by `owner`.
    pub fn open(&self, owner: Owner) -> Handle {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        lock(&self.inner.open).insert(
            id,
            Entry {
                owner,
                stop: Arc::clone(&stop),
            },
        );
        Handle {
            id,
            stop,
            registry: Arc::downgrade(&self.inner),
        }
    }

    /// Signals every open tunnel whose owner matches to close; returns how many. (`notify_one`
    /// keeps the signal for a tunnel that is not waiting on it yet.)
    pub fn close_matching(&self, matches: impl Fn(&Owner) -> bool) -> usize {
        let open = lock(&self.inner.open);
        let mut n = 0;
        for e in open.values().filter(|e| matches(&e.owner)) {
            e.stop.notify_one();
            n += 1;
        }
        n
    }

    /// Open tunnels.
    pub fn len(&self) -> usize {
        lock(&self.inner.open).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
