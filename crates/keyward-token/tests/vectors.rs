//! Published test vectors: RFC 7638 §3.1, RFC 8037 Appendix A, RFC 7515 Appendix A.2 and A.3.
//!
//! Reproduced exactly: the RFC 7638 and RFC 8037 thumbprints, the RFC 8037 A.4 Ed25519 signature and the
//! RFC 7515 A.2 RS256 signature (both schemes are deterministic). Verified only: the RFC 7515 A.3 ES256
//! signature (ECDSA signatures are randomized, so it cannot be reproduced).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeyPairComponents, PublicKeyComponents};
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyward_token::{
    thumbprint, verify_jws, verify_jws_payload, verify_jws_prepared, Algorithm, Jwk, SigningKey, TokenError, VerifyKey,
};
use serde_json::json;

fn b64u(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// RFC 7638 §3.1

const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

#[test]
fn rfc7638_rsa_thumbprint() {
    let jwk: Jwk = serde_json::from_value(json!({
        "kty": "RSA",
        "n": RFC7638_N,
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    }))
    .unwrap();
    assert_eq!(
        jwk.thumbprint_input(),
        format!(r#"{{"e":"AQAB","kty":"RSA","n":"{RFC7638_N}"}}"#)
    );
    assert_eq!(thumbprint(&jwk), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
}

// ---------------------------------------------------------------------------------------------------------
// RFC 8037 Appendix A (Ed25519)

const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

fn rfc8037_public_jwk() -> Jwk {
    serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})).unwrap()
}

/// A.1 as a [`SigningKey`]: the raw seed `d` wrapped into PKCS#8 by aws-lc-rs, imported through the
/// crate's own `from_pkcs8_der`.
fn rfc8037_signing_key() -> SigningKey {
    let pair = Ed25519KeyPair::from_seed_unchecked(&b64u(RFC8037_D)).unwrap();
    let der = pair.to_pkcs8().unwrap();
    SigningKey::from_pkcs8_der(Algorithm::EdDSA, der.as_ref()).unwrap()
}

#[test]
fn rfc8037_a1_private_key_refused_as_a_jwk() {
    let private = json!({"kty": "OKP", "crv": "Ed25519", "d": RFC8037_D, "x": RFC8037_X});
    assert!(serde_json::from_value::<Jwk>(private).is_err());
}

#[test]
fn rfc8037_a3_thumbprint() {
    let jwk = rfc8037_public_jwk();
    assert_eq!(
        jwk.thumbprint_input(),
        format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{RFC8037_X}"}}"#)
    );
    assert_eq!(thumbprint(&jwk), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    // The key derived from `d` has the same public key, hence the same kid.
    let key = rfc8037_signing_key();
    assert_eq!(key.public_jwk().x(), Some(RFC8037_X));
    assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

#[test]
fn rfc8037_a4_signature_reproduced_exactly() {
    let (signing_input, signature) = RFC8037_JWS.rsplit_once('.').unwrap();
    let (header, payload) = signing_input.split_once('.').unwrap();
    assert_eq!(b64u(header), br#"{"alg":"EdDSA"}"#);
    assert_eq!(b64u(payload), b"Example of Ed25519 signing");
    let ours = rfc8037_signing_key().sign(signing_input.as_bytes()).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.encode(ours), signature);
}

#[test]
fn rfc8037_a5_verification() {
    let jwk = rfc8037_public_jwk();
    let (header, payload) = verify_jws_payload(RFC8037_JWS, &jwk, &[Algorithm::EdDSA]).unwrap();
    assert_eq!(header, json!({"alg": "EdDSA"}));
    assert_eq!(payload, b"Example of Ed25519 signing");
    // The payload is not JSON, so the JWT-shaped variant refuses it; EdDSA not allowed is refused.
    assert_eq!(
        verify_jws(RFC8037_JWS, &jwk, &[Algorithm::EdDSA]).unwrap_err(),
        TokenError::Malformed
    );
    assert_eq!(
        verify_jws_payload(RFC8037_JWS, &jwk, &[Algorithm::ES256]).unwrap_err(),
        TokenError::UnsupportedAlg
    );
    // One flipped bit in the signature.
    let mut tampered = RFC8037_JWS.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'g' { 'w' } else { 'g' });
    assert_eq!(
        verify_jws_payload(&tampered, &jwk, &[Algorithm::EdDSA]).unwrap_err(),
        TokenError::BadSignature
    );
}

/// The RFC 8037 A.5 JWS through a prepared key (the DPoP proof-key cache): the same payload, and the
/// same outcome as `verify_jws_payload` for a flipped signature and for broken structures.
#[test]
fn rfc8037_a5_verification_with_a_prepared_key() {
    let jwk = rfc8037_public_jwk();
    let key = VerifyKey::from_jwk(&jwk, Algorithm::EdDSA).unwrap().prepare();
    assert_eq!(
        verify_jws_prepared(RFC8037_JWS, &key).unwrap(),
        b"Example of Ed25519 signing"
    );
    let (head, sig) = RFC8037_JWS.rsplit_once('.').unwrap();
    let mut flipped = RFC8037_JWS.to_owned();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'g' { 'w' } else { 'g' });
    let oversized = format!("{head}{}.{sig}", "A".repeat(keyward_token::MAX_TOKEN_LEN));
    let cases = [
        flipped,
        format!("{head}.{sig}.x"),
        head.to_owned(),
        format!("{head}."),
        format!(".{}", RFC8037_JWS.split_once('.').unwrap().1),
        format!("{head}.!!!"),
        RFC8037_JWS.replacen('.', ".!", 1),
        oversized,
        String::new(),
    ];
    for (i, token) in cases.iter().enumerate() {
        let plain = verify_jws_payload(token, &jwk, &[Algorithm::EdDSA]).map(|(_, p)| p);
        let prepared = verify_jws_prepared(token, &key);
        assert!(plain.is_err(), "case {i}");
        assert_eq!(prepared, plain, "case {i}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// RFC 7515 Appendix A.2 (RS256) and A.3 (ES256); both sign the same JWS payload.

const RFC7515_PAYLOAD: &str =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

const A2_HEADER: &str = "eyJhbGciOiJSUzI1NiJ9";
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_E: &str = "AQAB";
const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
const A2_DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
const A2_DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
const A2_QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";
const A2_SIGNATURE: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

const A3_HEADER: &str = "eyJhbGciOiJFUzI1NiJ9";
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const A3_SIGNATURE: &str = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

fn rfc7515_claims() -> serde_json::Value {
    json!({"iss": "joe", "exp": 1_300_819_380, "http://example.com/is_root": true})
}

/// A.2.1's key: aws-lc-rs imports the raw JWK components (checking their consistency), exports PKCS#8,
/// and the crate imports that through `from_pkcs8_der`.
fn a2_signing_key(alg: Algorithm) -> SigningKey {
    let components = KeyPairComponents {
        public_key: PublicKeyComponents {
            n: b64u(A2_N),
            e: b64u(A2_E),
        },
        d: b64u(A2_D),
        p: b64u(A2_P),
        q: b64u(A2_Q),
        dP: b64u(A2_DP),
        dQ: b64u(A2_DQ),
        qInv: b64u(A2_QI),
    };
    let pair = RsaKeyPair::from_components(&components).unwrap();
    let der = pair.as_der().unwrap();
    SigningKey::from_pkcs8_der(alg, der.as_ref()).unwrap()
}

fn a2_public_jwk() -> Jwk {
    serde_json::from_value(json!({"kty": "RSA", "n": A2_N, "e": A2_E})).unwrap()
}

#[test]
fn rfc7515_a2_rs256_signature_reproduced_exactly() {
    assert_eq!(b64u(A2_HEADER), br#"{"alg":"RS256"}"#);
    assert_eq!(
        b64u(RFC7515_PAYLOAD),
        b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}"
    );
    let key = a2_signing_key(Algorithm::RS256);
    assert_eq!(key.public_jwk().n(), Some(A2_N));
    assert_eq!(key.public_jwk().e(), Some(A2_E));
    let signing_input = format!("{A2_HEADER}.{RFC7515_PAYLOAD}");
    let ours = key.sign(signing_input.as_bytes()).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.encode(ours), A2_SIGNATURE);
}

#[test]
fn rfc7515_a2_rs256_verification() {
    let jws = format!("{A2_HEADER}.{RFC7515_PAYLOAD}.{A2_SIGNATURE}");
    let (header, claims) = verify_jws(&jws, &a2_public_jwk(), &[Algorithm::RS256]).unwrap();
    assert_eq!(header, json!({"alg": "RS256"}));
    assert_eq!(claims, rfc7515_claims());
    // Same key, other padding: an RS256 signature presented as PS256 is refused.
    let as_ps256 = format!(
        "{}.{RFC7515_PAYLOAD}.{A2_SIGNATURE}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"PS256"}"#)
    );
    assert_eq!(
        verify_jws(&as_ps256, &a2_public_jwk(), &[Algorithm::RS256, Algorithm::PS256]).unwrap_err(),
        TokenError::BadSignature
    );
    // RS256 not in the allowed list.
    assert_eq!(
        verify_jws(&jws, &a2_public_jwk(), &[Algorithm::PS256]).unwrap_err(),
        TokenError::UnsupportedAlg
    );
}

#[test]
fn ps256_with_the_rfc7515_a2_key_verifies_and_does_not_cross_over() {
    let key = a2_signing_key(Algorithm::PS256);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"PS256"}"#);
    let signing_input = format!("{header}.{RFC7515_PAYLOAD}");
    let signature = URL_SAFE_NO_PAD.encode(key.sign(signing_input.as_bytes()).unwrap());
    let jws = format!("{signing_input}.{signature}");
    let (_, claims) = verify_jws(&jws, &a2_public_jwk(), &[Algorithm::PS256]).unwrap();
    assert_eq!(claims, rfc7515_claims());
    // The PSS signature under an RS256 header does not verify.
    let as_rs256 = format!("{A2_HEADER}.{RFC7515_PAYLOAD}.{signature}");
    assert_eq!(
        verify_jws(&as_rs256, &a2_public_jwk(), &[Algorithm::RS256]).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn rfc7515_a3_es256_verification() {
    assert_eq!(b64u(A3_HEADER), br#"{"alg":"ES256"}"#);
    let jwk: Jwk = serde_json::from_value(json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y})).unwrap();
    let jws = format!("{A3_HEADER}.{RFC7515_PAYLOAD}.{A3_SIGNATURE}");
    let (header, claims) = verify_jws(&jws, &jwk, &[Algorithm::ES256]).unwrap();
    assert_eq!(header, json!({"alg": "ES256"}));
    assert_eq!(claims, rfc7515_claims());
    // The same signature over another payload, or under another key type, is refused.
    let other = format!(
        "{A3_HEADER}.{}.{A3_SIGNATURE}",
        URL_SAFE_NO_PAD.encode(br#"{"iss":"joe"}"#)
    );
    assert_eq!(
        verify_jws(&other, &jwk, &[Algorithm::ES256]).unwrap_err(),
        TokenError::BadSignature
    );
    assert_eq!(
        verify_jws(&jws, &rfc8037_public_jwk(), &[Algorithm::ES256]).unwrap_err(),
        TokenError::UnsupportedAlg
    );
    // A.3.1's private key is refused as a JWK.
    let private = json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y, "d": A3_D});
    assert!(serde_json::from_value::<Jwk>(private).is_err());
}
