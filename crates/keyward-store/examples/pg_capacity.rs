//! What one PostgreSQL gives keyward (issue 23, point 5, docs/CAPACITY.md):
//!
//! - `lookups SCHEMA [CONCURRENCY] [SECONDS]`: key lookups by digest on a cold cache (the
//!   store's own `key_by_digest`, every call a database round trip), `CONCURRENCY` at a time
//!   over as many connections, for `SECONDS`: lookups per second and latency percentiles;
//! - `fanout LISTENERS [NOTIFICATIONS]`: `LISTENERS` connections `LISTEN` on one channel (one per
//!   keyward node), one connection sends `NOTIFICATIONS` `pg_notify`s as fast as it can (each in
//!   its own transaction, as admin writes do): how long until every listener has every one,
//!   notifications delivered per second, and the delivery latency.
//!
//! ```text
//! keyward dev seed --keys 1000000 --config seed.toml     # store.url with ?options=-csearch_path%3Dkw_cap1m
//! KEYWARD_BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run --release -p keyward-store --example pg_capacity -- lookups kw_cap1m 16 10
//! KEYWARD_BENCH_PG_URL=… cargo run --release -p keyward-store --example pg_capacity -- fanout 50 2000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyward_core::Digest;
use keyward_store::{PgOptions, PgStore, Store};

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

#[tokio::main]
async fn main() {
    let base = std::env::var("KEYWARD_BENCH_PG_URL").expect("KEYWARD_BENCH_PG_URL");
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("lookups") => {
            let schema = args.get(1).expect("schema");
            let conc: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(16);
            let secs: u64 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(10);
            lookups(&base, schema, conc, secs).await;
        }
        Some("fanout") => {
            let listeners: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(10);
            let n: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1000);
            fanout(&base, listeners, n).await;
        }
        _ => panic!("usage: pg_capacity lookups SCHEMA [CONCURRENCY] [SECONDS] | fanout LISTENERS [NOTIFICATIONS]"),
    }
}

async fn lookups(base: &str, schema: &str, conc: usize, secs: u64) {
    let sep = if base.contains('?') { '&' } else { '?' };
    let opts = PgOptions {
        max_connections: conc as u32,
        ..PgOptions::default()
    };
    let store = Arc::new(
        PgStore::open(&format!("{base}{sep}options=-csearch_path%3D{schema}"), opts)
            .await
            .unwrap(),
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT digest FROM keys TABLESAMPLE SYSTEM (5) LIMIT 20000")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let digests: Arc<Vec<Digest>> = Arc::new(rows.iter().map(|d| Digest::from_slice(d).unwrap()).collect());
    println!(
        "{schema}: {n} keys, {} sampled digests, {conc} at a time for {secs} s",
        digests.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..conc {
        let (store, digests, stop, count) = (store.clone(), digests.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = t * 7919;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 104_729) % digests.len();
                let s = Instant::now();
                let found = store.key_by_digest(&digests[i]).await.unwrap();
                lat.push(s.elapsed().as_micros() as u64);
                assert!(found.is_some());
                count.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    // One second of warm-up, then the measured span.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_count = count.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let done = count.load(Ordering::Relaxed) - start_count;
    let took = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_unstable();
    println!(
        "lookups: {:.0}/s  p50 {} µs  p99 {} µs  (load {})",
        done as f64 / took,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
}

async fn fanout(base: &str, listeners: usize, n: usize) {
    let channel = format!("kw_capacity_{}", std::process::id());
    let sender = PgStore::connect(
        base,
        PgOptions {
            max_connections: 1,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    let mut handles = Vec::new();
    let ready = Arc::new(tokio::sync::Barrier::new(listeners + 1));
    for _ in 0..listeners {
        let (base, channel, ready) = (base.to_owned(), channel.clone(), ready.clone());
        handles.push(tokio::spawn(async move {
            let mut l = sqlx::postgres::PgListener::connect(&base).await.unwrap();
            l.listen(&channel).await.unwrap();
            ready.wait().await;
            let mut lat = Vec::with_capacity(n);
            while lat.len() < n {
                let msg = l.recv().await.unwrap();
                let sent: u64 = msg.payload().parse().unwrap();
                lat.push(now_us().saturating_sub(sent));
            }
            (Instant::now(), lat)
        }));
    }
    ready.wait().await;
    let start = Instant::now();
    for _ in 0..n {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&channel)
            .bind(now_us().to_string())
            .execute(sender.pool())
            .await
            .unwrap();
    }
    let sent = start.elapsed();
    let mut last = start;
    let mut lat = Vec::new();
    for h in handles {
        let (t, l) = h.await.unwrap();
        last = last.max(t);
        lat.extend(l);
    }
    lat.sort_unstable();
    let all = last.duration_since(start).as_secs_f64();
    println!(
        "fanout to {listeners} listeners: {n} notifications sent in {:.2} s ({:.0}/s), all delivered in {:.2} s: \
         {:.0} deliveries/s; latency p50 {} µs p99 {} µs (load {})",
        sent.as_secs_f64(),
        n as f64 / sent.as_secs_f64(),
        all,
        (n * listeners) as f64 / all,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
}
