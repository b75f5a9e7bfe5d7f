//! Entry points for the cargo-fuzz targets in `fuzz/` (see `docs/FUZZING.md`): thin wrappers
//! around private parsing code of the edge. Hidden from the documentation; not an API.

pub use crate::gateway::fuzz::{extract, suspicious_path, DpopHeader, KeyCredential, TokenCredential};
pub use crate::oauth::fuzz_read_form as read_form;
