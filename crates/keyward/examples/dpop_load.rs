//! Closed-loop load generator for the gateway's token routes (issue 6, point 7): DPoP vs Bearer.
//!
//! A DPoP request needs a fresh, single-use proof, so wrk cannot make it. This tool runs
//! `--connections` tasks, each on its own keep-alive HTTP/1.1 connection, for `--duration`
//! seconds, sending `GET <url>` and counting 200s; it prints requests/s and latency percentiles.
//!
//! It fetches its own access token (client_credentials, client_secret_basic) from
//! `<base>/oauth/token`: with a DPoP proof in modes `dpop`, without one in `bearer` and
//! `bearer-proofs`.
//!
//! Modes:
//! * `bearer`: `Authorization: Bearer <token>`.
//! * `dpop`: `Authorization: DPoP <token>` + `DPoP: <fresh proof>` per request (ES256, or
//!   EdDSA with `--alg EdDSA`).
//! * `bearer-proofs`: builds and signs a proof per request exactly like `dpop`, but sends it
//!   nowhere (Bearer request): separates the client's proof cost from the server's.
//!
//! ```text
//! cargo run --release -p keyward --example dpop_load -- \
//!     --base http://127.0.0.1:8080 --issuer http://127.0.0.1:8080 --path /fact \
//!     --client-id ID --client-secret SECRET --mode dpop --connections 32 --duration 10
//! ```
//! Output: one `key: value` line per figure (parsed by bench/dpop.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod load_common;

use load_common::{arg, ath, http1, tcp, Prover};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

type Tls = Option<Arc<rustls::ClientConfig>>;

async fn connect(addr: &str, tls: &Tls) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tcp(addr).await;
    match tls {
        None => http1(stream).await,
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, stream)
                .await
                .unwrap();
            http1(tls).await
        }
    }
}

/// TLS client configuration: trust `ca`, present `cert`/`key` when given.
fn tls_config(ca: &str, cert: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match cert {
        Some((c, k)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c).unwrap().map(|c| c.unwrap()).collect(),
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let base = arg(&args, "--base", None);
    let issuer = arg(&args, "--issuer", Some(&base));
    let path = arg(&args, "--path", Some("/fact"));
    let id = arg(&args, "--client-id", None);
    let secret = arg(&args, "--client-secret", None);
    let mode = arg(&args, "--mode", Some("bearer"));
    let conns: usize = arg(&args, "--connections", Some("32")).parse().unwrap();
    let secs: f64 = arg(&args, "--duration", Some("10")).parse().unwrap();
    assert!(
        matches!(mode.as_str(), "bearer" | "dpop" | "bearer-proofs"),
        "--mode bearer|dpop|bearer-proofs"
    );
    // https: --ca FILE (required), --cert FILE --key FILE (client certificate on the load
    // connections), --token-cert yes|no (whether the token request presents it: yes binds the
    // token to the certificate, cnf.x5t#S256).
    let (addr, tls, token_tls): (String, Tls, Tls) = if let Some(a) = base.strip_prefix("https://") {
        let ca = arg(&args, "--ca", None);
        let cert = args
            .iter()
            .any(|a| a == "--cert")
            .then(|| (arg(&args, "--cert", None), arg(&args, "--key", None)));
        let load = tls_config(&ca, cert.as_ref().map(|(c, k)| (c.as_str(), k.as_str())));
        let token = if arg(&args, "--token-cert", Some("yes")) == "yes" {
            load.clone()
        } else {
            tls_config(&ca, None)
        };
        (a.trim_end_matches('/').to_owned(), Some(load), Some(token))
    } else {
        let a = base
            .strip_prefix("http://")
            .expect("--base http://HOST:PORT or https://HOST:PORT");
        (a.trim_end_matches('/').to_owned(), None, None)
    };
    let dpop = mode == "dpop";
    let prover = Arc::new(match arg(&args, "--alg", Some("ES256")).as_str() {
        "ES256" => Prover::new(),
        "EdDSA" => Prover::with_alg(keyward_token::Algorithm::EdDSA),
        other => panic!("--alg ES256 or EdDSA, not {other}"),
    });

    // The access token.
    let mut send = connect(&addr, &token_tls).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let mut req = hyper::Request::post("/oauth/token")
        .header("host", &addr)
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded");
    if dpop {
        req = req.header("dpop", prover.proof("POST", &format!("{issuer}/oauth/token"), None));
    }
    let resp = send
        .send_request(
            req.body(Full::new(Bytes::from_static(b"grant_type=client_credentials")))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "token request: {}", String::from_utf8_lossy(&body));
    let t: Value = serde_json::from_slice(&body).unwrap();
    let bound = {
        let payload = t["access_token"].as_str().unwrap().split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims
            .get("cnf")
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none".into())
    };
    let token = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(t["token_type"], if dpop { "DPoP" } else { "Bearer" });
    let ath = ath(&token);
    let htu = format!("{issuer}{path}");
    let auth = if dpop {
        format!("DPoP {token}")
    } else {
        format!("Bearer {token}")
    };
    drop(send);

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (addr, path, auth, htu, ath, mode) = (
            addr.clone(),
            path.clone(),
            auth.clone(),
            htu.clone(),
            ath.clone(),
            mode.clone(),
        );
        let (prover, stop, errors, tls) = (prover.clone(), stop.clone(), errors.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            let mut send = connect(&addr, &tls).await;
            let mut lat = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let mut req = hyper::Request::get(path.as_str())
                    .header("host", addr.as_str())
                    .header("authorization", auth.as_str());
                match mode.as_str() {
                    "dpop" => req = req.header("dpop", prover.proof("GET", &htu, Some(&ath))),
                    "bearer-proofs" => {
                        std::hint::black_box(prover.proof("GET", &htu, Some(&ath)));
                    }
                    _ => {}
                }
                let req = req.body(Full::new(Bytes::new())).unwrap();
                if send.ready().await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    send = connect(&addr, &tls).await;
                    continue;
                }
                match send.send_request(req).await {
                    Ok(r) => {
                        let ok = r.status() == 200;
                        let _ = r.into_body().collect().await;
                        if ok {
                            lat.push(t0.elapsed());
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        send = connect(&addr, &tls).await;
                    }
                }
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |q: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1;
        all[i].as_secs_f64() * 1e3
    };
    println!("mode: {mode}");
    println!("token_cnf: {bound}");
    println!("connections: {conns}");
    println!("duration_s: {elapsed:.3}");
    println!("ok: {}", all.len());
    println!("errors: {}", errors.load(Ordering::Relaxed));
    println!("rps: {:.1}", all.len() as f64 / elapsed);
    println!("p50_ms: {:.3}", pct(0.50));
    println!("p90_ms: {:.3}", pct(0.90));
    println!("p99_ms: {:.3}", pct(0.99));
}
