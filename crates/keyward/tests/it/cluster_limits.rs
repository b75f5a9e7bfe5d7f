//! Issue 7, point 5 (b) and (c): three keyward nodes sharing one SQLite file (WAL) and one
//! Redis; limits hold cluster-wide, and each failure mode does what it says when Redis stops.
//!
//! Needs `KEYWARD_TEST_REDIS_URL` (e.g. `redis://127.0.0.1:6379/`): unset, each test prints a
//! line and passes; set but unreachable, they fail. The "Redis stops" test starts its own
//! `redis-server` (`/usr/bin/redis-server`, or `KEYWARD_TEST_REDIS_SERVER`) on a free port.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyward::config::{LimiterFailure, RedisSection};
use keyward_engine::limit::breaker::BreakerState;
use serde_json::json;

use super::harness::*;

fn redis_url() -> Option<String> {
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
        "it-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn section(url: &str, prefix: &str) -> RedisSection {
    RedisSection {
        url: url.into(),
        prefix: prefix.into(),
        // Debug builds of three nodes and their load in one process on a loaded 2-core machine:
        // an answer later than the timeout is decided by the route's failure mode instead
        // (`local`: this node's own budget), which is not what these tests measure. 200 ms was
        // exceeded under load (4 timeouts in 400 requests turned a quota of 200 into 201
        // admitted): 2 s. A stopped Redis still fails fast (connection refused).
        timeout: Duration::from_secs(2),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(300),
        nodes_hint: 3,
        ..RedisSection::default()
    }
}

/// Three nodes: the first creates the SQLite file, the other two open the same one. The
/// upstream may take up to 10 s (the harness's 500 ms answered a 504 once on a loaded machine:
/// these tests count admissions, not the upstream's speed).
async fn cluster(redis: RedisSection, tweak: impl Fn(&mut keyward::config::Config)) -> Vec<Kw> {
    let a = boot_with(|c| {
        c.redis = Some(redis.clone());
        c.gateway.upstream_timeout = Duration::from_secs(10);
        tweak(c);
    })
    .await;
    let db = a.db_path().display().to_string();
    let mut nodes = vec![a];
    for _ in 0..2 {
        nodes.push(
            boot_with(|c| {
                c.store.url = db.clone();
                c.redis = Some(redis.clone());
                c.gateway.upstream_timeout = Duration::from_secs(10);
                tweak(c);
            })
            .await,
        );
    }
    nodes
}

async fn status(node: &Kw, path: &str, key: &str) -> u16 {
    node.get(path, &[("x-api-key", key)]).await.status().as_u16()
}

/// (b) A quota of 200 under 2× offered load (400 requests, 8 at a time, round-robin over the
/// three nodes) admits exactly 200; a rate of 20/s with a burst of 20 under 40/s for 10 s admits
/// within 1% of what GCRA allows over the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_wide_limit_holds_across_three_nodes() {
    let Some(url) = redis_url() else { return };
    let nodes = std::sync::Arc::new(cluster(section(&url, &prefix()), |_| {}).await);
    let (_, quota_key) = nodes[0].key("cats", &[], json!({"quota": "200/day"})).await;

    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (nodes, next, k) = (nodes.clone(), next.clone(), quota_key.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0u32, 0u32);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= 400 {
                    return (ok, limited);
                }
                match status(&nodes[i % 3], "/echo", &k).await {
                    200 => ok += 1,
                    429 => limited += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for w in workers {
        let (o, l) = w.await.unwrap();
        ok += o;
        limited += l;
    }
    println!(
        "cluster quota 200/day, 400 offered over 3 nodes: admitted {ok}, refused {limited}; redis calls: {}",
        redis_stats(&nodes)
    );
    assert_eq!((ok, limited), (200, 200), "redis calls: {}", redis_stats(&nodes));

    // Rate: 40 requests a second for 10 s against 20/s (burst 20), round-robin. GCRA admits at
    // most the burst plus one every 50 ms over the span from the first request sent to the last
    // answer: over-admission is measured against that, always. Under-admission says something
    // about the limiter only when the load was offered as planned: every request sent on its
    // 25 ms tick and answered within one emission interval (50 ms) of it. A loaded machine
    // stalls the generator (late ticks come in a burst, which GCRA rightly refuses beyond the
    // burst), so a run that was not steady is repeated with a fresh key, up to three runs.
    let mut steady_runs = 0;
    for run in 1..=3 {
        let (_, rate_key) = nodes[0]
            .key("cats", &[], json!({"rate": {"limit": "20/s", "burst": 20}}))
            .await;
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(25));
        let mut pending = Vec::new();
        for i in 0..400usize {
            tick.tick().await;
            let (nodes, k) = (nodes.clone(), rate_key.clone());
            let due = start + Duration::from_millis(25 * i as u64);
            pending.push(tokio::spawn(async move {
                let s = status(&nodes[i % 3], "/echo", &k).await;
                (s, due.elapsed())
            }));
        }
        let (mut admitted, mut worst) = (0u32, Duration::ZERO);
        for p in pending {
            let (s, late) = p.await.unwrap();
            worst = worst.max(late);
            match s {
                200 => admitted += 1,
                429 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        let span = start.elapsed().as_secs_f64();
        let allowed = 20.0 + (span * 20.0).floor();
        let err = (f64::from(admitted) - allowed) / allowed;
        let steady = worst <= Duration::from_millis(50);
        println!(
            "cluster rate 20/s burst 20, 40/s offered for {span:.2} s over 3 nodes (run {run}): admitted {admitted}, \
             GCRA allows {allowed}, error {:+.2}%; each answer within {} ms of its tick{}",
            err * 100.0,
            worst.as_millis(),
            if steady { "" } else { ": not steady" }
        );
        assert!(
            err <= 0.01,
            "over-admission {:.2}%; redis calls: {}",
            err * 100.0,
            redis_stats(&nodes)
        );
        if steady {
            assert!(
                err >= -0.02,
                "under-admission {:.2}%; redis calls: {}",
                err * 100.0,
                redis_stats(&nodes)
            );
            steady_runs += 1;
            break;
        }
    }
    if steady_runs == 0 {
        println!(
            "cluster rate: the machine was too busy to offer a steady 40/s in three runs; under-admission not judged"
        );
    }
}

/// Each node's Redis call counters (calls, errors, timeouts, short circuits, local fallbacks):
/// a failed exactness assertion says whether the shared limiter answered every call.
pub(super) fn redis_stats(nodes: &[Kw]) -> String {
    nodes
        .iter()
        .map(|n| {
            let r = n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
            let s = r.stats();
            let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            format!(
                "[calls {} errors {} timeouts {} short-circuits {} local {}]",
                l(&s.calls),
                l(&s.errors),
                l(&s.timeouts),
                l(&s.short_circuits),
                l(&s.local_fallback)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A redis-server of our own, to stop and start again.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
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

/// (c) Redis stopped mid-run: `fail_open` admits and never answers 5xx, `fail_closed` answers
/// 503 `limiter_unavailable` with `Retry-After`, `local` enforces limit / 3 on each node; when
/// Redis comes back the breakers close and the cluster-wide limit applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_each_failure_mode_holds_then_recovers() {
    let Some(_) = redis_url() else { return };
    let mut redis = OwnRedis::start();
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let mut section = section(&url, &prefix());
    // While Redis is down every probe of the breaker waits up to this: short, as in production.
    section.timeout = Duration::from_millis(200);
    let nodes = cluster(section, |c| {
        let echo = c.routes.iter().find(|r| r.name == "echo").unwrap().clone();
        for (name, mode) in [
            ("open", LimiterFailure::FailOpen),
            ("closed", LimiterFailure::FailClosed),
            ("local", LimiterFailure::Local),
        ] {
            let mut r = echo.clone();
            r.name = name.into();
            r.path_prefix = format!("/{name}");
            r.on_limiter_failure = Some(mode);
            c.routes.insert(0, r);
        }
    })
    .await;
    let (_, k_open) = nodes[0].key("cats", &[], json!({"quota": "30/day"})).await;
    let (_, k_closed) = nodes[0].key("cats", &[], json!({"quota": "30/day"})).await;
    let (_, k_local) = nodes[0].key("cats", &[], json!({"quota": "30/day"})).await;
    // Shared limits while Redis runs: one request per key through each node (a call that
    // outlived the 200 ms timeout on a loaded machine is answered 503 by fail_closed: asked again).
    for n in &nodes {
        assert_eq!(status(n, "/open", &k_open).await, 200);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match status(n, "/closed", &k_closed).await {
                200 => break,
                503 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                s => panic!("fail_closed answered {s} while Redis runs"),
            }
        }
    }

    redis.stop();
    let stopped = Instant::now();
    // fail_open: 90 requests over the three nodes, every one admitted (30 − 3 left in Redis:
    // limits are off, not merely generous).
    for i in 0..90 {
        let s = status(&nodes[i % 3], "/open", &k_open).await;
        assert_eq!(s, 200, "fail_open answered {s}");
    }
    // fail_closed: 503 limiter_unavailable with Retry-After, on every node.
    for n in &nodes {
        let r = n.get("/closed", &[("x-api-key", &k_closed)]).await;
        assert!(r.headers().get("retry-after").is_some());
        problem(r, 503, "limiter_unavailable").await;
    }
    // local: each node admits 30 / 3 = 10 on its own.
    let mut per_node = Vec::new();
    for n in &nodes {
        let mut ok = 0;
        loop {
            match status(n, "/local", &k_local).await {
                200 => ok += 1,
                429 => break,
                other => panic!("local fallback answered {other}"),
            }
            assert!(ok <= 10);
        }
        per_node.push(ok);
    }
    println!(
        "redis down {:.1} s: fail_open 90/90 admitted, fail_closed 503, local per node {per_node:?}",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(per_node, vec![10, 10, 10]);
    for n in &nodes {
        let r = n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
        assert_ne!(r.breaker_state(), BreakerState::Closed);
        assert!(r.stats().short_circuits.load(Ordering::Relaxed) > 0);
        let health = health(n).await;
        assert_eq!(health["status"], "degraded", "{health}");
        assert_ne!(health["redis"]["breaker"], "closed", "{health}");
    }

    // Redis comes back (empty: it kept nothing). Within a cooldown or two every node's
    // breaker closes and the quota is cluster-wide again: 30 in all, not 10 per node.
    redis.restart();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(15);
    for n in &nodes {
        loop {
            let s = status(n, "/closed", &k_closed).await;
            if s == 200 {
                break;
            }
            assert_eq!(s, 503);
            assert!(Instant::now() < deadline, "a node did not recover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "recovered on all nodes {:.2} s after redis restarted",
        back.elapsed().as_secs_f64()
    );
    // Redis decides the `local` route again: each node has used its own budget for k_local
    // (10 of 10), so only Redis can admit it now (a call that outlived the timeout on a loaded
    // machine is refused by that used-up budget: asked again). The fresh Redis counts from zero.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut admitted = 0;
    for n in &nodes {
        loop {
            match status(n, "/local", &k_local).await {
                200 => break,
                429 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                s => panic!(
                    "the local route was not decided by Redis again: {s}; {}",
                    redis_stats(&nodes)
                ),
            }
        }
        admitted += 1;
    }
    // The quota is cluster-wide again: 30 in all over the three nodes, not 10 per node. Counted
    // on k_local (3 taken above): exact when Redis answered every call (on a loaded machine a
    // call may outlive the timeout and be refused by the used-up local budget); and on a fresh
    // key through fail_closed, which admits nothing without Redis: there a timed-out call is a
    // 503, asked again, so that count is exact in any case.
    let fallbacks = || -> u64 {
        nodes
            .iter()
            .map(|n| {
                let r = n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
                r.stats().local_fallback.load(Ordering::Relaxed)
            })
            .sum()
    };
    let before = fallbacks();
    let mut refused = 0;
    let mut i = 0;
    while refused < 30 {
        match status(&nodes[i % 3], "/local", &k_local).await {
            200 => admitted += 1,
            429 => refused += 1,
            s => panic!("local answered {s}"),
        }
        i += 1;
    }
    println!(
        "after the recovery: k_local admitted {admitted} in all; redis calls: {}",
        redis_stats(&nodes)
    );
    let decided_locally = fallbacks() - before;
    if decided_locally == 0 {
        assert_eq!(admitted, 30, "the quota is cluster-wide again");
    } else {
        assert!(admitted <= 30, "local over-admitted after the recovery: {admitted}");
        println!("{decided_locally} calls outlived the timeout: k_local's count is not exact, the fresh key's is");
    }
    let (_, k_after) = nodes[0].key("cats", &[], json!({"quota": "30/day"})).await;
    let (mut ok, mut limited, mut unavailable, mut i) = (0, 0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while limited < 30 {
        match status(&nodes[i % 3], "/closed", &k_after).await {
            200 => ok += 1,
            429 => limited += 1,
            503 => unavailable += 1,
            s => panic!("fail_closed answered {s}"),
        }
        i += 1;
        assert!(
            Instant::now() < deadline,
            "Redis did not answer: {}",
            redis_stats(&nodes)
        );
    }
    println!("after the recovery: a fresh quota of 30 through fail_closed: {ok} admitted, {limited} refused, {unavailable} asked again");
    assert_eq!(ok, 30, "the quota is cluster-wide again");
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in &nodes {
        let r = n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
        // A timeout on a loaded machine is a failure too; three in a row open the breaker
        // again for a cool-down: wait for the next probe.
        while r.breaker_state() != BreakerState::Closed {
            assert!(Instant::now() < deadline, "the breaker stayed {:?}", r.breaker_state());
            let _ = r.ping().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let health = health(n).await;
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["redis"]["breaker"], "closed", "{health}");
    }
}

async fn health(node: &Kw) -> serde_json::Value {
    node.http
        .get(format!("{}/healthz", node.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A token revoked through node A is refused by B and C at once: the revocation travels by
/// Redis pub/sub into every node's in-memory denylist (SQLite here, so Redis is the only way
/// it can travel), and verifying a token never waits for Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_node_is_refused_by_the_others_at_once() {
    let Some(url) = redis_url() else { return };
    let nodes = cluster(section(&url, &prefix()), tokens_on).await;
    revocation_reaches_every_node(&nodes).await;
}

/// The token service on, and every route taking tokens (for [`revocation_reaches_every_node`]).
pub(super) fn tokens_on(c: &mut keyward::config::Config) {
    c.oauth.enabled = true;
    c.oauth.issuer = Some("http://keyward.cluster.test".into());
    for r in c.routes.iter_mut() {
        r.tokens = true;
    }
}

/// A token minted and revoked through the first node is refused by every other node within
/// 2 s (nodes set up with [`tokens_on`], sharing Redis). Returns how long each node took.
pub(super) async fn revocation_reaches_every_node(nodes: &[Kw]) -> Vec<Duration> {
    let a = &nodes[0];
    a.admin(reqwest::Method::POST, "/v1/apps", Some(json!({"name": "cats"})))
        .await;
    let (s, client) = a
        .admin(
            reqwest::Method::POST,
            "/v1/clients",
            Some(json!({"app": "cats", "name": "c", "scopes": ["facts:read"]})),
        )
        .await;
    assert_eq!(s, 201, "{client}");
    let (id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    let form = |path: &str, body: String| {
        a.http
            .post(format!("{}{path}", a.gw))
            .basic_auth(id, Some(secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let v: serde_json::Value = form("/oauth/token", "grant_type=client_credentials".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    for n in nodes {
        assert_eq!(n.get("/echo", &[("authorization", &bearer)]).await.status(), 200);
    }
    assert_eq!(
        form("/oauth/revoke", format!("token={token}")).await.unwrap().status(),
        200
    );
    let revoked = Instant::now();
    let mut took = Vec::new();
    for n in &nodes[1..] {
        loop {
            let s = n.get("/echo", &[("authorization", &bearer)]).await.status().as_u16();
            if s == 401 {
                took.push(revoked.elapsed());
                break;
            }
            assert_eq!(s, 200);
            assert!(
                revoked.elapsed() < Duration::from_secs(2),
                "the revocation did not reach a node"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    println!("token revoked on the first node: refused by the others after {took:?}");
    assert_eq!(a.get("/echo", &[("authorization", &bearer)]).await.status(), 401);
    took
}

/// Issue 22, point 10 with Redis across three nodes: a rotation resets no limit, and the old
/// and new key share one budget during the grace period, whichever node they reach.
#[tokio::test]
async fn rotation_keeps_the_limits_across_the_cluster() {
    let Some(url) = redis_url() else { return };
    let nodes = cluster(section(&url, &prefix()), |_| {}).await;
    super::limits::rotation_keeps_the_limits(&nodes).await;
}
