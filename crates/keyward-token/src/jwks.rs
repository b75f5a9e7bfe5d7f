//! The JWK Set document (RFC 7517 §5) served at the JWKS endpoint.

use serde::{Deserialize, Serialize};

use crate::jwk::Jwk;
use crate::signing::{SigningKey, VerifyKey};

/// `{"keys": [...]}`. Parsing refuses the whole set if any key carries private material.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The public keys.
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// The public JWKs of `keys` (with `kid`, `alg`, `use`), in order: the current key and the keys still
    /// verifying tokens they signed before a rotation.
    pub fn from_signing_keys<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Self {
        Self {
            keys: keys.into_iter().map(SigningKey::public_jwk).collect(),
        }
    }

    /// The key with this `kid`.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|jwk| jwk.kid() == Some(kid))
    }

    /// The verification key with this `kid`, fixed to the algorithm its `alg` member names; `None` if
    /// there is no such key or it names no usable algorithm. Fits [`crate::verify`]'s key lookup.
    #[must_use]
    pub fn verify_key(&self, kid: &str) -> Option<VerifyKey> {
        self.find(kid).and_then(|jwk| VerifyKey::from_jwk_alg(jwk).ok())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::signing::Algorithm;

    #[test]
    fn serves_public_keys_and_finds_them_by_kid() {
        let keys: Vec<SigningKey> = Algorithm::ALL
            .iter()
            .map(|&alg| SigningKey::generate(alg, None).unwrap())
            .collect();
        let set = JwkSet::from_signing_keys(&keys);
        let json = serde_json::to_string(&set).unwrap();
        for private in ["\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"dq\"", "\"qi\""] {
            assert!(!json.contains(private), "{json}");
        }
        let back: JwkSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        for key in &keys {
            assert_eq!(back.verify_key(key.kid()), Some(key.verify_key()));
        }
        assert!(back.find("nope").is_none());
    }

    #[test]
    fn one_private_key_refuses_the_whole_set() {
        let json = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}"#;
        assert!(serde_json::from_str::<JwkSet>(json).is_err());
    }
}
