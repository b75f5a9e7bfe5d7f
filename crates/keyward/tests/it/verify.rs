//! The verify API (issue 10 point 1): `POST /v1/verify` on the admin listener, behind the
//! service token, deciding exactly as the gateway does (same limits, same usage).

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

async fn verify_raw(kw: &Kw, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut r = kw.http.post(format!("{}/v1/verify", kw.admin)).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

/// A decision: always 200, JSON.
async fn verify(kw: &Kw, body: Value) -> Value {
    let r = verify_raw(kw, Some(VERIFY_TOKEN), body.clone()).await;
    assert_eq!(r.status(), 200, "{body}");
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

fn req(key: &str, method: &str, path: &str) -> Value {
    json!({"key": key, "method": method, "path": path, "client_ip": "203.0.113.7"})
}

#[tokio::test]
async fn decisions_match_the_gateway_contract() {
    let kw = boot().await;
    let (id, read) = kw.key("cats", &["facts:read"], json!({"name": "ci"})).await;

    let v = verify(&kw, req(&read, "GET", "/facts?limit=2")).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["code"], "valid");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "facts-read");
    assert_eq!(v["key_id"], id.as_str());
    assert!(v["app_id"].as_str().unwrap().starts_with("app_"));
    assert_eq!(v["scopes"], json!(["facts:read"]));
    assert_eq!(v["metadata"]["app_name"], "cats");
    assert_eq!(v["metadata"]["key_name"], "ci");
    assert_eq!(v["metadata"]["env"], "live");
    assert!(v["metadata"]["hint"].as_str().unwrap().starts_with("kw_live_"));
    assert!(!v.to_string().contains(&read), "the key is never echoed");
    assert_eq!(v["limits"], json!([]));

    // Scope missing on the matched route: 403 insufficient_scope, with the key identified.
    let v = verify(&kw, req(&read, "POST", "/facts")).await;
    assert_eq!(
        (v["valid"].clone(), v["code"].clone(), v["status"].clone()),
        (json!(false), json!("insufficient_scope"), json!(403))
    );
    assert_eq!(v["missing_scopes"], json!(["facts:write"]));
    assert_eq!(v["key_id"], id.as_str());
    assert_eq!(v["route"], "facts-write");

    // No credential: 401 and the challenges a gateway should send.
    let v = verify(&kw, json!({"path": "/fact", "client_ip": "::1"})).await;
    assert_eq!(
        (v["code"].clone(), v["status"].clone()),
        (json!("missing_credential"), json!(401))
    );
    assert!(
        v["headers"]["www-authenticate"].as_str().unwrap().contains("ApiKey"),
        "{v}"
    );

    let v = verify(&kw, req("kw_live_nope", "GET", "/fact")).await;
    assert_eq!(
        (v["code"].clone(), v["status"].clone()),
        (json!("malformed_credential"), json!(401))
    );

    // Revoked and disabled keys, exactly as the gateway names them.
    let (rid, revoked) = kw.key("cats", &["facts:read"], json!({})).await;
    kw.admin(Method::POST, &format!("/v1/keys/{rid}/revoke"), Some(json!({})))
        .await;
    let v = verify(&kw, req(&revoked, "GET", "/fact")).await;
    assert_eq!(
        (v["code"].clone(), v["status"].clone()),
        (json!("revoked_credential"), json!(401))
    );
    assert_eq!(v["key_id"], rid.as_str());
    let (did, disabled) = kw.key("cats", &["facts:read"], json!({})).await;
    kw.admin(Method::POST, &format!("/v1/keys/{did}/disable"), None).await;
    let v = verify(&kw, req(&disabled, "GET", "/fact")).await;
    assert_eq!(v["code"], "disabled_credential");

    // No route matches: the caller's scopes decide.
    let mut b = req(&read, "GET", "/elsewhere");
    b["scopes"] = json!(["facts:read"]);
    let v = verify(&kw, b.clone()).await;
    assert_eq!(v["valid"], true, "{v}");
    assert!(v.get("route").is_none());
    b["scopes"] = json!(["admin:all"]);
    let v = verify(&kw, b).await;
    assert_eq!(v["code"], "insufficient_scope");
    assert_eq!(v["missing_scopes"], json!(["admin:all"]));

    // A named route wins over the path.
    let mut b = req(&read, "GET", "/elsewhere");
    b["route"] = json!("facts-write");
    assert_eq!(verify(&kw, b).await["code"], "insufficient_scope");

    // Method not allowed on a route, dot segments: decisions too, never a bypass.
    let v = verify(&kw, req(&read, "DELETE", "/fact")).await;
    assert_eq!(
        (v["code"].clone(), v["status"].clone()),
        (json!("method_not_allowed"), json!(405))
    );
    assert_eq!(v["headers"]["allow"], "GET");
    for p in ["/x/../fact", "/fact/%2e%2e/facts", "/a%2fb"] {
        let v = verify(&kw, req(&read, "GET", p)).await;
        assert_eq!(
            (v["code"].clone(), v["status"].clone()),
            (json!("invalid_path"), json!(400)),
            "{p}"
        );
    }

    // IP allowlists see the client_ip of the call.
    let (_, fenced) = kw.key("cats", &[], json!({"ips": ["192.0.2.0/24"]})).await;
    let v = verify(&kw, req(&fenced, "GET", "/echo")).await;
    assert_eq!(
        (v["code"].clone(), v["status"].clone()),
        (json!("ip_not_allowed"), json!(403))
    );
    let mut b = req(&fenced, "GET", "/echo");
    b["client_ip"] = json!("192.0.2.10");
    assert_eq!(verify(&kw, b).await["valid"], true);
}

#[tokio::test]
async fn limits_and_usage_are_shared_with_the_gateway() {
    let kw = boot().await;
    let (id, key) = kw
        .key("cats", &["facts:read"], json!({"rate": {"limit": "3/min", "burst": 3}}))
        .await;
    // One through the gateway, two through verify: the fourth is refused by either.
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    let v = verify(&kw, req(&key, "GET", "/fact")).await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["limits"][0]["name"], "key");
    assert_eq!(v["limits"][0]["limit"], 3);
    assert_eq!(v["limits"][0]["remaining"], 1);
    assert!(v["headers"]["ratelimit"].as_str().unwrap().contains("r=1"), "{v}");
    assert!(v["headers"]["ratelimit-policy"].as_str().unwrap().contains("q=3"));
    assert_eq!(verify(&kw, req(&key, "GET", "/fact")).await["valid"], true);
    let v = verify(&kw, req(&key, "GET", "/fact")).await;
    assert_eq!(
        (v["code"].clone(), v["status"].clone()),
        (json!("rate_limited"), json!(429)),
        "{v}"
    );
    assert!(v["headers"]["retry-after"].as_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(v["limits"][0]["remaining"], 0);
    let r = kw.get("/fact", &[("x-api-key", &key)]).await;
    assert_eq!(r.status(), 429);

    // Quotas and cost (no route: the call's cost).
    let (_, q) = kw.key("cats", &[], json!({"quota": "3/day"})).await;
    let mut b = req(&q, "GET", "/metered");
    b["cost"] = json!(2);
    assert_eq!(verify(&kw, b.clone()).await["valid"], true);
    let v = verify(&kw, b).await;
    assert_eq!(v["code"], "quota_exhausted", "{v}");
    assert_eq!(v["status"], 429);

    // Usage counts verify calls like proxied requests.
    kw.running.as_ref().unwrap().engine.flush_usage().await.unwrap();
    let (s, u) = kw
        .admin(Method::GET, &format!("/v1/usage?key={id}&since=1h"), None)
        .await;
    assert_eq!(s, 200, "{u}");
    let text = u.to_string();
    assert!(text.contains("allowed") && text.contains("limited:rate"), "{u}");
}

#[tokio::test]
async fn only_the_service_token_may_verify() {
    let kw = boot().await;
    let body = json!({"path": "/fact", "client_ip": "127.0.0.1"});
    problem(verify_raw(&kw, None, body.clone()).await, 401, "verify_unauthorized").await;
    problem(
        verify_raw(&kw, Some("wrong-token-0123456789"), body.clone()).await,
        401,
        "verify_unauthorized",
    )
    .await;
    // Least privilege both ways: the admin token does not verify, the verify token does not
    // administer.
    problem(
        verify_raw(&kw, Some(ADMIN_TOKEN), body.clone()).await,
        401,
        "verify_unauthorized",
    )
    .await;
    let r = kw
        .http
        .get(format!("{}/v1/keys", kw.admin))
        .bearer_auth(VERIFY_TOKEN)
        .send()
        .await
        .unwrap();
    problem(r, 401, "admin_unauthorized").await;
    assert_eq!(verify_raw(&kw, Some(VERIFY_TOKEN), body).await.status(), 200);
    let r = kw
        .http
        .get(format!("{}/v1/verify", kw.admin))
        .bearer_auth(VERIFY_TOKEN)
        .send()
        .await
        .unwrap();
    problem(r, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn bad_verify_requests_are_4xx_never_5xx() {
    let kw = boot().await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let bad = |extra: Value| {
        let mut b = req(&key, "GET", "/fact");
        if let Value::Object(m) = extra {
            for (k, v) in m {
                b[k] = v;
            }
        }
        b
    };
    let long = format!("/{}", "a".repeat(10 * 1024));
    for (body, status, code) in [
        (bad(json!({"token": "x.y.z"})), 400, "invalid_verify_request"),
        (bad(json!({"dpop": "x.y.z"})), 400, "invalid_verify_request"),
        (bad(json!({"method": "G ET"})), 400, "invalid_verify_request"),
        (bad(json!({"method": ""})), 400, "invalid_verify_request"),
        (bad(json!({"method": "X".repeat(1000)})), 400, "invalid_verify_request"),
        (bad(json!({"method": "GET\u{0}"})), 400, "invalid_verify_request"),
        (bad(json!({"path": long})), 400, "invalid_verify_request"),
        (bad(json!({"path": "fact"})), 400, "invalid_verify_request"),
        (bad(json!({"path": "/fa ct"})), 400, "invalid_verify_request"),
        (bad(json!({"path": "/fact\u{0}"})), 400, "invalid_verify_request"),
        (
            bad(json!({"path": "http://elsewhere/fact"})),
            400,
            "invalid_verify_request",
        ),
        (bad(json!({"client_ip": "somewhere"})), 400, "invalid_verify_request"),
        (bad(json!({"cost": 0})), 400, "invalid_verify_request"),
        (bad(json!({"cost": 10_000_000_000u64})), 400, "invalid_verify_request"),
        (bad(json!({"scopes": ["has space"]})), 400, "invalid_verify_request"),
        (bad(json!({"route": "no-such-route"})), 400, "invalid_verify_request"),
        (bad(json!({"url": "/relative"})), 400, "invalid_verify_request"),
        (bad(json!({"surprise": 1})), 422, "invalid_body"),
        (bad(json!({"cost": -1})), 422, "invalid_body"),
        (json!({"key": "k"}), 422, "invalid_body"),
    ] {
        let r = verify_raw(&kw, Some(VERIFY_TOKEN), body.clone()).await;
        problem(r, status, code).await;
    }
    // Encoded NUL and control characters in a path are bytes like any other: a decision.
    let v = verify(&kw, bad(json!({"path": "/fact/%00%0d%0a"}))).await;
    assert_eq!(v["valid"], true);
    // A key with control characters is malformed, not an error.
    let v = verify(&kw, bad(json!({"key": "kw_live_\u{1}\n"}))).await;
    assert_eq!(v["code"], "malformed_credential");
    let url = format!("{}/v1/verify", kw.admin);
    let send = |ct: &'static str, body: Vec<u8>| {
        kw.http
            .post(&url)
            .bearer_auth(VERIFY_TOKEN)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    problem(
        send("text/plain", b"{}".to_vec()).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    problem(
        send("application/json", b"{not json".to_vec()).await.unwrap(),
        400,
        "invalid_body",
    )
    .await;
    let mut huge = br#"{"path": "/fact", "client_ip": "127.0.0.1", "key": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 70 * 1024));
    huge.extend(br#""}"#);
    problem(send("application/json", huge).await.unwrap(), 413, "body_too_large").await;
}

#[tokio::test]
async fn access_tokens_verify_like_keys() {
    let kw = boot_with(|c| {
        c.oauth.enabled = true;
        for r in c.routes.iter_mut() {
            r.tokens = true;
        }
    })
    .await;
    kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    let (s, c) = kw
        .admin(
            Method::POST,
            "/v1/clients",
            Some(json!({"app": "cats", "scopes": ["facts:read"]})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let t: Value = kw
        .http
        .post(format!("{}/oauth/token", kw.gw))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = t["access_token"].as_str().unwrap();
    let body = json!({"token": token, "path": "/fact", "client_ip": "127.0.0.1"});
    let v = verify(&kw, body).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["client_id"], id);
    assert!(v.get("key_id").is_none());
    let v = verify(
        &kw,
        json!({"token": token, "method": "POST", "path": "/facts", "client_ip": "127.0.0.1"}),
    )
    .await;
    assert_eq!(v["code"], "insufficient_scope");
    let v = verify(
        &kw,
        json!({"token": "a.b.c", "path": "/fact", "client_ip": "127.0.0.1"}),
    )
    .await;
    assert_eq!(
        (v["code"].clone(), v["status"].clone()),
        (json!("invalid_token"), json!(401))
    );
    assert!(
        v["headers"]["www-authenticate"]
            .as_str()
            .unwrap()
            .contains("invalid_token"),
        "{v}"
    );
}

#[test]
fn verify_configuration_and_its_secret() {
    use keyward::config::Config;
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keyward.toml");
    std::fs::write(
        &file,
        "[verify]\nlisten = \"127.0.0.1:0\"\nforward_auth_peers = [\"10.0.0.0/8\"]\ntoken_file = \"verify.token\"\n",
    )
    .unwrap();
    let cfg = Config::load(
        Some(&file),
        &env(&[("KEYWARD_VERIFY__FORWARD_AUTH_REQUIRE_TOKEN", "true")]),
    )
    .unwrap();
    assert_eq!(cfg.verify.listen, Some("127.0.0.1:0".parse().unwrap()));
    assert!(cfg.verify.forward_auth_require_token);
    assert_eq!(
        cfg.verify.token_file.as_deref(),
        Some(dir.path().join("verify.token").as_path())
    );
    assert_eq!(cfg.forward_auth_config().unwrap().peers.len(), 1);
    // The secret: the environment first, then the 0600 file; never group- or world-readable.
    let token = "a-verify-token-of-some-length";
    assert_eq!(
        cfg.verify_token(&env(&[("KEYWARD_VERIFY_TOKEN", token)]))
            .unwrap()
            .unwrap()
            .expose(),
        token
    );
    assert!(cfg.verify_token(&env(&[("KEYWARD_VERIFY_TOKEN", "short")])).is_err());
    assert!(cfg.verify_token(&env(&[])).is_err(), "the file does not exist");
    let path = dir.path().join("verify.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        cfg.verify_token(&env(&[])).is_err(),
        "world-readable secret file refused"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(cfg.verify_token(&env(&[])).unwrap().unwrap().expose(), token);
    // No token configured: the verify API is off, unless forward-auth requires the token.
    let mut none = Config::default();
    assert!(none.verify_token(&env(&[])).unwrap().is_none());
    none.verify.forward_auth_require_token = true;
    assert!(none.verify_token(&env(&[])).is_err());
    // Unknown keys and bad CIDRs are refused.
    std::fs::write(&file, "[verify]\nlisten_on = \"127.0.0.1:1\"\n").unwrap();
    assert!(Config::load(Some(&file), &[]).is_err());
    std::fs::write(&file, "[verify]\nforward_auth_peers = [\"nonsense\"]\n").unwrap();
    assert!(Config::load(Some(&file), &[]).is_err());
}

#[tokio::test]
async fn the_verify_token_cannot_be_the_admin_token() {
    use keyward::server::{start_on, Secrets};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = keyward::config::Config::default();
    cfg.store.url = dir.path().join("keyward.db").display().to_string();
    let secrets = Secrets {
        pepper: keyward_core::Pepper::from_text(PEPPER).unwrap(),
        admin_token: keyward_core::secret::SecretString::new(ADMIN_TOKEN.into()),
        kek: None,
        verify_token: Some(keyward_core::secret::SecretString::new(ADMIN_TOKEN.into())),
    };
    let g = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = std::sync::Arc::new(keyward_engine::SystemClock);
    let err = match start_on(&cfg, secrets, g, a, clock).await {
        Ok(_) => panic!("started with the admin token as the verify token"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("verify token must differ"), "{err}");
}

#[tokio::test]
async fn the_decision_is_described_in_the_openapi_document() {
    let kw = boot().await;
    let doc: Value = kw
        .http
        .get(format!("{}/openapi.json", kw.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let op = &doc["paths"]["/v1/verify"]["post"];
    assert_eq!(
        op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/VerifyDecision",
        "{op}"
    );
    let schema = &doc["components"]["schemas"]["VerifyDecision"];
    let props = schema["properties"].as_object().unwrap();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for k in ["valid", "code", "status", "scopes", "metadata", "limits", "headers"] {
        assert!(required.contains(&k), "{k} required: {schema}");
    }
    let (_, key) = kw
        .key(
            "cats",
            &["facts:read"],
            json!({"rate": {"limit": "5/min"}, "expires_in": "30d"}),
        )
        .await;
    for body in [
        req(&key, "GET", "/fact"),
        req(&key, "POST", "/facts"),
        json!({"path": "/fact", "client_ip": "127.0.0.1"}),
    ] {
        let v = verify(&kw, body).await;
        for k in v.as_object().unwrap().keys() {
            assert!(props.contains_key(k), "{k} is not in the schema: {schema}");
        }
    }
}
