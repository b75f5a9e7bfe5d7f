//! The key-encryption key: AES-256-GCM (aws-lc-rs) over signing keys at rest.
//!
//! A sealed blob is `nonce (12 random bytes) || ciphertext || tag (16 bytes)`. The associated data is the
//! key's `kid`, so a blob copied onto another key's row does not open.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::signing::{Algorithm, SigningKey};

/// Length of a KEK in bytes.
pub const KEK_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Why a KEK could not be parsed or a blob could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// The text is neither 64 hex characters nor base64 of 32 bytes.
    #[error("a KEK is 32 bytes: 64 hex characters or base64")]
    BadEncoding,
    /// The blob does not open under this key and associated data (tampered, truncated, other key, other
    /// kid).
    #[error("the sealed blob does not open under this key and kid")]
    Open,
    /// A failure inside the crypto library.
    #[error("cryptographic operation failed")]
    Crypto,
}

/// A 256-bit key-encryption key. `Debug` is redacted.
pub struct Kek {
    key: LessSafeKey,
}

impl Kek {
    /// A fresh random KEK and its 64-hex-character form (to store as a secret).
    ///
    /// # Errors
    /// [`KekError::Crypto`] if the random generator fails.
    pub fn generate() -> Result<(Self, Zeroizing<String>), KekError> {
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        SystemRandom::new().fill(bytes.as_mut()).map_err(|_| KekError::Crypto)?;
        let hex = Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        Ok((Self::from_bytes(bytes.as_ref())?, hex))
    }

    /// A KEK from its 32 raw bytes.
    ///
    /// # Errors
    /// [`KekError::BadEncoding`] unless `bytes` has 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KekError> {
        if bytes.len() != KEK_LEN {
            return Err(KekError::BadEncoding);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KekError::BadEncoding)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Parses 64 hex characters, or base64 (standard or URL-safe alphabet, padded or not) of 32 bytes.
    /// Surrounding whitespace (a trailing newline in a secret file) is ignored.
    ///
    /// # Errors
    /// [`KekError::BadEncoding`] for anything else.
    pub fn parse(text: &str) -> Result<Self, KekError> {
        let text = text.trim();
        let bytes = if text.len() == 2 * KEK_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Zeroizing::new(decode_hex(text).ok_or(KekError::BadEncoding)?)
        } else {
            Zeroizing::new(
                [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                    .iter()
                    .find_map(|engine| engine.decode(text).ok())
                    .ok_or(KekError::BadEncoding)?,
            )
        };
        Self::from_bytes(&bytes)
    }

    /// Encrypts `plaintext` with a fresh random 96-bit nonce; `aad` (the kid) is authenticated, not
    /// encrypted. Returns `nonce || ciphertext || tag`.
    ///
    /// # Errors
    /// [`KekError::Crypto`] if the random generator or the cipher fails.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| KekError::Crypto)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(NONCE_LEN);
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .map_err(|_| KekError::Crypto)?;
        out.append(&mut body);
        Ok(out)
    }

    /// Decrypts a blob made by [`Kek::seal`] with the same `aad`.
    ///
    /// # Errors
    /// [`KekError::Open`] if the blob is truncated, was modified, or was sealed under another key or aad.
    pub fn open(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KekError> {
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(KekError::Open);
        }
        let (nonce, body) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KekError::Open)?;
        let mut buffer = Zeroizing::new(body.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), buffer.as_mut_slice())
            .map_err(|_| KekError::Open)?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }

    /// Seals a signing key's PKCS#8 DER with its `kid` as associated data.
    ///
    /// # Errors
    /// [`KekError::Crypto`] if the key cannot be exported or sealed.
    pub fn seal_signing_key(&self, key: &SigningKey) -> Result<Vec<u8>, KekError> {
        let der = key.to_pkcs8_der().map_err(|_| KekError::Crypto)?;
        self.seal(&der, key.kid().as_bytes())
    }

    /// Opens a blob made by [`Kek::seal_signing_key`] for the key stored under `kid`.
    ///
    /// # Errors
    /// [`KekError::Open`] if the blob does not open under this key and `kid`, or does not hold a key of
    /// `alg`.
    pub fn open_signing_key(&self, alg: Algorithm, kid: &str, blob: &[u8]) -> Result<SigningKey, KekError> {
        let der = self.open(blob, kid.as_bytes())?;
        Ok(SigningKey::from_pkcs8_der(alg, &der)
            .map_err(|_| KekError::Open)?
            .with_kid(kid))
    }
}

impl FromStr for Kek {
    type Err = KekError;

    fn from_str(s: &str) -> Result<Self, KekError> {
        Self::parse(s)
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(*pair.first()?)? << 4 | digit(*pair.get(1)?)?))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_hex_and_every_base64_form_to_the_same_key() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let from_hex = Kek::parse(HEX).unwrap();
        let blob = from_hex.seal(b"secret", b"kid").unwrap();
        for text in [
            HEX.to_uppercase(),
            format!("{HEX}\n"),
            STANDARD.encode(&bytes),
            STANDARD_NO_PAD.encode(&bytes),
            URL_SAFE_NO_PAD.encode(&bytes),
        ] {
            let kek: Kek = text.parse().unwrap();
            assert_eq!(kek.open(&blob, b"kid").unwrap().as_slice(), b"secret", "{text}");
        }
    }

    #[test]
    fn refuses_wrong_lengths_and_garbage() {
        for text in [
            "",
            "00",
            &HEX[..62],
            &format!("{HEX}00"),
            "zz",
            &STANDARD.encode([0u8; 31]),
            &"g".repeat(64),
        ] {
            assert_eq!(Kek::parse(text).unwrap_err(), KekError::BadEncoding, "{text}");
        }
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let (kek, hex) = Kek::generate().unwrap();
        assert_eq!(hex.len(), 64);
        let a = kek.seal(b"pkcs8 bytes", b"kid-1").unwrap();
        let b = kek.seal(b"pkcs8 bytes", b"kid-1").unwrap();
        assert_ne!(a, b, "a fresh nonce each time");
        assert_eq!(a.len(), NONCE_LEN + 11 + TAG_LEN);
        assert_eq!(kek.open(&a, b"kid-1").unwrap().as_slice(), b"pkcs8 bytes");
        assert_eq!(kek.open(&kek.seal(b"", b"").unwrap(), b"").unwrap().as_slice(), b"");
    }

    #[test]
    fn tampering_wrong_aad_and_wrong_key_are_refused() {
        let kek = Kek::parse(HEX).unwrap();
        let blob = kek.seal(b"pkcs8 bytes", b"kid-1").unwrap();
        for i in 0..blob.len() {
            let mut tampered = blob.clone();
            if let Some(byte) = tampered.get_mut(i) {
                *byte ^= 0x01;
            }
            assert_eq!(kek.open(&tampered, b"kid-1").unwrap_err(), KekError::Open, "byte {i}");
        }
        assert_eq!(kek.open(&blob, b"kid-2").unwrap_err(), KekError::Open);
        assert_eq!(kek.open(&blob[..blob.len() - 1], b"kid-1").unwrap_err(), KekError::Open);
        assert_eq!(kek.open(&blob[..10], b"kid-1").unwrap_err(), KekError::Open);
        let (other, _) = Kek::generate().unwrap();
        assert_eq!(other.open(&blob, b"kid-1").unwrap_err(), KekError::Open);
    }

    #[test]
    fn signing_keys_are_bound_to_their_kid() {
        let kek = Kek::parse(HEX).unwrap();
        let key = SigningKey::generate(Algorithm::EdDSA, None).unwrap();
        let blob = kek.seal_signing_key(&key).unwrap();
        let back = kek.open_signing_key(Algorithm::EdDSA, key.kid(), &blob).unwrap();
        assert_eq!(back.public_jwk(), key.public_jwk());
        let other = SigningKey::generate(Algorithm::EdDSA, None).unwrap();
        assert_eq!(
            kek.open_signing_key(Algorithm::EdDSA, other.kid(), &blob).unwrap_err(),
            KekError::Open
        );
    }

    #[test]
    fn debug_is_redacted() {
        let kek = Kek::parse(HEX).unwrap();
        assert_eq!(format!("{kek:?}"), "Kek(<redacted>)");
    }
}
