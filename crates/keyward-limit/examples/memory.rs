//! Memory of the local limiter with 1,000,000 limited keys, and what `sweep` gives back.
//!
//!     cargo run --release -p keyward-limit --example memory
//!
//! Phase 1: 1,000,000 distinct keys, each checked once against a rate (10/s). Phase 2: a fresh
//! limiter, 1,000,000 keys each checked once against a rate (10/s) and a quota (1000/day).
//! For each phase it prints the resident set size (VmRSS from /proc/self/status) before and
//! after, `len()`, then calls `sweep` when every bucket is full again (and, in phase 2, once
//! more after the quota period has ended) and prints `len()` and the RSS again.
//!
//! RSS is what the process holds from the OS: memory freed by the limiter goes back to the
//! allocator, which may keep some of it; the `len()` figures show what the limiter holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use keyward_core::policy::{QuotaSpec, RateSpec};
use keyward_limit::{LocalLimiter, Outcome, QuotaCheck, RateCheck};

const SEC: u64 = 1_000_000_000;
/// 2027-01-01T00:00:00Z, the start of a day (UTC).
const T0: u64 = 1_798_761_600 * SEC;
const KEYS: usize = 1_000_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux only)");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(what: &str, base: u64, l: &LocalLimiter) {
    let now = rss_kib();
    let (r, q) = l.len();
    println!(
        "  {what:<44} RSS {:>7.1} MiB (Δ {:>+7.1} MiB)   len: {r} rates, {q} quotas",
        mib(now),
        mib(now) - mib(base)
    );
}

fn main() {
    let rate = RateSpec::parse("10/s", None).unwrap();
    let quota = QuotaSpec::parse("1000/day").unwrap();

    println!("phase 1: {KEYS} keys, one rate (10/s) each");
    let base = rss_kib();
    println!("  {:<44} RSS {:>7.1} MiB", "before", mib(base));
    let l = LocalLimiter::new();
    let start = Instant::now();
    for i in 0..KEYS {
        let key = l.key(&["key", &format!("key_{i}")]);
        let check = RateCheck {
            name: "key",
            key,
            spec: rate,
            cost: 1,
            group: None,
        };
        // All within the first second; each key is checked once, so each is allowed.
        let o = l.check(std::slice::from_ref(&check), &[], T0 + i as u64);
        assert!(matches!(o, Outcome::Allowed { .. }));
    }
    let took = start.elapsed();
    report(
        &format!(
            "after {KEYS} checks ({:.0} ns/check)",
            took.as_nanos() as f64 / KEYS as f64
        ),
        base,
        &l,
    );
    let (r, _) = l.len();
    println!(
        "  bytes per key (RSS Δ / entries): {:.1}",
        (rss_kib() - base) as f64 * 1024.0 / r as f64
    );
    // Every bucket is full again 100 ms after its only request.
    let dropped = l.sweep(T0 + 2 * SEC);
    report(&format!("after sweep at T0+2s (dropped {dropped})"), base, &l);
    drop(l);
    report("after dropping the limiter", base, &LocalLimiter::new());

    println!("phase 2: {KEYS} keys, a rate (10/s) and a quota (1000/day) each");
    let base = rss_kib();
    println!("  {:<44} RSS {:>7.1} MiB", "before", mib(base));
    let l = LocalLimiter::new();
    let start = Instant::now();
    for i in 0..KEYS {
        let id = format!("key_{i}");
        let rc = RateCheck {
            name: "key",
            key: l.key(&["key", &id]),
            spec: rate,
            cost: 1,
            group: None,
        };
        let qc = QuotaCheck {
            name: "quota",
            key: l.key(&["quota", &id]),
            spec: quota,
            cost: 1,
            group: None,
        };
        let o = l.check(std::slice::from_ref(&rc), std::slice::from_ref(&qc), T0 + i as u64);
        assert!(matches!(o, Outcome::Allowed { .. }));
    }
    let took = start.elapsed();
    report(
        &format!(
            "after {KEYS} checks ({:.0} ns/check)",
            took.as_nanos() as f64 / KEYS as f64
        ),
        base,
        &l,
    );
    let (r, q) = l.len();
    println!(
        "  bytes per key (RSS Δ / keys): {:.1}",
        (rss_kib() - base) as f64 * 1024.0 / r.max(q) as f64
    );
    // Rate buckets are full again; the quotas' day is not over, so they must stay.
    let dropped = l.sweep(T0 + 2 * SEC);
    report(&format!("after sweep at T0+2s (dropped {dropped})"), base, &l);
    // The next day: every quota period has ended.
    let dropped = l.sweep(T0 + 86_400 * SEC);
    report(&format!("after sweep at T0+1 day (dropped {dropped})"), base, &l);
    drop(l);
    report("after dropping the limiter", base, &LocalLimiter::new());
}
