//! Against a real Redis: `KEYWARD_TEST_REDIS_URL` (e.g. `redis://127.0.0.1:6379/`). Unset:
//! each test prints a line and passes; set but unreachable: the tests fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use std::sync::atomic::AtomicUsize;

const SEC_US: u64 = 1_000_000;
/// 2027-01-01T00:00:00Z in µs.
const T0: u64 = 1_798_761_600 * SEC_US;

fn url() -> Option<String> {
    match std::env::var("KEYWARD_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            println!("skipped: KEYWARD_TEST_REDIS_URL is not set");
            None
        }
    }
}

fn prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "test-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn limiter_at(url: &str, cfg: impl FnOnce(&mut RedisConfig)) -> RedisLimiter {
    let mut c = RedisConfig {
        topology: Topology::Single(url.into()),
        prefix: prefix(),
        // Generous for debug builds on a loaded machine; the failure tests set their own.
        timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    };
    cfg(&mut c);
    RedisLimiter::new(c).unwrap()
}

fn rate(id: &str, spec: &str, burst: Option<u64>) -> RateCheck {
    RateCheck {
        name: "key",
        key: LimitKey::stable(&["rate", id]),
        spec: RateSpec::parse(spec, burst).unwrap(),
        cost: 1,
        group: None,
    }
}

fn quota(id: &str, spec: &str, cost: u64) -> QuotaCheck {
    QuotaCheck {
        name: "quota",
        key: LimitKey::stable(&["quota", id]),
        spec: QuotaSpec::parse(spec).unwrap(),
        cost,
        group: None,
    }
}

fn allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allowed { .. })
}

async fn at(l: &RedisLimiter, r: &[RateCheck], q: &[QuotaCheck], now: u64) -> Outcome {
    l.check_at(r, q, Some(now)).await.unwrap()
}

#[tokio::test]
async fn burst_then_steady_rate() {
    let Some(u) = url() else { return };
    let l = limiter_at(&u, |_| {});
    let r = [rate("k", "10/s", Some(5))];
    for i in 0..5 {
        let Outcome::Allowed { states } = at(&l, &r, &[], T0).await else {
            panic!("request {i} refused")
        };
        assert_eq!(states[0].remaining, 4 - i);
        assert_eq!(states[0].limit, 5);
        assert_eq!(states[0].window_secs, 1);
    }
    let Outcome::RateLimited {
        retry_after, policy, ..
    } = at(&l, &r, &[], T0).await
    else {
        panic!("the sixth request at once was admitted")
    };
    assert_eq!(policy, "key");
    assert_eq!(retry_after, Duration::from_millis(100));
    assert!(allowed(&at(&l, &r, &[], T0 + SEC_US / 10).await));
    assert!(!allowed(&at(&l, &r, &[], T0 + SEC_US / 10).await));
}

#[tokio::test]
async fn a_refused_request_consumes_from_no_limit() {
    let Some(u) = url() else { return };
    let l = limiter_at(&u, |_| {});
    let wide = RateCheck {
        name: "app",
        ..rate("app", "1000/s", Some(1000))
    };
    let narrow = rate("key", "1/min", Some(1));
    let q = [quota("key", "100/day", 1)];
    let all = [wide.clone(), narrow];
    assert!(allowed(&at(&l, &all, &q, T0).await));
    for _ in 0..20 {
        let o = at(&l, &all, &q, T0).await;
        assert!(matches!(o, Outcome::RateLimited { policy: "key", .. }), "{o:?}");
    }
    let Outcome::Allowed { states } = at(&l, std::slice::from_ref(&wide), &q, T0).await else {
        panic!()
    };
    assert_eq!(states[0].remaining, 1000 - 2);
    assert_eq!(states[1].remaining, 100 - 2);
    let tiny = [quota("tiny", "1/day", 5)];
    let o = at(&l, std::slice::from_ref(&wide), &tiny, T0).await;
    assert!(matches!(o, Outcome::QuotaExhausted { .. }), "{o:?}");
    let Outcome::Allowed { states } = at(&l, std::slice::from_ref(&wide), &[], T0).await else {
        panic!()
    };
    assert_eq!(states[0].remaining, 1000 - 3);
}

#[tokio::test]
async fn accuracy_at_twice_the_limit() {
    let Some(u) = url() else { return };
    for (spec, burst) in [("100/s", 10u64), ("50/s", 50), ("30/min", 5)] {
        let l = limiter_at(&u, |_| {});
        let r = [rate("k", spec, Some(burst))];
        let per_sec = r[0].spec.count as f64 / r[0].spec.period.as_secs_f64();
        let duration = if r[0].spec.period.as_secs() >= 60 { 600.0 } else { 10.0 };
        let offered = (per_sec * 2.0 * duration) as u64;
        let step = (duration * SEC_US as f64 / offered as f64) as u64;
        let mut admitted = 0u64;
        for i in 0..offered {
            if allowed(&at(&l, &r, &[], T0 + i * step).await) {
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

#[tokio::test]
async fn quota_refill_sets_the_balance_and_never_stacks() {
    let Some(u) = url() else { return };
    let l = limiter_at(&u, |_| {});
    let q = [quota("k", "3/day", 1)];
    let noon = T0 + 12 * 3600 * SEC_US;
    for _ in 0..3 {
        assert!(allowed(&at(&l, &[], &q, noon).await));
    }
    let Outcome::QuotaExhausted {
        retry_after, states, ..
    } = at(&l, &[], &q, noon).await
    else {
        panic!()
    };
    assert_eq!(retry_after, Duration::from_secs(12 * 3600));
    assert_eq!(states[0].remaining, 0);
    let midnight = T0 + 24 * 3600 * SEC_US;
    assert!(!allowed(&at(&l, &[], &q, midnight - SEC_US).await));
    for _ in 0..3 {
        assert!(allowed(&at(&l, &[], &q, midnight).await));
    }
    assert!(!allowed(&at(&l, &[], &q, midnight).await));
    let later = midnight + 2 * 24 * 3600 * SEC_US;
    let mut n = 0;
    while allowed(&at(&l, &[], &q, later).await) {
        n += 1;
    }
    assert_eq!(n, 3);
}

#[tokio::test]
async fn monthly_and_interval_quotas_refill_at_their_boundaries() {
    let Some(u) = url() else { return };
    let l = limiter_at(&u, |_| {});
    let m = [quota("m", "2/month", 1)];
    let jan31 = 1_801_436_400 * SEC_US;
    let feb1 = 1_801_440_000 * SEC_US;
    assert!(allowed(&at(&l, &[], &m, jan31).await));
    assert!(allowed(&at(&l, &[], &m, jan31).await));
    let Outcome::QuotaExhausted { retry_after, .. } = at(&l, &[], &m, jan31).await else {
        panic!()
    };
    assert_eq!(retry_after, Duration::from_secs(3600));
    assert!(allowed(&at(&l, &[], &m, feb1).await));
    // December → January crosses a year; February of a leap year ends on the 29th.
    let dec31 = 1_830_297_599 * SEC_US; // 2027-12-31T23:59:59Z
    let Outcome::Allowed { states } = at(&l, &[], &[quota("d", "5/month", 1)], dec31).await else {
        panic!()
    };
    assert_eq!(states[0].reset_secs, 1);
    let feb2028 = 1_832_976_000 * SEC_US; // 2028-02-01T00:00:00Z
    let Outcome::Allowed { states } = at(&l, &[], &[quota("f", "5/month", 1)], feb2028).await else {
        panic!()
    };
    assert_eq!(states[0].reset_secs, 29 * 86_400);

    let i = [quota("i", "1/12h", 1)];
    assert!(allowed(&at(&l, &[], &i, T0).await));
    assert!(!allowed(&at(&l, &[], &i, T0 + 12 * 3600 * SEC_US - 1).await));
    assert!(allowed(&at(&l, &[], &i, T0 + 12 * 3600 * SEC_US).await));
}

#[tokio::test]
async fn costs_are_charged() {
    let Some(u) = url() else { return };
    let l = limiter_at(&u, |_| {});
    let q = quota("k", "10/day", 4);
    assert!(allowed(&at(&l, &[], std::slice::from_ref(&q), T0).await));
    assert!(allowed(&at(&l, &[], std::slice::from_ref(&q), T0).await));
    assert!(!allowed(&at(&l, &[], std::slice::from_ref(&q), T0).await));
    let two = QuotaCheck { cost: 2, ..q.clone() };
    assert!(allowed(&at(&l, &[], &[two], T0).await));
    let mut r = rate("r", "10/s", Some(10));
    r.cost = 6;
    assert!(allowed(&at(&l, std::slice::from_ref(&r), &[], T0).await));
    assert!(!allowed(&at(&l, std::slice::from_ref(&r), &[], T0).await));
}

/// Many concurrent tasks against one quota and one rate (Redis `TIME` as the clock) admit
/// exactly the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_under_concurrency_with_the_redis_clock() {
    let Some(u) = url() else { return };
    let l = Arc::new(limiter_at(&u, |_| {}));
    for (rates, quotas, expect) in [
        (vec![], vec![quota("q", "237/day", 1)], 237u64),
        // 150 per hour with a burst of 150: in the few seconds of the test, exactly 150.
        (vec![rate("r", "150/hour", Some(150))], vec![], 150),
    ] {
        let admitted = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (l, r, q, admitted) = (l.clone(), rates.clone(), quotas.clone(), admitted.clone());
                tokio::spawn(async move {
                    for _ in 0..20 {
                        if allowed(&l.check(&r, &q).await.unwrap()) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), expect);
    }
}

/// Idle state expires by itself: rate keys when the bucket is full again, quota keys when
/// the period ends.
#[tokio::test]
async fn keys_carry_ttls() {
    let Some(u) = url() else { return };
    let l = limiter_at(&u, |_| {});
    let r = rate("ttl", "10/s", Some(10));
    let q = quota("ttl", "10/day", 1);
    assert!(allowed(
        &l.check(std::slice::from_ref(&r), std::slice::from_ref(&q))
            .await
            .unwrap()
    ));
    let mut c = l.link.get().await.unwrap();
    let tag = l.tag_of(r.group, &r.key);
    let rk = RedisLimiter::key_name(&tag, 'r', &r.key);
    let qk = RedisLimiter::key_name(&tag, 'q', &q.key);
    assert!(rk.starts_with(&format!("kw:{{{}}}:r:", l.cfg.prefix)));
    let pttl: i64 = c.pttl(&rk).await.unwrap();
    assert!((1..=102).contains(&pttl), "rate key PTTL {pttl}");
    let ttl: i64 = c.ttl(&qk).await.unwrap();
    assert!((1..=86_401).contains(&ttl), "quota key TTL {ttl}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let exists: bool = c.exists(&rk).await.unwrap();
    assert!(!exists, "a full bucket leaves no state");
}

#[tokio::test]
async fn dpop_replay_and_denylist_are_shared() {
    let Some(u) = url() else { return };
    let a = Arc::new(limiter_at(&u, |_| {}));
    let prefix = a.cfg.prefix.clone();
    let b = Arc::new(limiter_at(&u, |c| c.prefix = prefix));
    assert!(a.first_use("jkt:jti-1", Duration::from_secs(10)).await.unwrap());
    assert!(!b.first_use("jkt:jti-1", Duration::from_secs(10)).await.unwrap());
    assert!(b.first_use("jkt:jti-2", Duration::from_secs(10)).await.unwrap());

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // An entry made before B follows the list is loaded on subscription; one made after
    // arrives by message.
    a.deny("early", now + 60, now).await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let sink = {
        let seen = seen.clone();
        Arc::new(move |j: String, e: i64| seen.lock().unwrap().push((j, e))) as Arc<dyn Fn(String, i64) + Send + Sync>
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(b.clone().follow_denylist(sink, stop));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.lock().unwrap().iter().any(|(j, _)| j == "early") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the existing denylist was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.deny("late", now + 60, now).await.unwrap();
    while !seen.lock().unwrap().iter().any(|(j, _)| j == "late") {
        assert!(tokio::time::Instant::now() < deadline, "the revocation did not arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(seen.lock().unwrap().contains(&("late".into(), now + 60)));
    stop_tx.send(true).unwrap();
    follower.await.unwrap();
}

/// A revocation that could not be shared within the request budget is not dropped: the call
/// says so, and a background retry (bounded by `DENY_RETRY_TIMEOUT`, past the breaker) shares
/// it; every follower receives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_that_timed_out_is_shared_by_a_retry() {
    let Some(u) = url() else { return };
    // A budget no call can meet (it must connect first): the first attempt always times out.
    let a = Arc::new(limiter_at(&u, |c| c.timeout = Duration::ZERO));
    let prefix = a.cfg.prefix.clone();
    let b = Arc::new(limiter_at(&u, |c| c.prefix = prefix));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let sink = {
        let seen = seen.clone();
        Arc::new(move |j: String, e: i64| seen.lock().unwrap().push((j, e))) as Arc<dyn Fn(String, i64) + Send + Sync>
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(b.clone().follow_denylist(sink, stop));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let first = a.deny("retried", now + 60, now).await;
    assert!(matches!(first, Err(RedisCallError::Timeout)), "{first:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !seen.lock().unwrap().contains(&("retried".into(), now + 60)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation was dropped after its first attempt timed out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Done: no retry left running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.deny_retries.load(Ordering::Relaxed) != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the retry did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(true).unwrap();
    follower.await.unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of our own that a test may stop and start again.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let mut r = OwnRedis { port, child: None };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let bin = std::env::var("KEYWARD_TEST_REDIS_SERVER").unwrap_or_else(|_| "/usr/bin/redis-server".into());
        let child = std::process::Command::new(&bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (install redis-server): {e}"));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Redis unreachable: every mode answers at once (bounded by the timeout, then by the open
/// breaker), and when Redis comes back the breaker closes and shared limits resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_modes_and_recovery() {
    let Some(_) = url() else { return };
    let port = free_port();
    let mut own = OwnRedis::start(port);
    let l = Arc::new(limiter_at(&format!("redis://127.0.0.1:{port}/"), |c| {
        c.timeout = Duration::from_millis(50);
        c.breaker = BreakerConfig {
            failures: 3,
            cooldown: Duration::from_millis(300),
        };
        c.nodes_hint = 2;
    }));
    let lim = Limiter::Redis(l.clone());
    let q = [quota("q", "10/day", 1)];
    let now_ns = T0 * 1000;
    let check = |mode| {
        let lim = &lim;
        let q = &q;
        async move { lim.check(&[], q, now_ns, mode).await }
    };
    for _ in 0..4 {
        assert!(allowed(&check(OnLimiterFailure::FailClosed).await.unwrap()));
    }
    own.stop();
    // Errors or timeouts, then the breaker opens: no call takes much longer than the timeout.
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let o = check(OnLimiterFailure::FailClosed).await;
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a call took {:?}",
            t.elapsed()
        );
        assert_eq!(
            o,
            Err(LimiterUnavailable {
                retry_after: Duration::from_secs(1)
            })
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(l.breaker_state(), BreakerState::Open);
    assert!(l.stats().short_circuits.load(Ordering::Relaxed) > 0);
    // fail_open admits without limits.
    for _ in 0..50 {
        assert_eq!(
            check(OnLimiterFailure::FailOpen).await,
            Ok(Outcome::Allowed { states: Vec::new() })
        );
    }
    // local: this node enforces 10 / 2 = 5.
    let mut n = 0;
    while allowed(&check(OnLimiterFailure::Local).await.unwrap()) {
        n += 1;
        assert!(n <= 5);
    }
    assert_eq!(n, 5);
    // Redis comes back (empty: no persistence); after the cooldown a probe closes the breaker.
    own.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(o) = l.check(&[], &q).await {
            assert!(allowed(&o));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shared limiter did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(l.breaker_state(), BreakerState::Closed);
    // Shared limits again: the fresh Redis counts from 1.
    let mut n = 1;
    while allowed(&check(OnLimiterFailure::FailClosed).await.unwrap()) {
        n += 1;
    }
    assert_eq!(n, 10);
}

/// Issue 22, point 9, through the script: N/min with burst N counts N-1 … 0, the refusal says
/// 0 and a full bucket in exactly a minute, and a refusal reports every other limit as it is.
#[tokio::test]
async fn remaining_is_exact_at_the_boundary() {
    let Some(u) = url() else { return };
    let l = limiter_at(&u, |_| {});
    for n in [1u64, 2, 7, 10, 60] {
        let r = [rate(&format!("b{n}"), &format!("{n}/min"), None)];
        for i in 0..n {
            let Outcome::Allowed { states } = at(&l, &r, &[], T0).await else {
                panic!("{n}/min: request {i} refused")
            };
            assert_eq!(states[0].remaining, n - 1 - i, "{n}/min after {} requests", i + 1);
        }
        let Outcome::RateLimited { states, .. } = at(&l, &r, &[], T0).await else {
            panic!("{n}/min: request {} admitted", n + 1)
        };
        assert_eq!(states[0].remaining, 0, "{n}/min: the refusal");
        assert_eq!(states[0].reset_secs, 60, "{n}/min");
    }
    let key = rate("key", "10/min", None);
    let app = RateCheck {
        name: "app",
        ..rate("app", "2/min", None)
    };
    let q = [quota("q", "10/day", 1)];
    let both = [key.clone(), app];
    for _ in 0..2 {
        assert!(allowed(&at(&l, &both, &q, T0).await));
    }
    let Outcome::RateLimited { policy, states, .. } = at(&l, &both, &q, T0).await else {
        panic!("the app's third request")
    };
    assert_eq!(policy, "app");
    assert_eq!((states[0].name, states[0].remaining), ("key", 8));
    assert_eq!((states[1].name, states[1].remaining), ("app", 0));
    assert_eq!((states[2].name, states[2].remaining), ("quota", 8));
    let mut n = 0;
    while allowed(&at(&l, std::slice::from_ref(&key), &[], T0).await) {
        n += 1;
    }
    assert_eq!(n, 8);
    let tiny = [quota("tiny", "1/day", 2)];
    let fresh = [rate("fresh", "5/min", None)];
    let Outcome::QuotaExhausted { states, .. } = at(&l, &fresh, &tiny, T0).await else {
        panic!("cost 2 on a quota of 1")
    };
    assert_eq!((states[0].remaining, states[0].reset_secs), (5, 0));
    assert_eq!(states[1].remaining, 1);
}

/// `/week` quotas refill on Mondays at 00:00 UTC in the script as in process.
#[tokio::test]
async fn weekly_quotas_refill_on_monday() {
    let Some(u) = url() else { return };
    let l = limiter_at(&u, |_| {});
    let w = [quota("w", "2/week", 1)];
    // 2027-01-03 is a Sunday; 2027-01-04 a Monday.
    let sunday_late = 1_799_020_799 * SEC_US;
    let monday = 1_799_020_800 * SEC_US;
    assert!(allowed(&at(&l, &[], &w, sunday_late).await));
    assert!(allowed(&at(&l, &[], &w, sunday_late).await));
    let Outcome::QuotaExhausted { retry_after, .. } = at(&l, &[], &w, sunday_late).await else {
        panic!()
    };
    assert_eq!(retry_after, Duration::from_secs(1));
    let Outcome::Allowed { states } = at(&l, &[], &w, monday).await else {
        panic!("Monday refills")
    };
    assert_eq!((states[0].remaining, states[0].reset_secs), (1, 7 * 86_400));
}

/// The remaining units of each limit (rates, then quotas) of an allowed decision.
fn remaining(o: &Outcome) -> Vec<u64> {
    match o {
        Outcome::Allowed { states } => states.iter().map(|s| s.remaining).collect(),
        other => panic!("refused: {other:?}"),
    }
}

/// Under Cluster, a request whose limits span slots gives back what the earlier slots took
/// when a later one refuses (`refund.lua`): exactly the cost, additive with other requests'
/// consumption, never below an empty count or a full bucket.
#[tokio::test]
async fn a_refund_gives_back_exactly_what_was_taken() {
    let Some(u) = url() else { return };
    let l = limiter_at(&u, |_| {});
    let r = [rate("refund", "10/s", Some(10))];
    let q = [quota("refund", "5/day", 2)];
    let slot = Slot {
        tag: l.cfg.prefix.clone(),
        rates: vec![0],
        quotas: vec![0],
    };
    assert_eq!(remaining(&l.decide(&slot, &r, &q, Some(T0)).await.unwrap()), vec![9, 3]);
    assert_eq!(remaining(&l.decide(&slot, &r, &q, Some(T0)).await.unwrap()), vec![8, 1]);
    l.give_back(&slot, &r, &q, Some(T0)).await;
    // As if the second request had never been: it fits again, with the same remainders.
    assert_eq!(remaining(&l.decide(&slot, &r, &q, Some(T0)).await.unwrap()), vec![8, 1]);
    // Ten seconds later the bucket is full: giving back changes nothing there; the quota's
    // count goes down to zero and no further.
    let later = T0 + 10 * SEC_US;
    for _ in 0..3 {
        l.give_back(&slot, &r, &q, Some(later)).await;
    }
    assert_eq!(
        remaining(&l.decide(&slot, &r, &q, Some(later)).await.unwrap()),
        vec![9, 3]
    );
}

/// A refusal Redis answered is remembered until it lapses: while Redis is unavailable, the
/// `local` fallback refuses what Redis has just refused (a quota used up cluster-wide stays used
/// up, a rate stays refused until its retry time) instead of admitting it on its own budget;
/// limits Redis never refused, a limit whose definition changed since, and a refusal that has
/// lapsed get the fallback's budget (limit / nodes_hint) as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_fallback_keeps_what_redis_refused() {
    let Some(_) = url() else { return };
    let port = free_port();
    let mut own = OwnRedis::start(port);
    let l = Arc::new(limiter_at(&format!("redis://127.0.0.1:{port}/"), |c| {
        c.nodes_hint = 2;
        // Once Redis is gone, one failure opens the breaker for the rest of the test: every
        // later decision is the fallback's at once.
        c.breaker = BreakerConfig {
            failures: 1,
            cooldown: Duration::from_secs(120),
        };
    }));
    let lim = Limiter::Redis(l.clone());
    let now_ns = T0 * 1000;
    async fn local(lim: &Limiter, r: &[RateCheck], q: &[QuotaCheck]) -> Outcome {
        lim.check(r, q, T0 * 1000, OnLimiterFailure::Local).await.unwrap()
    }
    let used_up = [quota("used-up", "4/day", 1)];
    let limited = [rate("limited", "2/min", None)];
    let short = [rate("short", "1/s", Some(1))];
    for _ in 0..4 {
        assert!(allowed(&local(&lim, &[], &used_up).await));
    }
    let refused = local(&lim, &[], &used_up).await;
    assert!(matches!(refused, Outcome::QuotaExhausted { .. }), "{refused:?}");
    for _ in 0..2 {
        assert!(allowed(&local(&lim, &limited, &[]).await));
    }
    assert!(matches!(local(&lim, &limited, &[]).await, Outcome::RateLimited { .. }));
    assert!(allowed(&local(&lim, &short, &[]).await));
    assert!(matches!(local(&lim, &short, &[]).await, Outcome::RateLimited { .. }));
    assert_eq!(l.stats().local_fallback.load(Ordering::Relaxed), 0);

    own.stop();
    // Redis is gone: the quota it reported used up stays refused on this node, with its retry
    // time; so does the rate (refused for up to 30 s).
    for _ in 0..5 {
        match local(&lim, &[], &used_up).await {
            Outcome::QuotaExhausted {
                policy,
                retry_after,
                states,
            } => {
                assert_eq!(policy, "quota");
                assert!(retry_after >= Duration::from_secs(1));
                assert_eq!(states.len(), 1);
                assert_eq!(states[0].remaining, 0);
                assert_eq!(states[0].limit, 4);
            }
            o => panic!("the used-up quota was decided by the fallback's budget: {o:?}"),
        }
        match local(&lim, &limited, &[]).await {
            Outcome::RateLimited { retry_after, .. } => assert!(retry_after <= Duration::from_secs(30)),
            o => panic!("the refused rate was admitted: {o:?}"),
        }
    }
    assert_eq!(l.stats().local_fallback.load(Ordering::Relaxed), 10);
    assert_eq!(l.stats().remembered_refusals.load(Ordering::Relaxed), 10);
    // A quota Redis never refused: the fallback's own budget, 4 / 2.
    let fresh = [quota("fresh", "4/day", 1)];
    let mut n = 0;
    while allowed(&local(&lim, &[], &fresh).await) {
        n += 1;
        assert!(n <= 2);
    }
    assert_eq!(n, 2);
    // The used-up quota raised to 8/day since: the old refusal does not apply (8 / 2 = 4).
    let raised = [quota("used-up", "8/day", 1)];
    let mut n = 0;
    while allowed(&local(&lim, &[], &raised).await) {
        n += 1;
        assert!(n <= 4);
    }
    assert_eq!(n, 4);
    // fail_open still admits without limits, fail_closed still refuses.
    assert!(allowed(
        &lim.check(&[], &used_up, now_ns, OnLimiterFailure::FailOpen)
            .await
            .unwrap()
    ));
    assert!(lim
        .check(&[], &used_up, now_ns, OnLimiterFailure::FailClosed)
        .await
        .is_err());
    // The short rate's refusal (at most a second) lapses: swept, and the fallback decides the
    // rate on its own budget again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(lim.sweep(now_ns) >= 1);
    assert!(allowed(&local(&lim, &short, &[]).await));
    assert!(matches!(
        local(&lim, &[], &used_up).await,
        Outcome::QuotaExhausted { .. }
    ));
}
