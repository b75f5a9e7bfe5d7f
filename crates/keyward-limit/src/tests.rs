#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use proptest::prelude::*;

const SEC: u64 = NS_PER_SEC;
/// Some instant: 2027-01-01T00:00:00Z.
const T0: u64 = 1_798_761_600 * SEC;

fn rate(l: &LocalLimiter, id: &str, spec: &str, burst: Option<u64>) -> RateCheck {
    RateCheck {
        name: "key",
        key: l.key(&["rate", id]),
        spec: RateSpec::parse(spec, burst).unwrap(),
        cost: 1,
        group: None,
    }
}

fn quota(l: &LocalLimiter, id: &str, spec: &str, cost: u64) -> QuotaCheck {
    QuotaCheck {
        name: "quota",
        key: l.key(&["quota", id]),
        spec: QuotaSpec::parse(spec).unwrap(),
        cost,
        group: None,
    }
}

fn allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allowed { .. })
}

#[test]
fn burst_then_steady_rate() {
    let l = LocalLimiter::new();
    let r = rate(&l, "k", "10/s", Some(5));
    for i in 0..5 {
        let o = l.check(std::slice::from_ref(&r), &[], T0);
        let Outcome::Allowed { states } = o else {
            panic!("request {i} refused")
        };
        assert_eq!(states[0].remaining, 4 - i);
        assert_eq!(states[0].limit, 5);
    }
    let Outcome::RateLimited {
        retry_after, policy, ..
    } = l.check(std::slice::from_ref(&r), &[], T0)
    else {
        panic!("the sixth request at once was admitted")
    };
    assert_eq!(policy, "key");
    assert_eq!(retry_after, Duration::from_millis(100));
    // 100 ms later exactly one more fits.
    assert!(allowed(&l.check(std::slice::from_ref(&r), &[], T0 + SEC / 10)));
    assert!(!allowed(&l.check(std::slice::from_ref(&r), &[], T0 + SEC / 10)));
}

#[test]
fn a_refused_request_consumes_from_no_limit() {
    let l = LocalLimiter::new();
    let wide = RateCheck {
        name: "app",
        ..rate(&l, "app", "1000/s", Some(1000))
    };
    let narrow = rate(&l, "key", "1/min", Some(1));
    let q = quota(&l, "key", "100/day", 1);
    let all = [wide.clone(), narrow.clone()];
    assert!(allowed(&l.check(&all, std::slice::from_ref(&q), T0)));
    for _ in 0..50 {
        let o = l.check(&all, std::slice::from_ref(&q), T0);
        assert!(matches!(o, Outcome::RateLimited { policy: "key", .. }), "{o:?}");
    }
    // The wide limit and the quota were consumed once, not 51 times.
    let Outcome::Allowed { states } = l.check(std::slice::from_ref(&wide), std::slice::from_ref(&q), T0) else {
        panic!()
    };
    assert_eq!(states[0].remaining, 1000 - 2);
    assert_eq!(states[1].remaining, 100 - 2);
    // And a quota refusal leaves the rates alone.
    let tiny = quota(&l, "tiny", "1/day", 5);
    let o = l.check(std::slice::from_ref(&wide), std::slice::from_ref(&tiny), T0);
    assert!(matches!(o, Outcome::QuotaExhausted { .. }));
    let Outcome::Allowed { states } = l.check(std::slice::from_ref(&wide), &[], T0) else {
        panic!()
    };
    assert_eq!(states[0].remaining, 1000 - 3);
}

/// Issue 3, point 8: at 2× offered load for 10 s, admitted requests are within 1% of what
/// GCRA allows (burst + duration / emission interval).
#[test]
fn accuracy_at_twice_the_limit() {
    for (spec, burst) in [("100/s", 10u64), ("50/s", 50), ("1000/s", 1), ("30/min", 5)] {
        let l = LocalLimiter::new();
        let r = rate(&l, "k", spec, Some(burst));
        let per_sec = r.spec.count as f64 / r.spec.period.as_secs_f64();
        let duration = if r.spec.period.as_secs() >= 60 { 600.0 } else { 10.0 };
        let offered = (per_sec * 2.0 * duration) as u64;
        let step = (duration * SEC as f64 / offered as f64) as u64;
        let mut admitted = 0u64;
        for i in 0..offered {
            if allowed(&l.check(std::slice::from_ref(&r), &[], T0 + i * step)) {
                admitted += 1;
            }
        }
        let expected = burst as f64 + per_sec * duration;
        let err = (admitted as f64 - expected).abs() / expected;
        assert!(
            err <= 0.01,
            "{spec} burst {burst}: admitted {admitted}, GCRA allows {expected}"
        );
    }
}

#[test]
fn quota_refill_sets_the_balance_and_never_stacks() {
    let l = LocalLimiter::new();
    let q = quota(&l, "k", "3/day", 1);
    // Midday: 3 allowed, the 4th refused until midnight.
    let noon = T0 + 12 * 3600 * SEC;
    for _ in 0..3 {
        assert!(allowed(&l.check(&[], std::slice::from_ref(&q), noon)));
    }
    let Outcome::QuotaExhausted {
        retry_after, states, ..
    } = l.check(&[], std::slice::from_ref(&q), noon)
    else {
        panic!()
    };
    assert_eq!(retry_after, Duration::from_secs(12 * 3600));
    assert_eq!(states[0].remaining, 0);
    // One second before midnight: still refused. At midnight: 3 again.
    let midnight = T0 + 24 * 3600 * SEC;
    assert!(!allowed(&l.check(&[], std::slice::from_ref(&q), midnight - SEC)));
    for _ in 0..3 {
        assert!(allowed(&l.check(&[], std::slice::from_ref(&q), midnight)));
    }
    assert!(!allowed(&l.check(&[], std::slice::from_ref(&q), midnight)));
    // A day without use does not stack: two days later the balance is 3, not 6.
    let later = midnight + 2 * 24 * 3600 * SEC;
    let mut n = 0;
    while allowed(&l.check(&[], std::slice::from_ref(&q), later)) {
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn monthly_and_interval_quotas_refill_at_their_boundaries() {
    let l = LocalLimiter::new();
    let m = quota(&l, "m", "2/month", 1);
    // 2027-01-31T23:00:00Z then 2027-02-01T00:00:00Z.
    let jan31 = (1_801_436_400) * SEC;
    let feb1 = (1_801_440_000) * SEC;
    assert!(allowed(&l.check(&[], std::slice::from_ref(&m), jan31)));
    assert!(allowed(&l.check(&[], std::slice::from_ref(&m), jan31)));
    let Outcome::QuotaExhausted { retry_after, .. } = l.check(&[], std::slice::from_ref(&m), jan31) else {
        panic!()
    };
    assert_eq!(retry_after, Duration::from_secs(3600));
    assert!(allowed(&l.check(&[], std::slice::from_ref(&m), feb1)));

    let i = quota(&l, "i", "1/12h", 1);
    assert!(allowed(&l.check(&[], std::slice::from_ref(&i), T0)));
    assert!(!allowed(&l.check(
        &[],
        std::slice::from_ref(&i),
        T0 + 12 * 3600 * SEC - 1
    )));
    assert!(allowed(&l.check(&[], std::slice::from_ref(&i), T0 + 12 * 3600 * SEC)));
}

#[test]
fn costs_are_charged() {
    let l = LocalLimiter::new();
    let q = quota(&l, "k", "10/day", 4);
    assert!(allowed(&l.check(&[], std::slice::from_ref(&q), T0)));
    assert!(allowed(&l.check(&[], std::slice::from_ref(&q), T0)));
    // 8 used, 2 left: a request costing 4 is refused and consumes nothing.
    assert!(!allowed(&l.check(&[], std::slice::from_ref(&q), T0)));
    let one = QuotaCheck { cost: 2, ..q.clone() };
    assert!(allowed(&l.check(&[], std::slice::from_ref(&one), T0)));
    let mut r = rate(&l, "r", "10/s", Some(10));
    r.cost = 6;
    assert!(allowed(&l.check(std::slice::from_ref(&r), &[], T0)));
    assert!(!allowed(&l.check(std::slice::from_ref(&r), &[], T0)));
}

/// Issue 3, point 5: N parallel requests against a quota of Q admit exactly Q.
#[test]
fn quota_is_exact_under_concurrency() {
    let l = std::sync::Arc::new(LocalLimiter::new());
    let q = quota(&l, "k", "237/day", 1);
    let r = RateCheck {
        name: "app",
        ..rate(&l, "app", "1000000/s", Some(1_000_000))
    };
    let admitted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (l, q, r, admitted) = (l.clone(), q.clone(), r.clone(), admitted.clone());
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if allowed(&l.check(std::slice::from_ref(&r), std::slice::from_ref(&q), T0)) {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(admitted.load(std::sync::atomic::Ordering::Relaxed), 237);
}

#[test]
fn idle_state_is_swept() {
    let l = LocalLimiter::new();
    for i in 0..1000 {
        let r = rate(&l, &format!("k{i}"), "10/s", Some(10));
        assert!(allowed(&l.check(&[r], &[], T0)));
    }
    let q = quota(&l, "q", "5/day", 1);
    assert!(allowed(&l.check(&[], std::slice::from_ref(&q), T0)));
    assert_eq!(l.len(), (1000, 1));
    // 50 ms later the buckets are not full yet.
    assert_eq!(l.sweep(T0 + SEC / 20), 0);
    // 1 s later every bucket is full again: equivalent to no state at all.
    assert_eq!(l.sweep(T0 + SEC), 1000);
    assert_eq!(l.len(), (0, 1), "the quota's period is still running");
    assert_eq!(l.sweep(T0 + 25 * 3600 * SEC), 1);
    assert!(l.is_empty());
}

proptest! {
    /// Whatever the arrival pattern, GCRA never admits more than burst + elapsed / T.
    #[test]
    fn never_more_than_gcra_allows(gaps in prop::collection::vec(0u64..50_000_000, 1..400), count in 1u64..100, burst in 1u64..20) {
        let l = LocalLimiter::new();
        let r = RateCheck { name: "key", key: l.key(&["p"]), spec: RateSpec::parse(&format!("{count}/s"), Some(burst)).unwrap(), cost: 1, group: None };
        let mut now = T0;
        let mut admitted = 0u64;
        for g in &gaps {
            now += g;
            if allowed(&l.check(std::slice::from_ref(&r), &[], now)) {
                admitted += 1;
            }
        }
        let t = r.spec.emission_interval_ns();
        let bound = burst + (now - T0) / t;
        prop_assert!(admitted <= bound, "admitted {} > bound {}", admitted, bound);
    }
}

/// Issue 22, point 9: `r` is exactly how many requests would be admitted at the moment of the
/// answer. N/min with burst N: the allowed answers count N-1 … 0, the refusal says 0 and the
/// exact time until the bucket is full; time passing gives back exactly one per interval.
#[test]
fn remaining_is_exact_at_the_boundary() {
    for n in [1u64, 2, 7, 10, 60] {
        let l = LocalLimiter::new();
        let r = rate(&l, "k", &format!("{n}/min"), None);
        for i in 0..n {
            let Outcome::Allowed { states } = l.check(std::slice::from_ref(&r), &[], T0) else {
                panic!("{n}/min: request {i} refused")
            };
            assert_eq!(states[0].remaining, n - 1 - i, "{n}/min after {} requests", i + 1);
            assert_eq!(states[0].limit, n);
        }
        let Outcome::RateLimited { states, .. } = l.check(std::slice::from_ref(&r), &[], T0) else {
            panic!("{n}/min: request {} admitted", n + 1)
        };
        assert_eq!(states[0].remaining, 0, "{n}/min: the refusal");
        assert_eq!(states[0].reset_secs, 60, "{n}/min: a full bucket in exactly a minute");
        // One emission interval later, exactly one fits, and the answer says 0 left after it.
        let t = r.spec.emission_interval_ns();
        let Outcome::Allowed { states } = l.check(std::slice::from_ref(&r), &[], T0 + t) else {
            panic!("{n}/min: one interval later")
        };
        assert_eq!(states[0].remaining, 0);
        let Outcome::RateLimited { states, .. } = l.check(std::slice::from_ref(&r), &[], T0 + t) else {
            panic!("{n}/min: one interval later, the second")
        };
        assert_eq!(states[0].remaining, 0);
    }
}

/// A request refused by one limit consumes from none, so the answer reports every other limit
/// as it is: 8 left on the key's rate means `r=8`, not the 7 it would be had the request been
/// admitted (the off-by-one of issue 22, point 9).
#[test]
fn a_refusal_reports_what_is_left_not_what_would_have_been() {
    let l = LocalLimiter::new();
    let key = rate(&l, "key", "10/min", None);
    let app = RateCheck {
        name: "app",
        ..rate(&l, "app", "2/min", None)
    };
    let q = quota(&l, "q", "10/day", 1);
    let both = [key.clone(), app.clone()];
    for _ in 0..2 {
        assert!(allowed(&l.check(&both, std::slice::from_ref(&q), T0)));
    }
    let Outcome::RateLimited { policy, states, .. } = l.check(&both, std::slice::from_ref(&q), T0) else {
        panic!("the app's third request")
    };
    assert_eq!(policy, "app");
    assert_eq!((states[0].name, states[0].remaining), ("key", 8));
    assert_eq!((states[1].name, states[1].remaining), ("app", 0));
    assert_eq!((states[2].name, states[2].remaining), ("quota", 8));
    // And it is true: the key alone takes exactly 8 more.
    let mut n = 0;
    while allowed(&l.check(std::slice::from_ref(&key), &[], T0)) {
        n += 1;
    }
    assert_eq!(n, 8);
    // A quota refusal reports the rates as they are too.
    let tiny = quota(&l, "tiny", "1/day", 2);
    let fresh = rate(&l, "fresh", "5/min", None);
    let Outcome::QuotaExhausted { states, .. } = l.check(std::slice::from_ref(&fresh), &[tiny], T0) else {
        panic!("cost 2 on a quota of 1")
    };
    assert_eq!(states[0].remaining, 5);
    assert_eq!(states[0].reset_secs, 0, "an untouched bucket is full now");
    assert_eq!(states[1].remaining, 1);
}

/// `/week` quotas refill on Mondays at 00:00 UTC (ISO weeks).
#[test]
fn weekly_quotas_refill_on_monday() {
    let l = LocalLimiter::new();
    let w = quota(&l, "w", "2/week", 1);
    // 2027-01-03 is a Sunday; 2027-01-04 a Monday.
    let sunday_late = 1_799_020_799 * SEC;
    let monday = 1_799_020_800 * SEC;
    assert!(allowed(&l.check(&[], std::slice::from_ref(&w), sunday_late)));
    assert!(allowed(&l.check(&[], std::slice::from_ref(&w), sunday_late)));
    let Outcome::QuotaExhausted { retry_after, .. } = l.check(&[], std::slice::from_ref(&w), sunday_late) else {
        panic!()
    };
    assert_eq!(retry_after, Duration::from_secs(1));
    let Outcome::Allowed { states } = l.check(&[], std::slice::from_ref(&w), monday) else {
        panic!("Monday refills")
    };
    assert_eq!((states[0].remaining, states[0].reset_secs), (1, 7 * 86_400));
}
