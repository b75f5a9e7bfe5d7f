//! The keyward binary's library half: CLI, configuration, wiring, demo and the cat-facts
//! upstream. `main.rs` only parses arguments and calls [`run`].
#![forbid(unsafe_code)]

pub mod apply;
pub mod catfacts;
pub mod check_config;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod demo;
pub mod error;
pub mod packaging;
pub mod report;
pub mod scan;
pub mod seed;
pub mod server;
pub mod span_json;
pub mod support;
pub mod telemetry;

pub use commands::run;

/// Log target of the line naming the listening addresses (`keyward: gateway on http://…`),
/// logged whatever the level so that scripts and operators always find it.
pub const LISTENING: &str = "keyward::listening";
/// Log target of the error that stops a server, logged whatever the level.
pub const EXIT: &str = "keyward::exit";

/// The line naming `serve`'s listening addresses: a log event (JSON with JSON logs, the
/// addresses also as `gateway` and `admin` fields), shown whatever the level.
pub fn log_listening(gateway: std::net::SocketAddr, admin: std::net::SocketAddr) {
    tracing::info!(
        target: LISTENING,
        gateway = %gateway,
        admin = %admin,
        "keyward: gateway on http://{gateway}, admin API on http://{admin}"
    );
}
