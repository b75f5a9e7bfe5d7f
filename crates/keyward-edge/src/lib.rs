//! keyward HTTP edge: the gateway (reverse proxy), the admin API, and [`problem`], the one
//! place where errors of the layers below become HTTP statuses and RFC 9457 problem documents.
#![forbid(unsafe_code)]

pub mod admin;
pub mod gateway;
pub mod problem;

pub use admin::{admin_router, AdminState, AdminToken};
pub use gateway::{gateway_router, GatewayConfig, GatewayState, Route};
