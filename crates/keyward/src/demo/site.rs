//! The demo's web pages (issue 11): the cat-facts site on its own origin, playing both the page
//! (HTML + JS, strict CSP, no inline script, nothing from the network) and the site's backend
//! (`POST /bff/token`: the backend-for-frontend that trades its secret, exchange-only key for a
//! short-lived token at keyward's token endpoint, for the browser session asking), and a
//! "foreign" site on another origin that copied the page's publishable key and is refused.
//!
//! The secret key never leaves this module: it is not in any page, log or answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keyward_core::secret::SecretString;
use serde_json::json;

const INDEX_HTML: &str = include_str!("../../assets/demo/index.html");
const FOREIGN_HTML: &str = include_str!("../../assets/demo/foreign.html");
const APP_JS: &str = include_str!("../../assets/demo/app.js");
const APP_CSS: &str = include_str!("../../assets/demo/app.css");

/// The session cookie of the cat-facts site (HttpOnly: page scripts never see it).
const SESSION_COOKIE: &str = "kw_demo_session";
/// Most browser sessions the demo site remembers; the oldest go first.
const MAX_SESSIONS: usize = 1000;
/// A cached token is handed out again while it has at least this long to live.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);
/// The one scope the page's tokens carry.
pub const BFF_SCOPE: &str = "facts:read";

/// What both sites need to know.
pub struct SiteConfig {
    /// The gateway's base URL (`http://127.0.0.1:8080`), called by the pages.
    pub gateway: String,
    /// The token endpoint the backend calls (`{gateway}/oauth/token`).
    pub token_url: String,
    /// The publishable key bound to `site_origin` (fine to put in a page).
    pub publishable_key: String,
    /// The backend's secret, exchange-only key: stays here.
    pub exchange_key: SecretString,
    /// `http://127.0.0.1:PORT` of the cat-facts site.
    pub site_origin: String,
}

struct CachedToken {
    access_token: String,
    token_type: String,
    scope: String,
    expires_at: Instant,
}

struct Session {
    created: Instant,
    token: Option<CachedToken>,
}

struct SiteState {
    cfg: Arc<SiteConfig>,
    html: String,
    csp: HeaderValue,
    sessions: Mutex<HashMap<String, Session>>,
    http: reqwest::Client,
}

fn html_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn render(template: &str, cfg: &SiteConfig) -> String {
    template
        .replace("{{GATEWAY}}", &html_attr(&cfg.gateway))
        .replace("{{PUBLISHABLE_KEY}}", &html_attr(&cfg.publishable_key))
        .replace("{{SITE}}", &html_attr(&cfg.site_origin))
}

/// A strict policy: scripts and styles only from this origin (no inline code), fetches only to
/// this origin and the named others, nothing else at all.
fn csp(connect: &[&str]) -> HeaderValue {
    let value = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self' {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        connect.join(" ")
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

/// The cat-facts site: the page, its script and style, and the backend's `/bff/token`.
pub fn site_router(cfg: Arc<SiteConfig>) -> Router {
    let state = Arc::new(SiteState {
        html: render(INDEX_HTML, &cfg),
        csp: csp(&[&cfg.gateway]),
        sessions: Mutex::new(HashMap::new()),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default(),
        cfg,
    });
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/favicon.ico", get(no_icon))
        .route("/bff/token", post(bff_token))
        .fallback(not_found)
        .with_state(state)
}

/// The foreign site: another origin serving a page with the cat-facts page's publishable key.
pub fn foreign_router(cfg: Arc<SiteConfig>) -> Router {
    let state = Arc::new(SiteState {
        html: render(FOREIGN_HTML, &cfg),
        // The gateway and the cat-facts site are allowed by this page's own CSP, so what
        // refuses its requests is CORS and keyward, not the CSP.
        csp: csp(&[&cfg.gateway, &cfg.site_origin]),
        sessions: Mutex::new(HashMap::new()),
        http: reqwest::Client::new(),
        cfg,
    });
    Router::new()
        .route("/", get(foreign_index))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/favicon.ico", get(no_icon))
        .fallback(not_found)
        .with_state(state)
}

fn hardened(mut resp: Response, csp: &HeaderValue) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn session_id(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The page; a visitor without a session gets one (the demo's stand-in for signing in).
async fn index(State(s): State<Arc<SiteState>>, h: HeaderMap) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], s.html.clone()).into_response();
    let known = session_id(&h).is_some_and(|id| s.sessions.lock().is_ok_and(|m| m.contains_key(&id)));
    if !known {
        if let Ok(id) = keyward_core::secret::random_base62(32) {
            if let Ok(mut m) = s.sessions.lock() {
                if m.len() >= MAX_SESSIONS {
                    if let Some(oldest) = m.iter().min_by_key(|(_, v)| v.created).map(|(k, _)| k.clone()) {
                        m.remove(&oldest);
                    }
                }
                m.insert(
                    id.clone(),
                    Session {
                        created: Instant::now(),
                        token: None,
                    },
                );
            }
            let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
    }
    hardened(resp, &s.csp)
}

async fn foreign_index(State(s): State<Arc<SiteState>>) -> Response {
    let resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], s.html.clone()).into_response();
    hardened(resp, &s.csp)
}

async fn script(State(s): State<Arc<SiteState>>) -> Response {
    hardened(
        ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS).into_response(),
        &s.csp,
    )
}

async fn style(State(s): State<Arc<SiteState>>) -> Response {
    hardened(
        ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response(),
        &s.csp,
    )
}

async fn no_icon(State(s): State<Arc<SiteState>>) -> Response {
    hardened(StatusCode::NO_CONTENT.into_response(), &s.csp)
}

async fn not_found(State(s): State<Arc<SiteState>>) -> Response {
    hardened(
        (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))).into_response(),
        &s.csp,
    )
}

fn refuse(s: &SiteState, status: StatusCode, msg: &str) -> Response {
    hardened((status, Json(json!({"error": msg}))).into_response(), &s.csp)
}

/// `POST /bff/token`: the backend-for-frontend. Only this site's own pages (same `Origin`)
/// with a known session get a token; the backend exchanges its secret key for one scoped to
/// [`BFF_SCOPE`] (RFC 8693) and caches it for the session until shortly before it expires.
async fn bff_token(State(s): State<Arc<SiteState>>, h: HeaderMap) -> Response {
    // Browsers send Origin on every POST; another origin (a page on another port of the same
    // host shares the cookie jar) is refused here, and CORS would not let it read the answer.
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin != Some(s.cfg.site_origin.as_str()) {
        return refuse(&s, StatusCode::FORBIDDEN, "only this site's own pages get tokens");
    }
    let Some(id) = session_id(&h) else {
        return refuse(&s, StatusCode::UNAUTHORIZED, "no session: load the page first");
    };
    let cached = {
        let Ok(m) = s.sessions.lock() else {
            return refuse(&s, StatusCode::INTERNAL_SERVER_ERROR, "unavailable");
        };
        let Some(session) = m.get(&id) else {
            return refuse(&s, StatusCode::UNAUTHORIZED, "unknown session: reload the page");
        };
        session
            .token
            .as_ref()
            .filter(|t| t.expires_at.saturating_duration_since(Instant::now()) > TOKEN_MARGIN)
            .map(answer)
    };
    if let Some(body) = cached {
        return hardened(Json(body).into_response(), &s.csp);
    }
    let form = [
        ("grant_type", keyward_engine::token::TOKEN_EXCHANGE),
        ("subject_token", s.cfg.exchange_key.expose()),
        ("subject_token_type", keyward_engine::token::API_KEY_TOKEN_TYPE),
        ("scope", BFF_SCOPE),
    ];
    let resp = match s.http.post(&s.cfg.token_url).form(&form).send().await {
        Ok(r) => r,
        Err(_) => return refuse(&s, StatusCode::BAD_GATEWAY, "the token service is unreachable"),
    };
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        // Only keyward's error code goes back to the page, never the request.
        let code = body["error"]
            .as_str()
            .unwrap_or("unknown")
            .chars()
            .take(64)
            .collect::<String>();
        return refuse(
            &s,
            StatusCode::BAD_GATEWAY,
            &format!("the token service refused: {code}"),
        );
    }
    let (Some(access_token), Some(expires_in)) = (body["access_token"].as_str(), body["expires_in"].as_u64()) else {
        return refuse(&s, StatusCode::BAD_GATEWAY, "the token service answered nonsense");
    };
    let token = CachedToken {
        access_token: access_token.to_owned(),
        token_type: body["token_type"].as_str().unwrap_or("Bearer").to_owned(),
        scope: body["scope"].as_str().unwrap_or(BFF_SCOPE).to_owned(),
        expires_at: Instant::now() + Duration::from_secs(expires_in),
    };
    let out = answer(&token);
    if let Ok(mut m) = s.sessions.lock() {
        if let Some(session) = m.get_mut(&id) {
            session.token = Some(token);
        }
    }
    hardened(Json(out).into_response(), &s.csp)
}

fn answer(t: &CachedToken) -> serde_json::Value {
    json!({
        "access_token": t.access_token,
        "token_type": t.token_type,
        "expires_in": t.expires_at.saturating_duration_since(Instant::now()).as_secs(),
        "scope": t.scope,
    })
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_no_secret_and_no_inline_script() {
        let cfg = SiteConfig {
            gateway: "http://127.0.0.1:1".into(),
            token_url: "http://127.0.0.1:1/oauth/token".into(),
            publishable_key: "kw_pk_test_x\"<".into(),
            exchange_key: SecretString::new("kw_test_secret".into()),
            site_origin: "http://127.0.0.1:2".into(),
        };
        for page in [render(INDEX_HTML, &cfg), render(FOREIGN_HTML, &cfg)] {
            assert!(!page.contains("kw_test_secret"));
            assert!(!page.contains("<script>") && page.contains(r#"<script src="/app.js" defer></script>"#));
            assert!(page.contains("kw_pk_test_x&quot;&lt;"), "attributes are escaped");
            assert!(!page.contains("{{"), "every placeholder is filled");
        }
        assert!(!APP_JS.contains("innerHTML"));
        let c = csp(&[&cfg.gateway]);
        let c = c.to_str().unwrap();
        assert!(c.contains("script-src 'self'") && !c.contains("unsafe"));
        assert!(c.contains("connect-src 'self' http://127.0.0.1:1"));
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; kw_demo_session=xyz; c=d"),
        );
        assert_eq!(session_id(&h).as_deref(), Some("xyz"));
        assert_eq!(session_id(&HeaderMap::new()), None);
    }
}
