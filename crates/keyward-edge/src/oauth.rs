//! The OAuth 2.0 endpoints on the gateway listener: token (RFC 6749 §4.4, RFC 8693),
//! introspection (RFC 7662), revocation (RFC 7009), authorization server metadata
//! (RFC 8414) and the JWKS. Errors use OAuth's JSON error format (RFC 6749 §5.2), and every
//! answer carries `Cache-Control: no-store` and `Pragma: no-cache`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_engine::token::{ClientAuth, OAuthError, TokenRequest, API_KEY_TOKEN_TYPE, TOKEN_EXCHANGE};
use keyward_engine::{DpopHeader, RequestMeta};
use serde_json::json;

use crate::body::BodyFailure;
use crate::context::client_ip;
use crate::gateway::GatewayState;
use crate::oauth_form::{client_credentials, is_form, ClientCredentials, Form, FormError, MAX_FORM};

/// Paths served before the route table.
pub const TOKEN_PATH: &str = "/oauth/token";
pub const INTROSPECT_PATH: &str = "/oauth/introspect";
pub const REVOKE_PATH: &str = "/oauth/revoke";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// The OAuth routes (only when the token service is enabled).
pub fn routes(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route(INTROSPECT_PATH, post(introspect))
        .route(REVOKE_PATH, post(revoke))
        .route(JWKS_PATH, get(jwks))
        .route(METADATA_PATH, get(metadata))
        .method_not_allowed_fallback(|| async {
            oauth_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "use POST")
        })
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::from_fn(crate::body::deadline))
        .with_state(state)
}

/// A declared `Content-Length` over [`MAX_FORM`] is refused (413) before a byte of the body is
/// read: a client cannot make the token endpoints wait for gigabytes it announced.
async fn refuse_declared_oversize(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FORM as u64) {
        return oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        );
    }
    next.run(req).await
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    no_store((status, Json(json!({"error": code, "error_description": description}))).into_response())
}

fn from_oauth(e: &OAuthError) -> Response {
    let status = match e {
        OAuthError::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
        OAuthError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut r = oauth_error(status, e.code(), &e.to_string());
    match e {
        OAuthError::InvalidClient { basic: true } => {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"keyward\""),
            );
        }
        OAuthError::UseDpopNonce(nonce) => {
            if let Ok(v) = HeaderValue::from_str(nonce) {
                r.headers_mut().insert(header::HeaderName::from_static("dpop-nonce"), v);
            }
        }
        _ => {}
    }
    r
}

fn bad_request(e: FormError) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.0)
}

/// The body as read, or the OAuth error for why it could not be: over [`MAX_FORM`] (413), not
/// complete within `gateway.body_read_timeout` (408; [`crate::body`] closes the connection),
/// broken (400).
fn received(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
    body.map_err(|r| match crate::body::failure(&r) {
        BodyFailure::TooLarge => oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        ),
        BodyFailure::TimedOut => oauth_error(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            "the request body did not arrive in time",
        ),
        BodyFailure::Invalid => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request body could not be read",
        ),
    })
}

/// The content type, size and strict-form checks shared by the three POST endpoints.
fn read_form(headers: &HeaderMap, body: &Bytes) -> Result<Form, Response> {
    if body.len() > MAX_FORM {
        return Err(oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        ));
    }
    if !is_form(headers) {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send the parameters as application/x-www-form-urlencoded",
        ));
    }
    Form::parse(body).map_err(bad_request)
}

fn auth_of<'a>(c: &'a ClientCredentials, cert: Option<&'a crate::tls::PeerCertificates>) -> ClientAuth<'a> {
    match c {
        ClientCredentials::None => ClientAuth::None,
        // RFC 8705 §2: `client_id` alone, with a client certificate on the connection.
        ClientCredentials::IdOnly { client_id } => match cert.and_then(crate::tls::PeerCertificates::presented) {
            Some(cert) => ClientAuth::Certificate {
                client_id,
                cert: Some(cert),
            },
            None => ClientAuth::None,
        },
        ClientCredentials::Basic { client_id, secret } => ClientAuth::Basic { client_id, secret },
        ClientCredentials::Post { client_id, secret } => ClientAuth::Post { client_id, secret },
        ClientCredentials::Assertion { assertion, client_id } => ClientAuth::Assertion {
            assertion,
            client_id: client_id.as_deref(),
        },
    }
}

async fn token(
    State(st): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    peer_certs: Option<axum::Extension<crate::tls::PeerCertificates>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = match received(body).and_then(|b| read_form(&headers, &b)) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let creds = match client_credentials(&headers, &form) {
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let Some(grant_type) = form.get("grant_type") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required");
    };
    let certs = peer_certs.as_ref().map(|c| &c.0);
    if let (ClientCredentials::IdOnly { .. }, None) = (&creds, certs) {
        if grant_type == "client_credentials" {
            return from_oauth(&OAuthError::InvalidClient { basic: false });
        }
    }
    let ip = client_ip(peer.ip(), &headers, st.trusted_proxies());
    let meta = RequestMeta {
        ip: Some(ip),
        method: "POST",
        path: TOKEN_PATH,
        user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
    };
    let dpop = DpopHeader::from_values(headers.get_all("dpop").iter().map(HeaderValue::as_bytes));
    let client_cert = certs.and_then(crate::tls::PeerCertificates::presented);
    let req = TokenRequest {
        client_cert,
        dpop,
        grant_type,
        scope: form.get("scope"),
        audience: form.get("audience").or(form.get("resource")),
        auth: auth_of(&creds, certs),
        subject_token: form.get("subject_token"),
        subject_token_type: form.get("subject_token_type"),
        requested_token_type: form.get("requested_token_type"),
    };
    let grant = match grant_type {
        "client_credentials" => "client_credentials",
        "urn:ietf:params:oauth:grant-type:token-exchange" => "token_exchange",
        _ => "other",
    };
    match st.engine().issue_token(&req, &meta).await {
        Ok(t) => {
            st.metrics().token_request(grant, "issued");
            no_store((StatusCode::OK, Json(t)).into_response())
        }
        Err(e) => {
            st.metrics().token_request(grant, e.code());
            from_oauth(&e)
        }
    }
}

/// Introspection and revocation need an authenticated client.
async fn authenticated(
    st: &GatewayState,
    headers: &HeaderMap,
    form: &Form,
    cert: Option<&crate::tls::PeerCertificates>,
) -> Result<String, Response> {
    let creds = client_credentials(headers, form).map_err(bad_request)?;
    match st.engine().authenticate_client(&auth_of(&creds, cert)).await {
        Ok(Some(c)) => Ok(c.id),
        Ok(None) => Err(from_oauth(&OAuthError::InvalidClient { basic: false })),
        Err(e) => Err(from_oauth(&e)),
    }
}

async fn introspect(
    State(st): State<Arc<GatewayState>>,
    peer_certs: Option<axum::Extension<crate::tls::PeerCertificates>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = match received(body).and_then(|b| read_form(&headers, &b)) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = authenticated(&st, &headers, &form, peer_certs.as_ref().map(|c| &c.0)).await {
        return r;
    }
    let Some(token) = form.get("token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    let body = match st.engine().introspect(token).await {
        Some(c) => {
            let mut body = json!({
            "active": true,
            "scope": c.scope,
            "client_id": c.client_id,
            "sub": c.sub,
            "aud": c.aud,
            "iss": c.iss,
            "exp": c.exp,
            "iat": c.iat,
            "jti": c.jti,
            "token_type": if c.cnf.as_ref().is_some_and(|x| x.jkt.is_some()) { "DPoP" } else { "Bearer" },
            });
            // The sender constraint: RFC 8705 §3.2 (`x5t#S256`), RFC 9449 §6.2 (`jkt`).
            if let Some(cnf) = &c.cnf {
                body["cnf"] = json!(cnf);
            }
            body
        }
        None => json!({"active": false}),
    };
    no_store((StatusCode::OK, Json(body)).into_response())
}

async fn revoke(
    State(st): State<Arc<GatewayState>>,
    peer_certs: Option<axum::Extension<crate::tls::PeerCertificates>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let form = match received(body).and_then(|b| read_form(&headers, &b)) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let client_id = match authenticated(&st, &headers, &form, peer_certs.as_ref().map(|c| &c.0)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(token) = form.get("token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    // RFC 7009 §2.1: an unknown or wrong token_type_hint is ignored.
    match st.engine().revoke_token(token, &client_id).await {
        // 200 for unknown, invalid or foreign tokens as well (RFC 7009 §2.2).
        Ok(_) => no_store(StatusCode::OK.into_response()),
        Err(_) => oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again"),
    }
}

async fn jwks(State(st): State<Arc<GatewayState>>) -> Response {
    match st.engine().token_service() {
        Ok(svc) => {
            let mut r = Json(svc.jwks()).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            r
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metadata(State(st): State<Arc<GatewayState>>) -> Response {
    let Ok(svc) = st.engine().token_service() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let iss = &svc.config().issuer;
    let mut scopes: Vec<String> = st.route_scopes();
    scopes.sort();
    scopes.dedup();
    let mtls = st.config().client_certificates;
    let mut methods = vec!["client_secret_basic", "client_secret_post", "private_key_jwt"];
    if mtls {
        methods.extend(["tls_client_auth", "self_signed_tls_client_auth"]);
    }
    let mut doc = json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}{TOKEN_PATH}"),
        "jwks_uri": format!("{iss}{JWKS_PATH}"),
        "introspection_endpoint": format!("{iss}{INTROSPECT_PATH}"),
        "revocation_endpoint": format!("{iss}{REVOKE_PATH}"),
        "grant_types_supported": ["client_credentials", TOKEN_EXCHANGE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256", "PS256"],
        "introspection_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "scopes_supported": scopes,
        "keyward_api_key_token_type": API_KEY_TOKEN_TYPE,
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "RS256", "PS256"],
        // Tokens are bound to the client certificate of the token request's connection.
        "tls_client_certificate_bound_access_tokens": mtls,
        "introspection_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256", "PS256"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256", "PS256"],
    });
    // RFC 8705 §5: where clients doing mTLS send their requests. keyward serves mTLS on the
    // same listener, so the aliases are the endpoints themselves (`oauth.mtls_base_url`
    // overrides the base when mTLS is terminated under another name).
    if mtls {
        let base = svc.config().mtls_base_url.as_deref().unwrap_or(iss);
        doc["mtls_endpoint_aliases"] = json!({
            "token_endpoint": format!("{base}{TOKEN_PATH}"),
            "introspection_endpoint": format!("{base}{INTROSPECT_PATH}"),
            "revocation_endpoint": format!("{base}{REVOKE_PATH}"),
        });
    }
    Json(doc).into_response()
}

/// The token endpoint's form reading (content type, size, strict form) for the fuzz targets in
/// `fuzz/` (re-exported by `crate::fuzz_api`); not an API. The error is the response status.
#[doc(hidden)]
pub fn fuzz_read_form(headers: &HeaderMap, body: &Bytes) -> Result<Form, StatusCode> {
    read_form(headers, body).map_err(|r| r.status())
}
