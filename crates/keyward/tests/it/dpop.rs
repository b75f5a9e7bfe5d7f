//! DPoP (RFC 9449) end to end: at the token endpoint and at the gateway (issue 6, points 1–2).

use base64::Engine as _;
use keyward_token::{thumbprint, Algorithm, SigningKey};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn ath(token: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

/// A proof signed by `key` with these claims (header: typ, alg, public jwk).
fn proof_with(key: &SigningKey, header: Value, claims: Value) -> String {
    let h = b64(header.to_string().as_bytes());
    let p = b64(claims.to_string().as_bytes());
    let sig = key.sign(format!("{h}.{p}").as_bytes()).unwrap();
    format!("{h}.{p}.{}", b64(&sig))
}

fn header(key: &SigningKey) -> Value {
    json!({"typ": "dpop+jwt", "alg": key.alg().as_str(), "jwk": serde_json::to_value(key.public_jwk()).unwrap()})
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn jti() -> String {
    keyward_core::secret::random_base62(16).unwrap()
}

fn proof(key: &SigningKey, htm: &str, htu: &str, token: Option<&str>) -> String {
    let mut c = json!({"jti": jti(), "htm": htm, "htu": htu, "iat": now()});
    if let Some(t) = token {
        c["ath"] = json!(ath(t));
    }
    proof_with(key, header(key), c)
}

async fn boot_dpop(require_nonce: bool) -> Kw {
    boot_with(move |c| {
        c.oauth.enabled = true;
        c.oauth.dpop_require_nonce = require_nonce;
        for r in c.routes.iter_mut() {
            r.tokens = true;
        }
    })
    .await
}

async fn client(kw: &Kw, extra: Value) -> (String, String) {
    kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    let mut b = json!({"app": "cats", "scopes": ["facts:read"]});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            b[k] = v;
        }
    }
    let (s, v) = kw.admin(Method::POST, "/v1/clients", Some(b)).await;
    assert_eq!(s, 201, "{v}");
    (
        v["client_id"].as_str().unwrap().to_owned(),
        v["client_secret"].as_str().unwrap().to_owned(),
    )
}

async fn token_request(kw: &Kw, id: &str, secret: &str, proofs: &[String]) -> reqwest::Response {
    let mut r = kw
        .http
        .post(format!("{}/oauth/token", kw.gw))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials");
    for p in proofs {
        r = r.header("dpop", p);
    }
    r.send().await.unwrap()
}

async fn call(kw: &Kw, scheme: &str, token: &str, proofs: &[String]) -> reqwest::Response {
    let mut r = kw
        .http
        .get(format!("{}/fact", kw.gw))
        .header("authorization", format!("{scheme} {token}"));
    for p in proofs {
        r = r.header("dpop", p);
    }
    r.send().await.unwrap()
}

fn www(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[tokio::test]
async fn dpop_bound_tokens_end_to_end() {
    let kw = boot_dpop(false).await;
    let (id, secret) = client(&kw, json!({})).await;
    let key = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let token_url = format!("{}/oauth/token", kw.gw);
    let r = token_request(&kw, &id, &secret, &[proof(&key, "POST", &token_url, None)]).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "DPoP");
    let token = t["access_token"].as_str().unwrap().to_owned();
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["cnf"]["jkt"], thumbprint(&key.public_jwk()));

    let fact_url = format!("{}/fact", kw.gw);
    let good = proof(&key, "GET", &fact_url, Some(&token));
    let r = call(&kw, "DPoP", &token, std::slice::from_ref(&good)).await;
    assert_eq!(r.status(), 200);
    // A new proof per request; the same one again is a replay.
    let r = call(&kw, "DPoP", &token, &[good]).await;
    assert!(www(&r).contains("invalid_dpop_proof"), "{}", www(&r));
    problem(r, 401, "invalid_dpop_proof").await;
    assert_eq!(
        call(&kw, "DPoP", &token, &[proof(&key, "GET", &fact_url, Some(&token))])
            .await
            .status(),
        200
    );

    // Refusals, each with its reason.
    let other = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let ed = SigningKey::generate(Algorithm::EdDSA, None).unwrap();
    let base = |htm: &str, htu: &str, iat: i64, ath_of: &str| json!({"jti": jti(), "htm": htm, "htu": htu, "iat": iat, "ath": ath(ath_of)});
    let mut private = header(&key);
    private["jwk"]["d"] = json!("AAAA");
    let mut hs = header(&key);
    hs["alg"] = json!("HS256");
    let mut none = header(&key);
    none["alg"] = json!("none");
    let mut typ = header(&key);
    typ["typ"] = json!("JWT");
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong htm",
            proof_with(&key, header(&key), base("POST", &fact_url, now(), &token)),
        ),
        (
            "wrong htu",
            proof_with(
                &key,
                header(&key),
                base("GET", &format!("{}/facts", kw.gw), now(), &token),
            ),
        ),
        (
            "wrong ath",
            proof_with(&key, header(&key), base("GET", &fact_url, now(), "another token")),
        ),
        (
            "stale iat",
            proof_with(&key, header(&key), base("GET", &fact_url, now() - 120, &token)),
        ),
        (
            "future iat",
            proof_with(&key, header(&key), base("GET", &fact_url, now() + 120, &token)),
        ),
        ("other key", proof(&other, "GET", &fact_url, Some(&token))),
        ("other alg key", proof(&ed, "GET", &fact_url, Some(&token))),
        (
            "private jwk",
            proof_with(&key, private, base("GET", &fact_url, now(), &token)),
        ),
        ("hs256", proof_with(&key, hs, base("GET", &fact_url, now(), &token))),
        (
            "none",
            format!(
                "{}.{}.",
                b64(none.to_string().as_bytes()),
                b64(base("GET", &fact_url, now(), &token).to_string().as_bytes())
            ),
        ),
        ("typ", proof_with(&key, typ, base("GET", &fact_url, now(), &token))),
        ("garbage", "not.a.proof".into()),
    ];
    for (what, p) in cases {
        let r = call(&kw, "DPoP", &token, &[p]).await;
        assert_eq!(r.status(), 401, "{what}");
        let w = www(&r);
        assert!(w.contains("DPoP") && w.contains("algs="), "{what}: {w}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "invalid_dpop_proof", "{what}: {v}");
    }
    // No proof, two proofs, the bound token as Bearer.
    problem(call(&kw, "DPoP", &token, &[]).await, 401, "invalid_dpop_proof").await;
    let two = [
        proof(&key, "GET", &fact_url, Some(&token)),
        proof(&key, "GET", &fact_url, Some(&token)),
    ];
    problem(call(&kw, "DPoP", &token, &two).await, 401, "invalid_dpop_proof").await;
    let r = call(&kw, "Bearer", &token, &[proof(&key, "GET", &fact_url, Some(&token))]).await;
    assert!(www(&r).contains("invalid_token"));
    problem(r, 401, "invalid_token").await;
    // An unbound token presented with the DPoP scheme is refused too.
    let r = token_request(&kw, &id, &secret, &[]).await;
    let plain = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    problem(
        call(&kw, "DPoP", &plain, &[proof(&key, "GET", &fact_url, Some(&plain))]).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(call(&kw, "Bearer", &plain, &[]).await.status(), 200);
    // The proof never reaches the upstream... (the /fact route goes to the recording upstream)
    let seen = kw.up.seen.last();
    assert!(!seen.contains_key("dpop") && !seen.contains_key("authorization"));
}

#[tokio::test]
async fn token_endpoint_proof_checks() {
    let kw = boot_dpop(false).await;
    let (id, secret) = client(&kw, json!({})).await;
    let key = SigningKey::generate(Algorithm::EdDSA, None).unwrap();
    let token_url = format!("{}/oauth/token", kw.gw);
    for (what, p) in [
        ("wrong htu", proof(&key, "POST", &format!("{}/other", kw.gw), None)),
        ("wrong htm", proof(&key, "GET", &token_url, None)),
        ("garbage", "x.y.z".into()),
    ] {
        let r = token_request(&kw, &id, &secret, &[p]).await;
        assert_eq!(r.status(), 400, "{what}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "invalid_dpop_proof",
            "{what}"
        );
    }
    let p = proof(&key, "POST", &token_url, None);
    let r = token_request(&kw, &id, &secret, &[p.clone(), p.clone()]).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof",
        "two DPoP headers"
    );
    assert_eq!(
        token_request(&kw, &id, &secret, std::slice::from_ref(&p))
            .await
            .status(),
        200
    );
    let r = token_request(&kw, &id, &secret, &[p]).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof",
        "replay"
    );
    // A client that must use DPoP gets nothing without a proof.
    let (bid, bsecret) = client(&kw, json!({"dpop_bound_access_tokens": true, "name": "bound"})).await;
    let r = token_request(&kw, &bid, &bsecret, &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_dpop_proof");
    let r = token_request(&kw, &bid, &bsecret, &[proof(&key, "POST", &token_url, None)]).await;
    assert_eq!(r.json::<Value>().await.unwrap()["token_type"], "DPoP");
    let m: Value = kw
        .http
        .get(format!("{}/.well-known/oauth-authorization-server", kw.gw))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        m["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "RS256", "PS256"])
    );
}

#[tokio::test]
async fn server_nonces() {
    let kw = boot_dpop(true).await;
    let (id, secret) = client(&kw, json!({})).await;
    let key = SigningKey::generate(Algorithm::ES256, None).unwrap();
    let token_url = format!("{}/oauth/token", kw.gw);
    let r = token_request(&kw, &id, &secret, &[proof(&key, "POST", &token_url, None)]).await;
    assert_eq!(r.status(), 400);
    let nonce = r.headers().get("dpop-nonce").unwrap().to_str().unwrap().to_owned();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "use_dpop_nonce");
    let with_nonce = |htm: &str, htu: &str, token: Option<&str>| {
        let mut c = json!({"jti": jti(), "htm": htm, "htu": htu, "iat": now(), "nonce": nonce});
        if let Some(t) = token {
            c["ath"] = json!(ath(t));
        }
        proof_with(&key, header(&key), c)
    };
    let r = token_request(&kw, &id, &secret, &[with_nonce("POST", &token_url, None)]).await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let fact_url = format!("{}/fact", kw.gw);
    let r = call(&kw, "DPoP", &token, &[proof(&key, "GET", &fact_url, Some(&token))]).await;
    assert!(r.headers().get("dpop-nonce").is_some());
    assert!(www(&r).contains("use_dpop_nonce"));
    problem(r, 401, "use_dpop_nonce").await;
    assert_eq!(
        call(&kw, "DPoP", &token, &[with_nonce("GET", &fact_url, Some(&token))])
            .await
            .status(),
        200
    );
    let mut c =
        json!({"jti": jti(), "htm": "GET", "htu": fact_url, "iat": now(), "nonce": "forged", "ath": ath(&token)});
    c["x"] = json!(1);
    problem(
        call(&kw, "DPoP", &token, &[proof_with(&key, header(&key), c)]).await,
        401,
        "use_dpop_nonce",
    )
    .await;
}
