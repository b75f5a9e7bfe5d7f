//! Signing keys and verification keys, all on aws-lc-rs.
//!
//! A [`SigningKey`] has one fixed [`Algorithm`]; so does every [`VerifyKey`]. A token's header only ever
//! selects a key (by `kid`) and must then name exactly that key's algorithm: the algorithm is never taken
//! from the token alone, so there is no `none`, no HMAC keyed with a public key, and no RS256/PS256 swap.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::b64;
use crate::jwk::{Jwk, KeyType};

/// The smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// JWS algorithms (RFC 7518 §3.1, RFC 8037 §3.1). Deliberately no `none` and no `HS*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// ECDSA P-256 with SHA-256, fixed-width `r || s` signatures.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256, salt of 32 bytes.
    PS256,
}

impl Algorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [Self; 4] = [Self::EdDSA, Self::ES256, Self::RS256, Self::PS256];

    /// The JOSE `alg` name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
        }
    }

    /// The algorithm with this exact (case-sensitive) JOSE name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.as_str() == name)
    }

    fn key_type(self) -> KeyType {
        match self {
            Self::EdDSA => KeyType::Okp,
            Self::ES256 => KeyType::Ec,
            Self::RS256 | Self::PS256 => KeyType::Rsa,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_name(s).ok_or(KeyError::UnsupportedAlgorithm)
    }
}

/// RSA modulus sizes for generated keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RsaBits {
    /// 2048 bits (the default).
    #[default]
    B2048,
    /// 3072 bits.
    B3072,
}

/// Why a key could not be generated, imported, used or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Unknown algorithm name.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// The key material does not fit the algorithm (wrong key type, curve, length, or a JWK whose `alg`
    /// names another algorithm).
    #[error("the key does not fit the algorithm")]
    KeyMismatch,
    /// The key was refused by the crypto library (malformed DER, inconsistent components, too small).
    #[error("the key was rejected: {0}")]
    Rejected(&'static str),
    /// A failure inside the crypto library (random generator, signing).
    #[error("cryptographic operation failed")]
    Crypto,
}

enum Inner {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key with a fixed algorithm and a `kid` (by default its RFC 7638 thumbprint).
///
/// `Debug` shows the algorithm and `kid` only.
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    inner: Inner,
    verify: VerifyKey,
}

impl SigningKey {
    /// A fresh key for `alg` (RSA keys are 2048 bits). The `kid` is `kid_hint` when given, otherwise the
    /// RFC 7638 thumbprint of the public key.
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if the generator fails.
    pub fn generate(alg: Algorithm, kid_hint: Option<&str>) -> Result<Self, KeyError> {
        Self::generate_with_rsa_bits(alg, RsaBits::default(), kid_hint)
    }

    /// Like [`SigningKey::generate`], choosing the RSA modulus size (ignored for EdDSA and ES256).
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if the generator fails.
    pub fn generate_with_rsa_bits(alg: Algorithm, bits: RsaBits, kid_hint: Option<&str>) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let inner = match alg {
            Algorithm::EdDSA => {
                // PKCS#8 v2 (RFC 5958: private and public key), parsed back so that export round-trips.
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Crypto)?;
                Inner::Ed25519(Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| KeyError::Crypto)?)
            }
            Algorithm::ES256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Crypto)?;
                Inner::P256(
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                        .map_err(|_| KeyError::Crypto)?,
                )
            }
            Algorithm::RS256 | Algorithm::PS256 => {
                let size = match bits {
                    RsaBits::B2048 => KeySize::Rsa2048,
                    RsaBits::B3072 => KeySize::Rsa3072,
                };
                Inner::Rsa(RsaKeyPair::generate(size).map_err(|_| KeyError::Crypto)?)
            }
        };
        Self::assemble(alg, inner, kid_hint)
    }

    /// Imports an unencrypted PKCS#8 private key (v1 or v2) for `alg`. The `kid` is the thumbprint; use
    /// [`SigningKey::with_kid`] to override it.
    ///
    /// # Errors
    /// [`KeyError::Rejected`] if the DER is not a valid key of the algorithm's type, or an RSA key is below
    /// 2048 bits.
    pub fn from_pkcs8_der(alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        let inner = match alg {
            Algorithm::EdDSA => Inner::Ed25519(
                Ed25519KeyPair::from_pkcs8(der).map_err(|_| KeyError::Rejected("not an Ed25519 PKCS#8 key"))?,
            ),
            Algorithm::ES256 => Inner::P256(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| KeyError::Rejected("not a P-256 PKCS#8 key"))?,
            ),
            Algorithm::RS256 | Algorithm::PS256 => {
                let key = RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::Rejected("not an RSA PKCS#8 key"))?;
                if key.public_modulus_len() < MIN_RSA_MODULUS_BYTES {
                    return Err(KeyError::Rejected("RSA keys must have at least 2048 bits"));
                }
                Inner::Rsa(key)
            }
        };
        Self::assemble(alg, inner, None)
    }

    fn assemble(alg: Algorithm, inner: Inner, kid_hint: Option<&str>) -> Result<Self, KeyError> {
        let verify = match &inner {
            Inner::Ed25519(pair) => VerifyKey::new(alg, PublicKey::Ed25519(pair.public_key().as_ref().to_vec()))?,
            Inner::P256(pair) => VerifyKey::new(alg, PublicKey::P256(pair.public_key().as_ref().to_vec()))?,
            Inner::Rsa(pair) => {
                let public = pair.public_key();
                VerifyKey::new(
                    alg,
                    PublicKey::Rsa {
                        n: public.modulus().big_endian_without_leading_zero().to_vec(),
                        e: public.exponent().big_endian_without_leading_zero().to_vec(),
                    },
                )?
            }
        };
        let kid = match kid_hint {
            Some(kid) => kid.to_owned(),
            None => verify.bare_jwk().thumbprint(),
        };
        Ok(Self {
            alg,
            kid,
            inner,
            verify,
        })
    }

    /// The same key under another `kid`.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = kid.into();
        self
    }

    /// The key's algorithm.
    #[must_use]
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK, with `kid`, `alg` and `use: sig`: what the JWKS endpoint serves.
    #[must_use]
    pub fn public_jwk(&self) -> Jwk {
        self.verify
            .bare_jwk()
            .with_kid(self.kid.clone())
            .with_alg(self.alg.as_str())
            .with_use("sig")
    }

    /// The verification half, with the same fixed algorithm.
    #[must_use]
    pub fn verify_key(&self) -> VerifyKey {
        self.verify.clone()
    }

    /// The private key as unencrypted PKCS#8 DER (v2 for Ed25519, v1 for P-256 and RSA). Secret: seal it
    /// with a [`crate::Kek`] before it leaves memory; the buffer is zeroed on drop.
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if the library cannot encode the key.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let bytes = match &self.inner {
            Inner::Ed25519(pair) => pair.to_pkcs8().map_err(|_| KeyError::Crypto)?.as_ref().to_vec(),
            Inner::P256(pair) => pair.to_pkcs8v1().map_err(|_| KeyError::Crypto)?.as_ref().to_vec(),
            Inner::Rsa(pair) => pair.as_der().map_err(|_| KeyError::Crypto)?.as_ref().to_vec(),
        };
        Ok(Zeroizing::new(bytes))
    }

    /// Signs `message` with the key's algorithm (a JWS signature: `r || s` for ES256).
    ///
    /// # Errors
    /// [`KeyError::Crypto`] if the library fails.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Inner::P256(pair) => {
                let rng = SystemRandom::new();
                Ok(pair
                    .sign(&rng, message)
                    .map_err(|_| KeyError::Crypto)?
                    .as_ref()
                    .to_vec())
            }
            Inner::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.alg {
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let rng = SystemRandom::new();
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &rng, message, &mut out)
                    .map_err(|_| KeyError::Crypto)?;
                Ok(out)
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
enum PublicKey {
    /// 32-byte Ed25519 public key.
    Ed25519(Vec<u8>),
    /// Uncompressed SEC1 point `0x04 || x || y` (65 bytes).
    P256(Vec<u8>),
    /// Big-endian modulus and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// A public key bound to exactly one algorithm.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyKey {
    alg: Algorithm,
    key: PublicKey,
}

impl VerifyKey {
    fn new(alg: Algorithm, key: PublicKey) -> Result<Self, KeyError> {
        let fits = match (&key, alg) {
            (PublicKey::Ed25519(k), Algorithm::EdDSA) => k.len() == 32,
            (PublicKey::P256(k), Algorithm::ES256) => k.len() == 65 && k.first() == Some(&4),
            (PublicKey::Rsa { n, e }, Algorithm::RS256 | Algorithm::PS256) => {
                n.len() >= MIN_RSA_MODULUS_BYTES && !e.is_empty()
            }
            _ => false,
        };
        if fits {
            Ok(Self { alg, key })
        } else {
            Err(KeyError::KeyMismatch)
        }
    }

    /// The key of `jwk`, fixed to `alg`. The JWK's key type and curve must fit `alg` (OKP/Ed25519 for
    /// EdDSA, EC/P-256 for ES256, RSA of at least 2048 bits for RS256 and PS256), and when the JWK names
    /// an `alg` it must be this one.
    ///
    /// # Errors
    /// [`KeyError::KeyMismatch`] otherwise.
    pub fn from_jwk(jwk: &Jwk, alg: Algorithm) -> Result<Self, KeyError> {
        if jwk.alg().is_some_and(|named| named != alg.as_str()) || jwk.kty() != alg.key_type() {
            return Err(KeyError::KeyMismatch);
        }
        let decode = |member: Option<&str>| member.and_then(b64::decode).ok_or(KeyError::KeyMismatch);
        let key = match alg {
            Algorithm::EdDSA => {
                if jwk.crv() != Some("Ed25519") {
                    return Err(KeyError::KeyMismatch);
                }
                PublicKey::Ed25519(decode(jwk.x())?)
            }
            Algorithm::ES256 => {
                if jwk.crv() != Some("P-256") {
                    return Err(KeyError::KeyMismatch);
                }
                let (x, y) = (decode(jwk.x())?, decode(jwk.y())?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::KeyMismatch);
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                PublicKey::P256(point)
            }
            Algorithm::RS256 | Algorithm::PS256 => PublicKey::Rsa {
                n: decode(jwk.n())?,
                e: decode(jwk.e())?,
            },
        };
        Self::new(alg, key)
    }

    /// The key of `jwk`, fixed to the algorithm its `alg` member names (which is then required).
    ///
    /// # Errors
    /// [`KeyError::UnsupportedAlgorithm`] without a known `alg`; [`KeyError::KeyMismatch`] as for
    /// [`VerifyKey::from_jwk`].
    pub fn from_jwk_alg(jwk: &Jwk) -> Result<Self, KeyError> {
        let alg = jwk
            .alg()
            .and_then(Algorithm::from_name)
            .ok_or(KeyError::UnsupportedAlgorithm)?;
        Self::from_jwk(jwk, alg)
    }

    /// The key's one algorithm.
    #[must_use]
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public JWK (with `alg`, without `kid`).
    #[must_use]
    pub fn to_jwk(&self) -> Jwk {
        self.bare_jwk().with_alg(self.alg.as_str())
    }

    fn bare_jwk(&self) -> Jwk {
        match &self.key {
            PublicKey::Ed25519(k) => Jwk::ed25519(k),
            PublicKey::P256(point) => {
                let x = point.get(1..33).unwrap_or_default();
                let y = point.get(33..65).unwrap_or_default();
                Jwk::ec("P-256", x, y)
            }
            PublicKey::Rsa { n, e } => Jwk::rsa(n, e),
        }
    }

    /// This key with its public point parsed once, for a key that verifies many signatures (a
    /// DPoP client's proof key, cached per proof header): [`PreparedKey::verify`] accepts exactly
    /// what [`VerifyKey::verify`] accepts, without decoding and checking the point each time.
    #[must_use]
    pub fn prepare(self) -> PreparedKey {
        let parsed = match &self.key {
            PublicKey::Ed25519(k) => signature::ParsedPublicKey::new(&signature::ED25519, k).ok(),
            PublicKey::P256(k) => signature::ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, k).ok(),
            // RSA keys are built from their components per verification, as by `verify`.
            PublicKey::Rsa { .. } => None,
        };
        PreparedKey { key: self, parsed }
    }

    /// Whether `signature` is a valid signature of `message` under this key and its algorithm.
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match (&self.key, self.alg) {
            (PublicKey::Ed25519(k), _) => UnparsedPublicKey::new(&signature::ED25519, k).verify(message, signature),
            (PublicKey::P256(k), _) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, k).verify(message, signature)
            }
            (PublicKey::Rsa { n, e }, alg) => {
                let params = match alg {
                    Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    _ => &signature::RSA_PKCS1_2048_8192_SHA256,
                };
                PublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                }
                .verify(params, message, signature)
            }
        }
        .is_ok()
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("alg", &self.alg)
            .field("thumbprint", &self.bare_jwk().thumbprint())
            .finish()
    }
}

/// A [`VerifyKey`] made ready for many verifications (see [`VerifyKey::prepare`]).
#[derive(Clone)]
pub struct PreparedKey {
    key: VerifyKey,
    /// The parsed Ed25519 / P-256 key; `None` for RSA, and for a point the library refuses (then
    /// every verification fails, as it does through [`VerifyKey::verify`]).
    parsed: Option<signature::ParsedPublicKey>,
}

impl fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedKey")
            .field("alg", &self.key.alg)
            .finish_non_exhaustive()
    }
}

impl PreparedKey {
    /// The key's one algorithm.
    #[must_use]
    pub fn alg(&self) -> Algorithm {
        self.key.alg
    }

    /// Whether `signature` is a valid signature of `message` under this key and its algorithm.
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match (&self.parsed, &self.key.key) {
            (Some(p), _) => p.verify_sig(message, signature).is_ok(),
            (None, PublicKey::Rsa { .. }) => self.key.verify(message, signature),
            (None, _) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_refuse_others() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.as_str()), Some(alg));
            assert_eq!(serde_json::to_string(&alg).unwrap(), format!("\"{alg}\""));
        }
        for name in ["none", "HS256", "es256", "RS384", ""] {
            assert_eq!(Algorithm::from_name(name), None, "{name}");
        }
    }

    #[test]
    fn every_algorithm_generates_signs_verifies_and_exports() {
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(alg, None).unwrap();
            assert_eq!(key.kid(), key.public_jwk().thumbprint(), "{alg}: kid is the thumbprint");
            assert_eq!(key.public_jwk().alg(), Some(alg.as_str()));
            let sig = key.sign(b"message").unwrap();
            assert!(key.verify_key().verify(b"message", &sig), "{alg}");
            assert!(!key.verify_key().verify(b"messagf", &sig), "{alg}");

            let der = key.to_pkcs8_der().unwrap();
            let back = SigningKey::from_pkcs8_der(alg, &der).unwrap();
            assert_eq!(back.kid(), key.kid());
            assert_eq!(back.public_jwk(), key.public_jwk());
            assert!(key.verify_key().verify(b"m", &back.sign(b"m").unwrap()));

            let from_jwk = VerifyKey::from_jwk_alg(&key.public_jwk()).unwrap();
            assert_eq!(from_jwk, key.verify_key());
            let debug = format!("{key:?}");
            assert!(debug.contains("redacted") && debug.contains(key.kid()), "{debug}");
        }
    }

    /// A prepared key accepts exactly what the plain key accepts: every algorithm, the right
    /// signature, another message, a changed signature, a truncated or empty signature, and
    /// another key's signature.
    #[test]
    fn prepared_keys_verify_as_the_plain_keys() {
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(alg, None).unwrap();
            let other = SigningKey::generate(alg, None).unwrap();
            let (plain, prepared) = (key.verify_key(), key.verify_key().prepare());
            assert_eq!(prepared.alg(), alg);
            let sig = key.sign(b"message").unwrap();
            let mut flipped = sig.clone();
            flipped[sig.len() / 2] ^= 1;
            let cases: [(&[u8], Vec<u8>); 6] = [
                (b"message", sig.clone()),
                (b"messagf", sig.clone()),
                (b"message", flipped),
                (b"message", sig[..sig.len() - 1].to_vec()),
                (b"message", Vec::new()),
                (b"message", other.sign(b"message").unwrap()),
            ];
            for (i, (msg, sig)) in cases.iter().enumerate() {
                assert_eq!(prepared.verify(msg, sig), plain.verify(msg, sig), "{alg} case {i}");
                assert_eq!(prepared.verify(msg, sig), i == 0, "{alg} case {i}");
            }
        }
    }

    /// A P-256 point that is not on the curve verifies nothing, prepared or not.
    #[test]
    fn prepared_off_curve_point_verifies_nothing() {
        let key = SigningKey::generate(Algorithm::ES256, None).unwrap();
        let sig = key.sign(b"m").unwrap();
        let jwk = key.public_jwk();
        let mut y = b64::decode(jwk.y().unwrap()).unwrap();
        y[31] ^= 1;
        let bad = Jwk::ec("P-256", &b64::decode(jwk.x().unwrap()).unwrap(), &y);
        let plain = VerifyKey::from_jwk(&bad, Algorithm::ES256).unwrap();
        assert!(!plain.verify(b"m", &sig));
        assert!(!plain.clone().prepare().verify(b"m", &sig));
        assert!(format!("{:?}", plain.prepare()).contains("ES256"));
    }

    #[test]
    fn ed25519_export_is_pkcs8_v2() {
        let key = SigningKey::generate(Algorithm::EdDSA, Some("hint")).unwrap();
        assert_eq!(key.kid(), "hint");
        let der = key.to_pkcs8_der().unwrap();
        // SEQUENCE { INTEGER version ... }: version 1 means PKCS#8 v2 (OneAsymmetricKey with the public key).
        let version_at = der.windows(3).position(|w| w == [0x02, 0x01, 0x01]);
        assert_eq!(version_at, Some(2), "{der:02x?}");
    }

    #[test]
    fn rsa_3072_generates() {
        let key = SigningKey::generate_with_rsa_bits(Algorithm::RS256, RsaBits::B3072, None).unwrap();
        assert_eq!(b64::decode(key.public_jwk().n().unwrap()).unwrap().len(), 384);
    }

    #[test]
    fn imports_refuse_the_wrong_key_type_and_garbage() {
        let ed = SigningKey::generate(Algorithm::EdDSA, None)
            .unwrap()
            .to_pkcs8_der()
            .unwrap();
        assert!(SigningKey::from_pkcs8_der(Algorithm::ES256, &ed).is_err());
        assert!(SigningKey::from_pkcs8_der(Algorithm::RS256, &ed).is_err());
        for alg in Algorithm::ALL {
            assert!(SigningKey::from_pkcs8_der(alg, b"not der").is_err());
            assert!(SigningKey::from_pkcs8_der(alg, &[]).is_err());
        }
    }

    #[test]
    fn a_jwk_only_fits_its_own_algorithm() {
        let ec = SigningKey::generate(Algorithm::ES256, None).unwrap().public_jwk();
        assert_eq!(VerifyKey::from_jwk(&ec, Algorithm::EdDSA), Err(KeyError::KeyMismatch));
        assert_eq!(VerifyKey::from_jwk(&ec, Algorithm::RS256), Err(KeyError::KeyMismatch));
        let rsa = SigningKey::generate(Algorithm::RS256, None).unwrap().public_jwk();
        // The JWK names RS256: it cannot be used for PS256.
        assert_eq!(VerifyKey::from_jwk(&rsa, Algorithm::PS256), Err(KeyError::KeyMismatch));
        let rsa_bare: Jwk = serde_json::from_str(&format!(
            r#"{{"kty":"RSA","n":"{}","e":"{}"}}"#,
            rsa.n().unwrap(),
            rsa.e().unwrap()
        ))
        .unwrap();
        assert!(VerifyKey::from_jwk(&rsa_bare, Algorithm::PS256).is_ok());
        assert_eq!(VerifyKey::from_jwk_alg(&rsa_bare), Err(KeyError::UnsupportedAlgorithm));
        // Too small an RSA modulus.
        let small = Jwk::rsa(&[0xff; 128], &[1, 0, 1]);
        assert_eq!(
            VerifyKey::from_jwk(&small, Algorithm::RS256),
            Err(KeyError::KeyMismatch)
        );
    }
}
