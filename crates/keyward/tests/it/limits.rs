//! Authorization and abuse limits through the real gateway (issue 3).

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// Boots with a manual clock that does not move on its own, plus extra routes.
async fn boot_limited(extra: Vec<keyward::config::RouteSection>, trusted: &[&str]) -> Kw {
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    boot_with(move |c| {
        c.routes.extend(extra);
        c.gateway.trusted_proxies = trusted;
    })
    .await
}

fn route(name: &str, prefix: &str, upstream: &str) -> keyward::config::RouteSection {
    keyward::config::RouteSection {
        name: name.into(),
        path_prefix: prefix.into(),
        methods: vec![],
        upstream: upstream.into(),
        scopes: vec![],
        scope_mode: Default::default(),
        rate: None,
        burst: None,
        rate_by: Default::default(),
        cost: None,
        tokens: false,
        api_keys: true,
        audience: None,
        on_limiter_failure: None,
        client_certificates: false,
        ..Default::default()
    }
}

#[tokio::test]
async fn any_of_scopes_on_a_route() {
    let up = upstream().await;
    let mut r = route("either", "/either", &format!("http://{}", up.addr));
    r.scopes = vec!["a".into(), "b".into()];
    r.scope_mode = keyward_core::decision::ScopeMode::AnyOf;
    let kw = boot_limited(vec![r], &[]).await;
    let (_, kb) = kw.key("cats", &["b"], json!({})).await;
    let (_, kc) = kw.key("cats", &["c"], json!({})).await;
    assert_eq!(kw.get("/either", &[("x-api-key", &kb)]).await.status(), 200);
    let v = problem(
        kw.get("/either", &[("x-api-key", &kc)]).await,
        403,
        "insufficient_scope",
    )
    .await;
    assert_eq!(v["missing_scopes"], json!(["a", "b"]));
}

#[tokio::test]
async fn ip_allowlists_per_key_and_per_app() {
    let kw = boot().await;
    let (_, here) = kw.key("cats", &[], json!({"ips": ["127.0.0.1"]})).await;
    let (_, elsewhere) = kw
        .key("cats", &[], json!({"ips": ["192.0.2.0/24", "2001:db8::/32"]}))
        .await;
    assert_eq!(kw.get("/echo", &[("x-api-key", &here)]).await.status(), 200);
    problem(
        kw.get("/echo", &[("x-api-key", &elsewhere)]).await,
        403,
        "ip_not_allowed",
    )
    .await;
    // An app allowlist applies to every key of the app, on the next request.
    let (s, _) = kw
        .admin(
            Method::PATCH,
            "/v1/apps/cats",
            Some(json!({"ips": ["198.51.100.0/24"]})),
        )
        .await;
    assert_eq!(s, 200);
    problem(kw.get("/echo", &[("x-api-key", &here)]).await, 403, "ip_not_allowed").await;
    let (s, _) = kw
        .admin(Method::PATCH, "/v1/apps/cats", Some(json!({"ips": ["127.0.0.0/8"]})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(kw.get("/echo", &[("x-api-key", &here)]).await.status(), 200);
    // Allowlists are refused, clearly, when malformed.
    for bad in [
        json!(["fe80::1%eth0/64"]),
        json!(["10.0.0.0/33"]),
        json!(["nope"]),
        json!([""]),
    ] {
        let (s, v) = kw
            .admin(Method::POST, "/v1/keys", Some(json!({"app": "cats", "ips": bad})))
            .await;
        assert_eq!(s, 422, "{v}");
        assert!(v["detail"].as_str().unwrap().contains("CIDR"), "{v}");
    }
    // Thousands of CIDRs: a clear refusal (413 past the 64 KiB body limit, 422 below it).
    let many: Vec<String> = (0..2000).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
    let (s, v) = kw
        .admin(Method::POST, "/v1/keys", Some(json!({"app": "cats", "ips": many})))
        .await;
    assert_eq!(s, 422);
    assert!(v["detail"].as_str().unwrap().contains("too many"), "{v}");
    let mut thousand: Vec<String> = (0..1023).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect();
    thousand.push("127.0.0.1".into());
    let (_, k) = kw.key("cats", &[], json!({"ips": thousand})).await;
    assert_eq!(kw.get("/echo", &[("x-api-key", &k)]).await.status(), 200);
}

#[tokio::test]
async fn spoofed_forwarded_headers_from_an_untrusted_peer_change_nothing() {
    let kw = boot().await; // no trusted proxies
    let (_, k) = kw.key("cats", &[], json!({"ips": ["203.0.113.0/24"]})).await;
    for (h, v) in [
        ("x-forwarded-for", "203.0.113.5"),
        ("forwarded", "for=203.0.113.5"),
        ("x-forwarded-for", "203.0.113.5, 203.0.113.6"),
    ] {
        problem(
            kw.get("/echo", &[("x-api-key", &k), (h, v)]).await,
            403,
            "ip_not_allowed",
        )
        .await;
    }
    let (_, open) = kw.key("cats", &[], json!({})).await;
    let r = kw
        .get(
            "/echo",
            &[
                ("x-api-key", &open),
                ("x-forwarded-for", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let seen = kw.up.seen.last();
    assert_eq!(
        seen["x-forwarded-for"],
        vec!["127.0.0.1"],
        "spoofed entries are not passed on"
    );
    assert!(!seen.contains_key("forwarded"));
    assert_eq!(seen["x-keyward-client-ip"], vec!["127.0.0.1"]);
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_honoured() {
    let kw = boot_limited(vec![], &["127.0.0.1/32"]).await;
    let (_, k) = kw.key("cats", &[], json!({"ips": ["203.0.113.0/24"]})).await;
    // Right-most untrusted address wins; what the client wrote to the left does not.
    assert_eq!(
        kw.get(
            "/echo",
            &[("x-api-key", &k), ("x-forwarded-for", "6.6.6.6, 203.0.113.5")]
        )
        .await
        .status(),
        200
    );
    assert_eq!(kw.up.seen.last()["x-keyward-client-ip"], vec!["203.0.113.5"]);
    problem(
        kw.get(
            "/echo",
            &[("x-api-key", &k), ("x-forwarded-for", "203.0.113.5, 6.6.6.6")],
        )
        .await,
        403,
        "ip_not_allowed",
    )
    .await;
    assert_eq!(
        kw.get("/echo", &[("x-api-key", &k), ("forwarded", "for=\"203.0.113.9:443\"")])
            .await
            .status(),
        200
    );
    // Garbage: the walk stops at the trusted peer itself.
    problem(
        kw.get("/echo", &[("x-api-key", &k), ("x-forwarded-for", "203.0.113.5, junk")])
            .await,
        403,
        "ip_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_the_draft_headers() {
    let kw = boot().await;
    let (_, k) = kw
        .key("cats", &[], json!({"rate": {"limit": "3/min", "burst": 3}}))
        .await;
    for i in 0..3 {
        let r = kw.get("/echo", &[("x-api-key", &k)]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-policy").unwrap(), "\"key\";q=3;w=60");
        assert_eq!(
            header(&r, "ratelimit").unwrap(),
            format!("\"key\";r={};t={}", 2 - i, 20 * (i + 1))
        );
    }
    let r = kw.get("/echo", &[("x-api-key", &k)]).await;
    assert_eq!(header(&r, "retry-after").unwrap(), "20");
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"key\";r=0;t=60");
    assert!(header(&r, "ratelimit-policy").is_some());
    problem(r, 429, "rate_limited").await;
    kw.clock.advance(time::Duration::seconds(20));
    assert_eq!(kw.get("/echo", &[("x-api-key", &k)]).await.status(), 200);
    problem(kw.get("/echo", &[("x-api-key", &k)]).await, 429, "rate_limited").await;
    // Keys without limits get no rate-limit fields.
    let (_, free) = kw.key("cats", &[], json!({})).await;
    let r = kw.get("/echo", &[("x-api-key", &free)]).await;
    assert!(header(&r, "ratelimit").is_none());
}

#[tokio::test]
async fn app_limits_are_shared_and_a_refusal_consumes_nothing() {
    let kw = boot().await;
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "shared", "rate": {"limit": "2/min", "burst": 2}})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, a) = kw
        .key(
            "shared",
            &[],
            json!({"rate": {"limit": "100/min", "burst": 100}, "quota": "1000/day"}),
        )
        .await;
    let (_, b) = kw.key("shared", &[], json!({})).await;
    assert_eq!(kw.get("/echo", &[("x-api-key", &a)]).await.status(), 200);
    assert_eq!(kw.get("/echo", &[("x-api-key", &b)]).await.status(), 200);
    // The app's 2/min is spent by the two keys together.
    for _ in 0..10 {
        let r = kw.get("/echo", &[("x-api-key", &a)]).await;
        let v = problem(r, 429, "rate_limited").await;
        assert!(v["detail"].as_str().unwrap().contains("app"), "{v}");
    }
    // After the refusals, the key's own rate and quota were consumed once only.
    kw.clock.advance(time::Duration::seconds(30));
    let r = kw.get("/echo", &[("x-api-key", &a)]).await;
    assert_eq!(r.status(), 200);
    let rl = header(&r, "ratelimit").unwrap();
    assert!(rl.contains("\"key-quota\";r=998"), "{rl}");
    assert!(rl.contains("\"key\";r=98") || rl.contains("\"key\";r=99"), "{rl}");
}

#[tokio::test]
async fn route_limits_from_config() {
    let up = upstream().await;
    let mut per_key = route("limited", "/limited", &format!("http://{}", up.addr));
    per_key.rate = Some("2/min".into());
    let mut global = route("global", "/global", &format!("http://{}", up.addr));
    global.rate = Some("1/min".into());
    global.rate_by = keyward_engine::RateBy::Global;
    let kw = boot_limited(vec![per_key, global], &[]).await;
    let (_, a) = kw.key("cats", &[], json!({})).await;
    let (_, b) = kw.key("cats", &[], json!({})).await;
    for k in [&a, &b] {
        assert_eq!(kw.get("/limited", &[("x-api-key", k)]).await.status(), 200);
        assert_eq!(kw.get("/limited", &[("x-api-key", k)]).await.status(), 200);
        let v = problem(kw.get("/limited", &[("x-api-key", k)]).await, 429, "rate_limited").await;
        assert!(v["detail"].as_str().unwrap().contains("route"));
    }
    assert_eq!(kw.get("/global", &[("x-api-key", &a)]).await.status(), 200);
    problem(kw.get("/global", &[("x-api-key", &b)]).await, 429, "rate_limited").await;
    // Other routes are not affected.
    assert_eq!(kw.get("/echo", &[("x-api-key", &a)]).await.status(), 200);
}

#[tokio::test]
async fn quotas_cost_refill_and_never_count_rejections() {
    let up = upstream().await;
    let mut pricey = route("pricey", "/pricey", &format!("http://{}", up.addr));
    pricey.cost = Some(2);
    pricey.scopes = vec!["paid".into()];
    let kw = boot_limited(vec![pricey], &[]).await;
    let (_, k) = kw.key("cats", &["paid"], json!({"quota": "5/day"})).await;
    let (_, noscope) = kw.key("cats", &[], json!({"quota": "5/day"})).await;
    // Rejections before the limit phase (401, 403) never consume.
    for _ in 0..20 {
        problem(
            kw.get("/pricey", &[("x-api-key", &noscope)]).await,
            403,
            "insufficient_scope",
        )
        .await;
    }
    assert_eq!(kw.get("/echo", &[("x-api-key", &noscope)]).await.status(), 200);
    let r = kw.get("/echo", &[("x-api-key", &noscope)]).await;
    assert!(
        header(&r, "ratelimit").unwrap().contains("r=3"),
        "two requests used two units"
    );
    // Cost 2 on a quota of 5: two requests, then a distinct 429.
    assert_eq!(kw.get("/pricey", &[("x-api-key", &k)]).await.status(), 200);
    let r = kw.get("/pricey", &[("x-api-key", &k)]).await;
    assert_eq!(header(&r, "ratelimit").unwrap().split(';').nth(1).unwrap(), "r=1");
    let r = kw.get("/pricey", &[("x-api-key", &k)]).await;
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 86_400);
    problem(r, 429, "quota_exhausted").await;
    // A cheaper route still fits in the last unit.
    assert_eq!(kw.get("/echo", &[("x-api-key", &k)]).await.status(), 200);
    problem(kw.get("/echo", &[("x-api-key", &k)]).await, 429, "quota_exhausted").await;
    // The next day the balance is 5 again, not more.
    kw.clock.advance(time::Duration::seconds(retry as i64));
    let mut n = 0;
    while kw.get("/echo", &[("x-api-key", &k)]).await.status() == 200 {
        n += 1;
        assert!(n <= 5);
    }
    assert_eq!(n, 5);
}

#[tokio::test]
async fn a_quota_admits_exactly_q_under_concurrency() {
    let kw = boot().await;
    let (_, k) = kw.key("cats", &[], json!({"quota": "17/day"})).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let http = reqwest::Client::new();
        let url = format!("{}/echo", kw.gw);
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            http.get(url)
                .header("x-api-key", k)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (17, 23));
}

#[tokio::test]
async fn changes_apply_on_the_next_request_without_restart() {
    let kw = boot().await;
    let (id, k) = kw.key("cats", &["facts:read"], json!({})).await;
    assert_eq!(kw.get("/fact", &[("x-api-key", &k)]).await.status(), 200);
    let (s, v) = kw
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"scopes": ["other"]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    problem(kw.get("/fact", &[("x-api-key", &k)]).await, 403, "insufficient_scope").await;
    let (s, _) = kw
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"scopes": ["facts:read"], "rate": {"limit": "1/min"}})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(kw.get("/fact", &[("x-api-key", &k)]).await.status(), 200);
    problem(kw.get("/fact", &[("x-api-key", &k)]).await, 429, "rate_limited").await;
    let (s, v) = kw
        .admin(Method::PATCH, &format!("/v1/keys/{id}"), Some(json!({"rate": null})))
        .await;
    assert_eq!(s, 200);
    assert!(v["policy"].get("rate").is_none(), "{v}");
    assert_eq!(kw.get("/fact", &[("x-api-key", &k)]).await.status(), 200);
    let (s, _) = kw
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"ips": ["192.0.2.1"]})),
        )
        .await;
    assert_eq!(s, 200);
    problem(kw.get("/fact", &[("x-api-key", &k)]).await, 403, "ip_not_allowed").await;
    let (_, shown) = kw.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(shown["policy"]["ips"], json!(["192.0.2.1/32"]));
    assert_eq!(shown["scopes"], json!(["facts:read"]));
}

/// Issue 3, point 8, through the gateway: 2× offered load for 10 s (virtual time) admits
/// within 1% of what GCRA allows.
#[tokio::test]
async fn gateway_limit_accuracy_at_twice_the_rate() {
    let kw = boot().await;
    let (_, k) = kw
        .key("cats", &[], json!({"rate": {"limit": "50/s", "burst": 5}}))
        .await;
    let mut admitted = 0u32;
    for _ in 0..1000 {
        match kw.get("/echo", &[("x-api-key", &k)]).await.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
        kw.clock.advance(time::Duration::milliseconds(10));
    }
    let expected = 5.0 + 50.0 * 10.0;
    let err = (f64::from(admitted) - expected).abs() / expected;
    assert!(err <= 0.01, "admitted {admitted}, GCRA allows {expected}");
}

#[tokio::test]
async fn malformed_limits_are_refused_clearly() {
    let kw = boot().await;
    kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    for rate in [
        "0/min",
        "-1/s",
        "10/fortnight",
        "99999999999999999999/s",
        "ten/s",
        "",
        "5",
    ] {
        let (s, v) = kw
            .admin(
                Method::POST,
                "/v1/keys",
                Some(json!({"app": "cats", "rate": {"limit": rate}})),
            )
            .await;
        assert_eq!(s, 422, "{rate}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("rate"), "{v}");
    }
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"app": "cats", "rate": {"limit": "1/s", "burst": 0}})),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"app": "cats", "rate": {"limit": "1/s", "burst": -1}})),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"app": "cats", "rate": "100/min"})),
        )
        .await;
    assert_eq!(s, 422);
    for quota in [
        "0/day",
        "-1/month",
        "10/fortnight",
        "1/100ms",
        "184467440737095516160/day",
    ] {
        let (s, v) = kw
            .admin(Method::POST, "/v1/keys", Some(json!({"app": "cats", "quota": quota})))
            .await;
        assert_eq!(s, 422, "{quota}: {v}");
    }
    for scopes in [json!([""]), json!(["ok", ""])] {
        let (s, _) = kw
            .admin(Method::POST, "/v1/keys", Some(json!({"app": "cats", "scopes": scopes})))
            .await;
        assert_eq!(s, 422);
    }
    kw.key("cats", &[], json!({})).await;
    let (_, list) = kw.admin(Method::GET, "/v1/keys", None).await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    for body in [
        json!({"bogus": 1}),
        json!({"rate": {"limit": "0/s"}}),
        json!({"ips": ["::1%lo"]}),
        json!({"scopes": [""]}),
        json!([1, 2]),
    ] {
        let (s, v) = kw
            .admin(Method::PATCH, &format!("/v1/keys/{id}"), Some(body.clone()))
            .await;
        assert_eq!(s, 422, "{body}: {v}");
    }
    let (s, _) = kw.admin(Method::PATCH, "/v1/keys/key_nope", Some(json!({}))).await;
    assert_eq!(s, 404);
    let (s, _) = kw.admin(Method::PATCH, "/v1/apps/nope", Some(json!({}))).await;
    assert_eq!(s, 404);
}

/// Issue 22, point 9: the `r` of every answer is exactly how many requests would be admitted
/// at that moment. N/min with burst N counts N-1 … 0 with exact `t`; the 429 says `r=0` and
/// `t=60`; and a refusal by one limit reports the others as they are (nothing was consumed):
/// 8 left on the key is `r=8`, not 7.
#[tokio::test]
async fn remaining_is_exact_at_the_boundary() {
    let kw = boot().await;
    let (_, k) = kw.key("cats", &[], json!({"rate": {"limit": "7/min"}})).await;
    for i in 0..7u64 {
        let r = kw.get("/echo", &[("x-api-key", &k)]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-policy").unwrap(), "\"key\";q=7;w=60");
        // After i + 1 requests the bucket is full again in (i + 1) × 60/7 s, rounded up.
        let t = ((i + 1) * 60).div_ceil(7);
        assert_eq!(header(&r, "ratelimit").unwrap(), format!("\"key\";r={};t={t}", 6 - i));
    }
    let r = kw.get("/echo", &[("x-api-key", &k)]).await;
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"key\";r=0;t=60");
    assert_eq!(header(&r, "retry-after").unwrap(), "9", "60/7 s, rounded up");
    problem(r, 429, "rate_limited").await;

    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "narrow", "rate": {"limit": "2/min"}})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, a) = kw
        .key("narrow", &[], json!({"rate": {"limit": "10/min"}, "quota": "10/day"}))
        .await;
    for _ in 0..2 {
        assert_eq!(kw.get("/echo", &[("x-api-key", &a)]).await.status(), 200);
    }
    let r = kw.get("/echo", &[("x-api-key", &a)]).await;
    let rl = header(&r, "ratelimit").unwrap();
    assert!(rl.contains("\"key\";r=8;"), "{rl}");
    assert!(rl.contains("\"app\";r=0;t=60"), "{rl}");
    assert!(rl.contains("\"key-quota\";r=8;"), "{rl}");
    problem(r, 429, "rate_limited").await;
}

/// Issue 22, point 8: `week` is a unit of rates (7 days) and quotas (ISO weeks), and a bad
/// unit is refused with the exact list of accepted forms.
#[tokio::test]
async fn weekly_limits_and_bad_units_name_the_accepted_forms() {
    let kw = boot().await;
    let (id, k) = kw
        .key("cats", &[], json!({"rate": {"limit": "700/week"}, "quota": "10/week"}))
        .await;
    let (s, v) = kw.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["policy"]["quota"], "10/week", "{v}");
    assert_eq!(v["policy"]["rate"]["limit"], "700/week", "{v}");
    let r = kw.get("/echo", &[("x-api-key", &k)]).await;
    assert_eq!(r.status(), 200);
    let policy = header(&r, "ratelimit-policy").unwrap();
    assert!(policy.contains("\"key-quota\";q=10;w=604800"), "{policy}");
    let quota_units = keyward_core::policy::QUOTA_UNITS;
    let rate_units = keyward_core::policy::RATE_UNITS;
    for unit in ["fortnight", "weeks", "year", "Week"] {
        let (s, v) = kw
            .admin(
                Method::POST,
                "/v1/keys",
                Some(json!({"app": "cats", "quota": format!("10/{unit}")})),
            )
            .await;
        assert_eq!(s, 422, "{v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("the unit must be {quota_units}")), "{detail}");
        assert!(detail.contains("month") && detail.contains("week"), "{detail}");
        let (s, v) = kw
            .admin(
                Method::PATCH,
                &format!("/v1/keys/{id}"),
                Some(json!({"rate": {"limit": format!("10/{unit}")}})),
            )
            .await;
        assert_eq!(s, 422, "{v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("the unit must be {rate_units}")), "{detail}");
    }
    // A rate has no calendar month: refused, and the list says what is accepted instead.
    let (s, v) = kw
        .admin(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "monthly", "rate": {"limit": "10/month"}})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains(rate_units), "{v}");
}

/// Issue 22, point 10: with a quota of 5/day and a rate of 10/hour, 3 requests on the old key,
/// then a rotation (on `nodes[0]`): the successor has 2 left, not 5, and so has the old key
/// during its grace period, because both draw from one budget; the rate is shared the same
/// way. Requests go round the nodes (one node locally; a cluster with Redis).
pub(crate) async fn rotation_keeps_the_limits(nodes: &[Kw]) {
    let admin = &nodes[0];
    let node = |i: usize| &nodes[i % nodes.len()];
    let (id, old) = admin
        .key("rotating", &[], json!({"quota": "5/day", "rate": {"limit": "10/hour"}}))
        .await;
    for i in 0..3 {
        let r = node(i).get("/echo", &[("x-api-key", &old)]).await;
        assert_eq!(r.status(), 200);
        let rl = header(&r, "ratelimit").unwrap();
        assert!(rl.contains(&format!("\"key-quota\";r={};", 4 - i)), "{rl}");
    }
    let (s, v) = admin
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let new = v["key"].as_str().unwrap().to_owned();
    let new_id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        v["limit_id"],
        id.as_str(),
        "the successor names the key it counts with: {v}"
    );
    let r = node(1).get("/echo", &[("x-api-key", &new)]).await;
    assert_eq!(r.status(), 200);
    let rl = header(&r, "ratelimit").unwrap();
    assert!(
        rl.contains("\"key-quota\";r=1;"),
        "the successor inherits 2, uses 1: {rl}"
    );
    assert!(rl.contains("\"key\";r=6;"), "and the rate's 4 earlier requests: {rl}");
    // The old key, in its grace period, draws from the same budget.
    let r = node(2).get("/echo", &[("x-api-key", &old)]).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "ratelimit").unwrap().contains("\"key-quota\";r=0;"));
    for (i, k) in [&new, &old].into_iter().enumerate() {
        let v = problem(node(i).get("/echo", &[("x-api-key", k)]).await, 429, "quota_exhausted").await;
        assert!(v["detail"].as_str().unwrap().contains("quota"), "{v}");
    }
    // Rotating the successor again keeps the chain's budget (still exhausted today).
    let (s, v) = admin
        .admin(
            Method::POST,
            &format!("/v1/keys/{new_id}/rotate"),
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["limit_id"], id.as_str(), "{v}");
    let third = v["key"].as_str().unwrap().to_owned();
    problem(
        node(0).get("/echo", &[("x-api-key", &third)]).await,
        429,
        "quota_exhausted",
    )
    .await;
    // Another key of the same app is not affected.
    let (_, other) = admin.key("rotating", &[], json!({"quota": "5/day"})).await;
    assert_eq!(node(1).get("/echo", &[("x-api-key", &other)]).await.status(), 200);
}

#[tokio::test]
async fn rotation_keeps_the_limits_locally() {
    let kw = boot().await;
    rotation_keeps_the_limits(std::slice::from_ref(&kw)).await;
}
