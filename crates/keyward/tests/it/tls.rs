//! TLS on the gateway listener: real handshakes over loopback with certificates generated here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyward_edge::tls::ClientAuth;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::harness::{boot_with, raw, Kw};

pub(crate) struct Ca {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub(crate) der: CertificateDer<'static>,
    pub(crate) pem: String,
}

pub(crate) fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A certificate and its key (PEM), signed by `ca`.
pub(crate) struct Leaf {
    pub(crate) der: CertificateDer<'static>,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Leaf {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone()]
    }
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

pub(crate) fn leaf(ca: &Ca, serial: u64, server: bool, expired: bool) -> Leaf {
    let sans: Vec<String> = if server {
        vec!["localhost".into(), "127.0.0.1".into()]
    } else {
        Vec::new()
    };
    let mut p = CertificateParams::new(sans).unwrap();
    p.serial_number = Some(serial.into());
    p.distinguished_name
        .push(DnType::CommonName, if server { "localhost" } else { "client" });
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let now = OffsetDateTime::now_utc();
    if expired {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    } else {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(30);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        der: cert.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Certificates on disk: the server's (`cert.pem`, `key.pem`) and the client CA's (`clients.pem`).
pub(crate) struct Pki {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    pub(crate) server_ca: Ca,
    pub(crate) client_ca: Ca,
    pub(crate) server: Leaf,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let server_ca = ca("keyward test server CA");
        let client_ca = ca("keyward test client CA");
        let server = leaf(&server_ca, 1, true, false);
        write_pair(&path, &server);
        std::fs::write(path.join("clients.pem"), &client_ca.pem).unwrap();
        Pki {
            _dir: dir,
            path,
            server_ca,
            client_ca,
            server,
        }
    }
}

pub(crate) fn write_pair(dir: &Path, l: &Leaf) {
    std::fs::write(dir.join("cert.pem"), &l.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &l.key_pem).unwrap();
}

async fn boot_tls(pki: &Pki, auth: ClientAuth, reload: Duration) -> Kw {
    let p = pki.path.clone();
    boot_with(move |cfg| {
        cfg.gateway.tls_cert_file = Some(p.join("cert.pem"));
        cfg.gateway.tls_key_file = Some(p.join("key.pem"));
        cfg.gateway.tls_client_auth = auth;
        if auth != ClientAuth::None {
            cfg.gateway.tls_client_ca_file = Some(p.join("clients.pem"));
        }
        cfg.gateway.tls_reload_interval = reload;
    })
    .await
}

pub(crate) fn gw_addr(kw: &Kw) -> SocketAddr {
    kw.running.as_ref().unwrap().gateway
}

pub(crate) async fn connect(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    client: Option<&Leaf>,
    alpn: &[u8],
) -> Result<TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let b = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(l) => b.with_client_auth_cert(l.chain(), l.key()).unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.map_err(|e| chain(&e))?;
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| chain(&e))
}

/// An error with its causes, e.g. "connection error: received fatal alert: CertificateRequired".
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// GET `path` with an API key over a fresh TLS connection; the status, or why it failed.
async fn fetch(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    client: Option<&Leaf>,
    h2: bool,
    path: &str,
    key: &str,
) -> Result<u16, String> {
    let go = async {
        let tls = connect(addr, root, client, if h2 { b"h2" } else { b"http/1.1" }).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let want: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        assert_eq!(alpn.as_deref(), Some(want), "ALPN");
        let io = TokioIo::new(tls);
        let req = hyper::Request::get(format!("https://localhost{path}"))
            .header("x-api-key", key)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = if h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| chain(&e))?;
            tokio::spawn(conn);
            send.send_request(req).await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| chain(&e))?;
            tokio::spawn(conn);
            send.send_request(req).await
        };
        resp.map(|r| r.status().as_u16()).map_err(|e| chain(&e))
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// The leaf certificate the gateway presents to a new connection.
async fn served(addr: SocketAddr, root: &CertificateDer<'static>) -> CertificateDer<'static> {
    let tls = connect(addr, root, None, b"http/1.1").await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

#[tokio::test]
async fn http1_and_http2_over_tls_and_plain_http_is_refused() {
    let pki = Pki::new();
    let mut kw = boot_tls(&pki, ClientAuth::None, Duration::from_secs(30)).await;
    let (_, key) = kw.key("tls", &["facts:read"], json!({})).await;
    let addr = gw_addr(&kw);
    let root = &pki.server_ca.der;
    assert_eq!(fetch(addr, root, None, false, "/fact", &key).await, Ok(200));
    assert_eq!(fetch(addr, root, None, true, "/fact", &key).await, Ok(200));
    assert_eq!(fetch(addr, root, None, true, "/fact", "kw_live_nope").await, Ok(401));
    assert_eq!(kw.up.seen.last()[":path"], vec!["/fact".to_owned()]);

    // Plain HTTP on the TLS port: no HTTP answer, and the listener keeps serving.
    let answer = raw(
        &addr.to_string(),
        b"GET /fact HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\n\r\n",
    )
    .await;
    assert!(!answer.starts_with("HTTP/"), "{answer}");
    // A client that never finishes its handshake does not hold anything up either.
    let _idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(fetch(addr, root, None, false, "/fact", &key).await, Ok(200));
    // A client trusting another CA refuses the gateway's certificate.
    let other = ca("someone else");
    assert!(fetch(addr, &other.der, None, false, "/fact", &key).await.is_err());
    // Shutdown is not held up by the half-open connection.
    tokio::time::timeout(Duration::from_secs(5), kw.stop()).await.unwrap();
    assert!(fetch(addr, root, None, false, "/fact", &key).await.is_err());
}

#[tokio::test]
async fn required_client_certificates() {
    let pki = Pki::new();
    let kw = boot_tls(&pki, ClientAuth::Required, Duration::from_secs(30)).await;
    let (_, key) = kw.key("mtls", &["facts:read"], json!({})).await;
    let addr = gw_addr(&kw);
    let root = &pki.server_ca.der;
    let good = leaf(&pki.client_ca, 10, false, false);
    let expired = leaf(&pki.client_ca, 11, false, true);
    let stranger = leaf(&ca("another client CA"), 12, false, false);

    assert_eq!(fetch(addr, root, Some(&good), false, "/fact", &key).await, Ok(200));
    assert_eq!(fetch(addr, root, Some(&good), true, "/fact", &key).await, Ok(200));
    let none = fetch(addr, root, None, false, "/fact", &key).await;
    assert!(
        none.as_ref().is_err_and(|e| e.contains("CertificateRequired")),
        "no client certificate: {none:?}"
    );
    let other = fetch(addr, root, Some(&stranger), false, "/fact", &key).await;
    assert!(
        other.as_ref().is_err_and(|e| e.contains("UnknownCA")),
        "certificate of another CA: {other:?}"
    );
    let old = fetch(addr, root, Some(&expired), true, "/fact", &key).await;
    assert!(
        old.as_ref().is_err_and(|e| e.contains("CertificateExpired")),
        "expired certificate: {old:?}"
    );
    // Still serving after the refusals.
    assert_eq!(fetch(addr, root, Some(&good), false, "/fact", &key).await, Ok(200));
}

#[tokio::test]
async fn optional_client_certificates() {
    let pki = Pki::new();
    let kw = boot_tls(&pki, ClientAuth::Optional, Duration::from_secs(30)).await;
    let (_, key) = kw.key("opt", &["facts:read"], json!({})).await;
    let addr = gw_addr(&kw);
    let root = &pki.server_ca.der;
    let good = leaf(&pki.client_ca, 20, false, false);
    let stranger = leaf(&ca("another client CA"), 21, false, false);
    assert_eq!(fetch(addr, root, None, false, "/fact", &key).await, Ok(200));
    assert_eq!(fetch(addr, root, None, true, "/fact", &key).await, Ok(200));
    assert_eq!(fetch(addr, root, Some(&good), false, "/fact", &key).await, Ok(200));
    // A certificate that is presented must still verify.
    assert!(fetch(addr, root, Some(&stranger), false, "/fact", &key).await.is_err());
}

#[tokio::test]
async fn certificate_is_reloaded_and_a_bad_one_is_ignored() {
    let pki = Pki::new();
    let kw = boot_tls(&pki, ClientAuth::None, Duration::from_millis(100)).await;
    let (_, key) = kw.key("reload", &["facts:read"], json!({})).await;
    let addr = gw_addr(&kw);
    let root = &pki.server_ca.der;
    assert_eq!(served(addr, root).await, pki.server.der);

    let next = leaf(&pki.server_ca, 2, true, false);
    assert_ne!(next.der, pki.server.der);
    write_pair(&pki.path, &next);
    let mut seen = served(addr, root).await;
    for _ in 0..100 {
        if seen == next.der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = served(addr, root).await;
    }
    assert_eq!(seen, next.der, "the new certificate is served without a restart");
    assert_eq!(fetch(addr, root, None, true, "/fact", &key).await, Ok(200));

    // A corrupt certificate, then a key that does not match: the last good one stays.
    std::fs::write(pki.path.join("cert.pem"), "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served(addr, root).await, next.der);
    let third = leaf(&pki.server_ca, 3, true, false);
    std::fs::write(pki.path.join("cert.pem"), &third.cert_pem).unwrap();
    std::fs::write(pki.path.join("key.pem"), &pki.server.key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served(addr, root).await, next.der);
    assert_eq!(fetch(addr, root, None, false, "/fact", &key).await, Ok(200));
}

#[tokio::test]
async fn revoked_client_certificates_are_refused() {
    let pki = Pki::new();
    let good = leaf(&pki.client_ca, 30, false, false);
    let revoked = leaf(&pki.client_ca, 31, false, false);
    let now = OffsetDateTime::now_utc();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(7),
        crl_number: 1u64.into(),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: 31u64.into(),
            revocation_time: now - time::Duration::minutes(5),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&pki.client_ca.issuer)
    .unwrap();
    std::fs::write(pki.path.join("clients.crl.pem"), crl.pem().unwrap()).unwrap();
    let p = pki.path.clone();
    let kw = boot_with(move |cfg| {
        cfg.gateway.tls_cert_file = Some(p.join("cert.pem"));
        cfg.gateway.tls_key_file = Some(p.join("key.pem"));
        cfg.gateway.tls_client_auth = ClientAuth::Required;
        cfg.gateway.tls_client_ca_file = Some(p.join("clients.pem"));
        cfg.gateway.tls_crl_files = vec![p.join("clients.crl.pem")];
    })
    .await;
    let (_, key) = kw.key("crl", &["facts:read"], json!({})).await;
    let addr = gw_addr(&kw);
    let root = &pki.server_ca.der;
    assert_eq!(fetch(addr, root, Some(&good), false, "/fact", &key).await, Ok(200));
    let r = fetch(addr, root, Some(&revoked), false, "/fact", &key).await;
    assert!(
        r.as_ref().is_err_and(|e| e.contains("CertificateRevoked")),
        "revoked: {r:?}"
    );
}

/// Any request over a fresh HTTP/1.1 TLS connection; the status and the body.
pub(crate) async fn send(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    client: Option<&Leaf>,
    req: hyper::Request<http_body_util::Full<Bytes>>,
) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let tls = connect(addr, root, client, b"http/1.1").await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

/// RFC 8705 §3: a token requested over a connection with a client certificate is bound to it
/// (`cnf.x5t#S256`); the gateway then wants that certificate on the connection.
#[tokio::test]
async fn certificate_bound_access_tokens() {
    use base64::Engine as _;
    let pki = Pki::new();
    let p = pki.path.clone();
    let kw = boot_with(move |cfg| {
        cfg.gateway.tls_cert_file = Some(p.join("cert.pem"));
        cfg.gateway.tls_key_file = Some(p.join("key.pem"));
        cfg.gateway.tls_client_auth = ClientAuth::Optional;
        cfg.gateway.tls_client_ca_file = Some(p.join("clients.pem"));
        cfg.oauth.enabled = true;
        for r in cfg.routes.iter_mut() {
            r.tokens = true;
        }
    })
    .await;
    let addr = gw_addr(&kw);
    let root = pki.server_ca.der.clone();
    let alice = leaf(&pki.client_ca, 10, false, false);
    let mallory = leaf(&pki.client_ca, 11, false, false);
    let (_, _) = kw
        .admin(reqwest::Method::POST, "/v1/apps", Some(json!({"name": "cats"})))
        .await;
    let (s, c) = kw
        .admin(
            reqwest::Method::POST,
            "/v1/clients",
            Some(json!({"app": "cats", "scopes": ["facts:read"]})),
        )
        .await;
    assert_eq!(s, 201);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        c["client_id"].as_str().unwrap(),
        c["client_secret"].as_str().unwrap()
    ));
    let token_req = || {
        hyper::Request::post("https://localhost/oauth/token")
            .header("host", "localhost")
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(Bytes::from_static(
                b"grant_type=client_credentials",
            )))
            .unwrap()
    };
    let fact = |token: &str| {
        hyper::Request::get("https://localhost/fact")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    let token_of = |body: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(body).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let cnf_of = |token: &str| {
        let part = token.split('.').nth(1).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap();
        v["cnf"].clone()
    };
    // Over a connection with Alice's certificate: bound to it.
    let (s, body) = send(addr, &root, Some(&alice), token_req()).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let bound = token_of(&body);
    let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, alice.der.as_ref()).as_ref());
    assert_eq!(cnf_of(&bound)["x5t#S256"], x5t.as_str());
    assert_eq!(send(addr, &root, Some(&alice), fact(&bound)).await.0, 200);
    let (s, body) = send(addr, &root, Some(&mallory), fact(&bound)).await;
    assert_eq!(s, 401, "another certificate");
    assert!(String::from_utf8_lossy(&body).contains("invalid_token"));
    assert_eq!(send(addr, &root, None, fact(&bound)).await.0, 401, "no certificate");
    // Without a certificate the token is not bound and works without one.
    let (s, body) = send(addr, &root, None, token_req()).await;
    assert_eq!(s, 200);
    let plain = token_of(&body);
    assert!(cnf_of(&plain).is_null());
    assert_eq!(send(addr, &root, None, fact(&plain)).await.0, 200);
    let (_, meta) = send(
        addr,
        &root,
        None,
        hyper::Request::get("https://localhost/.well-known/oauth-authorization-server")
            .header("host", "localhost")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    assert!(meta["issuer"].as_str().unwrap().starts_with("https://"));
}
