//! The gateway's HTTP contract (issue 2, points 4 and 9).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn status_contract_missing_malformed_unknown_scope() {
    let kw = boot().await;
    let (_, read) = kw.key("cats", &["facts:read"], json!({})).await;

    let r = kw.get("/fact", &[]).await;
    let challenges: Vec<String> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(challenges.iter().any(|c| c.starts_with("Bearer")), "{challenges:?}");
    assert!(challenges.iter().any(|c| c.contains("x-api-key")), "{challenges:?}");
    problem(r, 401, "missing_credential").await;

    problem(
        kw.get("/fact", &[("x-api-key", "nope")]).await,
        401,
        "malformed_credential",
    )
    .await;
    // Right shape, wrong checksum.
    let mut bad = read.clone().into_bytes();
    bad[20] = if bad[20] == b'a' { b'b' } else { b'a' };
    let bad = String::from_utf8(bad).unwrap();
    problem(
        kw.get("/fact", &[("x-api-key", &bad)]).await,
        401,
        "malformed_credential",
    )
    .await;
    // Well-formed but unknown.
    let unknown = keyward_core::KeyFormat::default()
        .generate(keyward_core::KeyEnv::Live)
        .unwrap();
    problem(
        kw.get("/fact", &[("x-api-key", unknown.expose())]).await,
        401,
        "invalid_credential",
    )
    .await;

    let ok = kw.get("/fact", &[("x-api-key", &read)]).await;
    assert_eq!(ok.status(), 200);

    // Scope missing: 403 naming the scope.
    let r = kw
        .http
        .post(format!("{}/facts", kw.gw))
        .header("x-api-key", &read)
        .json(&json!({"fact": "x"}))
        .send()
        .await
        .unwrap();
    let v = problem(r, 403, "insufficient_scope").await;
    assert_eq!(v["missing_scopes"], json!(["facts:write"]));
    assert!(v["detail"].as_str().unwrap().contains("facts:write"));
}

#[tokio::test]
async fn unknown_route_and_method_are_problems() {
    let kw = boot().await;
    problem(kw.get("/nowhere", &[]).await, 404, "not_found").await;
    let r = kw.http.delete(format!("{}/facts", kw.gw)).send().await.unwrap();
    let allow = r.headers().get("allow").unwrap().to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    problem(r, 405, "method_not_allowed").await;
    // `/fact` does not match `/factory`.
    problem(kw.get("/factory", &[]).await, 404, "not_found").await;
}

#[tokio::test]
async fn revoked_and_expired_have_distinct_types() {
    let kw = boot().await;
    let (id, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let (_, expiring) = kw.key("cats", &["facts:read"], json!({"expires_in": "1h"})).await;
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    assert_eq!(kw.get("/fact", &[("x-api-key", &expiring)]).await.status(), 200);

    // Revocation is refused on the very next request, although the key is cached.
    let (s, v) = kw
        .admin(reqwest::Method::POST, &format!("/v1/keys/{id}/revoke"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "revoked");
    problem(kw.get("/fact", &[("x-api-key", &key)]).await, 401, "revoked_credential").await;

    // Expiry, with the clock moved instead of sleeping.
    kw.clock.advance(time::Duration::minutes(61));
    problem(
        kw.get("/fact", &[("x-api-key", &expiring)]).await,
        401,
        "expired_credential",
    )
    .await;
}

#[tokio::test]
async fn upstream_gets_identity_never_the_credential() {
    let kw = boot().await;
    let (id, key) = kw.key("cat app", &["facts:read", "x:y"], json!({})).await;
    let r = kw
        .get(
            "/echo/path?q=1",
            &[
                ("x-api-key", &key),
                ("x-keyward-app", "spoofed"),
                ("x-keyward-key-id", "spoofed"),
                ("x-keyward-anything", "spoofed"),
                ("x-other", "kept"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let seen = kw.up.seen.last();
    assert!(!seen.contains_key("x-api-key"), "the key reached the upstream");
    assert!(!seen.contains_key("x-keyward-anything"));
    assert_eq!(seen["x-keyward-app"], vec!["cat app"]);
    assert_eq!(seen["x-keyward-key-id"], vec![id]);
    assert!(seen["x-keyward-app-id"][0].starts_with("app_"));
    assert_eq!(seen["x-keyward-scopes"], vec!["facts:read x:y"]);
    assert_eq!(seen["x-other"], vec!["kept"]);
    assert_eq!(seen[":path"], vec!["/echo/path?q=1"]);
    for values in seen.values() {
        for v in values {
            assert!(!v.contains(&key), "the key reached the upstream");
        }
    }

    // The same through Authorization: Bearer.
    let r = kw.get("/echo", &[("authorization", &format!("Bearer {key}"))]).await;
    assert_eq!(r.status(), 200);
    let seen = kw.up.seen.last();
    assert!(!seen.contains_key("authorization"));
    assert_eq!(seen["x-keyward-key-id"].len(), 1);

    // An Authorization header that is not a key goes through untouched (it is the upstream's).
    let r = kw
        .get("/echo", &[("x-api-key", &key), ("authorization", "Basic dXNlcjpwYXNz")])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(kw.up.seen.last()["authorization"], vec!["Basic dXNlcjpwYXNz"]);
}

#[tokio::test]
async fn connection_header_cannot_strip_identity() {
    let kw = boot().await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let r = kw
        .get(
            "/echo",
            &[("x-api-key", &key), ("connection", "x-keyward-app, x-keyward-key-id")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let seen = kw.up.seen.last();
    assert_eq!(seen["x-keyward-app"], vec!["cats"]);
    assert!(seen.contains_key("x-keyward-key-id"));
}

#[tokio::test]
async fn upstream_down_and_slow() {
    let kw = boot().await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let v = problem(
        kw.get("/down", &[("x-api-key", &key)]).await,
        502,
        "upstream_unavailable",
    )
    .await;
    assert!(!v.to_string().contains("127.0.0.1:9"), "upstream internals leaked: {v}");
    let t = Instant::now();
    problem(kw.get("/slow", &[("x-api-key", &key)]).await, 504, "upstream_timeout").await;
    assert!(t.elapsed() < Duration::from_secs(4), "the timeout did not apply");
}

#[tokio::test]
async fn bodies_are_streamed() {
    let kw = boot().await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    // Response: the first chunk arrives while the upstream still holds the second.
    let mut r = kw.get("/drip", &[("x-api-key", &key)]).await;
    assert_eq!(r.status(), 200);
    let t = Instant::now();
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first;");
    assert!(t.elapsed() < Duration::from_millis(1200), "the response was buffered");
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"second");
    // Request: a 20 MB body goes through intact.
    let body = vec![b'x'; 20 * 1024 * 1024];
    let r = kw
        .http
        .post(format!("{}/echo/upload", kw.gw))
        .header("x-api-key", &key)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(kw.up.seen.last()[":body-len"], vec![(20 * 1024 * 1024).to_string()]);
}

#[tokio::test]
async fn classic_403_for_invalid_credentials() {
    let kw = boot_with(|c| c.gateway.invalid_credential_status = 403).await;
    problem(kw.get("/fact", &[]).await, 401, "missing_credential").await;
    problem(
        kw.get("/fact", &[("x-api-key", "wrong")]).await,
        403,
        "malformed_credential",
    )
    .await;
    let unknown = keyward_core::KeyFormat::default()
        .generate(keyward_core::KeyEnv::Live)
        .unwrap();
    problem(
        kw.get("/fact", &[("x-api-key", unknown.expose())]).await,
        403,
        "invalid_credential",
    )
    .await;
}

#[tokio::test]
async fn configurable_header_and_prefix() {
    let kw = boot_with(|c| {
        c.gateway.credential_headers = vec!["x-cats-key".into()];
        c.keys.prefix = "cats".into();
    })
    .await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    assert!(key.starts_with("cats_live_"));
    assert_eq!(kw.get("/fact", &[("x-cats-key", &key)]).await.status(), 200);
    problem(kw.get("/fact", &[("x-api-key", &key)]).await, 401, "missing_credential").await;
}

#[tokio::test]
async fn revocation_is_never_undone_by_a_concurrent_cache_fill() {
    // Many requests race with the revocation; once it has returned, every request is refused.
    let kw = boot().await;
    let (id, key) = kw.key("cats", &[], json!({})).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = kw.http.clone();
        let url = format!("{}/echo", kw.gw);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let _ = http.get(&url).header("x-api-key", &key).send().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (s, _) = kw
        .admin(reqwest::Method::POST, &format!("/v1/keys/{id}/revoke"), None)
        .await;
    assert_eq!(s, 200);
    for _ in 0..20 {
        problem(kw.get("/echo", &[("x-api-key", &key)]).await, 401, "revoked_credential").await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    problem(kw.get("/echo", &[("x-api-key", &key)]).await, 401, "revoked_credential").await;
}
