//! The core layer's error enum. Every variant has a stable code (`CoreError::code`)
//! that the edge maps to HTTP in one place.

use thiserror::Error;

/// Why a string is not a well-formed keyward key. The parser decides this before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyFormatError {
    #[error("the key has the wrong length")]
    Length,
    #[error("the key does not start with the expected prefix")]
    Prefix,
    #[error("the key's environment is neither `live` nor `test`")]
    Env,
    #[error("the key contains characters outside the base62 alphabet")]
    Alphabet,
    #[error("the key's checksum does not match")]
    Checksum,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    #[error("malformed key: {0}")]
    KeyFormat(#[from] KeyFormatError),
    #[error("invalid key prefix {0:?}: use 1 to 16 lowercase ASCII letters or digits")]
    InvalidPrefix(String),
    #[error(
        "invalid scope {0:?}: a scope is 1 to 128 printable ASCII characters without spaces, quotes or backslashes"
    )]
    InvalidScope(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("invalid pepper: {0}")]
    InvalidPepper(&'static str),
    #[error("invalid duration or time {0:?}: {1}")]
    InvalidTime(String, &'static str),
    #[error("{0}")]
    InvalidPolicy(String),
    #[error("the system random generator failed")]
    Random,
}

impl CoreError {
    /// Stable, machine-readable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::KeyFormat(_) => "malformed_key",
            CoreError::InvalidPrefix(_) => "invalid_prefix",
            CoreError::InvalidScope(_) => "invalid_scope",
            CoreError::InvalidName(_) => "invalid_name",
            CoreError::InvalidPepper(_) => "invalid_pepper",
            CoreError::InvalidTime(..) => "invalid_time",
            CoreError::InvalidPolicy(_) => "invalid_policy",
            CoreError::Random => "random_failure",
        }
    }
}
