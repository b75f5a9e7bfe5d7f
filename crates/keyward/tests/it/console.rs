//! The web console (issue 8): served by the admin listener with strict headers, and driven
//! end to end in headless Chromium by tests/console/run.mjs when `KEYWARD_TEST_CHROMIUM=1`
//! (tests/console/setup.sh installs Debian's chromium and playwright-core). Issue 22: nothing
//! before sign-in, a read-only token offered no change, the keys table's kind, scopes, last use and
//! rotation, the audit's source address, the usage chart's quiet minutes at 0, a 420 px window.

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn console_is_embedded_with_strict_headers() {
    let kw = boot().await;
    let resp = kw.http.get(format!("{}/console/", kw.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    // No inline script, nothing loaded from elsewhere.
    assert!(html.contains(r#"<script src="/console/app.js" defer></script>"#));
    assert!(!html.contains("<script>") && !html.contains("http://") && !html.contains("https://"));
    for (path, ct) in [("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")] {
        let resp = kw.http.get(format!("{}{path}", kw.admin)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(ct));
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://") || path.ends_with(".js"),
            "{path}"
        );
    }
    // The console itself needs no token; the API it calls does.
    let resp = kw.http.get(format!("{}/console", kw.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "redirected to /console/");
    let (s, _) = (
        kw.http
            .get(format!("{}/v1/apps", kw.admin))
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_end_to_end() {
    if std::env::var("KEYWARD_TEST_CHROMIUM").as_deref() != Ok("1") {
        println!("skipped: set KEYWARD_TEST_CHROMIUM=1 (after tests/console/setup.sh) to run the console in Chromium");
        return;
    }
    let kw = boot().await;
    // Traffic for the usage chart of one app: allowed and denied requests.
    let (id, key) = kw.key("traffic", &["facts:read"], json!({})).await;
    for _ in 0..5 {
        assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    }
    assert_eq!(kw.get("/facts", &[("x-api-key", &key)]).await.status(), 200);
    let (s, _) = kw.admin(Method::GET, "/v1/usage?app=traffic", None).await;
    assert_eq!(s, 200);
    // Issue 22: two more requests three minutes later; the two minutes between had none, and
    // the chart must show them as 0 (allowed per minute: 6, 0, 0, 2).
    kw.clock.advance(time::Duration::minutes(3));
    for _ in 0..2 {
        assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    }
    let (s, u) = kw.admin(Method::GET, "/v1/usage?app=traffic", None).await;
    assert_eq!(s, 200);
    assert_eq!(u["totals"]["allowed"], 8, "{u}");
    // Keys of every kind for the keys table (issue 22 point 3).
    let (_, canary) = kw
        .key("kinds", &["facts:read"], json!({"name": "trap", "canary": true}))
        .await;
    // (no scope: no test route is marked publishable)
    kw.key(
        "kinds",
        &[],
        json!({"name": "web", "kind": "publishable", "origins": ["https://cats.example"]}),
    )
    .await;
    kw.key(
        "kinds",
        &["facts:read", "facts:write"],
        json!({"name": "bff", "exchange_only": true}),
    )
    .await;
    let (s, v) = kw
        .admin(
            Method::POST,
            "/v1/keys/import",
            Some(json!({"app": "kinds", "name": "old", "secret": "legacy-static-secret-0123456789ab", "scopes": ["facts:read"]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // The canary used once: a security event with the caller's address in the audit log.
    assert_eq!(kw.get("/fact", &[("x-api-key", &canary)]).await.status(), 401);
    let mut seen = false;
    for _ in 0..100 {
        let (_, a) = kw.admin(Method::GET, "/v1/audit?kind=security.canary_used", None).await;
        if a["items"][0]["source_ip"] == "127.0.0.1" {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen, "the canary event reached the audit log");
    // A read-only admin token (issue 22 point 2).
    let (s, ro) = kw
        .admin(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "viewer", "role": "read"})),
        )
        .await;
    assert_eq!(s, 201, "{ro}");
    let read_token = ro["token"].as_str().unwrap().to_owned();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shots = root.join("target/console-screenshots");
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/console/run.mjs"))
        .arg(&kw.admin)
        .arg(ADMIN_TOKEN)
        .arg(&shots)
        .env("USAGE_APP", "traffic")
        .env("USAGE_EXPECT", "6,0,0,2")
        .env("KINDS_APP", "kinds")
        .env("USED_KEY", &id)
        .env("READ_TOKEN", &read_token)
        .output()
        .await
        .expect("node (tests/console/setup.sh installs what the harness needs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}\nscreenshots: {}", shots.display());
    assert!(out.status.success(), "the console end-to-end run failed (see above)");
    assert!(stdout.contains("0 failed"));
}
