//! Envoy `ext_authz` over gRPC (issue 21, point 1): `envoy.service.auth.v3.Authorization/Check`
//! on `[verify] grpc_listen`, called by an independent client built from Envoy's published protos
//! (the `xds-protos` Python package: tests/python/ext_authz_client.py). Allowed checks carry the
//! identity headers and `headers_to_remove`; refusals carry keyward's status, problem body and
//! headers; limits and usage are shared with the gateway and HTTP forward-auth; hostile checks
//! get a denied answer or a gRPC error, never an allow. Runs when `KEYWARD_TEST_PYTHON` is set
//! (.ci/run sets it); fails when that Python lacks grpcio or xds-protos.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::harness::*;

fn python() -> Option<OsString> {
    std::env::var_os("KEYWARD_TEST_PYTHON").filter(|p| !p.is_empty())
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the checks through `ext_authz_client.py` against `kw`'s gRPC listener: one result each.
async fn check(python: &OsString, kw: &Kw, checks: &[Value]) -> Vec<Value> {
    let target = kw.verify_grpc.clone().expect("verify.grpc_listen is configured");
    let mut child = Command::new(python)
        .arg("tests/python/ext_authz_client.py")
        .arg("--target")
        .arg(&target)
        .current_dir(repo_root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run KEYWARD_TEST_PYTHON={python:?}: {e}"));
    let input = serde_json::to_vec(checks).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("ext_authz_client.py took longer than 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ext_authz_client.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let v: Vec<Value> = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(v.len(), checks.len(), "{v:?}");
    v
}

async fn check1(python: &OsString, kw: &Kw, c: Value) -> Value {
    check(python, kw, &[c]).await.remove(0)
}

async fn boot_grpc(tweak: impl FnOnce(&mut keyward::config::Config)) -> Kw {
    boot_with(|c| {
        c.verify.grpc_listen = Some("127.0.0.1:0".parse().unwrap());
        c.verify.listen = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
    .await
}

/// A denied answer: the HTTP status, the problem code in the body and in `x-keyward-code`, the
/// problem's content type, and a check status that is not OK. Returns the answer's headers.
fn denied(v: &Value, status: u16, code: &str) -> Value {
    assert_eq!(v["grpc"], "OK", "a denial is an answer, not a gRPC error: {v}");
    assert!(v.get("ok").is_none(), "{v}");
    assert_ne!(v["status"]["code"], 0, "a denial must not carry status OK: {v}");
    let d = &v["denied"];
    assert_eq!(d["status"], status, "{v}");
    let body: Value = serde_json::from_str(d["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], code, "{v}");
    assert_eq!(body["status"], status, "{v}");
    assert_eq!(body["type"], format!("urn:keyward:problem:{}", code.replace('_', "-")));
    assert_eq!(d["headers"]["content-type"], "application/problem+json", "{v}");
    assert_eq!(d["headers"]["x-keyward-code"], code, "{v}");
    assert!(v["status"]["message"].as_str().unwrap().starts_with(code), "{v}");
    d["headers"].clone()
}

/// An allowed answer: status OK and an `OkHttpResponse`.
fn allowed(v: &Value) -> Value {
    assert_eq!(v["grpc"], "OK", "{v}");
    assert_eq!(v["status"]["code"], 0, "{v}");
    assert!(v.get("denied").is_none(), "{v}");
    v["ok"].clone()
}

fn removes(ok: &Value) -> Vec<String> {
    serde_json::from_value(ok["headers_to_remove"].clone()).unwrap()
}

#[tokio::test]
async fn envoy_checks_from_the_published_protos() {
    let Some(py) = python() else {
        eprintln!(
            "ext_authz_grpc::envoy_checks_from_the_published_protos skipped: set KEYWARD_TEST_PYTHON (.ci/run does)"
        );
        return;
    };
    let kw = boot_grpc(|c| c.gateway.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let (id, read) = kw.key("cats", &["facts:read"], json!({})).await;

    // Allowed: identity set over the client's own values, the credential and every other
    // client-sent x-keyward-* header removed; the client address is Envoy's `source`.
    let v = check1(
        &py,
        &kw,
        json!({"method": "GET", "path": "/facts?limit=2", "host": "api.test", "source": "203.0.113.7",
               "headers": {"x-api-key": read, "x-keyward-app": "spoofed", "x-keyward-client-id": "spoofed",
                           "x-keyward-anything": "spoofed", "user-agent": "curl/8"}}),
    )
    .await;
    let ok = allowed(&v);
    let set = &ok["headers"];
    assert_eq!(set["x-keyward-app"]["value"], "cats", "{v}");
    assert_eq!(set["x-keyward-key-id"]["value"], id.as_str(), "{v}");
    assert_eq!(set["x-keyward-scopes"]["value"], "facts:read", "{v}");
    assert_eq!(set["x-keyward-client-ip"]["value"], "203.0.113.7", "{v}");
    assert!(set["x-keyward-app-id"]["value"].as_str().unwrap().starts_with("app_"));
    for (_, h) in set.as_object().unwrap() {
        assert_eq!(h["action"], "OVERWRITE_IF_EXISTS_OR_ADD", "{v}");
    }
    let gone = removes(&ok);
    for name in ["x-api-key", "dpop", "x-keyward-client-id", "x-keyward-anything"] {
        assert!(gone.contains(&name.to_owned()), "{name} not removed: {v}");
    }
    assert!(
        !gone.contains(&"authorization".to_owned()),
        "authorization did not carry the key: {v}"
    );
    assert!(!gone.contains(&"x-keyward-app".to_owned()), "set, not removed: {v}");
    assert!(!v.to_string().contains(&read), "the key is echoed: {v}");

    // The key in `Authorization: Bearer`: authorization goes; raw headers (encode_raw_headers)
    // work the same.
    let v = check1(
        &py,
        &kw,
        json!({"path": "/fact", "headers": {"authorization": format!("Bearer {read}")}}),
    )
    .await;
    let ok = allowed(&v);
    assert!(removes(&ok).contains(&"authorization".to_owned()), "{v}");
    let v = check1(&py, &kw, json!({"path": "/fact", "header_map": [["x-api-key", read]]})).await;
    assert_eq!(allowed(&v)["headers"]["x-keyward-key-id"]["value"], id.as_str());

    // 401: no key, the gateway's challenge; a malformed key.
    let v = check1(&py, &kw, json!({"path": "/fact", "headers": {}})).await;
    let h = denied(&v, 401, "missing_credential");
    assert!(
        h["www-authenticate"].as_str().unwrap().contains("realm=\"keyward\""),
        "{v}"
    );
    assert_eq!(v["status"]["code"], 16, "UNAUTHENTICATED: {v}");
    let v = check1(&py, &kw, json!({"path": "/fact", "headers": {"x-api-key": "s3cr3t"}})).await;
    denied(&v, 401, "malformed_credential");
    // 403: the route's scope (POST /facts needs facts:write).
    let v = check1(
        &py,
        &kw,
        json!({"method": "POST", "path": "/facts", "headers": {"x-api-key": read}}),
    )
    .await;
    let h = denied(&v, 403, "insufficient_scope");
    assert_eq!(v["status"]["code"], 7, "PERMISSION_DENIED: {v}");
    assert_eq!(h["cache-control"], "no-store", "{v}");
    // 405: a method the route does not take.
    let v = check1(
        &py,
        &kw,
        json!({"method": "DELETE", "path": "/facts", "headers": {"x-api-key": read}}),
    )
    .await;
    denied(&v, 405, "method_not_allowed");

    // 429: the same limit as the gateway and HTTP forward-auth, Retry-After and RateLimit for
    // the client.
    let (lid, limited) = kw
        .key("cats", &["facts:read"], json!({"rate": {"limit": "3/min", "burst": 3}}))
        .await;
    assert_eq!(kw.get("/fact", &[("x-api-key", &limited)]).await.status(), 200);
    let r = kw
        .http
        .get(format!("{}/v1/forward-auth", kw.verify.as_deref().unwrap()))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/fact")
        .header("x-api-key", &limited)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let both = check(
        &py,
        &kw,
        &[
            json!({"path": "/fact", "headers": {"x-api-key": limited}}),
            json!({"path": "/fact", "headers": {"x-api-key": limited}}),
        ],
    )
    .await;
    let ok = allowed(&both[0]);
    assert!(
        ok["response_headers_to_add"]["ratelimit"]
            .as_str()
            .unwrap()
            .contains("r=0"),
        "{both:?}"
    );
    assert!(ok["response_headers_to_add"]["ratelimit-policy"]
        .as_str()
        .unwrap()
        .contains("q=3"));
    let h = denied(&both[1], 429, "rate_limited");
    assert!(h["retry-after"].as_str().unwrap().parse::<u64>().unwrap() >= 1, "{h}");
    assert!(h["ratelimit"].is_string() && h["ratelimit-policy"].is_string(), "{h}");
    assert_eq!(both[1]["status"]["code"], 8, "RESOURCE_EXHAUSTED: {both:?}");
    assert_eq!(kw.get("/fact", &[("x-api-key", &limited)]).await.status(), 429);

    // Usage counts checks like proxied requests (one gateway, one HTTP forward-auth, one
    // check allowed; one check and one gateway request limited).
    let (s, u) = kw
        .admin(Method::GET, &format!("/v1/usage?key={lid}&since=1h"), None)
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["totals"], json!({"allowed": 3, "limited:rate": 2}), "{u}");

    // Revoked: the very next check is refused.
    let (s, _) = kw
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(s, 200);
    let v = check1(&py, &kw, json!({"path": "/fact", "headers": {"x-api-key": read}})).await;
    denied(&v, 401, "revoked_credential");

    // Context extensions (per-route check settings in Envoy's configuration) are the call
    // options: scope and cost for paths no route matches, or a named route.
    let (_, fresh) = kw.key("cats", &["facts:read"], json!({})).await;
    let v = check(
        &py,
        &kw,
        &[
            json!({"path": "/metered", "headers": {"x-api-key": fresh}, "context_extensions": {"scope": "facts:read"}}),
            json!({"path": "/metered", "headers": {"x-api-key": fresh}, "context_extensions": {"scope": "facts:write"}}),
            json!({"path": "/metered", "headers": {"x-api-key": fresh}, "context_extensions": {"route": "facts-write"}}),
            json!({"path": "/metered", "headers": {"x-api-key": fresh}, "context_extensions": {"bogus": "1"}}),
            json!({"path": "/metered", "headers": {"x-api-key": fresh}, "context_extensions": {"route": "nope"}}),
            json!({"path": "/metered", "headers": {"x-api-key": fresh}, "context_extensions": {"cost": "0"}}),
        ],
    )
    .await;
    allowed(&v[0]);
    denied(&v[1], 403, "insufficient_scope");
    denied(&v[2], 403, "insufficient_scope");
    for bad in &v[3..] {
        denied(bad, 400, "invalid_verify_request");
    }
}

#[tokio::test]
async fn hostile_checks_are_refused_never_allowed() {
    let Some(py) = python() else {
        eprintln!(
            "ext_authz_grpc::hostile_checks_are_refused_never_allowed skipped: set KEYWARD_TEST_PYTHON (.ci/run does)"
        );
        return;
    };
    let kw = boot_grpc(|_| {}).await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let k = key.as_str();
    let many: serde_json::Map<String, Value> = (0..101).map(|i| (format!("x-h{i}"), json!("1"))).collect();
    let mut many_with_key = many.clone();
    many_with_key.insert("x-api-key".into(), json!(k));
    let big = "v".repeat(70 * 1024);
    let huge = "v".repeat(200 * 1024);
    let cases = vec![
        (json!({"no_attributes": true}), 400, "invalid_verify_request"),
        (json!({"no_http": true}), 400, "invalid_verify_request"),
        (
            json!({"method": "", "path": "/fact", "headers": {"x-api-key": k}}),
            400,
            "invalid_verify_request",
        ),
        (
            json!({"path": "", "headers": {"x-api-key": k}}),
            400,
            "invalid_verify_request",
        ),
        (
            json!({"path": "fact", "headers": {"x-api-key": k}}),
            400,
            "invalid_verify_request",
        ),
        (
            json!({"method": "G ET", "path": "/fact", "headers": {"x-api-key": k}}),
            400,
            "invalid_verify_request",
        ),
        (
            json!({"path": format!("/{}", "a".repeat(9000)), "headers": {"x-api-key": k}}),
            400,
            "invalid_verify_request",
        ),
        (
            json!({"path": "/fact/../admin", "headers": {"x-api-key": k}}),
            400,
            "invalid_path",
        ),
        (
            json!({"path": "/fact/%2e%2e/admin", "headers": {"x-api-key": k}}),
            400,
            "invalid_path",
        ),
        (
            json!({"path": "/fact", "headers": many_with_key}),
            431,
            "headers_too_large",
        ),
        (
            json!({"path": "/fact", "headers": {"x-api-key": k, "x-big": big}}),
            431,
            "headers_too_large",
        ),
        (
            json!({"path": "/fact", "headers": {"x-api-key": k, "bad name": "1"}}),
            400,
            "invalid_verify_request",
        ),
        (
            json!({"path": "/fact", "header_map": [["x-api-key", k], ["x-evil", "a\r\nb"]]}),
            400,
            "invalid_verify_request",
        ),
        (
            json!({"path": "/fact", "header_map": [["x-api-key", k], ["x-api-key", k]]}),
            400,
            "multiple_credentials",
        ),
        (
            json!({"path": "/fact", "headers": {"x-api-key": format!("{k}\u{e9}")}}),
            401,
            "malformed_credential",
        ),
    ];
    let checks: Vec<Value> = cases.iter().map(|(c, _, _)| c.clone()).collect();
    let got = check(&py, &kw, &checks).await;
    for ((c, status, code), v) in cases.iter().zip(&got) {
        let summary: String = c.to_string().chars().take(120).collect();
        assert_eq!(v["grpc"], "OK", "{summary}: {v}");
        assert!(v.get("ok").is_none(), "allowed: {summary}: {v}");
        denied(v, *status, code);
    }
    // What tonic refuses before the service runs: gRPC errors (Envoy then applies
    // `status_on_error`), never an allow.
    let got = check(
        &py,
        &kw,
        &[
            json!({"path": "/fact", "headers": {"x-api-key": k, "x-huge": huge}}),
            json!({"raw_hex": "ffffffffffff"}),
            json!({"raw_hex": "0a03ffff"}),
        ],
    )
    .await;
    assert_eq!(got[0]["grpc"], "OUT_OF_RANGE", "{:?}", got[0]);
    eprintln!(
        "ext_authz: an oversized check: {}; undecodable ones: {} / {}",
        got[0], got[1], got[2]
    );
    for v in &got[1..] {
        assert!(v.get("ok").is_none(), "{v}");
        assert_ne!(v["grpc"], "OK", "{v}");
    }
    // keyward serves on: a well-formed check is still allowed.
    let v = check1(&py, &kw, json!({"path": "/fact", "headers": {"x-api-key": k}})).await;
    allowed(&v);
    // A plain HTTP/1.1 request to the gRPC listener is no check.
    let r = kw
        .http
        .get(format!(
            "http://{}/envoy.service.auth.v3.Authorization/Check",
            kw.verify_grpc.as_deref().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers().get("grpc-status").map(|v| v.to_str().unwrap()), Some("0"));
}

#[tokio::test]
async fn only_allowed_peers_and_the_service_token() {
    let Some(py) = python() else {
        eprintln!(
            "ext_authz_grpc::only_allowed_peers_and_the_service_token skipped: set KEYWARD_TEST_PYTHON (.ci/run does)"
        );
        return;
    };
    // The service token required: as the call's metadata.
    let kw = boot_grpc(|c| c.verify.forward_auth_require_token = true).await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let c = |meta: Value| json!({"path": "/fact", "headers": {"x-api-key": key}, "metadata": meta});
    let v = check(
        &py,
        &kw,
        &[
            c(json!({})),
            c(json!({"x-keyward-verify-token": "wrong-token-0123456789"})),
            c(json!({"x-keyward-verify-token": ADMIN_TOKEN})),
            c(json!({"x-keyward-verify-token": VERIFY_TOKEN})),
        ],
    )
    .await;
    for refused in &v[..3] {
        denied(refused, 401, "verify_unauthorized");
    }
    allowed(&v[3]);
    // The token in the original request's headers (the client's) does not count.
    let v = check1(
        &py,
        &kw,
        json!({"path": "/fact", "headers": {"x-api-key": key, "x-keyward-verify-token": VERIFY_TOKEN}}),
    )
    .await;
    denied(&v, 401, "verify_unauthorized");

    // A peer outside verify.forward_auth_peers: refused whatever it sends.
    let kw = boot_grpc(|c| c.verify.forward_auth_peers = vec!["10.0.0.0/8".into()]).await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let v = check1(
        &py,
        &kw,
        json!({"path": "/fact", "headers": {"x-api-key": key}, "metadata": {"x-keyward-verify-token": VERIFY_TOKEN}}),
    )
    .await;
    denied(&v, 403, "forward_auth_forbidden");
    // Without trusted proxies, the client address is Envoy's own, whatever `source` says.
    let kw = boot_grpc(|_| {}).await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let v = check1(
        &py,
        &kw,
        json!({"path": "/fact", "source": "203.0.113.7", "headers": {"x-api-key": key}}),
    )
    .await;
    assert_eq!(allowed(&v)["headers"]["x-keyward-client-ip"]["value"], "127.0.0.1");
}

/// examples/envoy/envoy.yaml is not run (no Envoy binary on these machines), but it is read
/// as an Envoy bootstrap against the published protos (unknown fields refused), and its
/// ext_authz filter is the gRPC one, pointed at an HTTP/2 cluster on keyward's port, failing
/// closed.
#[tokio::test]
async fn the_envoy_example_is_an_envoy_bootstrap() {
    let Some(py) = python() else {
        eprintln!(
            "ext_authz_grpc::the_envoy_example_is_an_envoy_bootstrap skipped: set KEYWARD_TEST_PYTHON (.ci/run does)"
        );
        return;
    };
    let out = Command::new(&py)
        .arg("tests/python/ext_authz_client.py")
        .arg("--bootstrap")
        .arg("examples/envoy/envoy.yaml")
        .current_dir(repo_root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        v,
        json!({"grpc_cluster": "keyward", "timeout": 250, "failure_mode_allow": false,
               "status_on_error": 503, "transport_api_version": 2, "cluster_http2": true,
               "cluster_port": 8083}),
        "{v}"
    );
}

/// A check whose message never arrives whole (a gRPC frame announcing 100 bytes, then
/// nothing): cut off at `gateway.body_read_timeout` with an error status, never held open and
/// never allowed. A raw HTTP/2 client (hyper), since a gRPC library cannot send half a message.
#[tokio::test]
async fn a_check_that_never_arrives_is_cut_off() {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::body::Frame;

    let kw = boot_grpc(|c| c.gateway.body_read_timeout = Duration::from_secs(1)).await;
    let addr = kw.verify_grpc.clone().unwrap();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Uncompressed, 100 bytes announced; 3 sent; the stream stays open.
    let prefix: &'static [u8] = &[0, 0, 0, 0, 100, 0x0a, 0x10, 0x12];
    let frames = futures_util::StreamExt::chain(
        futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(prefix)))]),
        futures_util::stream::pending(),
    );
    let req = hyper::Request::post(format!("http://{addr}/envoy.service.auth.v3.Authorization/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let head_status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the answer did not end within 10 s")
        .unwrap();
    let took = started.elapsed();
    let status = head_status
        .or_else(|| {
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .expect("a grpc-status");
    assert_ne!(status, "0", "an unfinished check must not succeed");
    assert!(
        collected.to_bytes().len() <= 5,
        "no CheckResponse for an unfinished check"
    );
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    eprintln!("ext_authz: an unfinished check ended with grpc-status {status} after {took:?}");
}
