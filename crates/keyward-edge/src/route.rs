//! What a route does besides deciding (issue 18): which hosts it answers, header edits towards
//! the upstream and back, path rewriting, its own timeout and body size. Parsed and checked
//! once at load time; applied per request without re-parsing.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// Header edits (`[routes.request_headers]` / `[routes.response_headers]`): `remove` first,
/// then `set` (replacing every value of the name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// Headers a route's rules may not touch: keyward's identity headers (`x-keyward-*`), and the
/// hop-by-hop headers and framing that belong to each connection.
fn reserved(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-keyward-")
        || matches!(
            n,
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
                | "host"
        )
}

impl HeaderRules {
    /// Checks names and values: valid HTTP tokens and field values, not reserved, at most 64
    /// of each.
    pub fn parse(set: &BTreeMap<String, String>, remove: &[String]) -> Result<HeaderRules, String> {
        if set.len() > 64 || remove.len() > 64 {
            return Err("at most 64 headers to set and 64 to remove".into());
        }
        let name = |n: &str| -> Result<HeaderName, String> {
            let h = HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("{n:?} is not a valid header name"))?;
            if reserved(&h) {
                return Err(format!(
                    "{n:?} cannot be set or removed by a route (x-keyward-* identity headers, hop-by-hop headers, Host, Content-Length)"
                ));
            }
            Ok(h)
        };
        let mut rules = HeaderRules::default();
        for (n, v) in set {
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("the value of {n:?} is not a valid header value (visible ASCII)"))?;
            rules.set.push((name(n)?, value));
        }
        for n in remove {
            rules.remove.push(name(n)?);
        }
        Ok(rules)
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
    }
}

/// One `hosts` entry: `api.example.com`, or `*.example.com` (any subdomain, not the domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot: `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{s:?} is not a host name (api.example.com) or a wildcard (*.example.com)"
            ));
        }
        Ok(if wild {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// 2 for an exact match, 1 for a wildcard match, 0 for none. `host` is lowercase, without
    /// port.
    fn rank(&self, host: &str) -> u8 {
        match self {
            HostPattern::Exact(h) if h == host => 2,
            HostPattern::Wildcard(suffix) if host.len() > suffix.len() && host.ends_with(suffix.as_str()) => 1,
            _ => 0,
        }
    }
}

/// The host of a request (`Host` header or the authority of an absolute target), lowercase,
/// without port; `None` when there is none or it is not a plain name or address.
pub fn request_host(headers: &HeaderMap, authority: Option<&str>) -> Option<String> {
    let raw = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(authority)?;
    let host = match raw.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        Some(rest) => rest.split(']').next()?,
        None => raw.rsplit_once(':').map_or(raw, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                raw
            }
        }),
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.').to_ascii_lowercase())
}

/// The route's own proxy settings.
#[derive(Debug, Clone)]
pub struct RouteOptions {
    /// Matched before paths; empty: any host.
    pub hosts: Vec<HostPattern>,
    /// No credential is checked (callers are anonymous; limits by client address).
    pub public: bool,
    /// The route's prefix is removed before the upstream's base path is added.
    pub strip_prefix: bool,
    /// The client's `Host` goes upstream (instead of the upstream's own authority, with the
    /// client's in `X-Forwarded-Host`).
    pub preserve_host: bool,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// How long the upstream may take to answer (default `gateway.upstream_timeout`).
    pub timeout: Option<Duration>,
    /// How long connecting (TCP, TLS) may take (default `gateway.connect_timeout`).
    pub connect_timeout: Option<Duration>,
    /// Largest request body (declared or streamed) in bytes; beyond: 413.
    pub max_body_size: Option<u64>,
    /// WebSocket handshakes are tunnelled (off: refused with `upgrade_not_allowed`).
    pub websocket: bool,
    /// A tunnel with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// A tunnel is closed this long after it opened (and at its credential's expiry).
    pub max_tunnel_duration: Duration,
    /// For a URL upstream, the settings of the route's own group.
    pub url_upstream: UrlUpstream,
    /// Forward-auth: how long a caching proxy may reuse an allowed answer (`decision_cache`;
    /// `None`: never, every answer is `no-store`).
    pub decision_cache: Option<Duration>,
}

/// A URL upstream's protocol and TLS settings (an `[[upstreams]]` group has its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlUpstream {
    pub protocol: keyward_upstream::Protocol,
    pub ca_file: Option<std::path::PathBuf>,
    pub server_name: Option<String>,
    pub client_cert_file: Option<std::path::PathBuf>,
    pub client_key_file: Option<std::path::PathBuf>,
}

/// A tunnel's defaults: nginx's `proxy_read_timeout` for idleness, a day at most.
pub const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_TUNNEL: Duration = Duration::from_secs(24 * 3600);

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            hosts: Vec::new(),
            public: false,
            strip_prefix: false,
            preserve_host: false,
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            timeout: None,
            connect_timeout: None,
            max_body_size: None,
            websocket: false,
            idle_timeout: DEFAULT_TUNNEL_IDLE,
            max_tunnel_duration: DEFAULT_MAX_TUNNEL,
            url_upstream: UrlUpstream::default(),
            decision_cache: None,
        }
    }
}

impl RouteOptions {
    /// How well the route's `hosts` match `host`: 2 exact, 1 wildcard, 0 a route without hosts
    /// (any host); `None` when it has hosts and none matches. Without a known host every route
    /// counts as hostless.
    pub fn host_rank(&self, host: Option<&str>) -> Option<u8> {
        match host {
            _ if self.hosts.is_empty() => Some(0),
            None => Some(0),
            Some(h) => self.hosts.iter().map(|p| p.rank(h)).max().filter(|r| *r > 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules_refuse_what_they_must_not_touch() {
        let set = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let ok = HeaderRules::parse(&set(&[("x-env", "prod")]), &["server".into(), "X-Powered-By".into()]).unwrap();
        assert_eq!(ok.set[0].0, "x-env");
        assert_eq!(ok.remove[1], "x-powered-by");
        for bad in [
            "x-keyward-app",
            "X-Keyward-Key-Id",
            "connection",
            "transfer-encoding",
            "host",
            "bad name",
            "",
        ] {
            assert!(HeaderRules::parse(&set(&[(bad, "1")]), &[]).is_err(), "set {bad:?}");
            assert!(
                HeaderRules::parse(&BTreeMap::new(), &[bad.into()]).is_err(),
                "remove {bad:?}"
            );
        }
        assert!(HeaderRules::parse(&set(&[("x-a", "line\nbreak")]), &[]).is_err());
        let many: Vec<String> = (0..65).map(|i| format!("x-{i}")).collect();
        assert!(HeaderRules::parse(&BTreeMap::new(), &many).is_err());
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("internal/1.2"));
        h.append("x-env", HeaderValue::from_static("a"));
        h.append("x-env", HeaderValue::from_static("b"));
        ok.apply(&mut h);
        assert!(h.get("server").is_none());
        assert_eq!(h.get_all("x-env").iter().collect::<Vec<_>>(), vec!["prod"]);
    }

    #[test]
    fn hosts_exact_wildcard_and_refused() {
        let p = |s: &str| HostPattern::parse(s).unwrap();
        assert_eq!(p("API.Example.com"), HostPattern::Exact("api.example.com".into()));
        assert_eq!(p("*.example.com").rank("a.example.com"), 1);
        assert_eq!(
            p("*.example.com").rank("example.com"),
            0,
            "a wildcard is for subdomains"
        );
        assert_eq!(p("*.example.com").rank("evil-example.com"), 0);
        assert_eq!(p("api.example.com").rank("api.example.com"), 2);
        for bad in [
            "",
            "*.",
            "a..b",
            "-a.com",
            "a_b.com",
            "*.*.com",
            "a.com:80",
            "http://a.com",
            &"a".repeat(64),
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
        let opts = RouteOptions {
            hosts: vec![p("api.example.com"), p("*.example.com")],
            ..Default::default()
        };
        assert_eq!(opts.host_rank(Some("api.example.com")), Some(2));
        assert_eq!(opts.host_rank(Some("x.example.com")), Some(1));
        assert_eq!(opts.host_rank(Some("other.org")), None);
        assert_eq!(RouteOptions::default().host_rank(Some("other.org")), Some(0));
    }

    #[test]
    fn request_hosts() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(axum::http::header::HOST, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(
            request_host(&h("API.example.com:8080"), None).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(request_host(&h("example.com."), None).as_deref(), Some("example.com"));
        assert_eq!(request_host(&h("[::1]:80"), None).as_deref(), Some("::1"));
        assert_eq!(request_host(&HeaderMap::new(), Some("a.b:1")).as_deref(), Some("a.b"));
        assert_eq!(request_host(&HeaderMap::new(), None), None);
    }
}
