//! DPoP proof verification in process (issue 19, point 4): what a proof costs the gateway beyond
//! its one signature verification.
//!
//! Run with `cargo bench -p keyward-engine --bench dpop`.
//!
//! For ES256 and EdDSA proofs, on fresh proofs (a new `jti` each, signed outside the timing):
//! - `remembered_header`: `Dpop::verify` of a proof whose header (`typ`, `alg`, `jwk`) an earlier
//!   proof already had, as every proof of a client after its first (the proof-key cache);
//! - `new_header`: `Dpop::verify` of a proof under a key never seen before (the header decoded,
//!   the JWK parsed, the key prepared and its thumbprint hashed, then remembered);
//! - `signature_alone`: the proof's signature checked with the prepared key, nothing else (the
//!   floor).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use keyward_engine::dpop::{ath, Dpop, DpopConfig};
use keyward_token::{Algorithm, SigningKey};

const HTU: &str = "https://api.example.com/v1/orders";
const TOKEN: &str = "an-access-token";
const NOW: i64 = 1_800_000_000;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A fresh proof for `GET HTU` with the access token's `ath`, signed by `key`.
fn proof(key: &SigningKey, header: &str) -> String {
    let claims = serde_json::json!({
        "jti": keyward_core::secret::random_base62(22).unwrap(),
        "htm": "GET",
        "htu": HTU,
        "iat": NOW,
        "ath": ath(TOKEN),
    });
    let signing_input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let sig = key.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64(&sig))
}

fn header_of(key: &SigningKey) -> String {
    let h = serde_json::json!({"typ": "dpop+jwt", "alg": key.alg().as_str(), "jwk": key.public_jwk()});
    b64(h.to_string().as_bytes())
}

fn benches(c: &mut Criterion) {
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        let mut g = c.benchmark_group(format!("dpop/{alg}"));
        let d = Dpop::new(DpopConfig::default()).unwrap();
        let key = SigningKey::generate(alg, None).unwrap();
        let header = header_of(&key);
        // The client's first proof: from here on its header is remembered.
        d.verify(&proof(&key, &header), "GET", HTU, Some(TOKEN), NOW).unwrap();

        g.bench_function("remembered_header", |b| {
            b.iter_batched(
                || proof(&key, &header),
                |p| d.verify(black_box(&p), "GET", HTU, Some(TOKEN), NOW).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("new_header", |b| {
            b.iter_batched(
                || {
                    let k = SigningKey::generate(alg, None).unwrap();
                    proof(&k, &header_of(&k))
                },
                |p| d.verify(black_box(&p), "GET", HTU, Some(TOKEN), NOW).unwrap(),
                BatchSize::SmallInput,
            )
        });
        let p = proof(&key, &header);
        let (signing_input, sig) = p.rsplit_once('.').unwrap();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap();
        let prepared = key.verify_key().prepare();
        g.bench_function("signature_alone", |b| {
            b.iter(|| assert!(prepared.verify(black_box(signing_input.as_bytes()), black_box(&sig))))
        });
        g.finish();
    }
}

criterion_group!(dpop, benches);
criterion_main!(dpop);
