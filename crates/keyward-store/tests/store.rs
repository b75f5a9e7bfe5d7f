//! The store's test suite. Every backend must pass all of it: it runs against a real SQLite
//! file, and against PostgreSQL when `KEYWARD_TEST_POSTGRES_URL` is set (each test in its own
//! schema, dropped at the end; unset: those tests print a line and pass, set but unreachable:
//! they fail).
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used, clippy::needless_update)]

use std::sync::Arc;

use keyward_core::audit::{ChainRow, Checkpoint};
use keyward_core::model::{
    AuditEvent, AuditFilter, ClientAuthMethod, ClientRecord, KeyUpdate, Severity, SigningKeyRow, UsageRow,
};
use keyward_core::policy::{IpAllowlist, Policy, QuotaSpec, RateSpec};
use keyward_core::{AppRecord, Digest, KeyEnv, KeyRecord, Scope};
use keyward_store::{
    AdminTokenRecord, AuditHead, CacheConfig, Change, KeyCache, Lookup, PgOptions, PgStore, RetentionCounts,
    RetentionCut, SqliteStore, Store, StoreError, WebhookRecord,
};
use time::OffsetDateTime;

fn t(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

fn app(id: &str, name: &str, at: i64) -> AppRecord {
    AppRecord {
        id: id.into(),
        name: name.into(),
        created_at: t(at),
        policy: Policy::default(),
    }
}

fn key(id: &str, app: &AppRecord, at: i64) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        app_id: app.id.clone(),
        app_name: app.name.clone(),
        name: Some(format!("name of {id}")),
        hint: "kw_live_abcd…wxyz".into(),
        env: KeyEnv::Live,
        scopes: vec![Scope::new("a:b").unwrap(), Scope::new("c").unwrap()],
        expires_at: Some(t(at + 3600)),
        created_at: t(at),
        revoked_at: None,
        policy: Policy {
            ips: IpAllowlist::parse(&["10.0.0.0/8"]).unwrap(),
            rate: Some(RateSpec::parse("100/min", Some(20)).unwrap()),
            quota: Some(QuotaSpec::parse("1000/day").unwrap()),
            ..Policy::default()
        },
        app_policy: app.policy.clone(),
        lifecycle: Default::default(),
    }
}

fn digest(n: u8) -> Digest {
    Digest([n; 32])
}

/// The behaviour every backend must have.
async fn suite(store: Arc<dyn Store>) {
    store.ping().await.unwrap();

    // Apps: create, unique names, lookup by id and by name, ordered list.
    let a = app("app_1", "cats", 0);
    let b = app("app_2", "dogs", 1);
    store.create_app(&a).await.unwrap();
    store.create_app(&b).await.unwrap();
    assert!(matches!(
        store.create_app(&app("app_3", "cats", 2)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_app(&app("app_1", "other", 2)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_app("app_1").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app("dogs").await.unwrap(), Some(b.clone()));
    assert_eq!(store.get_app("nope").await.unwrap(), None);
    assert_eq!(store.get_app("' OR 1=1 --").await.unwrap(), None);
    assert_eq!(store.list_apps().await.unwrap(), vec![a.clone(), b.clone()]);
    // An app named like another app's id: the id wins.
    let tricky = app("app_4", "app_1", 3);
    store.create_app(&tricky).await.unwrap();
    assert_eq!(store.get_app("app_1").await.unwrap(), Some(a.clone()));

    // Keys: round trip of every field, lookup by digest, unique digests, unknown app.
    let k1 = key("key_1", &a, 10);
    let mut k2 = key("key_2", &b, 11);
    k2.name = None;
    k2.scopes = vec![];
    k2.expires_at = None;
    store.create_key(&k1, &digest(1)).await.unwrap();
    store.create_key(&k2, &digest(2)).await.unwrap();
    assert!(matches!(
        store.create_key(&key("key_3", &a, 12), &digest(1)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .create_key(&key("key_4", &app("app_x", "ghost", 0), 12), &digest(4))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.key_by_digest(&digest(1)).await.unwrap(),
        Some((k1.clone(), digest(1)))
    );
    assert_eq!(
        store.key_by_digest(&digest(2)).await.unwrap(),
        Some((k2.clone(), digest(2)))
    );
    assert_eq!(store.key_by_digest(&digest(9)).await.unwrap(), None);
    assert_eq!(store.get_key("key_1").await.unwrap(), Some(k1.clone()));
    assert_eq!(store.get_key("key_9").await.unwrap(), None);
    assert_eq!(store.list_keys(None).await.unwrap(), vec![k1.clone(), k2.clone()]);
    assert_eq!(store.list_keys(Some("app_2")).await.unwrap(), vec![k2.clone()]);
    assert_eq!(store.list_keys(Some("app_x")).await.unwrap(), vec![]);

    // Revocation: returns the new record and the digest; idempotent.
    let (r, d) = store.revoke_key("key_1", t(100)).await.unwrap().unwrap();
    assert_eq!(d, Some(digest(1)));
    assert_eq!(r.revoked_at, Some(t(100)));
    let (r, _) = store.revoke_key("key_1", t(200)).await.unwrap().unwrap();
    assert_eq!(r.revoked_at, Some(t(100)), "the first revocation time stays");
    assert_eq!(store.revoke_key("key_9", t(100)).await.unwrap(), None);
    assert_eq!(
        store.key_by_digest(&digest(1)).await.unwrap().unwrap().0.revoked_at,
        Some(t(100))
    );

    // Updates: each field alone, the rest untouched.
    let (r, d) = store
        .update_key(
            "key_2",
            &KeyUpdate {
                scopes: Some(vec![Scope::new("z").unwrap()]),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d, Some(digest(2)));
    assert_eq!(r.scopes, vec![Scope::new("z").unwrap()]);
    assert_eq!(r.name, None);
    let p = Policy {
        rate: Some(RateSpec::parse("5/s", None).unwrap()),
        ..Default::default()
    };
    let (r, _) = store
        .update_key(
            "key_2",
            &KeyUpdate {
                policy: Some(p.clone()),
                name: Some(Some("renamed".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.policy, r.name, r.scopes.len()), (p, Some("renamed".into()), 1));
    assert_eq!(store.update_key("key_9", &KeyUpdate::default()).await.unwrap(), None);

    // An app's policy reaches its keys' records; the digests of its keys come back.
    let ap = Policy {
        quota: Some(QuotaSpec::parse("10/month").unwrap()),
        ..Default::default()
    };
    let (app_after, digests) = store.update_app_policy("app_2", &ap).await.unwrap().unwrap();
    assert_eq!(app_after.policy, ap);
    assert_eq!(digests, vec![digest(2)]);
    assert_eq!(store.key_by_digest(&digest(2)).await.unwrap().unwrap().0.app_policy, ap);
    assert_eq!(store.get_app("dogs").await.unwrap().unwrap().policy, ap);
    assert_eq!(store.update_app_policy("app_x", &ap).await.unwrap(), None);

    // Disable and enable.
    let (r, _) = store
        .update_key(
            "key_2",
            &KeyUpdate {
                disabled_at: Some(Some(t(300))),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.lifecycle.disabled_at, Some(t(300)));
    let (r, _) = store
        .update_key(
            "key_2",
            &KeyUpdate {
                disabled_at: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.lifecycle.disabled_at, None);

    // Rotation: atomic, linked, refused twice and for revoked keys.
    let mut succ = key("key_5", &b, 400);
    succ.lifecycle.rotated_from = Some("key_2".into());
    let (old, d) = store
        .rotate_key("key_2", &succ, &digest(5), t(1000), t(400))
        .await
        .unwrap();
    assert_eq!(d, digest(2));
    assert_eq!(old.expires_at, Some(t(1000)));
    assert_eq!(old.lifecycle.rotated_to.as_deref(), Some("key_5"));
    assert_eq!(old.lifecycle.rotated_at, Some(t(400)));
    let (s5, _) = store.key_by_digest(&digest(5)).await.unwrap().unwrap();
    assert_eq!(s5.lifecycle.rotated_from.as_deref(), Some("key_2"));
    // The successor counts its limits under the chain's first key (issue 22, point 10).
    assert_eq!(s5.lifecycle.limit_id.as_deref(), Some("key_2"));
    assert_eq!(s5.limit_id(), "key_2");
    assert_eq!(old.lifecycle.limit_id, None);
    assert_eq!(old.limit_id(), "key_2");
    // …and so does the successor's successor: the chain's first key, not its predecessor.
    let mut third = key("key_7", &b, 402);
    third.lifecycle.rotated_from = Some("key_5".into());
    store
        .rotate_key("key_5", &third, &digest(7), t(1000), t(402))
        .await
        .unwrap();
    let (s7, _) = store.key_by_digest(&digest(7)).await.unwrap().unwrap();
    assert_eq!(s7.limit_id(), "key_2");
    assert_eq!(s5.scopes, succ.scopes);
    assert!(matches!(
        store
            .rotate_key("key_2", &key("key_6", &b, 401), &digest(6), t(1000), t(401))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .rotate_key("key_1", &key("key_6", &a, 401), &digest(6), t(1000), t(401))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .rotate_key("key_x", &key("key_6", &a, 401), &digest(6), t(1000), t(401))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.key_by_digest(&digest(6)).await.unwrap(),
        None,
        "a refused rotation stores nothing"
    );

    // Audit: append-only, filtered, newest first.
    let ev = |kind: &str, target: &str, at: i64| AuditEvent {
        seq: 0,
        at: t(at),
        actor: "admin".into(),
        kind: kind.into(),
        severity: if kind.starts_with("security.") {
            Severity::High
        } else {
            Severity::Info
        },
        target: Some(target.into()),
        source_ip: None,
        details: serde_json::json!({"n": at}),
    };
    let s1 = store.append_audit(&ev("key.created", "key_1", 10)).await.unwrap();
    let s2 = store
        .append_audit(&ev("security.canary_used", "key_2", 20))
        .await
        .unwrap();
    let s3 = store.append_audit(&ev("key.revoked", "key_1", 30)).await.unwrap();
    assert!(s1 < s2 && s2 < s3);
    let all = store
        .list_audit(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![s3, s2, s1]);
    assert_eq!(all[2].details, serde_json::json!({"n": 10}));
    let k1 = store
        .list_audit(&AuditFilter {
            target: Some("key_1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(k1.len(), 2);
    let sec = store
        .list_audit(&AuditFilter {
            kind: Some("security.".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sec.len(), 1);
    assert_eq!(sec[0].severity, Severity::High);
    let exact = store
        .list_audit(&AuditFilter {
            kind: Some("key.revoked".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(exact.len(), 1);
    let recent = store
        .list_audit(&AuditFilter {
            since: Some(t(20)),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    let page = store
        .list_audit(&AuditFilter {
            before_seq: Some(s3),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![s2]);
    // `%` and `_` in a prefix are literal.
    let none = store
        .list_audit(&AuditFilter {
            kind: Some("%.".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // Usage: batches add up; last use only moves forward.
    let row = |minute, outcome: &str, count| UsageRow {
        key_id: "key_1".into(),
        app_id: "app_1".into(),
        minute,
        outcome: outcome.into(),
        count,
    };
    store
        .record_usage(
            &[row(100, "allowed", 3), row(100, "denied:revoked", 1)],
            &[("key_1".into(), t(50))],
        )
        .await
        .unwrap();
    store
        .record_usage(
            &[row(100, "allowed", 2), row(101, "allowed", 1)],
            &[("key_1".into(), t(40))],
        )
        .await
        .unwrap();
    let u = store.usage(Some("key_1"), None, 0).await.unwrap();
    assert_eq!(
        u,
        vec![
            row(100, "allowed", 5),
            row(100, "denied:revoked", 1),
            row(101, "allowed", 1)
        ]
    );
    assert_eq!(
        store.usage(None, Some("app_1"), 101).await.unwrap(),
        vec![row(101, "allowed", 1)]
    );
    assert!(store.usage(Some("key_2"), None, 0).await.unwrap().is_empty());
    assert_eq!(
        store.get_key("key_1").await.unwrap().unwrap().lifecycle.last_used_at,
        Some(t(50))
    );
}

async fn cache_suite(store: Arc<dyn Store>) {
    let a = app("app_c", "cache", 0);
    store.create_app(&a).await.unwrap();
    let cache = KeyCache::new(store.clone(), CacheConfig::default());
    assert!(matches!(cache.lookup(&digest(50)).await.unwrap(), Lookup::Unknown));
    // Negative entry until invalidated.
    store.create_key(&key("key_c", &a, 0), &digest(50)).await.unwrap();
    assert!(matches!(cache.lookup(&digest(50)).await.unwrap(), Lookup::Unknown));
    cache.invalidate(&digest(50));
    let Lookup::Found(r) = cache.lookup(&digest(50)).await.unwrap() else {
        panic!("not found")
    };
    assert_eq!(r.revoked_at, None);
    // Served from memory until invalidated.
    store.revoke_key("key_c", t(5)).await.unwrap();
    let Lookup::Found(r) = cache.lookup(&digest(50)).await.unwrap() else {
        panic!("not found")
    };
    assert_eq!(r.revoked_at, None, "cached");
    cache.invalidate(&digest(50));
    let Lookup::Found(r) = cache.lookup(&digest(50)).await.unwrap() else {
        panic!("not found")
    };
    assert_eq!(r.revoked_at, Some(t(5)));
    let s = cache.stats();
    assert!(s.hits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(s.negative_hits.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    // Invalidation by key id (announced changes carry ids, never digests).
    store.create_key(&key("key_c2", &a, 0), &digest(51)).await.unwrap();
    assert!(matches!(cache.lookup(&digest(51)).await.unwrap(), Lookup::Found(_)));
    store.revoke_key("key_c2", t(6)).await.unwrap();
    cache.invalidate_key_id("key_unknown");
    let Lookup::Found(r) = cache.lookup(&digest(51)).await.unwrap() else {
        panic!("not found")
    };
    assert_eq!(r.revoked_at, None, "another id leaves it cached");
    cache.invalidate_key_id("key_c2");
    let Lookup::Found(r) = cache.lookup(&digest(51)).await.unwrap() else {
        panic!("not found")
    };
    assert_eq!(r.revoked_at, Some(t(6)));
    // Invalidation by app: every cached record of the app's keys.
    let p = Policy {
        quota: Some(QuotaSpec::parse("7/day").unwrap()),
        ..Default::default()
    };
    store.update_app_policy("app_c", &p).await.unwrap();
    assert_ne!(
        match cache.lookup(&digest(51)).await.unwrap() {
            Lookup::Found(r) => r.app_policy.clone(),
            Lookup::Unknown => panic!("not found"),
        },
        p
    );
    cache.invalidate_app("app_other");
    cache.invalidate_app("app_c");
    for d in [digest(50), digest(51)] {
        let Lookup::Found(r) = cache.lookup(&d).await.unwrap() else {
            panic!("not found")
        };
        assert_eq!(r.app_policy, p);
    }
    // A key created elsewhere: its digest may be in the negative cache.
    assert!(matches!(cache.lookup(&digest(52)).await.unwrap(), Lookup::Unknown));
    store.create_key(&key("key_c3", &a, 0), &digest(52)).await.unwrap();
    cache.clear_negative();
    assert!(matches!(cache.lookup(&digest(52)).await.unwrap(), Lookup::Found(_)));
}

/// OAuth 2.0 objects: clients and their secrets, signing keys, revoked tokens, one-time jtis.
async fn oauth_suite(store: Arc<dyn Store>) {
    let a = app("app_o", "oauth", 0);
    store.create_app(&a).await.unwrap();
    let client = ClientRecord {
        id: "cl_1".into(),
        app_id: a.id.clone(),
        app_name: a.name.clone(),
        name: Some("batch job".into()),
        scopes: vec![Scope::new("facts:read").unwrap()],
        auth_method: ClientAuthMethod::ClientSecretBasic,
        jwks: None,
        token_ttl: 300,
        options: Default::default(),
        policy: Default::default(),
        created_at: t(0),
        disabled_at: None,
    };
    store
        .create_client(&client, Some((&digest(70), "cs_ab…yz")))
        .await
        .unwrap();
    assert!(matches!(
        store.create_client(&client, None).await,
        Err(StoreError::Conflict(_))
    ));
    let mut ghost = client.clone();
    ghost.id = "cl_ghost".into();
    ghost.app_id = "app_none".into();
    assert!(matches!(
        store.create_client(&ghost, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get_client("cl_1").await.unwrap(), Some(client.clone()));
    assert_eq!(store.get_client("cl_2").await.unwrap(), None);
    assert_eq!(store.list_clients(Some("app_o")).await.unwrap(), vec![client.clone()]);
    let mut changed = client.clone();
    changed.token_ttl = 60;
    changed.options.dpop_bound_access_tokens = true;
    changed.jwks = Some(serde_json::json!({"keys": []}));
    changed.disabled_at = Some(t(5));
    assert!(store.update_client(&changed).await.unwrap());
    assert_eq!(store.get_client("cl_1").await.unwrap(), Some(changed));
    // Secrets: rotation keeps the old one until the grace ends.
    assert_eq!(store.client_secrets("cl_1", t(10)).await.unwrap().len(), 1);
    assert!(store
        .rotate_client_secret("cl_1", &digest(71), "new", t(10), t(100))
        .await
        .unwrap());
    let secrets = store.client_secrets("cl_1", t(50)).await.unwrap();
    assert_eq!(
        secrets.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        vec![digest(70), digest(71)]
    );
    assert_eq!(secrets[0].1.expires_at, Some(t(100)));
    assert_eq!(
        store.client_secrets("cl_1", t(100)).await.unwrap().len(),
        1,
        "the old secret expired"
    );
    assert!(!store
        .rotate_client_secret("cl_x", &digest(72), "x", t(10), t(10))
        .await
        .unwrap());
    // Signing keys.
    let key = |kid: &str, at: i64| SigningKeyRow {
        kid: kid.into(),
        alg: "EdDSA".into(),
        public_jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": kid}),
        private_sealed: vec![1, 2, 3],
        created_at: t(at),
        active_at: t(at + 60),
        retired_at: None,
        remove_after: None,
    };
    store.add_signing_key(&key("k1", 0)).await.unwrap();
    store.add_signing_key(&key("k2", 10)).await.unwrap();
    assert_eq!(
        store.signing_keys(t(20)).await.unwrap(),
        vec![key("k1", 0), key("k2", 10)]
    );
    assert!(store.retire_signing_key("k1", t(30), t(400)).await.unwrap());
    assert!(!store.retire_signing_key("k9", t(30), t(400)).await.unwrap());
    assert_eq!(store.signing_keys(t(399)).await.unwrap()[0].retired_at, Some(t(30)));
    assert_eq!(
        store.signing_keys(t(400)).await.unwrap().len(),
        1,
        "gone after remove_after"
    );
    // Revoked tokens and one-time jtis.
    store.revoke_token("jti-1", t(100)).await.unwrap();
    store.revoke_token("jti-1", t(100)).await.unwrap();
    assert_eq!(
        store.revoked_tokens(t(50)).await.unwrap(),
        vec![("jti-1".to_owned(), t(100))]
    );
    assert!(store.revoked_tokens(t(100)).await.unwrap().is_empty());
    assert!(store.remember_jti("assertion", "j", t(60), t(0)).await.unwrap());
    assert!(
        !store.remember_jti("assertion", "j", t(60), t(1)).await.unwrap(),
        "a replay"
    );
    assert!(
        store.remember_jti("dpop", "j", t(60), t(1)).await.unwrap(),
        "scopes are separate"
    );
    assert!(
        store.remember_jti("assertion", "j", t(120), t(61)).await.unwrap(),
        "expired entries are forgotten"
    );
    // Deleting a client deletes its secrets.
    assert!(store.delete_client("cl_1").await.unwrap());
    assert!(!store.delete_client("cl_1").await.unwrap());
    assert!(store.client_secrets("cl_1", t(0)).await.unwrap().is_empty());
}

/// Scoped admin tokens: by digest, by name, listing, idempotent revocation.
async fn admin_token_suite(store: Arc<dyn Store>) {
    let tok = |id: &str, name: &str, role: &str, at: i64| AdminTokenRecord {
        id: id.into(),
        name: name.into(),
        role: role.into(),
        hint: "kwadm_AbCd…wxyz".into(),
        created_at: t(at),
        expires_at: Some(t(at + 3600)),
        revoked_at: None,
        created_by: "cli".into(),
    };
    store
        .create_admin_token(&tok("adm_1", "ci", "read", 10), &digest(201))
        .await
        .unwrap();
    store
        .create_admin_token(&tok("adm_2", "ops", "write", 20), &digest(202))
        .await
        .unwrap();
    // Names and digests are unique.
    let dup = store
        .create_admin_token(&tok("adm_3", "ci", "read", 30), &digest(203))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let dup = store
        .create_admin_token(&tok("adm_4", "other", "read", 30), &digest(201))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let (found, d) = store.admin_token_by_digest(&digest(202)).await.unwrap().unwrap();
    assert_eq!(found, tok("adm_2", "ops", "write", 20));
    assert_eq!(d, digest(202));
    assert!(store.admin_token_by_digest(&digest(209)).await.unwrap().is_none());
    let all = store.list_admin_tokens().await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["adm_1", "adm_2"]
    );
    // Revocation by name or id, idempotent (the first time stays).
    let r = store.revoke_admin_token("ci", t(50)).await.unwrap().unwrap();
    assert_eq!(r.revoked_at, Some(t(50)));
    let r = store.revoke_admin_token("adm_1", t(60)).await.unwrap().unwrap();
    assert_eq!(r.revoked_at, Some(t(50)));
    let (found, _) = store.admin_token_by_digest(&digest(201)).await.unwrap().unwrap();
    assert_eq!(found.revoked_at, Some(t(50)));
    assert!(store.revoke_admin_token("nope", t(60)).await.unwrap().is_none());
}

/// Managed webhooks: create (names unique), list oldest first, update, delete; the secret is
/// only ever a reference (an environment variable's name or a file's path).
async fn webhook_suite(store: Arc<dyn Store>) {
    let hook = |id: &str, name: &str, at: i64| WebhookRecord {
        id: id.into(),
        name: name.into(),
        url: format!("https://hooks.example/{name}"),
        secret_env: Some("KEYWARD_WEBHOOK_SECRET".into()),
        secret_file: None,
        events: vec!["security.".into(), "key.expiring_soon".into()],
        timeout_ms: 5000,
        max_attempts: 6,
        backoff_ms: 1000,
        created_at: t(at),
        updated_at: t(at),
    };
    assert!(store.list_webhooks().await.unwrap().is_empty());
    store.create_webhook(&hook("wh_2", "siem", 20)).await.unwrap();
    store.create_webhook(&hook("wh_1", "pager", 10)).await.unwrap();
    let e = store.create_webhook(&hook("wh_3", "siem", 30)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
    let all = store.list_webhooks().await.unwrap();
    assert_eq!(all.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["wh_1", "wh_2"]);
    assert_eq!(all[1], hook("wh_2", "siem", 20));
    let mut changed = hook("wh_2", "siem-2", 20);
    changed.secret_env = None;
    changed.secret_file = Some("/etc/keyward/siem.secret".into());
    changed.events = vec!["*".into()];
    changed.timeout_ms = 250;
    changed.max_attempts = 1;
    changed.backoff_ms = 0;
    changed.updated_at = t(40);
    assert!(store.update_webhook(&changed).await.unwrap());
    assert_eq!(store.list_webhooks().await.unwrap()[1], changed);
    // Renaming onto a taken name is a conflict.
    let mut clash = changed.clone();
    clash.name = "pager".into();
    assert!(matches!(
        store.update_webhook(&clash).await,
        Err(StoreError::Conflict(_))
    ));
    let mut ghost = changed.clone();
    ghost.id = "wh_9".into();
    assert!(!store.update_webhook(&ghost).await.unwrap());
    assert!(store.delete_webhook("wh_1").await.unwrap());
    assert!(!store.delete_webhook("wh_1").await.unwrap());
    assert_eq!(store.list_webhooks().await.unwrap(), vec![changed]);
    store.delete_webhook("wh_2").await.unwrap();
}

#[tokio::test]
async fn sqlite_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("sub/dir/k.db")).await.unwrap());
    suite(store.clone()).await;
    cache_suite(store.clone()).await;
    admin_token_suite(store.clone()).await;
    webhook_suite(store.clone()).await;
    oauth_suite(store).await;
}

#[tokio::test]
async fn sqlite_is_created_migrated_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.create_app(&app("app_1", "cats", 0)).await.unwrap();
    drop(store);
    // Reopening runs the migrations again (a no-op) and keeps the data.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.list_apps().await.unwrap().len(), 1);
    let url = format!("sqlite://{}", path.display());
    let store2 = SqliteStore::open_url(&url).await.unwrap();
    assert_eq!(store2.backend(), "sqlite");
    let header = std::fs::read(&path).unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0");
    // File format bytes 18 and 19 are 2 in WAL mode.
    assert_eq!((header[18], header[19]), (2, 2), "WAL mode");
}

#[tokio::test]
async fn sqlite_audit_log_is_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let ev = AuditEvent {
        seq: 0,
        at: t(0),
        actor: "admin".into(),
        kind: "key.created".into(),
        severity: Severity::Info,
        target: None,
        source_ip: None,
        details: serde_json::json!({}),
    };
    store.append_audit(&ev).await.unwrap();
    drop(store);
    // Even a direct connection to the file cannot change or delete audit rows.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let upd = sqlx::query("UPDATE audit SET kind = 'x'")
        .execute(&pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(upd.contains("append-only"), "{upd}");
    let del = sqlx::query("DELETE FROM audit")
        .execute(&pool)
        .await
        .unwrap_err()
        .to_string();
    assert!(del.contains("append-only"), "{del}");
}

#[tokio::test]
async fn unopenable_paths_fail_clearly() {
    let e = SqliteStore::open(std::path::Path::new("/proc/definitely/not/here.db"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "store_open_failed");
    let e = SqliteStore::open_url("postgres://x").await.unwrap_err();
    assert_eq!(e.code(), "store_open_failed");
}

// ---- PostgreSQL ---------------------------------------------------------------------------

/// A schema of its own for one test, dropped by [`PgSchema::drop_now`].
struct PgSchema {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl PgSchema {
    /// `None` (with a printed line) when `KEYWARD_TEST_POSTGRES_URL` is unset.
    async fn new(test: &str) -> Option<PgSchema> {
        let Ok(base) = std::env::var("KEYWARD_TEST_POSTGRES_URL") else {
            println!("skipped {test}: KEYWARD_TEST_POSTGRES_URL is not set");
            return None;
        };
        let admin = sqlx::PgPool::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("KEYWARD_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {e}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "kw_test_{}_{}_{nanos}",
            test.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id()
        );
        sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
            .execute(&admin)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Some(PgSchema { admin, name, url })
    }

    async fn open(&self) -> PgStore {
        PgStore::open(&self.url, PgOptions::default()).await.unwrap()
    }

    async fn drop_now(self) {
        sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.name))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn postgres_passes_the_suite() {
    let Some(schema) = PgSchema::new("suite").await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(schema.open().await);
    assert_eq!(store.backend(), "postgres");
    suite(store.clone()).await;
    cache_suite(store.clone()).await;
    admin_token_suite(store.clone()).await;
    webhook_suite(store.clone()).await;
    oauth_suite(store).await;
    // Opening again re-runs the migrations as a no-op and keeps the data.
    let again = schema.open().await;
    assert_eq!(again.list_apps().await.unwrap().len(), 5);
    assert!(again.migrate().await.unwrap().is_empty());
    schema.drop_now().await;
}

#[tokio::test]
async fn postgres_audit_log_is_append_only() {
    let Some(schema) = PgSchema::new("audit").await else {
        return;
    };
    let store = schema.open().await;
    let ev = AuditEvent {
        seq: 0,
        at: t(0),
        actor: "admin".into(),
        kind: "key.created".into(),
        severity: Severity::Info,
        target: None,
        source_ip: None,
        details: serde_json::json!({}),
    };
    store.append_audit(&ev).await.unwrap();
    for sql in ["UPDATE audit SET kind = 'x'", "DELETE FROM audit", "TRUNCATE audit"] {
        let e = sqlx::query(sql).execute(store.pool()).await.unwrap_err().to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    schema.drop_now().await;
}

#[tokio::test]
async fn postgres_concurrent_rotations_of_one_key_exactly_one_wins() {
    let Some(schema) = PgSchema::new("rotate_race").await else {
        return;
    };
    let store = Arc::new(schema.open().await);
    let a = app("app_r", "race", 0);
    store.create_app(&a).await.unwrap();
    for round in 0..5u8 {
        let old = format!("key_old_{round}");
        store.create_key(&key(&old, &a, 0), &digest(100 + round)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let store = store.clone();
            let (old, a) = (old.clone(), a.clone());
            tasks.push(tokio::spawn(async move {
                let mut succ = key(&format!("key_s_{round}_{i}"), &a, 1);
                succ.lifecycle.rotated_from = Some(old.clone());
                let mut d = [0u8; 32];
                d[0] = round;
                d[1] = i;
                d[2] = 0xee;
                store.rotate_key(&old, &succ, &Digest(d), t(100), t(1)).await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one rotation wins");
        let successors = store
            .list_keys(Some("app_r"))
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.lifecycle.rotated_from.as_deref() == Some(old.as_str()))
            .count();
        assert_eq!(successors, 1, "losers stored nothing");
    }
    schema.drop_now().await;
}

#[tokio::test]
async fn postgres_remember_jti_race_has_one_winner() {
    let Some(schema) = PgSchema::new("jti_race").await else {
        return;
    };
    let store = Arc::new(schema.open().await);
    for round in 0..10 {
        let jti = format!("jti-{round}");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (store, jti) = (store.clone(), jti.clone());
            tasks.push(tokio::spawn(async move {
                store.remember_jti("dpop", &jti, t(60), t(0)).await
            }));
        }
        let mut firsts = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() {
                firsts += 1;
            }
        }
        assert_eq!(firsts, 1, "round {round}: one caller sees the jti first");
    }
    // Once expired, exactly one concurrent caller takes the entry over.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.remember_jti("dpop", "jti-0", t(200), t(100)).await
        }));
    }
    let mut firsts = 0;
    for task in tasks {
        if task.await.unwrap().unwrap() {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
    schema.drop_now().await;
}

async fn next_change(rx: &mut tokio::sync::broadcast::Receiver<Change>) -> Change {
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("a change within 5 s")
        .unwrap()
}

#[tokio::test]
async fn postgres_changes_reach_every_store_handle_by_id_only() {
    let Some(schema) = PgSchema::new("notify").await else {
        return;
    };
    let node_a = schema.open().await;
    let node_b = schema.open().await;
    let mut rx = node_b.changes().unwrap();
    // Wait for the listener to be up.
    for _ in 0..100 {
        if node_b.changes_connected() == Some(true) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(node_b.changes_connected(), Some(true));
    let a = app("app_n", "notify", 0);
    node_a.create_app(&a).await.unwrap();
    assert_eq!(next_change(&mut rx).await, Change::App("app_n".into()));
    node_a.create_key(&key("key_n", &a, 0), &digest(60)).await.unwrap();
    assert_eq!(
        next_change(&mut rx).await,
        Change::KeyCreated {
            id: "key_n".into(),
            legacy: false
        }
    );
    node_a.revoke_key("key_n", t(5)).await.unwrap();
    assert_eq!(next_change(&mut rx).await, Change::Key("key_n".into()));
    // A failed write announces nothing: the next announcement is the next real change.
    assert!(node_a.create_key(&key("key_m", &a, 0), &digest(60)).await.is_err());
    node_a.revoke_token("jti-x", t(100)).await.unwrap();
    assert_eq!(next_change(&mut rx).await, Change::TokenRevoked);
    node_a.update_app_policy("app_n", &Policy::default()).await.unwrap();
    assert_eq!(next_change(&mut rx).await, Change::App("app_n".into()));
    let hook = WebhookRecord {
        id: "wh_n".into(),
        name: "n".into(),
        url: "https://hooks.example/n".into(),
        secret_env: Some("S".into()),
        secret_file: None,
        events: vec!["*".into()],
        timeout_ms: 1000,
        max_attempts: 1,
        backoff_ms: 1000,
        created_at: t(0),
        updated_at: t(0),
    };
    node_a.create_webhook(&hook).await.unwrap();
    assert_eq!(next_change(&mut rx).await, Change::Webhooks);
    node_a.delete_webhook("wh_n").await.unwrap();
    assert_eq!(next_change(&mut rx).await, Change::Webhooks);
    // The listener's connection is cut: it comes back and says so with a Resync.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'keyward' AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .execute(&schema.admin)
    .await
    .unwrap();
    assert_eq!(next_change(&mut rx).await, Change::Resync);
    node_a.revoke_key("key_n", t(9)).await.unwrap(); // idempotent: still announced
    assert_eq!(next_change(&mut rx).await, Change::Key("key_n".into()));
    schema.drop_now().await;
}

#[tokio::test]
async fn postgres_bulk_load_and_unreachable_server() {
    let Some(schema) = PgSchema::new("bulk").await else {
        return;
    };
    let store = schema.open().await;
    let a = app("app_b", "bulk", 0);
    store.create_app(&a).await.unwrap();
    let keys: Vec<(KeyRecord, Digest)> = (0..12_000u32)
        .map(|i| {
            let mut d = [7u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            (key(&format!("key_b{i:06}"), &a, 0), Digest(d))
        })
        .collect();
    store.create_keys_bulk(&keys).await.unwrap();
    assert_eq!(store.list_keys(Some("app_b")).await.unwrap().len(), 12_000);
    let (k, d) = &keys[11_999];
    assert_eq!(store.key_by_digest(d).await.unwrap(), Some((k.clone(), *d)));
    // A batch with a duplicate is refused whole.
    let dup = vec![keys[0].clone()];
    assert!(matches!(
        store.create_keys_bulk(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    schema.drop_now().await;

    // Nothing listens on port 1: opening fails clearly and fast.
    let started = std::time::Instant::now();
    let e = PgStore::open(
        "postgres://postgres@127.0.0.1:1/test",
        PgOptions {
            max_connections: 2,
            connect_timeout: std::time::Duration::from_millis(500),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "store_open_failed");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// A store whose key lookups fail with `Unavailable` (or answer "unknown") on demand.
struct Flaky {
    inner: Arc<dyn Store>,
    down: std::sync::atomic::AtomicBool,
    forget: std::sync::atomic::AtomicBool,
    calls: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Store for Flaky {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn create_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.inner.create_app(app).await
    }
    async fn get_app(&self, id_or_name: &str) -> Result<Option<AppRecord>, StoreError> {
        self.inner.get_app(id_or_name).await
    }
    async fn list_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.inner.list_apps().await
    }
    async fn create_key(&self, key: &KeyRecord, digest: &Digest) -> Result<(), StoreError> {
        self.inner.create_key(key, digest).await
    }
    async fn key_by_digest(&self, digest: &Digest) -> Result<Option<(KeyRecord, Digest)>, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.fetch_add(1, SeqCst);
        if self.down.load(SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        if self.forget.load(SeqCst) {
            return Ok(None);
        }
        self.inner.key_by_digest(digest).await
    }
    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.get_key(id).await
    }
    async fn key_with_digest(&self, id: &str) -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError> {
        self.inner.key_with_digest(id).await
    }
    async fn list_keys(&self, app_id: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list_keys(app_id).await
    }
    async fn revoke_key(
        &self,
        id: &str,
        at: OffsetDateTime,
    ) -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError> {
        self.inner.revoke_key(id, at).await
    }
    async fn update_key(
        &self,
        id: &str,
        update: &KeyUpdate,
    ) -> Result<Option<(KeyRecord, Option<Digest>)>, StoreError> {
        self.inner.update_key(id, update).await
    }
    async fn update_app_policy(
        &self,
        id: &str,
        policy: &Policy,
    ) -> Result<Option<(AppRecord, Vec<Digest>)>, StoreError> {
        self.inner.update_app_policy(id, policy).await
    }
    async fn rotate_key(
        &self,
        old_id: &str,
        successor: &KeyRecord,
        digest: &Digest,
        old_expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<(KeyRecord, Digest), StoreError> {
        self.inner
            .rotate_key(old_id, successor, digest, old_expires_at, at)
            .await
    }
    async fn append_audit(&self, event: &AuditEvent) -> Result<i64, StoreError> {
        self.inner.append_audit(event).await
    }
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.list_audit(filter).await
    }
    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        self.inner.audit_head().await
    }
    async fn audit_chain(&self, after: i64, limit: u32) -> Result<Vec<ChainRow>, StoreError> {
        self.inner.audit_chain(after, limit).await
    }
    async fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.audit_checkpoints().await
    }
    async fn add_audit_checkpoint(&self, cp: &Checkpoint) -> Result<bool, StoreError> {
        self.inner.add_audit_checkpoint(cp).await
    }
    async fn audit_cut_point(&self, before: OffsetDateTime) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        self.inner.audit_cut_point(before).await
    }
    async fn delete_audit(&self, up_to: i64, limit: u32) -> Result<u64, StoreError> {
        self.inner.delete_audit(up_to, limit).await
    }
    async fn prune_audit_checkpoints(&self) -> Result<u64, StoreError> {
        self.inner.prune_audit_checkpoints().await
    }
    async fn delete_usage(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        self.inner.delete_usage(before, limit).await
    }
    async fn purge_keys(
        &self,
        ended: OffsetDateTime,
        at: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.purge_keys(ended, at, limit).await
    }
    async fn delete_expired_tokens(&self, now: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.inner.delete_expired_tokens(now, limit).await
    }
    async fn delete_tombstones(&self, before: OffsetDateTime, limit: u32) -> Result<u64, StoreError> {
        self.inner.delete_tombstones(before, limit).await
    }
    async fn retention_counts(&self, cut: &RetentionCut) -> Result<RetentionCounts, StoreError> {
        self.inner.retention_counts(cut).await
    }
    async fn record_usage(&self, rows: &[UsageRow], last_used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        self.inner.record_usage(rows, last_used).await
    }
    async fn count_legacy_keys(&self) -> Result<u64, StoreError> {
        self.inner.count_legacy_keys().await
    }
    async fn usage(&self, key_id: Option<&str>, app_id: Option<&str>, since: i64) -> Result<Vec<UsageRow>, StoreError> {
        self.inner.usage(key_id, app_id, since).await
    }
    async fn create_client(&self, c: &ClientRecord, secret: Option<(&Digest, &str)>) -> Result<(), StoreError> {
        self.inner.create_client(c, secret).await
    }
    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError> {
        self.inner.get_client(id).await
    }
    async fn list_clients(&self, app_id: Option<&str>) -> Result<Vec<ClientRecord>, StoreError> {
        self.inner.list_clients(app_id).await
    }
    async fn update_client(&self, c: &ClientRecord) -> Result<bool, StoreError> {
        self.inner.update_client(c).await
    }
    async fn delete_client(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_client(id).await
    }
    async fn client_secrets(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<(Digest, keyward_core::model::ClientSecretInfo)>, StoreError> {
        self.inner.client_secrets(id, now).await
    }
    async fn rotate_client_secret(
        &self,
        id: &str,
        digest: &Digest,
        hint: &str,
        now: OffsetDateTime,
        old_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.rotate_client_secret(id, digest, hint, now, old_until).await
    }
    async fn add_signing_key(&self, k: &SigningKeyRow) -> Result<(), StoreError> {
        self.inner.add_signing_key(k).await
    }
    async fn signing_keys(&self, now: OffsetDateTime) -> Result<Vec<SigningKeyRow>, StoreError> {
        self.inner.signing_keys(now).await
    }
    async fn retire_signing_key(
        &self,
        kid: &str,
        at: OffsetDateTime,
        remove_after: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.retire_signing_key(kid, at, remove_after).await
    }
    async fn revoke_token(&self, jti: &str, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        self.inner.revoke_token(jti, expires_at).await
    }
    async fn revoked_tokens(&self, now: OffsetDateTime) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        self.inner.revoked_tokens(now).await
    }
    async fn remember_jti(
        &self,
        scope: &str,
        jti: &str,
        e: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner.remember_jti(scope, jti, e, now).await
    }
    async fn create_admin_token(&self, t: &AdminTokenRecord, d: &Digest) -> Result<(), StoreError> {
        self.inner.create_admin_token(t, d).await
    }
    async fn admin_token_by_digest(&self, d: &Digest) -> Result<Option<(AdminTokenRecord, Digest)>, StoreError> {
        self.inner.admin_token_by_digest(d).await
    }
    async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        self.inner.list_admin_tokens().await
    }
    async fn revoke_admin_token(&self, id: &str, at: OffsetDateTime) -> Result<Option<AdminTokenRecord>, StoreError> {
        self.inner.revoke_admin_token(id, at).await
    }
    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.inner.list_webhooks().await
    }
    async fn create_webhook(&self, w: &WebhookRecord) -> Result<(), StoreError> {
        self.inner.create_webhook(w).await
    }
    async fn update_webhook(&self, w: &WebhookRecord) -> Result<bool, StoreError> {
        self.inner.update_webhook(w).await
    }
    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.delete_webhook(id).await
    }
}

#[tokio::test]
async fn the_cache_serves_known_records_while_the_store_is_unavailable_only() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
    let flaky = Arc::new(Flaky {
        inner,
        down: Default::default(),
        forget: Default::default(),
        calls: Default::default(),
    });
    let a = app("app_s", "stale", 0);
    flaky.create_app(&a).await.unwrap();
    flaky.create_key(&key("key_ok", &a, 0), &digest(80)).await.unwrap();
    flaky.create_key(&key("key_rv", &a, 0), &digest(81)).await.unwrap();
    flaky.revoke_key("key_rv", t(1)).await.unwrap();
    let cfg = CacheConfig {
        ttl: Duration::from_millis(100),
        stale_ttl: Duration::from_millis(1500),
        ..CacheConfig::default()
    };
    let cache = KeyCache::new(flaky.clone(), cfg);
    let found = |l: Lookup| match l {
        Lookup::Found(r) => r,
        Lookup::Unknown => panic!("unknown"),
    };
    assert_eq!(found(cache.lookup(&digest(80)).await.unwrap()).revoked_at, None);
    assert_eq!(found(cache.lookup(&digest(81)).await.unwrap()).revoked_at, Some(t(1)));

    flaky.down.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Past freshness, store down: known records (revoked ones too) are served.
    assert_eq!(found(cache.lookup(&digest(80)).await.unwrap()).revoked_at, None);
    assert_eq!(found(cache.lookup(&digest(81)).await.unwrap()).revoked_at, Some(t(1)));
    assert!(cache.store_down());
    // Within a second of the failure, the store is not asked again.
    let before = flaky.calls.load(SeqCst);
    for _ in 0..50 {
        found(cache.lookup(&digest(80)).await.unwrap());
    }
    assert_eq!(flaky.calls.load(SeqCst), before);
    assert!(cache.stats().stale_hits.load(SeqCst) >= 50);
    // Unknown digests: the error, not a guess.
    assert_eq!(cache.lookup(&digest(89)).await.unwrap_err().code(), "store_unavailable");
    // An invalidated record is not served stale.
    cache.invalidate(&digest(81));
    assert!(cache.lookup(&digest(81)).await.is_err());
    // Past ttl + stale_ttl, nothing is served.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(cache.lookup(&digest(80)).await.is_err());

    // Back: fresh reads; and a store that answers "unknown" is believed at once.
    flaky.down.store(false, SeqCst);
    assert_eq!(found(cache.lookup(&digest(80)).await.unwrap()).id, "key_ok");
    assert!(!cache.store_down());
    flaky.forget.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(cache.lookup(&digest(80)).await.unwrap(), Lookup::Unknown));
}

// ---- Row mapping and the statements both backends share -----------------------------------

/// What the shared statements and row mapping must do that the suites above do not pin down.
async fn shared_statements_suite(store: Arc<dyn Store>) {
    let a = app("app_s", "shared", 0);
    store.create_app(&a).await.unwrap();

    // Legacy keys are counted, revoked ones too.
    assert_eq!(store.count_legacy_keys().await.unwrap(), 0);
    let mut legacy = key("key_l", &a, 1);
    legacy.lifecycle.legacy = true;
    store.create_key(&legacy, &digest(150)).await.unwrap();
    store.create_key(&key("key_n", &a, 2), &digest(151)).await.unwrap();
    assert_eq!(store.count_legacy_keys().await.unwrap(), 1);
    store.revoke_key("key_l", t(3)).await.unwrap().unwrap();
    assert_eq!(store.count_legacy_keys().await.unwrap(), 1);

    // Every column of a key survives the round trip, NULLs and flags included.
    let mut full = key("key_f", &a, 4);
    full.name = None;
    full.env = KeyEnv::Test;
    full.expires_at = None;
    full.lifecycle.canary = true;
    full.lifecycle.exchange_only = true;
    full.lifecycle.disabled_at = Some(t(5));
    full.lifecycle.rotated_from = Some("key_old".into());
    store.create_key(&full, &digest(152)).await.unwrap();
    assert_eq!(
        store.key_with_digest("key_f").await.unwrap(),
        Some((full.clone(), Some(digest(152))))
    );

    // A successor is stored linked to the old key and never revoked, disabled, canary or
    // legacy, whatever the record handed in says.
    let mut succ = key("key_s", &a, 10);
    succ.revoked_at = Some(t(10));
    succ.lifecycle.disabled_at = Some(t(10));
    succ.lifecycle.canary = true;
    succ.lifecycle.legacy = true;
    succ.lifecycle.exchange_only = true;
    store
        .rotate_key("key_n", &succ, &digest(153), t(100), t(10))
        .await
        .unwrap();
    let (s, d) = store.key_with_digest("key_s").await.unwrap().unwrap();
    assert_eq!(d, Some(digest(153)));
    assert_eq!(s.revoked_at, None);
    assert_eq!(s.lifecycle.disabled_at, None);
    assert!(!s.lifecycle.canary && !s.lifecycle.legacy);
    assert!(s.lifecycle.exchange_only, "exchange_only is inherited");
    assert_eq!(s.lifecycle.rotated_from.as_deref(), Some("key_n"));
    assert_eq!(store.count_legacy_keys().await.unwrap(), 1);

    // Audit: the sequence number answered is the stored one; a kind prefix is a prefix
    // (its `_` is not a wildcard); all columns round-trip.
    let ev = |kind: &str, at: i64| AuditEvent {
        seq: 0,
        at: t(at),
        actor: "cli".into(),
        kind: kind.into(),
        severity: Severity::Warning,
        target: None,
        source_ip: Some("192.0.2.1".into()),
        details: serde_json::json!({"k": [1, "two"]}),
    };
    let s1 = store.append_audit(&ev("x_y.one", 20)).await.unwrap();
    let s2 = store.append_audit(&ev("xzy.two", 21)).await.unwrap();
    let listed = store
        .list_audit(&AuditFilter {
            kind: Some("x_y.".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![AuditEvent {
            seq: s1,
            ..ev("x_y.one", 20)
        }]
    );
    let listed = store
        .list_audit(&AuditFilter {
            kind: Some("xzy.two".into()),
            since: Some(t(21)),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![s2]);

    // A second secret rotation keeps an earlier expiry and caps a later one.
    let client = ClientRecord {
        id: "cl_s".into(),
        app_id: a.id.clone(),
        app_name: a.name.clone(),
        name: None,
        scopes: vec![],
        auth_method: ClientAuthMethod::ClientSecretPost,
        jwks: Some(serde_json::json!({"keys": [{"kty": "OKP"}]})),
        token_ttl: 90,
        options: Default::default(),
        policy: Default::default(),
        created_at: t(0),
        disabled_at: None,
    };
    store.create_client(&client, Some((&digest(160), "one"))).await.unwrap();
    assert_eq!(store.get_client("cl_s").await.unwrap(), Some(client.clone()));
    assert!(store
        .rotate_client_secret("cl_s", &digest(161), "two", t(10), t(50))
        .await
        .unwrap());
    assert!(store
        .rotate_client_secret("cl_s", &digest(162), "three", t(20), t(40))
        .await
        .unwrap());
    let expiries: Vec<_> = store
        .client_secrets("cl_s", t(20))
        .await
        .unwrap()
        .into_iter()
        .map(|(d, i)| (d, i.hint, i.expires_at))
        .collect();
    assert_eq!(
        expiries,
        vec![
            (digest(160), "one".to_owned(), Some(t(40))),
            (digest(161), "two".to_owned(), Some(t(40))),
            (digest(162), "three".to_owned(), None),
        ]
    );
    assert!(store
        .rotate_client_secret("cl_s", &digest(163), "four", t(30), t(60))
        .await
        .unwrap());
    let kept: Vec<_> = store
        .client_secrets("cl_s", t(30))
        .await
        .unwrap()
        .into_iter()
        .map(|(d, i)| (d, i.expires_at))
        .collect();
    assert_eq!(
        kept,
        vec![
            (digest(160), Some(t(40))),
            (digest(161), Some(t(40))),
            (digest(162), Some(t(60))),
            (digest(163), None),
        ],
        "an earlier expiry is kept, no expiry becomes the grace end"
    );
}

/// Writes key rows the store would never write, straight into the database.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

impl Raw {
    async fn key_row(&self, id: &str, digest: &[u8], scopes: &str, policy: &str, created_at: i64) {
        let sql = "INSERT INTO keys (id, app_id, digest, hint, env, scopes, created_at, policy) \
                   VALUES ($1, 'app_c', $2, 'kw_test_…', 'test', $3, $4, $5)";
        match self {
            Raw::Sqlite(pool) => sqlx::query(sql)
                .bind(id)
                .bind(digest)
                .bind(scopes)
                .bind(created_at)
                .bind(policy)
                .execute(pool)
                .await
                .map(|_| ()),
            Raw::Pg(pool) => sqlx::query(sql)
                .bind(id)
                .bind(digest)
                .bind(scopes)
                .bind(created_at)
                .bind(policy)
                .execute(pool)
                .await
                .map(|_| ()),
        }
        .unwrap();
    }
}

/// Rows that cannot be read are `store_corrupt` errors that quote nothing of the row: no
/// panic, no partial record.
async fn corrupt_rows_suite(store: Arc<dyn Store>, raw: Raw) {
    store.create_app(&app("app_c", "corrupt", 0)).await.unwrap();
    let good = [1u8; 32];
    let cases: [(&str, &[u8], &str, &str, i64); 6] = [
        ("key_c1", &[2u8; 31], r#"["a"]"#, "{}", 0),
        ("key_c2", &[3u8; 32], "not json", "{}", 0),
        ("key_c3", &[4u8; 32], r#"["bad scope"]"#, "{}", 0),
        ("key_c4", &[5u8; 32], r#"["a"]"#, "{", 0),
        ("key_c5", &[6u8; 32], r#"["a"]"#, "{}", i64::MAX),
        ("key_c6", &[], r#"{"a": 1}"#, "[", -1),
    ];
    for (id, digest, scopes, policy, created_at) in cases {
        raw.key_row(id, digest, scopes, policy, created_at).await;
        let e = store.get_key(id).await.unwrap_err();
        assert_eq!(e.code(), "store_corrupt", "{id}: {e}");
        let shown = e.to_string();
        assert!(
            !shown.contains("bad scope") && !shown.contains("not json"),
            "{id}: {shown}"
        );
    }
    assert_eq!(
        store.list_keys(Some("app_c")).await.unwrap_err().code(),
        "store_corrupt"
    );
    raw.key_row("key_c7", &good, r#"["a"]"#, "{}", 0).await;
    let (k, d) = store.key_by_digest(&Digest(good)).await.unwrap().unwrap();
    assert_eq!(
        (k.id.as_str(), d),
        ("key_c7", Digest(good)),
        "a sound row next to them reads"
    );
}

#[tokio::test]
async fn sqlite_shared_statements_and_corrupt_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    shared_statements_suite(store.clone()).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    corrupt_rows_suite(store, Raw::Sqlite(pool)).await;
}

#[tokio::test]
async fn postgres_shared_statements_and_corrupt_rows() {
    let Some(schema) = PgSchema::new("shared").await else {
        return;
    };
    let pg = schema.open().await;
    let raw = Raw::Pg(pg.pool().clone());
    let store: Arc<dyn Store> = Arc::new(pg);
    shared_statements_suite(store.clone()).await;
    corrupt_rows_suite(store, raw).await;
    schema.drop_now().await;
}

// ---- The audit chain and retention (issue 20) ----------------------------------------------

impl Raw {
    /// Runs one statement; its error text when it fails.
    async fn exec(&self, sql: &str) -> Result<u64, String> {
        match self {
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()),
            Raw::Pg(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()),
        }
        .map_err(|e| e.to_string())
    }
}

fn event(n: i64, kind: &str) -> AuditEvent {
    AuditEvent {
        seq: 0,
        at: t(n),
        actor: "admin".into(),
        kind: kind.into(),
        severity: Severity::Info,
        target: Some(format!("key_{n}")),
        source_ip: (n % 2 == 0).then(|| "10.0.0.1".to_owned()),
        details: serde_json::json!({"n": n, "nested": {"b": [1, 2], "a": "x"}}),
    }
}

/// Every stored event links to the one before it and its hash covers its content; the head is
/// the last event.
async fn assert_chain_links(store: &dyn Store) -> Vec<keyward_core::audit::ChainRow> {
    use keyward_core::audit::{hash32, GENESIS};
    let rows = store.audit_chain(0, 10_000).await.unwrap();
    let head = store.audit_head().await.unwrap();
    let mut prev: Option<[u8; 32]> = None;
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            assert_eq!(r.seq, rows[i - 1].seq + 1, "contiguous seqs");
        }
        let p = hash32(r.prev_hash.as_deref().unwrap()).unwrap();
        if let Some(want) = prev {
            assert_eq!(p, want, "event {} links to the one before", r.seq);
        } else if r.seq == head.legacy_seq + 1 {
            assert_eq!(p, GENESIS);
        }
        let h = hash32(r.hash.as_deref().unwrap()).unwrap();
        assert_eq!(r.compute_hash(&p), h, "event {} hash", r.seq);
        prev = Some(h);
    }
    if let Some(last) = rows.last() {
        assert_eq!(head.seq, last.seq);
        assert_eq!(head.hash, prev);
    }
    rows
}

/// The chain, the checkpoints and what the triggers allow retention to delete.
async fn chain_suite(store: Arc<dyn Store>, raw: Raw) {
    use keyward_core::audit::{Checkpoint, GENESIS};
    let pepper = keyward_core::Pepper::from_text("chain-test-pepper-0123456789abcdef0123").unwrap();
    let head = store.audit_head().await.unwrap();
    assert_eq!((head.seq, head.hash, head.legacy_seq), (0, None, 0), "a new store");
    assert_eq!(store.audit_cut_point(t(1_000)).await.unwrap(), None, "nothing to cut");
    for n in 1..=10 {
        assert_eq!(store.append_audit(&event(n * 10, "key.created")).await.unwrap(), n);
    }
    let rows = assert_chain_links(store.as_ref()).await;
    assert_eq!(rows.len(), 10);
    // The stored text is what the hash covers; the API reads the same event back.
    assert_eq!(rows[0].details, r#"{"n":10,"nested":{"a":"x","b":[1,2]}}"#);
    let listed = store
        .list_audit(&AuditFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed[0].seq, 10);
    assert_eq!(listed[0].details, event(100, "").details);

    // Cut points: the last event such that it and all before it are older than the horizon.
    assert_eq!(store.audit_cut_point(t(10)).await.unwrap(), None);
    let (seq, hash) = store.audit_cut_point(t(35)).await.unwrap().unwrap();
    assert_eq!(seq, 3);
    assert_eq!(Some(hash.to_vec()), rows[2].hash);
    assert_eq!(store.audit_cut_point(t(10_000)).await.unwrap().unwrap().0, 10);
    // An event written with an older clock (another node) holds the cut before it.
    store.append_audit(&event(5, "skewed")).await.unwrap();
    assert_eq!(store.audit_cut_point(t(10_000)).await.unwrap().unwrap().0, 11);
    assert_eq!(store.audit_cut_point(t(45)).await.unwrap().unwrap().0, 4);

    // Append-only: no UPDATE ever; no DELETE without a cut checkpoint covering the event.
    let e = raw.exec("UPDATE audit SET kind = 'x' WHERE seq = 1").await.unwrap_err();
    assert!(e.contains("append-only"), "{e}");
    let e = raw.exec("DELETE FROM audit WHERE seq = 1").await.unwrap_err();
    assert!(e.contains("append-only"), "{e}");
    assert!(store.delete_audit(3, 10).await.is_err());
    let e = raw.exec("UPDATE audit_head SET seq = 1").await;
    assert!(e.is_ok(), "the head row is the store's to move: {e:?}");
    raw.exec("UPDATE audit_head SET seq = 11").await.unwrap();

    // An anchor allows nothing; a cut allows deleting up to it, never beyond.
    let anchor = Checkpoint::sign(&pepper, 5, [5; 32], false, 1);
    assert!(store.add_audit_checkpoint(&anchor).await.unwrap());
    assert!(
        !store.add_audit_checkpoint(&anchor).await.unwrap(),
        "one checkpoint per seq and kind"
    );
    assert!(raw.exec("DELETE FROM audit WHERE seq = 1").await.is_err());
    let cut = Checkpoint::sign(&pepper, 3, hash, true, 2);
    assert!(store.add_audit_checkpoint(&cut).await.unwrap());
    assert_eq!(
        store.audit_checkpoints().await.unwrap(),
        vec![cut.clone(), anchor.clone()]
    );
    assert!(store
        .audit_checkpoints()
        .await
        .unwrap()
        .iter()
        .all(|c| c.verify(&pepper)));
    assert_eq!(store.delete_audit(3, 2).await.unwrap(), 2, "a batch");
    assert_eq!(store.delete_audit(3, 2).await.unwrap(), 1);
    assert_eq!(store.delete_audit(3, 2).await.unwrap(), 0);
    assert!(store.delete_audit(4, 10).await.is_err(), "beyond the cut");
    let e = raw.exec("DELETE FROM audit WHERE seq = 4").await.unwrap_err();
    assert!(e.contains("append-only"), "{e}");
    assert_eq!(store.audit_chain(0, 100).await.unwrap()[0].seq, 4);
    // The events left still link, and the first one links to the cut.
    let left = store.audit_chain(0, 100).await.unwrap();
    assert_eq!(left[0].prev_hash.as_deref(), Some(&cut.hash[..]));

    // Checkpoints: append-only, but those older than the latest cut may go.
    let e = raw.exec("UPDATE audit_checkpoints SET at = 9").await.unwrap_err();
    assert!(e.contains("append-only"), "{e}");
    assert!(raw.exec("DELETE FROM audit_checkpoints WHERE seq = 3").await.is_err());
    assert_eq!(store.prune_audit_checkpoints().await.unwrap(), 0);
    let cut2 = Checkpoint::sign(&pepper, 6, GENESIS, true, 3);
    store.add_audit_checkpoint(&cut2).await.unwrap();
    assert_eq!(
        store.prune_audit_checkpoints().await.unwrap(),
        2,
        "the cut at 3, the anchor at 5"
    );
    assert_eq!(store.audit_checkpoints().await.unwrap(), vec![cut2]);
    if let Raw::Pg(_) = raw {
        let e = raw.exec("TRUNCATE audit_checkpoints").await.unwrap_err();
        assert!(e.contains("append-only"), "{e}");
        let e = raw.exec("TRUNCATE audit").await.unwrap_err();
        assert!(e.contains("append-only"), "{e}");
    }
}

/// Usage rows, key tombstones and tombstones, in batches, and the dry-run counts.
async fn retention_suite(store: Arc<dyn Store>) {
    let a = app("app_ret", "retention", 0);
    store.create_app(&a).await.unwrap();
    let mut rows = Vec::new();
    for minute in 0..10 {
        for outcome in ["allowed", "denied:scope"] {
            rows.push(UsageRow {
                key_id: "key_r1".into(),
                app_id: a.id.clone(),
                minute,
                outcome: outcome.into(),
                count: 1,
            });
        }
    }
    store.record_usage(&rows, &[]).await.unwrap();
    let plan = RetentionCut {
        usage_before_minute: Some(4),
        ..Default::default()
    };
    assert_eq!(store.retention_counts(&plan).await.unwrap().usage_rows, 8);
    assert_eq!(store.delete_usage(4, 5).await.unwrap(), 5);
    assert_eq!(store.delete_usage(4, 5).await.unwrap(), 3);
    assert_eq!(store.delete_usage(4, 5).await.unwrap(), 0);
    let left = store.usage(None, Some(&a.id), 0).await.unwrap();
    assert_eq!(left.len(), 12);
    assert!(left.iter().all(|r| r.minute >= 4));

    // Keys: revoked at 100, expired at 200 (never revoked), live, rotated (expiring at 150).
    let revoked = key("key_r1", &a, 1);
    let mut expired = key("key_r2", &a, 2);
    expired.expires_at = Some(t(200));
    let mut live = key("key_r3", &a, 3);
    live.expires_at = None;
    let rotated = key("key_r4", &a, 4);
    for (k, d) in [(&revoked, 201), (&expired, 202), (&live, 203), (&rotated, 204)] {
        store.create_key(k, &digest(d)).await.unwrap();
    }
    store.revoke_key("key_r1", t(100)).await.unwrap();
    store
        .rotate_key("key_r4", &key("key_r5", &a, 5), &digest(205), t(150), t(6))
        .await
        .unwrap();
    let counts = |ended: i64, tomb: Option<i64>| RetentionCut {
        keys_ended_before: Some(t(ended)),
        tombstones_before: tomb.map(t),
        ..Default::default()
    };
    assert_eq!(store.retention_counts(&counts(99, None)).await.unwrap().keys_purged, 0);
    assert_eq!(store.retention_counts(&counts(160, None)).await.unwrap().keys_purged, 2);
    assert_eq!(
        store.retention_counts(&counts(3000, None)).await.unwrap().keys_purged,
        3
    );

    // Purge in batches: the ids come back, the digest goes, the record stays.
    let mut purged = store.purge_keys(t(160), t(500), 1).await.unwrap();
    purged.extend(store.purge_keys(t(160), t(500), 1).await.unwrap());
    assert!(store.purge_keys(t(160), t(500), 1).await.unwrap().is_empty());
    purged.sort();
    assert_eq!(purged, vec!["key_r1", "key_r4"]);
    assert_eq!(
        store.key_by_digest(&digest(201)).await.unwrap(),
        None,
        "never verifies again"
    );
    let (tomb, d) = store.key_with_digest("key_r1").await.unwrap().unwrap();
    assert_eq!(d, None);
    assert_eq!(tomb.lifecycle.purged_at, Some(t(500)));
    assert_eq!(tomb.revoked_at, Some(t(100)));
    assert_eq!(
        (tomb.hint.as_str(), tomb.name.as_deref()),
        (revoked.hint.as_str(), Some("name of key_r1"))
    );
    assert_eq!(
        store.list_keys(Some(&a.id)).await.unwrap().len(),
        5,
        "tombstones are listed"
    );
    // The id stays taken: a new key cannot reuse it.
    assert!(matches!(
        store.create_key(&key("key_r1", &a, 9), &digest(209)).await,
        Err(StoreError::Conflict(_))
    ));
    // Tombstones' digests are nobody's: the app's digests leave them out, a revocation
    // answers no digest, a rotation is refused.
    let (_, digests) = store
        .update_app_policy(&a.id, &Policy::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(digests, vec![digest(202), digest(203), digest(205)]);
    let (r, d) = store.revoke_key("key_r4", t(600)).await.unwrap().unwrap();
    assert_eq!((r.revoked_at, d), (Some(t(600)), None));
    store.create_key(&key("key_r6", &a, 7), &digest(206)).await.unwrap();
    let mut old = key("key_r7", &a, 8);
    old.expires_at = Some(t(50));
    store.create_key(&old, &digest(207)).await.unwrap();
    assert_eq!(store.purge_keys(t(60), t(700), 10).await.unwrap(), vec!["key_r7"]);
    assert!(matches!(
        store
            .rotate_key("key_r7", &key("key_r8", &a, 9), &digest(208), t(900), t(10))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // The digest of a tombstone may be given to a new key (it is nobody's).
    store.create_key(&key("key_r9", &a, 10), &digest(201)).await.unwrap();
    assert_eq!(store.key_by_digest(&digest(201)).await.unwrap().unwrap().0.id, "key_r9");

    // Tombstones themselves, when asked to.
    assert_eq!(
        store
            .retention_counts(&counts(0, Some(600)))
            .await
            .unwrap()
            .tombstones_deleted,
        2
    );
    assert_eq!(store.delete_tombstones(t(600), 1).await.unwrap(), 1);
    assert_eq!(store.delete_tombstones(t(600), 10).await.unwrap(), 1);
    assert_eq!(store.delete_tombstones(t(600), 10).await.unwrap(), 0);
    assert_eq!(store.get_key("key_r1").await.unwrap(), None);
    assert!(store.get_key("key_r7").await.unwrap().is_some(), "made at 700");
    assert!(
        store.get_key("key_r3").await.unwrap().is_some(),
        "live keys are never touched"
    );

    // Expired denylist entries and seen jtis go; live ones stay (and keep working).
    for (jti, exp) in [("j1", 10), ("j2", 20), ("j3", 30)] {
        store.revoke_token(jti, t(exp)).await.unwrap();
        assert!(store.remember_jti("s", jti, t(exp), t(0)).await.unwrap());
    }
    let expired = RetentionCut {
        expired_before: Some(t(20)),
        ..Default::default()
    };
    assert_eq!(store.retention_counts(&expired).await.unwrap().expired_token_rows, 4);
    assert_eq!(store.delete_expired_tokens(t(20), 1).await.unwrap(), 2, "one of each");
    assert_eq!(store.delete_expired_tokens(t(20), 10).await.unwrap(), 2);
    assert_eq!(store.delete_expired_tokens(t(20), 10).await.unwrap(), 0);
    let left = store.revoked_tokens(t(0)).await.unwrap();
    assert_eq!(left, vec![("j3".to_owned(), t(30))]);
    assert!(
        !store.remember_jti("s", "j3", t(30), t(25)).await.unwrap(),
        "a live jti is still a replay"
    );
}

#[tokio::test]
async fn sqlite_audit_chain_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    chain_suite(store.clone(), Raw::Sqlite(pool)).await;
    retention_suite(store).await;
}

#[tokio::test]
async fn postgres_audit_chain_and_retention() {
    let Some(schema) = PgSchema::new("chain").await else {
        return;
    };
    let pg = schema.open().await;
    let raw = Raw::Pg(pg.pool().clone());
    let store: Arc<dyn Store> = Arc::new(pg);
    chain_suite(store.clone(), raw).await;
    retention_suite(store).await;
    schema.drop_now().await;
}

/// Appends racing from many tasks (SQLite: one file, several connections) or several nodes
/// (PostgreSQL: separate pools) still form one chain: contiguous seqs, each event linked to the
/// one committed before it.
async fn concurrent_appends(stores: Vec<Arc<dyn Store>>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in stores.iter().enumerate() {
        for j in 0..25 {
            let s = s.clone();
            tasks.spawn(async move { s.append_audit(&event((i * 100 + j) as i64, "race")).await.unwrap() });
        }
    }
    let mut seqs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        seqs.push(r.unwrap());
    }
    seqs.sort();
    let n = stores.len() as i64 * 25;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "each append got its own seq");
    assert_eq!(assert_chain_links(stores[0].as_ref()).await.len() as i64, n);
}

#[tokio::test]
async fn sqlite_concurrent_audit_appends_form_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    concurrent_appends(vec![a.clone(), a, b.clone(), b]).await;
}

#[tokio::test]
async fn postgres_concurrent_audit_appends_from_several_nodes_form_one_chain() {
    let Some(schema) = PgSchema::new("chain_race").await else {
        return;
    };
    let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..4 {
        nodes.push(Arc::new(schema.open().await));
    }
    concurrent_appends(nodes).await;
    schema.drop_now().await;
}

/// A store that had audit events before the chain existed: they are the legacy part; the
/// first chained event links to GENESIS; the triggers still refuse what they refused.
#[tokio::test]
async fn sqlite_events_from_before_the_chain_are_legacy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let mut m = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite"
        )))
        .await
        .unwrap();
        m.migrations = m.migrations.iter().filter(|m| m.version <= 8).cloned().collect();
        m.run(&pool).await.unwrap();
        for n in 0..3 {
            sqlx::query(
                "INSERT INTO audit (at, actor, kind, severity, details) VALUES ($1, 'admin', 'old', 'info', '{}')",
            )
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::query("INSERT INTO apps (id, name, created_at) VALUES ('app_o', 'old', 0)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO keys (id, app_id, digest, hint, env, scopes, created_at) \
             VALUES ('key_o', 'app_o', $1, 'kw_live_…', 'live', '[]', 0)",
        )
        .bind(&[9u8; 32][..])
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let head = store.audit_head().await.unwrap();
    assert_eq!((head.seq, head.hash, head.legacy_seq), (3, None, 3));
    // The rebuilt keys table kept its rows (and its digest).
    assert_eq!(
        store.key_by_digest(&Digest([9; 32])).await.unwrap().unwrap().0.id,
        "key_o"
    );
    assert_eq!(store.append_audit(&event(10, "new")).await.unwrap(), 4);
    let rows = store.audit_chain(0, 10).await.unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows[..3].iter().all(|r| r.hash.is_none() && r.prev_hash.is_none()));
    assert_eq!(rows[3].prev_hash.as_deref(), Some(&keyward_core::audit::GENESIS[..]));
    // A cut at a legacy event stands for GENESIS.
    assert_eq!(
        store
            .audit_cut_point(t(0) - time::Duration::days(365 * 30))
            .await
            .unwrap(),
        Some((3, keyward_core::audit::GENESIS))
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for sql in [
        "UPDATE audit SET kind = 'x' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 1",
    ] {
        let e = sqlx::query(sql).execute(&pool).await.unwrap_err().to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
}

// ---- Backup and restore (SQLite) ------------------------------------------------------------

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn sqlite_backup_is_consistent_under_writes_and_restore_needs_the_store_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let a = app("app_b", "backup", 0);
    store.create_app(&a).await.unwrap();
    // Writers keep going during the copies: each one writes a key and then an audit event
    // naming it, in that order.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop, a) = (store.clone(), stop.clone(), a.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut d = [0u8; 32];
                d[..4].copy_from_slice(&n.to_be_bytes());
                store
                    .create_key(&key(&format!("key_b{n}"), &a, i64::from(n)), &Digest(d))
                    .await
                    .unwrap();
                store.append_audit(&event(i64::from(n), "key.created")).await.unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut copies = Vec::new();
    for i in 0..3 {
        let to = dir.path().join(format!("copy{i}.db"));
        let r = store.backup(&to).await.unwrap();
        assert_eq!(r.path, to);
        assert!(r.keys > 0 && r.bytes > 0);
        assert_eq!(r.schema_version, newest_sqlite_migration());
        #[cfg(unix)]
        assert_eq!(mode(&to), 0o600, "a backup holds digests: owner only");
        assert!(!dir.path().join(format!("copy{i}.db.partial")).exists());
        copies.push((to, r));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0);
    // Never onto an existing file, never onto the store itself.
    assert!(matches!(store.backup(&copies[0].0).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.backup(&path).await, Err(StoreError::Conflict(_))));
    assert!(store.backup(&dir.path().join("no/such/dir/x.db")).await.is_err());

    // Restoring over a store something has open is refused (this process has it open).
    let e = SqliteStore::restore(&copies[0].0, &path, true, 1).await.unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    // Into a new place: each copy is one instant of the store: every key it holds has its
    // audit event, or is the last key (its event was not written yet).
    for (i, (copy, r)) in copies.iter().enumerate() {
        let target = dir.path().join(format!("restored{i}/keyward.db"));
        let done = SqliteStore::restore(copy, &target, false, 1).await.unwrap();
        assert_eq!((done.keys, done.audit_events), (r.keys, r.audit_events));
        assert_eq!(done.replaced, None);
        let restored = SqliteStore::open(&target).await.unwrap();
        let keys = restored.list_keys(None).await.unwrap();
        let events = restored.audit_chain(0, 100_000).await.unwrap();
        assert!(
            keys.len() == events.len() || keys.len() == events.len() + 1,
            "{} keys, {} events",
            keys.len(),
            events.len()
        );
        assert_chain_links(&restored).await;
        // Restoring over it while it is open is refused; closed, --force moves it aside.
        let e = SqliteStore::restore(copy, &target, true, 7).await.unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        drop(restored);
        assert!(matches!(
            SqliteStore::restore(copy, &target, false, 7).await,
            Err(StoreError::Conflict(_))
        ));
        let again = SqliteStore::restore(copy, &target, true, 7).await.unwrap();
        let aside = dir.path().join(format!("restored{i}/keyward.db.replaced-7"));
        assert_eq!(again.replaced.as_deref(), Some(aside.as_path()));
        assert!(aside.exists());
    }
    drop(store);
}

#[tokio::test]
async fn sqlite_restore_refuses_what_is_not_a_keyward_store() {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("keyward.db");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"SQLite format 3\0 but not really, and then some bytes").unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let other = dir.path().join("other.db");
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", other.display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x)").execute(&pool).await.unwrap();
        pool.close().await;
    }
    let newer = dir.path().join("newer.db");
    {
        let s = SqliteStore::open(&newer).await.unwrap();
        drop(s);
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", newer.display()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'future', 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    for (file, want) in [
        (&junk, "not a SQLite database"),
        (&empty, "no migration table"),
        (&other, "no migration table"),
        (&newer, "migration 9999"),
        (&dir.path().join("missing.db"), "No such file"),
        (&dir.path().to_path_buf(), "not a file"),
        (&to, "the backup is the store itself"),
    ] {
        let e = SqliteStore::restore(file, &to, true, 1).await.unwrap_err().to_string();
        assert!(e.contains(want), "{}: {e}", file.display());
    }
    assert!(!to.exists(), "nothing was installed");
}

/// The version of the newest SQLite migration shipped (`migrations/sqlite/NNNN_*.sql`): what a
/// backup of a fully migrated store reports.
fn newest_sqlite_migration() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.split('_').next().and_then(|n| n.parse::<i64>().ok())
        })
        .max()
        .unwrap()
}
