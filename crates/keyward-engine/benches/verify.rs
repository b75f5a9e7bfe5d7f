//! In-process verify path (issue 2, point 11): parse + HMAC digest + cached lookup + decision;
//! and the whole decision of a keyed request (`decide/key`: authenticate + admit, issue 17).
//!
//! Run with `cargo bench -p keyward-engine --bench verify`.
//!
//! Every async bench runs its whole timed batch inside one `block_on` of a current-thread
//! tokio runtime (`iter_custom`), which is what criterion's `to_async` does, without needing
//! its `async_tokio` feature; so the per-iteration cost is the verify future alone. The
//! `verify/warm_block_on_each` bench enters the runtime once per call instead, to show what
//! that harness overhead would add.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use keyward_core::decision::ScopeMode;
use keyward_core::{KeyEnv, KeyFormat, Pepper, RequestFacts, Scope};
const META: keyward_engine::RequestMeta<'static> = keyward_engine::RequestMeta {
    ip: None,
    method: "GET",
    path: "/fact",
    user_agent: None,
};
use keyward_engine::{
    DpopHeader, Engine, KeyCredential, NewKey, RequestContext, RouteFacts, RouteLimits, SystemClock, TokenCredential,
};
use keyward_store::{CacheConfig, SqliteStore, Store};
use tokio::runtime::Runtime;

const PEPPER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fixture {
    rt: Runtime,
    engine: Engine,
    key: String,
    unknown: String,
    malformed: String,
    scopes: Vec<Scope>,
    // Keeps the SQLite file alive for the whole run.
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = rt.block_on(async {
        let store = SqliteStore::open(&dir.path().join("bench.db")).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        Engine::new(
            store,
            Pepper::from_text(PEPPER).unwrap(),
            KeyFormat::default(),
            CacheConfig::default(),
            Arc::new(SystemClock),
        )
    });
    let key = rt.block_on(async {
        engine.create_app("bench", "bench", Default::default()).await.unwrap();
        let (_, secret) = engine
            .create_key(
                "bench",
                NewKey {
                    app: "bench".into(),
                    name: None,
                    scopes: vec![Scope::new("facts:read").unwrap()],
                    expires_at: None,
                    env: KeyEnv::Live,
                    policy: Default::default(),
                    canary: false,
                    exchange_only: false,
                    kind: Default::default(),
                },
            )
            .await
            .unwrap();
        secret.expose().to_owned()
    });
    // Well-formed (valid checksum) but never stored.
    let unknown = engine.format().generate(KeyEnv::Live).unwrap().expose().to_owned();
    // Right length and prefix, wrong checksum: refused by the parser.
    let mut malformed = key.clone().into_bytes();
    let last = malformed.len() - 1;
    malformed[last] = if malformed[last] == b'A' { b'B' } else { b'A' };
    let malformed = String::from_utf8(malformed).unwrap();

    let scopes = vec![Scope::new("facts:read").unwrap()];
    let f = Fixture {
        rt,
        engine,
        key,
        unknown,
        malformed,
        scopes,
        _dir: dir,
    };
    // Warm both caches: the key's record and the unknown digest.
    let facts = f.facts();
    f.rt.block_on(async {
        assert!(f.engine.verify_key(&f.key, &facts, &META).await.is_ok());
        assert!(f.engine.verify_key(&f.unknown, &facts, &META).await.is_err());
        assert!(f.engine.verify_key(&f.malformed, &facts, &META).await.is_err());
    });
    f
}

impl Fixture {
    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            required_scopes: &self.scopes,
            scope_mode: ScopeMode::AllOf,
            client_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        }
    }

    /// Times `iters` calls of `verify_key(presented)` inside one `block_on`.
    fn time_verify(&self, presented: &str, iters: u64, expect_ok: bool) -> Duration {
        let facts = self.facts();
        self.rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let r = self
                    .engine
                    .verify_key(black_box(presented), black_box(&facts), &META)
                    .await;
                debug_assert_eq!(r.is_ok(), expect_ok);
                black_box(r).ok();
            }
            start.elapsed()
        })
    }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let format = KeyFormat::default();
    let pepper = Pepper::from_text(PEPPER).unwrap();

    c.bench_function("parse", |b| b.iter(|| format.parse(black_box(&f.key)).unwrap()));
    c.bench_function("digest", |b| b.iter(|| pepper.digest(black_box(f.key.as_bytes()))));

    let mut g = c.benchmark_group("verify");
    g.bench_function("warm", |b| b.iter_custom(|iters| f.time_verify(&f.key, iters, true)));
    g.bench_function("unknown_negative_cached", |b| {
        b.iter_custom(|iters| f.time_verify(&f.unknown, iters, false))
    });
    g.bench_function("malformed", |b| {
        b.iter_custom(|iters| f.time_verify(&f.malformed, iters, false))
    });
    let facts = f.facts();
    g.bench_function("warm_block_on_each", |b| {
        b.iter(|| {
            f.rt.block_on(f.engine.verify_key(black_box(&f.key), black_box(&facts), &META))
                .unwrap()
        })
    });
    g.finish();

    // The whole decision of a proxied request with this key: `Engine::authenticate` (choice
    // of credential, verify, key-use rules, mTLS requirement) then `Engine::admit` (no limit
    // configured: the usage count only).
    let mut g = c.benchmark_group("decide");
    let route = RouteFacts {
        scopes: &f.scopes,
        scope_mode: ScopeMode::AllOf,
        api_keys: true,
        tokens: false,
        client_certificates: false,
        publishable: false,
        audience: "keyward",
        public: false,
    };
    let limits = RouteLimits::default();
    g.bench_function("key", |b| {
        b.iter_custom(|iters| {
            f.rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let ctx = RequestContext {
                        route,
                        key: KeyCredential::One {
                            value: black_box(&f.key),
                            bearer: false,
                        },
                        token: TokenCredential::None,
                        dpop: DpopHeader::Absent,
                        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
                        peer_cert: None,
                        origin: None,
                        method: "GET",
                        path: "/fact",
                        htu: None,
                        user_agent: None,
                    };
                    let p = f.engine.authenticate(&ctx).await.unwrap();
                    black_box(f.engine.admit(&p, &limits, None).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    g.finish();

    let stats = f.engine.cache().stats();
    eprintln!(
        "cache stats: hits={} negative_hits={} misses={}",
        stats.hits.load(std::sync::atomic::Ordering::Relaxed),
        stats.negative_hits.load(std::sync::atomic::Ordering::Relaxed),
        stats.misses.load(std::sync::atomic::Ordering::Relaxed),
    );
}

criterion_group!(verify, benches);
criterion_main!(verify);
