//! Lookup latency of the PostgreSQL store by digest (the cache-miss path of every request),
//! compared across schemas of different sizes, interleaved A B A B.
//!
//! ```text
//! keyward dev seed --keys 1000000   # into schema kw_seed1m (store.url with search_path)
//! keyward dev seed --keys 1000      # into schema kw_seed1k
//! KEYWARD_BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run -p keyward-store --example pg_lookup -- kw_seed1k kw_seed1m
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use keyward_core::Digest;
use keyward_store::{PgOptions, PgStore, Store};

const LOOKUPS: usize = 2_000;
const ROUNDS: usize = 5;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let base = std::env::var("KEYWARD_BENCH_PG_URL").expect("KEYWARD_BENCH_PG_URL");
    let schemas: Vec<String> = std::env::args().skip(1).collect();
    assert!(!schemas.is_empty(), "name the schemas to compare");
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut stores = Vec::new();
    for s in &schemas {
        let store = PgStore::open(&format!("{base}{sep}options=-csearch_path%3D{s}"), PgOptions::default())
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        // Existing digests spread over the table, plus unknown ones (the 401 path).
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT digest FROM keys ORDER BY random() LIMIT $1")
            .bind(LOOKUPS as i64)
            .fetch_all(store.pool())
            .await
            .unwrap();
        let digests: Vec<Digest> = rows.iter().map(|d| Digest::from_slice(d).unwrap()).collect();
        println!("{s}: {n} keys, {} sampled digests", digests.len());
        stores.push((
            s.clone(),
            store,
            digests,
            Vec::<Duration>::new(),
            Vec::<Duration>::new(),
        ));
    }
    for round in 0..ROUNDS {
        for (_, store, digests, hits, misses) in stores.iter_mut() {
            for (i, d) in digests.iter().enumerate() {
                let t = Instant::now();
                let found = store.key_by_digest(d).await.unwrap();
                let e = t.elapsed();
                assert!(found.is_some());
                if round > 0 {
                    hits.push(e);
                }
                let mut unknown = d.0;
                unknown[31] ^= 0x5a;
                unknown[0] = i as u8;
                let t = Instant::now();
                let found = store.key_by_digest(&Digest(unknown)).await.unwrap();
                let e = t.elapsed();
                assert!(found.is_none());
                if round > 0 {
                    misses.push(e);
                }
            }
        }
    }
    println!(
        "(first round is warm-up; {} lookups per schema per kind)",
        (ROUNDS - 1) * LOOKUPS
    );
    for (name, _, _, hits, misses) in stores.iter_mut() {
        hits.sort();
        misses.sort();
        println!(
            "{name}: known digest p50 {:?} p99 {:?} | unknown digest p50 {:?} p99 {:?}",
            pct(hits, 0.5),
            pct(hits, 0.99),
            pct(misses, 0.5),
            pct(misses, 0.99)
        );
    }
}
