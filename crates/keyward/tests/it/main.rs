//! keyward's integration tests: one binary that boots the real server on free loopback ports,
//! with a real SQLite file and a real upstream HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
#[path = "../common/proc.rs"]
mod proc;

mod admin;
mod admin_api;
mod apply;
mod cli;
mod cluster_limits;
mod cluster_store;
mod config_agree;
mod console;
mod data_tls;
mod demo_page;
mod dpop;
mod ext_authz_grpc;
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
mod packaging;
mod pipeline;
mod proxy;
mod redis_ha;
mod scan;
mod store_ops;
mod tls;
mod upstreams;
mod verify;
mod webhooks;
mod websocket;
mod workers;
