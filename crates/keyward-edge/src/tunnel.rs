//! WebSocket (and other HTTP/1.1 `Upgrade`) tunnels on routes with `websocket = true`: the
//! handshake is decided like any request (limits consumed once), then bytes flow both ways
//! untouched until a side closes, the route's `idle_timeout` or `max_tunnel_duration` (capped
//! by the credential's own expiry), or a revocation: every change the engine announces (key
//! revoked, disabled or changed, app changed, client disabled, token revoked — on this node or
//! another) re-decides the open tunnels it concerns, and those no longer granted are closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use keyward_engine::{Changed, Engine, Granted, Principal};
use keyward_upstream::tunnel::{self, Limits, Owner, Registry};
use keyward_upstream::RequestBody;
use tokio::sync::broadcast::error::RecvError;

use crate::problem::Problem;

/// What an `Upgrade` request is, judged before anything else is decided.
pub(crate) enum UpgradeRequest {
    /// No upgrade asked for (an optional one such as `h2c` is ignored: the request proceeds as
    /// a plain one).
    None,
    /// A well-formed WebSocket handshake (RFC 6455 §4.1).
    WebSocket,
}

fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Classifies a request: a WebSocket handshake must be HTTP/1.1 `GET` with `Connection:
/// upgrade`, one `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`.
pub(crate) fn classify(method: &Method, version: Version, h: &HeaderMap) -> Result<UpgradeRequest, Problem> {
    let wants_websocket = has_token(h, header::UPGRADE, "websocket");
    if !wants_websocket {
        return Ok(UpgradeRequest::None);
    }
    let bad = |why: &str| Err(Problem::bad_request("invalid_upgrade", why));
    if version != Version::HTTP_11 {
        return bad("a WebSocket handshake is an HTTP/1.1 request");
    }
    if method != Method::GET {
        return bad("a WebSocket handshake is a GET request");
    }
    if !has_token(h, header::CONNECTION, "upgrade") {
        return bad("a WebSocket handshake needs Connection: upgrade");
    }
    if h.get_all(header::UPGRADE).iter().count() != 1 {
        return bad("send exactly one Upgrade header");
    }
    let version_ok = h
        .get_all(header::SEC_WEBSOCKET_VERSION)
        .iter()
        .any(|v| v.as_bytes() == b"13");
    if !version_ok {
        return bad("Sec-WebSocket-Version must be 13");
    }
    let key_ok = h
        .get(header::SEC_WEBSOCKET_KEY)
        .is_some_and(|v| v.len() == 24 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()));
    if !key_ok {
        return bad("Sec-WebSocket-Key must be 16 bytes in base64");
    }
    Ok(UpgradeRequest::WebSocket)
}

/// The open tunnels of this gateway and the grants they were opened on.
#[derive(Default)]
pub struct Tunnels {
    registry: Registry,
    grants: Mutex<HashMap<u64, Granted>>,
}

impl Tunnels {
    /// How many tunnels are open.
    pub fn open_count(&self) -> usize {
        self.registry.len()
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Granted>> {
        match self.grants.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Follows the engine's announcements until the engine is gone: re-decides the tunnels a
    /// change concerns and closes those no longer granted.
    pub(crate) async fn watch(self: Arc<Self>, engine: std::sync::Weak<Engine>) {
        // A weak reference: the engine owns the channel's sender, so a strong one here would
        // keep the engine (and its store) alive forever; dropped, the channel closes and this
        // task ends.
        let mut changes = match engine.upgrade() {
            Some(e) => e.subscribe_changes(),
            None => return,
        };
        loop {
            let change = match changes.recv().await {
                Ok(c) => c,
                Err(RecvError::Lagged(_)) => Changed::All,
                Err(RecvError::Closed) => return,
            };
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let concerned: Vec<(u64, Granted)> = self
                .grants()
                .iter()
                .filter(|(_, g)| change.concerns(&g.principal))
                .map(|(id, g)| (*id, g.clone()))
                .collect();
            for (id, grant) in concerned {
                if !engine.still_granted(&grant).await && self.registry.close(id) {
                    tracing::info!(
                        tunnel = id,
                        principal = grant.principal.id(),
                        "tunnel closed: no longer granted"
                    );
                }
            }
        }
    }
}

/// What one tunnel may do.
pub(crate) struct TunnelSettings {
    pub idle_timeout: Duration,
    pub max_duration: Duration,
}

/// Sends the handshake upstream and, on `101`, answers the client `101` and pumps both upgraded
/// connections in a task of their own. The upstream's refusal (any other status) is passed on.
pub(crate) async fn proxy_upgrade(
    tunnels: &Arc<Tunnels>,
    group: &keyward_upstream::Group,
    opts: &keyward_upstream::SendOptions<'_>,
    mut parts: axum::http::request::Parts,
    grant: Granted,
    settings: TunnelSettings,
    now: time::OffsetDateTime,
) -> Result<Response, keyward_upstream::UpstreamError> {
    let Some(client_side) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Ok(Problem::bad_request("invalid_upgrade", "this connection cannot be upgraded").into_response());
    };
    let upstream_req = Request::from_parts(parts, RequestBody::Empty);
    let mut resp = group.send(upstream_req, opts).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let upstream_side = hyper::upgrade::on(&mut resp);
    let (parts, _) = resp.into_parts();
    // The credential's own end bounds the tunnel too.
    let left = grant
        .expires_at()
        .map(|t| Duration::try_from(t - now).unwrap_or(Duration::ZERO));
    let limits = Limits {
        idle_timeout: settings.idle_timeout,
        max_duration: left.map_or(settings.max_duration, |l| l.min(settings.max_duration)),
    };
    let owner = owner_of(&grant.principal);
    let handle = tunnels.registry.open(owner);
    let id = handle.id();
    tunnels.grants().insert(id, grant);
    let tunnels = Arc::clone(tunnels);
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client_side, upstream_side);
        match (client, upstream) {
            (Ok(c), Ok(u)) => {
                let end = tunnel::pump(TokioIo::new(c), TokioIo::new(u), &limits, handle.stopped()).await;
                tracing::debug!(
                    tunnel = id,
                    reason = end.reason.as_str(),
                    up = end.a_to_b,
                    down = end.b_to_a,
                    "tunnel ended"
                );
            }
            (c, u) => tracing::debug!(
                tunnel = id,
                client = c.is_ok(),
                upstream = u.is_ok(),
                "the upgrade did not complete"
            ),
        }
        tunnels.grants().remove(&id);
        drop(handle);
    });
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = parts.headers;
    out.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    Ok(out)
}

fn owner_of(p: &Principal) -> Owner {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Owner {
        key_id: p.key().map(|k| k.id.clone()),
        app_id: some(p.app_id()),
        token_id: match p {
            Principal::Token(t) => Some(t.claims.jti.clone()),
            _ => None,
        },
        client_id: p.client_id().map(str::to_owned),
    }
}
