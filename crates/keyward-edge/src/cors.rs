//! CORS per route (Fetch standard): preflights answered by the gateway without touching the
//! upstream, `Access-Control-*` headers on actual responses (errors included, so a page can
//! read a 401 or 429), and the upstream's own `Access-Control-*` headers replaced.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::policy::Origin;

use crate::problem::Problem;

/// Which origins a route admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin, never with credentials.
    Any,
    /// Exact origins.
    List(Vec<Origin>),
}

/// A route's CORS policy (validated at config load).
#[derive(Debug, Clone)]
pub struct Cors {
    pub origins: CorsOrigins,
    pub methods: Vec<Method>,
    /// Request headers a page may send (lower-case).
    pub headers: Vec<HeaderName>,
    /// Response headers a page may read, besides the CORS-safelisted ones.
    pub expose: Vec<HeaderName>,
    pub credentials: bool,
    pub max_age_secs: u32,
}

/// Response headers of keyward's own that pages need to read (limits, lifecycle, request id).
const KEYWARD_EXPOSED: &str = "RateLimit, RateLimit-Policy, Retry-After, Deprecation, Sunset, WWW-Authenticate";

/// CORS-safelisted request headers (no need to be allowed explicitly).
fn safelisted(name: &str) -> bool {
    matches!(
        name,
        "accept" | "accept-language" | "content-language" | "content-type" | "range"
    )
}

impl Cors {
    /// Checks the policy: origins exact (or `*` alone, and never with credentials), methods
    /// and header names valid, max-age at most a day.
    pub fn new(
        origins: &[String],
        methods: &[String],
        headers: &[String],
        expose: &[String],
        credentials: bool,
        max_age_secs: u32,
    ) -> Result<Cors, String> {
        let origins = match origins {
            [] => return Err("cors.allowed_origins: name at least one origin (or \"*\")".into()),
            [one] if one == "*" => {
                if credentials {
                    return Err(
                        "cors: allow_credentials = true cannot go with allowed_origins = [\"*\"]; \
                                list the origins"
                            .into(),
                    );
                }
                CorsOrigins::Any
            }
            list => {
                let mut out = Vec::new();
                for o in list {
                    if o.contains('*') {
                        return Err(format!(
                            "cors.allowed_origins: {o:?}: no wildcards inside origins; list each origin"
                        ));
                    }
                    let parsed = Origin::parse(o).map_err(|e| format!("cors.allowed_origins: {e}"))?;
                    if !out.contains(&parsed) {
                        out.push(parsed);
                    }
                }
                CorsOrigins::List(out)
            }
        };
        let methods = methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("cors.allowed_methods: {m:?} is not a method"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let names = |list: &[String], key: &str| {
            list.iter()
                .map(|h| {
                    HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("cors.{key}: {h:?} is not a header name"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        if max_age_secs > 86_400 {
            return Err("cors.max_age: at most 24h".into());
        }
        Ok(Cors {
            origins,
            methods,
            headers: names(headers, "allowed_headers")?,
            expose: names(expose, "expose_headers")?,
            credentials,
            max_age_secs,
        })
    }

    pub fn allows_origin(&self, origin: &str) -> bool {
        match &self.origins {
            CorsOrigins::Any => Origin::parse(origin).is_ok(),
            CorsOrigins::List(list) => list.iter().any(|o| o.matches(origin)),
        }
    }

    fn allow_origin_value(&self, origin: &str) -> Option<HeaderValue> {
        match (&self.origins, self.credentials) {
            (CorsOrigins::Any, false) => Some(HeaderValue::from_static("*")),
            _ => HeaderValue::from_str(origin).ok(),
        }
    }

    /// Answers a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`):
    /// 204 with the CORS headers, or 403 problem+json without them (the browser then blocks).
    pub fn preflight(&self, h: &HeaderMap) -> Response {
        let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !self.allows_origin(origin) {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "cors_origin_not_allowed",
                "CORS Origin Not Allowed",
            )
            .detail("this origin may not call this route from a browser")
            .into_response();
        }
        let method = h
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        if !method.is_some_and(|m| self.methods.contains(&m)) {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "cors_method_not_allowed",
                "CORS Method Not Allowed",
            )
            .detail("this method may not be used on this route from a browser")
            .into_response();
        }
        let requested = h
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        for name in requested.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let lower = name.to_ascii_lowercase();
            if !safelisted(&lower) && !self.headers.iter().any(|a| a.as_str() == lower) {
                return Problem::new(
                    StatusCode::FORBIDDEN,
                    "cors_header_not_allowed",
                    "CORS Header Not Allowed",
                )
                .detail(format!(
                    "the header {} may not be sent to this route from a browser",
                    lower.chars().take(64).collect::<String>()
                ))
                .into_response();
            }
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let out = resp.headers_mut();
        if let Some(v) = self.allow_origin_value(origin) {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        let methods: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if !self.headers.is_empty() {
            let names: Vec<&str> = self.headers.iter().map(HeaderName::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
                out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(self.max_age_secs));
        out.insert(
            header::VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        resp
    }

    /// Puts the CORS headers on an actual response for `origin` (when allowed), replacing
    /// whatever `Access-Control-*` headers the upstream sent.
    pub fn decorate(&self, origin: Option<&str>, out: &mut HeaderMap) {
        let upstream: Vec<HeaderName> = out
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for k in upstream {
            out.remove(k);
        }
        out.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|o| self.allows_origin(o)) else {
            return;
        };
        if let Some(v) = self.allow_origin_value(origin) {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let mut expose = KEYWARD_EXPOSED.to_owned();
        for e in &self.expose {
            expose.push_str(", ");
            expose.push_str(e.as_str());
        }
        if let Ok(v) = HeaderValue::from_str(&expose) {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &Method, h: &HeaderMap) -> bool {
    method == Method::OPTIONS && h.contains_key(header::ORIGIN) && h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn misconfigurations_are_refused() {
        assert!(Cors::new(&s(&["*"]), &s(&["GET"]), &[], &[], true, 600).is_err());
        assert!(Cors::new(&[], &s(&["GET"]), &[], &[], false, 600).is_err());
        assert!(Cors::new(&s(&["https://*.shop.example"]), &s(&["GET"]), &[], &[], false, 600).is_err());
        assert!(Cors::new(&s(&["https://shop.example", "*"]), &s(&["GET"]), &[], &[], false, 600).is_err());
        assert!(Cors::new(&s(&["https://shop.example/app"]), &s(&["GET"]), &[], &[], false, 600).is_err());
        assert!(Cors::new(&s(&["https://shop.example"]), &s(&["GE T"]), &[], &[], false, 600).is_err());
        assert!(Cors::new(
            &s(&["https://shop.example"]),
            &s(&["GET"]),
            &s(&["x y"]),
            &[],
            false,
            600
        )
        .is_err());
        assert!(Cors::new(&s(&["https://shop.example"]), &s(&["GET"]), &[], &[], false, 90_000).is_err());
        assert!(Cors::new(&s(&["https://shop.example"]), &s(&["GET"]), &[], &[], true, 600).is_ok());
        assert!(Cors::new(&s(&["*"]), &s(&["GET"]), &[], &[], false, 600).is_ok());
    }

    #[test]
    fn preflight_and_decoration() {
        let c = Cors::new(
            &s(&["https://shop.example"]),
            &s(&["GET", "post"]),
            &s(&["X-Api-Key"]),
            &[],
            false,
            600,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static("https://shop.example"));
        h.insert(header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("GET"));
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-api-key, content-type"),
        );
        assert!(is_preflight(&Method::OPTIONS, &h));
        let r = c.preflight(&h);
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.example");
        assert_eq!(r.headers()[header::ACCESS_CONTROL_MAX_AGE], "600");
        let mut bad = h.clone();
        bad.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        let r = c.preflight(&bad);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let mut bad = h.clone();
        bad.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("DELETE"),
        );
        assert_eq!(c.preflight(&bad).status(), StatusCode::FORBIDDEN);
        let mut bad = h.clone();
        bad.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("authorization"),
        );
        assert_eq!(c.preflight(&bad).status(), StatusCode::FORBIDDEN);

        let mut out = HeaderMap::new();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        c.decorate(Some("https://evil.example"), &mut out);
        assert!(
            out.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "upstream's * is dropped"
        );
        c.decorate(Some("https://shop.example"), &mut out);
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://shop.example");
        assert!(out[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .contains("RateLimit"));
    }
}
