//! HTTPS upstreams with certificates made here: trusted, untrusted, wrong name, `server_name`,
//! expired, client certificate required (with and without one configured).

use keyward_upstream::{GroupConfig, PoolOptions, Protocol, UpstreamError, Upstreams};

use crate::common::*;

struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
    server: Server,
}

async fn setup(names: &[&str], expired: bool, client_ca: Option<&Ca>) -> Setup {
    let ca = ca("upstream-ca");
    let (cert, key) = leaf(&ca, names, expired);
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "ca.pem", &ca.pem);
    let tls = Tls::Server {
        cert_pem: cert,
        key_pem: key,
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        client_ca: client_ca.map(|c| c.der.clone()),
    };
    let server = Server::start_on("127.0.0.1:0".parse().unwrap(), 1, echo_id(), tls).await;
    Setup { dir, ca, server }
}

fn cfg(s: &Setup, host: &str) -> GroupConfig {
    let mut g = group(
        "tls",
        vec![format!("https://{host}:{}/base", s.server.addr.port()).parse().unwrap()],
    );
    g.ca_file = Some(s.dir.path().join("ca.pem"));
    g
}

async fn call(g: GroupConfig) -> Result<String, UpstreamError> {
    let ups = Upstreams::build(&[g], PoolOptions::default())?;
    let resp = ups.group("tls").unwrap().send(get("/x?y=1"), &opts()).await?;
    Ok(text(resp).await)
}

#[tokio::test]
async fn trusted_private_ca() {
    let s = setup(&["localhost"], false, None).await;
    let body = call(cfg(&s, "localhost")).await.unwrap();
    assert!(body.ends_with("/base/x?y=1"), "{body}");
    let _ = &s.ca;
}

#[tokio::test]
async fn untrusted_certificate_is_upstream_tls_unknown_issuer() {
    let s = setup(&["localhost"], false, None).await;
    // System roots (no ca_file): the private CA is unknown.
    let mut g = cfg(&s, "localhost");
    g.ca_file = None;
    let e = call(g).await.unwrap_err();
    assert_eq!(e.code(), "upstream_tls", "{e}");
    assert!(e.to_string().contains("unknown issuer"), "{e}");
    // Another private CA: unknown too.
    let other = ca("other");
    let mut g = cfg(&s, "localhost");
    g.ca_file = Some(write(&s.dir, "other.pem", &other.pem));
    let e = call(g).await.unwrap_err();
    assert!(e.to_string().contains("unknown issuer"), "{e}");
}

#[tokio::test]
async fn wrong_name_then_server_name_fixes_it() {
    let s = setup(&["api.internal"], false, None).await;
    let e = call(cfg(&s, "127.0.0.1")).await.unwrap_err();
    assert_eq!(e.code(), "upstream_tls");
    assert!(e.to_string().contains("not valid for the name"), "{e}");
    let mut g = cfg(&s, "127.0.0.1");
    g.server_name = Some("api.internal".into());
    let body = call(g).await.unwrap();
    assert!(body.contains("/base/x?y=1"), "{body}");
}

#[tokio::test]
async fn expired_certificate() {
    let s = setup(&["localhost"], true, None).await;
    let e = call(cfg(&s, "localhost")).await.unwrap_err();
    assert_eq!(e.code(), "upstream_tls");
    assert!(e.to_string().contains("expired"), "{e}");
}

#[tokio::test]
async fn client_certificate_required_by_the_upstream() {
    let clients = ca("client-ca");
    let s = setup(&["localhost"], false, Some(&clients)).await;
    for protocol in [Protocol::Http1, Protocol::H2, Protocol::Auto] {
        // Without a client certificate: refused, and said so.
        let mut g = cfg(&s, "localhost");
        g.protocol = protocol;
        let e = call(g.clone()).await.unwrap_err();
        assert_eq!(e.code(), "upstream_tls", "{protocol:?}: {e}");
        assert!(e.to_string().contains("client certificate"), "{protocol:?}: {e}");
        // With one signed by the CA the upstream trusts: through.
        let (cert, key) = leaf(&clients, &["keyward-gw"], false);
        g.client_cert_file = Some(write(&s.dir, "c.pem", &cert));
        g.client_key_file = Some(write(&s.dir, "c.key", &key));
        let body = call(g.clone()).await.unwrap();
        assert!(body.contains("/base/x"), "{body}");
        // One from a CA it does not trust: refused.
        let stranger = ca("stranger");
        let (cert, key) = leaf(&stranger, &["keyward-gw"], false);
        g.client_cert_file = Some(write(&s.dir, "s.pem", &cert));
        g.client_key_file = Some(write(&s.dir, "s.key", &key));
        let e = call(g).await.unwrap_err();
        assert_eq!(e.code(), "upstream_tls", "{protocol:?}: {e}");
        assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
    }
}

#[tokio::test]
async fn bad_tls_files_are_config_errors_without_secrets() {
    let s = setup(&["localhost"], false, None).await;
    let mut g = cfg(&s, "localhost");
    g.ca_file = Some(s.dir.path().join("missing.pem"));
    let e = call(g).await.unwrap_err();
    assert_eq!(e.code(), "upstream_config");
    assert!(e.to_string().contains("ca_file"), "{e}");
    let mut g = cfg(&s, "localhost");
    g.ca_file = Some(write(&s.dir, "empty.pem", "not a pem"));
    assert!(call(g).await.unwrap_err().to_string().contains("no certificate"));
    let mut g = cfg(&s, "localhost");
    let (cert, _) = leaf(&s.ca, &["c"], false);
    g.client_cert_file = Some(write(&s.dir, "c.pem", &cert));
    let secretish = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXZhbHVlLTEyMzQ=\n-----END PRIVATE KEY-----\n";
    g.client_key_file = Some(write(&s.dir, "bad.key", secretish));
    let e = call(g).await.unwrap_err();
    assert_eq!(e.code(), "upstream_config");
    assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
}
