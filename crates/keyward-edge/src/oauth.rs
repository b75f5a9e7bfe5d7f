//! The OAuth 2.0 endpoints on the gateway listener: token (RFC 6749 §4.4, RFC 8693),
//! introspection (RFC 7662, signed as RFC 9701 JWTs on request), revocation (RFC 7009),
//! authorization server metadata (RFC 8414), protected resource metadata (RFC 9728) and the
//! JWKS. Errors of the token endpoints use OAuth's JSON error format (RFC 6749 §5.2), and every
//! answer of theirs carries `Cache-Control: no-store` and `Pragma: no-cache`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_engine::token::{ClientAuth, OAuthError, TokenRequest, API_KEY_TOKEN_TYPE, SIGNING_ALGS, TOKEN_EXCHANGE};
use keyward_engine::{DpopHeader, RequestMeta};
use serde_json::json;

use crate::body::BodyFailure;
use crate::context::client_ip;
use crate::gateway::{GatewayState, Route};
use crate::oauth_form::{client_credentials, is_form, ClientCredentials, Form, FormError, MAX_FORM};
use crate::problem::Problem;

/// Paths served before the route table.
pub const TOKEN_PATH: &str = "/oauth/token";
pub const INTROSPECT_PATH: &str = "/oauth/introspect";
pub const REVOKE_PATH: &str = "/oauth/revoke";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// RFC 9728 §3: the protected resource metadata of the whole gateway; each token-taking route's
/// own is at this path followed by the route's path prefix (§3.1).
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// The exact paths of [`routes`] (besides `RESOURCE_METADATA_PATH/` and what is under it).
pub const ENDPOINT_PATHS: [&str; 6] = [
    TOKEN_PATH,
    INTROSPECT_PATH,
    REVOKE_PATH,
    JWKS_PATH,
    METADATA_PATH,
    RESOURCE_METADATA_PATH,
];
/// RFC 9701 §4: the media type a resource server puts in `Accept` to get a signed answer.
pub const INTROSPECTION_JWT_MEDIA: &str = "application/token-introspection+jwt";

/// The OAuth routes (only when the token service is enabled).
pub fn routes(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route(INTROSPECT_PATH, post(introspect))
        .route(REVOKE_PATH, post(revoke))
        .route(JWKS_PATH, get(jwks))
        .route(METADATA_PATH, get(metadata))
        .route(RESOURCE_METADATA_PATH, get(resource_metadata))
        .route(&format!("{RESOURCE_METADATA_PATH}/"), get(resource_metadata))
        .route(&format!("{RESOURCE_METADATA_PATH}/{{*rest}}"), get(resource_metadata))
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
    let client_id = match authenticated(&st, &headers, &form, peer_certs.as_ref().map(|c| &c.0)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
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
    if !wants_signed_introspection(&headers) {
        return no_store((StatusCode::OK, Json(body)).into_response());
    }
    // RFC 9701 §5: the same answer, signed, for the client that asked.
    match st.engine().sign_introspection(&client_id, &body) {
        Ok(jwt) => {
            let mut r = (StatusCode::OK, jwt).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(INTROSPECTION_JWT_MEDIA));
            no_store(r)
        }
        Err(e) => from_oauth(&e),
    }
}

/// A qvalue (RFC 9110 §12.4.2) in thousandths; `None` when it is not one.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether `Accept` asks for the signed introspection answer (RFC 9701 §4): its media type is
/// named with a weight above 0 and at least that of `application/json`. Wildcards do not ask
/// for it; members that do not parse (a bad `q`, bytes that are not text) are ignored, and an
/// `Accept` that says nothing usable gets plain JSON.
fn wants_signed_introspection(headers: &HeaderMap) -> bool {
    let (mut jwt, mut json) = (0u16, 0u16);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for member in value.split(',') {
            let mut parts = member.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let mut q = Some(1000);
            for param in parts {
                let (name, v) = param.split_once('=').unwrap_or((param, ""));
                if name.trim().eq_ignore_ascii_case("q") {
                    q = qvalue(v.trim());
                }
            }
            let Some(q) = q else { continue };
            if media.eq_ignore_ascii_case(INTROSPECTION_JWT_MEDIA) {
                jwt = jwt.max(q);
            } else if media.eq_ignore_ascii_case("application/json") {
                json = json.max(q);
            }
        }
    }
    jwt > 0 && jwt >= json
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
        // RFC 9701 §7: introspection answers signed on request (`Accept`), by the signing keys.
        "introspection_signing_alg_values_supported": SIGNING_ALGS,
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

/// The RFC 9728 well-known path suffix of a route: its path prefix, none for `/` (whose
/// metadata is the gateway's own, at [`RESOURCE_METADATA_PATH`]).
pub fn resource_suffix(path_prefix: &str) -> &str {
    if path_prefix == "/" {
        ""
    } else {
        path_prefix
    }
}

/// `GET /.well-known/oauth-protected-resource[/<route path prefix>]` (RFC 9728): what a client
/// needs to call the gateway (all of it) or one token-taking route with an access token. The
/// resource identifier is the issuer (keyward's public base URL) followed by the route's path
/// prefix. A suffix that is no token-taking route's prefix is 404; one with dot segments or
/// encoded separators 400, as on the proxy.
async fn resource_metadata(State(st): State<Arc<GatewayState>>, uri: Uri, headers: HeaderMap) -> Response {
    let Ok(svc) = st.engine().token_service() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let iss = &svc.config().issuer;
    let suffix = uri.path().strip_prefix(RESOURCE_METADATA_PATH).unwrap_or_default();
    if suffix.is_empty() {
        let mut scopes = st.route_scopes();
        scopes.sort();
        scopes.dedup();
        return Json(resource_document(&st, iss.clone(), scopes)).into_response();
    }
    if crate::gateway::suspicious_path(suffix) {
        let p = Problem::bad_request("invalid_path", "the path contains dot segments or encoded separators");
        return p.into_response();
    }
    let routes = st.table();
    let host = crate::route::request_host(&headers, uri.authority().map(|a| a.as_str()));
    let here: Vec<(u8, &Route)> = routes
        .routes
        .iter()
        .filter(|r| r.path_prefix != "/" && r.path_prefix == suffix)
        .filter_map(|r| r.options.host_rank(host.as_deref()).map(|rank| (rank, r)))
        .collect();
    let best = here.iter().map(|(rank, _)| *rank).max();
    let here: Vec<&Route> = here
        .iter()
        .filter(|(rank, _)| Some(*rank) == best)
        .map(|(_, r)| *r)
        .collect();
    if here.is_empty() {
        return Problem::not_found()
            .detail("no route has this path prefix: the well-known path is followed by a route's path prefix")
            .into_response();
    }
    if !here.iter().any(|r| r.tokens) {
        return Problem::not_found()
            .detail("the route with this path prefix does not take access tokens")
            .into_response();
    }
    let mut scopes: Vec<String> = here
        .iter()
        .filter(|r| r.tokens)
        .flat_map(|r| r.scopes.iter().map(|s| s.to_string()))
        .collect();
    scopes.sort();
    scopes.dedup();
    let mut doc = resource_document(&st, format!("{iss}{suffix}"), scopes);
    // The audience access tokens must carry on this route (what to ask the token endpoint for,
    // as `audience` or `resource`); not an RFC 9728 member.
    let mut audiences: Vec<&str> = here.iter().filter(|r| r.tokens).map(|r| r.audience.as_str()).collect();
    audiences.dedup();
    if let [one] = audiences.as_slice() {
        doc["keyward_audience"] = json!(one);
    }
    Json(doc).into_response()
}

/// An RFC 9728 §2 document for the resource `resource`.
fn resource_document(st: &GatewayState, resource: String, scopes: Vec<String>) -> serde_json::Value {
    let iss = st
        .engine()
        .token_service()
        .map(|s| s.config().issuer.clone())
        .unwrap_or_default();
    json!({
        "resource": resource,
        "authorization_servers": [iss],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "RS256", "PS256"],
        // Plain bearer tokens are taken as well; a DPoP-bound token must come with its proof.
        "dpop_bound_access_tokens_required": false,
        "tls_client_certificate_bound_access_tokens": st.config().client_certificates,
    })
}

/// The token endpoint's form reading (content type, size, strict form) for the fuzz targets in
/// `fuzz/` (re-exported by `crate::fuzz_api`); not an API. The error is the response status.
#[doc(hidden)]
pub fn fuzz_read_form(headers: &HeaderMap, body: &Bytes) -> Result<Form, StatusCode> {
    read_form(headers, body).map_err(|r| r.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn accept_asks_for_the_signed_answer_only_by_name() {
        for yes in [
            &[&b"application/token-introspection+jwt"[..]][..],
            &[b"Application/Token-Introspection+JWT"],
            &[b"application/json;q=0.5, application/token-introspection+jwt"],
            &[b"application/json", b"application/token-introspection+jwt"],
            &[b"*/*, application/token-introspection+jwt;q=0.1"],
            &[b"application/token-introspection+jwt ; q=1.000"],
            &[b"application/token-introspection+jwt;q=0.9;charset=x, application/json;q=0.9"],
        ] {
            assert!(wants_signed_introspection(&accept(yes)), "{yes:?}");
        }
        for no in [
            &[][..],
            &[&b"application/json"[..]],
            &[b"*/*"],
            &[b"application/*"],
            &[b"application/jwt"],
            &[b"application/token-introspection+jwt;q=0"],
            &[b"application/token-introspection+jwt;q=0.000"],
            &[b"application/token-introspection+jwt;q=0.5, application/json"],
            &[b"application/token-introspection+jwt;q=2"],
            &[b"application/token-introspection+jwt;q=1.5"],
            &[b"application/token-introspection+jwt;q=0.1234"],
            &[b"application/token-introspection+jwt;q=abc"],
            &[b"application/token-introspection+jwt;q="],
            &[b"application/token-introspection+jwt;q=-1"],
            &[b"application/token-introspection+jwtx"],
            &[b"application/token-introspection+jwt\xff"],
            &[b",,,;;;==="],
        ] {
            assert!(!wants_signed_introspection(&accept(no)), "{no:?}");
        }
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.0"), Some(1000));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.05"), Some(50));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("1.001"), None);
        assert_eq!(qvalue("01"), None);
        assert_eq!(qvalue(".5"), None);
        assert_eq!(qvalue("0.5x"), None);
    }

    #[test]
    fn resource_suffixes() {
        assert_eq!(resource_suffix("/"), "");
        assert_eq!(resource_suffix("/facts"), "/facts");
        assert_eq!(resource_suffix("/api/"), "/api/");
    }
}
