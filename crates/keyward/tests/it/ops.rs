//! Operations (issue 8, points 3–5): `/metrics` (every outcome counted, nothing the client
//! sent in it), request ids, `/healthz` and `/readyz`, graceful drain, `keyward check-config`
//! and configuration reload on SIGHUP with the real binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use reqwest::Method;
use serde_json::json;
use tokio::net::TcpListener;

use crate::harness::{boot, boot_with, problem, ADMIN_TOKEN, PEPPER};
use crate::proc::{cats_key, url_after, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn metrics_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

#[tokio::test]
async fn metrics_count_every_outcome_and_never_a_client_string() {
    let mut kw = boot_with(|c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let (_, limited) = kw
        .key("cats", &["facts:read"], json!({"rate": {"limit": "1/min"}}))
        .await;
    let (_, narrow) = kw.key("cats", &["other:read"], json!({})).await;
    let (revoked_id, revoked) = kw.key("cats", &["facts:read"], json!({})).await;
    let (s, _) = kw
        .admin(Method::POST, &format!("/v1/keys/{revoked_id}/revoke"), None)
        .await;
    assert_eq!(s, 200);

    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    assert_eq!(kw.get("/fact", &[]).await.status(), 401);
    assert_eq!(kw.get("/fact", &[("x-api-key", &revoked)]).await.status(), 401);
    assert_eq!(kw.get("/fact", &[("x-api-key", &narrow)]).await.status(), 403);
    assert_eq!(kw.get("/fact", &[("x-api-key", &limited)]).await.status(), 200);
    assert_eq!(kw.get("/fact", &[("x-api-key", &limited)]).await.status(), 429);
    assert_eq!(kw.get("/down", &[("x-api-key", &key)]).await.status(), 502);
    // Hostile strings: a path that matches no route, a key in a header, a request id.
    let hostile = "/zz-hostile-path-4242-{evil}";
    let resp = kw
        .http
        .get(format!("{}{hostile}?token=leak-me-7777", kw.gw))
        .header("x-api-key", &key)
        .header("x-request-id", "hostile-id-31337")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = kw.get("/fact%2Fadmin", &[("x-api-key", &key)]).await;
    assert_eq!(resp.status(), 400);

    // Behind the admin token by default; any role will do.
    let url = format!("{}/metrics", kw.admin);
    problem(kw.http.get(&url).send().await.unwrap(), 401, "admin_unauthorized").await;
    let resp = kw.http.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(resp.headers().contains_key("x-request-id"));
    let text = resp.text().await.unwrap();
    for series in [
        "keyward_gateway_requests_total{route=\"fact\",outcome=\"allowed\",status=\"200\"} 3",
        "keyward_gateway_requests_total{route=\"fact\",outcome=\"missing_credential\",status=\"401\"} 1",
        "keyward_gateway_requests_total{route=\"fact\",outcome=\"revoked_credential\",status=\"401\"} 1",
        "keyward_gateway_requests_total{route=\"fact\",outcome=\"insufficient_scope\",status=\"403\"} 1",
        "keyward_gateway_requests_total{route=\"fact\",outcome=\"rate_limited\",status=\"429\"} 1",
        "keyward_gateway_requests_total{route=\"down\",outcome=\"upstream_unavailable\",status=\"502\"} 1",
        "keyward_gateway_requests_total{route=\"unmatched\",outcome=\"not_found\",status=\"404\"} 1",
        "keyward_gateway_requests_total{route=\"unmatched\",outcome=\"invalid_path\",status=\"400\"} 1",
        "keyward_limiter_decisions_total{decision=\"allowed\"} 4",
        "keyward_limiter_decisions_total{decision=\"rate_limited\"} 1",
        "keyward_gateway_request_duration_seconds_count{route=\"fact\"} 7",
        "keyward_upstream_duration_seconds_count{route=\"fact\"} 3",
        "keyward_store_lookup_duration_seconds_count ",
        "keyward_key_cache_lookups_total{result=\"hit\"} ",
        "keyward_key_cache_lookups_total{result=\"miss\"} ",
        "keyward_routes 7",
        "keyward_gateway_in_flight_requests 0",
    ] {
        assert!(text.contains(series), "{series} missing in\n{text}");
    }
    let hits: u64 = metrics_line(&text, "keyward_key_cache_lookups_total{result=\"hit\"}")
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(hits >= 3, "{text}");
    for secret in [
        key.as_str(),
        limited.as_str(),
        narrow.as_str(),
        revoked.as_str(),
        "zz-hostile",
        "leak-me",
        "hostile-id",
        "%2F",
        "kw_live",
        ADMIN_TOKEN,
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
    // Every label value is a route name, a fixed word or a status.
    let configured_targets = [format!("http://{}", kw.up.addr), "http://127.0.0.1:9".to_owned()];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(labels) = line
            .split_once('{')
            .and_then(|(_, r)| r.split_once('}'))
            .map(|(l, _)| l)
        {
            for pair in labels.split(',') {
                let (k, v) = pair.split_once('=').unwrap();
                let v = v.trim_matches('"');
                // The upstream target gauges (issue 18.2) name the target by its configured
                // URL: exactly one of the configuration's targets, nothing else.
                if k == "target" && line.starts_with("keyward_upstream_target_") {
                    assert!(configured_targets.iter().any(|t| t == v), "label value {v:?} in {line}");
                    continue;
                }
                assert!(
                    v.len() <= 32 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.+".contains(&b)),
                    "label value {v:?} in {line}"
                );
            }
        }
    }
    // The dedicated listener: no token.
    let m = kw.running.as_ref().unwrap().metrics.unwrap();
    let resp = kw.http.get(format!("http://{m}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("keyward_gateway_requests_total"));
    let resp = kw.http.get(format!("http://{m}/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    kw.stop().await;
}

#[tokio::test]
async fn public_metrics_on_the_admin_listener() {
    let mut kw = boot_with(|c| c.metrics.public = true).await;
    let resp = kw.http.get(format!("{}/metrics", kw.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The rest of the admin API still wants its token.
    problem(
        kw.http.get(format!("{}/v1/apps", kw.admin)).send().await.unwrap(),
        401,
        "admin_unauthorized",
    )
    .await;
    kw.stop().await;
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_replaced_when_not_and_returned_everywhere() {
    let mut kw = boot().await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let generated = |v: &str| v.len() == 22 && v.bytes().all(|b| b.is_ascii_alphanumeric());

    // Sane: kept, passed upstream, returned.
    let resp = kw
        .get("/fact", &[("x-api-key", &key), ("x-request-id", "req-42_a.b")])
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-42_a.b");
    assert_eq!(kw.up.seen.last()["x-request-id"], vec!["req-42_a.b"]);

    // Absent: generated, the same upstream and back.
    let resp = kw.get("/fact", &[("x-api-key", &key)]).await;
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(generated(&id), "{id}");
    assert_eq!(kw.up.seen.last()["x-request-id"], vec![id.clone()]);

    // Hostile: replaced (never echoed, never passed on).
    let long = "a".repeat(129);
    for bad in ["has space", "semi;colon", "<script>", long.as_str(), "a/b"] {
        let resp = kw.get("/fact", &[("x-api-key", &key), ("x-request-id", bad)]).await;
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(generated(&id), "{bad} gave {id}");
        assert_eq!(kw.up.seen.last()["x-request-id"], vec![id]);
    }
    // Two of them: replaced too.
    let resp = kw
        .http
        .get(format!("{}/fact", kw.gw))
        .header("x-api-key", &key)
        .header("x-request-id", "one")
        .header("x-request-id", "two")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(generated(&id), "{id}");
    assert_eq!(kw.up.seen.last()["x-request-id"], vec![id]);

    // Problem documents, the admin API, probes: all carry one.
    let resp = kw.get("/fact", &[("x-request-id", "no-key-1")]).await;
    assert_eq!(resp.headers()["x-request-id"], "no-key-1");
    problem(resp, 401, "missing_credential").await;
    let resp = kw.get("/nowhere", &[]).await;
    assert!(generated(resp.headers()["x-request-id"].to_str().unwrap()));
    let resp = kw
        .http
        .get(format!("{}/v1/apps", kw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "admin-7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "admin-7");
    let resp = kw.http.get(format!("{}/v1/apps", kw.admin)).send().await.unwrap();
    assert!(generated(resp.headers()["x-request-id"].to_str().unwrap()));
    let resp = kw.http.get(format!("{}/healthz", kw.admin)).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    kw.stop().await;
}

#[tokio::test]
async fn healthz_always_200_readyz_503_when_a_dependency_is_down() {
    let mut kw = boot().await;
    let resp = kw.http.get(format!("{}/healthz", kw.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = kw.http.get(format!("{}/readyz", kw.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["checks"]["store"], "up", "{body}");
    // The probes are not reserved on the gateway: a route there may use the paths.
    assert_eq!(kw.get("/readyz", &[]).await.status(), 404);
    kw.stop().await;

    // Redis configured but unreachable (nothing listens on the port): not ready, alive.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut kw = boot_with(|c| {
        c.redis = Some(keyward::config::RedisSection {
            url: format!("redis://127.0.0.1:{port}/0"),
            ..Default::default()
        });
        c.verify.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let resp = kw.http.get(format!("{}/readyz", kw.admin)).send().await.unwrap();
    let body = problem(resp, 503, "not_ready").await;
    assert_eq!(body["down"], json!(["redis"]), "{body}");
    assert_eq!(body["checks"]["store"], "up", "{body}");
    assert_eq!(body["checks"]["redis"], "down", "{body}");
    let resp = kw.http.get(format!("{}/healthz", kw.admin)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The verify listener has both probes too.
    let v = kw.verify.clone().unwrap();
    assert_eq!(kw.http.get(format!("{v}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(kw.http.get(format!("{v}/readyz")).send().await.unwrap().status(), 503);
    kw.stop().await;
}

/// An upstream that answers `/slow` after one second.
async fn slow_upstream() -> std::net::SocketAddr {
    let app = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "done"
        }),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight() {
    let up = slow_upstream().await;
    let mut kw = boot_with(|c| {
        c.gateway.upstream_timeout = Duration::from_secs(10);
        for r in &mut c.routes {
            if r.name == "slow" {
                r.upstream = format!("http://{up}");
            }
        }
    })
    .await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let url = format!("{}/slow", kw.gw);
    let http = kw.http.clone();
    let k = key.clone();
    let in_flight = tokio::spawn(async move {
        let resp = http.get(url).header("x-api-key", k).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    kw.stop().await;
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "done"),
        "the request in flight completes"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "shutdown waited for it"
    );
    // The listener is closed now.
    assert!(kw.http.get(format!("{}/slow", kw.gw)).send().await.is_err());
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_drain() {
    let up = slow_upstream().await;
    let mut kw = boot_with(|c| {
        c.gateway.upstream_timeout = Duration::from_secs(10);
        c.server.shutdown_timeout = Duration::from_millis(200);
        for r in &mut c.routes {
            if r.name == "slow" {
                r.upstream = format!("http://{up}");
            }
        }
    })
    .await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let url = format!("{}/slow", kw.gw);
    let http = kw.http.clone();
    tokio::spawn(async move { http.get(url).header("x-api-key", key).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    kw.stop().await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn check_config_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        r#"[gateway]
listen = "127.0.0.1:0"
lisen = 3
publishable_rate = "lots"

[[routes]]
name = "a"
path_prefix = "a"
upstream = "http://127.0.0.1:9"

[[routes]]
name = "b"
path_prefix = "/b"
upstream = "ftp://x"

[[routes]]
name = "a"
path_prefix = "/c"
upstream = "http://127.0.0.1:9"
rate = "lots"
"#,
    )
    .unwrap();
    // The secrets `serve` needs (check-config refuses what serve refuses, missing secrets too).
    let secrets = [
        ("KEYWARD_PEPPER", crate::harness::PEPPER),
        ("KEYWARD_ADMIN_TOKEN", "admin-token-0123456789"),
    ];
    let out = Command::new(BIN)
        .args(["check-config", p.to_str().unwrap()])
        .env_remove("KEYWARD_CONFIG")
        .envs(secrets)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let name = p.display().to_string();
    for (line, needle) in [
        (3, "lisen"),
        (4, "publishable_rate"),
        (6, "path_prefix"),
        (11, "ftp"),
        (16, "lots"),
        (16, "unique"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name}:{line}:")) && l.contains(needle)),
            "no {needle:?} at line {line} in\n{stdout}"
        );
    }
    assert!(stderr.contains("6 problems"), "{stderr}");

    std::fs::write(
        &p,
        "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", p.to_str().unwrap()])
        .envs(secrets)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

fn route_toml(name: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!("[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"http://{upstream}\"\n{extra}\n")
}

#[tokio::test]
async fn sighup_reloads_routes_and_keeps_the_old_ones_when_the_new_file_is_broken() {
    let up = crate::harness::upstream().await;
    let upstream = up.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keyward.toml");
    let head = format!(
        "[store]\nurl = \"{}\"\n\n[gateway]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n",
        dir.path().join("k.db").display()
    );
    std::fs::write(&cfg, format!("{head}{}", route_toml("fact", "/fact", &upstream, ""))).unwrap();
    let mut c = Command::new(BIN);
    c.args(["serve", "--config", cfg.to_str().unwrap()])
        .env("KEYWARD_PEPPER", PEPPER)
        .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYWARD_LOG", "info,keyward_edge=debug")
        .env("KEYWARD_LOG_FORMAT", "json")
        .env_remove("KEYWARD_CONFIG")
        .stdout(Stdio::null())
        .stdin(Stdio::null());
    let mut serve = Proc::spawn(c);
    let line = serve.wait_for("keyward: gateway on", 0);
    let gw = format!("http://{}", url_after(&line, "gateway on http://"));
    let admin = format!("http://{}", url_after(&line, "admin API on http://"));
    let http = reqwest::Client::new();
    let key = cats_key(&admin, ADMIN_TOKEN).await;
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("{gw}{path}");
        let key = key.clone();
        async move {
            http.get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("/fact").await, 200);
    assert_eq!(get("/echo").await, 404);

    // A new route, and a rate limit on the old one.
    std::fs::write(
        &cfg,
        format!(
            "{head}{}{}",
            route_toml("fact", "/fact", &upstream, "rate = \"2/min\""),
            route_toml("echo", "/echo", &upstream, "")
        ),
    )
    .unwrap();
    let mark = serve.seen();
    serve.signal("-HUP");
    serve.wait_for("configuration reloaded", mark);
    assert_eq!(get("/echo").await, 200);
    assert_eq!(get("/fact").await, 200);
    assert_eq!(get("/fact").await, 200);
    assert_eq!(get("/fact").await, 429, "the new rate limit applies");

    // A broken file: refused, logged, the current routes keep serving.
    std::fs::write(
        &cfg,
        format!("{head}[[routes]]\nname = \"x\"\npath_prefix = \"nope\"\nupstream = \"http://{upstream}\"\n"),
    )
    .unwrap();
    let mark = serve.seen();
    serve.signal("-HUP");
    let refused = serve.wait_for("configuration reload refused", mark);
    assert!(refused.contains("path_prefix"), "{refused}");
    assert_eq!(get("/echo").await, 200);
    assert_eq!(get("/x").await, 404);
    // Logs are JSON with the request's id on the lines logged while handling it.
    let resp = http
        .get(format!("{gw}/echo"))
        .header("x-api-key", &key)
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-123");
    let status = serve.terminate();
    assert!(status.success(), "{status:?}");
    let logs = serve.stderr();
    assert!(logs.contains("\"stopped\""), "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("request finished") && l.contains("\"request_id\":\"trace-me-123\"")),
        "{logs}"
    );
    // Who called what (issue 22.13): path, client address, app and key id, never the key.
    let line = logs
        .lines()
        .find(|l| l.contains("request finished") && l.contains("trace-me-123"))
        .unwrap();
    for field in [
        "\"path\":\"/echo\"",
        "\"client_ip\":\"127.0.0.1\"",
        "\"app_id\":\"app_",
        "\"key_id\":\"key_",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    for l in logs.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
    assert!(!logs.contains(&key), "a key in the logs");
}

#[tokio::test]
async fn sighup_names_the_settings_it_cannot_apply_and_applies_the_timeouts() {
    let up = crate::harness::upstream().await;
    let upstream = up.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keyward.toml");
    let store = dir.path().join("k.db").display().to_string();
    let file = |listen: &str, timeout: &str, routes: &str| {
        format!(
            "[store]\nurl = \"{store}\"\n\n[gateway]\nlisten = \"{listen}\"\nupstream_timeout = \"{timeout}\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n{routes}"
        )
    };
    let slow = route_toml("slow", "/slow", &upstream, "");
    std::fs::write(&cfg, file("127.0.0.1:0", "30s", &slow)).unwrap();
    let mut c = Command::new(BIN);
    c.args(["serve", "--config", cfg.to_str().unwrap()])
        .env("KEYWARD_PEPPER", PEPPER)
        .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYWARD_LOG", "info")
        .env("KEYWARD_LOG_FORMAT", "json")
        .env_remove("KEYWARD_CONFIG")
        .stdout(Stdio::null())
        .stdin(Stdio::null());
    let mut serve = Proc::spawn(c);
    let line = serve.wait_for("keyward: gateway on", 0);
    let gw = format!("http://{}", url_after(&line, "gateway on http://"));
    let admin = format!("http://{}", url_after(&line, "admin API on http://"));
    let http = reqwest::Client::new();
    let key = cats_key(&admin, ADMIN_TOKEN).await;
    let get = |path: &str| {
        let req = http.get(format!("{gw}{path}")).header("x-api-key", key.clone());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/echo").await, 404);

    // A reload with nothing changed names nothing.
    let mark = serve.seen();
    serve.signal("-HUP");
    let same = serve.wait_for("configuration reloaded", mark);
    assert!(!same.contains("not applied"), "{same}");

    // A new listen address (needs a restart), a shorter upstream timeout and a new route.
    let other = crate::upstreams::dead_addr().to_string();
    let routes = format!("{slow}{}", route_toml("echo", "/echo", &upstream, ""));
    std::fs::write(&cfg, file(&other, "300ms", &routes)).unwrap();
    let mark = serve.seen();
    serve.signal("-HUP");
    let reloaded = serve.wait_for("configuration reloaded", mark);
    assert!(
        reloaded.contains("2 routes, 0 upstream groups; not applied until restart: gateway.listen"),
        "{reloaded}"
    );
    for applied in ["upstream_timeout", "routes", "store"] {
        assert!(!reloaded.contains(&format!("restart: {applied}")), "{reloaded}");
        assert!(!reloaded.contains(&format!(", {applied}")), "{reloaded}");
    }
    let v: serde_json::Value = serde_json::from_str(&reloaded).unwrap();
    assert_eq!(v["level"], "WARN", "{reloaded}");
    // The new route works on the listener already bound; the old address keeps serving.
    assert_eq!(get("/echo").await, 200);
    // The new gateway.upstream_timeout is in force: the 5 s upstream is cut (504).
    assert_eq!(get("/slow").await, 504);
    assert!(
        http.get(format!("http://{other}/echo")).send().await.is_err(),
        "not bound"
    );
    let status = serve.terminate();
    assert!(status.success(), "{status:?}");
}

/// Every stderr line parsed as a JSON object (panics on the first that is not).
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{stderr}"));
            assert!(v.is_object() && v["level"].is_string(), "{l}");
            v
        })
        .collect()
}

/// `keyward serve` with JSON logs at the default level on the store `url`; the process and
/// its gateway and admin addresses.
fn serve_json(
    dir: &std::path::Path,
    store: &str,
    upstream: &str,
    extra_env: &[(&str, &str)],
) -> (Proc, String, String) {
    let cfg = dir.join("keyward.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nurl = \"{store}\"\n\n[gateway]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
            route_toml("fact", "/fact", upstream, "")
        ),
    )
    .unwrap();
    let mut c = Command::new(BIN);
    c.args(["serve", "--config", cfg.to_str().unwrap()])
        .env("KEYWARD_PEPPER", PEPPER)
        .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYWARD_LOG_FORMAT", "json")
        .env_remove("KEYWARD_LOG")
        .env_remove("KEYWARD_CONFIG")
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let serve = Proc::spawn(c);
    let line = serve.wait_for("keyward: gateway on", 0);
    let gw = format!("http://{}", url_after(&line, "gateway on http://"));
    let admin = format!("http://{}", url_after(&line, "admin API on http://"));
    (serve, gw, admin)
}

/// Stops `serve` and returns its stderr and stdout.
fn stop(mut serve: Proc) -> (String, String) {
    assert!(serve.terminate().success(), "{}", serve.stderr());
    let mut out = String::new();
    if let Some(mut o) = serve.child.stdout.take() {
        std::io::Read::read_to_string(&mut o, &mut out).unwrap();
    }
    (serve.stderr(), out)
}

/// Issue 22, point 11: with JSON logs every line `serve` writes is JSON — the listening line
/// (with its addresses as fields), request and reload lines, a fatal error — and nothing goes
/// to stdout. With PostgreSQL (`KEYWARD_TEST_POSTGRES_URL`), the second start of a node (the
/// `_sqlx_migrations` table exists) logs no `_sqlx_migrations … skipping` notice at the
/// default level.
#[tokio::test]
async fn json_logs_are_json_on_every_line() {
    let up = crate::harness::upstream().await;
    let upstream = up.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db").display().to_string();
    let (serve, gw, admin) = serve_json(dir.path(), &db, &upstream, &[]);
    let key = cats_key(&admin, ADMIN_TOKEN).await;
    let http = reqwest::Client::new();
    for (path, k, status) in [
        ("/fact", key.as_str(), 200),
        ("/fact", "kw_live_nope", 401),
        ("/none", "x", 404),
    ] {
        let r = http
            .get(format!("{gw}{path}"))
            .header("x-api-key", k)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }
    // A reload that fails logs an error, as JSON too.
    std::fs::write(dir.path().join("keyward.toml"), "[store\nbroken").unwrap();
    let mark = serve.seen();
    serve.signal("-HUP");
    serve.wait_for("configuration reload refused", mark);
    let (stderr, stdout) = stop(serve);
    let lines = json_lines(&stderr);
    assert!(stdout.trim().is_empty(), "stdout: {stdout}");
    let listening = lines
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("keyward: gateway on"))
        })
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(format!("http://{}", listening["gateway"].as_str().unwrap()), gw);
    assert_eq!(format!("http://{}", listening["admin"].as_str().unwrap()), admin);
    assert!(lines.iter().any(|v| v["level"] == "ERROR"), "{stderr}");
    assert!(!stderr.contains(&key), "no key in the logs");

    // A fatal error (the gateway's port is taken) is a JSON line too, whatever the level.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[store]\nurl = \"{db}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n{}",
            route_toml("fact", "/fact", &upstream, "")
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", good.to_str().unwrap()])
        .env("KEYWARD_PEPPER", PEPPER)
        .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEYWARD_LOG_FORMAT", "json")
        .env("KEYWARD_LOG", "warn")
        .env("KEYWARD_GATEWAY__LISTEN", &busy)
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&stderr);
    let fatal = lines.last().unwrap();
    assert_eq!(fatal["level"], "ERROR", "{stderr}");
    assert!(fatal["error"].as_str().is_some_and(|e| !e.is_empty()), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    drop(taken);

    // PostgreSQL: no migration notice at the default level, on the second start either.
    let Some(schema) = crate::cluster_store::Schema::new("jsonlogs").await else {
        return;
    };
    let url = schema.url(None);
    for start in 0..2 {
        let pg_dir = tempfile::tempdir().unwrap();
        let (serve, _, admin) = serve_json(pg_dir.path(), &url, &upstream, &[]);
        let r = http.get(format!("{admin}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let (stderr, _) = stop(serve);
        json_lines(&stderr);
        assert!(!stderr.contains("_sqlx_migrations"), "start {start}: {stderr}");
    }
    // At debug, the notice is there (so the test above can see it when it happens).
    let pg_dir = tempfile::tempdir().unwrap();
    let (serve, _, _) = serve_json(pg_dir.path(), &url, &upstream, &[("KEYWARD_LOG", "debug")]);
    let (stderr, _) = stop(serve);
    json_lines(&stderr);
    assert!(stderr.contains("already exists, skipping"), "{stderr}");
    schema.drop_now().await;
}
