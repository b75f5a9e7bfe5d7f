//! Key lifecycle, usage, audit and canaries through the real server (issue 4, points 1–6).

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

async fn rotate(kw: &Kw, id: &str, body: Value) -> (u16, Value) {
    let (s, v) = kw
        .admin(Method::POST, &format!("/v1/keys/{id}/rotate"), Some(body))
        .await;
    (s.as_u16(), v)
}

#[tokio::test]
async fn rotation_with_grace_keeps_policy_and_expiry() {
    let kw = boot().await;
    let (id, old) = kw
        .key(
            "cats",
            &["facts:read"],
            json!({"expires_in": "30d", "ips": ["127.0.0.1"], "rate": {"limit": "100/min", "burst": 10}, "quota": "1000/day", "name": "ci"}),
        )
        .await;
    let (_, before) = kw.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    kw.clock.advance(time::Duration::days(10));
    let (s, v) = rotate(&kw, &id, json!({"grace": "1h"})).await;
    assert_eq!(s, 201, "{v}");
    let new = v["key"].as_str().unwrap().to_owned();
    let new_id = v["id"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    // Same app, name, scopes, limits and allowlists.
    for field in ["app_id", "name", "scopes", "policy", "env"] {
        assert_eq!(v[field], before[field], "{field}");
    }
    assert_eq!(v["rotated_from"], id.as_str());
    assert_eq!(v["previous"]["rotated_to"], new_id.as_str());
    // The successor keeps the expiry policy: the same 30-day lifetime, from now.
    let created = time::OffsetDateTime::parse(
        v["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        v["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires - created, time::Duration::days(30));
    // Both work during the grace period; the old one says it is going away.
    assert_eq!(kw.get("/fact", &[("x-api-key", &new)]).await.status(), 200);
    let r = kw.get("/fact", &[("x-api-key", &old)]).await;
    assert_eq!(r.status(), 200);
    let deprecation = header(&r, "deprecation").unwrap();
    assert!(deprecation.starts_with('@'), "{deprecation}");
    let sunset = header(&r, "sunset").unwrap();
    assert!(sunset.ends_with(" GMT"), "{sunset}");
    let r = kw.get("/fact", &[("x-api-key", &new)]).await;
    assert!(header(&r, "deprecation").is_none() && header(&r, "sunset").is_none());
    // After the grace: 401 expired for the old key, the new one goes on.
    kw.clock.advance(time::Duration::minutes(61));
    problem(kw.get("/fact", &[("x-api-key", &old)]).await, 401, "expired_credential").await;
    assert_eq!(kw.get("/fact", &[("x-api-key", &new)]).await.status(), 200);
}

#[tokio::test]
async fn rotation_edge_cases_are_clear() {
    let kw = boot().await;
    let (id, _) = kw.key("cats", &[], json!({})).await;
    // Bad grace values.
    for g in ["-1d", "soon", "1000000d", "-0s"] {
        let (s, v) = rotate(&kw, &id, json!({"grace": g})).await;
        assert_eq!(s, 422, "{g}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("grace"), "{v}");
    }
    let (s, _) = rotate(&kw, &id, json!({"grace": "1h", "expires_in": "1d", "no_expiry": true})).await;
    assert_eq!(s, 422);
    let (s, _) = rotate(&kw, &id, json!({"bogus": 1})).await;
    assert_eq!(s, 422);
    // A permanent key's successor is permanent; twice in a row is refused, naming the successor.
    let (s, v) = rotate(&kw, &id, json!({})).await;
    assert_eq!(s, 201);
    assert!(v["expires_at"].is_null());
    assert!(
        v["previous"]["expires_at"].is_string(),
        "the old key now expires (default grace 7 days)"
    );
    let succ = v["id"].as_str().unwrap().to_owned();
    let (s, v) = rotate(&kw, &id, json!({})).await;
    assert_eq!(s, 409);
    assert!(v["detail"].as_str().unwrap().contains(&succ), "{v}");
    // Rotating the successor is fine; a revoked key cannot be rotated.
    let (s, _) = rotate(&kw, &succ, json!({"grace": "0s"})).await;
    assert_eq!(s, 201);
    let (rid, _) = kw.key("cats", &[], json!({})).await;
    kw.admin(Method::POST, &format!("/v1/keys/{rid}/revoke"), None).await;
    let (s, _) = rotate(&kw, &rid, json!({})).await;
    assert_eq!(s, 409);
    let (s, _) = rotate(&kw, "key_nope", json!({})).await;
    assert_eq!(s, 404);
    // Grace 0: the old key stops at once. An expiring key never becomes permanent by rotation.
    let (eid, old) = kw.key("cats", &[], json!({"expires_in": "2h"})).await;
    let (s, v) = rotate(&kw, &eid, json!({"grace": "0s"})).await;
    assert_eq!(s, 201);
    assert!(v["expires_at"].is_string());
    problem(kw.get("/echo", &[("x-api-key", &old)]).await, 401, "expired_credential").await;
    // A grace longer than the key's own life does not extend it.
    let (lid, _) = kw.key("cats", &[], json!({"expires_in": "1h"})).await;
    let (_, before) = kw.admin(Method::GET, &format!("/v1/keys/{lid}"), None).await;
    let (s, v) = rotate(&kw, &lid, json!({"grace": "30d"})).await;
    assert_eq!(s, 201);
    assert_eq!(v["previous"]["expires_at"], before["expires_at"]);
    // Explicitly permanent successor.
    let (pid, _) = kw.key("cats", &[], json!({"expires_in": "1h"})).await;
    let (s, v) = rotate(&kw, &pid, json!({"no_expiry": true})).await;
    assert_eq!(s, 201);
    assert!(v["expires_at"].is_null());
}

#[tokio::test]
async fn keys_expiring_soon_warn_their_clients() {
    let kw = boot().await;
    let (_, soon) = kw.key("cats", &[], json!({"expires_in": "3d"})).await;
    let (_, later) = kw.key("cats", &[], json!({"expires_in": "30d"})).await;
    let r = kw.get("/echo", &[("x-api-key", &soon)]).await;
    assert!(header(&r, "sunset").is_some() && header(&r, "deprecation").is_some());
    let r = kw.get("/echo", &[("x-api-key", &later)]).await;
    assert!(header(&r, "sunset").is_none());
    kw.clock.advance(time::Duration::days(24));
    let r = kw.get("/echo", &[("x-api-key", &later)]).await;
    assert!(header(&r, "sunset").is_some(), "inside the 7-day window now");
}

#[tokio::test]
async fn disable_is_temporary_and_revoke_is_final() {
    let kw = boot().await;
    let (id, key) = kw.key("cats", &[], json!({})).await;
    let (s, v) = kw.admin(Method::POST, &format!("/v1/keys/{id}/disable"), None).await;
    assert_eq!((s.as_u16(), v["state"].as_str()), (200, Some("disabled")));
    problem(
        kw.get("/echo", &[("x-api-key", &key)]).await,
        401,
        "disabled_credential",
    )
    .await;
    let (s, v) = kw.admin(Method::POST, &format!("/v1/keys/{id}/enable"), None).await;
    assert_eq!((s.as_u16(), v["state"].as_str()), (200, Some("active")));
    assert_eq!(kw.get("/echo", &[("x-api-key", &key)]).await.status(), 200);
    let (s, _) = kw
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            Some(json!({"reason": "rotated out"})),
        )
        .await;
    assert_eq!(s, 200);
    for verb in ["enable", "disable"] {
        let (s, v) = kw.admin(Method::POST, &format!("/v1/keys/{id}/{verb}"), None).await;
        assert_eq!(s, 409, "{verb}: {v}");
    }
    problem(kw.get("/echo", &[("x-api-key", &key)]).await, 401, "revoked_credential").await;
    let (s, _) = kw
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            Some(json!({"reason": "x\u{0}y"})),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = kw
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            Some(json!({"why": "x"})),
        )
        .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn usage_is_batched_never_written_per_request() {
    let kw = boot_with(|c| c.usage.flush_interval = Duration::from_secs(3600)).await;
    let (id, key) = kw
        .key("cats", &["facts:read"], json!({"rate": {"limit": "5/min", "burst": 5}}))
        .await;
    let engine = kw.running.as_ref().unwrap().engine.clone();
    for _ in 0..8 {
        kw.get("/echo", &[("x-api-key", &key)]).await;
    }
    for _ in 0..3 {
        kw.http
            .post(format!("{}/facts", kw.gw))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
    }
    // 11 requests counted in memory, nothing written yet: no database write per request.
    assert_eq!(engine.usage_recorder().recorded(), 11);
    assert_eq!(engine.usage_recorder().flushes(), 0);
    assert!(engine.store().usage(Some(&id), None, 0).await.unwrap().is_empty());
    assert_eq!(
        engine
            .store()
            .get_key(&id)
            .await
            .unwrap()
            .unwrap()
            .lifecycle
            .last_used_at,
        None
    );
    // One batch writes it all.
    let (s, v) = kw
        .admin(Method::GET, &format!("/v1/usage?key={id}&since=1h"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(engine.usage_recorder().flushes(), 1);
    assert_eq!(
        v["totals"],
        json!({"allowed": 5, "limited:rate": 3, "denied:insufficient_scope": 3})
    );
    let (_, shown) = kw.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(shown["usage_24h"]["allowed"], 5);
    assert!(shown["last_used_at"].is_string());
    // The app view adds up the same.
    let (_, v) = kw.admin(Method::GET, "/v1/usage?app=cats", None).await;
    assert_eq!(v["totals"]["allowed"], 5);
    for bad in ["/v1/usage?key=key_nope", "/v1/usage?app=nope"] {
        let (s, _) = kw.admin(Method::GET, bad, None).await;
        assert_eq!(s, 404, "{bad}");
    }
    for bad in ["/v1/usage?since=soon", "/v1/usage?since=-1h", "/v1/usage?bogus=1"] {
        let (s, _) = kw.admin(Method::GET, bad, None).await;
        assert_eq!(s, 400, "{bad}");
    }
}

#[tokio::test]
async fn every_admin_change_is_audited_without_secrets() {
    let kw = boot().await;
    let (id, key) = kw.key("cats", &["a"], json!({})).await;
    kw.admin(Method::PATCH, &format!("/v1/keys/{id}"), Some(json!({"scopes": ["b"]})))
        .await;
    kw.admin(Method::POST, &format!("/v1/keys/{id}/disable"), None).await;
    kw.admin(Method::POST, &format!("/v1/keys/{id}/enable"), None).await;
    let (_, rotated) = rotate(&kw, &id, json!({"grace": "1h"})).await;
    let successor_key = rotated["key"].as_str().unwrap().to_owned();
    kw.admin(
        Method::POST,
        &format!("/v1/keys/{id}/revoke"),
        Some(json!({"reason": "leaked in a gist"})),
    )
    .await;
    kw.admin(Method::PATCH, "/v1/apps/cats", Some(json!({"rate": {"limit": "10/s"}})))
        .await;
    let (s, v) = kw.admin(Method::GET, "/v1/audit?limit=100", None).await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "app.created",
        "key.created",
        "key.updated",
        "key.disabled",
        "key.enabled",
        "key.rotated",
        "key.revoked",
        "app.updated",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let revoked = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "key.revoked")
        .unwrap();
    assert_eq!(revoked["actor"], "admin");
    assert_eq!(revoked["details"]["reason"], "leaked in a gist");
    assert!(revoked["details"]["before"]["revoked_at"].is_null());
    assert!(revoked["details"]["after"]["revoked_at"].is_string());
    // No secret in any row.
    let text = v.to_string();
    for secret in [
        &key,
        &successor_key,
        &key[8..51].to_owned(),
        &successor_key[8..51].to_owned(),
    ] {
        assert!(!text.contains(secret.as_str()), "a secret is in the audit log");
    }
    // Filters.
    let (_, by_key) = kw.admin(Method::GET, &format!("/v1/audit?key={id}"), None).await;
    assert!(by_key["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["target"] == id.as_str()));
    let (_, by_kind) = kw.admin(Method::GET, "/v1/audit?kind=key.", None).await;
    assert!(by_kind["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["kind"].as_str().unwrap().starts_with("key.")));
    let (_, page) = kw.admin(Method::GET, "/v1/audit?limit=2", None).await;
    let next = page["next_before"].as_i64().unwrap();
    let (_, page2) = kw
        .admin(Method::GET, &format!("/v1/audit?limit=2&before={next}"), None)
        .await;
    assert!(page2["items"][0]["seq"].as_i64().unwrap() < next);
    kw.clock.advance(time::Duration::hours(2));
    let (_, recent) = kw.admin(Method::GET, "/v1/audit?since=1h", None).await;
    assert!(recent["items"].as_array().unwrap().is_empty());
    for bad in [
        "/v1/audit?limit=0",
        "/v1/audit?limit=5000",
        "/v1/audit?kind=DROP%20TABLE",
        "/v1/audit?since=yesterday",
        "/v1/audit?x=1",
    ] {
        let (s, _) = kw.admin(Method::GET, bad, None).await;
        assert_eq!(s, 400, "{bad}");
    }
}

async fn wait_for_event(kw: &Kw, kind: &str) -> Value {
    for _ in 0..100 {
        let (_, v) = kw.admin(Method::GET, &format!("/v1/audit?kind={kind}"), None).await;
        if let Some(e) = v["items"].as_array().unwrap().first() {
            return e.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no {kind} event");
}

#[tokio::test]
async fn canary_keys_look_unknown_and_raise_an_alarm() {
    let kw = boot().await;
    let (id, canary) = kw.key("cats", &["facts:read"], json!({"canary": true})).await;
    let unknown = keyward_core::KeyFormat::default()
        .generate(keyward_core::KeyEnv::Live)
        .unwrap();
    let a = kw
        .get("/fact", &[("x-api-key", &canary), ("user-agent", "evil-bot/1.0")])
        .await;
    let b = kw.get("/fact", &[("x-api-key", unknown.expose())]).await;
    assert_eq!(a.status(), b.status());
    let (ha, hb) = (header(&a, "www-authenticate"), header(&b, "www-authenticate"));
    assert_eq!(ha, hb);
    assert_eq!(
        a.text().await.unwrap(),
        b.text().await.unwrap(),
        "indistinguishable from an unknown key"
    );
    let e = wait_for_event(&kw, "security.canary_used").await;
    assert_eq!(e["severity"], "high");
    assert_eq!(e["target"], id.as_str());
    assert_eq!(e["source_ip"], "127.0.0.1");
    assert_eq!(e["details"]["path"], "/fact");
    assert_eq!(e["details"]["user_agent"], "evil-bot/1.0");
    assert!(!e.to_string().contains(&canary));
    assert_eq!(kw.up.seen.count(), 0, "nothing reached the upstream");
    let (_, shown) = kw.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(shown["canary"], true);
}

#[tokio::test]
async fn bursts_of_failed_authentication_are_security_events() {
    let kw = boot_with(|c| c.security.failed_auth_burst = 5).await;
    for _ in 0..4 {
        kw.get("/fact", &[("x-api-key", "wrong")]).await;
    }
    let (_, v) = kw.admin(Method::GET, "/v1/audit?kind=security.", None).await;
    assert!(v["items"].as_array().unwrap().is_empty(), "below the threshold");
    for _ in 0..10 {
        kw.get("/fact", &[("x-api-key", "wrong")]).await;
    }
    let e = wait_for_event(&kw, "security.failed_auth_burst").await;
    assert_eq!(e["source_ip"], "127.0.0.1");
    assert_eq!(e["severity"], "warning");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, v) = kw
        .admin(Method::GET, "/v1/audit?kind=security.failed_auth_burst", None)
        .await;
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        1,
        "one event per address per minute"
    );
}

#[tokio::test]
async fn importing_a_static_key_keeps_clients_working_and_nudges_them() {
    let mut kw = boot().await;
    kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "legacy"})))
        .await;
    let classic = "s3cr3t-static-key-from-nginx-conf";
    // Before the import the classic key is just malformed.
    problem(
        kw.get("/fact", &[("x-api-key", classic)]).await,
        401,
        "malformed_credential",
    )
    .await;
    let (s, v) = kw
        .admin(
            Method::POST,
            "/v1/keys/import",
            Some(json!({"app": "legacy", "secret": classic, "scopes": ["facts:read"]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["legacy"], true);
    assert!(v.get("key").is_none() && !v.to_string().contains(classic));
    assert_eq!(v["hint"], "legacy:s3cr…conf");
    assert!(v["expires_at"].is_string(), "a default sunset");
    let id = v["id"].as_str().unwrap().to_owned();
    // The same header keeps working, with Deprecation and Sunset from the start.
    let r = kw.get("/fact", &[("x-api-key", classic)]).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "deprecation").is_some() && header(&r, "sunset").is_some());
    // Near misses are still refused; a legacy digest never matches a formatted key and v.v.
    problem(
        kw.get("/fact", &[("x-api-key", "s3cr3t-static-key-from-nginx-con")])
            .await,
        401,
        "invalid_credential",
    )
    .await;
    problem(
        kw.get("/fact", &[("x-api-key", "tiny")]).await,
        401,
        "malformed_credential",
    )
    .await;
    // Refusals.
    for (secret, status) in [
        (classic, 409),
        ("short", 422),
        ("has space inside it", 422),
        ("ctl\u{1}chars-here", 422),
        (&"x".repeat(600) as &str, 422),
    ] {
        let (s, v) = kw
            .admin(
                Method::POST,
                "/v1/keys/import",
                Some(json!({"app": "legacy", "secret": secret})),
            )
            .await;
        assert_eq!(s, status, "{secret:.20}: {v}");
    }
    let (_, real) = kw.key("legacy", &[], json!({})).await;
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/keys/import",
            Some(json!({"app": "legacy", "secret": real})),
        )
        .await;
    assert_eq!(s, 422, "a keyward key is not a legacy secret");
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/keys/import",
            Some(json!({"app": "nope", "secret": "another-static-key"})),
        )
        .await;
    assert_eq!(s, 404);
    // Rotating it gives a real key.
    let (s, v) = rotate(&kw, &id, json!({"grace": "1d"})).await;
    assert_eq!(s, 201);
    assert!(v["key"].as_str().unwrap().starts_with("kw_live_"));
    assert_eq!(v["legacy"], false);
    // After the sunset the classic key is expired.
    kw.clock.advance(time::Duration::days(2));
    problem(
        kw.get("/fact", &[("x-api-key", classic)]).await,
        401,
        "expired_credential",
    )
    .await;
    // The secret is nowhere in the database.
    kw.stop().await;
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(format!("{}{}", kw.db_path().display(), suffix)) {
            assert!(!String::from_utf8_lossy(&bytes).contains(classic));
        }
    }
}
