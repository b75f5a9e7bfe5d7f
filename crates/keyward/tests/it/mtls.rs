//! RFC 8705 over real TLS: client authentication by certificate (`tls_client_auth`,
//! `self_signed_tls_client_auth`), certificate-only routes, keys that require mTLS, the client
//! CA bundle reloaded without a restart, and the metadata that announces all of it.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use keyward::config::RouteSection;
use keyward_edge::tls::ClientAuth;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::harness::{boot_with, Kw};
use crate::tls::{ca, gw_addr, send, Ca, Leaf, Pki};

/// A client certificate with this subject and SANs, signed by `ca` (or self-signed).
fn client_cert(ca: Option<&Ca>, cn: &str, org: &str, sans: Vec<SanType>, expired: bool) -> Leaf {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    // Most general first, as CAs write them (the default DN would put CN first).
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = sans;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = OffsetDateTime::now_utc();
    if expired {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    } else {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(30);
    }
    let key = KeyPair::generate().unwrap();
    let cert = match ca {
        Some(ca) => p.signed_by(&key, &ca.issuer).unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    Leaf {
        der: cert.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn cert_route(upstream: &str) -> RouteSection {
    RouteSection {
        name: "cert-only".into(),
        path_prefix: "/internal".into(),
        methods: vec![],
        upstream: upstream.into(),
        scopes: vec!["internal:read".into()],
        scope_mode: Default::default(),
        rate: None,
        burst: None,
        rate_by: Default::default(),
        cost: None,
        tokens: false,
        api_keys: false,
        client_certificates: true,
        audience: None,
        on_limiter_failure: None,
        ..Default::default()
    }
}

/// Boots a TLS gateway that asks for (optional) client certificates, with the token service on
/// and a certificate-only route at `/internal`.
async fn boot_mtls(pki: &Pki, self_signed: bool, reload: Duration) -> Kw {
    let p = pki.path.clone();
    boot_with(move |cfg| {
        cfg.gateway.tls_cert_file = Some(p.join("cert.pem"));
        cfg.gateway.tls_key_file = Some(p.join("key.pem"));
        cfg.gateway.tls_client_auth = ClientAuth::Optional;
        cfg.gateway.tls_client_ca_file = Some(p.join("clients.pem"));
        cfg.gateway.tls_accept_self_signed = self_signed;
        cfg.gateway.tls_reload_interval = reload;
        cfg.oauth.enabled = true;
        let upstream = cfg.routes[0].upstream.clone();
        for r in cfg.routes.iter_mut() {
            r.tokens = true;
        }
        cfg.routes.push(cert_route(&upstream));
    })
    .await
}

fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> hyper::Request<Full<Bytes>> {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

fn token_req(client_id: &str) -> hyper::Request<Full<Bytes>> {
    req(
        "POST",
        "/oauth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("grant_type=client_credentials&client_id={client_id}"),
    )
}

/// Whether a TLS connection with `cert` gets an HTTP answer (TLS 1.3 reports a refused client
/// certificate only after the client's side of the handshake), or the error chain.
async fn probe(addr: SocketAddr, root: &CertificateDer<'static>, cert: &Leaf) -> Result<u16, String> {
    use http_body_util::Empty;
    let tls = crate::tls::connect(addr, root, Some(cert), b"http/1.1").await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let r = hyper::Request::get("https://localhost/fact")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    match send.send_request(r).await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) => {
            let mut out = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                out.push_str(": ");
                out.push_str(&c.to_string());
                cur = c.source();
            }
            Err(out)
        }
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

fn x5t(der: &CertificateDer<'_>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref()).as_ref())
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn client(kw: &Kw, body: Value) -> String {
    let (s, c) = kw.admin(reqwest::Method::POST, "/v1/clients", Some(body)).await;
    assert_eq!(s, 201, "{c}");
    assert!(
        c.get("client_secret").is_none(),
        "certificate clients have no secret: {c}"
    );
    c["client_id"].as_str().unwrap().to_owned()
}

async fn app(kw: &Kw, name: &str) {
    let (s, v) = kw
        .admin(reqwest::Method::POST, "/v1/apps", Some(json!({"name": name})))
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn tls_client_auth_by_subject_dn_and_san() {
    let pki = Pki::new();
    let kw = boot_mtls(&pki, false, Duration::from_secs(30)).await;
    let addr: SocketAddr = gw_addr(&kw);
    let root = pki.server_ca.der.clone();
    app(&kw, "billing").await;
    let by_dn = client(
        &kw,
        json!({"app": "billing", "scopes": ["facts:read"], "auth_method": "tls_client_auth",
               "tls_client_auth_subject_dn": "CN=billing-svc, O=Example Corp"}),
    )
    .await;
    let by_uri = client(
        &kw,
        json!({"app": "billing", "scopes": ["facts:read"], "auth_method": "tls_client_auth",
               "tls_client_auth_san_uri": "spiffe://example.org/billing"}),
    )
    .await;
    let billing = client_cert(Some(&pki.client_ca), "billing-svc", "Example Corp", vec![], false);
    let spiffe = client_cert(
        Some(&pki.client_ca),
        "whatever",
        "Example Corp",
        vec![SanType::URI("spiffe://example.org/billing".try_into().unwrap())],
        false,
    );
    let other = client_cert(Some(&pki.client_ca), "billing-svc", "Other Corp", vec![], false);

    // The subject DN matches: a token, bound to the certificate (RFC 8705 §3).
    let (s, body) = send(addr, &root, Some(&billing), token_req(&by_dn)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let token = json_of(&body)["access_token"].as_str().unwrap().to_owned();
    let c = claims(&token);
    assert_eq!(c["client_id"], by_dn.as_str());
    assert_eq!(c["cnf"]["x5t#S256"], x5t(&billing.der).as_str());
    let fact = || req("GET", "/fact", &[("authorization", &format!("Bearer {token}"))], "");
    assert_eq!(send(addr, &root, Some(&billing), fact()).await.0, 200);
    assert_eq!(send(addr, &root, Some(&other), fact()).await.0, 401);

    // The SAN URI matches.
    let (s, body) = send(addr, &root, Some(&spiffe), token_req(&by_uri)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));

    // Another subject, another client's certificate, no certificate: invalid_client, 401.
    for (cert, id) in [
        (Some(&other), &by_dn),
        (Some(&spiffe), &by_dn),
        (Some(&billing), &by_uri),
        (None, &by_dn),
    ] {
        let (s, body) = send(addr, &root, cert, token_req(id)).await;
        assert_eq!(s, 401, "{}", String::from_utf8_lossy(&body));
        assert_eq!(json_of(&body)["error"], "invalid_client");
    }
    // A client id that does not exist, or absurd ones.
    for id in ["cl_nope", &"x".repeat(300), "%00"] {
        let (s, body) = send(addr, &root, Some(&billing), token_req(id)).await;
        assert_eq!(s, 401, "{id}: {}", String::from_utf8_lossy(&body));
    }
    // Introspection authenticated by certificate.
    let (s, body) = send(
        addr,
        &root,
        Some(&billing),
        req(
            "POST",
            "/oauth/introspect",
            &[("content-type", "application/x-www-form-urlencoded")],
            &format!("client_id={by_dn}&token={token}"),
        ),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["active"], true);
    // RFC 8705 §3.2: the certificate binding is part of the answer.
    assert_eq!(json_of(&body)["cnf"]["x5t#S256"], x5t(&billing.der).as_str());

    // A disabled client no longer authenticates.
    let (s, v) = kw
        .admin(reqwest::Method::POST, &format!("/v1/clients/{by_dn}/disable"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(send(addr, &root, Some(&billing), token_req(&by_dn)).await.0, 401);
}

#[tokio::test]
async fn self_signed_tls_client_auth() {
    let pki = Pki::new();
    let kw = boot_mtls(&pki, true, Duration::from_secs(30)).await;
    let addr = gw_addr(&kw);
    let root = pki.server_ca.der.clone();
    app(&kw, "edge").await;
    let mine = client_cert(None, "device-1", "Devices", vec![], false);
    let keyed = client_cert(None, "device-2", "Devices", vec![], false);
    let stranger = client_cert(None, "device-1", "Devices", vec![], false);
    let old = client_cert(None, "device-3", "Devices", vec![], true);
    // Registered by certificate (x5c) ...
    let x5c = base64::engine::general_purpose::STANDARD.encode(mine.der.as_ref());
    let spki = keyward_token::ClientCert::parse(keyed.der.as_ref()).unwrap();
    let by_cert = client(
        &kw,
        json!({"app": "edge", "scopes": ["facts:read"], "auth_method": "self_signed_tls_client_auth",
               "jwks": {"keys": [{"kty": "EC", "crv": "P-256",
                                  "x": spki.public_key.as_ref().unwrap().x(), "y": spki.public_key.as_ref().unwrap().y(),
                                  "x5c": [x5c]}]}}),
    )
    .await;
    // ... or by public key alone.
    let by_key = client(
        &kw,
        json!({"app": "edge", "scopes": ["facts:read"], "auth_method": "self_signed_tls_client_auth",
               "jwks": {"keys": [serde_json::to_value(spki.public_key.as_ref().unwrap()).unwrap()]}}),
    )
    .await;
    // `mine` is matched through x5c (the JWK above holds `keyed`'s key, not `mine`'s).
    let (s, body) = send(addr, &root, Some(&mine), token_req(&by_cert)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let token = json_of(&body)["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["cnf"]["x5t#S256"], x5t(&mine.der).as_str());
    let (s, body) = send(addr, &root, Some(&keyed), token_req(&by_key)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    // Same subject, different key: refused.
    assert_eq!(send(addr, &root, Some(&stranger), token_req(&by_cert)).await.0, 401);
    assert_eq!(send(addr, &root, Some(&stranger), token_req(&by_key)).await.0, 401);
    // An expired self-signed certificate fails in the handshake.
    let r = probe(addr, &root, &old).await;
    assert!(r.as_ref().is_err_and(|e| e.contains("CertificateExpired")), "{r:?}");
    assert_eq!(
        probe(addr, &root, &mine).await,
        Ok(401),
        "self-signed certificates are accepted"
    );

    // A tls_client_auth client needs a chain to the CA: a self-signed certificate with the
    // registered subject does not do.
    let dn_client = client(
        &kw,
        json!({"app": "edge", "scopes": ["facts:read"], "auth_method": "tls_client_auth",
               "tls_client_auth_subject_dn": "CN=device-1,O=Devices"}),
    )
    .await;
    assert_eq!(send(addr, &root, Some(&mine), token_req(&dn_client)).await.0, 401);
    let issued = client_cert(Some(&pki.client_ca), "device-1", "Devices", vec![], false);
    assert_eq!(send(addr, &root, Some(&issued), token_req(&dn_client)).await.0, 200);
}

#[tokio::test]
async fn certificate_only_routes_and_keys_that_require_mtls() {
    let pki = Pki::new();
    let kw = boot_mtls(&pki, false, Duration::from_secs(30)).await;
    let addr = gw_addr(&kw);
    let root = pki.server_ca.der.clone();
    app(&kw, "ops").await;
    app(&kw, "other").await;
    let ops_client = client(
        &kw,
        json!({"app": "ops", "scopes": ["internal:read", "facts:read"], "auth_method": "tls_client_auth",
               "tls_client_auth_san_dns": "ops.internal.example"}),
    )
    .await;
    client(
        &kw,
        json!({"app": "other", "scopes": ["facts:read"], "auth_method": "tls_client_auth",
               "tls_client_auth_subject_dn": "CN=other,O=Example"}),
    )
    .await;
    let ops = client_cert(
        Some(&pki.client_ca),
        "ops",
        "Example",
        vec![SanType::DnsName("ops.internal.example".try_into().unwrap())],
        false,
    );
    let other = client_cert(Some(&pki.client_ca), "other", "Example", vec![], false);
    let nobody = client_cert(Some(&pki.client_ca), "nobody", "Example", vec![], false);
    let get = |path: &str, key: Option<&str>| {
        let h: Vec<(&str, &str)> = key.map(|k| vec![("x-api-key", k)]).unwrap_or_default();
        req("GET", path, &h, "")
    };

    // Certificate-only route: the certificate alone is the credential.
    let (s, body) = send(addr, &root, Some(&ops), get("/internal/status", None)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let seen = kw.up.seen.last();
    assert_eq!(seen["x-keyward-app"], vec!["ops".to_owned()]);
    assert_eq!(seen["x-keyward-client-id"], vec![ops_client.clone()]);
    // Registered, but the client lacks the route's scope: 403.
    let (s, body) = send(addr, &root, Some(&other), get("/internal/status", None)).await;
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("insufficient_scope"));
    // Unregistered certificate, no certificate: 401 client_certificate_required.
    for cert in [Some(&nobody), None] {
        let (s, body) = send(addr, &root, cert, get("/internal/status", None)).await;
        assert_eq!(s, 401, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("client_certificate_required"));
    }
    // The route takes no API keys.
    let (_, any_key) = kw.key("ops", &["internal:read"], json!({})).await;
    assert_eq!(
        send(addr, &root, Some(&nobody), get("/internal/status", Some(&any_key)))
            .await
            .0,
        401
    );

    // A key that requires mTLS works only with a certificate registered to its app.
    let (key_id, key) = kw.key("ops", &["facts:read"], json!({"require_mtls": true})).await;
    assert_eq!(send(addr, &root, Some(&ops), get("/fact", Some(&key))).await.0, 200);
    for cert in [None, Some(&other), Some(&nobody)] {
        let (s, body) = send(addr, &root, cert, get("/fact", Some(&key))).await;
        assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("mtls_required"));
    }
    // Turned off and on again by PATCH.
    let (s, v) = kw
        .admin(
            reqwest::Method::PATCH,
            &format!("/v1/keys/{key_id}"),
            Some(json!({"require_mtls": false})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(send(addr, &root, None, get("/fact", Some(&key))).await.0, 200);
    // For a whole app: every key of the app, existing ones included.
    let (_, plain) = kw.key("other", &["facts:read"], json!({})).await;
    assert_eq!(send(addr, &root, None, get("/fact", Some(&plain))).await.0, 200);
    let (s, v) = kw
        .admin(
            reqwest::Method::PATCH,
            "/v1/apps/other",
            Some(json!({"require_mtls": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(send(addr, &root, None, get("/fact", Some(&plain))).await.0, 403);
    assert_eq!(send(addr, &root, Some(&ops), get("/fact", Some(&plain))).await.0, 403);
    assert_eq!(send(addr, &root, Some(&other), get("/fact", Some(&plain))).await.0, 200);
}

#[tokio::test]
async fn certificate_client_registrations_are_validated() {
    let pki = Pki::new();
    let kw = boot_mtls(&pki, false, Duration::from_secs(30)).await;
    app(&kw, "v").await;
    let bad = [
        json!({"app": "v", "auth_method": "tls_client_auth"}),
        json!({"app": "v", "auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=a",
               "tls_client_auth_san_dns": "a.example"}),
        json!({"app": "v", "auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN"}),
        json!({"app": "v", "auth_method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=#0403"}),
        json!({"app": "v", "auth_method": "tls_client_auth", "tls_client_auth_subject_dn": ""}),
        json!({"app": "v", "auth_method": "tls_client_auth", "tls_client_auth_san_ip": "10.0.0.300"}),
        json!({"app": "v", "auth_method": "tls_client_auth", "tls_client_auth_san_dns": "a\u{0}b"}),
        json!({"app": "v", "auth_method": "tls_client_auth", "tls_client_auth_san_uri": "x".repeat(5000)}),
        json!({"app": "v", "auth_method": "self_signed_tls_client_auth"}),
        json!({"app": "v", "auth_method": "self_signed_tls_client_auth", "jwks": {"keys": []}}),
        json!({"app": "v", "auth_method": "client_secret_basic", "tls_client_auth_san_dns": "a.example"}),
        json!({"app": "v", "auth_method": "tls_client_auth", "tls_client_auth_san_dns": 7}),
    ];
    for body in bad {
        let (s, v) = kw.admin(reqwest::Method::POST, "/v1/clients", Some(body.clone())).await;
        assert!(s == 422 || s == 400, "{body}: {s} {v}");
        assert!(v["type"].is_string(), "problem+json: {v}");
    }
    let (s, v) = kw.admin(reqwest::Method::GET, "/v1/clients?app=v", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "nothing was created: {v}");
    // Keys: require_mtls must be a boolean.
    let (s, _) = kw
        .admin(
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({"app": "v", "require_mtls": "yes"})),
        )
        .await;
    assert!(s == 422 || s == 400, "{s}");
}

#[tokio::test]
async fn metadata_announces_mtls_and_the_client_ca_is_reloaded() {
    let pki = Pki::new();
    let kw = boot_mtls(&pki, false, Duration::from_millis(100)).await;
    let addr = gw_addr(&kw);
    let root = pki.server_ca.der.clone();
    let (_, body) = send(
        addr,
        &root,
        None,
        req("GET", "/.well-known/oauth-authorization-server", &[], ""),
    )
    .await;
    let meta = json_of(&body);
    let methods = meta["token_endpoint_auth_methods_supported"].as_array().unwrap();
    assert!(methods.contains(&json!("tls_client_auth")), "{meta}");
    assert!(methods.contains(&json!("self_signed_tls_client_auth")), "{meta}");
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    let iss = meta["issuer"].as_str().unwrap();
    assert_eq!(
        meta["mtls_endpoint_aliases"]["token_endpoint"],
        format!("{iss}/oauth/token").as_str()
    );
    assert_eq!(meta["dpop_signing_alg_values_supported"][0], "ES256");

    // A new client CA replaces the old one without a restart.
    let (_, key) = kw.key("ca", &["facts:read"], json!({})).await;
    let fact = || req("GET", "/fact", &[("x-api-key", &key)], "");
    let old_client = client_cert(Some(&pki.client_ca), "old", "Example", vec![], false);
    let next_ca = ca("keyward next client CA");
    let new_client = client_cert(Some(&next_ca), "new", "Example", vec![], false);
    assert_eq!(send(addr, &root, Some(&old_client), fact()).await.0, 200);
    let r = probe(addr, &root, &new_client).await;
    assert!(r.as_ref().is_err_and(|e| e.contains("UnknownCA")), "{r:?}");
    std::fs::write(pki.path.join("clients.pem"), &next_ca.pem).unwrap();
    let mut switched = false;
    for _ in 0..100 {
        if probe(addr, &root, &new_client).await.is_ok() {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched, "the new client CA is trusted without a restart");
    assert_eq!(send(addr, &root, Some(&new_client), fact()).await.0, 200);
    assert!(probe(addr, &root, &old_client).await.is_err());
    // A broken bundle is ignored; the last good one stays in force.
    std::fs::write(pki.path.join("clients.pem"), "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(send(addr, &root, Some(&new_client), fact()).await.0, 200);
}

/// The CLI flags of issue 6: `key create --require-mtls`, `app update --require-mtls`,
/// `client create --auth tls_client_auth --tls-subject-dn …`, `--auth self_signed_tls_client_auth
/// --cert-file …`, and their usage errors (exit 2, nothing created).
#[tokio::test(flavor = "multi_thread")]
async fn cli_flags_for_mtls() {
    let pki = Pki::new();
    let kw = boot_mtls(&pki, true, Duration::from_secs(30)).await;
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
    let json_out = |out: &str| -> Value { serde_json::from_str(out.trim()).unwrap() };
    let (code, _, err) = run(&["app", "create", "fleet"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["key", "create", "--app", "fleet", "--require-mtls", "--json"]);
    assert_eq!(code, 0, "{err}");
    let key = json_out(&out);
    assert_eq!(key["policy"]["require_mtls"], true, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();
    let (code, out, err) = run(&["key", "update", &id, "--no-require-mtls", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(json_out(&out)["policy"].get("require_mtls").is_none(), "{out}");
    let (code, out, err) = run(&["app", "update", "fleet", "--require-mtls", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_out(&out)["policy"]["require_mtls"], true, "{out}");
    let (code, _, err) = run(&["key", "update", &id, "--require-mtls", "--no-require-mtls"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = run(&[
        "client",
        "create",
        "--app",
        "fleet",
        "--auth",
        "tls_client_auth",
        "--tls-subject-dn",
        "CN=truck-7,O=Fleet",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let c = json_out(&out);
    assert_eq!(c["options"]["tls_client_auth_subject_dn"], "CN=truck-7,O=Fleet", "{c}");
    assert!(c.get("client_secret").is_none());

    // A self-signed certificate registered from its PEM file; the token endpoint then
    // authenticates a connection that presents it.
    let device = client_cert(None, "device-9", "Fleet", vec![], false);
    let pem = pki.path.join("device.pem");
    std::fs::write(&pem, &device.cert_pem).unwrap();
    let (code, out, err) = run(&[
        "client",
        "create",
        "--app",
        "fleet",
        "--auth",
        "self_signed_tls_client_auth",
        "--cert-file",
        pem.to_str().unwrap(),
        "--scope",
        "facts:read",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let c = json_out(&out);
    let cid = c["client_id"].as_str().unwrap().to_owned();
    assert!(c["jwks"]["keys"][0]["x5c"][0].is_string(), "{c}");
    let addr = gw_addr(&kw);
    let (s, body) = send(addr, &pki.server_ca.der, Some(&device), token_req(&cid)).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));

    // Usage errors: exit 2, a message naming the flag, nothing created.
    let garbage = pki.path.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for args in [
        vec!["client", "create", "--app", "fleet", "--auth", "tls_client_auth"],
        vec![
            "client",
            "create",
            "--app",
            "fleet",
            "--auth",
            "tls_client_auth",
            "--tls-san-dns",
            "a",
            "--tls-san-uri",
            "b",
        ],
        vec!["client", "create", "--app", "fleet", "--tls-san-dns", "a.example"],
        vec![
            "client",
            "create",
            "--app",
            "fleet",
            "--auth",
            "self_signed_tls_client_auth",
        ],
        vec![
            "client",
            "create",
            "--app",
            "fleet",
            "--auth",
            "self_signed_tls_client_auth",
            "--cert-file",
            garbage.to_str().unwrap(),
        ],
        vec![
            "client",
            "create",
            "--app",
            "fleet",
            "--cert-file",
            pem.to_str().unwrap(),
        ],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--"), "{args:?}: {err}");
    }
    let (_, out, _) = run(&["client", "list", "--app", "fleet", "--json"]);
    assert_eq!(out.matches("client_id").count(), 2, "{out}");
}

/// An independent mTLS client (httpx over Python's ssl) against the TLS gateway: token by
/// `tls_client_auth`, certificate-bound token used and refused over another certificate, a
/// certificate-only route. Runs when `KEYWARD_TEST_PYTHON` is set (.ci/run sets it).
#[tokio::test]
async fn python_mtls_client() {
    let Some(python) = std::env::var_os("KEYWARD_TEST_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!("mtls::python_mtls_client skipped: set KEYWARD_TEST_PYTHON (.ci/run does)");
        return;
    };
    let pki = Pki::new();
    let kw = boot_mtls(&pki, false, Duration::from_secs(30)).await;
    app(&kw, "py").await;
    let id = client(
        &kw,
        json!({"app": "py", "scopes": ["facts:read", "internal:read"], "auth_method": "tls_client_auth",
               "tls_client_auth_subject_dn": "CN=py-client,O=Example"}),
    )
    .await;
    let mine = client_cert(Some(&pki.client_ca), "py-client", "Example", vec![], false);
    let other = client_cert(Some(&pki.client_ca), "py-other", "Example", vec![], false);
    let dir = &pki.path;
    std::fs::write(dir.join("server-ca.pem"), &pki.server_ca.pem).unwrap();
    for (name, leaf) in [("mine", &mine), ("other", &other)] {
        std::fs::write(dir.join(format!("{name}.crt")), &leaf.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), &leaf.key_pem).unwrap();
    }
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg("tests/python/mtls_interop.py")
        .current_dir(&root)
        .env("KEYWARD_GATEWAY", format!("https://{}", gw_addr(&kw)))
        .env("KEYWARD_CA", dir.join("server-ca.pem"))
        .env("KEYWARD_CERT", dir.join("mine.crt"))
        .env("KEYWARD_KEY", dir.join("mine.key"))
        .env("KEYWARD_OTHER_CERT", dir.join("other.crt"))
        .env("KEYWARD_OTHER_KEY", dir.join("other.key"))
        .env("KEYWARD_CLIENT_ID", &id)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the Python mTLS client took longer than 120 s")
        .unwrap_or_else(|e| panic!("cannot run KEYWARD_TEST_PYTHON={python:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mtls_interop.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("checks passed"), "{stdout}\n{stderr}");
}
