//! Admin API query strings and the admin `Authorization` header, through the real axum admin
//! router in-process (tower `oneshot`) on a temporary SQLite store: the authentication
//! middleware (bootstrap token, scoped `kwadm_` tokens looked up by digest, roles), then the
//! `Query` extraction (`serde_urlencoded`, unknown and duplicate parameters refused) and each
//! list handler's validation (`limit`, `cursor`, `q`, `state`, `env`, `since`, `bucket`, `kind`,
//! `before`, `app`, `key`) and the engine and store behind them.
//!
//! Input: byte 0 selects the endpoint (modulo the table below); byte 1 the mode:
//! - bit 0 clear: the rest is a query string, appended after `?` (requests whose URI `http`
//!   refuses are skipped, as hyper would refuse them); bits 1-2 choose the credential
//!   (0, 3: the bootstrap token, 1: a scoped `read` token, 2: a scoped `write` token). The text
//!   `$KEY` in the query is replaced by the id of an existing key (the ids are random).
//! - bit 0 set: the rest is the `Authorization` header value (values `http` refuses are
//!   skipped), no query. `$READ` / `$WRITE` in it are replaced by the scoped tokens.
//!
//! Invariants: no panic, never a 500. Authorization: exactly the bootstrap token and the two
//! scoped tokens (after `Bearer `, scheme case-insensitive, surrounding blanks ignored)
//! authenticate; anything else is a 401 with `WWW-Authenticate`; scoped tokens get a 403 on
//! `/v1/admin-tokens`. Queries: an unknown or repeated parameter, or a `limit` / `before` that is
//! not a number, is a 400 `invalid-query` (the extractor refuses it before any handler logic);
//! otherwise 200, 400 (`invalid-query`) or, only when `app` / `key` names something, 404; a
//! 200 page holds at most `limit` items; the query-less endpoints (`/v1/signing-keys`,
//! `/v1/keys/{id}`) ignore the query.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use http::{HeaderValue, Method, StatusCode, Uri};
use keyward_fuzz::{Harness, ADMIN_TOKEN};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    h: Harness,
    read: String,
    write: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let h = Harness::new();
        let read = h.admin_token("fuzz-read", "read");
        let write = h.admin_token("fuzz-write", "write");
        Fixture { h, read, write }
    })
}

/// The GET endpoints: path, the query parameters the handler declares (`None`: it takes no
/// `Query`, so the query string is ignored), the largest `limit`, and whether an unknown
/// `app` / `key` filter is a 404.
struct Endpoint {
    path: String,
    params: Option<&'static [&'static str]>,
    max_limit: u32,
    lookups: &'static [&'static str],
}

fn endpoint(sel: u8, h: &Harness) -> Endpoint {
    let e = |path: &str, params, max_limit, lookups| Endpoint {
        path: path.to_owned(),
        params,
        max_limit,
        lookups,
    };
    match sel % 9 {
        0 => e("/v1/apps", Some(&["q", "limit", "cursor"][..]), 500, &[]),
        1 => e(
            "/v1/keys",
            Some(&["app", "state", "env", "q", "limit", "cursor"][..]),
            500,
            &["app"],
        ),
        2 => e(
            "/v1/clients",
            Some(&["app", "state", "q", "limit", "cursor"][..]),
            500,
            &["app"],
        ),
        3 => e(
            "/v1/audit",
            Some(&["since", "key", "target", "kind", "before", "cursor", "limit"][..]),
            1000,
            &[],
        ),
        // `usage` has no `limit`: `max_limit` is unused there.
        4 => e(
            "/v1/usage",
            Some(&["key", "app", "since", "bucket"][..]),
            0,
            &["app", "key"],
        ),
        5 => e("/v1/routes", Some(&["limit", "cursor"][..]), 500, &[]),
        6 => e("/v1/admin-tokens", Some(&["limit", "cursor"][..]), 500, &[]),
        7 => e("/v1/signing-keys", None, 0, &[]),
        _ => e(&format!("/v1/keys/{}", h.key_id), None, 0, &[]),
    }
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

fn problem_type(body: &serde_json::Value) -> &str {
    body["type"].as_str().unwrap_or("")
}

fuzz_target!(|data: &[u8]| {
    let [sel, mode, rest @ ..] = data else { return };
    let f = fixture();
    let h = &f.h;
    let ep = endpoint(*sel, h);
    if mode & 1 == 1 {
        authorization(f, &ep, rest);
    } else {
        query(f, &ep, (mode >> 1) & 3, rest);
    }
});

fn authorization(f: &Fixture, ep: &Endpoint, raw: &[u8]) {
    let raw = replace(raw, b"$READ", f.read.as_bytes());
    let raw = replace(&raw, b"$WRITE", f.write.as_bytes());
    let Ok(value) = HeaderValue::from_bytes(&raw) else {
        return;
    };
    let uri: Uri = ep.path.parse().unwrap();
    let a = f.h.send(Method::GET, uri, Some(value.clone()), b"");
    let path = &ep.path;
    assert!(
        a.status != StatusCode::INTERNAL_SERVER_ERROR,
        "500 on {path} with {value:?}: {}",
        a.body
    );
    // What the middleware is documented to accept: `Bearer <token>` (scheme case-insensitive,
    // blanks around the token ignored), the token one of the three that exist.
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let expected = match presented {
        Some(t) if t == ADMIN_TOKEN => StatusCode::OK,
        Some(t) if t == f.read || t == f.write => {
            if path == "/v1/admin-tokens" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::OK
            }
        }
        _ => StatusCode::UNAUTHORIZED,
    };
    assert_eq!(a.status, expected, "{path} with Authorization {value:?}: {}", a.body);
    if a.status == StatusCode::UNAUTHORIZED {
        assert!(
            a.headers.contains_key("www-authenticate"),
            "401 without WWW-Authenticate on {path}"
        );
        assert_eq!(problem_type(&a.body), "urn:keyward:problem:admin-unauthorized");
    }
}

fn query(f: &Fixture, ep: &Endpoint, cred: u8, raw: &[u8]) {
    let h = &f.h;
    let raw = replace(raw, b"$KEY", h.key_id.as_bytes());
    let mut target = ep.path.clone().into_bytes();
    target.push(b'?');
    target.extend_from_slice(&raw);
    // Only what `http` accepts as a request target reaches the router (hyper refuses the rest).
    let Ok(uri) = Uri::try_from(target) else { return };
    // `http` drops a `#fragment`; the handler sees `uri.query()`, so the oracle does too.
    let q = uri.query().unwrap_or("").to_owned();
    let token = match cred {
        1 => f.read.as_str(),
        2 => f.write.as_str(),
        _ => ADMIN_TOKEN,
    };
    let a = h.send(Method::GET, uri, Some(bearer(token)), b"");
    let path = &ep.path;
    assert!(
        a.status != StatusCode::INTERNAL_SERVER_ERROR,
        "500 on {path}?{q}: {}",
        a.body
    );
    if cred != 0 && cred != 3 && path == "/v1/admin-tokens" {
        // The role check runs before the handler: a scoped token never lists admin tokens.
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}?{q} with a scoped token");
        return;
    }
    let Some(params) = ep.params else {
        // No `Query` extractor: the query string is ignored.
        assert_eq!(a.status, StatusCode::OK, "{path}?{q}: {}", a.body);
        return;
    };
    // Decoded as `serde_urlencoded` (which axum's `Query` uses) decodes it.
    let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut seen = HashSet::new();
    let mut refused_by_extractor = false;
    for (k, v) in &pairs {
        refused_by_extractor |= !params.contains(&k.as_str()) || !seen.insert(k.clone());
        refused_by_extractor |= k == "limit" && v.parse::<u32>().is_err();
        refused_by_extractor |= k == "before" && v.parse::<i64>().is_err();
    }
    let status = a.status;
    if refused_by_extractor {
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{path}?{q} must be refused: {}",
            a.body
        );
    }
    match status {
        StatusCode::OK => {
            let items = a.body["items"].as_array();
            assert!(items.is_some(), "{path}?{q}: 200 without items: {}", a.body);
            if ep.max_limit > 0 {
                let limit = pairs
                    .iter()
                    .find(|(k, _)| k == "limit")
                    .map_or(if path == "/v1/audit" { 100 } else { 50 }, |(_, v)| {
                        v.parse::<u32>().unwrap()
                    });
                assert!(
                    (1..=ep.max_limit).contains(&limit),
                    "{path}?{q}: limit {limit} accepted"
                );
                assert!(
                    items.unwrap().len() <= limit as usize,
                    "{path}?{q}: more than limit items"
                );
            }
        }
        StatusCode::BAD_REQUEST => {
            assert_eq!(
                problem_type(&a.body),
                "urn:keyward:problem:invalid-query",
                "{path}?{q}: {}",
                a.body
            );
        }
        StatusCode::NOT_FOUND => {
            // Only a lookup (`app` / `key`) that names nothing is a 404.
            assert!(
                pairs.iter().any(|(k, _)| ep.lookups.contains(&k.as_str())),
                "{path}?{q}: 404 without a lookup: {}",
                a.body
            );
        }
        s => panic!("{path}?{q}: unexpected status {s}: {}", a.body),
    }
}

/// `haystack` with every `needle` replaced by `with`.
fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}
