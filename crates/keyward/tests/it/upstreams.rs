//! The upstream groups seen from outside (issue 18, point 2): `GET /v1/upstreams` on the admin
//! API and the target gauges of `/metrics`, against a live target and a dead one (a port
//! nobody listens on), ejected by passive health.

use keyward::config::RouteSection;
use keyward_upstream::GroupConfig;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

/// A loopback address nobody listens on (bound, then let go).
pub(crate) fn dead_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// keyward with a group `pool` = [the test upstream, a dead target] behind the route `/pooled`.
pub(crate) async fn boot_with_pool() -> (Kw, String, String) {
    let dead = format!("http://{}", dead_addr());
    let d = dead.clone();
    let kw = boot_with(move |c| {
        let live = c.routes[0].upstream.clone();
        c.upstreams.push(GroupConfig::new(
            "pool",
            vec![live.parse().unwrap(), d.parse().unwrap()],
        ));
        c.routes.push(RouteSection {
            name: "pooled".into(),
            path_prefix: "/pooled".into(),
            upstream: "pool".into(),
            api_keys: true,
            ..Default::default()
        });
    })
    .await;
    let live = format!("http://{}", kw.up.addr);
    (kw, live, dead)
}

fn target<'a>(groups: &'a Value, group: &str, url: &str) -> &'a Value {
    let g = groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == group)
        .unwrap_or_else(|| panic!("no group {group} in {groups}"));
    g["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["url"].as_str().unwrap().trim_end_matches('/') == url)
        .unwrap_or_else(|| panic!("no target {url} in {g}"))
}

#[tokio::test]
async fn upstreams_api_and_metrics_show_a_dead_target_ejected_after_requests() {
    let (kw, live, dead) = boot_with_pool().await;
    let (_, key) = kw.key("cats", &[], json!({})).await;

    // Before any request: both targets healthy, nothing failed.
    let (s, v) = kw.admin(Method::GET, "/v1/upstreams", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(target(&v, "pool", &dead)["healthy"], true, "{v}");
    assert_eq!(target(&v, "pool", &dead)["recent_fails"], 0, "{v}");
    // The routes with a URL upstream have their own one-target groups.
    let route_group = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "route.fact.0")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(route_group["targets"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(route_group["balance"], "round_robin");

    // GETs through the group: the dead target's refused connections are retried on the live
    // one (no request lost), and counted until max_fails (3) ejects it.
    for i in 0..12 {
        let r = kw.get(&format!("/pooled/{i}"), &[("x-api-key", &key)]).await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    let (s, v) = kw.admin(Method::GET, "/v1/upstreams", None).await;
    assert_eq!(s, 200, "{v}");
    let d = target(&v, "pool", &dead);
    assert_eq!(d["healthy"], false, "{v}");
    assert!(d["ejected_until"].as_str().is_some_and(|t| t.contains('T')), "{v}");
    // (The failure count restarts with the ejection: the target is out for fail_timeout.)
    assert!(d["recent_fails"].is_u64(), "{v}");
    assert_eq!(d["in_flight"], 0, "{v}");
    assert_eq!(d["protocol"], "http1", "{v}");
    let l = target(&v, "pool", &live);
    assert_eq!(l["healthy"], true, "{v}");
    assert_eq!(l["ejected_until"], Value::Null, "{v}");
    assert_eq!(l["recent_fails"], 0, "{v}");

    // /metrics: one gauge per (group, target), labels from the configuration only.
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
    let dead_url = d["url"].as_str().unwrap();
    let live_url = l["url"].as_str().unwrap();
    for (line, why) in [
        (
            format!("keyward_upstream_target_healthy{{group=\"pool\",target=\"{dead_url}\"}} 0"),
            "the dead target",
        ),
        (
            format!("keyward_upstream_target_healthy{{group=\"pool\",target=\"{live_url}\"}} 1"),
            "the live target",
        ),
        (
            format!("keyward_upstream_target_in_flight{{group=\"pool\",target=\"{dead_url}\"}} 0"),
            "in flight",
        ),
        (
            format!("keyward_upstream_target_healthy{{group=\"route.fact.0\",target=\"{live_url}\"}} 1"),
            "a route's own group",
        ),
    ] {
        assert!(text.lines().any(|x| x == line), "{why}: no {line} in\n{text}");
    }
    assert!(text.contains("# TYPE keyward_upstream_target_healthy gauge"), "{text}");
    // The client's paths never become label values.
    assert!(!text.contains("/pooled/"), "{text}");
}

#[tokio::test]
async fn upstreams_api_is_read_only_for_every_role_and_refuses_what_it_does_not_take() {
    let (kw, _, _) = boot_with_pool().await;
    let (s, ro) = kw
        .admin(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "dashboards", "role": "read"})),
        )
        .await;
    assert_eq!(s, 201, "{ro}");
    let ro = ro["token"].as_str().unwrap().to_owned();
    let get = |token: Option<&str>, path: &str, method: Method| {
        let mut req = kw.http.request(method, format!("{}{path}", kw.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, ct, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // A read token reads it.
    let (s, _, v) = get(Some(&ro), "/v1/upstreams", Method::GET).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["items"].as_array().unwrap().iter().any(|g| g["name"] == "pool"),
        "{v}"
    );
    // No token, a wrong token: 401 problems.
    for token in [None, Some("kwadm_nope"), Some("")] {
        let (s, ct, v) = get(token, "/v1/upstreams", Method::GET).await;
        assert_eq!(s, 401, "{token:?}: {v}");
        assert!(ct.starts_with("application/problem+json"), "{ct}");
    }
    // Nothing to change: other methods are 405 problems, for every token.
    for m in [Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
        let (s, ct, v) = get(Some(ADMIN_TOKEN), "/v1/upstreams", m.clone()).await;
        assert_eq!(s, 405, "{m}: {v}");
        assert!(ct.starts_with("application/problem+json"), "{m}: {ct}");
    }
    // Unknown, hostile and oversized query parameters: a clear 4xx problem, never a 5xx.
    let long = "x".repeat(2_000);
    for q in [
        "?limit=10".to_owned(),
        "?group=pool".to_owned(),
        "?%ff%fe=1".to_owned(),
        format!("?{long}={long}"),
    ] {
        let (s, ct, v) = get(Some(ADMIN_TOKEN), &format!("/v1/upstreams{q}"), Method::GET).await;
        assert!((400..500).contains(&s), "{}: {s} {v}", &q[..q.len().min(40)]);
        assert!(ct.starts_with("application/problem+json"), "{ct}");
    }
    // A trailing segment is no endpoint.
    let (s, _, _) = get(Some(ADMIN_TOKEN), "/v1/upstreams/pool", Method::GET).await;
    assert_eq!(s, 404);
    // The OpenAPI document describes it.
    let doc: Value = kw
        .http
        .get(format!("{}/openapi.json", kw.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/upstreams"]["get"].is_object(), "{doc}");
}
