//! The edge's one request context (pingora's per-request context is the model): what the
//! engine's decision needs from an HTTP request ([`Extracted`] → [`RequestContext`]), and what
//! is built from the decision's result — the identity headers, the forwarding headers and the
//! header hygiene — for the gateway's upstream request and the verify / forward-auth answers
//! alike. Nothing here decides: the engine does ([`keyward_engine::Engine::authenticate`]).

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use keyward_core::KeyFormat;
use keyward_engine::mtls::PresentedCert;
use keyward_engine::{DpopHeader, KeyCredential, Principal, RequestContext, RouteFacts, TokenCredential};

/// The credentials of a request, as found in its headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extracted<'a> {
    pub key: KeyCredential<'a>,
    pub token: TokenCredential<'a>,
    pub dpop: DpopHeader<'a>,
}

/// Finds the credentials: API keys in the configured headers (an empty header is no
/// credential, the classic behaviour) and in `Authorization: Bearer` when the value is shaped
/// like a key; access tokens in `Authorization: Bearer` (other values) or `DPoP`; the `DPoP`
/// proof header fields. Which of them decides is the engine's business (a route that takes no
/// tokens leaves `Authorization` to the upstream).
pub(crate) fn extract<'a>(headers: &'a HeaderMap, names: &[HeaderName], format: &KeyFormat) -> Extracted<'a> {
    let mut key = KeyCredential::None;
    let mut keys = 0usize;
    for name in names {
        for v in headers.get_all(name) {
            if v.is_empty() {
                continue;
            }
            keys += 1;
            key = match v.to_str() {
                Ok(s) => KeyCredential::One {
                    value: s.trim(),
                    bearer: false,
                },
                Err(_) => KeyCredential::Malformed { bearer: false },
            };
        }
    }
    let mut token = TokenCredential::None;
    let mut tokens = 0usize;
    for v in headers.get_all(header::AUTHORIZATION) {
        let Ok(s) = v.to_str() else { continue };
        let Some((scheme, rest)) = s.split_once(' ') else {
            continue;
        };
        let dpop = scheme.eq_ignore_ascii_case("dpop");
        if !dpop && !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let value = rest.trim();
        if value.is_empty() {
            continue;
        }
        if !dpop && format.looks_like_key(value) {
            keys += 1;
            key = KeyCredential::One { value, bearer: true };
        } else {
            tokens += 1;
            token = TokenCredential::One { value, dpop };
        }
    }
    if keys > 1 {
        key = KeyCredential::Multiple;
    }
    if tokens > 1 {
        token = TokenCredential::Multiple;
    }
    let dpop = DpopHeader::from_values(headers.get_all("dpop").iter().map(HeaderValue::as_bytes));
    Extracted { key, token, dpop }
}

/// What the edge knows about a request, for [`context`].
pub(crate) struct RequestView<'a> {
    /// Headers that may carry the credential (and the DPoP proof).
    pub headers: &'a HeaderMap,
    pub method: &'a Method,
    pub path: &'a str,
    pub client: IpAddr,
    /// The client certificate of the TLS connection, if any.
    pub peer_cert: Option<PresentedCert<'a>>,
    /// The `htu` a DPoP proof must name, when it is not `oauth.issuer` + `path`.
    pub htu: Option<&'a str>,
}

/// The engine's request context for a request on `route`.
pub(crate) fn context<'a>(
    route: RouteFacts<'a>,
    req: &RequestView<'a>,
    credential_headers: &[HeaderName],
    format: &KeyFormat,
) -> RequestContext<'a> {
    let found = extract(req.headers, credential_headers, format);
    RequestContext {
        route,
        key: found.key,
        token: found.token,
        dpop: found.dpop,
        client_ip: req.client,
        peer_cert: req.peer_cert,
        origin: req.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        method: req.method.as_str(),
        path: req.path,
        htu: req.htu,
        user_agent: req.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
    }
}

// ---- the client's address ------------------------------------------------------------------

pub(crate) fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|n| n.contains(&ip))
}

/// Parses one forwarded-for element: `203.0.113.7`, `203.0.113.7:4711`, `[2001:db8::1]:4711`,
/// `"[2001:db8::1]"`, `2001:db8::1`. `unknown` and obfuscated identifiers give `None`.
fn parse_forwarded_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let inner = rest.split(']').next()?;
        return inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (host, port) = s.rsplit_once(':')?;
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    None
}

/// The addresses a chain of proxies reported, oldest first: `Forwarded` (RFC 7239) when
/// present, else `X-Forwarded-For`. Unparsable elements are kept as `None`.
fn forwarded_chain(h: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = h
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|elem| {
                elem.split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_forwarded_addr(v))
            })
            .collect();
    }
    h.get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .flat_map(|v| v.unwrap_or("\u{0}").split(',').collect::<Vec<_>>())
        .map(parse_forwarded_addr)
        .collect()
}

/// The client's address: the direct peer, unless the peer is a trusted proxy, in which case
/// the right-most address of the forwarded chain that is not itself a trusted proxy. An
/// unparsable element stops the walk at the last trusted hop.
pub fn client_ip(peer: IpAddr, h: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_chain(h).into_iter().rev() {
        match hop {
            None => return client,
            Some(ip) => {
                client = ip;
                if !trusted(ip, proxies) {
                    return ip;
                }
            }
        }
    }
    client
}

// ---- identity and hygiene --------------------------------------------------------------------

/// Header-safe text: visible ASCII kept, everything else percent-encoded.
pub(crate) fn header_text(s: &str) -> HeaderValue {
    // The common case (ids, names, scopes): nothing to encode, one copy.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%') {
        if let Ok(v) = HeaderValue::from_str(s) {
            return v;
        }
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Appends `ip` as text (`Display`'s form) to `out`; IPv4 without the formatting machinery (it
/// is written on every proxied request, twice).
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + (o / 10) % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        IpAddr::V6(a) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{a}");
        }
    }
}

const X_KEYWARD_CLIENT_IP: HeaderName = HeaderName::from_static("x-keyward-client-ip");
const X_KEYWARD_APP: HeaderName = HeaderName::from_static("x-keyward-app");
const X_KEYWARD_APP_ID: HeaderName = HeaderName::from_static("x-keyward-app-id");
const X_KEYWARD_CLIENT_ID: HeaderName = HeaderName::from_static("x-keyward-client-id");
const X_KEYWARD_KEY_ID: HeaderName = HeaderName::from_static("x-keyward-key-id");
const X_KEYWARD_SCOPES: HeaderName = HeaderName::from_static("x-keyward-scopes");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const DPOP: HeaderName = HeaderName::from_static("dpop");

/// Sets the identity headers of an admitted request, for the upstream (gateway) or the proxy
/// that asked (forward-auth): app, app id, key id or client id, scopes, client address (only
/// the address for the anonymous caller of a public route).
pub(crate) fn insert_identity(h: &mut HeaderMap, p: &Principal, client: IpAddr) {
    let mut ip = String::with_capacity(15);
    push_ip(&mut ip, client);
    h.insert(X_KEYWARD_CLIENT_IP, header_text(&ip));
    if matches!(p, Principal::Anonymous) {
        return;
    }
    h.insert(X_KEYWARD_APP, header_text(p.app_name()));
    h.insert(X_KEYWARD_APP_ID, header_text(p.app_id()));
    match p.client_id() {
        Some(c) => h.insert(X_KEYWARD_CLIENT_ID, header_text(c)),
        None => h.insert(X_KEYWARD_KEY_ID, header_text(p.id())),
    };
    let mut scopes = String::new();
    for (i, s) in p.scopes().iter().enumerate() {
        if i > 0 {
            scopes.push(' ');
        }
        scopes.push_str(s.as_str());
    }
    h.insert(X_KEYWARD_SCOPES, header_text(&scopes));
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Usually there are none: one look at each header instead of a removal per name.
    if !h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// The request's `TE` lists `trailers` (any case, parameters ignored).
fn accepts_trailers(h: &HeaderMap) -> bool {
    h.get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// What goes upstream with an admitted request.
pub(crate) struct Forwarding<'a> {
    pub principal: &'a Principal,
    /// The client's `Host` goes upstream as it is (it is also in `X-Forwarded-Host`).
    pub preserve_host: bool,
    /// The credential came in `Authorization` (which then goes too).
    pub in_authorization: bool,
    pub credential_headers: &'a [HeaderName],
    pub trusted_proxies: &'a [IpNet],
    /// The TCP peer, and the client address resolved behind trusted proxies.
    pub peer: IpAddr,
    pub client: IpAddr,
}

/// Turns a client's request headers into the upstream's: hop-by-hop headers, the credential
/// (and any DPoP proof) and every client-sent `x-keyward-*` header removed; `Host` kept as
/// `X-Forwarded-For`'s companion `X-Forwarded-Host`; forwarded-for headers believed only from
/// trusted proxies; then the identity headers, added after the removals so that
/// `Connection: x-keyward-app` cannot strip them.
pub(crate) fn upstream_headers(h: &mut HeaderMap, authority: Option<&str>, f: &Forwarding<'_>) {
    // `TE: trailers` (the only TE an HTTP/2 request may carry, RFC 9113 §8.2.2) says the client
    // reads trailers; gRPC servers refuse a call without it. It goes on (keyward-upstream drops
    // it towards HTTP/1.1 upstreams, where TE is hop-by-hop), every other TE does not.
    let te_trailers = accepts_trailers(h);
    strip_hop_by_hop(h);
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    for name in f.credential_headers {
        h.remove(name);
    }
    if f.in_authorization {
        h.remove(header::AUTHORIZATION);
    }
    h.remove(DPOP);
    let spoofed: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-keyward-"))
        .cloned()
        .collect();
    for k in spoofed {
        h.remove(k);
    }
    let host = if f.preserve_host {
        h.get(header::HOST).cloned()
    } else {
        h.remove(header::HOST)
    };
    if let Some(host) = host {
        h.insert(X_FORWARDED_HOST, host);
    } else if let Some(v) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
        h.insert(X_FORWARDED_HOST, v);
    }
    // Forwarded-for headers from an untrusted peer are dropped, never passed on.
    let peer = f.peer.to_canonical();
    // The chain believed, then the peer, joined with ", ", in one buffer.
    let mut chain = String::with_capacity(48);
    if trusted(peer, f.trusted_proxies) {
        for v in h.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()) {
            chain.push_str(v);
            chain.push_str(", ");
        }
    } else {
        h.remove(header::FORWARDED);
    }
    push_ip(&mut chain, peer);
    if let Ok(v) = HeaderValue::from_str(&chain) {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    insert_identity(h, f.principal, f.client);
}

// ---- response decoration ---------------------------------------------------------------------

/// An HTTP-date (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&fmt).unwrap_or_default()
}

/// `Deprecation` (RFC 9745, `@<unix seconds>`) and `Sunset` (RFC 8594, an HTTP-date) for a
/// key in its rotation grace period, or expiring within `window`: clients learn before they
/// break. Nothing for tokens and certificates.
pub fn lifecycle_headers(
    principal: &Principal,
    now: time::OffsetDateTime,
    window: Duration,
) -> Vec<(HeaderName, HeaderValue)> {
    let Some(record) = principal.key() else {
        return Vec::new();
    };
    let Some(expires) = record.expires_at else {
        return Vec::new();
    };
    let since = match record.lifecycle.rotated_at {
        Some(rotated) => rotated,
        // An imported legacy secret is deprecated from the day it was imported.
        None if record.lifecycle.legacy => record.created_at,
        None => {
            let window = time::Duration::try_from(window).unwrap_or(time::Duration::ZERO);
            let from = expires - window;
            if now < from {
                return Vec::new();
            }
            from
        }
    };
    let mut out = Vec::with_capacity(2);
    if let Ok(v) = HeaderValue::from_str(&format!("@{}", since.unix_timestamp())) {
        out.push((HeaderName::from_static("deprecation"), v));
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(expires)) {
        out.push((HeaderName::from_static("sunset"), v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use keyward_core::KeyRecord;

    fn key(r: &KeyRecord) -> Principal {
        Principal::Key(Arc::new(r.clone()))
    }

    #[test]
    fn http_dates_and_lifecycle_headers() {
        let t = time::OffsetDateTime::from_unix_timestamp(784_111_777).unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut r = KeyRecord {
            id: "key_1".into(),
            app_id: "app_1".into(),
            app_name: "a".into(),
            name: None,
            hint: "h".into(),
            env: keyward_core::KeyEnv::Live,
            scopes: vec![],
            expires_at: None,
            created_at: now,
            revoked_at: None,
            policy: Default::default(),
            app_policy: Default::default(),
            lifecycle: Default::default(),
        };
        let week = Duration::from_secs(7 * 86_400);
        assert!(
            lifecycle_headers(&key(&r), now, week).is_empty(),
            "no expiry, no headers"
        );
        r.expires_at = Some(now + time::Duration::days(30));
        assert!(lifecycle_headers(&key(&r), now, week).is_empty(), "far from expiry");
        r.expires_at = Some(now + time::Duration::days(3));
        let h = lifecycle_headers(&key(&r), now, week);
        assert_eq!(
            h[0].1,
            format!(
                "@{}",
                (now + time::Duration::days(3) - time::Duration::days(7)).unix_timestamp()
            )
        );
        assert_eq!(h[1].1, http_date(now + time::Duration::days(3)).as_str());
        r.lifecycle.rotated_at = Some(now - time::Duration::hours(1));
        r.expires_at = Some(now + time::Duration::days(6));
        let h = lifecycle_headers(&key(&r), now, Duration::from_secs(1));
        assert_eq!(
            h[0].1,
            format!("@{}", (now - time::Duration::hours(1)).unix_timestamp())
        );
    }

    #[test]
    fn ip_text_is_displays_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.10.100.199",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::from("x ");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x {ip}"));
        }
    }

    #[test]
    fn header_text_encodes_non_ascii() {
        assert_eq!(header_text("Café app").to_str().unwrap(), "Caf%C3%A9 app");
        assert_eq!(header_text("a\r\nb").to_str().unwrap(), "a%0D%0Ab");
    }

    #[test]
    fn client_ip_believes_only_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let spoof = h(&[("x-forwarded-for", "1.2.3.4")]);
        // Untrusted peer: headers ignored.
        assert_eq!(client_ip(ip("203.0.113.9"), &spoof, &proxies), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("203.0.113.9"), &spoof, &[]), ip("203.0.113.9"));
        // Trusted peer: right-most untrusted address.
        assert_eq!(client_ip(ip("10.0.0.1"), &spoof, &proxies), ip("1.2.3.4"));
        let chain = h(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &proxies), ip("1.2.3.4"));
        let split = h(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4:5555, 10.1.1.1"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.1"), &split, &proxies), ip("1.2.3.4"));
        // All trusted: the left-most.
        let all = h(&[("x-forwarded-for", "10.9.9.9, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &all, &proxies), ip("10.9.9.9"));
        // Garbage stops the walk at the last trusted hop.
        let junk = h(&[("x-forwarded-for", "1.2.3.4, garbage, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &junk, &proxies), ip("10.0.0.7"));
        // RFC 7239 Forwarded wins over X-Forwarded-For; IPv6 with brackets and ports.
        let fwd = h(&[
            ("forwarded", "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https"),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(client_ip(ip("::1"), &fwd, &proxies), ip("2001:db8::1"));
        let hidden = h(&[("forwarded", "for=_hidden, for=10.0.0.5")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &hidden, &proxies), ip("10.0.0.5"));
        // IPv4-mapped peers are normalised before matching.
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &spoof, &proxies), ip("1.2.3.4"));
        assert_eq!(client_ip(ip("::ffff:203.0.113.9"), &spoof, &proxies), ip("203.0.113.9"));
    }

    #[test]
    fn connection_named_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-foo, keep-alive"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-foo").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get("x-bar").unwrap(), "2");
    }

    #[test]
    fn te_trailers_is_recognised_and_nothing_else() {
        let te = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TE, HeaderValue::from_bytes(v).unwrap());
            }
            accepts_trailers(&h)
        };
        assert!(te(&[b"trailers"]));
        assert!(te(&[b"gzip;q=0.5, TRAILERS"]));
        assert!(te(&[b"gzip", b" trailers ;q=1"]));
        assert!(!te(&[]));
        assert!(!te(&[b""]));
        assert!(!te(&[b"gzip, deflate"]));
        assert!(!te(&[b"trailersx, x-trailers"]));
        assert!(!te(&[b"gzip;trailers"]), "a parameter is not the coding");
        assert!(!te(&[b"\xfftrailers"]), "not text");
    }
}
