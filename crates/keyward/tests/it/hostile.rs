//! Bad input at the gateway and the admin API (issue 2, point 10) and what the store keeps
//! (issue 2, point 3).

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn hostile_credential_headers() {
    let kw = boot().await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;

    // Empty: the same as missing.
    problem(kw.get("/fact", &[("x-api-key", "")]).await, 401, "missing_credential").await;
    // Oversized (over 8 KiB): refused without a lookup.
    let big = "k".repeat(9 * 1024);
    problem(
        kw.get("/fact", &[("x-api-key", &big)]).await,
        401,
        "malformed_credential",
    )
    .await;
    // A huge header: refused by the HTTP layer, no 5xx.
    let huge = "k".repeat(128 * 1024);
    let r = kw.get("/fact", &[("x-api-key", &huge)]).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    // SQL in a key of the right length.
    let head = "kw_live_' OR '1'='1' --";
    let sql = format!("{head}{}", "x".repeat(57 - head.len()));
    assert_eq!(sql.len(), 57);
    problem(
        kw.get("/fact", &[("x-api-key", &sql)]).await,
        401,
        "malformed_credential",
    )
    .await;
    // The real key with padding or a prefix is not the key.
    problem(
        kw.get("/fact", &[("x-api-key", &format!("{key}x"))]).await,
        401,
        "malformed_credential",
    )
    .await;
    // Leading/trailing whitespace is tolerated (HTTP strips optional whitespace anyway).
    assert_eq!(
        kw.get("/fact", &[("x-api-key", &format!(" {key} "))]).await.status(),
        200
    );

    // Repeated headers: ambiguous, refused.
    let r = kw
        .http
        .get(format!("{}/fact", kw.gw))
        .header("x-api-key", &key)
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    problem(r, 400, "multiple_credentials").await;
    // Two places at once: refused too.
    let r = kw
        .get(
            "/fact",
            &[("x-api-key", &key), ("authorization", &format!("Bearer {key}"))],
        )
        .await;
    problem(r, 400, "multiple_credentials").await;

    // Non-UTF-8 bytes (obs-text) in the header.
    let mut bytes = b"GET /fact HTTP/1.1\r\nhost: x\r\nx-api-key: kw_live_@@\r\nconnection: close\r\n\r\n".to_vec();
    let pos = bytes.windows(2).position(|w| w == b"@@").unwrap();
    bytes[pos] = 0xff;
    bytes[pos + 1] = 0xfe;
    let resp = raw(&kw.gw, &bytes).await;
    assert_eq!(status_of(&resp), 401, "{resp}");
    assert!(resp.contains("malformed-credential"), "{resp}");

    // Control characters: the HTTP layer refuses them; no 5xx, no crash.
    let resp = raw(
        &kw.gw,
        b"GET /fact HTTP/1.1\r\nhost: x\r\nx-api-key: kw_live_\x01\x02\r\nconnection: close\r\n\r\n",
    )
    .await;
    let st = status_of(&resp);
    assert!(st == 400 || st == 401, "{resp}");

    // Bearer with garbage and with a wrong scheme.
    problem(
        kw.get("/fact", &[("authorization", "Bearer")]).await,
        401,
        "missing_credential",
    )
    .await;
    problem(
        kw.get("/fact", &[("authorization", "Basic Zm9vOmJhcg==")]).await,
        401,
        "missing_credential",
    )
    .await;
    let mut bad = key.clone().into_bytes();
    bad[30] = if bad[30] == b'Z' { b'Y' } else { b'Z' };
    let bad = String::from_utf8(bad).unwrap();
    let r = kw.get("/fact", &[("authorization", &format!("Bearer {bad}"))]).await;
    let www: Vec<String> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(www.iter().any(|c| c.contains("error=\"invalid_token\"")), "{www:?}");
    problem(r, 401, "malformed_credential").await;

    // Path tricks never reach another route.
    for p in ["/fact/../facts", "/fact/%2e%2e/facts", "/fact%2f..%2ffacts"] {
        let resp = raw(
            &kw.gw,
            format!("GET {p} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&resp), 400, "{p}: {resp}");
    }
    assert_eq!(kw.up.seen.count(), 1, "only the one good request reached the upstream");
}

#[tokio::test]
async fn hostile_admin_bodies() {
    let kw = boot().await;
    let post = |path: &'static str, body: serde_json::Value| {
        let http = kw.http.clone();
        let url = format!("{}{}", kw.admin, path);
        async move {
            http.post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };

    // Authentication.
    let r = kw.http.get(format!("{}/v1/apps", kw.admin)).send().await.unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    problem(r, 401, "admin_unauthorized").await;
    let r = kw
        .http
        .get(format!("{}/v1/apps", kw.admin))
        .bearer_auth("test-admin-token-012345678X")
        .send()
        .await
        .unwrap();
    problem(r, 401, "admin_unauthorized").await;

    // SQL in names is data, nothing more.
    let evil = "Robert'); DROP TABLE apps;--";
    let r = post("/v1/apps", json!({"name": evil})).await;
    assert_eq!(r.status(), 201);
    let (s, v) = kw.admin(Method::GET, "/v1/apps", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["items"][0]["name"], evil);
    let (s, v) = kw
        .admin(
            Method::GET,
            &format!("/v1/apps/{}", "Robert%27%29%3B%20DROP%20TABLE%20apps%3B--"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    problem(post("/v1/apps", json!({"name": evil})).await, 409, "conflict").await;

    // Control characters, empty and oversized names.
    problem(
        post("/v1/apps", json!({"name": "a\u{0000}b"})).await,
        422,
        "invalid_request",
    )
    .await;
    problem(
        post("/v1/apps", json!({"name": "line\nbreak"})).await,
        422,
        "invalid_request",
    )
    .await;
    problem(post("/v1/apps", json!({"name": "   "})).await, 422, "invalid_request").await;
    problem(
        post("/v1/apps", json!({"name": "n".repeat(129)})).await,
        422,
        "invalid_request",
    )
    .await;
    problem(post("/v1/apps", json!({"name": 5})).await, 422, "invalid_body").await;
    problem(
        post("/v1/apps", json!({"name": "x", "admin": true})).await,
        422,
        "invalid_body",
    )
    .await;
    problem(post("/v1/apps", json!({})).await, 422, "invalid_body").await;

    // Keys: unknown app, bad scopes, bad expiries, unknown fields.
    problem(post("/v1/keys", json!({"app": "no-such-app"})).await, 404, "not_found").await;
    problem(post("/v1/keys", json!({"app": "' OR 1=1 --"})).await, 404, "not_found").await;
    post("/v1/apps", json!({"name": "cats"})).await;
    for scopes in [json!([""]), json!(["a b"]), json!(["x\u{0001}"]), json!(["é"])] {
        problem(
            post("/v1/keys", json!({"app": "cats", "scopes": scopes})).await,
            422,
            "invalid_request",
        )
        .await;
    }
    let many: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    problem(
        post("/v1/keys", json!({"app": "cats", "scopes": many})).await,
        422,
        "invalid_request",
    )
    .await;
    for (field, value) in [
        ("expires_in", "soon"),
        ("expires_in", "0d"),
        ("expires_in", "-1d"),
        ("expires_in", "100000000d"),
        ("expires_at", "2001-01-01T00:00:00Z"),
        ("expires_at", "tomorrow"),
        ("expires_at", "2030-02-30T00:00:00Z"),
    ] {
        let r = post("/v1/keys", json!({"app": "cats", field: value})).await;
        problem(r, 422, "invalid_request").await;
    }
    problem(
        post(
            "/v1/keys",
            json!({"app": "cats", "expires_in": "1d", "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await,
        422,
        "invalid_request",
    )
    .await;
    problem(
        post("/v1/keys", json!({"app": "cats", "env": "prod"})).await,
        422,
        "invalid_body",
    )
    .await;
    problem(
        post("/v1/keys", json!({"app": "cats", "digest": "00"})).await,
        422,
        "invalid_body",
    )
    .await;

    // Transport-level abuse: malformed JSON, wrong type, oversized body.
    let r = kw
        .http
        .post(format!("{}/v1/apps", kw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    problem(r, 400, "invalid_body").await;
    let r = kw
        .http
        .post(format!("{}/v1/apps", kw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/plain")
        .body("{\"name\": \"x\"}")
        .send()
        .await
        .unwrap();
    problem(r, 415, "unsupported_media_type").await;
    let r = kw
        .http
        .post(format!("{}/v1/apps", kw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{}\"}}", "a".repeat(200_000)))
        .send()
        .await
        .unwrap();
    problem(r, 413, "body_too_large").await;

    // Unknown objects, paths and methods.
    let (s, v) = kw.admin(Method::GET, "/v1/keys/key_doesnotexist", None).await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (404, Some("not_found")));
    let (s, _) = kw.admin(Method::POST, "/v1/keys/key_doesnotexist/revoke", None).await;
    assert_eq!(s, 404);
    let (s, v) = kw.admin(Method::GET, "/v1/nothing", None).await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (404, Some("not_found")));
    let (s, v) = kw.admin(Method::DELETE, "/v1/apps", None).await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (405, Some("method_not_allowed")));
    let (s, v) = kw.admin(Method::GET, "/v1/keys?app=nope", None).await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (404, Some("not_found")));
    let (s, v) = kw.admin(Method::GET, "/v1/keys?bogus=1", None).await;
    assert_eq!((s.as_u16(), v["code"].as_str()), (400, Some("invalid_query")));
}

#[tokio::test]
async fn the_database_never_holds_a_plaintext_key() {
    let mut kw = boot().await;
    let mut keys = Vec::new();
    for i in 0..20 {
        let (_, k) = kw.key("cats", &["facts:read"], json!({"name": format!("k{i}")})).await;
        keys.push(k);
    }
    // Use them, so that every code path that touches the store has run.
    for k in &keys {
        assert_eq!(kw.get("/fact", &[("x-api-key", k)]).await.status(), 200);
    }
    let scan = |kw: &Kw, keys: &[String]| {
        let mut files = 0;
        for suffix in ["", "-wal", "-shm"] {
            let p = format!("{}{}", kw.db_path().display(), suffix);
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            files += 1;
            let text = String::from_utf8_lossy(&bytes);
            for k in keys {
                let secret = &k[8..8 + 43];
                assert!(!text.contains(k.as_str()), "a key is in {p}");
                // No 12-symbol window of the secret part either (the hint shows 4 + 4).
                for w in 0..secret.len() - 12 {
                    assert!(!text.contains(&secret[w..w + 12]), "part of a key is in {p}");
                }
            }
        }
        files
    };
    let files = scan(&kw, &keys);
    assert!(files >= 2, "expected the database and its WAL");
    let wal = std::fs::metadata(format!("{}-wal", kw.db_path().display())).unwrap();
    assert!(wal.len() > 0, "WAL mode is on and the WAL holds the recent writes");
    kw.stop().await;
    assert!(scan(&kw, &keys) >= 1);
}
