//! Issue 17 over HTTP: what the one authentication pipeline changed for a user — credentials a
//! route does not take, revoked tokens that say so, denials once decided in the edge now
//! counted in usage, and the binding in introspection.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

async fn boot_tokens() -> Kw {
    boot_with(|c| {
        c.oauth.enabled = true;
        // `/fact` takes keys only; `/echo` takes tokens only; `/facts` both.
        for r in c.routes.iter_mut() {
            match r.name.as_str() {
                "echo" => {
                    r.tokens = true;
                    r.api_keys = false;
                }
                "facts-read" | "facts-write" => r.tokens = true,
                _ => {}
            }
        }
    })
    .await
}

async fn token(kw: &Kw, scopes: &[&str]) -> (String, String, String) {
    kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    let (s, c) = kw
        .admin(
            Method::POST,
            "/v1/clients",
            Some(json!({"app": "cats", "scopes": scopes})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["client_id"].as_str().unwrap().to_owned();
    let secret = c["client_secret"].as_str().unwrap().to_owned();
    let t: Value = kw
        .http
        .post(format!("{}/oauth/token", kw.gw))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (id, secret, t["access_token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_credential_the_route_does_not_take_is_named_as_such() {
    let kw = boot_tokens().await;
    let (_, _, token) = token(&kw, &["facts:read"]).await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let bearer = format!("Bearer {token}");

    // A token on a key-only route: 401 credential_not_accepted, not missing_credential.
    let r = kw.get("/fact", &[("authorization", &bearer)]).await;
    assert!(r.headers().get("www-authenticate").is_some());
    let v = problem(r, 401, "credential_not_accepted").await;
    assert!(v["detail"].as_str().unwrap().contains("an API key"), "{v}");
    // A key on a token-only route.
    let v = problem(
        kw.get("/echo", &[("x-api-key", &key)]).await,
        401,
        "credential_not_accepted",
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("an access token"), "{v}");
    // Nothing at all is still missing_credential.
    problem(kw.get("/fact", &[]).await, 401, "missing_credential").await;

    // On a key-only route the upstream's own `Authorization` passes through beside the key.
    let r = kw
        .get(
            "/fact",
            &[("x-api-key", &key), ("authorization", "Bearer upstream-session")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        kw.up.seen.last()["authorization"],
        vec!["Bearer upstream-session".to_owned()]
    );
    // Where tokens count, a key beside a token is ambiguous.
    problem(
        kw.get("/facts", &[("x-api-key", &key), ("authorization", &bearer)])
            .await,
        400,
        "multiple_credentials",
    )
    .await;
    // And the token works where tokens are taken, without reaching the upstream.
    assert_eq!(kw.get("/echo", &[("authorization", &bearer)]).await.status(), 200);
    assert!(!kw.up.seen.last().contains_key("authorization"));
}

#[tokio::test]
async fn a_revoked_token_is_refused_as_revoked() {
    let kw = boot_tokens().await;
    let (id, secret, token) = token(&kw, &["facts:read"]).await;
    let bearer = format!("Bearer {token}");
    assert_eq!(kw.get("/echo", &[("authorization", &bearer)]).await.status(), 200);
    let r = kw
        .http
        .post(format!("{}/oauth/revoke", kw.gw))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = problem(
        kw.get("/echo", &[("authorization", &bearer)]).await,
        401,
        "invalid_token",
    )
    .await;
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("revoked") && !detail.contains("expired"), "{detail}");
}

#[tokio::test]
async fn denials_decided_for_the_route_are_counted_in_usage() {
    let kw = boot_with(|c| {
        c.oauth.enabled = true;
        // Publishable keys are taken on `GET /facts`, not on `/fact`.
        for r in c.routes.iter_mut().filter(|r| r.name == "facts-read") {
            r.publishable = true;
        }
    })
    .await;
    // An exchange-only key on a route, and a publishable key where none is taken.
    let (xid, xkey) = kw.key("cats", &["facts:read"], json!({"exchange_only": true})).await;
    problem(
        kw.get("/fact", &[("x-api-key", &xkey)]).await,
        403,
        "exchange_only_credential",
    )
    .await;
    let (pid, pkey) = kw
        .key(
            "cats",
            &["facts:read"],
            json!({"kind": "publishable", "origins": ["https://cats.example"]}),
        )
        .await;
    problem(
        kw.get("/fact", &[("x-api-key", &pkey), ("origin", "https://cats.example")])
            .await,
        403,
        "publishable_key_not_allowed",
    )
    .await;
    for (id, outcome) in [(&xid, "denied:exchange_only"), (&pid, "denied:publishable_not_allowed")] {
        let (s, v) = kw
            .admin(Method::GET, &format!("/v1/usage?key={id}&since=1h"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["totals"], json!({ outcome: 1 }), "{id}");
    }
}

#[tokio::test]
async fn introspection_names_a_dpop_binding() {
    let kw = boot_tokens().await;
    let (id, secret, _) = token(&kw, &["facts:read"]).await;
    let key = keyward_token::SigningKey::generate(keyward_token::Algorithm::ES256, None).unwrap();
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()});
    let claims = json!({
        "jti": keyward_core::secret::random_base62(16).unwrap(),
        "htm": "POST",
        "htu": format!("{}/oauth/token", kw.gw),
        "iat": time::OffsetDateTime::now_utc().unix_timestamp(),
    });
    let (h, p) = (b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let proof = format!("{h}.{p}.{}", b64(&key.sign(format!("{h}.{p}").as_bytes()).unwrap()));
    let t: Value = kw
        .http
        .post(format!("{}/oauth/token", kw.gw))
        .basic_auth(&id, Some(&secret))
        .header("dpop", proof)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["token_type"], "DPoP", "{t}");
    let bound = t["access_token"].as_str().unwrap();
    let (_, _, plain) = token(&kw, &["facts:read"]).await;
    let introspect = |tok: String| {
        let kw = &kw;
        let (id, secret) = (id.clone(), secret.clone());
        async move {
            kw.http
                .post(format!("{}/oauth/introspect", kw.gw))
                .basic_auth(&id, Some(&secret))
                .form(&[("token", tok.as_str())])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let v = introspect(bound.to_owned()).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["token_type"], "DPoP");
    assert_eq!(
        v["cnf"],
        json!({"jkt": keyward_token::thumbprint(&key.public_jwk())}),
        "{v}"
    );
    let v = introspect(plain).await;
    assert_eq!(v["active"], true);
    assert!(v.get("cnf").is_none(), "an unbound token has no cnf: {v}");
}
