//! The key format: `<prefix>_<env>_<random><checksum>` for secret keys and
//! `<prefix>_pk_<env>_<random><checksum>` for publishable keys.
//!
//! - `prefix`: configurable, 1–16 lowercase ASCII letters or digits (default `kw`);
//! - `pk`: marks a publishable key, safe to embed in a web page (origin-bound, public-safe
//!   routes only); the checksum covers it, so a secret key cannot be turned into one;
//! - `env`: `live` or `test`;
//! - `random`: 43 base62 symbols drawn uniformly (43 × log2 62 = 256.03 bits of entropy);
//! - `checksum`: CRC32 (IEEE) of everything before it, base62, fixed width 6.
//!
//! A key is 8 + len(prefix) + 49 characters long, e.g. `kw_live_` + 49 for the default prefix.
//! [`KeyFormat::parse`] rejects wrong length, prefix, environment, alphabet and checksum
//! before anyone looks the key up, so malformed input never reaches the store.

use crate::base62;
use crate::error::{CoreError, KeyFormatError};
use crate::secret::SecretString;

/// Number of base62 symbols of the random part.
pub const RANDOM_LEN: usize = 43;
/// Number of base62 symbols of the checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Length of the environment part (`live` and `test` have the same length).
const ENV_LEN: usize = 4;

/// The environment a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyEnv {
    Live,
    Test,
}

impl KeyEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyEnv::Live => "live",
            KeyEnv::Test => "test",
        }
    }
}

impl std::str::FromStr for KeyEnv {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s {
            "live" => Ok(KeyEnv::Live),
            "test" => Ok(KeyEnv::Test),
            _ => Err(CoreError::KeyFormat(KeyFormatError::Env)),
        }
    }
}

/// Secret keys stay on servers; publishable keys may sit in client code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    #[default]
    Secret,
    Publishable,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Publishable => "publishable",
        }
    }

    /// The kind of a stored key, from its display hint (`kw_pk_live_…` is publishable). The
    /// prefix holds no `_`, so the second `_`-separated part is the kind marker or the env.
    pub fn of_hint(hint: &str) -> KeyKind {
        if hint.split('_').nth(1) == Some(PK) {
            KeyKind::Publishable
        } else {
            KeyKind::Secret
        }
    }
}

/// The marker of publishable keys.
const PK: &str = "pk";

/// What the parser learned from a well-formed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey {
    pub env: KeyEnv,
    pub kind: KeyKind,
}

/// The key format of one deployment (its prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: String,
}

impl Default for KeyFormat {
    fn default() -> Self {
        KeyFormat {
            prefix: "kw".to_owned(),
        }
    }
}

impl KeyFormat {
    /// A key format with the given prefix (1–16 lowercase ASCII letters or digits).
    pub fn new(prefix: &str) -> Result<Self, CoreError> {
        let ok =
            (1..=16).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(CoreError::InvalidPrefix(prefix.chars().take(32).collect()));
        }
        Ok(KeyFormat {
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Length of every secret key of this format.
    pub fn key_len(&self) -> usize {
        self.prefix.len() + 1 + ENV_LEN + 1 + RANDOM_LEN + CHECKSUM_LEN
    }

    /// Length of every key of `kind`.
    pub fn key_len_of(&self, kind: KeyKind) -> usize {
        match kind {
            KeyKind::Secret => self.key_len(),
            KeyKind::Publishable => self.key_len() + PK.len() + 1,
        }
    }

    /// Generates a fresh secret key from the operating system's CSPRNG.
    pub fn generate(&self, env: KeyEnv) -> Result<SecretString, CoreError> {
        self.generate_kind(KeyKind::Secret, env)
    }

    /// Generates a fresh key of `kind` from the operating system's CSPRNG.
    pub fn generate_kind(&self, kind: KeyKind, env: KeyEnv) -> Result<SecretString, CoreError> {
        let mut random = String::with_capacity(RANDOM_LEN);
        let mut buf = [0u8; 64];
        while random.len() < RANDOM_LEN {
            aws_lc_rs::rand::fill(&mut buf).map_err(|_| CoreError::Random)?;
            // Rejection sampling: 248 = 4 × 62, so `b % 62` is uniform for b < 248.
            for &b in buf.iter().filter(|&&b| b < 248) {
                if random.len() == RANDOM_LEN {
                    break;
                }
                random.push(char::from(base62::ALPHABET[usize::from(b % 62)]));
            }
        }
        Ok(self.assemble_kind(kind, env, &random))
    }

    /// Builds `<prefix>_<env>_<random><checksum>` around a given random part.
    /// Exposed so that tests and tools can build keys of a known body.
    pub fn assemble(&self, env: KeyEnv, random: &str) -> SecretString {
        self.assemble_kind(KeyKind::Secret, env, random)
    }

    /// [`KeyFormat::assemble`] for either kind (`<prefix>_pk_<env>_…` for publishable keys).
    pub fn assemble_kind(&self, kind: KeyKind, env: KeyEnv, random: &str) -> SecretString {
        let mut key = String::with_capacity(self.key_len_of(kind));
        key.push_str(&self.prefix);
        key.push('_');
        if kind == KeyKind::Publishable {
            key.push_str(PK);
            key.push('_');
        }
        key.push_str(env.as_str());
        key.push('_');
        key.push_str(random);
        let crc = crc32fast::hash(key.as_bytes());
        // A u32 always fits in 6 base62 symbols (62^6 > 2^32).
        let checksum = base62::encode_fixed(u64::from(crc), CHECKSUM_LEN).unwrap_or_default();
        key.push_str(&checksum);
        SecretString::new(key)
    }

    /// Checks a candidate key. Cheap and allocation-free; runs before any lookup.
    pub fn parse(&self, candidate: &str) -> Result<ParsedKey, KeyFormatError> {
        let bytes = candidate.as_bytes();
        let kind = if bytes.len() == self.key_len() {
            KeyKind::Secret
        } else if bytes.len() == self.key_len_of(KeyKind::Publishable) {
            KeyKind::Publishable
        } else {
            return Err(KeyFormatError::Length);
        };
        let mut p = self.prefix.len();
        if &bytes[..p] != self.prefix.as_bytes() || bytes[p] != b'_' {
            return Err(KeyFormatError::Prefix);
        }
        if kind == KeyKind::Publishable {
            if &bytes[p + 1..p + 1 + PK.len()] != PK.as_bytes() || bytes[p + 1 + PK.len()] != b'_' {
                return Err(KeyFormatError::Prefix);
            }
            p += PK.len() + 1;
        }
        let env = match &bytes[p + 1..p + 1 + ENV_LEN] {
            b"live" => KeyEnv::Live,
            b"test" => KeyEnv::Test,
            _ => return Err(KeyFormatError::Env),
        };
        if bytes[p + 1 + ENV_LEN] != b'_' {
            return Err(KeyFormatError::Env);
        }
        let body_start = p + 2 + ENV_LEN;
        let body = &bytes[body_start..];
        if !body.iter().all(|&c| base62::value(c).is_some()) {
            return Err(KeyFormatError::Alphabet);
        }
        let split = bytes.len() - CHECKSUM_LEN;
        let expected = base62::decode(&bytes[split..]).ok_or(KeyFormatError::Alphabet)?;
        let actual = u64::from(crc32fast::hash(&bytes[..split]));
        if expected != actual {
            return Err(KeyFormatError::Checksum);
        }
        Ok(ParsedKey { env, kind })
    }

    /// Whether `candidate` looks like a key of this format (length and prefix), whatever its
    /// checksum: used to decide whether an `Authorization: Bearer` value is meant as a key.
    pub fn looks_like_key(&self, candidate: &str) -> bool {
        (candidate.len() == self.key_len() || candidate.len() == self.key_len_of(KeyKind::Publishable))
            && candidate.as_bytes().starts_with(self.prefix.as_bytes())
            && candidate.as_bytes().get(self.prefix.len()) == Some(&b'_')
    }
}

/// The display hint of a key: prefix and environment, the first 4 and the last 4 symbols of
/// the secret part, e.g. `kw_live_AbCd…9xYz`. Never enough to use or guess the key.
pub fn display_hint(key: &str) -> String {
    // Find the body after `<prefix>_<env>_`; fall back to the last 49 characters.
    let body_start = key.rmatch_indices('_').next().map(|(i, _)| i + 1).unwrap_or(0);
    let (head, body) = key.split_at(body_start);
    let first: String = body.chars().take(4).collect();
    let count = body.chars().count();
    let last: String = body.chars().skip(count.saturating_sub(4)).collect();
    format!("{head}{first}…{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let f = KeyFormat::default();
        let k = f.generate(KeyEnv::Live).unwrap();
        let k = k.expose();
        assert_eq!(k.len(), 57);
        assert!(k.starts_with("kw_live_"));
        assert_eq!(
            f.parse(k),
            Ok(ParsedKey {
                env: KeyEnv::Live,
                kind: KeyKind::Secret
            })
        );
        let t = f.generate(KeyEnv::Test).unwrap();
        assert_eq!(f.parse(t.expose()).unwrap().env, KeyEnv::Test);
    }

    #[test]
    fn publishable_keys_are_their_own_kind() {
        let f = KeyFormat::default();
        let pk = f.generate_kind(KeyKind::Publishable, KeyEnv::Live).unwrap();
        let pk = pk.expose();
        assert!(pk.starts_with("kw_pk_live_"), "{pk}");
        assert_eq!(pk.len(), f.key_len() + 3);
        assert_eq!(f.parse(pk).unwrap().kind, KeyKind::Publishable);
        assert!(f.looks_like_key(pk));
        assert_eq!(KeyKind::of_hint(&display_hint(pk)), KeyKind::Publishable);
        let sk = f.generate(KeyEnv::Test).unwrap();
        assert_eq!(KeyKind::of_hint(&display_hint(sk.expose())), KeyKind::Secret);
        // The checksum covers the kind: a secret key's body with `pk_` put in is refused, and
        // so is a publishable key with the marker taken out.
        let forged = sk.expose().replacen("kw_", "kw_pk_", 1);
        assert_eq!(f.parse(&forged), Err(KeyFormatError::Checksum));
        let stripped = pk.replacen("pk_", "", 1);
        assert_eq!(f.parse(&stripped), Err(KeyFormatError::Checksum));
        // Another marker of the same length is not a kind.
        let other = pk.replacen("_pk_", "_sk_", 1);
        assert_eq!(f.parse(&other), Err(KeyFormatError::Prefix));
    }

    #[test]
    fn prefix_is_validated() {
        assert!(KeyFormat::new("acme").is_ok());
        assert!(KeyFormat::new("a1").is_ok());
        for bad in ["", "Acme", "a_b", "a-b", "abcdefghijklmnopq", "é", "a b"] {
            assert!(KeyFormat::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parser_names_the_failure() {
        let f = KeyFormat::default();
        let k = f.assemble(KeyEnv::Live, &"a".repeat(RANDOM_LEN));
        let k = k.expose().to_owned();
        assert!(f.parse(&k).is_ok());
        assert_eq!(f.parse(&k[1..]), Err(KeyFormatError::Length));
        assert_eq!(f.parse(&format!("{k}x")), Err(KeyFormatError::Length));
        assert_eq!(f.parse(&k.replacen("kw_", "kx_", 1)), Err(KeyFormatError::Prefix));
        assert_eq!(f.parse(&k.replacen("live", "prod", 1)), Err(KeyFormatError::Env));
        let mut bad = k.clone().into_bytes();
        bad[20] = b'-';
        assert_eq!(f.parse(&String::from_utf8(bad).unwrap()), Err(KeyFormatError::Alphabet));
        let mut bad = k.clone().into_bytes();
        bad[20] = b'b';
        assert_eq!(f.parse(&String::from_utf8(bad).unwrap()), Err(KeyFormatError::Checksum));
        // A multi-byte character of the right byte length is refused, never sliced.
        let mut s = k[..k.len() - 2].to_owned();
        s.push('é');
        assert_eq!(s.len(), k.len());
        assert_eq!(f.parse(&s), Err(KeyFormatError::Alphabet));
    }

    #[test]
    fn hint_shows_prefix_first_four_and_last_four() {
        let f = KeyFormat::default();
        let k = f.assemble(KeyEnv::Live, &format!("ABCD{}", "x".repeat(RANDOM_LEN - 4)));
        let hint = display_hint(k.expose());
        assert!(hint.starts_with("kw_live_ABCD…"));
        assert_eq!(hint.chars().count(), "kw_live_".len() + 4 + 1 + 4);
        assert!(k.expose().ends_with(&hint[hint.len() - 4..]));
    }
}
