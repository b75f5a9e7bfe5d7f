//! Meeting users where they run (issue 21, points 2, 4 and 5): a real Caddy running
//! `examples/caddy/Caddyfile` in front of keyward's forward-auth; RFC 9728 protected resource
//! metadata and its `resource_metadata` challenge parameter; RFC 9701 signed introspection
//! answers. The independent checks of the last two (the `mcp` SDK's RFC 9728 model and
//! discovery helpers, PyJWT against the published JWKS) are `tests/python/resource_interop.py`,
//! run by `python_resource_metadata_and_signed_introspection`.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keyward_token::{Algorithm, JwkSet};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

/// A response header; several values joined with `, `.
fn h(r: &reqwest::Response, name: &str) -> Option<String> {
    let all: Vec<&str> = r.headers().get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
    (!all.is_empty()).then(|| all.join(", "))
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---- a real Caddy ---------------------------------------------------------------------------

/// The caddy binary: `KEYWARD_TEST_CADDY` (then it must exist and run); unset, the test is
/// skipped with a line saying so.
fn caddy_binary() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("KEYWARD_TEST_CADDY").filter(|p| !p.is_empty())?);
    assert!(p.exists(), "KEYWARD_TEST_CADDY={} does not exist", p.display());
    Some(p)
}

struct Caddy {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Caddy {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_caddy(bin: &PathBuf, upstream_port: u16, keyward_port: u16) -> Caddy {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let template = include_str!("../../../../examples/caddy/Caddyfile");
    let conf = template
        .replace("@STORAGE@", &dir.path().join("storage").display().to_string())
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
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, conf).unwrap();
    let log = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
    // Caddy's own files (autosaved config, data) go to the temporary directory too.
    let child = Command::new(bin)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("KEYWARD_TEST_CADDY={} does not run: {e}", bin.display()));
    let mut caddy = Caddy {
        child,
        url: format!("http://127.0.0.1:{port}"),
        dir,
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return caddy;
        }
        if let Ok(Some(status)) = caddy.child.try_wait() {
            panic!("caddy exited ({status}): {}", caddy.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("caddy did not listen on {port}: {}", caddy.log());
}

#[tokio::test]
async fn real_caddy_forward_auth() {
    let Some(bin) = caddy_binary() else {
        println!("skipped: KEYWARD_TEST_CADDY is not set (apt-get install caddy; .ci/run sets it)");
        return;
    };
    let mut kw = boot_with(|c| {
        c.verify.listen = Some("127.0.0.1:0".parse().unwrap());
        c.gateway.trusted_proxies = vec!["127.0.0.1/32".into()];
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
    let caddy = start_caddy(&bin, kw.up.addr.port(), keyward_port).await;
    let (id, read) = kw.key("cats", &["facts:read"], json!({})).await;
    let http = kw.http.clone();
    let base = caddy.url.clone();
    let send = |method: Method, path: &str, headers: Vec<(&'static str, String)>| {
        let mut r = http.request(method, format!("{base}{path}"));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };

    // 401: no key; keyward's own answer (status, challenges, problem body) through Caddy.
    let r = send(Method::GET, "/fact", vec![]).await.unwrap();
    let www = h(&r, "www-authenticate").unwrap_or_default();
    assert!(www.contains("realm=\"keyward\"") && www.contains("ApiKey"), "{www}");
    problem(r, 401, "missing_credential").await;
    // 401: a mistyped key.
    let r = send(Method::GET, "/fact", vec![("x-api-key", "s3cr3t-static".into())])
        .await
        .unwrap();
    problem(r, 401, "malformed_credential").await;
    // 403: the key lacks the route's scope (the method reaches keyward as X-Forwarded-Method).
    let r = send(
        Method::POST,
        "/facts",
        vec![("x-api-key", read.clone()), ("content-type", "application/json".into())],
    )
    .await
    .unwrap();
    let v = problem(r, 403, "insufficient_scope").await;
    assert_eq!(v["missing_scopes"], json!(["facts:write"]));
    // A client's own nginx-style headers are not passed on to contradict Caddy's.
    let r = send(
        Method::POST,
        "/facts",
        vec![
            ("x-api-key", read.clone()),
            ("x-original-method", "GET".into()),
            ("x-original-uri", "/fact".into()),
        ],
    )
    .await
    .unwrap();
    problem(r, 403, "insufficient_scope").await;
    assert_eq!(kw.up.seen.count(), 0, "nothing refused reached the upstream");

    // 200: identity reaches the upstream, the key does not, client X-Keyward-* are replaced
    // (those keyward sets) or dropped (those it does not set for a key).
    let r = send(
        Method::GET,
        "/fact?x=1",
        vec![
            ("x-api-key", read.clone()),
            ("x-keyward-app", "spoofed".into()),
            ("x-keyward-scopes", "admin".into()),
            ("x-keyward-client-id", "spoofed".into()),
            ("x-keyward-anything", "spoofed".into()),
            ("x-forwarded-for", "203.0.113.9".into()),
        ],
    )
    .await
    .unwrap();
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    let seen = kw.up.seen.last();
    assert_eq!(seen[":path"], vec!["/fact?x=1".to_owned()]);
    assert_eq!(seen["x-keyward-app"], vec!["cats".to_owned()]);
    assert_eq!(seen["x-keyward-key-id"], vec![id.clone()]);
    assert_eq!(seen["x-keyward-scopes"], vec!["facts:read".to_owned()]);
    assert_eq!(seen["x-keyward-client-ip"], vec!["127.0.0.1".to_owned()]);
    assert!(seen["x-keyward-app-id"][0].starts_with("app_"));
    assert!(!seen.contains_key("x-api-key"), "{seen:?}");
    assert!(!seen.contains_key("x-keyward-anything"), "{seen:?}");
    assert!(!seen.contains_key("x-keyward-client-id"), "{seen:?}");
    // A Bearer key: Authorization is not passed on either.
    let r = send(Method::GET, "/fact", vec![("authorization", format!("Bearer {read}"))])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = kw.up.seen.last();
    assert!(!seen.contains_key("authorization"), "{seen:?}");
    assert_eq!(seen["x-keyward-key-id"], vec![id.clone()]);

    // 429 through Caddy: the status, Retry-After and RateLimit fields the client sees.
    let (_, limited) = kw
        .key("cats", &["facts:read"], json!({"rate": {"limit": "1/min", "burst": 1}}))
        .await;
    let r = send(Method::GET, "/fact", vec![("x-api-key", limited.clone())])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(Method::GET, "/fact", vec![("x-api-key", limited.clone())])
        .await
        .unwrap();
    assert!(h(&r, "retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(
        h(&r, "ratelimit").is_some_and(|v| v.contains("r=0")),
        "{:?}",
        r.headers()
    );
    assert!(h(&r, "ratelimit-policy").is_some());
    problem(r, 429, "rate_limited").await;

    // Hostile input through Caddy: a 4xx from keyward, never the upstream, never a 5xx.
    let before = kw.up.seen.count();
    for path in ["/fact/%2e%2e/facts", "/fact%2f..%2ffacts", "/fact/../facts", "//fact"] {
        let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {read}\r\nconnection: close\r\n\r\n");
        let out = raw(&caddy.url, req.as_bytes()).await;
        let s = status_of(&out);
        assert!((400..500).contains(&s), "{path}: {out}");
    }
    let r = send(Method::GET, "/fact", vec![("x-api-key", "x".repeat(8 * 1024))])
        .await
        .unwrap();
    assert!((400..500).contains(&r.status().as_u16()), "{}", r.status());
    assert_eq!(kw.up.seen.count(), before);

    // keyward gone: Caddy answers an error itself (502), never the upstream.
    let before = kw.up.seen.count();
    kw.stop().await;
    let r = send(Method::GET, "/fact", vec![("x-api-key", read.clone())])
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "{}", caddy.log());
    assert_eq!(kw.up.seen.count(), before);
}

// ---- RFC 9728 and RFC 9701 ------------------------------------------------------------------

/// keyward with the token service: `/fact` and `/facts` take tokens (and keys), `/echo` keys only.
async fn boot_oauth() -> Kw {
    boot_with(|c| {
        c.oauth.enabled = true;
        for r in c.routes.iter_mut() {
            r.tokens = r.path_prefix.starts_with("/fact");
        }
    })
    .await
}

/// A client of the app `cats` (client_secret_basic); returns (client_id, client_secret).
async fn client(kw: &Kw, name: &str) -> (String, String) {
    kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    let b = json!({"app": "cats", "name": name, "scopes": ["facts:read", "facts:write"]});
    let (s, v) = kw.admin(Method::POST, "/v1/clients", Some(b)).await;
    assert_eq!(s, 201, "{v}");
    (
        v["client_id"].as_str().unwrap().to_owned(),
        v["client_secret"].as_str().unwrap().to_owned(),
    )
}

async fn token(kw: &Kw, id: &str, secret: &str) -> String {
    let r = kw
        .http
        .post(format!("{}/oauth/token", kw.gw))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=facts:read")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn introspect(kw: &Kw, id: &str, secret: &str, token: &str, accept: &[&[u8]]) -> reqwest::Response {
    let mut r = kw
        .http
        .post(format!("{}/oauth/introspect", kw.gw))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"));
    for a in accept {
        r = r.header("accept", reqwest::header::HeaderValue::from_bytes(a).unwrap());
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn protected_resource_metadata() {
    let kw = boot_oauth().await;
    let iss = kw.gw.clone();
    let get = |path: String| kw.http.get(format!("{}{path}", kw.gw)).send();

    // The gateway's own document: every route's scopes, header bearer tokens, DPoP algs.
    let r = get("/.well-known/oauth-protected-resource".into()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(h(&r, "content-type").unwrap().starts_with("application/json"));
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["resource"], iss);
    assert_eq!(d["authorization_servers"], json!([iss]));
    assert_eq!(d["scopes_supported"], json!(["facts:read", "facts:write"]));
    assert_eq!(d["bearer_methods_supported"], json!(["header"]));
    assert!(d["dpop_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("ES256")));
    assert_eq!(d["dpop_bound_access_tokens_required"], false);
    assert_eq!(d["tls_client_certificate_bound_access_tokens"], false);

    // A route's document (RFC 9728 §3.1): the path prefix after the well-known path; the
    // scopes of the routes with that prefix (GET /facts and POST /facts).
    let d: Value = get("/.well-known/oauth-protected-resource/facts".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["resource"], format!("{iss}/facts"));
    assert_eq!(d["scopes_supported"], json!(["facts:read", "facts:write"]));
    assert_eq!(d["keyward_audience"], "keyward");
    let d: Value = get("/.well-known/oauth-protected-resource/fact".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["resource"], format!("{iss}/fact"));
    assert_eq!(d["scopes_supported"], json!(["facts:read"]));

    // 401s of token-taking routes name their document; key-only routes do not.
    let r = kw.get("/fact/1", &[]).await;
    let www: Vec<String> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let want = format!("resource_metadata=\"{iss}/.well-known/oauth-protected-resource/fact\"");
    assert!(
        www.iter()
            .any(|c| c.starts_with("Bearer realm=\"keyward\", ") && c.contains(&want)),
        "{www:?}"
    );
    assert!(
        www.iter().any(|c| c.starts_with("DPoP ") && c.contains(&want)),
        "{www:?}"
    );
    assert!(
        www.iter()
            .any(|c| c.starts_with("ApiKey") && !c.contains("resource_metadata")),
        "{www:?}"
    );
    problem(r, 401, "missing_credential").await;
    let r = kw.get("/fact", &[("authorization", "Bearer a.b.c")]).await;
    let www = h(&r, "www-authenticate").unwrap();
    assert!(www.contains("error=\"invalid_token\"") && www.contains(&want), "{www}");
    problem(r, 401, "invalid_token").await;
    let r = kw.get("/echo", &[]).await;
    assert!(!h(&r, "www-authenticate").unwrap().contains("resource_metadata"));
    problem(r, 401, "missing_credential").await;

    // Bad input: unknown prefixes, key-only routes, a trailing slash, sub-paths, odd and
    // oversized paths: problem answers, never a 5xx, never the upstream.
    for (path, status, code) in [
        // Near misses of the well-known path: no such route on the gateway.
        ("/.well-known/oauth-protected-resourcex".to_owned(), 404, "not_found"),
        ("/.well-known/".to_owned(), 404, "not_found"),
        (
            "/.well-known/oauth-protected-resource/nope".to_owned(),
            404,
            "not_found",
        ),
        (
            "/.well-known/oauth-protected-resource/echo".to_owned(),
            404,
            "not_found",
        ),
        ("/.well-known/oauth-protected-resource/".to_owned(), 404, "not_found"),
        (
            "/.well-known/oauth-protected-resource/fact/1".to_owned(),
            404,
            "not_found",
        ),
        (
            "/.well-known/oauth-protected-resource/FACT".to_owned(),
            404,
            "not_found",
        ),
        (
            "/.well-known/oauth-protected-resource/fact%00".to_owned(),
            404,
            "not_found",
        ),
        (
            "/.well-known/oauth-protected-resource/%ff%fe".to_owned(),
            404,
            "not_found",
        ),
        (
            format!("/.well-known/oauth-protected-resource/{}", "a/".repeat(2000)),
            404,
            "not_found",
        ),
        (
            "/.well-known/oauth-protected-resource//fact".to_owned(),
            400,
            "invalid_path",
        ),
        (
            "/.well-known/oauth-protected-resource/fact%2fx".to_owned(),
            400,
            "invalid_path",
        ),
    ] {
        let r = get(path.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{}", &path[..path.len().min(80)]);
        problem(r, status, code).await;
    }
    for raw_req in [
        &b"GET /.well-known/oauth-protected-resource/fact/../echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"[..],
        b"GET /.well-known/oauth-protected-resource/fact/%2e%2e/facts HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET /.well-known/oauth-protected-resource/fact\xff HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET /.well-known/oauth-protected-resource/fact HTTP/1.1\r\nhost: \xff\xfe\r\nconnection: close\r\n\r\n",
    ] {
        let out = raw(&kw.gw, raw_req).await;
        let s = status_of(&out);
        assert!((200..500).contains(&s), "{s}: {out}");
    }
    // Dot segments as sent (an URL library would resolve them first).
    let out = raw(
        &kw.gw,
        b"GET /.well-known/oauth-protected-resource/fact/%2e%2e/facts HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 400, "{out}");
    assert!(out.contains("invalid_path"), "{out}");
    let r = kw
        .http
        .post(format!("{}/.well-known/oauth-protected-resource/fact", kw.gw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(kw.up.seen.count(), 0);

    // With the token service off there is no document (and no parameter in the challenges).
    let plain = boot().await;
    let r = plain.get("/.well-known/oauth-protected-resource", &[]).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = plain.get("/fact", &[]).await;
    assert!(!h(&r, "www-authenticate").unwrap().contains("resource_metadata"));
}

/// A TLS gateway that asks for client certificates: the documents say tokens are bound to them.
#[tokio::test]
async fn protected_resource_metadata_names_certificate_binding() {
    use crate::tls::{gw_addr, send, Pki};
    let pki = Pki::new();
    let p = pki.path.clone();
    let kw = boot_with(move |c| {
        c.gateway.tls_cert_file = Some(p.join("cert.pem"));
        c.gateway.tls_key_file = Some(p.join("key.pem"));
        c.gateway.tls_client_auth = keyward_edge::tls::ClientAuth::Optional;
        c.gateway.tls_client_ca_file = Some(p.join("clients.pem"));
        c.oauth.enabled = true;
        for r in c.routes.iter_mut() {
            r.tokens = r.path_prefix.starts_with("/fact");
        }
    })
    .await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/fact",
    ] {
        let req = hyper::Request::builder()
            .uri(format!("https://localhost{path}"))
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let (status, body) = send(gw_addr(&kw), &pki.server_ca.der, None, req).await;
        assert_eq!(status, 200, "{path}");
        let d: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(d["tls_client_certificate_bound_access_tokens"], true, "{d}");
        assert!(d["resource"].as_str().unwrap().starts_with("https://"), "{d}");
    }
}

#[tokio::test]
async fn signed_introspection() {
    let kw = boot_oauth().await;
    let (id, secret) = client(&kw, "rs").await;
    let t = token(&kw, &id, &secret).await;

    // RFC 8414 metadata advertises the algorithms.
    let m: Value = kw
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        m["introspection_signing_alg_values_supported"],
        json!(["EdDSA", "ES256", "RS256"])
    );
    let jwks: JwkSet = kw.get("/.well-known/jwks.json", &[]).await.json().await.unwrap();
    let verify = |jwt: &str| -> (Value, Value) {
        jwks.keys
            .iter()
            .find_map(|k| {
                keyward_token::verify_jws(jwt, k, &[Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256]).ok()
            })
            .expect("signed by a published key")
    };

    // Plain JSON without Accept, as before.
    let r = introspect(&kw, &id, &secret, &t, &[]).await;
    assert!(h(&r, "content-type").unwrap().starts_with("application/json"));
    let plain: Value = r.json().await.unwrap();
    assert_eq!(plain["active"], true);

    // Signed when asked for (RFC 9701 §5).
    let r = introspect(&kw, &id, &secret, &t, &[b"application/token-introspection+jwt"]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        h(&r, "content-type").as_deref(),
        Some("application/token-introspection+jwt")
    );
    assert_eq!(h(&r, "cache-control").as_deref(), Some("no-store"));
    let jwt = r.text().await.unwrap();
    let (header, claims) = verify(&jwt);
    assert_eq!(header["typ"], "token-introspection+jwt");
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], kw.gw);
    assert_eq!(claims["aud"], id);
    assert!(claims["iat"].as_i64().unwrap() > 0);
    assert!(claims.get("sub").is_none() && claims.get("exp").is_none(), "{claims}");
    assert_eq!(claims["token_introspection"], plain);

    // Inactive tokens: still signed, `active: false` and nothing else.
    for bad in ["garbage", "a.b.c", &format!("{t}x")] {
        let r = introspect(&kw, &id, &secret, bad, &[b"application/token-introspection+jwt"]).await;
        assert_eq!(r.status(), 200);
        let (_, claims) = verify(&r.text().await.unwrap());
        assert_eq!(claims["token_introspection"], json!({"active": false}));
    }

    // Malformed or other Accept headers: plain JSON, never an error.
    for accept in [
        &b"application/token-introspection+jwt;q=0"[..],
        b"application/token-introspection+jwt;q=nope",
        b"application/token-introspection+jwt;q=0.5, application/json",
        b"*/*",
        b"application/jwt",
        b";;;,,,",
        b"application/token-introspection+jwt\xff",
        &[b'a'; 4096],
    ] {
        let r = introspect(&kw, &id, &secret, &t, &[accept]).await;
        assert_eq!(r.status(), 200, "{accept:?}");
        assert!(
            h(&r, "content-type").unwrap().starts_with("application/json"),
            "{accept:?}"
        );
        assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    }
    // Two Accept fields: the one naming the JWT counts.
    let r = introspect(
        &kw,
        &id,
        &secret,
        &t,
        &[b"text/html", b"application/token-introspection+jwt"],
    )
    .await;
    assert_eq!(
        h(&r, "content-type").as_deref(),
        Some("application/token-introspection+jwt")
    );

    // Errors stay OAuth JSON errors: no signed answer without client authentication.
    let r = introspect(&kw, &id, "wrong", &t, &[b"application/token-introspection+jwt"]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
}

/// The workspace root (`tests/python` lives there).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn python_resource_metadata_and_signed_introspection() {
    let Some(python) = std::env::var_os("KEYWARD_TEST_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!(
            "integrations::python_resource_metadata_and_signed_introspection skipped: set \
             KEYWARD_TEST_PYTHON (.ci/run does)"
        );
        return;
    };
    let kw = boot_oauth().await;
    let (id, secret) = client(&kw, "py-rs").await;
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg("tests/python/resource_interop.py")
        .current_dir(workspace_root())
        .env("KEYWARD_GATEWAY", &kw.gw)
        .env("KEYWARD_CLIENT_ID", &id)
        .env("KEYWARD_CLIENT_SECRET", &secret)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("resource_interop.py took longer than 120 s")
        .unwrap_or_else(|e| panic!("cannot run KEYWARD_TEST_PYTHON={python:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "resource_interop.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("checks passed"), "{stdout}\n{stderr}");
}
