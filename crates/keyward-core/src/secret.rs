//! Secrets: the server pepper, keyed digests, secret strings and constant-time comparison.

use std::fmt;

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::base62;
use crate::error::CoreError;

/// A secret string (a key shown once, a token). Its `Debug` never prints it; it is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }
    /// The secret itself. Call sites that expose it are the places to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

/// HMAC-SHA256 digest of a credential under the server pepper. This is all the store keeps.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Constant-time equality, for the final comparison after a lookup by digest.
    pub fn ct_eq(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        <[u8; 32]>::try_from(bytes).ok().map(Digest)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not secret, but there is no reason to print it either.
        write!(f, "Digest({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// The server pepper: the HMAC key under which credentials are digested.
/// Comes from `KEYWARD_PEPPER` or a 0600 file; never from the repository or the database.
#[derive(Clone)]
pub struct Pepper {
    key: hmac::Key,
}

/// Minimum pepper length in bytes.
pub const MIN_PEPPER_LEN: usize = 32;

impl Pepper {
    /// A pepper from its text form (at least 32 bytes; `keyward init` writes 64 hex digits).
    pub fn from_text(text: &str) -> Result<Self, CoreError> {
        let text = text.trim();
        if text.len() < MIN_PEPPER_LEN {
            return Err(CoreError::InvalidPepper("it must be at least 32 characters long"));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(CoreError::InvalidPepper(
                "it must not contain whitespace or control characters",
            ));
        }
        Ok(Pepper {
            key: hmac::Key::new(hmac::HMAC_SHA256, text.as_bytes()),
        })
    }

    /// A fresh random pepper in text form (64 hex digits = 256 bits).
    pub fn generate_text() -> Result<SecretString, CoreError> {
        let mut b = [0u8; 32];
        aws_lc_rs::rand::fill(&mut b).map_err(|_| CoreError::Random)?;
        let mut s = String::with_capacity(64);
        for byte in b {
            s.push_str(&format!("{byte:02x}"));
        }
        Ok(SecretString::new(s))
    }

    /// HMAC-SHA256(pepper, credential).
    pub fn digest(&self, credential: &[u8]) -> Digest {
        let tag = hmac::sign(&self.key, credential);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Digest(out)
    }

    /// A MAC of `data` for one `purpose` (e.g. the audit checkpoints): HMAC-SHA256 under a key
    /// derived from the pepper, `HMAC-SHA256(pepper, "\0keyward-subkey:" + purpose)`. The label
    /// starts with a NUL byte, which no credential can contain (header values and legacy
    /// secrets are visible ASCII), so the derived key is never the digest of a credential
    /// stored in the database; and a MAC for one purpose is never valid for another.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let mut label = b"\0keyward-subkey:".to_vec();
        label.extend_from_slice(purpose.as_bytes());
        let sub = self.digest(&label);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &sub.0), data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper([redacted])")
    }
}

/// Constant-time comparison of two byte strings (length may leak, content does not).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// `len` uniformly random base62 symbols from the OS CSPRNG (for ids and tokens).
pub fn random_base62(len: usize) -> Result<String, CoreError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        aws_lc_rs::rand::fill(&mut buf).map_err(|_| CoreError::Random)?;
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(char::from(base62::ALPHABET[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

/// A new object id: `<kind>_<16 base62 symbols>` (95 bits), e.g. `key_3fZ…`.
pub fn new_id(kind: &str) -> Result<String, CoreError> {
    Ok(format!("{kind}_{}", random_base62(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_hmac_sha256() {
        // Expected value computed independently: python3 -c "import hmac,hashlib;
        // print(hmac.new(b'0123456789abcdef0123456789abcdef', b'kw_live_example', hashlib.sha256).hexdigest())"
        let p = Pepper::from_text("0123456789abcdef0123456789abcdef").unwrap();
        let d = p.digest(b"kw_live_example");
        let hex: String = d.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "f0c311c373a61d84f3ff1a2f5e160df57a87d131eeeeb9bc244274a03879d61f");
        assert_ne!(p.digest(b"a"), p.digest(b"b"));
        let q = Pepper::from_text("fedcba9876543210fedcba9876543210").unwrap();
        assert_ne!(p.digest(b"a"), q.digest(b"a"), "the pepper keys the digest");
    }

    #[test]
    fn pepper_rules() {
        assert!(Pepper::from_text("short").is_err());
        assert!(Pepper::from_text(&format!("{}\u{7}", "a".repeat(40))).is_err());
        let t = Pepper::generate_text().unwrap();
        assert_eq!(t.expose().len(), 64);
        assert!(Pepper::from_text(t.expose()).is_ok());
        assert_eq!(
            format!("{:?}", Pepper::from_text(t.expose()).unwrap()),
            "Pepper([redacted])"
        );
    }

    #[test]
    fn secret_string_debug_is_redacted() {
        let s = SecretString::new("kw_live_supersecret".into());
        assert!(!format!("{s:?}").contains("supersecret"));
    }

    #[test]
    fn ids_are_random_and_well_formed() {
        let a = new_id("key").unwrap();
        let b = new_id("key").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 16);
        assert!(a[4..].bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
