//! Criterion benches of the limiter: ns per decision with 1 key and with 1,000,000 keys.
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keyward_core::policy::RateSpec;
use keyward_limit::{LocalLimiter, RateCheck};

const T0: u64 = 1_798_761_600 * 1_000_000_000;

fn bench(c: &mut Criterion) {
    let spec = RateSpec::parse("1000000/s", Some(1_000_000)).unwrap();
    let l = LocalLimiter::new();
    let one = RateCheck {
        name: "key",
        key: l.key(&["key", "key_one"]),
        spec,
        cost: 1,
        group: None,
    };
    let mut now = T0;
    c.bench_function("limiter/1 key", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(l.check(std::slice::from_ref(&one), &[], now))
        })
    });

    let big = LocalLimiter::new();
    let keys: Vec<RateCheck> = (0..1_000_000)
        .map(|i| RateCheck {
            name: "key",
            key: big.key(&["key", &format!("key_{i}")]),
            spec,
            cost: 1,
            group: None,
        })
        .collect();
    for k in &keys {
        big.check(std::slice::from_ref(k), &[], T0);
    }
    let mut i = 0usize;
    c.bench_function("limiter/1,000,000 keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(big.check(std::slice::from_ref(&keys[i]), &[], T0 + 1_000))
        })
    });
    let app = RateCheck {
        name: "app",
        key: big.key(&["app", "a"]),
        spec,
        cost: 1,
        group: None,
    };
    c.bench_function("limiter/key + app, 1,000,000 keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(big.check(&[keys[i].clone(), app.clone()], &[], T0 + 1_000))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
