//! RFC 9068 JWT access tokens, and a general compact-JWS verifier (for DPoP proofs, RFC 9449, and client
//! assertions, RFC 7523).
//!
//! Verification never lets the token choose its algorithm: the header's `kid` selects a [`VerifyKey`]
//! whose algorithm is fixed, and the header's `alg` must equal it (and be allowed). `none` and every `HS*`
//! are unknown names here, so they are refused before any key is looked at.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::b64;
use crate::jwk::Jwk;
use crate::signing::{Algorithm, KeyError, SigningKey, VerifyKey};

/// The largest compact JWS accepted, in bytes. Larger inputs are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The `typ` of RFC 9068 access tokens.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Why a token was refused. [`TokenError::code`] is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS: size, segments, base64url, JSON, missing or ill-typed claims, `crit`.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is unknown (`none`, `HS*`, ...), not allowed, or not the algorithm of the selected key.
    #[error("the token's algorithm is not accepted")]
    UnsupportedAlg,
    /// No `kid`, or no key under it.
    #[error("the token's key is unknown")]
    UnknownKid,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `typ` is not `at+jwt`.
    #[error("the token is not an access token")]
    WrongType,
    /// `iss` is not the expected issuer.
    #[error("the token was issued by someone else")]
    WrongIssuer,
    /// `aud` does not contain the expected audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// `exp` has passed (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` lies in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The token was revoked (RFC 7009) before it expired. Never returned by [`verify`]: the
    /// denylist is the token service's.
    #[error("the token has been revoked")]
    Revoked,
}

impl TokenError {
    /// A stable machine-readable code.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedAlg => "unsupported_alg",
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::WrongType => "wrong_type",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
        }
    }
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is (one of) the audience(s).
    #[must_use]
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

impl From<&str> for Audience {
    fn from(value: &str) -> Self {
        Self::One(value.to_owned())
    }
}

/// `cnf` (RFC 7800): the key the token is bound to, by DPoP key thumbprint (RFC 9449 §6) or by mTLS
/// certificate thumbprint (RFC 8705 §3.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the DPoP public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// base64url SHA-256 of the client certificate (DER).
    #[serde(default, rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl Confirmation {
    /// Bound to a DPoP key.
    #[must_use]
    pub fn jkt(thumbprint: impl Into<String>) -> Self {
        Self {
            jkt: Some(thumbprint.into()),
            x5t_s256: None,
        }
    }

    /// Bound to a client certificate.
    #[must_use]
    pub fn x5t_s256(thumbprint: impl Into<String>) -> Self {
        Self {
            jkt: None,
            x5t_s256: Some(thumbprint.into()),
        }
    }
}

/// The claims of an RFC 9068 access token. Times are Unix seconds. Other claims in a verified token are
/// ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the resource owner, or the client itself for client credentials.
    pub sub: String,
    /// Audience: the resource server(s).
    pub aud: Audience,
    /// The OAuth client the token was issued to.
    pub client_id: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id.
    pub jti: String,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Confirmation (sender constraint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

impl AccessClaims {
    /// The scopes, split on spaces.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
    }
}

/// What a verified access token must satisfy.
#[derive(Clone, Copy, Debug)]
pub struct Expectations<'a> {
    /// The exact issuer.
    pub iss: &'a str,
    /// An audience that `aud` must contain.
    pub aud: &'a str,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// The current time, Unix seconds.
    pub now: i64,
    /// The algorithms accepted at all (each key additionally fixes its own).
    pub allowed_algs: &'a [Algorithm],
}

#[derive(Serialize)]
struct MintHeader<'a> {
    typ: &'a str,
    alg: &'a str,
    kid: &'a str,
}

/// Signs `claims` as an RFC 9068 access token: header `{"typ":"at+jwt","alg":...,"kid":...}`.
///
/// # Errors
/// [`KeyError::Crypto`] if signing fails.
pub fn mint(key: &SigningKey, claims: &AccessClaims) -> Result<String, KeyError> {
    let header = MintHeader {
        typ: ACCESS_TOKEN_TYP,
        alg: key.alg().as_str(),
        kid: key.kid(),
    };
    let header = serde_json::to_vec(&header).map_err(|_| KeyError::Crypto)?;
    let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Crypto)?;
    let mut token = b64::encode(&header);
    token.push('.');
    token.push_str(&b64::encode(&payload));
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&b64::encode(&signature));
    Ok(token)
}

/// The protected header members this crate looks at. Duplicated members are refused by the parser.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    /// Extensions that must be understood (RFC 7515 §4.1.11): none are, so any `crit` refuses the token.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
    /// RFC 7797 unencoded payloads are not supported.
    #[serde(default)]
    b64: Option<serde::de::IgnoredAny>,
}

/// A compact JWS split and decoded, not yet verified.
struct Parts<'t> {
    signing_input: &'t str,
    header: Header,
    header_json: Value,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// A compact JWS cut into its parts (base64url text), its structure checked.
struct Compact<'t> {
    signing_input: &'t str,
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
}

impl<'t> Compact<'t> {
    fn of(token: &'t str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
        // An empty signature is left to the algorithm checks: `alg: none` is refused as such, and an
        // empty signature under a real algorithm does not verify.
        if payload.contains('.') || header.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(Compact {
            signing_input,
            header,
            payload,
            signature,
        })
    }

    /// The payload and the signature, decoded.
    fn decode_body(&self) -> Result<(Vec<u8>, Vec<u8>), TokenError> {
        let payload = b64::decode(self.payload).ok_or(TokenError::Malformed)?;
        // Decoded explicitly so that the outcome never depends on how a base64 engine treats "".
        let signature = if self.signature.is_empty() {
            Vec::new()
        } else {
            b64::decode(self.signature).ok_or(TokenError::Malformed)?
        };
        Ok((payload, signature))
    }
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    let compact = Compact::of(token)?;
    let header = compact.header;
    let header_bytes = b64::decode(header).ok_or(TokenError::Malformed)?;
    let header_json: Value = serde_json::from_slice(&header_bytes).map_err(|_| TokenError::Malformed)?;
    if !header_json.is_object() {
        return Err(TokenError::Malformed);
    }
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| TokenError::Malformed)?;
    if header.crit.is_some() || header.b64.is_some() {
        return Err(TokenError::Malformed);
    }
    let (payload, signature) = compact.decode_body()?;
    Ok(Parts {
        signing_input: compact.signing_input,
        header,
        header_json,
        payload,
        signature,
    })
}

/// The header's algorithm, if it is known and allowed. `none`, `HS*` and every other name are refused.
fn header_alg(header: &Header, allowed: &[Algorithm]) -> Result<Algorithm, TokenError> {
    Algorithm::from_name(&header.alg)
        .filter(|alg| allowed.contains(alg))
        .ok_or(TokenError::UnsupportedAlg)
}

fn is_access_token_typ(typ: Option<&str>) -> bool {
    typ.is_some_and(|typ| typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || typ.eq_ignore_ascii_case("application/at+jwt"))
}

/// Verifies an RFC 9068 access token and returns its claims.
///
/// In order: size and structure (`malformed`); `alg` known, allowed (`unsupported_alg`); `typ` is
/// `at+jwt` or `application/at+jwt`, case-insensitively (`wrong_type`); `kid` present and known to `keys`
/// (`unknown_kid`); `alg` equal to that key's algorithm (`unsupported_alg`); signature (`bad_signature`);
/// claims present and well-typed (`malformed`); `iss` (`wrong_issuer`); `aud` (`wrong_audience`); `exp`
/// (`expired`: refused once `now >= exp + leeway`); `nbf` and `iat` (`not_yet_valid`: refused when later
/// than `now + leeway`).
///
/// # Errors
/// The first failed check, as above.
pub fn verify(
    token: &str,
    keys: &impl Fn(&str) -> Option<VerifyKey>,
    expected: &Expectations<'_>,
) -> Result<AccessClaims, TokenError> {
    let parts = split(token)?;
    let alg = header_alg(&parts.header, expected.allowed_algs)?;
    if !is_access_token_typ(parts.header.typ.as_deref()) {
        return Err(TokenError::WrongType);
    }
    let kid = parts.header.kid.as_deref().ok_or(TokenError::UnknownKid)?;
    let key = keys(kid).ok_or(TokenError::UnknownKid)?;
    if key.alg() != alg {
        return Err(TokenError::UnsupportedAlg);
    }
    if !key.verify(parts.signing_input.as_bytes(), &parts.signature) {
        return Err(TokenError::BadSignature);
    }
    let claims: AccessClaims = serde_json::from_slice(&parts.payload).map_err(|_| TokenError::Malformed)?;
    check_claims(&claims, expected)?;
    Ok(claims)
}

fn check_claims(claims: &AccessClaims, expected: &Expectations<'_>) -> Result<(), TokenError> {
    if claims.iss != expected.iss {
        return Err(TokenError::WrongIssuer);
    }
    if !claims.aud.contains(expected.aud) {
        return Err(TokenError::WrongAudience);
    }
    let leeway = i64::try_from(expected.leeway_secs).unwrap_or(i64::MAX);
    if expected.now >= claims.exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    let latest = expected.now.saturating_add(leeway);
    if claims.nbf.is_some_and(|nbf| nbf > latest) || claims.iat > latest {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Verifies a compact JWS against one public `jwk`, for the algorithms in `allowed` (any of ES256, EdDSA,
/// RS256, PS256) that fit the key, and returns the protected header and the payload bytes.
///
/// The header's `alg` must be allowed and fit the JWK's type and curve (and equal the JWK's `alg` if it
/// has one); `kid`, `typ` and every other header member are left to the caller, who gets the header back.
///
/// # Errors
/// `malformed`, `unsupported_alg` (including a key that does not fit the algorithm) or `bad_signature`.
pub fn verify_jws_payload(token: &str, jwk: &Jwk, allowed: &[Algorithm]) -> Result<(Value, Vec<u8>), TokenError> {
    verify_with_jwk(token, jwk, allowed).map(|(parts, _)| (parts.header_json, parts.payload))
}

/// As [`verify_jws_payload`], returning instead of the header the key the signature verified
/// under, made ready for the next tokens under the same header ([`verify_jws_prepared`]).
///
/// # Errors
/// As [`verify_jws_payload`].
pub fn verify_jws_and_prepare(
    token: &str,
    jwk: &Jwk,
    allowed: &[Algorithm],
) -> Result<(crate::PreparedKey, Vec<u8>), TokenError> {
    verify_with_jwk(token, jwk, allowed).map(|(parts, key)| (key.prepare(), parts.payload))
}

fn verify_with_jwk<'t>(token: &'t str, jwk: &Jwk, allowed: &[Algorithm]) -> Result<(Parts<'t>, VerifyKey), TokenError> {
    let parts = split(token)?;
    let alg = header_alg(&parts.header, allowed)?;
    let key = VerifyKey::from_jwk(jwk, alg).map_err(|_| TokenError::UnsupportedAlg)?;
    if !key.verify(parts.signing_input.as_bytes(), &parts.signature) {
        return Err(TokenError::BadSignature);
    }
    Ok((parts, key))
}

/// Verifies a compact JWS whose protected header the caller has already checked, byte for byte,
/// with [`verify_jws_and_prepare`] (a DPoP client reuses one header, with its `jwk`, for every proof),
/// against that header's key made ready once: the payload bytes. The header is not decoded again;
/// the structure checks and their outcomes are those of [`verify_jws_payload`].
///
/// # Errors
/// `malformed` or `bad_signature`.
pub fn verify_jws_prepared(token: &str, key: &crate::PreparedKey) -> Result<Vec<u8>, TokenError> {
    let compact = Compact::of(token)?;
    let (payload, signature) = compact.decode_body()?;
    if !key.verify(compact.signing_input.as_bytes(), &signature) {
        return Err(TokenError::BadSignature);
    }
    Ok(payload)
}

/// Like [`verify_jws_payload`], for JWTs: the payload must be a JSON object (the claims).
///
/// # Errors
/// As [`verify_jws_payload`]; `malformed` if the payload is not a JSON object.
pub fn verify_jws(token: &str, jwk: &Jwk, allowed: &[Algorithm]) -> Result<(Value, Value), TokenError> {
    let (header, payload) = verify_jws_payload(token, jwk, allowed)?;
    let claims: Value = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if !claims.is_object() {
        return Err(TokenError::Malformed);
    }
    Ok((header, claims))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn codes_are_stable() {
        let all = [
            (TokenError::Malformed, "malformed"),
            (TokenError::UnsupportedAlg, "unsupported_alg"),
            (TokenError::UnknownKid, "unknown_kid"),
            (TokenError::BadSignature, "bad_signature"),
            (TokenError::WrongType, "wrong_type"),
            (TokenError::WrongIssuer, "wrong_issuer"),
            (TokenError::WrongAudience, "wrong_audience"),
            (TokenError::Expired, "expired"),
            (TokenError::NotYetValid, "not_yet_valid"),
        ];
        for (err, code) in all {
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn typ_accepts_the_rfc_9068_forms_only() {
        for typ in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"] {
            assert!(is_access_token_typ(Some(typ)), "{typ}");
        }
        for typ in ["JWT", "jwt", "dpop+jwt", "at+jwt ", "application/jwt", ""] {
            assert!(!is_access_token_typ(Some(typ)), "{typ}");
        }
        assert!(!is_access_token_typ(None));
    }

    #[test]
    fn audience_serde_takes_string_or_array() {
        let one: Audience = serde_json::from_str(r#""api""#).unwrap();
        let many: Audience = serde_json::from_str(r#"["a","api"]"#).unwrap();
        assert!(one.contains("api") && many.contains("api") && !many.contains("b"));
        assert!(serde_json::from_str::<Audience>("1").is_err());
    }

    #[test]
    fn cnf_serializes_with_rfc_member_names() {
        assert_eq!(
            serde_json::to_string(&Confirmation::jkt("t")).unwrap(),
            r#"{"jkt":"t"}"#
        );
        assert_eq!(
            serde_json::to_string(&Confirmation::x5t_s256("t")).unwrap(),
            r##"{"x5t#S256":"t"}"##
        );
    }
}
