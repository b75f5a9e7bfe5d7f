//! RFC 9068 access tokens: round trips and every refusal of `verify`, plus a property test that `verify`
//! and `verify_jws` never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyward_token::{
    mint, verify, verify_jws, AccessClaims, Algorithm, Audience, Confirmation, Expectations, JwkSet, SigningKey,
    TokenError, VerifyKey, MAX_TOKEN_LEN,
};
use proptest::prelude::*;
use serde_json::json;

const ISS: &str = "https://auth.example.com";
const AUD: &str = "https://api.example.com";
const NOW: i64 = 1_700_000_000;
const LEEWAY: u64 = 60;

struct Fixture {
    keys: Vec<SigningKey>,
    set: JwkSet,
}

impl Fixture {
    fn new() -> Self {
        let keys: Vec<SigningKey> = Algorithm::ALL
            .iter()
            .map(|&alg| SigningKey::generate(alg, None).unwrap())
            .collect();
        let set = JwkSet::from_signing_keys(&keys);
        Self { keys, set }
    }

    fn key(&self, alg: Algorithm) -> &SigningKey {
        self.keys.iter().find(|k| k.alg() == alg).unwrap()
    }

    fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        self.verify_with(token, &expectations())
    }

    fn verify_with(&self, token: &str, expected: &Expectations<'_>) -> Result<AccessClaims, TokenError> {
        verify(token, &|kid: &str| self.set.verify_key(kid), expected)
    }
}

fn expectations() -> Expectations<'static> {
    Expectations {
        iss: ISS,
        aud: AUD,
        leeway_secs: LEEWAY,
        now: NOW,
        allowed_algs: &Algorithm::ALL,
    }
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: ISS.to_owned(),
        sub: "app_123".to_owned(),
        aud: Audience::One(AUD.to_owned()),
        client_id: "client_abc".to_owned(),
        iat: NOW,
        exp: NOW + 300,
        nbf: None,
        jti: "jti-1".to_owned(),
        scope: Some("read:cats write:cats".to_owned()),
        cnf: None,
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with an arbitrary header and payload, properly signed by `key`.
fn forge(key: &SigningKey, header: &serde_json::Value, payload: &serde_json::Value) -> String {
    forge_raw(key, header.to_string().as_bytes(), payload.to_string().as_bytes())
}

fn forge_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let signature = key.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64(&signature))
}

fn header(key: &SigningKey) -> serde_json::Value {
    json!({"typ": "at+jwt", "alg": key.alg().as_str(), "kid": key.kid()})
}

fn claims_json() -> serde_json::Value {
    serde_json::to_value(claims()).unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// Round trips

#[test]
fn round_trip_for_every_algorithm() {
    let fx = Fixture::new();
    for key in &fx.keys {
        let token = mint(key, &claims()).unwrap();
        let head: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(head, header(key), "{}", key.alg());
        assert_eq!(fx.verify(&token).unwrap(), claims(), "{}", key.alg());
    }
}

#[test]
fn round_trip_with_audience_array_nbf_and_confirmation() {
    let fx = Fixture::new();
    let mut c = claims();
    c.aud = Audience::Many(vec!["https://other.example".to_owned(), AUD.to_owned()]);
    c.nbf = Some(NOW - 10);
    c.cnf = Some(Confirmation::jkt("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"));
    c.scope = None;
    let token = mint(fx.key(Algorithm::ES256), &c).unwrap();
    let back = fx.verify(&token).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.scopes().count(), 0);
    assert_eq!(claims().scopes().collect::<Vec<_>>(), ["read:cats", "write:cats"]);

    c.cnf = Some(Confirmation::x5t_s256("bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"));
    let token = mint(fx.key(Algorithm::EdDSA), &c).unwrap();
    assert_eq!(fx.verify(&token).unwrap(), c);
}

#[test]
fn typ_is_case_insensitive_and_accepts_the_media_type_form() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    for typ in ["AT+JWT", "application/at+jwt", "Application/AT+JWT"] {
        let token = forge(
            key,
            &json!({"typ": typ, "alg": "EdDSA", "kid": key.kid()}),
            &claims_json(),
        );
        assert!(fx.verify(&token).is_ok(), "{typ}");
    }
}

#[test]
fn extra_claims_are_ignored() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    let mut payload = claims_json();
    payload["auth_time"] = json!(NOW - 100);
    payload["roles"] = json!(["admin"]);
    assert_eq!(fx.verify(&forge(key, &header(key), &payload)).unwrap(), claims());
}

// ---------------------------------------------------------------------------------------------------------
// Algorithm refusals: the token never chooses the algorithm

#[test]
fn alg_none_is_refused() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    for alg in ["none", "None", "NONE"] {
        let h = b64(json!({"typ": "at+jwt", "alg": alg, "kid": key.kid()})
            .to_string()
            .as_bytes());
        let p = b64(claims_json().to_string().as_bytes());
        for token in [format!("{h}.{p}."), format!("{h}.{p}.c2lnbmF0dXJl")] {
            assert_eq!(fx.verify(&token).unwrap_err(), TokenError::UnsupportedAlg, "{token}");
        }
    }
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    let fx = Fixture::new();
    for key in &fx.keys {
        // Every plausible "secret" an attacker could derive from what the JWKS endpoint publishes.
        let jwk = key.public_jwk();
        let secrets = [
            serde_json::to_vec(&jwk).unwrap(),
            jwk.x().or(jwk.n()).unwrap().as_bytes().to_vec(),
        ];
        for secret in secrets {
            for alg in ["HS256", "HS384", "HS512"] {
                let h = b64(json!({"typ": "at+jwt", "alg": alg, "kid": key.kid()})
                    .to_string()
                    .as_bytes());
                let p = b64(claims_json().to_string().as_bytes());
                let signing_input = format!("{h}.{p}");
                let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), signing_input.as_bytes());
                let token = format!("{signing_input}.{}", b64(tag.as_ref()));
                assert_eq!(fx.verify(&token).unwrap_err(), TokenError::UnsupportedAlg);
            }
        }
    }
}

#[test]
fn header_alg_must_equal_the_keys_alg() {
    let fx = Fixture::new();
    // The RS256 key's own private key, signing PS256 under the RS256 kid.
    let rs = fx.key(Algorithm::RS256);
    let ps_same_key = SigningKey::from_pkcs8_der(Algorithm::PS256, &rs.to_pkcs8_der().unwrap()).unwrap();
    let token = forge(
        &ps_same_key,
        &json!({"typ": "at+jwt", "alg": "PS256", "kid": rs.kid()}),
        &claims_json(),
    );
    assert_eq!(fx.verify(&token).unwrap_err(), TokenError::UnsupportedAlg);
    // A header naming another algorithm than the kid's key, whatever the signature.
    let ed = fx.key(Algorithm::EdDSA);
    let token = forge(
        ed,
        &json!({"typ": "at+jwt", "alg": "ES256", "kid": ed.kid()}),
        &claims_json(),
    );
    assert_eq!(fx.verify(&token).unwrap_err(), TokenError::UnsupportedAlg);
    // Unknown algorithm names.
    for alg in ["ES384", "RS512", "Ed25519", "es256", ""] {
        let token = forge(
            ed,
            &json!({"typ": "at+jwt", "alg": alg, "kid": ed.kid()}),
            &claims_json(),
        );
        assert_eq!(fx.verify(&token).unwrap_err(), TokenError::UnsupportedAlg, "{alg}");
    }
}

#[test]
fn algorithms_outside_the_allowed_list_are_refused() {
    let fx = Fixture::new();
    let token = mint(fx.key(Algorithm::RS256), &claims()).unwrap();
    let only_ed = Expectations {
        allowed_algs: &[Algorithm::EdDSA, Algorithm::ES256],
        ..expectations()
    };
    assert_eq!(
        fx.verify_with(&token, &only_ed).unwrap_err(),
        TokenError::UnsupportedAlg
    );
    let none = Expectations {
        allowed_algs: &[],
        ..expectations()
    };
    assert_eq!(fx.verify_with(&token, &none).unwrap_err(), TokenError::UnsupportedAlg);
}

// ---------------------------------------------------------------------------------------------------------
// Header refusals

#[test]
fn wrong_or_missing_typ_is_refused() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::ES256);
    for typ in [
        json!("JWT"),
        json!("dpop+jwt"),
        json!("at+jwt; x=1"),
        json!(""),
        json!(null),
    ] {
        let token = forge(
            key,
            &json!({"typ": typ, "alg": "ES256", "kid": key.kid()}),
            &claims_json(),
        );
        assert_eq!(fx.verify(&token).unwrap_err(), TokenError::WrongType, "{typ}");
    }
    let token = forge(key, &json!({"alg": "ES256", "kid": key.kid()}), &claims_json());
    assert_eq!(fx.verify(&token).unwrap_err(), TokenError::WrongType);
}

#[test]
fn unknown_or_missing_kid_is_refused() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    let token = forge(
        key,
        &json!({"typ": "at+jwt", "alg": "EdDSA", "kid": "not-a-kid"}),
        &claims_json(),
    );
    assert_eq!(fx.verify(&token).unwrap_err(), TokenError::UnknownKid);
    let token = forge(key, &json!({"typ": "at+jwt", "alg": "EdDSA"}), &claims_json());
    assert_eq!(fx.verify(&token).unwrap_err(), TokenError::UnknownKid);
    // A valid token under a key that was since removed from the set.
    let token = mint(key, &claims()).unwrap();
    let none = |_: &str| -> Option<VerifyKey> { None };
    assert_eq!(
        verify(&token, &none, &expectations()).unwrap_err(),
        TokenError::UnknownKid
    );
}

#[test]
fn crit_b64_and_duplicate_header_members_are_refused() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    let payload = claims_json().to_string();
    for h in [
        json!({"typ": "at+jwt", "alg": "EdDSA", "kid": key.kid(), "crit": ["exp"], "exp": 1}).to_string(),
        json!({"typ": "at+jwt", "alg": "EdDSA", "kid": key.kid(), "b64": false}).to_string(),
        format!(r#"{{"typ":"at+jwt","alg":"none","alg":"EdDSA","kid":"{}"}}"#, key.kid()),
        format!(r#"["at+jwt","EdDSA","{}"]"#, key.kid()),
    ] {
        let token = forge_raw(key, h.as_bytes(), payload.as_bytes());
        assert_eq!(fx.verify(&token).unwrap_err(), TokenError::Malformed, "{h}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Signature refusals

#[test]
fn tampered_tokens_are_refused() {
    let fx = Fixture::new();
    for key in &fx.keys {
        let token = mint(key, &claims()).unwrap();
        let (h, rest) = token.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        // Another payload under the original signature.
        let mut elevated = claims();
        elevated.scope = Some("admin".to_owned());
        let p = b64(&serde_json::to_vec(&elevated).unwrap());
        assert_eq!(
            fx.verify(&format!("{h}.{p}.{s}")).unwrap_err(),
            TokenError::BadSignature,
            "{}",
            key.alg()
        );
        // No signature, and a signature of another key under this kid.
        assert_eq!(fx.verify(&format!("{h}.{p}.")).unwrap_err(), TokenError::BadSignature);
        let impostor = SigningKey::generate(key.alg(), Some(key.kid())).unwrap();
        let token = mint(&impostor, &claims()).unwrap();
        assert_eq!(fx.verify(&token).unwrap_err(), TokenError::BadSignature);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Claim refusals

#[test]
fn wrong_issuer_is_refused() {
    let fx = Fixture::new();
    let mut c = claims();
    c.iss = "https://evil.example.com".to_owned();
    assert_eq!(
        fx.verify(&mint(fx.key(Algorithm::EdDSA), &c).unwrap()).unwrap_err(),
        TokenError::WrongIssuer
    );
    c.iss = format!("{ISS}/");
    assert_eq!(
        fx.verify(&mint(fx.key(Algorithm::EdDSA), &c).unwrap()).unwrap_err(),
        TokenError::WrongIssuer
    );
}

#[test]
fn wrong_audience_is_refused() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    let mut c = claims();
    c.aud = Audience::One("https://other.example".to_owned());
    assert_eq!(
        fx.verify(&mint(key, &c).unwrap()).unwrap_err(),
        TokenError::WrongAudience
    );
    c.aud = Audience::Many(vec!["https://other.example".to_owned()]);
    assert_eq!(
        fx.verify(&mint(key, &c).unwrap()).unwrap_err(),
        TokenError::WrongAudience
    );
    c.aud = Audience::Many(vec![]);
    assert_eq!(
        fx.verify(&mint(key, &c).unwrap()).unwrap_err(),
        TokenError::WrongAudience
    );
}

#[test]
fn expiry_is_enforced_with_leeway() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    let at = |exp: i64| {
        let mut c = claims();
        c.iat = NOW - 1000;
        c.exp = exp;
        fx.verify(&mint(key, &c).unwrap())
    };
    let leeway = i64::try_from(LEEWAY).unwrap();
    assert!(at(NOW + 1).is_ok());
    assert!(at(NOW - leeway + 1).is_ok(), "inside the leeway");
    assert_eq!(
        at(NOW - leeway).unwrap_err(),
        TokenError::Expired,
        "exp + leeway reached"
    );
    assert_eq!(at(NOW - 3600).unwrap_err(), TokenError::Expired);
    assert_eq!(at(i64::MIN).unwrap_err(), TokenError::Expired);
    let no_leeway = Expectations {
        leeway_secs: 0,
        ..expectations()
    };
    let mut c = claims();
    c.exp = NOW;
    assert_eq!(
        fx.verify_with(&mint(key, &c).unwrap(), &no_leeway).unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn nbf_and_iat_in_the_future_are_refused_beyond_leeway() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    let leeway = i64::try_from(LEEWAY).unwrap();
    let mut c = claims();
    c.nbf = Some(NOW + leeway);
    assert!(fx.verify(&mint(key, &c).unwrap()).is_ok(), "inside the leeway");
    c.nbf = Some(NOW + leeway + 1);
    assert_eq!(fx.verify(&mint(key, &c).unwrap()).unwrap_err(), TokenError::NotYetValid);
    c.nbf = Some(i64::MAX);
    assert_eq!(fx.verify(&mint(key, &c).unwrap()).unwrap_err(), TokenError::NotYetValid);

    let mut c = claims();
    c.iat = NOW + leeway + 1;
    c.exp = NOW + 3600;
    assert_eq!(fx.verify(&mint(key, &c).unwrap()).unwrap_err(), TokenError::NotYetValid);
    c.iat = NOW + leeway;
    assert!(fx.verify(&mint(key, &c).unwrap()).is_ok());
}

#[test]
fn missing_or_ill_typed_claims_are_malformed() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    for member in ["iss", "sub", "aud", "client_id", "iat", "exp", "jti"] {
        let mut payload = claims_json();
        payload.as_object_mut().unwrap().remove(member);
        assert_eq!(
            fx.verify(&forge(key, &header(key), &payload)).unwrap_err(),
            TokenError::Malformed,
            "{member}"
        );
    }
    for (member, value) in [
        ("exp", json!("soon")),
        ("iat", json!(1.5)),
        ("aud", json!(7)),
        ("scope", json!(["a"])),
    ] {
        let mut payload = claims_json();
        payload[member] = value;
        assert_eq!(
            fx.verify(&forge(key, &header(key), &payload)).unwrap_err(),
            TokenError::Malformed,
            "{member}"
        );
    }
    for payload in [&b"not json"[..], b"[]", b"null", b""] {
        let token = forge_raw(key, header(key).to_string().as_bytes(), payload);
        assert_eq!(fx.verify(&token).unwrap_err(), TokenError::Malformed);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Structure refusals

#[test]
fn garbage_and_truncated_tokens_are_malformed() {
    let fx = Fixture::new();
    let token = mint(fx.key(Algorithm::RS256), &claims()).unwrap();
    for garbage in [
        "",
        ".",
        "..",
        "...",
        "a",
        "a.b",
        "a.b.c.d",
        "!!!.!!!.!!!",
        "e30.e30.e30",
        "eyJ.eyJ.eyJ",
    ] {
        assert_eq!(fx.verify(garbage).unwrap_err(), TokenError::Malformed, "{garbage:?}");
    }
    // Base64 with padding or the standard alphabet.
    let (h, rest) = token.split_once('.').unwrap();
    assert_eq!(fx.verify(&format!("{h}=.{rest}")).unwrap_err(), TokenError::Malformed);
    assert_eq!(
        fx.verify(&format!("{}.{rest}", h.replace('J', "+"))).unwrap_err(),
        TokenError::Malformed
    );
    // Every truncation of a valid token is refused without panicking.
    for end in 0..token.len() {
        assert!(fx.verify(&token[..end]).is_err(), "prefix of {end} bytes");
    }
    // Surrounding whitespace is not trimmed.
    assert!(fx.verify(&format!(" {token}")).is_err());
    assert!(fx.verify(&format!("{token}\n")).is_err());
}

#[test]
fn oversized_tokens_are_refused_before_decoding() {
    let fx = Fixture::new();
    let key = fx.key(Algorithm::EdDSA);
    let huge = "A".repeat(1024 * 1024);
    assert_eq!(fx.verify(&huge).unwrap_err(), TokenError::Malformed);
    assert_eq!(
        fx.verify(&format!("{huge}.{huge}.{huge}")).unwrap_err(),
        TokenError::Malformed
    );
    // A validly signed token that is just over the limit.
    let mut payload = claims_json();
    payload["pad"] = json!("");
    let base = forge(key, &header(key), &payload).len();
    let pad_for = |target: usize| "x".repeat((target - base) * 3 / 4 + 4);
    payload["pad"] = json!(pad_for(MAX_TOKEN_LEN));
    let token = forge(key, &header(key), &payload);
    assert!(token.len() > MAX_TOKEN_LEN, "{}", token.len());
    assert_eq!(fx.verify(&token).unwrap_err(), TokenError::Malformed);
    payload["pad"] = json!(pad_for(MAX_TOKEN_LEN - 16));
    let token = forge(key, &header(key), &payload);
    assert!(token.len() <= MAX_TOKEN_LEN, "{}", token.len());
    assert!(fx.verify(&token).is_ok());
    // The general JWS verifier has the same limit.
    assert_eq!(
        verify_jws(&huge, &key.public_jwk(), &Algorithm::ALL).unwrap_err(),
        TokenError::Malformed
    );
}

// ---------------------------------------------------------------------------------------------------------
// Never panics

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,40}",
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|bytes| b64(&bytes)),
        Just(b64(br#"{"typ":"at+jwt","alg":"EdDSA","kid":"k"}"#)),
        Just(b64(br#"{"alg":"RS256"}"#)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn verify_never_panics_on_arbitrary_strings(token in any::<String>()) {
        let fx = &*FIXTURE;
        let _ = fx.verify(&token);
        let _ = verify_jws(&token, &fx.key(Algorithm::ES256).public_jwk(), &Algorithm::ALL);
    }

    #[test]
    fn verify_never_panics_on_token_shaped_strings(h in segment(), p in segment(), s in segment()) {
        let fx = &*FIXTURE;
        let token = format!("{h}.{p}.{s}");
        prop_assert!(fx.verify(&token).is_err());
        for key in &fx.keys {
            let _ = verify_jws(&token, &key.public_jwk(), &Algorithm::ALL);
        }
    }

    #[test]
    fn verify_never_panics_on_signed_arbitrary_payloads(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let fx = &*FIXTURE;
        let key = fx.key(Algorithm::EdDSA);
        let token = forge_raw(key, header(key).to_string().as_bytes(), &payload);
        prop_assert_eq!(fx.verify(&token).unwrap_err(), TokenError::Malformed);
    }
}

static FIXTURE: std::sync::LazyLock<Fixture> = std::sync::LazyLock::new(Fixture::new);
