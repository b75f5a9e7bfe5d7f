//! Issue 11 over real HTTP: publishable keys (origin-bound, public-safe routes only, a rate per
//! client address, never exchanged), CORS per route (preflights answered without the upstream,
//! headers on errors too, misconfigurations refused), and per-app key rules.

use keyward::config::{CorsSection, RouteSection};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{boot_with, Kw};

const SITE: &str = "https://cats.example";

fn public_route(upstream: &str) -> RouteSection {
    RouteSection {
        name: "public-facts".into(),
        path_prefix: "/public".into(),
        methods: vec!["GET".into()],
        upstream: upstream.into(),
        scopes: vec!["facts:read".into()],
        api_keys: true,
        publishable: true,
        cors: Some(CorsSection {
            allowed_origins: vec![SITE.into(), "http://127.0.0.1:9999".into()],
            allowed_headers: vec!["x-api-key".into(), "authorization".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn boot_front(tweak: impl FnOnce(&mut keyward::config::Config)) -> Kw {
    boot_with(|cfg| {
        let upstream = cfg.routes[0].upstream.clone();
        cfg.routes.push(public_route(&upstream));
        tweak(cfg);
    })
    .await
}

async fn publishable(kw: &Kw, app: &str, extra: Value) -> (String, String) {
    let (s, _) = kw.admin(Method::POST, "/v1/apps", Some(json!({"name": app}))).await;
    assert!(s == 201 || s == 409);
    let mut body = json!({"app": app, "kind": "publishable", "scopes": ["facts:read"], "origins": [SITE]});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            body[k] = v;
        }
    }
    let (s, v) = kw.admin(Method::POST, "/v1/keys", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["kind"], "publishable", "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("kw_pk_live_"), "{key}");
    (v["id"].as_str().unwrap().to_owned(), key)
}

async fn get(kw: &Kw, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    kw.get(path, headers).await
}

#[tokio::test]
async fn publishable_keys_are_origin_bound_and_public_only() {
    let kw = boot_front(|_| {}).await;
    let (_, pk) = publishable(&kw, "web", json!({})).await;
    // From the site: allowed, with CORS headers a page can read.
    let r = get(&kw, "/public/fact", &[("x-api-key", &pk), ("origin", SITE)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], SITE);
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("RateLimit"));
    assert_eq!(kw.up.seen.last()["origin"], vec![SITE.to_owned()]);
    // No Origin (curl, a server), another origin, a look-alike, `null`: 403 origin_not_allowed.
    for origin in [
        None,
        Some("https://evil.example"),
        Some("https://cats.example.evil"),
        Some("null"),
        Some("http://cats.example"),
    ] {
        let mut h = vec![("x-api-key", pk.as_str())];
        if let Some(o) = origin {
            h.push(("origin", o));
        }
        let r = get(&kw, "/public/fact", &h).await;
        assert_eq!(r.status(), 403, "{origin:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "origin_not_allowed", "{origin:?}: {body}");
    }
    // A route not marked publishable: refused even from the right origin.
    let r = get(&kw, "/fact", &[("x-api-key", &pk), ("origin", SITE)]).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "publishable_key_not_allowed");
    // A secret key works on the public route from anywhere (servers call it too).
    let (_, sk) = kw.key("web", &["facts:read"], json!({})).await;
    assert_eq!(get(&kw, "/public/fact", &[("x-api-key", &sk)]).await.status(), 200);

    // Never at the token endpoint, never at the admin API.
    let r = kw
        .http
        .get(format!("{}/v1/apps", kw.admin))
        .bearer_auth(&pk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn publishable_keys_are_never_exchanged_for_tokens() {
    let kw = boot_front(|cfg| cfg.oauth.enabled = true).await;
    let (_, pk) = publishable(&kw, "web", json!({})).await;
    let r = kw
        .http
        .post(format!("{}/oauth/token", kw.gw))
        .header("origin", SITE)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", pk.as_str()),
            ("subject_token_type", "urn:keyward:params:oauth:token-type:api-key"),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

#[tokio::test]
async fn publishable_keys_get_a_rate_per_client_address() {
    let kw = boot_front(|cfg| cfg.gateway.publishable_rate = "3/min".into()).await;
    let (_, pk) = publishable(&kw, "web", json!({})).await;
    for _ in 0..3 {
        assert_eq!(
            get(&kw, "/public/fact", &[("x-api-key", &pk), ("origin", SITE)])
                .await
                .status(),
            200
        );
    }
    let r = get(&kw, "/public/fact", &[("x-api-key", &pk), ("origin", SITE)]).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        SITE,
        "a page can read its 429"
    );
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("client"), "{body}");
    // Secret keys are not subject to it.
    let (_, sk) = kw.key("web", &["facts:read"], json!({})).await;
    for _ in 0..5 {
        assert_eq!(get(&kw, "/public/fact", &[("x-api-key", &sk)]).await.status(), 200);
    }
}

#[tokio::test]
async fn publishable_key_creation_is_checked() {
    let kw = boot_front(|_| {}).await;
    let (s, _) = kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "web"}))).await;
    assert_eq!(s, 201);
    for (body, field) in [
        (
            json!({"app": "web", "kind": "publishable", "scopes": ["facts:read"]}),
            "origins",
        ),
        (
            json!({"app": "web", "kind": "publishable", "scopes": ["facts:write"], "origins": [SITE]}),
            "scopes",
        ),
        (
            json!({"app": "web", "kind": "publishable", "scopes": ["admin"], "origins": [SITE]}),
            "scopes",
        ),
        // Not a scope of any publishable route.
        (
            json!({"app": "web", "kind": "publishable", "scopes": ["billing:read"], "origins": [SITE]}),
            "scopes",
        ),
        (
            json!({"app": "web", "kind": "publishable", "scopes": ["facts:read"], "origins": ["*"]}),
            "origins",
        ),
        (
            json!({"app": "web", "kind": "publishable", "scopes": ["facts:read"], "origins": ["https://*.cats.example"]}),
            "origins",
        ),
        (
            json!({"app": "web", "kind": "publishable", "scopes": ["facts:read"], "origins": ["https://cats.example/app"]}),
            "origins",
        ),
        (
            json!({"app": "web", "kind": "publishable", "scopes": ["facts:read"], "origins": [SITE], "exchange_only": true}),
            "exchange_only",
        ),
        (
            json!({"app": "web", "scopes": ["facts:read"], "origins": [SITE]}),
            "origins",
        ),
        (json!({"app": "web", "kind": "sneaky"}), ""),
    ] {
        let (s, v) = kw.admin(Method::POST, "/v1/keys", Some(body.clone())).await;
        assert!(s == 422 || s == 400, "{body}: {s} {v}");
        assert!(v["detail"].as_str().unwrap_or("").contains(field), "{body}: {v}");
    }
    let (s, v) = kw.admin(Method::GET, "/v1/keys?app=web", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "nothing was created: {v}");
    // Origins change with PATCH; only on publishable keys.
    let (id, pk) = publishable(&kw, "web", json!({})).await;
    let (s, v) = kw
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"origins": ["http://127.0.0.1:9999"]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        get(&kw, "/public/fact", &[("x-api-key", &pk), ("origin", SITE)])
            .await
            .status(),
        403
    );
    assert_eq!(
        get(
            &kw,
            "/public/fact",
            &[("x-api-key", &pk), ("origin", "http://127.0.0.1:9999")]
        )
        .await
        .status(),
        200
    );
    let (sid, _) = kw.key("web", &["facts:read"], json!({})).await;
    let (s, _) = kw
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{sid}"),
            Some(json!({"origins": [SITE]})),
        )
        .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn cors_preflight_is_answered_without_the_upstream() {
    let kw = boot_front(|_| {}).await;
    let before = kw.up.seen.count();
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        kw.http
            .request(Method::OPTIONS, format!("{}/public/fact", kw.gw))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let r = preflight(SITE, "GET", "x-api-key").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], SITE);
    assert!(r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("GET"));
    assert!(r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("x-api-key"));
    assert_eq!(r.headers()["access-control-max-age"], "600");
    assert!(r.headers().get("access-control-allow-credentials").is_none());
    for (origin, method, headers) in [
        ("https://evil.example", "GET", "x-api-key"),
        (SITE, "DELETE", "x-api-key"),
        (SITE, "GET", "x-evil"),
    ] {
        let r = preflight(origin, method, headers).await.unwrap();
        assert_eq!(r.status(), 403, "{origin} {method} {headers}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    assert_eq!(kw.up.seen.count(), before, "no preflight reached the upstream");
    // Errors carry the CORS headers too (a page can read the 401 and its problem document).
    let r = get(&kw, "/public/fact", &[("origin", SITE)]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], SITE);
    assert!(r.headers()["vary"].to_str().unwrap().contains("Origin"));
    // Routes without CORS never get the headers.
    let (_, sk) = kw.key("web", &["facts:read"], json!({})).await;
    let r = get(&kw, "/fact", &[("x-api-key", &sk), ("origin", SITE)]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn cors_misconfigurations_are_refused_at_load() {
    let base = || {
        let mut c = keyward::config::Config::default();
        let mut r = public_route("http://127.0.0.1:1");
        r.cors = Some(CorsSection {
            allowed_origins: vec!["*".into()],
            allow_credentials: true,
            ..Default::default()
        });
        c.routes = vec![r];
        c
    };
    let e = base().gateway_config().unwrap_err().to_string();
    assert!(e.contains("allow_credentials"), "{e}");
    for (origins, why) in [
        (vec!["https://*.cats.example".to_owned()], "wildcard"),
        (vec![], "at least one"),
        (vec!["cats.example".to_owned()], "origin"),
        (vec![SITE.to_owned(), "*".to_owned()], "wildcard"),
    ] {
        let mut c = base();
        if let Some(cors) = c.routes[0].cors.as_mut() {
            cors.allowed_origins = origins.clone();
            cors.allow_credentials = false;
        }
        let e = c.gateway_config().unwrap_err().to_string();
        assert!(e.contains(why) || e.contains("origin"), "{origins:?}: {e}");
    }
    let mut c = base();
    c.gateway.publishable_rate = "lots".into();
    c.routes[0].cors = None;
    assert!(c.gateway_config().unwrap_err().to_string().contains("publishable_rate"));
}

#[tokio::test]
async fn app_key_rules_cap_lifetimes_and_restrict_kinds() {
    let kw = boot_front(|_| {}).await;
    let (s, v) = kw
        .admin(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "strict", "max_key_lifetime": "30d", "allowed_kinds": ["secret"]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let now = time::OffsetDateTime::now_utc();
    // No expiry asked: the maximum is given.
    let (s, v) = kw.admin(Method::POST, "/v1/keys", Some(json!({"app": "strict"}))).await;
    assert_eq!(s, 201, "{v}");
    let exp = time::OffsetDateTime::parse(
        v["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        (exp - now - time::Duration::days(30)).abs() < time::Duration::minutes(5),
        "{v}"
    );
    // Beyond the maximum: capped; within it: kept.
    let (_, v) = kw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"app": "strict", "expires_in": "365d"})),
        )
        .await;
    let capped = time::OffsetDateTime::parse(
        v["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        capped <= now + time::Duration::days(30) + time::Duration::minutes(5),
        "{v}"
    );
    let (_, v) = kw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"app": "strict", "expires_in": "7d"})),
        )
        .await;
    let kept = time::OffsetDateTime::parse(
        v["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(kept < now + time::Duration::days(8), "{v}");
    // Rotation: the successor is capped too, even when asked never to expire.
    let id = v["id"].as_str().unwrap();
    let (s, r) = kw
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace": "1h", "no_expiry": true})),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let succ = time::OffsetDateTime::parse(
        r["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        succ <= now + time::Duration::days(30) + time::Duration::minutes(5),
        "{r}"
    );
    // Kinds the app does not allow are refused.
    let (s, v) = kw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"app": "strict", "kind": "publishable", "scopes": ["facts:read"], "origins": [SITE]})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("publishable"), "{v}");
    // require_expiry without a maximum: refused without an expiry.
    let (s, v) = kw
        .admin(
            Method::PATCH,
            "/v1/apps/strict",
            Some(json!({"max_key_lifetime": null, "require_expiry": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = kw.admin(Method::POST, "/v1/keys", Some(json!({"app": "strict"}))).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("expiry"), "{v}");
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"app": "strict", "expires_in": "90d"})),
        )
        .await;
    assert_eq!(s, 201);
    // Bad rules are refused.
    for body in [
        json!({"name": "x1", "max_key_lifetime": "0s"}),
        json!({"name": "x2", "max_key_lifetime": "forever"}),
        json!({"name": "x3", "allowed_kinds": ["root"]}),
        json!({"name": "x4", "require_expiry": "yes"}),
    ] {
        let (s, v) = kw.admin(Method::POST, "/v1/apps", Some(body.clone())).await;
        assert!(s == 422 || s == 400, "{body}: {s} {v}");
    }
}

/// The CLI flags: `key create --publishable --origin`, `app create|update --max-key-lifetime
/// --require-expiry --allowed-kind`, and their usage errors (exit 2, nothing created).
#[tokio::test(flavor = "multi_thread")]
async fn cli_flags_for_publishable_keys_and_key_rules() {
    let kw = boot_front(|_| {}).await;
    let admin = kw.admin.clone();
    let run = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .env("KEYWARD_ADMIN_URL", &admin)
            .env("KEYWARD_ADMIN_TOKEN", crate::harness::ADMIN_TOKEN)
            .env_remove("KEYWARD_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "app",
        "create",
        "shop",
        "--max-key-lifetime",
        "30d",
        "--allowed-kind",
        "publishable",
        "--allowed-kind",
        "secret",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let app: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(app["policy"]["key_rules"]["max_lifetime_secs"], 30 * 86_400, "{app}");
    let (code, out, err) = run(&[
        "key",
        "create",
        "--app",
        "shop",
        "--publishable",
        "--origin",
        SITE,
        "--scope",
        "facts:read",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let k: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(k["kind"], "publishable");
    assert!(k["key"].as_str().unwrap().starts_with("kw_pk_live_"));
    assert!(k["expires_at"].is_string(), "capped by the app's rule: {k}");
    let pk = k["key"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&kw, "/public/fact", &[("x-api-key", &pk), ("origin", SITE)])
            .await
            .status(),
        200
    );
    let (code, out, err) = run(&[
        "app",
        "update",
        "shop",
        "--max-key-lifetime",
        "none",
        "--require-expiry",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let app: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(app["policy"]["key_rules"].get("max_lifetime_secs").is_none(), "{app}");
    assert_eq!(app["policy"]["key_rules"]["require_expiry"], true, "{app}");
    let (code, _, err) = run(&["key", "create", "--app", "shop"]);
    assert_ne!(code, 0, "a secret key without expiry is refused: {err}");
    assert!(err.contains("expir"), "{err}");
    for args in [
        vec!["key", "create", "--app", "shop", "--publishable"],
        vec!["key", "create", "--app", "shop", "--origin", SITE],
        vec![
            "key",
            "create",
            "--app",
            "shop",
            "--publishable",
            "--origin",
            "https://*.x.example",
        ],
        vec![
            "key",
            "create",
            "--app",
            "shop",
            "--publishable",
            "--origin",
            SITE,
            "--canary",
        ],
        vec!["app", "update", "shop", "--allowed-kind", "root"],
        vec!["app", "update", "shop", "--max-key-lifetime", "soon"],
        vec!["app", "update", "shop", "--require-expiry", "--no-require-expiry"],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
}
