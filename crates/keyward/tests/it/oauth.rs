//! The OAuth 2.0 token service through the real gateway listener (issue 5, points 1–8).

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

async fn boot_oauth() -> Kw {
    boot_with(|c| {
        c.oauth.enabled = true;
        for r in c.routes.iter_mut() {
            r.tokens = true;
        }
    })
    .await
}

async fn client(kw: &Kw, body: Value) -> Value {
    kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    let mut b = json!({"app": "cats", "scopes": ["facts:read", "facts:write"]});
    if let Value::Object(m) = body {
        for (k, v) in m {
            b[k] = v;
        }
    }
    let (s, v) = kw.admin(Method::POST, "/v1/clients", Some(b)).await;
    assert_eq!(s, 201, "{v}");
    v
}

async fn post_form(kw: &Kw, path: &str, basic: Option<(&str, &str)>, form: &str) -> reqwest::Response {
    let mut r = kw
        .http
        .post(format!("{}{}", kw.gw, path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some((id, secret)) = basic {
        r = r.basic_auth(id, Some(secret));
    }
    r.send().await.unwrap()
}

fn no_store(r: &reqwest::Response) {
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    assert_eq!(r.headers().get("pragma").unwrap(), "no-cache");
}

async fn oauth_error(r: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    no_store(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], error, "{v}");
    v
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn client_credentials_with_basic_and_post() {
    let kw = boot_oauth().await;
    let c = client(&kw, json!({"token_ttl": "2m"})).await;
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    // The secret is shown once; the record never has it.
    let (_, shown) = kw.admin(Method::GET, &format!("/v1/clients/{id}"), None).await;
    assert!(!shown.to_string().contains(secret));
    assert_eq!(shown["secrets"].as_array().unwrap().len(), 1);

    let r = post_form(
        &kw,
        "/oauth/token",
        Some((id, secret)),
        "grant_type=client_credentials&scope=facts%3Aread",
    )
    .await;
    assert_eq!(r.status(), 200);
    no_store(&r);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 120);
    assert_eq!(t["scope"], "facts:read");
    assert!(t.get("refresh_token").is_none());
    let token = t["access_token"].as_str().unwrap();
    let h = header_of(token);
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(h["alg"], "EdDSA");
    assert!(h["kid"].is_string());
    let c2 = claims(token);
    for k in ["iss", "exp", "aud", "sub", "client_id", "iat", "jti", "scope"] {
        assert!(c2.get(k).is_some(), "claim {k} missing: {c2}");
    }
    assert_eq!(c2["sub"], id);
    assert_eq!(c2["client_id"], id);
    assert_eq!(c2["aud"], "keyward");
    assert_eq!(c2["iss"], kw.gw.as_str());

    // client_secret_post is refused for a Basic client (one method per client).
    let body = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    oauth_error(post_form(&kw, "/oauth/token", None, &body).await, 401, "invalid_client").await;
    let p = client(&kw, json!({"auth_method": "client_secret_post", "name": "post"})).await;
    let body = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        p["client_id"].as_str().unwrap(),
        p["client_secret"].as_str().unwrap()
    );
    let r = post_form(&kw, "/oauth/token", None, &body).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(
        t["scope"], "facts:read facts:write",
        "no scope asked: all the client may have"
    );

    // The token works on a route; the upstream gets the client, never the token.
    let r = kw.get("/echo", &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(r.status(), 200);
    let seen = kw.up.seen.last();
    assert_eq!(seen["x-keyward-client-id"], vec![id]);
    assert!(!seen.contains_key("authorization") && !seen.contains_key("x-keyward-key-id"));
    assert_eq!(
        kw.get("/fact", &[("authorization", &format!("Bearer {token}"))])
            .await
            .status(),
        200
    );
    let r = kw
        .http
        .post(format!("{}/facts", kw.gw))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({"fact": "x"}))
        .send()
        .await
        .unwrap();
    let www = r
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(www.contains("insufficient_scope"), "{www}");
    problem(r, 403, "insufficient_scope").await;
}

#[tokio::test]
async fn token_endpoint_errors_are_exact() {
    let kw = boot_oauth().await;
    let c = client(&kw, json!({})).await;
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let basic = Some((id, secret));
    // Wrong secret with Basic: 401 + WWW-Authenticate: Basic.
    let r = post_form(
        &kw,
        "/oauth/token",
        Some((id, "wrong")),
        "grant_type=client_credentials",
    )
    .await;
    assert!(r
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    oauth_error(r, 401, "invalid_client").await;
    oauth_error(
        post_form(
            &kw,
            "/oauth/token",
            Some(("cl_nobody", secret)),
            "grant_type=client_credentials",
        )
        .await,
        401,
        "invalid_client",
    )
    .await;
    oauth_error(
        post_form(&kw, "/oauth/token", None, "grant_type=client_credentials").await,
        401,
        "invalid_client",
    )
    .await;
    oauth_error(post_form(&kw, "/oauth/token", basic, "").await, 400, "invalid_request").await;
    oauth_error(
        post_form(&kw, "/oauth/token", basic, "grant_type=password&username=a&password=b").await,
        400,
        "unsupported_grant_type",
    )
    .await;
    oauth_error(
        post_form(&kw, "/oauth/token", basic, "grant_type=refresh_token&refresh_token=x").await,
        400,
        "unsupported_grant_type",
    )
    .await;
    oauth_error(
        post_form(&kw, "/oauth/token", basic, "grant_type=nonsense").await,
        400,
        "unsupported_grant_type",
    )
    .await;
    oauth_error(
        post_form(&kw, "/oauth/token", basic, "grant_type=client_credentials&scope=admin").await,
        400,
        "invalid_scope",
    )
    .await;
    oauth_error(
        post_form(
            &kw,
            "/oauth/token",
            basic,
            "grant_type=client_credentials&scope=%22bad%22",
        )
        .await,
        400,
        "invalid_scope",
    )
    .await;
    oauth_error(
        post_form(
            &kw,
            "/oauth/token",
            basic,
            "grant_type=client_credentials&scope=a&scope=b",
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    oauth_error(
        post_form(
            &kw,
            "/oauth/token",
            basic,
            "grant_type=client_credentials&grant_type=client_credentials",
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    oauth_error(
        post_form(
            &kw,
            "/oauth/token",
            basic,
            "grant_type=client_credentials&audience=elsewhere",
        )
        .await,
        400,
        "invalid_target",
    )
    .await;
    // Basic and post at once.
    let both = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    oauth_error(
        post_form(&kw, "/oauth/token", basic, &both).await,
        400,
        "invalid_request",
    )
    .await;
    // Not a form.
    let r = kw
        .http
        .post(format!("{}/oauth/token", kw.gw))
        .basic_auth(id, Some(secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    oauth_error(r, 400, "invalid_request").await;
    let r = kw
        .http
        .post(format!("{}/oauth/token", kw.gw))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=".repeat(20_000))
        .send()
        .await
        .unwrap();
    oauth_error(r, 413, "invalid_request").await;
    let r = kw.http.get(format!("{}/oauth/token", kw.gw)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    // A disabled client gets nothing; enabled again, it does.
    kw.admin(Method::POST, &format!("/v1/clients/{id}/disable"), None).await;
    oauth_error(
        post_form(&kw, "/oauth/token", basic, "grant_type=client_credentials").await,
        401,
        "invalid_client",
    )
    .await;
    kw.admin(Method::POST, &format!("/v1/clients/{id}/enable"), None).await;
    assert_eq!(
        post_form(&kw, "/oauth/token", basic, "grant_type=client_credentials")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn secret_rotation_keeps_the_old_secret_for_the_grace() {
    let kw = boot_oauth().await;
    let c = client(&kw, json!({})).await;
    let (id, old) = (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"].as_str().unwrap().to_owned(),
    );
    let (s, v) = kw
        .admin(
            Method::POST,
            &format!("/v1/clients/{id}/rotate-secret"),
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let new = v["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    for secret in [&old, &new] {
        assert_eq!(
            post_form(
                &kw,
                "/oauth/token",
                Some((&id, secret)),
                "grant_type=client_credentials"
            )
            .await
            .status(),
            200
        );
    }
    kw.clock.advance(time::Duration::minutes(61));
    oauth_error(
        post_form(&kw, "/oauth/token", Some((&id, &old)), "grant_type=client_credentials").await,
        401,
        "invalid_client",
    )
    .await;
    assert_eq!(
        post_form(&kw, "/oauth/token", Some((&id, &new)), "grant_type=client_credentials")
            .await
            .status(),
        200
    );
    // Deleting the client ends it.
    let (s, _) = kw.admin(Method::DELETE, &format!("/v1/clients/{id}"), None).await;
    assert_eq!(s, 204);
    oauth_error(
        post_form(&kw, "/oauth/token", Some((&id, &new)), "grant_type=client_credentials").await,
        401,
        "invalid_client",
    )
    .await;
}

#[tokio::test]
async fn gateway_refuses_forged_and_foreign_tokens() {
    let kw = boot_oauth().await;
    let c = client(&kw, json!({})).await;
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let r = post_form(&kw, "/oauth/token", Some((id, secret)), "grant_type=client_credentials").await;
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let parts: Vec<&str> = token.split('.').collect();
    let mut hdr = header_of(&token);
    let body = claims(&token);
    // alg none, HS256, wrong typ, unknown kid, other issuer, tampered payload.
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "at+jwt"})), parts[1]);
    let mut hs = hdr.clone();
    hs["alg"] = json!("HS256");
    let hs = format!("{}.{}.{}", b64(&hs), parts[1], parts[2]);
    hdr["typ"] = json!("JWT");
    let wrong_typ = format!("{}.{}.{}", b64(&hdr), parts[1], parts[2]);
    let mut kid = header_of(&token);
    kid["kid"] = json!("nope");
    let unknown_kid = format!("{}.{}.{}", b64(&kid), parts[1], parts[2]);
    let mut iss = body.clone();
    iss["iss"] = json!("https://evil.example");
    let other_iss = format!("{}.{}.{}", parts[0], b64(&iss), parts[2]);
    let mut scope = body.clone();
    scope["scope"] = json!("facts:read facts:write admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(&scope), parts[2]);
    for (what, t) in [
        ("none", none),
        ("hs256", hs),
        ("typ", wrong_typ),
        ("kid", unknown_kid),
        ("iss", other_iss),
        ("tampered", tampered),
        ("garbage", "a.b.c".into()),
    ] {
        let r = kw.get("/echo", &[("authorization", &format!("Bearer {t}"))]).await;
        let www = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        assert!(
            www.iter().any(|w| w.contains("error=\"invalid_token\"")),
            "{what}: {www:?}"
        );
        problem(r, 401, "invalid_token").await;
    }
    // Expired (leeway 30 s).
    kw.clock.advance(time::Duration::seconds(300 + 31));
    problem(
        kw.get("/echo", &[("authorization", &format!("Bearer {token}"))]).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(kw.up.seen.count(), 0);
}

#[tokio::test]
async fn introspection_and_revocation() {
    let kw = boot_oauth().await;
    let a = client(&kw, json!({"name": "a"})).await;
    let b = client(&kw, json!({"name": "b"})).await;
    let (aid, asec) = (a["client_id"].as_str().unwrap(), a["client_secret"].as_str().unwrap());
    let (bid, bsec) = (b["client_id"].as_str().unwrap(), b["client_secret"].as_str().unwrap());
    let token = post_form(&kw, "/oauth/token", Some((aid, asec)), "grant_type=client_credentials")
        .await
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Introspection needs client authentication.
    oauth_error(
        post_form(&kw, "/oauth/introspect", None, &format!("token={token}")).await,
        401,
        "invalid_client",
    )
    .await;
    let r = post_form(&kw, "/oauth/introspect", Some((bid, bsec)), &format!("token={token}")).await;
    no_store(&r);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], aid);
    for junk in ["nope", "a.b.c", ""] {
        let v: Value = post_form(
            &kw,
            "/oauth/introspect",
            Some((bid, bsec)),
            &format!("token={junk}&x=1"),
        )
        .await
        .json()
        .await
        .unwrap_or(json!({"error": "invalid_request"}));
        assert!(v["active"] == false || v["error"] == "invalid_request", "{junk}: {v}");
    }
    // Another client cannot revoke it; its own client can (200 either way).
    assert_eq!(
        post_form(&kw, "/oauth/revoke", Some((bid, bsec)), &format!("token={token}"))
            .await
            .status(),
        200
    );
    assert_eq!(
        kw.get("/echo", &[("authorization", &format!("Bearer {token}"))])
            .await
            .status(),
        200
    );
    assert_eq!(
        post_form(&kw, "/oauth/revoke", Some((aid, asec)), &format!("token={token}"))
            .await
            .status(),
        200
    );
    problem(
        kw.get("/echo", &[("authorization", &format!("Bearer {token}"))]).await,
        401,
        "invalid_token",
    )
    .await;
    let v: Value = post_form(&kw, "/oauth/introspect", Some((bid, bsec)), &format!("token={token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"active": false}));
    // Unknown tokens: 200.
    assert_eq!(
        post_form(&kw, "/oauth/revoke", Some((aid, asec)), "token=unknown")
            .await
            .status(),
        200
    );
    // RFC 7009 §2.1: an unknown hint is ignored.
    assert_eq!(
        post_form(
            &kw,
            "/oauth/revoke",
            Some((aid, asec)),
            "token=x&token_type_hint=id_token"
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn api_keys_exchange_for_tokens() {
    let kw = boot_oauth().await;
    let (_, key) = kw.key("cats", &["facts:read", "x"], json!({"expires_in": "1h"})).await;
    let form = |k: &str, scope: &str| {
        format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Akeyward%3Aparams%3Aoauth%3Atoken-type%3Aapi-key&subject_token={k}{scope}"
        )
    };
    let r = post_form(&kw, "/oauth/token", None, &form(&key, "&scope=facts%3Aread")).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(t["scope"], "facts:read");
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(
        kw.get("/fact", &[("authorization", &format!("Bearer {token}"))])
            .await
            .status(),
        200
    );
    oauth_error(
        post_form(&kw, "/oauth/token", None, &form("kw_live_nope", "")).await,
        400,
        "invalid_grant",
    )
    .await;
    oauth_error(
        post_form(&kw, "/oauth/token", None, &form(&key, "&scope=admin")).await,
        400,
        "invalid_scope",
    )
    .await;
    let wrong_type = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&subject_token=x";
    oauth_error(
        post_form(&kw, "/oauth/token", None, wrong_type).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn discovery_and_jwks() {
    let kw = boot_oauth().await;
    let m: Value = kw
        .http
        .get(format!("{}/.well-known/oauth-authorization-server", kw.gw))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["issuer"], kw.gw.as_str());
    for k in [
        "token_endpoint",
        "jwks_uri",
        "introspection_endpoint",
        "revocation_endpoint",
        "grant_types_supported",
        "token_endpoint_auth_methods_supported",
        "token_endpoint_auth_signing_alg_values_supported",
        "scopes_supported",
    ] {
        assert!(m.get(k).is_some(), "{k}");
    }
    assert!(m["scopes_supported"].as_array().unwrap().contains(&json!("facts:read")));
    let jwks: Value = kw
        .http
        .get(m["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none(), "no private part in the JWKS");
    // The signing key is sealed in the database: its public part is there, its private part is not readable.
    let mut kw = kw;
    kw.stop().await;
    let db = std::fs::read(kw.db_path()).unwrap_or_default();
    let wal = std::fs::read(format!("{}-wal", kw.db_path().display())).unwrap_or_default();
    let text = String::from_utf8_lossy(&[db, wal].concat()).into_owned();
    assert!(
        text.contains(keys[0]["x"].as_str().unwrap()),
        "the public key is stored"
    );
}

#[tokio::test]
async fn signing_keys_are_published_before_they_sign_and_kept_after() {
    let kw = boot_oauth().await;
    let c = client(&kw, json!({})).await;
    let (id, secret) = (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"].as_str().unwrap().to_owned(),
    );
    let token = |kw: &Kw| {
        let (id, secret) = (id.clone(), secret.clone());
        let http = kw.http.clone();
        let url = format!("{}/oauth/token", kw.gw);
        async move {
            let r = http
                .post(url)
                .basic_auth(id, Some(secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials")
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (_, list) = kw.admin(Method::GET, "/v1/signing-keys", None).await;
    let first = list["items"][0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(list["items"][0]["state"], "active");
    assert!(list.to_string().find("\"d\"").is_none(), "no private part");
    let old_token = token(&kw).await;
    assert_eq!(header_of(&old_token)["kid"], first.as_str());
    // Rotate: the new key is in the JWKS at once, but does not sign yet.
    let (s, v) = kw
        .admin(Method::POST, "/v1/signing-keys/rotate", Some(json!({"alg": "ES256"})))
        .await;
    assert_eq!(s, 201, "{v}");
    let second = v["kid"].as_str().unwrap().to_owned();
    assert_eq!(v["state"], "pending");
    let jwks: Value = kw
        .http
        .get(format!("{}/.well-known/jwks.json", kw.gw))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&first.as_str()) && kids.contains(&second.as_str()));
    assert_eq!(header_of(&token(&kw).await)["kid"], first.as_str());
    // After the publish delay the new key signs, the old one is retired but still verifies.
    kw.clock.advance(time::Duration::seconds(301));
    kw.running
        .as_ref()
        .unwrap()
        .engine
        .signing_key_maintenance()
        .await
        .unwrap();
    let new_token = token(&kw).await;
    assert_eq!(header_of(&new_token)["kid"], second.as_str());
    assert_eq!(header_of(&new_token)["alg"], "ES256");
    let (_, list) = kw.admin(Method::GET, "/v1/signing-keys", None).await;
    let states: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(states.contains(&(first.clone(), "retired".into())) && states.contains(&(second.clone(), "active".into())));
    for t in [&old_token, &new_token] {
        assert_eq!(
            kw.get("/echo", &[("authorization", &format!("Bearer {t}"))])
                .await
                .status(),
            200
        );
    }
    // Retiring the only active key puts a fresh one in its place.
    let (s, _) = kw
        .admin(Method::POST, &format!("/v1/signing-keys/{second}/retire"), None)
        .await;
    assert_eq!(s, 204);
    let third = header_of(&token(&kw).await)["kid"].as_str().unwrap().to_owned();
    assert!(third != first && third != second);
    let (s, _) = kw.admin(Method::POST, "/v1/signing-keys/nope/retire", None).await;
    assert_eq!(s, 404);
    let (s, _) = kw
        .admin(Method::POST, "/v1/signing-keys/rotate", Some(json!({"alg": "HS256"})))
        .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn private_key_jwt_assertions() {
    use keyward_token::{Algorithm, SigningKey};
    let kw = boot_oauth().await;
    let key = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let jwks = json!({"keys": [serde_json::to_value(key.public_jwk()).unwrap()]});
    let c = client(&kw, json!({"auth_method": "private_key_jwt", "jwks": jwks})).await;
    assert!(c.get("client_secret").is_none());
    let id = c["client_id"].as_str().unwrap().to_owned();
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let endpoint = format!("{}/oauth/token", kw.gw);
    let assertion = |claims: Value, signer: &SigningKey| {
        let h = b64(json!({"alg": "ES256", "kid": signer.kid(), "typ": "JWT"})
            .to_string()
            .as_bytes());
        let p = b64(claims.to_string().as_bytes());
        let sig = signer.sign(format!("{h}.{p}").as_bytes()).unwrap();
        format!("{h}.{p}.{}", b64(&sig))
    };
    let good = |jti: &str| json!({"iss": id, "sub": id, "aud": endpoint, "exp": now + 60, "iat": now, "jti": jti});
    let form = |a: &str| {
        format!("grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}")
    };
    let a1 = assertion(good("one"), &key);
    let r = post_form(&kw, "/oauth/token", None, &form(&a1)).await;
    assert_eq!(r.status(), 200);
    // The same assertion again: a replay.
    oauth_error(
        post_form(&kw, "/oauth/token", None, &form(&a1)).await,
        401,
        "invalid_client",
    )
    .await;
    // Wrong audience, expired, far-future expiry, iss != sub, another key, no jti.
    let mut bad = Vec::new();
    let mut v = good("a");
    v["aud"] = json!("https://elsewhere.example/token");
    bad.push(assertion(v, &key));
    let mut v = good("b");
    v["exp"] = json!(now - 120);
    bad.push(assertion(v, &key));
    let mut v = good("c");
    v["exp"] = json!(now + 86_400);
    bad.push(assertion(v, &key));
    let mut v = good("d");
    v["sub"] = json!("someone-else");
    bad.push(assertion(v, &key));
    let other = SigningKey::generate(Algorithm::ES256, Some(key.kid())).unwrap();
    bad.push(assertion(good("e"), &other));
    let mut v = good("f");
    v.as_object_mut().unwrap().remove("jti");
    bad.push(assertion(v, &key));
    bad.push("not.a.jwt".into());
    for a in bad {
        oauth_error(
            post_form(&kw, "/oauth/token", None, &form(&a)).await,
            401,
            "invalid_client",
        )
        .await;
    }
    // A client with a private key in its JWKS is refused at creation.
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/clients",
            Some(json!({"app": "cats", "auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}]}})),
        )
        .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn exchange_only_keys_work_only_at_the_token_endpoint() {
    let kw = boot_oauth().await;
    let (id, key) = kw.key("cats", &["facts:read"], json!({"exchange_only": true})).await;
    let v = problem(
        kw.get("/fact", &[("x-api-key", &key)]).await,
        403,
        "exchange_only_credential",
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("token endpoint"));
    problem(
        kw.get("/fact", &[("authorization", &format!("Bearer {key}"))]).await,
        403,
        "exchange_only_credential",
    )
    .await;
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Akeyward%3Aparams%3Aoauth%3Atoken-type%3Aapi-key&subject_token={key}"
    );
    let r = post_form(&kw, "/oauth/token", None, &form).await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims(&token)["sub"], id.as_str());
    assert_eq!(
        kw.get("/fact", &[("authorization", &format!("Bearer {token}"))])
            .await
            .status(),
        200
    );
    // Rotation keeps the restriction.
    let (s, v) = kw
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace": "0s"})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(v["exchange_only"], true);
    let successor = v["key"].as_str().unwrap().to_owned();
    problem(
        kw.get("/fact", &[("x-api-key", &successor)]).await,
        403,
        "exchange_only_credential",
    )
    .await;
    // A revoked exchange-only key cannot be exchanged.
    let (sid, _) = (v["id"].as_str().unwrap().to_owned(), ());
    kw.admin(Method::POST, &format!("/v1/keys/{sid}/revoke"), None).await;
    let form = form.replace(&key, &successor);
    oauth_error(post_form(&kw, "/oauth/token", None, &form).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn rs256_and_es256_signing_keys_issue_working_tokens() {
    for alg in ["RS256", "ES256"] {
        let kw = boot_with(|c| {
            c.oauth.enabled = true;
            c.oauth.signing_alg = alg.into();
            for r in c.routes.iter_mut() {
                r.tokens = true;
            }
        })
        .await;
        let c = client(&kw, json!({})).await;
        let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
        let r = post_form(&kw, "/oauth/token", Some((id, secret)), "grant_type=client_credentials").await;
        let token = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(header_of(&token)["alg"], alg);
        assert_eq!(
            kw.get("/fact", &[("authorization", &format!("Bearer {token}"))])
                .await
                .status(),
            200,
            "{alg}"
        );
        let jwks: Value = kw
            .http
            .get(format!("{}/.well-known/jwks.json", kw.gw))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(jwks["keys"][0]["alg"], alg);
    }
}

#[tokio::test]
async fn client_limits_expiry_and_scheduled_rotation() {
    let kw = boot_with(|c| {
        c.oauth.enabled = true;
        c.oauth.rotate_every = Some("1h".into());
        c.oauth.publish_delay = std::time::Duration::from_secs(60);
        for r in c.routes.iter_mut() {
            r.tokens = true;
        }
    })
    .await;
    // Limits of the client apply to its tokens.
    let c = client(&kw, json!({"rate": {"limit": "2/min", "burst": 2}, "token_ttl": "2m"})).await;
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let token = post_form(&kw, "/oauth/token", Some((id, secret)), "grant_type=client_credentials")
        .await
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = format!("Bearer {token}");
    assert_eq!(kw.get("/echo", &[("authorization", &auth)]).await.status(), 200);
    let r = kw.get("/echo", &[("authorization", &auth)]).await;
    assert_eq!(
        r.headers().get("ratelimit").unwrap().to_str().unwrap(),
        "\"key\";r=0;t=60"
    );
    problem(kw.get("/echo", &[("authorization", &auth)]).await, 429, "rate_limited").await;
    // Introspection says inactive once the token has expired.
    kw.clock.advance(time::Duration::seconds(121));
    let v: Value = post_form(&kw, "/oauth/introspect", Some((id, secret)), &format!("token={token}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"active": false}));
    // Scheduled rotation: after `rotate_every`, maintenance publishes a new key, which signs
    // once the publish delay has passed.
    let engine = kw.running.as_ref().unwrap().engine.clone();
    let (_, before) = kw.admin(Method::GET, "/v1/signing-keys", None).await;
    assert_eq!(before["items"].as_array().unwrap().len(), 1);
    kw.clock.advance(time::Duration::minutes(61));
    engine.signing_key_maintenance().await.unwrap();
    let (_, during) = kw.admin(Method::GET, "/v1/signing-keys", None).await;
    let states: Vec<&str> = during["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["active", "pending"]);
    kw.clock.advance(time::Duration::seconds(61));
    engine.signing_key_maintenance().await.unwrap();
    let (_, after) = kw.admin(Method::GET, "/v1/signing-keys", None).await;
    let states: Vec<&str> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["retired", "active"]);
}

/// Verified tokens stay in memory until they expire, not for a day (found by the soak, issue 9):
/// `keyward_memory_entries{cache="tokens"}` counts the cached token while it is valid and drops
/// to 0 once it has expired.
#[tokio::test]
async fn verified_tokens_leave_memory_when_they_expire() {
    let kw = boot_with(|c| {
        c.oauth.enabled = true;
        c.oauth.leeway = std::time::Duration::ZERO;
        for r in c.routes.iter_mut() {
            r.tokens = true;
        }
    })
    .await;
    let c = client(&kw, json!({"token_ttl": "2s"})).await;
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let r = post_form(&kw, "/oauth/token", Some((id, secret)), "grant_type=client_credentials").await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let bearer = format!("Bearer {}", t["access_token"].as_str().unwrap());
    let gauge = |what: &'static str| {
        let kw = &kw;
        async move {
            let text = kw
                .http
                .get(format!("{}/metrics", kw.admin))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let prefix = format!("keyward_memory_entries{{cache=\"{what}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("{prefix} missing in\n{text}"))
                .parse::<u64>()
                .unwrap()
        }
    };
    assert_eq!(gauge("tokens").await, 0);
    assert_eq!(kw.get("/fact", &[("authorization", &bearer)]).await.status(), 200);
    assert_eq!(kw.get("/fact", &[("authorization", &bearer)]).await.status(), 200);
    assert_eq!(gauge("tokens").await, 1);
    // The cache lets go on the wall clock (2 s after the insert), the token expires on the
    // engine's clock (the harness's manual one): move both past `exp`.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    kw.clock.advance(time::Duration::seconds(3));
    assert_eq!(gauge("tokens").await, 0);
    assert_eq!(kw.get("/fact", &[("authorization", &bearer)]).await.status(), 401);
}
