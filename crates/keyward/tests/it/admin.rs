//! The admin API's happy paths (issue 2, point 6).

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn apps_and_keys_round_trip() {
    let kw = boot().await;
    let (s, app) = kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    assert_eq!(s, 201);
    assert!(app["id"].as_str().unwrap().starts_with("app_"));
    let (s, by_name) = kw.admin(Method::GET, "/v1/apps/cats", None).await;
    assert_eq!(s, 200);
    assert_eq!(by_name, app);
    let (s, by_id) = kw
        .admin(Method::GET, &format!("/v1/apps/{}", app["id"].as_str().unwrap()), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(by_id, app);

    let (s, created) = kw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(
                json!({"app": "cats", "name": "ci", "scopes": ["facts:read", "facts:read", "a"], "expires_in": "90d"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("kw_live_"));
    for field in [
        "id",
        "app_id",
        "app_name",
        "name",
        "hint",
        "scopes",
        "expires_at",
        "created_at",
        "revoked_at",
        "state",
    ] {
        assert!(created.get(field).is_some(), "missing {field}: {created}");
    }
    assert_eq!(created["scopes"], json!(["a", "facts:read"]), "sorted, deduplicated");
    let hint = created["hint"].as_str().unwrap();
    assert!(
        hint.starts_with(&key[..12]) && hint.ends_with(&key[key.len() - 4..]),
        "{hint}"
    );
    assert_eq!(created["state"], "active");

    let id = created["id"].as_str().unwrap();
    let (s, shown) = kw.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(s, 200);
    assert!(shown.get("key").is_none(), "the plaintext is shown only once");
    assert!(!shown.to_string().contains(key));
    let (_, list) = kw.admin(Method::GET, "/v1/keys?app=cats", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(key));
    let (_, all) = kw.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);

    let (s, revoked) = kw.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None).await;
    assert_eq!(s, 200);
    let first = revoked["revoked_at"].clone();
    assert!(first.is_string());
    // Revoking again is idempotent: the first revocation time stays.
    kw.clock.advance(time::Duration::seconds(30));
    let (s, again) = kw.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None).await;
    assert_eq!(s, 200);
    assert_eq!(again["revoked_at"], first);

    let (s, h) = kw.admin(Method::GET, "/healthz", None).await;
    assert_eq!(s, 200);
    assert_eq!(h["store"], "sqlite");
}

#[tokio::test]
async fn test_env_keys_and_key_survive_a_restart() {
    // Keys are in the SQLite file, not in memory: a second server on the same file and
    // pepper accepts them.
    let mut kw = boot().await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({"env": "test"})).await;
    assert!(key.starts_with("kw_test_"));
    let db = kw.db_path();
    kw.stop().await;
    let kw2 = boot_with(|c| c.store.url = db.display().to_string()).await;
    assert_eq!(kw2.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
}
