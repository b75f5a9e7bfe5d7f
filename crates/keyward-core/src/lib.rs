//! keyward core: everything that needs no IO, no async and no HTTP.
//!
//! - [`key`]: the API key format (generate, parse, checksum);
//! - [`secret`]: the server pepper, keyed digests and constant-time comparison;
//! - [`model`]: apps, keys and their policy;
//! - [`decision`]: `authorize(record, request facts, now) -> Decision`;
//! - [`audit`]: the audit log's hash chain and its signed checkpoints.
#![forbid(unsafe_code)]

pub mod audit;
pub mod base62;
pub mod decision;
pub mod error;
pub mod key;
pub mod model;
pub mod policy;
pub mod secret;
pub mod when;

pub use decision::{authorize, authorize_client, check_key_use, Decision, Denial, KeyUse, RequestFacts};
pub use error::CoreError;
pub use key::{KeyEnv, KeyFormat, KeyKind, ParsedKey};
pub use model::{AppRecord, KeyRecord, Scope};
pub use secret::{Digest, Pepper};
