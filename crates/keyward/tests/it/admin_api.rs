//! The complete admin API (issue 8): scoped admin tokens, pagination and filters, strict
//! queries, usage series, routes, the OpenAPI document, and a schemathesis run against it.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

async fn call(kw: &Kw, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = kw
        .http
        .request(method, format!("{}{}", kw.admin, path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let s = resp.status().as_u16();
    (s, resp.json::<Value>().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn scoped_admin_tokens_read_write_and_revocation() {
    let kw = boot().await;
    // Only the bootstrap token manages admin tokens.
    let (s, ro) = kw
        .admin(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "dashboards", "role": "read"})),
        )
        .await;
    assert_eq!(s, 201, "{ro}");
    let ro_token = ro["token"].as_str().unwrap().to_owned();
    assert!(ro_token.starts_with("kwadm_") && ro_token.len() == 6 + 43, "{ro_token}");
    assert!(ro["hint"].as_str().unwrap().starts_with("kwadm_"));
    let (s, rw) = kw
        .admin(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "ops", "role": "write", "expires_in": "30d"})),
        )
        .await;
    assert_eq!(s, 201, "{rw}");
    let rw_token = rw["token"].as_str().unwrap().to_owned();
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "ops", "role": "read"})),
        )
        .await;
    assert_eq!(s, 409);
    let (s, p) = kw
        .admin(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "x", "role": "root"})),
        )
        .await;
    assert_eq!(s, 422, "{p}");

    // The list shows hints, never the tokens.
    let (s, list) = kw.admin(Method::GET, "/v1/admin-tokens", None).await;
    assert_eq!(s, 200);
    let text = list.to_string();
    assert!(!text.contains(&ro_token) && !text.contains(&rw_token));
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // read: GET only.
    let (s, _) = call(&kw, &ro_token, Method::GET, "/v1/apps", None).await;
    assert_eq!(s, 200);
    let (s, p) = call(&kw, &ro_token, Method::POST, "/v1/apps", Some(json!({"name": "nope"}))).await;
    assert_eq!(s, 403, "{p}");
    assert_eq!(p["code"], "insufficient_role");
    assert_eq!(p["type"], "urn:keyward:problem:insufficient-role");
    // write: changes, audited under its name; but no admin-token management.
    let (s, app) = call(&kw, &rw_token, Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    assert_eq!(s, 201, "{app}");
    let (s, p) = call(&kw, &rw_token, Method::GET, "/v1/admin-tokens", None).await;
    assert_eq!(s, 403, "{p}");
    let (s, p) = call(
        &kw,
        &rw_token,
        Method::POST,
        "/v1/admin-tokens",
        Some(json!({"name": "escalate", "role": "write"})),
    )
    .await;
    assert_eq!(s, 403, "{p}");
    let (s, audit) = kw
        .admin(
            Method::GET,
            &format!("/v1/audit?target={}", app["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(audit["items"][0]["actor"], "admin:ops", "{audit}");
    let (_, audit) = kw.admin(Method::GET, "/v1/audit?kind=admin_token.", None).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
    assert!(!audit.to_string().contains(&ro_token));

    // Unknown, malformed and revoked tokens: 401.
    let (s, _) = call(
        &kw,
        "kwadm_0000000000000000000000000000000000000000000",
        Method::GET,
        "/v1/apps",
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, t) = kw.admin(Method::POST, "/v1/admin-tokens/dashboards/revoke", None).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["state"], "revoked");
    let (s, _) = call(&kw, &ro_token, Method::GET, "/v1/apps", None).await;
    assert_eq!(s, 401);
    let (s, _) = kw.admin(Method::POST, "/v1/admin-tokens/nope/revoke", None).await;
    assert_eq!(s, 404);

    // Expiry.
    kw.clock.advance(time::Duration::days(31));
    let (s, _) = call(&kw, &rw_token, Method::GET, "/v1/apps", None).await;
    assert_eq!(s, 401);

    // The stored form is a digest: the token is nowhere in the database.
    let db = std::fs::read(kw.db_path()).unwrap_or_default();
    let wal = std::fs::read(kw.db_path().with_extension("db-wal")).unwrap_or_default();
    for t in [&ro_token, &rw_token] {
        assert!(!db.windows(t.len()).any(|w| w == t.as_bytes()));
        assert!(!wal.windows(t.len()).any(|w| w == t.as_bytes()));
    }
}

#[tokio::test]
async fn lists_paginate_filter_and_refuse_unknown_parameters() {
    let kw = boot().await;
    for i in 0..7 {
        kw.key(
            "pets",
            &[],
            json!({"name": format!("k{i}"), "env": if i % 2 == 0 { "live" } else { "test" }}),
        )
        .await;
    }
    kw.key("other", &[], json!({"name": "elsewhere"})).await;
    // Walk the pages.
    let mut seen = vec![];
    let mut path = "/v1/keys?app=pets&limit=3".to_owned();
    loop {
        let (s, page) = kw.admin(Method::GET, &path, None).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|k| k["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/keys?app=pets&limit=3&cursor={c}"),
            None => break,
        }
    }
    // Every key once (same creation second: ordered by id).
    seen.sort();
    assert_eq!(seen, ["k0", "k1", "k2", "k3", "k4", "k5", "k6"]);
    // Filters.
    let (_, v) = kw.admin(Method::GET, "/v1/keys?env=test", None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    let (_, v) = kw.admin(Method::GET, "/v1/keys?q=ELSEW", None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let id = v["items"][0]["id"].as_str().unwrap().to_owned();
    kw.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None).await;
    let (_, v) = kw.admin(Method::GET, "/v1/keys?state=revoked", None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (_, v) = kw.admin(Method::GET, "/v1/apps?q=pet", None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert!(v.get("next_cursor").is_none());
    // Strict validation: 400 problems.
    for bad in [
        "/v1/keys?colour=red",
        "/v1/keys?limit=0",
        "/v1/keys?limit=501",
        "/v1/keys?state=sleepy",
        "/v1/keys?env=prod",
        "/v1/keys?cursor=%%%",
        "/v1/apps?bogus=1",
        "/v1/clients?state=x",
        "/v1/routes?x=1",
        "/v1/usage?bucket=day",
        "/v1/usage?since=99999999999d",
        "/v1/admin-tokens?limit=abc",
    ] {
        let (s, p) = kw.admin(Method::GET, bad, None).await;
        assert_eq!(s, 400, "{bad}: {p}");
        assert_eq!(p["code"], "invalid_query", "{bad}");
    }
}

#[tokio::test]
async fn usage_series_routes_and_the_openapi_document() {
    let kw = boot().await;
    let (id, key) = kw.key("cats", &["facts:read"], json!({})).await;
    for _ in 0..3 {
        assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    }
    assert_eq!(kw.get("/facts", &[("x-api-key", &key)]).await.status(), 200);
    let (s, u) = kw
        .admin(Method::GET, &format!("/v1/usage?key={id}&bucket=hour"), None)
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["bucket"], "hour");
    assert_eq!(u["series"][0]["counts"]["allowed"], 4, "{u}");
    assert_eq!(u["totals"]["allowed"], 4);
    let (s, u) = kw.admin(Method::GET, "/v1/usage?app=cats", None).await;
    assert_eq!(s, 200);
    assert_eq!(u["bucket"], "minute");
    assert!(!u["series"].as_array().unwrap().is_empty());

    let (s, r) = kw.admin(Method::GET, "/v1/routes", None).await;
    assert_eq!(s, 200, "{r}");
    let fact = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "fact")
        .unwrap();
    assert_eq!(fact["path_prefix"], "/fact");
    assert_eq!(fact["methods"], json!(["GET"]));
    assert_eq!(fact["scopes"], json!(["facts:read"]));
    assert!(fact["upstream"].as_str().unwrap().starts_with("http://127.0.0.1:"));

    // The document is public (it holds no secret) and describes every endpoint.
    let resp = kw.http.get(format!("{}/openapi.json", kw.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/v1/keys/{id}/rotate"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_admin_tokens() {
    let kw = boot().await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env_remove("KEYWARD_CONFIG")
            .env("KEYWARD_ADMIN_URL", &kw.admin)
            .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::block_in_place(|| {
        run(&[
            "admin-token",
            "create",
            "--name",
            "ci",
            "--role",
            "read",
            "--expires",
            "90d",
        ])
    });
    assert_eq!(code, 0, "{out}{err}");
    let token = out.trim().to_owned();
    assert!(token.starts_with("kwadm_"), "{out}");
    assert!(err.contains("shown once"), "{err}");
    let (s, _) = call(&kw, &token, Method::GET, "/v1/keys", None).await;
    assert_eq!(s, 200);
    let (code, out, err) = tokio::task::block_in_place(|| run(&["admin-token", "list"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ci") && out.contains("read") && !out.contains(&token),
        "{out}"
    );
    let (code, out, err) = tokio::task::block_in_place(|| run(&["admin-token", "revoke", "ci"]));
    assert_eq!(code, 0, "{out}{err}");
    let (s, _) = call(&kw, &token, Method::GET, "/v1/keys", None).await;
    assert_eq!(s, 401);
}

/// Runs schemathesis (the executable named by `KEYWARD_TEST_SCHEMATHESIS`) against the served
/// OpenAPI document: no 5xx, and every response conforms to the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx() {
    let Ok(exe) = std::env::var("KEYWARD_TEST_SCHEMATHESIS") else {
        println!("skipped: set KEYWARD_TEST_SCHEMATHESIS to the schemathesis executable");
        return;
    };
    let kw = boot().await;
    // Some real objects, so that generated ids sometimes meet something.
    kw.key("cats", &["facts:read"], json!({"name": "seed"})).await;
    let url = format!("{}/openapi.json", kw.admin);
    let admin = kw.admin.clone();
    let out = tokio::process::Command::new(&exe)
        .args([
            "run",
            &url,
            "--url",
            &admin,
            "--header",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--max-time",
            "150",
            "--suppress-health-check",
            "all",
        ])
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "schemathesis found problems (see above)");
}

#[tokio::test]
async fn disabling_an_app_switches_off_its_keys_and_clients_until_enabled() {
    let kw = boot().await;
    let (id, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let (revoked, _) = kw.key("cats", &["facts:read"], json!({})).await;
    kw.admin(Method::POST, &format!("/v1/keys/{revoked}/revoke"), None)
        .await;
    let (_, other) = kw.key("dogs", &["facts:read"], json!({})).await;
    let (s, client) = kw
        .admin(Method::POST, "/v1/clients", Some(json!({"app": "cats"})))
        .await;
    assert_eq!(s, 201, "{client}");
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);

    let (s, v) = kw.admin(Method::POST, "/v1/apps/cats/disable", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keys"], json!([id]));
    assert_eq!(v["clients"], json!([client["client_id"]]));
    assert_ne!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    assert_eq!(kw.get("/fact", &[("x-api-key", &other)]).await.status(), 200);
    let (_, c) = kw
        .admin(
            Method::GET,
            &format!("/v1/clients/{}", client["client_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(c["state"], "disabled");
    let (_, a) = kw.admin(Method::GET, "/v1/audit?kind=app.disabled", None).await;
    assert_eq!(a["items"].as_array().unwrap().len(), 1);
    // Idempotent: nothing left to disable.
    let (_, v) = kw.admin(Method::POST, "/v1/apps/cats/disable", None).await;
    assert_eq!(v["keys"], json!([]));

    let (s, v) = kw.admin(Method::POST, "/v1/apps/cats/enable", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keys"], json!([id]), "the revoked key stays revoked");
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    let (s, _) = kw.admin(Method::POST, "/v1/apps/nope/disable", None).await;
    assert_eq!(s, 404);
}

/// Issue 22 point 2: `GET /v1/session` tells each admin token its role (the console offers only
/// what the role allows); bad tokens and queries are refused, never a 5xx, never the token.
#[tokio::test]
async fn session_tells_each_token_its_role() {
    let kw = boot().await;
    let (s, v) = kw.admin(Method::GET, "/v1/session", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"role": "admin", "actor": "admin", "can_write": true, "can_manage_admin_tokens": true})
    );
    let mut tokens = vec![];
    for (name, role) in [("dashboards", "read"), ("ops", "write")] {
        let (s, t) = kw
            .admin(
                Method::POST,
                "/v1/admin-tokens",
                Some(json!({"name": name, "role": role})),
            )
            .await;
        assert_eq!(s, 201, "{t}");
        tokens.push(t["token"].as_str().unwrap().to_owned());
    }
    let (s, v) = call(&kw, &tokens[0], Method::GET, "/v1/session", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"role": "read", "actor": "admin:dashboards", "can_write": false, "can_manage_admin_tokens": false})
    );
    assert!(!v.to_string().contains(&tokens[0]));
    let (s, v) = call(&kw, &tokens[1], Method::GET, "/v1/session", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"role": "write", "actor": "admin:ops", "can_write": true, "can_manage_admin_tokens": false})
    );
    // What the session says is what the server enforces.
    let (s, _) = call(&kw, &tokens[0], Method::POST, "/v1/apps", Some(json!({"name": "x"}))).await;
    assert_eq!(s, 403);
    let (s, _) = call(&kw, &tokens[1], Method::POST, "/v1/apps", Some(json!({"name": "x"}))).await;
    assert_eq!(s, 201);
    let (s, _) = call(&kw, &tokens[1], Method::GET, "/v1/admin-tokens", None).await;
    assert_eq!(s, 403);

    // No token, a wrong one, a malformed header, an oversized one: 401 problem documents.
    let url = format!("{}/v1/session", kw.admin);
    let resp = kw.http.get(&url).send().await.unwrap();
    problem(resp, 401, "admin_unauthorized").await;
    let long = "x".repeat(8 * 1024);
    for auth in [
        "Bearer not-a-token",
        "Bearer ",
        "Basic YWRtaW46YWRtaW4=",
        "bearer kwadm_0000000000000000000000000000000000000000000",
        &format!("Bearer {long}"),
    ] {
        let resp = kw.http.get(&url).header("authorization", auth).send().await.unwrap();
        let s = resp.status().as_u16();
        assert_eq!(s, 401, "{}", &auth[..auth.len().min(40)]);
    }
    // Unknown query parameters are refused, as everywhere; other methods are not allowed.
    let (s, p) = kw.admin(Method::GET, "/v1/session?role=admin", None).await;
    assert_eq!(s, 400, "{p}");
    assert_eq!(p["code"], "invalid_query");
    for m in [Method::POST, Method::DELETE, Method::PATCH] {
        let (s, _) = kw.admin(m.clone(), "/v1/session", Some(json!({"role": "admin"}))).await;
        assert_eq!(s, 405, "{m}");
    }
    // A revoked token's session ends at once.
    let (s, _) = kw.admin(Method::POST, "/v1/admin-tokens/dashboards/revoke", None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&kw, &tokens[0], Method::GET, "/v1/session", None).await;
    assert_eq!(s, 401);
}
