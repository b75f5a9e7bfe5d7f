//! The gateway listener's service. Every request gets its request id and span
//! ([`crate::ops::with_request_id`]); a request for one of the few endpoints the gateway
//! listener serves itself (the OAuth endpoints when the token service is on, the leak-report
//! endpoint) goes to their axum router; every other request goes straight to the proxy
//! pipeline ([`super::handle_request`]), without an axum router or middleware stack in front
//! of a route table that the gateway matches itself (issue 19: each layer boxed and moved the
//! request's future once more).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;

use super::GatewayState;
use crate::problem::Problem;

/// See the module documentation. Cloned per connection (one `Arc`).
#[derive(Clone)]
pub struct GatewayService(Arc<Inner>);

struct Inner {
    state: Arc<GatewayState>,
    /// The endpoints, with the proxy as their fallback.
    endpoints: Router,
    /// Their exact paths.
    exact: Vec<String>,
    /// Paths under this prefix (followed by `/`) are endpoints too (RFC 9728's per-resource
    /// metadata documents).
    under: Option<&'static str>,
}

impl GatewayService {
    /// The service for `state`, with the leak-report endpoint (`path`, router) when configured.
    pub fn new(state: Arc<GatewayState>, leaks: Option<(String, Router)>) -> GatewayService {
        let oauth = state.engine().token_service().is_ok();
        let mut exact = Vec::new();
        let mut endpoints = super::proxy_router(state.clone());
        if oauth {
            exact.extend(crate::oauth::ENDPOINT_PATHS.iter().map(|p| (*p).to_owned()));
            exact.push(format!("{}/", crate::oauth::RESOURCE_METADATA_PATH));
            endpoints = crate::oauth::routes(state.clone()).merge(endpoints);
        }
        if let Some((path, router)) = leaks {
            exact.push(path);
            endpoints = router.merge(endpoints);
        }
        GatewayService(Arc::new(Inner {
            state,
            endpoints,
            exact,
            under: oauth.then_some(crate::oauth::RESOURCE_METADATA_PATH),
        }))
    }

    /// As an axum router (what the listeners serve).
    pub fn into_router(self) -> Router {
        Router::new().fallback_service(self)
    }

    fn is_endpoint(&self, path: &str) -> bool {
        self.0.exact.iter().any(|p| p == path)
            || self
                .0
                .under
                .and_then(|u| path.strip_prefix(u))
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
    }
}

impl tower::Service<Request<Body>> for GatewayService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let resp = crate::ops::with_request_id(req, |req| async move {
                if this.is_endpoint(req.uri().path()) {
                    return match this.0.endpoints.clone().oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                }
                let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
                    return Problem::internal().into_response();
                };
                super::handle_request(&this.0.state, peer, req).await
            })
            .await;
            Ok(resp)
        })
    }
}
