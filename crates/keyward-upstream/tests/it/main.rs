//! Integration tests of keyward-upstream against real servers on loopback (one test binary).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod balance;
mod common;
mod proto;
mod tls;
mod tunnel;
