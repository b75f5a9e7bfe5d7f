//! JWT parsing and verification: `keyward_token::verify` (RFC 9068 access tokens, the key found
//! by `kid`) and the general compact-JWS verifier `verify_jws` / `verify_jws_payload`, against
//! fixed public keys: the RFC 8037 Ed25519 key (kid `ed`) and a P-256 key (kid `es`), both with
//! their private halves known to the seed generator (docs/FUZZING.md).
//!
//! Input: the token text.
#![no_main]

use keyward_token::{verify, verify_jws, verify_jws_payload, Algorithm, Expectations, Jwk, VerifyKey};
use libfuzzer_sys::fuzz_target;

const ED: &str = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
const ES: &str = r#"{"kty":"EC","crv":"P-256","x":"gNg3UzpdtpVaV3DHnJRb4mBQ9vgL0juxRqGdCKJlvrw","y":"l1nqRv1PfhPxLG76a-i_QhUmyAzGy8Vx3HnPO9NzdxU"}"#;
const ALL: [Algorithm; 4] = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256];

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let ed: Jwk = serde_json::from_str(ED).unwrap();
    let es: Jwk = serde_json::from_str(ES).unwrap();
    let keys = |kid: &str| match kid {
        "ed" => VerifyKey::from_jwk(&ed, Algorithm::EdDSA).ok(),
        "es" => VerifyKey::from_jwk(&es, Algorithm::ES256).ok(),
        _ => None,
    };
    let expected = Expectations {
        iss: "https://auth.example.com",
        aud: "https://api.example.com",
        leeway_secs: 60,
        now: 1_900_000_000,
        allowed_algs: &ALL,
    };
    if let Ok(claims) = verify(token, &keys, &expected) {
        assert_eq!(claims.iss, "https://auth.example.com");
        assert!(claims.aud.contains("https://api.example.com"));
    }
    for jwk in [&ed, &es] {
        let _ = verify_jws_payload(token, jwk, &ALL);
        if let Ok((_, claims)) = verify_jws(token, jwk, &ALL) {
            assert!(claims.is_object());
        }
    }
});
