//! keyward token: the OAuth 2.0 authorization-server pieces that need no IO.
//!
//! - [`jwk`]: public JSON Web Keys (private members refused) and RFC 7638 thumbprints;
//! - [`signing`]: signing keys (Ed25519, ECDSA P-256, RSA) generated and held by aws-lc-rs, and
//!   [`VerifyKey`]s whose algorithm is fixed by the key, never by a token;
//! - [`kek`]: the key-encryption key (AES-256-GCM) that seals signing keys at rest;
//! - [`jwt`]: RFC 9068 access tokens (mint, verify) and a general compact-JWS verifier;
//! - [`jwks`]: the JWK Set document served at the JWKS endpoint;
//! - [`cert`]: client certificates (RFC 8705): thumbprint, subject DN, SANs, public key.
//!
//! All cryptography comes from aws-lc-rs, the one crypto provider of the workspace.
#![forbid(unsafe_code)]

mod b64;
pub mod cert;
pub mod jwk;
pub mod jwks;
pub mod jwt;
pub mod kek;
pub mod signing;

pub use cert::{cert_thumbprint, CertError, ClientCert, DistinguishedName};
pub use jwk::{thumbprint, Jwk, JwkError, KeyType};
pub use jwks::JwkSet;
pub use jwt::{
    mint, verify, verify_jws, verify_jws_and_prepare, verify_jws_payload, verify_jws_prepared, AccessClaims, Audience,
    Confirmation, Expectations, TokenError, MAX_TOKEN_LEN,
};
pub use kek::{Kek, KekError};
pub use signing::{Algorithm, KeyError, PreparedKey, RsaBits, SigningKey, VerifyKey};
