//! Cluster mode on a shared PostgreSQL store: a change made through one node reaches the
//! other's cache (LISTEN/NOTIFY), and a node whose database goes away keeps serving what it
//! knows, refuses admin writes with 503 and recovers by itself.
//!
//! Needs `KEYWARD_TEST_POSTGRES_URL` (skipped with a printed line when unset, failing when set
//! and unreachable). Each test works in a schema of its own, dropped at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{boot_with, problem, Kw};

pub(crate) struct Schema {
    admin: sqlx::PgPool,
    name: String,
    base: String,
}

impl Schema {
    pub(crate) async fn new(test: &str) -> Option<Schema> {
        let Ok(base) = std::env::var("KEYWARD_TEST_POSTGRES_URL") else {
            println!("skipped {test}: KEYWARD_TEST_POSTGRES_URL is not set");
            return None;
        };
        let admin = sqlx::PgPool::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("KEYWARD_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {e}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("kw_it_{test}_{}_{nanos}", std::process::id());
        sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
            .execute(&admin)
            .await
            .unwrap();
        Some(Schema { admin, name, base })
    }

    /// The store URL for this schema, optionally through another host:port.
    pub(crate) fn url(&self, via: Option<std::net::SocketAddr>) -> String {
        let mut base = self.base.clone();
        if let Some(addr) = via {
            // postgres://user@host:port/db → same with host:port replaced.
            let at = base.find('@').map(|i| i + 1).unwrap_or("postgres://".len());
            let slash = base[at..].find('/').map(|i| at + i).unwrap_or(base.len());
            base.replace_range(at..slash, &addr.to_string());
        }
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-csearch_path%3D{}", self.name)
    }

    /// The PostgreSQL address behind KEYWARD_TEST_POSTGRES_URL.
    async fn target(&self) -> std::net::SocketAddr {
        let b = &self.base;
        let at = b.find('@').map(|i| i + 1).unwrap_or("postgres://".len());
        let end = b[at..].find(['/', '?']).map(|i| at + i).unwrap_or(b.len());
        let host_port = &b[at..end];
        let host_port = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:5432")
        };
        tokio::net::lookup_host(host_port).await.unwrap().next().unwrap()
    }

    pub(crate) async fn drop_now(self) {
        sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.name))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

pub(crate) async fn node(url: String, tweak: impl FnOnce(&mut keyward::config::Config)) -> Kw {
    boot_with(move |c| {
        c.store.url = url;
        c.store.connect_timeout = Duration::from_millis(500);
        tweak(c);
    })
    .await
}

async fn status_with(kw: &Kw, key: &str) -> u16 {
    kw.get("/fact", &[("x-api-key", key)]).await.status().as_u16()
}

/// Waits until every node listens to the store's change announcements.
pub(crate) async fn listening(nodes: &[&Kw]) {
    for kw in nodes {
        let engine = &kw.running.as_ref().unwrap().engine;
        for _ in 0..200 {
            if engine.store().changes_connected() == Some(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(engine.store().changes_connected(), Some(true));
    }
}

/// Asks `kw` with `key` until it answers `status`; fails with `what` after 5 s.
async fn until_status(kw: &Kw, key: &str, status: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_with(kw, key).await != status {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test]
async fn a_key_created_and_revoked_on_one_node_is_seen_by_the_other() {
    let Some(schema) = Schema::new("propagation").await else {
        return;
    };
    // Three nodes on one PostgreSQL schema (issue 7 point 5a).
    let mut a = node(schema.url(None), |_| {}).await;
    let mut b = node(schema.url(None), |_| {}).await;
    let mut c = node(schema.url(None), |_| {}).await;
    // Every listener up before the measurement.
    listening(&[&a, &b, &c]).await;
    let mut times = Vec::new();
    for i in 0..50 {
        let (id, key) = a.key("cats", &["facts:read"], json!({})).await;
        for (name, other) in [("B", &b), ("C", &c)] {
            assert_eq!(
                status_with(other, &key).await,
                200,
                "round {i}: created on A, works on {name}"
            );
            assert_eq!(status_with(other, &key).await, 200, "round {i}: now cached on {name}");
        }
        let (s, _) = a
            .admin(Method::POST, &format!("/v1/keys/{id}/revoke"), Some(json!({})))
            .await;
        assert_eq!(s, 200);
        let revoked = Instant::now();
        // The time until B and C both refuse it (each polled in turn).
        let mut pending = vec![("B", &b), ("C", &c)];
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (name, other) in pending {
                let st = status_with(other, &key).await;
                if st != 401 {
                    assert_eq!(st, 200);
                    assert!(
                        revoked.elapsed() < Duration::from_secs(5),
                        "round {i}: {name} still admits a key revoked on A after 5 s"
                    );
                    still.push((name, other));
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        times.push(revoked.elapsed());
    }
    // App policy changes reach B's cached records too.
    let (_, key) = a.key("dogs", &["facts:read"], json!({})).await;
    assert_eq!(status_with(&b, &key).await, 200);
    let (s, _) = a
        .admin(Method::PATCH, "/v1/apps/dogs", Some(json!({"ips": ["10.99.0.0/16"]})))
        .await;
    assert_eq!(s, 200);
    until_status(&b, &key, 403, "app change not seen on B").await;
    times.sort();
    println!(
        "revocation propagation A→B and C over {} rounds (until both refuse; includes their request round trips): p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
    assert!(percentile(&times, 0.99) < Duration::from_millis(500));
    a.stop().await;
    b.stop().await;
    c.stop().await;
    schema.drop_now().await;
}

/// A key created on one node makes the others forget that one digest, not every unknown key:
/// an unknown-key flood during a burst of sign-ups still stops at each node's negative cache.
#[tokio::test]
async fn a_key_created_elsewhere_leaves_the_negative_cache_standing() {
    let Some(schema) = Schema::new("negative").await else {
        return;
    };
    let mut a = node(schema.url(None), |_| {}).await;
    let mut b = node(schema.url(None), |_| {}).await;
    let b_engine = b.running.as_ref().unwrap().engine.clone();
    listening(&[&a, &b]).await;
    // A legacy key exists (so B looks up arbitrary strings), and B has tried a secret that
    // does not exist yet plus a few well-formed unknown keys.
    let import = |secret: &str, app: &str| json!({"app": app, "secret": secret, "scopes": ["facts:read"]});
    let (s, _) = a.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    assert_eq!(s, 201);
    let (s, v) = a
        .admin(
            Method::POST,
            "/v1/keys/import",
            Some(import("first-static-secret-0001", "cats")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let later = "later-static-secret-0002";
    until_status(&b, "first-static-secret-0001", 200, "the first import never reached B").await;
    assert_eq!(status_with(&b, later).await, 401);
    for _ in 0..3 {
        let unknown = keyward_core::KeyFormat::default()
            .generate(keyward_core::key::KeyEnv::Live)
            .unwrap();
        assert_eq!(status_with(&b, unknown.expose()).await, 401);
    }
    let negative_before = b_engine.cache().entries().1;
    assert!(negative_before >= 4, "{negative_before}");
    // A key created on A, then an app change whose effect B shows: announcements arrive in
    // order, so once B shows the change it has applied the creation too.
    let (_, fresh) = a.key("dogs", &["facts:read"], json!({})).await;
    assert_eq!(status_with(&b, &fresh).await, 200);
    let (s, _) = a
        .admin(Method::PATCH, "/v1/apps/dogs", Some(json!({"ips": ["10.99.0.0/16"]})))
        .await;
    assert_eq!(s, 200);
    until_status(&b, &fresh, 403, "app change not seen on B").await;
    assert!(
        b_engine.cache().entries().1 >= negative_before,
        "B forgot its unknown keys when a key was created on A"
    );
    // The secret B had cached as unknown works on B as soon as A imports it.
    let (s, v) = a
        .admin(Method::POST, "/v1/keys/import", Some(import(later, "cats")))
        .await;
    assert_eq!(s, 201, "{v}");
    until_status(&b, later, 200, "B still refuses a key imported on A").await;
    a.stop().await;
    b.stop().await;
    schema.drop_now().await;
}

/// A TCP proxy to PostgreSQL that the test can cut (closing every connection and refusing
/// new ones) and restore.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, gen_rx) = tokio::sync::watch::channel(0u64);
        let c = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = l.accept().await else { return };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut stop = gen_rx.clone();
                let born = *stop.borrow();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = stop.wait_for(|g| *g != born) => {}
                    }
                });
            }
        });
        Proxy { addr, cut, generation }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn with_the_database_gone_known_keys_keep_working_and_writes_get_503() {
    let Some(schema) = Schema::new("outage").await else {
        return;
    };
    let proxy = Proxy::start(schema.target().await).await;
    let mut kw = node(schema.url(Some(proxy.addr)), |c| {
        c.cache.ttl = Duration::from_millis(300);
        c.store.stale_ttl = Duration::from_secs(60);
    })
    .await;
    let (_, good) = kw.key("cats", &["facts:read"], json!({})).await;
    let (bad_id, bad) = kw.key("cats", &["facts:read"], json!({})).await;
    let (s, _) = kw
        .admin(Method::POST, &format!("/v1/keys/{bad_id}/revoke"), Some(json!({})))
        .await;
    assert_eq!(s, 200);
    // The node hears its own announcements too (app created, key revoked) and evicts what
    // they name: let them arrive before filling the cache that the outage will rely on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_with(&kw, &good).await, 200);
    assert_eq!(status_with(&kw, &bad).await, 401);

    proxy.cut();
    // Past the cache's freshness: every lookup now has to fall back on what it knows.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let resp = kw.get("/fact", &[("x-api-key", &good)]).await;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, 200, "a known key keeps working: {body} after {:?}", t.elapsed());
        slowest = slowest.max(t.elapsed());
        assert_eq!(
            status_with(&kw, &bad).await,
            401,
            "a known revocation keeps being refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = kw
        .http
        .post(format!("{}/v1/apps", kw.admin))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .json(&json!({"name": "during-outage"}))
        .send()
        .await
        .unwrap();
    problem(resp, 503, "store_unavailable").await;
    println!("database cut: known key served from cache, slowest request {slowest:?}; admin write 503");

    proxy.restore();
    let back = Instant::now();
    loop {
        let (s, _) = kw
            .admin(Method::POST, "/v1/apps", Some(json!({"name": "after-outage"})))
            .await;
        if s == 201 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(15), "no recovery: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("database restored: admin writes back after {:?}", back.elapsed());
    let (_, fresh) = kw.key("cats", &["facts:read"], json!({})).await;
    assert_eq!(status_with(&kw, &fresh).await, 200);
    assert_eq!(status_with(&kw, &good).await, 200);
    assert_eq!(status_with(&kw, &bad).await, 401);
    kw.stop().await;
    schema.drop_now().await;
}

/// Issue 22, point 15: while PostgreSQL is unreachable, `/healthz` (liveness) keeps answering
/// 200 and says `degraded` (its change channel is down), and `/readyz` (readiness) answers 503
/// `not_ready` naming the store; both are fine again once the database is back.
#[tokio::test]
async fn with_the_database_gone_healthz_is_200_degraded_and_readyz_503() {
    let Some(schema) = Schema::new("health").await else {
        return;
    };
    let proxy = Proxy::start(schema.target().await).await;
    let mut kw = node(schema.url(Some(proxy.addr)), |_| {}).await;
    listening(&[&kw]).await;
    let get = |path: &'static str| {
        let (http, url) = (kw.http.clone(), format!("{}{path}", kw.admin));
        async move {
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, ct, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (s, _, v) = get("/healthz").await;
    assert_eq!((s, &v["status"]), (200, &json!("ok")), "{v}");
    assert_eq!(v["store"], "postgres", "{v}");
    let (s, _, v) = get("/readyz").await;
    assert_eq!((s, &v["status"]), (200, &json!("ready")), "{v}");

    proxy.cut();
    let (s, ct, v) = get("/readyz").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(ct, "application/problem+json");
    assert_eq!(v["code"], "not_ready", "{v}");
    assert_eq!(v["down"], json!(["store"]), "{v}");
    assert_eq!(v["checks"]["store"], "down", "{v}");
    // Liveness: 200 throughout, `degraded` once the node notices its change channel is gone.
    let t = Instant::now();
    loop {
        let (s, _, v) = get("/healthz").await;
        assert_eq!(s, 200, "/healthz is liveness: {v}");
        if v["status"] == "degraded" {
            assert_eq!(v["store_changes"], "reconnecting", "{v}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "never degraded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get("/readyz").await.0, 503);

    proxy.restore();
    let t = Instant::now();
    loop {
        let (s, _, v) = get("/readyz").await;
        if s == 200 && v["status"] == "ready" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "never ready again: {s} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _, v) = get("/healthz").await;
    assert_eq!((s, &v["status"]), (200, &json!("ok")), "{v}");
    kw.stop().await;
    schema.drop_now().await;
}
