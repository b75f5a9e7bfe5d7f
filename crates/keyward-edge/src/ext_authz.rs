//! Envoy `ext_authz` over gRPC: the `envoy.service.auth.v3.Authorization/Check` service on
//! `verify.grpc_listen` (the types and the service are Envoy's own protos, compiled by the
//! `envoy-types` crate for tonic).
//!
//! A check is decided exactly as an HTTP forward-auth call ([`crate::verify`]): the same peer
//! fence (`verify.forward_auth_peers`, optionally the service token, here as the call's
//! `x-keyward-verify-token` metadata), the same route choice and [`gateway::decide`], so that
//! limits and usage are consumed as by a proxied request. The answer is always a
//! `CheckResponse`:
//!
//! - allowed: `OK`, an `OkHttpResponse` whose `headers` set the identity headers (overwriting
//!   whatever the client sent under those names), whose `headers_to_remove` name the credential
//!   headers, `dpop`, `authorization` when it carried the credential and every other
//!   `x-keyward-*` header the client sent, and whose `response_headers_to_add` carry the
//!   `RateLimit` fields and `Deprecation` / `Sunset` for the client;
//! - refused (also a check that does not describe a request: no HTTP attributes, no method, no
//!   path, headers beyond the listener's limits): a non-`OK` status and a `DeniedHttpResponse`
//!   with keyward's HTTP status, its problem document as the body, and its headers
//!   (`WWW-Authenticate`, `Retry-After`, `RateLimit`…), never an allow.
//!
//! Only what tonic refuses before the service runs is a gRPC error instead: a message larger
//! than [`max_message`] (`OUT_OF_RANGE`) or one that is not a `CheckRequest`
//! (`INTERNAL`). Envoy turns both into its `status_on_error` (403 by default) as long as
//! `failure_mode_allow` is false.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::Router;
use envoy_types::ext_authz::v3::pb::{
    Address, Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue as EnvoyHeader, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};
use envoy_types::pb::google::rpc;
use ipnet::IpNet;

use crate::context;
use crate::gateway::{self, RequestView};
use crate::problem::{self, Problem};
use crate::serve::HttpLimits;
use crate::verify::{self, VerifyState, SERVICE_TOKEN_HEADER};

/// The method path of the service.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Room in a check request for what is not a header (addresses, the client certificate,
/// metadata, context extensions).
const ATTRIBUTES_ALLOWANCE: usize = 64 * 1024;

/// The largest check request decoded: the listener's header bytes plus
/// [`ATTRIBUTES_ALLOWANCE`]. keyward never reads a request body, so Envoy's `with_request_body`
/// should stay off; with it, a larger message is refused (`OUT_OF_RANGE`).
pub fn max_message(limits: &HttpLimits) -> usize {
    limits.max_header_bytes.saturating_add(ATTRIBUTES_ALLOWANCE)
}

/// The header limits applied to the original request a check describes (the HTTP listeners'
/// own: `gateway.max_headers`, `gateway.max_header_bytes`).
#[derive(Debug, Clone, Copy)]
struct HeaderLimits {
    count: usize,
    bytes: usize,
}

struct ExtAuthz {
    state: Arc<VerifyState>,
    limits: HeaderLimits,
}

/// The router of the `verify.grpc_listen` listener: the Authorization service (any other
/// method is `UNIMPLEMENTED`), its request body under the listener's body read deadline.
pub fn grpc_listener(state: Arc<VerifyState>, limits: &HttpLimits) -> Router {
    let svc = AuthorizationServer::new(ExtAuthz {
        state,
        limits: HeaderLimits {
            count: limits.max_headers,
            bytes: limits.max_header_bytes,
        },
    })
    .max_decoding_message_size(max_message(limits))
    .max_encoding_message_size(max_message(limits));
    Router::new()
        .fallback_service(svc)
        .layer(axum::middleware::from_fn(crate::body::deadline))
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let st = &self.state;
        let token_ok = match &st.token {
            Some(t) => request
                .metadata()
                .get(SERVICE_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| t.matches(p.trim())),
            None => false,
        };
        let answer = match peer {
            Some(peer) if context::trusted(peer, &st.forward.peers) => {
                if st.forward.require_token && !token_ok {
                    denied(problem::verify_unauthorized(
                        "ext_authz needs the service token in the call's x-keyward-verify-token metadata \
                         (grpc_service.initial_metadata)",
                    ))
                } else {
                    match self.decide(peer, request.into_inner()).await {
                        Ok(a) | Err(a) => a,
                    }
                }
            }
            _ => {
                tracing::debug!(peer = ?peer, "ext_authz check from a peer that is not allowed");
                denied(problem::forward_auth_forbidden())
            }
        };
        Ok(tonic::Response::new(answer))
    }
}

impl ExtAuthz {
    async fn decide(&self, peer: IpAddr, req: CheckRequest) -> Result<CheckResponse, CheckResponse> {
        let st = &self.state;
        let refuse = denied;
        let attrs = req
            .attributes
            .ok_or_else(|| refuse(verify::bad("the check request has no attributes")))?;
        let http = attrs.request.as_ref().and_then(|r| r.http.as_ref()).ok_or_else(|| {
            refuse(verify::bad(
                "the check request has no HTTP request (attributes.request.http)",
            ))
        })?;
        if http.method.is_empty() {
            return Err(refuse(verify::bad("the check request has no method")));
        }
        if http.path.is_empty() {
            return Err(refuse(verify::bad("the check request has no path")));
        }
        let mut target = verify::parse_target(&http.method, &http.path).map_err(refuse)?;
        target.host = (!http.host.is_empty())
            .then(|| crate::route::request_host(&HeaderMap::new(), Some(&http.host)))
            .flatten();
        let headers = request_headers(http, self.limits).map_err(refuse)?;
        // `context_extensions` (per-route `check_settings` in Envoy's configuration, out of the
        // client's reach) play the part of the forward-auth URL's query.
        let (scopes, cost, named) = verify::options(
            &attrs.context_extensions,
            "ext_authz context_extensions take only scope, cost and route",
        )
        .map_err(refuse)?;
        let routes = st.gateway.table();
        let chosen = match st.choose(&routes.routes, &target, named.as_deref(), scopes, cost) {
            Err(p) | Ok(Err(p)) => return Err(refuse(p)),
            Ok(Ok(c)) => c,
        };
        let route = chosen.route();
        let client = client_address(peer, attrs.source.as_ref(), st.gateway.trusted_proxies());
        let view = RequestView {
            headers: &headers,
            method: &target.method,
            path: target.path(),
            client,
            peer_cert: None,
            htu: None,
        };
        let a = match gateway::decide(&st.gateway, route, &view).await {
            Ok(a) => a,
            Err(r) => {
                tracing::debug!(route = %route.name, code = r.rejection.code(), "ext_authz refused");
                return Err(refuse(st.gateway.rejection_problem(&r.rejection, r.bearer)));
            }
        };
        // Identity: set over whatever the client sent under the same names.
        let mut identity = HeaderMap::new();
        context::insert_identity(&mut identity, &a.principal, client);
        let set = identity.iter().map(|(k, v)| option(k, v)).collect();
        // The credential and every other client-sent `x-keyward-*` header never reach the
        // upstream (the gateway's header hygiene).
        let mut remove: BTreeSet<String> = st
            .gateway
            .config()
            .credential_headers
            .iter()
            .map(|h| h.as_str().to_owned())
            .collect();
        remove.insert("dpop".into());
        if a.in_authorization {
            remove.insert(header::AUTHORIZATION.as_str().to_owned());
        }
        for name in headers.keys() {
            if name.as_str().starts_with("x-keyward-") && !identity.contains_key(name) {
                remove.insert(name.as_str().to_owned());
            }
        }
        let for_client = verify::header_map(&verify::success_headers(st, &a))
            .into_iter()
            .map(|(k, v)| envoy_option(k, v))
            .collect();
        Ok(CheckResponse {
            status: Some(rpc::Status {
                code: 0,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: set,
                headers_to_remove: remove.into_iter().collect(),
                response_headers_to_add: for_client,
                ..Default::default()
            })),
            dynamic_metadata: None,
        })
    }
}

/// The original request's headers: `headers` (Envoy's default: one value per name, repeated
/// fields joined with `,`) or `header_map` (`encode_raw_headers`: every field, raw bytes), not
/// both. Pseudo-headers are left out (method, path and authority have their own fields). More
/// fields or bytes than the listeners accept: 431; a name or value that is not valid HTTP: 400.
fn request_headers(http: &HttpRequest, limits: HeaderLimits) -> Result<HeaderMap, Problem> {
    let raw = http
        .header_map
        .as_ref()
        .map(|m| m.headers.as_slice())
        .unwrap_or_default();
    if !raw.is_empty() && !http.headers.is_empty() {
        return Err(verify::bad("the check request has both headers and header_map"));
    }
    let fields: Vec<(&str, &[u8])> = if raw.is_empty() {
        http.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect()
    } else {
        raw.iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    h.raw_value.as_slice()
                };
                (h.key.as_str(), value)
            })
            .collect()
    };
    let mut out = HeaderMap::new();
    let mut bytes = 0usize;
    let mut count = 0usize;
    for (name, value) in fields {
        if name.starts_with(':') {
            continue;
        }
        count += 1;
        // As hyper counts a head: name, value and the `: ` and CRLF around them.
        bytes = bytes.saturating_add(name.len() + value.len() + 4);
        if count > limits.count {
            return Err(problem::headers_too_large(format!(
                "the request has more than {} header fields",
                limits.count
            )));
        }
        if bytes > limits.bytes {
            return Err(problem::headers_too_large(format!(
                "the request's headers are larger than {} bytes",
                limits.bytes
            )));
        }
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| verify::bad("a header name of the check request is not a valid field name"))?;
        let v = HeaderValue::from_bytes(value)
            .map_err(|_| verify::bad(format!("the value of the check request's header {n} is not valid")))?;
        out.append(n, v);
    }
    Ok(out)
}

/// The client's address: what Envoy reports as the request's source (its downstream peer, or
/// the address it resolved from `X-Forwarded-For` with `xff_num_trusted_hops`), believed only
/// when Envoy itself is in `gateway.trusted_proxies`; otherwise Envoy's own address, as for
/// HTTP forward-auth without a trusted proxy.
fn client_address(peer: IpAddr, source: Option<&Peer>, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !context::trusted(peer, trusted) {
        return peer;
    }
    let reported = source
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .and_then(|a| match a {
            Address::SocketAddress(s) => s.address.parse::<IpAddr>().ok(),
            _ => None,
        });
    reported.map(|ip| ip.to_canonical()).unwrap_or(peer)
}

/// A header Envoy sets, replacing any value of the same name.
fn envoy_option(key: String, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key,
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn option(name: &HeaderName, value: &HeaderValue) -> HeaderValueOption {
    envoy_option(
        name.as_str().to_owned(),
        String::from_utf8_lossy(value.as_bytes()).into_owned(),
    )
}

/// A refusal as Envoy returns it to the client: keyward's status, problem document and
/// headers (several values of one field joined with `, `), plus `x-keyward-code`; the check's
/// own status is the gRPC code of that HTTP status (never `OK`).
fn denied(p: Problem) -> CheckResponse {
    let body = serde_json::to_string(&p).unwrap_or_else(|_| "{}".into());
    let mut pairs = vec![
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    if let Ok(code) = HeaderValue::from_str(p.code) {
        pairs.push((HeaderName::from_static("x-keyward-code"), code));
    }
    pairs.extend(p.headers.iter().cloned());
    let headers = verify::header_map(&pairs)
        .into_iter()
        .map(|(k, v)| envoy_option(k, v))
        .collect();
    let code = match problem::grpc_status(p.status()) {
        0 => 2,
        c => i32::from(c),
    };
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: format!("{}: {}", p.code, p.detail.as_deref().unwrap_or(p.title)),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(p.status),
            }),
            headers,
            body,
        })),
        dynamic_metadata: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{address, HeaderMap as EnvoyHeaderMap, SocketAddress};

    fn http(headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            path: "/facts".into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    const LIMITS: HeaderLimits = HeaderLimits { count: 3, bytes: 100 };

    #[test]
    fn headers_are_bounded_and_checked() {
        let h = request_headers(&http(&[(":path", "/x"), ("x-api-key", "k"), ("a", "1")]), LIMITS).unwrap();
        assert_eq!(h.len(), 2, "pseudo-headers are left out");
        let many = http(&[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]);
        assert_eq!(request_headers(&many, LIMITS).unwrap_err().status, 431);
        let big = "v".repeat(100);
        assert_eq!(request_headers(&http(&[("a", &big)]), LIMITS).unwrap_err().status, 431);
        for bad in [http(&[("a b", "1")]), http(&[("a", "x\r\ny")]), http(&[("", "1")])] {
            assert_eq!(request_headers(&bad, LIMITS).unwrap_err().status, 400);
        }
        let mut both = http(&[("a", "1")]);
        both.header_map = Some(EnvoyHeaderMap {
            headers: vec![EnvoyHeader {
                key: "b".into(),
                raw_value: b"2".to_vec(),
                ..Default::default()
            }],
        });
        assert_eq!(request_headers(&both, LIMITS).unwrap_err().status, 400);
        both.headers.clear();
        let h = request_headers(&both, LIMITS).unwrap();
        assert_eq!(h["b"], "2");
    }

    #[test]
    fn the_source_address_counts_only_from_a_trusted_envoy() {
        let source = Peer {
            address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "203.0.113.7".into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        let envoy: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_address(envoy, Some(&source), &trusted).to_string(),
            "203.0.113.7"
        );
        assert_eq!(client_address(envoy, Some(&source), &[]), envoy);
        assert_eq!(client_address(envoy, None, &trusted), envoy);
    }

    #[test]
    fn refusals_are_never_ok() {
        for p in [
            problem::forward_auth_forbidden(),
            verify::bad("x"),
            problem::headers_too_large("x"),
            Problem::new(axum::http::StatusCode::IM_A_TEAPOT, "x", "x"),
        ] {
            let status = p.status;
            let r = denied(p);
            assert_ne!(r.status.as_ref().unwrap().code, 0);
            match r.http_response {
                Some(HttpResponse::DeniedResponse(d)) => {
                    assert_eq!(d.status.unwrap().code, i32::from(status));
                    assert!(d.body.starts_with('{'));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
