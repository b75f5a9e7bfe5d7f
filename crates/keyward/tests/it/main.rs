//! keyward's integration tests: one binary that boots the real server on free loopback ports,
//! with a real SQLite file and a real upstream HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
#[path = "../common/proc.rs"]
mod proc;

mod admin;
mod admin_api;
mod cli;
mod cluster_limits;
mod cluster_store;
mod config_agree;
mod console;
mod demo_page;
mod dpop;
mod forward_auth;
mod frontend;
mod gateway;
mod grpc;
mod hostile;
mod hostile_http;
mod independent;
mod integrations;
mod leaks;
mod lifecycle;
mod limits;
mod mtls;
mod oauth;
mod ops;
mod pipeline;
mod proxy;
mod scan;
mod store_ops;
mod tls;
mod upstreams;
mod verify;
mod webhooks;
mod websocket;
