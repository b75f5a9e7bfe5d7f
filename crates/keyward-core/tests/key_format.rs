//! Property tests of the key format (issue 2, point 2).
#![allow(clippy::unwrap_used, clippy::panic)]

use keyward_core::base62::ALPHABET;
use keyward_core::key::{CHECKSUM_LEN, RANDOM_LEN};
use keyward_core::{KeyEnv, KeyFormat};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn body_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET.to_vec()), RANDOM_LEN)
        .prop_map(|v| String::from_utf8(v).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// generate → parse round trip, for any body, env and prefix.
    #[test]
    fn round_trip(body in body_strategy(), live in any::<bool>(), prefix in "[a-z0-9]{1,16}") {
        let f = KeyFormat::new(&prefix).unwrap();
        let env = if live { KeyEnv::Live } else { KeyEnv::Test };
        let key = f.assemble(env, &body);
        prop_assert_eq!(key.expose().len(), f.key_len());
        prop_assert_eq!(f.parse(key.expose()).map(|p| p.env), Ok(env));
    }

    /// Any single-character change anywhere in a key is rejected.
    #[test]
    fn any_single_character_change_is_rejected(body in body_strategy(), pos in 0usize..57, sym in any::<u8>()) {
        let f = KeyFormat::default();
        let key = f.assemble(KeyEnv::Live, &body).expose().to_owned();
        let mut bytes = key.clone().into_bytes();
        prop_assume!(bytes[pos] != sym);
        bytes[pos] = sym;
        // Bytes that are not UTF-8 cannot even reach the parser.
        if let Ok(changed) = String::from_utf8(bytes) {
            prop_assert!(f.parse(&changed).is_err(), "accepted {changed:?} from {key:?}");
        }
    }

    /// Inserting or deleting a character is rejected too.
    #[test]
    fn insertions_and_deletions_are_rejected(body in body_strategy(), pos in 0usize..57, c in prop::sample::select(ALPHABET.to_vec())) {
        let f = KeyFormat::default();
        let key = f.assemble(KeyEnv::Test, &body).expose().to_owned();
        let mut longer = key.clone();
        longer.insert(pos, char::from(c));
        prop_assert!(f.parse(&longer).is_err());
        let mut shorter = key.clone();
        shorter.remove(pos);
        prop_assert!(f.parse(&shorter).is_err());
    }

    /// The parser never panics, whatever it is fed.
    #[test]
    fn parser_is_total(s in ".{0,200}") {
        let _ = KeyFormat::default().parse(&s);
    }
}

/// Exhaustive over every position and every symbol of the alphabet for a few keys.
#[test]
fn every_substitution_of_every_position_is_rejected() {
    let f = KeyFormat::default();
    for _ in 0..8 {
        let key = f.generate(KeyEnv::Live).unwrap().expose().to_owned();
        let mut bytes = key.clone().into_bytes();
        for pos in 0..bytes.len() {
            let orig = bytes[pos];
            for &sym in ALPHABET.iter().chain(b"_-+/=. ") {
                if sym == orig {
                    continue;
                }
                bytes[pos] = sym;
                let s = std::str::from_utf8(&bytes).unwrap();
                assert!(f.parse(s).is_err(), "accepted a one-symbol change at {pos}");
            }
            bytes[pos] = orig;
        }
    }
}

/// 1,000,000 random strings of exactly the right shape (prefix, env, 49 base62 symbols)
/// are never accepted: only the checksum stands between them and acceptance, and the chance
/// that CRC32 matches by luck is 2^-32 per string (≈ 2.3e-4 for the whole run).
/// Seeded so that a failure is reproducible.
#[test]
fn a_million_random_well_shaped_strings_are_never_accepted() {
    let f = KeyFormat::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b_6579_7761_7264);
    let mut s = String::with_capacity(57);
    let mut accepted = 0usize;
    for i in 0..1_000_000u32 {
        s.clear();
        s.push_str(if i % 2 == 0 { "kw_live_" } else { "kw_test_" });
        for _ in 0..RANDOM_LEN + CHECKSUM_LEN {
            s.push(char::from(ALPHABET[rng.gen_range(0..62)]));
        }
        if f.parse(&s).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 0);
}

/// Generated keys are distinct and use the whole alphabet (a sanity check of the sampler).
#[test]
fn generated_keys_are_distinct_and_uniformish() {
    let f = KeyFormat::default();
    let mut seen = std::collections::HashSet::new();
    let mut counts = [0usize; 62];
    for _ in 0..2000 {
        let k = f.generate(KeyEnv::Live).unwrap().expose().to_owned();
        for c in k[8..8 + RANDOM_LEN].bytes() {
            counts[keyward_core::base62::value(c).unwrap() as usize] += 1;
        }
        assert!(seen.insert(k));
    }
    // 86,000 symbols over 62 values: ~1387 each; every value within ±20%.
    for (v, &c) in counts.iter().enumerate() {
        assert!((1100..1700).contains(&c), "symbol {v} seen {c} times");
    }
}
