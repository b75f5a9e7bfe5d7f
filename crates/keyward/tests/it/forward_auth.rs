//! Forward-auth (issue 10 points 2, 3 and 5): the conventions of nginx `auth_request`,
//! Traefik `forwardAuth` and Envoy `ext_authz`, hostile input, and a real nginx running
//! `examples/nginx/keyward-auth-request.conf`.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

async fn boot_fa(trusted: &[&str], tweak: impl FnOnce(&mut keyward::config::Config)) -> Kw {
    let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
    boot_with(move |c| {
        c.verify.listen = Some("127.0.0.1:0".parse().unwrap());
        c.gateway.trusted_proxies = trusted;
        tweak(c);
    })
    .await
}

/// A forward-auth call as a proxy makes it.
async fn fa(kw: &Kw, method: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = kw.http.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{}", kw.verify.as_deref().unwrap(), path),
    );
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

/// A response header; several values joined with `, `.
fn h(r: &reqwest::Response, name: &str) -> Option<String> {
    let all: Vec<&str> = r.headers().get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
    (!all.is_empty()).then(|| all.join(", "))
}

#[tokio::test]
async fn nginx_traefik_and_envoy_conventions() {
    let kw = boot_fa(&[], |_| {}).await;
    let (id, read) = kw.key("cats", &["facts:read"], json!({})).await;

    // nginx auth_request: X-Original-Method / X-Original-URI.
    let r = fa(
        &kw,
        "GET",
        "/v1/forward-auth",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/facts?limit=2"),
            ("x-api-key", &read),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-keyward-app").as_deref(), Some("cats"));
    assert_eq!(h(&r, "x-keyward-key-id"), Some(id.clone()));
    assert_eq!(h(&r, "x-keyward-scopes").as_deref(), Some("facts:read"));
    assert_eq!(h(&r, "x-keyward-client-ip").as_deref(), Some("127.0.0.1"));
    assert!(h(&r, "x-keyward-app-id").unwrap().starts_with("app_"));

    // Traefik forwardAuth: X-Forwarded-Method / X-Forwarded-Uri; the key as a Bearer value.
    let bearer = format!("Bearer {read}");
    let t = [
        ("x-forwarded-method", "POST"),
        ("x-forwarded-uri", "/facts"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "api.example"),
        ("authorization", bearer.as_str()),
    ];
    let r = fa(&kw, "GET", "/v1/forward-auth", &t).await;
    assert_eq!(h(&r, "x-keyward-code").as_deref(), Some("insufficient_scope"));
    let v = problem(r, 403, "insufficient_scope").await;
    assert_eq!(v["missing_scopes"], json!(["facts:write"]));
    let r = fa(
        &kw,
        "GET",
        "/v1/forward-auth",
        &[t[0], ("x-forwarded-uri", "/fact"), t[4]],
    )
    .await;
    assert_eq!(r.status(), 405, "POST /fact: the route only takes GET");

    // Envoy ext_authz (HTTP): the original method, the path after the prefix.
    let r = fa(
        &kw,
        "GET",
        "/v1/forward-auth/envoy/facts?limit=1",
        &[("x-api-key", &read)],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = fa(&kw, "POST", "/v1/forward-auth/envoy/facts", &[("x-api-key", &read)]).await;
    problem(r, 403, "insufficient_scope").await;
    let r = fa(&kw, "GET", "/v1/forward-auth/envoy", &[("x-api-key", &read)]).await;
    assert_eq!(r.status(), 200, "no route for / : authentication only");

    // No credential: 401 with the challenges; the code in a header for nginx.
    let r = fa(&kw, "GET", "/v1/forward-auth/envoy/fact", &[]).await;
    assert!(h(&r, "www-authenticate").unwrap().contains("ApiKey"));
    assert_eq!(h(&r, "x-keyward-code").as_deref(), Some("missing_credential"));
    problem(r, 401, "missing_credential").await;

    // Scopes and cost for paths without a route come from the forward-auth URL (the proxy's
    // configuration), never from the client.
    let o = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/other"),
        ("x-api-key", &read),
    ];
    assert_eq!(
        fa(&kw, "GET", "/v1/forward-auth?scope=facts:read", &o).await.status(),
        200
    );
    let r = fa(&kw, "GET", "/v1/forward-auth?scope=facts:write", &o).await;
    problem(r, 403, "insufficient_scope").await;
    let r = fa(&kw, "GET", "/v1/forward-auth?route=facts-write", &o).await;
    problem(r, 403, "insufficient_scope").await;
    let mut spoof = o.to_vec();
    spoof.push(("x-keyward-scopes", ""));
    let r = fa(&kw, "GET", "/v1/forward-auth?scope=facts:write", &spoof).await;
    assert_eq!(r.status(), 403);

    // Rate limited: 429 with Retry-After and RateLimit fields.
    let (_, limited) = kw
        .key("cats", &["facts:read"], json!({"rate": {"limit": "1/min", "burst": 1}}))
        .await;
    let l = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/fact"),
        ("x-api-key", &limited),
    ];
    let r = fa(&kw, "GET", "/v1/forward-auth", &l).await;
    assert_eq!(r.status(), 200);
    assert!(h(&r, "ratelimit").unwrap().contains("r=0"));
    let r = fa(&kw, "GET", "/v1/forward-auth", &l).await;
    assert!(h(&r, "retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(h(&r, "ratelimit-policy").is_some());
    problem(r, 429, "rate_limited").await;
    // ...and the gateway sees the same limit.
    assert_eq!(kw.get("/fact", &[("x-api-key", &limited)]).await.status(), 429);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // keyward does not trust loopback as a proxy: X-Forwarded-For is ignored.
    let kw = boot_fa(&[], |_| {}).await;
    let (_, here) = kw.key("cats", &[], json!({"ips": ["127.0.0.1"]})).await;
    let (_, there) = kw.key("cats", &[], json!({"ips": ["203.0.113.0/24"]})).await;
    let kwr = &kw;
    let call = |key: String| async move {
        fa(
            kwr,
            "GET",
            "/v1/forward-auth",
            &[
                ("x-original-method", "GET"),
                ("x-original-uri", "/echo"),
                ("x-forwarded-for", "203.0.113.9"),
                ("forwarded", "for=203.0.113.9"),
                ("x-real-ip", "203.0.113.9"),
                ("x-api-key", &key),
            ],
        )
        .await
    };
    let r = call(here.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-keyward-client-ip").as_deref(), Some("127.0.0.1"));
    problem(call(there.clone()).await, 403, "ip_not_allowed").await;

    // Trusted: the proxy's X-Forwarded-For names the client.
    let kw2 = boot_fa(&["127.0.0.1/32"], |_| {}).await;
    let (_, there) = kw2.key("cats", &[], json!({"ips": ["203.0.113.0/24"]})).await;
    let r = fa(
        &kw2,
        "GET",
        "/v1/forward-auth",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/echo"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-api-key", &there),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-keyward-client-ip").as_deref(), Some("203.0.113.9"));
    // A client's own Forwarded header (which proxies pass on untouched) is never read.
    let r = fa(
        &kw2,
        "GET",
        "/v1/forward-auth",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/echo"),
            ("forwarded", "for=203.0.113.9"),
            ("x-forwarded-for", "198.51.100.4"),
            ("x-api-key", &there),
        ],
    )
    .await;
    assert_eq!(h(&r, "x-keyward-client-ip").as_deref(), None);
    problem(r, 403, "ip_not_allowed").await;
}

#[tokio::test]
async fn only_allowed_proxies_may_ask() {
    let kw = boot_fa(&[], |c| c.verify.forward_auth_peers = vec!["192.0.2.0/24".into()]).await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let hs = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/echo"),
        ("x-api-key", key.as_str()),
    ];
    problem(
        fa(&kw, "GET", "/v1/forward-auth", &hs).await,
        403,
        "forward_auth_forbidden",
    )
    .await;

    let kw = boot_fa(&[], |c| c.verify.forward_auth_require_token = true).await;
    let (_, key) = kw.key("cats", &[], json!({})).await;
    let mut hs = vec![
        ("x-original-method", "GET"),
        ("x-original-uri", "/echo"),
        ("x-api-key", key.as_str()),
    ];
    problem(
        fa(&kw, "GET", "/v1/forward-auth", &hs).await,
        401,
        "verify_unauthorized",
    )
    .await;
    hs.push(("x-keyward-verify-token", ADMIN_TOKEN));
    problem(
        fa(&kw, "GET", "/v1/forward-auth", &hs).await,
        401,
        "verify_unauthorized",
    )
    .await;
    hs.pop();
    hs.push(("x-keyward-verify-token", VERIFY_TOKEN));
    assert_eq!(fa(&kw, "GET", "/v1/forward-auth", &hs).await.status(), 200);

    // The verify listener also serves the JSON API, and nothing else.
    let r = kw
        .http
        .post(format!("{}/v1/verify", kw.verify.as_deref().unwrap()))
        .bearer_auth(VERIFY_TOKEN)
        .json(&json!({"key": key, "path": "/echo", "client_ip": "127.0.0.1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = fa(
        &kw,
        "GET",
        "/v1/keys",
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn hostile_forward_auth_input_is_4xx_never_5xx() {
    let kw = boot_fa(&[], |_| {}).await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let long = format!("/{}", "a".repeat(10 * 1024));
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], 400, "invalid_verify_request"),
        (vec![("x-original-uri", "/fact")], 400, "invalid_verify_request"),
        (vec![("x-original-method", "GET")], 400, "invalid_verify_request"),
        (
            vec![("x-original-method", "G ET"), ("x-original-uri", "/fact")],
            400,
            "invalid_verify_request",
        ),
        (
            vec![("x-original-method", "GET"), ("x-original-uri", "fact")],
            400,
            "invalid_verify_request",
        ),
        (
            vec![("x-original-method", "GET"), ("x-original-uri", &long)],
            400,
            "invalid_verify_request",
        ),
        (
            vec![("x-original-method", "GET"), ("x-original-uri", "/a/../fact")],
            400,
            "invalid_path",
        ),
        (
            vec![("x-original-method", "GET"), ("x-original-uri", "/a/%2E%2E/fact")],
            400,
            "invalid_path",
        ),
        (
            vec![("x-original-method", "GET"), ("x-original-uri", "/fact%2f..%2fadmin")],
            400,
            "invalid_path",
        ),
        (
            vec![("x-forwarded-method", "BREW"), ("x-forwarded-uri", "/fact")],
            405,
            "method_not_allowed",
        ),
        // A client behind Traefik forging nginx's headers (or the reverse) is refused.
        (
            vec![
                ("x-original-method", "GET"),
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/facts"),
            ],
            400,
            "invalid_verify_request",
        ),
        (
            vec![
                ("x-original-uri", "/fact"),
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/facts"),
            ],
            400,
            "invalid_verify_request",
        ),
        (
            vec![
                ("x-original-method", "GET"),
                ("x-original-uri", "/fact"),
                ("x-original-uri", "/echo"),
            ],
            400,
            "invalid_verify_request",
        ),
    ];
    for (headers, status, code) in cases {
        let mut hs = headers.clone();
        hs.push(("x-api-key", &key));
        let r = fa(&kw, "GET", "/v1/forward-auth", &hs).await;
        assert_eq!(h(&r, "x-keyward-code").as_deref(), Some(code), "{headers:?}");
        problem(r, status, code).await;
    }
    // Encoded NUL: bytes like any other.
    let hs = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/fact/%00"),
        ("x-api-key", &key),
    ];
    assert_eq!(fa(&kw, "GET", "/v1/forward-auth", &hs).await.status(), 200);
    // Bad forward-auth URL options.
    let hs = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/x"),
        ("x-api-key", &key),
    ];
    for q in ["?cost=0", "?cost=x", "?scope=a%20b%00", "?what=1", "?route=nope"] {
        let r = fa(&kw, "GET", &format!("/v1/forward-auth{q}"), &hs).await;
        assert_eq!(r.status(), 400, "{q}");
    }
    // Raw bytes: a NUL or a non-ASCII byte in a header never reaches a 5xx.
    let addr = kw.verify.clone().unwrap();
    for raw_req in [
        &b"GET /v1/forward-auth HTTP/1.1\r\nhost: x\r\nx-original-method: GET\r\nx-original-uri: /fact\xff\r\nconnection: close\r\n\r\n"[..],
        b"GET /v1/forward-auth HTTP/1.1\r\nhost: x\r\nx-original-method: GE\x01T\r\nx-original-uri: /fact\r\nconnection: close\r\n\r\n",
        b"GET /v1/forward-auth/envoy/%2e%2e/fact HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"BREW /v1/forward-auth/envoy/fact HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    ] {
        let out = raw(&addr, raw_req).await;
        let s = status_of(&out);
        assert!((400..500).contains(&s), "{s}: {out}");
    }
}

// ---- a real nginx ---------------------------------------------------------------------------

/// The nginx binary: `KEYWARD_TEST_NGINX` (then it must work), else `nginx` on the usual paths
/// (else the test is skipped with a line saying so).
fn nginx_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("KEYWARD_TEST_NGINX") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "KEYWARD_TEST_NGINX={} does not exist", p.display());
        return Some(p);
    }
    [
        "/usr/sbin/nginx",
        "/usr/bin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/bin/nginx",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

struct Nginx {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_nginx(bin: &PathBuf, upstream_port: u16, keyward_port: u16) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().display().to_string();
    let port = free_port();
    let template = include_str!("../../../../examples/nginx/keyward-auth-request.conf");
    let conf = template
        .replace("@PREFIX@", &prefix)
        .replace("@PORT@", &port.to_string())
        .replace("@UPSTREAM_PORT@", &upstream_port.to_string())
        .replace("@KEYWARD_PORT@", &keyward_port.to_string());
    let placeholder = |l: &str| {
        l.split('@')
            .skip(1)
            .any(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
    };
    assert!(
        !conf.lines().any(|l| !l.trim_start().starts_with('#') && placeholder(l)),
        "a placeholder is left in the example"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let mut nginx = Nginx {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return nginx;
        }
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx exited ({status}): {log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not listen on {port}");
}

#[tokio::test]
async fn real_nginx_auth_request() {
    let Some(bin) = nginx_binary() else {
        println!("skipped: no nginx binary (apt-get install nginx-light, or set KEYWARD_TEST_NGINX)");
        return;
    };
    let mut kw = boot_fa(&["127.0.0.1/32"], |_| {}).await;
    let keyward_port: u16 = kw
        .verify
        .as_deref()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let nginx = start_nginx(&bin, kw.up.addr.port(), keyward_port).await;
    let (id, read) = kw.key("cats", &["facts:read"], json!({})).await;
    let http = kw.http.clone();
    let base = nginx.url.clone();
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let mut r = http.get(format!("{base}{path}"));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let json_of = |r: reqwest::Response| async move {
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        r.json::<Value>().await.unwrap()
    };

    // 401: no key, with keyward's challenge.
    let r = get("/fact", vec![]).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        h(&r, "www-authenticate").is_some_and(|v| v.contains("realm=\"keyward\"")),
        "{:?}",
        r.headers()
    );
    assert_eq!(json_of(r).await["code"], "missing_credential");
    // 401: a mistyped key.
    let r = get("/fact", vec![("x-api-key", "s3cr3t-static".into())]).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json_of(r).await["code"], "malformed_credential");
    // 403: the key lacks the route's scope.
    let r = kw
        .http
        .post(format!("{}/facts", nginx.url))
        .header("x-api-key", &read)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(json_of(r).await["code"], "insufficient_scope");
    assert_eq!(kw.up.seen.count(), 0, "nothing refused reached the upstream");

    // 200: identity reaches the upstream, the key does not, client X-Keyward-* are replaced.
    let r = get(
        "/fact?x=1",
        vec![
            ("x-api-key", read.clone()),
            ("x-keyward-app", "spoofed".into()),
            ("x-keyward-client-id", "spoofed".into()),
            ("forwarded", "for=203.0.113.9".into()),
            ("x-forwarded-for", "203.0.113.9".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let seen = kw.up.seen.last();
    assert_eq!(seen[":path"], vec!["/fact?x=1".to_owned()]);
    assert_eq!(seen["x-keyward-app"], vec!["cats".to_owned()]);
    assert_eq!(seen["x-keyward-key-id"], vec![id.clone()]);
    assert_eq!(seen["x-keyward-scopes"], vec!["facts:read".to_owned()]);
    assert_eq!(seen["x-keyward-client-ip"], vec!["127.0.0.1".to_owned()]);
    assert!(seen["x-keyward-app-id"][0].starts_with("app_"));
    assert!(!seen.contains_key("x-api-key"), "{seen:?}");
    assert!(!seen.contains_key("x-keyward-client-id"), "{seen:?}");

    // 429 through nginx: the status, Retry-After and RateLimit fields the client sees.
    let (_, limited) = kw
        .key("cats", &["facts:read"], json!({"rate": {"limit": "1/min", "burst": 1}}))
        .await;
    let r = get("/fact", vec![("x-api-key", limited.clone())]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        h(&r, "ratelimit").is_some_and(|v| v.contains("r=0")),
        "{:?}",
        r.headers()
    );
    assert!(h(&r, "ratelimit-policy").is_some());
    let r = get("/fact", vec![("x-api-key", limited.clone())]).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(h(&r, "retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(h(&r, "ratelimit").is_some());
    assert_eq!(json_of(r).await["code"], "rate_limited");

    // keyward gone: 503 from nginx, never the upstream.
    let before = kw.up.seen.count();
    kw.stop().await;
    let r = get("/fact", vec![("x-api-key", read.clone())]).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(kw.up.seen.count(), before);
}

// ---- cached decisions (issue 21, point 3) ------------------------------------------------------

/// A route like `fact` (GET, `facts:read`) at `/cached` with `decision_cache = ttl`.
fn cached_route(c: &keyward::config::Config, ttl: Duration) -> keyward::config::RouteSection {
    let mut r = c.routes.iter().find(|r| r.name == "fact").unwrap().clone();
    r.name = "cached".into();
    r.path_prefix = "/cached".into();
    r.decision_cache = Some(ttl);
    r
}

#[tokio::test]
async fn decision_cache_marks_only_plain_allowed_answers_reusable() {
    let kw = boot_fa(&[], |c| {
        let r = cached_route(c, Duration::from_secs(5));
        c.routes.push(r);
    })
    .await;
    let (_, read) = kw.key("cats", &["facts:read"], json!({})).await;
    let nginx = |uri: &str, key: &str| {
        vec![
            ("x-original-method".to_owned(), "GET".to_owned()),
            ("x-original-uri".to_owned(), uri.to_owned()),
            ("x-api-key".to_owned(), key.to_owned()),
        ]
    };
    let ask = |path: &'static str, headers: Vec<(String, String)>| {
        let mut r = kw.http.get(format!("{}{}", kw.verify.as_deref().unwrap(), path));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let no_store = |r: &reqwest::Response| {
        assert_eq!(h(r, "cache-control").as_deref(), Some("no-store"), "{:?}", r.headers());
        assert!(
            h(r, "x-accel-expires").is_none() && h(r, "vary").is_none(),
            "{:?}",
            r.headers()
        );
    };

    // Allowed on a decision_cache route: reusable for 5 s, varying on the credential headers
    // and the client address.
    let r = ask("/v1/forward-auth", nginx("/cached/1", &read)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "cache-control").as_deref(), Some("private, max-age=5"));
    assert_eq!(h(&r, "x-accel-expires").as_deref(), Some("5"));
    assert_eq!(
        h(&r, "vary").as_deref(),
        Some("x-api-key, authorization, x-forwarded-for")
    );
    // Named as the route (`?route=`) too; Envoy's HTTP mode as well.
    let r = ask("/v1/forward-auth?route=cached", nginx("/other", &read))
        .await
        .unwrap();
    assert_eq!(h(&r, "cache-control").as_deref(), Some("private, max-age=5"));
    let r = ask(
        "/v1/forward-auth/envoy/cached",
        vec![("x-api-key".into(), read.clone())],
    )
    .await
    .unwrap();
    assert_eq!(h(&r, "cache-control").as_deref(), Some("private, max-age=5"));

    // Never reusable: routes without decision_cache, ad-hoc scopes, refusals.
    let r = ask("/v1/forward-auth", nginx("/fact", &read)).await.unwrap();
    assert_eq!(r.status(), 200);
    no_store(&r);
    let r = ask("/v1/forward-auth?scope=facts:read", nginx("/nowhere", &read))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    no_store(&r);
    let (_, other) = kw.key("cats", &["other:read"], json!({})).await;
    let r = ask("/v1/forward-auth", nginx("/cached", &other)).await.unwrap();
    assert_eq!(r.status(), 403);
    no_store(&r);
    let r = ask("/v1/forward-auth", nginx("/cached", "kw_live_nope")).await.unwrap();
    assert_eq!(r.status(), 401);
    no_store(&r);
    // Keys whose decision counts or depends on more than the key: limits (of the key or its
    // app), an address allowlist.
    for extra in [
        json!({"rate": {"limit": "100/min", "burst": 100}}),
        json!({"quota": "1000/day"}),
        json!({"ips": ["127.0.0.0/8"]}),
    ] {
        let (_, k) = kw.key("cats", &["facts:read"], extra.clone()).await;
        let r = ask("/v1/forward-auth", nginx("/cached", &k)).await.unwrap();
        assert_eq!(r.status(), 200, "{extra}");
        no_store(&r);
    }
    let (s, _) = kw
        .admin(
            Method::POST,
            "/v1/apps",
            Some(json!({"name": "metered", "rate": {"limit": "100/min"}})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, app_limited) = kw.key("metered", &["facts:read"], json!({})).await;
    let r = ask("/v1/forward-auth", nginx("/cached", &app_limited)).await.unwrap();
    assert_eq!(r.status(), 200);
    no_store(&r);
    // A key about to expire: no longer than it lives.
    let (_, short) = kw.key("cats", &["facts:read"], json!({"expires_in": "3s"})).await;
    let r = ask("/v1/forward-auth", nginx("/cached", &short)).await.unwrap();
    assert_eq!(r.status(), 200);
    let cc = h(&r, "cache-control").unwrap();
    let age: u64 = cc.strip_prefix("private, max-age=").unwrap().parse().unwrap();
    assert!((1..=3).contains(&age), "{cc}");
}

/// Usage totals of a key (the admin API writes the pending counters first).
async fn totals(kw: &Kw, id: &str) -> Value {
    let (s, u) = kw
        .admin(Method::GET, &format!("/v1/usage?key={id}&since=1h"), None)
        .await;
    assert_eq!(s, 200, "{u}");
    u["totals"].clone()
}

#[tokio::test]
async fn real_nginx_caches_decisions_no_longer_than_the_route_says() {
    let Some(bin) = nginx_binary() else {
        println!("skipped: no nginx binary (apt-get install nginx-light, or set KEYWARD_TEST_NGINX)");
        return;
    };
    const TTL: u64 = 5;
    let kw = boot_fa(&["127.0.0.1/32"], |c| {
        let r = cached_route(c, Duration::from_secs(TTL));
        c.routes.push(r);
    })
    .await;
    let keyward_port: u16 = kw
        .verify
        .as_deref()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let nginx = start_nginx(&bin, kw.up.addr.port(), keyward_port).await;
    let get = |path: &str, key: &str| {
        kw.http
            .get(format!("{}{path}", nginx.url))
            .header("x-api-key", key)
            .send()
    };

    // A route without decision_cache: keyward is asked every time.
    let (plain_id, plain) = kw.key("cats", &["facts:read"], json!({})).await;
    for _ in 0..3 {
        assert_eq!(get("/fact", &plain).await.unwrap().status(), 200);
    }
    assert_eq!(totals(&kw, &plain_id).await, json!({"allowed": 3}));
    // Refusals are never cached, on a decision_cache route either.
    let (other_id, other) = kw.key("cats", &["other:read"], json!({})).await;
    for _ in 0..3 {
        assert_eq!(get("/cached", &other).await.unwrap().status(), 403);
    }
    assert_eq!(totals(&kw, &other_id).await, json!({"denied:insufficient_scope": 3}));
    // Nor the answers of a limited key.
    let (limited_id, limited) = kw
        .key(
            "cats",
            &["facts:read"],
            json!({"rate": {"limit": "100/min", "burst": 100}}),
        )
        .await;
    for _ in 0..3 {
        assert_eq!(get("/cached", &limited).await.unwrap().status(), 200);
    }
    assert_eq!(totals(&kw, &limited_id).await, json!({"allowed": 3}));

    // The cache hit: five requests (other paths under the route, other queries), keyward asked
    // once per path; the upstream got the identity every time, from the cached answer.
    let (id, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let seen_before = kw.up.seen.count();
    for path in ["/cached", "/cached?page=2", "/cached", "/cached/1", "/cached/1?x=y"] {
        let r = get(path, &key).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let seen = kw.up.seen.last();
        assert_eq!(seen["x-keyward-key-id"], vec![id.clone()], "{path}: {seen:?}");
        assert_eq!(seen["x-keyward-app"], vec!["cats".to_owned()], "{path}");
        assert!(!seen.contains_key("x-api-key"), "{path}: {seen:?}");
    }
    assert_eq!(kw.up.seen.count(), seen_before + 5);
    assert_eq!(
        totals(&kw, &id).await,
        json!({"allowed": 2}),
        "keyward decided once per path, nginx answered the rest from its cache"
    );
    // Another key is another cache entry.
    let (id2, key2) = kw.key("cats", &["facts:read"], json!({})).await;
    assert_eq!(get("/cached", &key2).await.unwrap().status(), 200);
    assert_eq!(totals(&kw, &id2).await, json!({"allowed": 1}));

    // The bound: revoked, the key still passes nginx from its cache (the trade-off), and is
    // refused at the latest TTL + 1 s after the revocation. nginx keeps time in whole seconds:
    // an entry stored at t lives until floor(t) + TTL + 1 at most, so a revocation just after
    // the store is reached after up to TTL + 1 s. Revoking half a second after the store keeps
    // the 50 ms polling and the requests' own time inside that bound.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, _) = kw
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(s, 200);
    let revoked = std::time::Instant::now();
    assert_eq!(
        get("/cached", &key).await.unwrap().status(),
        200,
        "within the TTL the cached answer is reused: that is what decision_cache trades"
    );
    let refused_after = loop {
        let sent = revoked.elapsed();
        let r = get("/cached", &key).await.unwrap();
        if r.status() != 200 {
            assert_eq!(r.status(), 401);
            assert_eq!(h(&r, "content-type").as_deref(), Some("application/problem+json"));
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["code"], "revoked_credential", "{v}");
            break sent;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(TTL + 3),
            "still allowed {:?} after the revocation",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "decision_cache = {TTL}s: the revoked key was refused through nginx {refused_after:?} after the revocation"
    );
    assert!(
        refused_after <= Duration::from_secs(TTL + 1),
        "refused only {refused_after:?} after the revocation (TTL {TTL} s + 1 s)"
    );
    // From then on keyward is asked (refusals are not cached).
    let t = totals(&kw, &id).await;
    assert_eq!(t["allowed"], 2, "{t}");
    assert_eq!(t["denied:revoked"], 1, "{t}");
    assert_eq!(get("/cached", &key).await.unwrap().status(), 401);
    assert_eq!(totals(&kw, &id).await["denied:revoked"], 2);
}
