//! The gateway's credential extraction from request headers (configured key headers, then
//! `Authorization: Bearer`), access-token extraction (`Bearer` / `DPoP`), the suspicious-path
//! check and the client address behind trusted proxies.
//!
//! Input: the first line is the request path; every further line is one header `name: value`
//! (raw bytes; lines whose name or value `http` refuses are skipped, as hyper would refuse them).
#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use keyward_core::KeyFormat;
use keyward_edge::fuzz_api::{bearer_jwt, extract, suspicious_path, Found};
use keyward_edge::gateway::client_ip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let path = lines.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..i], &line[i + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        headers.append(n, v);
    }
    let format = KeyFormat::default();
    let looks = |s: &str| format.looks_like_key(s);
    let names = [
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("x-kw-key"),
    ];
    match extract(&headers, &names, looks) {
        Found::One { value, bearer: true } => assert!(looks(value), "a Bearer credential that is not key-shaped"),
        Found::One { .. } | Found::None | Found::Malformed { .. } | Found::Multiple => {}
    }
    // Only the configured-header path with no header names at all.
    let _ = extract(&headers, &[], looks);
    if let Some((token, _dpop)) = bearer_jwt(&headers, looks) {
        assert!(
            !token.is_empty() && !looks(token),
            "an access token that is empty or key-shaped"
        );
    }
    if let Ok(p) = std::str::from_utf8(path) {
        let _ = suspicious_path(p);
    }
    let proxies: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let _ = client_ip(peer, &headers, &proxies);
});
