//! keyward HTTP edge: the gateway (reverse proxy), the admin API, and [`problem`], the one
//! place where errors of the layers below become HTTP statuses and RFC 9457 problem documents.
#![forbid(unsafe_code)]
// The gateway service's request future nests the whole pipeline's (routing, decision, proxy);
// computing its layout goes deeper than the default limit.
#![recursion_limit = "256"]
// `Problem` is the error half of most handlers here; it is built once per failed request.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod body;
pub mod context;
pub mod cors;
pub mod ext_authz;
pub mod gateway;
pub mod leaks;
pub mod metrics;
pub mod oauth;
pub mod oauth_form;
pub mod ops;
pub mod problem;
pub mod route;
pub mod serve;
pub mod strict;
pub mod tls;
pub mod tunnel;
pub mod verify;

pub use admin::{admin_router, AdminState, AdminToken};
pub use gateway::{GatewayConfig, GatewayState, Route};

/// The gateway listener's router: the OAuth endpoints (when the token service is on) and the
/// leak-report endpoint (`(path, router)`, when configured) beside the proxy, whose every
/// request goes through the pipeline; request ids on every request
/// ([`gateway::GatewayService`]).
pub fn gateway_router(state: std::sync::Arc<GatewayState>, leaks: Option<(String, axum::Router)>) -> axum::Router {
    gateway::GatewayService::new(state, leaks).into_router()
}

#[doc(hidden)]
pub mod fuzz_api;
