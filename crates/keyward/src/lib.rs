//! The keyward binary's library half: CLI, configuration, wiring, demo and the cat-facts
//! upstream. `main.rs` only parses arguments and calls [`run`].
#![forbid(unsafe_code)]

pub mod catfacts;
pub mod check_config;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod demo;
pub mod error;
pub mod report;
pub mod scan;
pub mod seed;
pub mod server;
pub mod support;
pub mod telemetry;

pub use commands::run;
