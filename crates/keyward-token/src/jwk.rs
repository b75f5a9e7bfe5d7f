//! Public JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037) and RFC 7638 thumbprints.
//!
//! A [`Jwk`] only ever holds public material. Parsing refuses every private member (`d`, `p`, `q`, `dp`,
//! `dq`, `qi`, `oth`, and the symmetric `k`), so a private key pasted into a JWKS, a client registration or
//! a DPoP header is an error rather than something that is silently carried along (and maybe served).

use std::fmt;

use aws_lc_rs::digest;
use serde::{Deserialize, Deserializer, Serialize};

use crate::b64;

/// The key types this crate knows: `OKP` (Ed25519), `EC` (P-256) and `RSA`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// Octet key pair (RFC 8037), e.g. Ed25519.
    #[serde(rename = "OKP")]
    Okp,
    /// Elliptic curve (RFC 7518 §6.2), e.g. P-256.
    #[serde(rename = "EC")]
    Ec,
    /// RSA (RFC 7518 §6.3).
    #[serde(rename = "RSA")]
    Rsa,
}

impl KeyType {
    /// The `kty` value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Okp => "OKP",
            Self::Ec => "EC",
            Self::Rsa => "RSA",
        }
    }
}

/// Why a JWK was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The JWK carries a private (or symmetric) member.
    #[error("the JWK carries the private member {0:?}; only public keys are accepted")]
    PrivateMember(&'static str),
    /// `kty` is not `OKP`, `EC` or `RSA` (symmetric `oct` keys are never accepted).
    #[error("unsupported key type {0:?}")]
    UnsupportedKeyType(String),
    /// A member required for this key type is absent.
    #[error("the JWK lacks the required member {0:?}")]
    MissingMember(&'static str),
    /// A member that does not belong to this key type is present.
    #[error("the member {0:?} does not belong to this key type")]
    UnexpectedMember(&'static str),
    /// A key member is not canonical base64url without padding, or is empty.
    #[error("the member {0:?} is not base64url")]
    BadEncoding(&'static str),
}

/// A public JWK: `kty`, `crv`, `x`, `y`, `n`, `e`, `kid`, `alg`, `use`.
///
/// The members are validated on construction (required members present for the key type, key material
/// base64url), so [`thumbprint`] cannot fail. Unknown members (`key_ops`, `x5c`, ...) are ignored when
/// parsing, as RFC 7517 §4 asks; private members are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawJwk")]
pub struct Jwk {
    kty: KeyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alg: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    use_: Option<String>,
}

impl Jwk {
    /// An `OKP` key: `crv` (e.g. `Ed25519`) and the raw public key `x`.
    #[must_use]
    pub fn okp(crv: &str, x: &[u8]) -> Self {
        Self::bare(
            KeyType::Okp,
            Some(crv.to_owned()),
            Some(b64::encode(x)),
            None,
            None,
            None,
        )
    }

    /// An Ed25519 key from its 32-byte public key.
    #[must_use]
    pub fn ed25519(public_key: &[u8]) -> Self {
        Self::okp("Ed25519", public_key)
    }

    /// An `EC` key: `crv` (e.g. `P-256`) and the affine coordinates, big-endian, full field width.
    #[must_use]
    pub fn ec(crv: &str, x: &[u8], y: &[u8]) -> Self {
        Self::bare(
            KeyType::Ec,
            Some(crv.to_owned()),
            Some(b64::encode(x)),
            Some(b64::encode(y)),
            None,
            None,
        )
    }

    /// An `RSA` key from its modulus and public exponent (big-endian; leading zero octets are dropped as
    /// RFC 7518 §6.3.1 requires).
    #[must_use]
    pub fn rsa(n: &[u8], e: &[u8]) -> Self {
        Self::bare(
            KeyType::Rsa,
            None,
            None,
            None,
            Some(b64::encode(strip_leading_zeros(n))),
            Some(b64::encode(strip_leading_zeros(e))),
        )
    }

    fn bare(
        kty: KeyType,
        crv: Option<String>,
        x: Option<String>,
        y: Option<String>,
        n: Option<String>,
        e: Option<String>,
    ) -> Self {
        Self {
            kty,
            crv,
            x,
            y,
            n,
            e,
            kid: None,
            alg: None,
            use_: None,
        }
    }

    /// The same key with `kid` set.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The same key with `alg` set.
    #[must_use]
    pub fn with_alg(mut self, alg: impl Into<String>) -> Self {
        self.alg = Some(alg.into());
        self
    }

    /// The same key with `use` set (`sig` for signing keys).
    #[must_use]
    pub fn with_use(mut self, key_use: impl Into<String>) -> Self {
        self.use_ = Some(key_use.into());
        self
    }

    /// `kty`.
    #[must_use]
    pub fn kty(&self) -> KeyType {
        self.kty
    }
    /// `crv` (OKP and EC keys).
    #[must_use]
    pub fn crv(&self) -> Option<&str> {
        self.crv.as_deref()
    }
    /// `x`, base64url (OKP and EC keys).
    #[must_use]
    pub fn x(&self) -> Option<&str> {
        self.x.as_deref()
    }
    /// `y`, base64url (EC keys).
    #[must_use]
    pub fn y(&self) -> Option<&str> {
        self.y.as_deref()
    }
    /// `n`, base64url (RSA keys).
    #[must_use]
    pub fn n(&self) -> Option<&str> {
        self.n.as_deref()
    }
    /// `e`, base64url (RSA keys).
    #[must_use]
    pub fn e(&self) -> Option<&str> {
        self.e.as_deref()
    }
    /// `kid`.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
    /// `alg`.
    #[must_use]
    pub fn alg(&self) -> Option<&str> {
        self.alg.as_deref()
    }
    /// `use`.
    #[must_use]
    pub fn key_use(&self) -> Option<&str> {
        self.use_.as_deref()
    }

    /// The RFC 7638 SHA-256 thumbprint of this key; see [`thumbprint`].
    #[must_use]
    pub fn thumbprint(&self) -> String {
        thumbprint(self)
    }

    /// The canonical JSON of RFC 7638 §3: the required members only, in lexicographic order, no whitespace.
    #[must_use]
    pub fn thumbprint_input(&self) -> String {
        let s = |v: &Option<String>| json_string(v.as_deref().unwrap_or_default());
        match self.kty {
            KeyType::Okp => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, s(&self.crv), s(&self.x)),
            KeyType::Ec => format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                s(&self.crv),
                s(&self.x),
                s(&self.y)
            ),
            KeyType::Rsa => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, s(&self.e), s(&self.n)),
        }
    }
}

/// RFC 7638 JWK thumbprint: base64url (no padding) of SHA-256 over the required members of the key, in
/// lexicographic order, without whitespace. Optional members (`kid`, `alg`, `use`) do not change it.
#[must_use]
pub fn thumbprint(jwk: &Jwk) -> String {
    b64::encode(digest::digest(&digest::SHA256, jwk.thumbprint_input().as_bytes()).as_ref())
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes.get(first..).unwrap_or(bytes)
}

/// A JSON string literal with only the escapes JSON requires (RFC 7638 §3.3: no other escaping).
fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The wire form, before validation.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    // Private and symmetric members: their mere presence (even `null`) refuses the key.
    #[serde(default, deserialize_with = "present")]
    d: bool,
    #[serde(default, deserialize_with = "present")]
    p: bool,
    #[serde(default, deserialize_with = "present")]
    q: bool,
    #[serde(default, deserialize_with = "present")]
    dp: bool,
    #[serde(default, deserialize_with = "present")]
    dq: bool,
    #[serde(default, deserialize_with = "present")]
    qi: bool,
    #[serde(default, deserialize_with = "present")]
    oth: bool,
    #[serde(default, deserialize_with = "present")]
    k: bool,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

impl TryFrom<RawJwk> for Jwk {
    type Error = JwkError;

    fn try_from(raw: RawJwk) -> Result<Self, JwkError> {
        let private = [
            ("d", raw.d),
            ("p", raw.p),
            ("q", raw.q),
            ("dp", raw.dp),
            ("dq", raw.dq),
            ("qi", raw.qi),
            ("oth", raw.oth),
            ("k", raw.k),
        ];
        if let Some((name, _)) = private.iter().find(|(_, is_present)| *is_present) {
            return Err(JwkError::PrivateMember(name));
        }
        let kty = match raw.kty.as_str() {
            "OKP" => KeyType::Okp,
            "EC" => KeyType::Ec,
            "RSA" => KeyType::Rsa,
            other => return Err(JwkError::UnsupportedKeyType(other.to_owned())),
        };
        let (required, forbidden): (&[&'static str], &[&'static str]) = match kty {
            KeyType::Okp => (&["crv", "x"], &["y", "n", "e"]),
            KeyType::Ec => (&["crv", "x", "y"], &["n", "e"]),
            KeyType::Rsa => (&["n", "e"], &["crv", "x", "y"]),
        };
        let member = |name: &str| match name {
            "crv" => raw.crv.as_deref(),
            "x" => raw.x.as_deref(),
            "y" => raw.y.as_deref(),
            "n" => raw.n.as_deref(),
            "e" => raw.e.as_deref(),
            _ => None,
        };
        for name in required {
            let value = member(name).ok_or(JwkError::MissingMember(name))?;
            if *name != "crv" && (value.is_empty() || b64::decode(value).is_none()) {
                return Err(JwkError::BadEncoding(name));
            }
        }
        if let Some(name) = forbidden.iter().find(|name| member(name).is_some()) {
            return Err(JwkError::UnexpectedMember(name));
        }
        Ok(Self {
            kty,
            crv: raw.crv,
            x: raw.x,
            y: raw.y,
            n: raw.n,
            e: raw.e,
            kid: raw.kid,
            alg: raw.alg,
            use_: raw.use_,
        })
    }
}

impl fmt::Display for Jwk {
    /// The JWK as compact JSON (public material only).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(json) => f.write_str(&json),
            Err(_) => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn refuses_every_private_member() {
        for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            let json = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"AAAA","{member}":"AAAA"}}"#);
            let err = serde_json::from_str::<Jwk>(&json).unwrap_err().to_string();
            assert!(err.contains("private member"), "{member}: {err}");
            let json = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"AAAA","{member}":null}}"#);
            assert!(serde_json::from_str::<Jwk>(&json).is_err(), "{member}: null");
        }
    }

    #[test]
    fn refuses_symmetric_and_incomplete_keys() {
        assert!(serde_json::from_str::<Jwk>(r#"{"kty":"oct"}"#).is_err());
        assert!(serde_json::from_str::<Jwk>(r#"{"kty":"EC","crv":"P-256","x":"AAAA"}"#).is_err());
        assert!(serde_json::from_str::<Jwk>(r#"{"kty":"RSA","n":"AAAA"}"#).is_err());
        assert!(serde_json::from_str::<Jwk>(r#"{"kty":"RSA","n":"AA==","e":"AQAB"}"#).is_err());
        assert!(serde_json::from_str::<Jwk>(r#"{"kty":"RSA","n":"","e":"AQAB"}"#).is_err());
        assert!(serde_json::from_str::<Jwk>(r#"{"kty":"RSA","n":"AAAA","e":"AQAB","x":"AAAA"}"#).is_err());
        assert!(serde_json::from_str::<Jwk>(r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA","kty":"EC"}"#).is_err());
    }

    #[test]
    fn parses_public_members_and_ignores_unknown_ones() {
        let jwk: Jwk = serde_json::from_str(
            r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA","kid":"k1","alg":"ES256","use":"sig","key_ops":["verify"]}"#,
        )
        .unwrap();
        assert_eq!(jwk.kty(), KeyType::Ec);
        assert_eq!(jwk.kid(), Some("k1"));
        assert_eq!(jwk.key_use(), Some("sig"));
        let back = serde_json::to_string(&jwk).unwrap();
        assert_eq!(
            back,
            r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA","kid":"k1","alg":"ES256","use":"sig"}"#
        );
    }

    #[test]
    fn thumbprint_ignores_optional_members_and_uses_sorted_required_ones() {
        let jwk = Jwk::ec("P-256", &[1; 32], &[2; 32]);
        assert_eq!(
            jwk.thumbprint_input(),
            format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64::encode(&[1; 32]),
                b64::encode(&[2; 32])
            )
        );
        let decorated = jwk.clone().with_kid("x").with_alg("ES256").with_use("sig");
        assert_eq!(thumbprint(&jwk), thumbprint(&decorated));
        assert_eq!(thumbprint(&jwk).len(), 43);
    }

    #[test]
    fn rsa_constructor_drops_leading_zeros() {
        let jwk = Jwk::rsa(&[0, 0, 1, 2], &[0, 1, 0, 1]);
        assert_eq!(jwk.n(), Some(b64::encode(&[1, 2]).as_str()));
        assert_eq!(jwk.e(), Some("AQAB"));
    }

    #[test]
    fn json_string_escapes_only_what_json_requires() {
        assert_eq!(json_string("a\"b\\c\u{1}é"), "\"a\\\"b\\\\c\\u0001é\"");
    }
}
