//! Building the gateway's runtime configuration (routes, credential headers, trusted proxies),
//! collecting every problem: each route reports all of its own.

use std::time::Duration;

use axum::http::{HeaderName, Method, StatusCode};
use keyward_core::policy::{parse_cidr, RateSpec};
use keyward_core::Scope;
use keyward_edge::gateway::Upstream;
use keyward_edge::route::{HeaderRules, HostPattern, RouteOptions, UrlUpstream};
use keyward_edge::{GatewayConfig, Route};
use keyward_engine::{RateBy, RouteLimits};

use super::validate::METHODS;
use super::{Config, ConfigError, Place, Problem, RouteSection};

/// The longest `decision_cache` (a revocation takes up to this long to reach a caching proxy).
pub const MAX_DECISION_CACHE_SECS: u64 = 300;

/// A route's method, one of [`METHODS`] (any case).
fn parse_method(m: &str) -> Result<Method, String> {
    let up = m.to_ascii_uppercase();
    if !METHODS.contains(&up.as_str()) {
        return Err(format!("invalid method {m:?}: one of {}", METHODS.join(", ")));
    }
    Method::from_bytes(up.as_bytes()).map_err(|_| format!("invalid method {m:?}"))
}

impl Config {
    /// The gateway's runtime configuration, validated: every problem (each route's own at
    /// [`Place::Route`]) in [`ConfigError::Problems`].
    pub fn gateway_config(&self) -> Result<GatewayConfig, ConfigError> {
        let g = &self.gateway;
        let mut problems = Vec::new();
        let mut key = |m: String| problems.push(Problem::new(Place::Key, m));
        let invalid_credential_status = match g.invalid_credential_status {
            401 => StatusCode::UNAUTHORIZED,
            403 => StatusCode::FORBIDDEN,
            other => {
                key(format!("gateway.invalid_credential_status: {other} must be 401 or 403"));
                StatusCode::UNAUTHORIZED
            }
        };
        if g.credential_headers.is_empty() {
            key("gateway.credential_headers: name at least one header".into());
        }
        if g.publishable_rate != "none" {
            if let Err(e) = RateSpec::parse(&g.publishable_rate, None) {
                key(format!("gateway.publishable_rate: {e} (or \"none\")"));
            }
        }
        let mut credential_headers = Vec::new();
        for h in &g.credential_headers {
            match HeaderName::from_bytes(h.as_bytes()) {
                Err(_) => key(format!("gateway.credential_headers: {h:?} is not a valid header name")),
                Ok(name) if name == axum::http::header::AUTHORIZATION || name.as_str().starts_with("x-keyward-") => {
                    key(format!("gateway.credential_headers: {h:?} cannot carry API keys"))
                }
                Ok(name) => credential_headers.push(name),
            }
        }
        let mut trusted_proxies = Vec::new();
        for c in &g.trusted_proxies {
            match parse_cidr(c) {
                Ok(n) => trusted_proxies.push(n),
                Err(e) => key(format!("gateway.trusted_proxies: {e}")),
            }
        }
        if self.security.failed_auth_burst == 0 {
            key("security.failed_auth_burst: must be at least 1".into());
        }
        let client_certificates = g.tls_client_auth != keyward_edge::tls::ClientAuth::None;
        if let Err(e) = keyward_upstream::config::validate_all(&self.upstreams) {
            key(format!("upstreams.{}: {}", e.group, e.message));
        }
        let mut routes = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            let mut at = |m: String| problems.push(Problem::new(Place::Route(i), m));
            if r.name.is_empty() || !names.insert(r.name.clone()) {
                at(format!(
                    "routes[{i}] ({:?}): route names must be present and unique",
                    r.name
                ));
            }
            if r.client_certificates && !client_certificates {
                at(format!(
                    "route {:?}: client_certificates = true needs gateway.tls_client_auth = \"optional\" or \"required\"",
                    r.name
                ));
            }
            match self.route(i, r) {
                Ok(route) => routes.push(route),
                Err(errors) => errors.into_iter().for_each(&mut at),
            }
        }
        ConfigError::from_problems(problems)?;
        Ok(GatewayConfig {
            client_certificates,
            expiry_warning: g.expiry_warning,
            trusted_proxies,
            routes,
            credential_headers,
            invalid_credential_status,
            connect_timeout: g.connect_timeout,
            upstream_timeout: g.upstream_timeout,
            upstreams: self.upstreams.clone(),
        })
    }

    /// `routes[i]`, or every problem it has.
    fn route(&self, i: usize, r: &RouteSection) -> Result<Route, Vec<String>> {
        let at = format!("routes[{i}] ({:?})", r.name);
        let mut errors = Vec::new();
        if !r.path_prefix.starts_with('/') {
            errors.push(format!("{at}: path_prefix must start with '/'"));
        }
        let mut methods = Vec::new();
        for m in &r.methods {
            match parse_method(m) {
                Ok(m) => methods.push(m),
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
        let mut scopes = Vec::new();
        for s in &r.scopes {
            match Scope::new(s) {
                Ok(s) => scopes.push(s),
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
        if !r.public && !r.tokens && !r.api_keys && !r.client_certificates {
            errors.push(format!(
                "{at}: accepts neither API keys, tokens nor client certificates (public = true takes anyone)"
            ));
        }
        if r.tokens && !self.oauth.enabled {
            errors.push(format!("{at}: tokens = true needs [oauth] enabled = true"));
        }
        let upstream = Upstream::parse(&r.upstream).map_err(|e| format!("{at}: {e}"));
        if !r.upstream.contains("://") && !self.upstreams.iter().any(|g| g.name == r.upstream) {
            errors.push(format!(
                "{at}: upstream {:?} is neither a URL nor the name of an [[upstreams]] group",
                r.upstream
            ));
        }
        let options = self.route_options(&at, r, &mut errors);
        let rate = match &r.rate {
            Some(spec) => RateSpec::parse(spec, r.burst)
                .map(Some)
                .map_err(|e| format!("{at}: {e}")),
            None if r.burst.is_some() => Err(format!("{at}: burst needs a rate")),
            None => Ok(None),
        };
        let cost = match r.cost {
            Some(0) => Err(format!("{at}: cost must be at least 1")),
            Some(c) if c > keyward_core::policy::MAX_COUNT => Err(format!("{at}: cost is larger than 1,000,000,000")),
            Some(c) => Ok(c),
            None => Ok(1),
        };
        let cors = match &r.cors {
            None => Ok(None),
            Some(c) => {
                let methods = if c.allowed_methods.is_empty() {
                    if r.methods.is_empty() {
                        vec!["GET".to_owned()]
                    } else {
                        r.methods.clone()
                    }
                } else {
                    c.allowed_methods.clone()
                };
                let max_age = c.max_age.unwrap_or(Duration::from_secs(600)).as_secs();
                keyward_edge::cors::Cors::new(
                    &c.allowed_origins,
                    &methods,
                    &c.allowed_headers,
                    &c.expose_headers,
                    c.allow_credentials,
                    u32::try_from(max_age).unwrap_or(u32::MAX),
                )
                .map(Some)
                .map_err(|e| format!("{at}: {e}"))
            }
        };
        let (upstream, rate, cost, cors) = match (upstream, rate, cost, cors) {
            (Ok(u), Ok(r), Ok(c), Ok(co)) if errors.is_empty() => (u, r, c, co),
            (u, r, c, co) => {
                errors.extend([u.err(), r.err(), c.err(), co.err()].into_iter().flatten());
                return Err(errors);
            }
        };
        Ok(Route {
            name: r.name.clone(),
            path_prefix: r.path_prefix.clone(),
            methods,
            upstream,
            scopes,
            scope_mode: r.scope_mode,
            limits: RouteLimits {
                route: r.name.clone(),
                rate,
                rate_by: r.rate_by,
                cost,
            },
            tokens: r.tokens,
            api_keys: r.api_keys,
            client_certificates: r.client_certificates,
            publishable: r.publishable,
            cors,
            audience: r.audience.clone().unwrap_or_else(|| self.oauth.audience.clone()),
            options,
            series: Default::default(),
        })
    }

    /// A route's proxy options (hosts, rewrites, header rules, timeouts, body size, public
    /// access, WebSocket, a URL upstream's TLS); problems go to `errors`.
    fn route_options(&self, at: &str, r: &RouteSection, errors: &mut Vec<String>) -> RouteOptions {
        let mut o = RouteOptions::default();
        for h in &r.hosts {
            match HostPattern::parse(h) {
                Ok(p) => o.hosts.push(p),
                Err(e) => errors.push(format!("{at}: hosts: {e}")),
            }
        }
        if r.hosts.len() > 64 {
            errors.push(format!("{at}: hosts: at most 64"));
        }
        let rules = |which: &str, section: &Option<super::schema::HeaderRulesSection>, errors: &mut Vec<String>| {
            match section {
                None => HeaderRules::default(),
                Some(s) => HeaderRules::parse(&s.set, &s.remove).unwrap_or_else(|e| {
                    errors.push(format!("{at}: {which}: {e}"));
                    HeaderRules::default()
                }),
            }
        };
        o.request_headers = rules("request_headers", &r.request_headers, errors);
        o.response_headers = rules("response_headers", &r.response_headers, errors);
        o.public = r.public;
        if r.public {
            if !r.scopes.is_empty() {
                errors.push(format!(
                    "{at}: a public route checks no credential, so it cannot require scopes"
                ));
            }
            if r.rate.is_some() && !matches!(r.rate_by, RateBy::ClientIp | RateBy::Global) {
                errors.push(format!(
                    "{at}: a public route has no key or app to limit: rate_by = \"client_ip\" or \"global\""
                ));
            }
        }
        o.strip_prefix = r.strip_prefix;
        o.preserve_host = r.preserve_host;
        o.timeout = r.timeout;
        o.connect_timeout = r.connect_timeout;
        if r.max_body_size == Some(0) {
            errors.push(format!("{at}: max_body_size must be at least 1 byte"));
        }
        o.max_body_size = r.max_body_size;
        o.websocket = r.websocket;
        if let Some(d) = r.idle_timeout {
            o.idle_timeout = d;
        }
        if let Some(d) = r.max_tunnel_duration {
            o.max_tunnel_duration = d;
        }
        if (r.idle_timeout.is_some() || r.max_tunnel_duration.is_some()) && !r.websocket {
            errors.push(format!(
                "{at}: idle_timeout and max_tunnel_duration are for websocket = true routes"
            ));
        }
        let tls_set = r.ca_file.is_some()
            || r.server_name.is_some()
            || r.client_cert_file.is_some()
            || r.client_key_file.is_some();
        if (tls_set || r.protocol.is_some()) && !r.upstream.contains("://") {
            errors.push(format!(
                "{at}: protocol, ca_file, server_name, client_cert_file and client_key_file go on the [[upstreams]] group {:?}",
                r.upstream
            ));
        }
        if let Some(ttl) = r.decision_cache {
            if ttl.subsec_nanos() != 0 || !(1..=MAX_DECISION_CACHE_SECS).contains(&ttl.as_secs()) {
                errors.push(format!(
                    "{at}: decision_cache must be whole seconds from 1s to {MAX_DECISION_CACHE_SECS}s"
                ));
            }
            // A reused allow never reaches keyward: it would consume no rate and no quota.
            if r.rate.is_some() {
                errors.push(format!(
                    "{at}: decision_cache cannot be used with a route rate: answers reused by a proxy would not count"
                ));
            }
            if r.cost.is_some() {
                errors.push(format!(
                    "{at}: decision_cache cannot be used with a quota cost: answers reused by a proxy would not count"
                ));
            }
            o.decision_cache = Some(ttl);
        }
        o.url_upstream = UrlUpstream {
            protocol: r.protocol.unwrap_or_default(),
            ca_file: r.ca_file.clone(),
            server_name: r.server_name.clone(),
            client_cert_file: r.client_cert_file.clone(),
            client_key_file: r.client_key_file.clone(),
        };
        o
    }
}
