//! A circuit breaker in front of Redis.
//!
//! Closed: every call goes through; `failures` consecutive failures (errors or timeouts) open
//! it. Open: no call goes through (the caller applies its failure mode at once, without
//! waiting for a timeout) until `cooldown` has passed. Half-open: exactly one call, the probe,
//! goes through; its success closes the breaker, its failure opens it for another cooldown.
//! Lock-free: a few atomics, read on every request.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Settings of a [`Breaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failures: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(1),
        }
    }
}

/// The state, for health reports and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The breaker.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    epoch: Instant,
    consecutive: AtomicU32,
    /// 0 when closed, else the instant (µs since `epoch`, at least 1) the cooldown ends.
    open_until: AtomicU64,
    /// A probe is in flight (half-open).
    probing: AtomicBool,
    /// How many times it opened.
    opened: AtomicU64,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Breaker {
        Breaker {
            cfg: BreakerConfig {
                failures: cfg.failures.max(1),
                cooldown: cfg.cooldown,
            },
            epoch: Instant::now(),
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            opened: AtomicU64::new(0),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether a call may go through now. When it returns true the caller must report the
    /// call's result with [`Breaker::success`] or [`Breaker::failure`].
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    pub fn allow_at(&self, now: Instant) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if self.micros(now) < until {
            return false;
        }
        // Half-open: one probe at a time.
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn success(&self) {
        self.consecutive.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    pub fn failure(&self) {
        self.failure_at(Instant::now());
    }

    pub fn failure_at(&self, now: Instant) {
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let reopen = self.probing.swap(false, Ordering::AcqRel);
        let closed = self.open_until.load(Ordering::Acquire) == 0;
        if reopen || (closed && n >= self.cfg.failures) {
            let until = self.micros(now + self.cfg.cooldown);
            self.open_until.store(until, Ordering::Release);
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    pub fn state_at(&self, now: Instant) -> BreakerState {
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if self.micros(now) < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// How many times the breaker opened since start.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> BreakerConfig {
        self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_once_after_the_cooldown() {
        let b = Breaker::new(BreakerConfig {
            failures: 3,
            cooldown: Duration::from_millis(500),
        });
        let t0 = Instant::now();
        assert!(b.allow_at(t0));
        b.failure_at(t0);
        b.failure_at(t0);
        // A success in between resets the count.
        b.success();
        b.failure_at(t0);
        b.failure_at(t0);
        assert_eq!(b.state_at(t0), BreakerState::Closed);
        b.failure_at(t0);
        assert_eq!(b.state_at(t0), BreakerState::Open);
        assert_eq!(b.times_opened(), 1);
        assert!(!b.allow_at(t0 + Duration::from_millis(499)));
        // Half-open: one probe, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.state_at(t1), BreakerState::HalfOpen);
        assert!(b.allow_at(t1));
        assert!(!b.allow_at(t1));
        // The probe fails: open for another cooldown.
        b.failure_at(t1);
        assert_eq!(b.times_opened(), 2);
        assert!(!b.allow_at(t1 + Duration::from_millis(100)));
        let t2 = t1 + Duration::from_millis(500);
        assert!(b.allow_at(t2));
        b.success();
        assert_eq!(b.state_at(t2), BreakerState::Closed);
        assert!(b.allow_at(t2));
        assert!(b.allow_at(t2));
    }
}
