//! Which worker thread this is, when a process serves on several event-loop threads (keyward's
//! gateway workers: one current-thread runtime each, like nginx's worker processes).
//!
//! A target keeps its kept-alive connections per worker ([`crate::pool`]): a connection's task
//! runs on the runtime of the thread that made it, so a request of another thread would hand
//! every read and write over to that thread (a wake-up across cores per request). Threads that
//! never call [`set_current`] (a process with one event loop, the blocking pool, tests) are
//! worker 0.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Sets how many workers the process has (at least 1). Call it before building the
/// upstreams: targets built earlier keep the count they were built with.
pub fn set_count(n: usize) {
    COUNT.store(n.max(1), Ordering::Relaxed);
}

/// How many workers targets are built for.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed).max(1)
}

/// Marks the calling thread as worker `index` (0-based).
pub fn set_current(index: usize) {
    CURRENT.with(|c| c.set(index));
}

/// The calling thread's worker index (0 unless [`set_current`] said otherwise).
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_worker_zero_until_told_otherwise() {
        assert_eq!(current(), 0);
        set_current(3);
        assert_eq!(current(), 3);
        let other = std::thread::spawn(current).join().unwrap();
        assert_eq!(other, 0, "a thread's index is its own");
        set_current(0);
    }
}
