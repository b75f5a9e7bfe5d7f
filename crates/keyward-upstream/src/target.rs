//! An upstream URL (`http://host:port/base`, `https://…`), parsed once at configuration time, and
//! the per-request URI built from its pre-parsed parts (no `format!` and no re-parse of a whole
//! URI on the hot path).

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use http::uri::{Authority, PathAndQuery, Scheme as HttpScheme};
use http::Uri;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::UpstreamError;

/// Longest accepted upstream URL.
const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A parsed upstream URL. No credentials, query or fragment; the base path has no trailing `/`
/// (`""` for the root).
#[derive(Clone)]
pub struct TargetUrl {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    base: String,
}

impl TargetUrl {
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// `host:port` as written (the value of `Host` / `:authority`).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
    /// The host without brackets (an IPv6 address is bare).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The base path (`""` or `/base`, never a trailing `/`).
    pub fn base_path(&self) -> &str {
        &self.base
    }

    /// Same scheme, host (case-insensitive) and port.
    pub fn origin_eq(&self, other: &TargetUrl) -> bool {
        self.scheme == other.scheme && self.port == other.port && self.host.eq_ignore_ascii_case(&other.host)
    }

    /// The path and query sent upstream for a request whose path and query are `pq`: the route's
    /// `strip_prefix` removed (at a segment boundary only), then the base path put in front.
    /// Allocation-free when there is neither a base path nor a prefix to strip.
    pub fn path_for(&self, pq: &PathAndQuery, strip_prefix: Option<&str>) -> Result<PathAndQuery, UpstreamError> {
        let path = pq.path();
        let rest = match strip_prefix {
            Some(prefix) if !prefix.is_empty() && prefix != "/" => strip(path, prefix),
            _ => path,
        };
        let rest_is_path = std::ptr::eq(rest, path);
        if self.base.is_empty() && rest_is_path {
            return Ok(pq.clone());
        }
        let query = pq.query();
        let mut buf = BytesMut::with_capacity(self.base.len() + rest.len() + 2 + query.map_or(0, str::len));
        buf.put_slice(self.base.as_bytes());
        if rest.starts_with('/') {
            buf.put_slice(rest.as_bytes());
        } else {
            buf.put_u8(b'/');
            buf.put_slice(rest.as_bytes());
        }
        if let Some(q) = query {
            buf.put_u8(b'?');
            buf.put_slice(q.as_bytes());
        }
        PathAndQuery::from_maybe_shared(buf.freeze()).map_err(|_| UpstreamError::InvalidUri)
    }

    /// The absolute URI for `pq` on this target (what an h2 request carries as `:scheme`,
    /// `:authority`, `:path`); HTTP/1.1 requests use [`TargetUrl::path_for`] (origin form).
    pub fn uri_for(&self, pq: &PathAndQuery, strip_prefix: Option<&str>) -> Result<Uri, UpstreamError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(match self.scheme {
            Scheme::Http => HttpScheme::HTTP,
            Scheme::Https => HttpScheme::HTTPS,
        });
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(self.path_for(pq, strip_prefix)?);
        Uri::from_parts(parts).map_err(|_| UpstreamError::InvalidUri)
    }
}

/// `path` without `prefix` when `prefix` ends at a segment boundary of `path`; `path` otherwise.
fn strip<'a>(path: &'a str, prefix: &str) -> &'a str {
    let Some(rest) = path.strip_prefix(prefix) else {
        return path;
    };
    if rest.is_empty() {
        "/"
    } else if rest.starts_with('/') || prefix.ends_with('/') {
        rest
    } else {
        path
    }
}

/// Why an upstream URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid upstream URL {url:?}: {reason}")]
pub struct UrlError {
    url: String,
    reason: &'static str,
}

impl FromStr for TargetUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let shown = redact(s);
        let s_shown = shown.as_str();
        let shown = if s_shown.len() > 80 {
            format!("{}…", &s_shown[..s_shown.floor_char_boundary_compat(80)])
        } else {
            s_shown.to_owned()
        };
        let fail = |reason| UrlError {
            url: shown.clone(),
            reason,
        };
        if s.len() > MAX_URL_LEN {
            return Err(fail("too long (at most 2048 bytes)"));
        }
        let scheme = if s.starts_with("http://") {
            Scheme::Http
        } else if s.starts_with("https://") {
            Scheme::Https
        } else {
            return Err(fail("it must start with http:// or https://"));
        };
        let after = &s[s.find("://").map_or(0, |i| i + 3)..];
        if after.is_empty() || after.starts_with('/') {
            return Err(fail("no host"));
        }
        if s.contains('#') {
            return Err(fail("a fragment has no meaning here"));
        }
        let uri: Uri = s.parse().map_err(|_| fail("invalid URL syntax"))?;
        let authority = uri.authority().ok_or_else(|| fail("no host"))?.clone();
        if authority.as_str().contains('@') {
            return Err(fail("credentials in the URL are not allowed"));
        }
        if uri.query().is_some() {
            return Err(fail("a query has no meaning here"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(fail("no host"));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let a = authority.as_str();
        let host_end = if a.starts_with('[') {
            a.find(']').map_or(a.len(), |i| i + 1)
        } else {
            a.find(':').unwrap_or(a.len())
        };
        let port = match authority.port() {
            None if a.len() > host_end + 1 => return Err(fail("the port must be 1-65535")),
            None if a.len() > host_end => return Err(fail("empty port")),
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            },
            Some(p) => match p.as_str().parse::<u16>() {
                Ok(0) | Err(_) => return Err(fail("the port must be 1-65535")),
                Ok(n) => n,
            },
        };
        let base = uri.path().trim_end_matches('/').to_owned();
        Ok(TargetUrl {
            scheme,
            authority,
            host,
            port,
            base,
        })
    }
}

/// `url` with any user information (`user:password@`) replaced, for error messages.
fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// `str::floor_char_boundary` is unstable; this is the same for display truncation.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        if i >= self.len() {
            return self.len();
        }
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme.as_str(), self.authority, self.base)
    }
}

impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetUrl({self})")
    }
}

impl PartialEq for TargetUrl {
    fn eq(&self, other: &Self) -> bool {
        self.origin_eq(other) && self.base == other.base
    }
}
impl Eq for TargetUrl {}

impl Serialize for TargetUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TargetUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pq(s: &str) -> PathAndQuery {
        s.parse().unwrap()
    }

    #[test]
    fn parses_parts() {
        let t: TargetUrl = "https://Api.Example:8443/v2/".parse().unwrap();
        assert_eq!(
            (t.scheme(), t.host(), t.port(), t.base_path()),
            (Scheme::Https, "Api.Example", 8443, "/v2")
        );
        assert_eq!(t.to_string(), "https://Api.Example:8443/v2");
        let t: TargetUrl = "http://[::1]:9000".parse().unwrap();
        assert_eq!((t.host(), t.port(), t.base_path()), ("::1", 9000, ""));
        assert_eq!(t.authority().as_str(), "[::1]:9000");
        let t: TargetUrl = "http://h".parse().unwrap();
        assert_eq!(t.port(), 80);
        let t: TargetUrl = "https://h".parse().unwrap();
        assert_eq!(t.port(), 443);
        assert!("http://h:"
            .parse::<TargetUrl>()
            .unwrap_err()
            .to_string()
            .contains("port"));
        let e = "ftp://a-very-long-host-name.example/"
            .repeat(10)
            .parse::<TargetUrl>()
            .unwrap_err()
            .to_string();
        assert!(e.contains('…') && e.len() < 200, "{e}");
    }

    #[test]
    fn uri_for_base_and_strip_prefix() {
        let root: TargetUrl = "http://h:1".parse().unwrap();
        let base: TargetUrl = "https://h:2/base/".parse().unwrap();
        let cases = [
            (&root, "/a/b?x=1", None, "/a/b?x=1"),
            (&root, "/api/b?x=1", Some("/api"), "/b?x=1"),
            (&root, "/api", Some("/api"), "/"),
            (&root, "/api?q", Some("/api"), "/?q"),
            (&root, "/api/", Some("/api/"), "/"),
            (&root, "/api/x", Some("/api/"), "/x"),
            (&root, "/apix", Some("/api"), "/apix"),
            (&root, "/other", Some("/api"), "/other"),
            (&root, "/a", Some("/"), "/a"),
            (&base, "/a?x", None, "/base/a?x"),
            (&base, "/", None, "/base/"),
            (&base, "/api/v1/k?z=%20", Some("/api"), "/base/v1/k?z=%20"),
            (&base, "/api", Some("/api"), "/base/"),
        ];
        for (t, input, strip, want) in cases {
            assert_eq!(
                t.path_for(&pq(input), strip).unwrap().as_str(),
                want,
                "{t} {input} {strip:?}"
            );
        }
        assert_eq!(
            base.uri_for(&pq("/x?y"), None).unwrap().to_string(),
            "https://h:2/base/x?y"
        );
        assert_eq!(root.uri_for(&pq("/x"), None).unwrap().to_string(), "http://h:1/x");
    }
}
