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
