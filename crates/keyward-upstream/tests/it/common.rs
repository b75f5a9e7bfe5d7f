//! Real upstream servers on loopback: hyper (HTTP/1.1 and h2c on one port, or TLS with ALPN),
//! raw TCP ones (HTTP/1.0, silent, resetting, garbage), and test certificates made with rcgen.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyward_upstream::{GroupConfig, PoolOptions, SendOptions, TargetUrl, Upstreams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub type Handler =
    Arc<dyn Fn(Request<Incoming>, usize) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>> + Send + Sync>;

/// A body of frames given up front (data and trailers), or fed through a channel.
pub enum TestBody {
    Frames(VecDeque<Frame<Bytes>>),
    Chan(tokio::sync::mpsc::Receiver<Frame<Bytes>>),
}

impl TestBody {
    pub fn text(s: impl Into<String>) -> Self {
        TestBody::Frames(VecDeque::from([Frame::data(Bytes::from(s.into()))]))
    }
    pub fn empty() -> Self {
        TestBody::Frames(VecDeque::new())
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            TestBody::Frames(f) => Poll::Ready(f.pop_front().map(Ok)),
            TestBody::Chan(rx) => rx.poll_recv(cx).map(|f| f.map(Ok)),
        }
    }
}

pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    Arc::new(move |r, id| Box::pin(f(r, id)))
}

/// Answers `server <id> <method> <path>` (and the request's version in `x-version`).
pub fn echo_id() -> Handler {
    handler(|req: Request<Incoming>, id| async move {
        let line = format!("server {id} {} {}", req.method(), req.uri());
        Response::builder()
            .header("x-version", format!("{:?}", req.version()))
            .header(
                "x-host",
                req.headers()
                    .get("host")
                    .map(|h| h.to_str().unwrap_or("?").to_owned())
                    .unwrap_or_default(),
            )
            .body(TestBody::text(line))
            .unwrap()
    })
}

pub enum Tls {
    None,
    /// Certificate chain and key (PEM), ALPN list, and an optional client CA (required client certs).
    Server {
        cert_pem: String,
        key_pem: String,
        alpn: Vec<Vec<u8>>,
        client_ca: Option<CertificateDer<'static>>,
    },
}

/// A hyper server on loopback (HTTP/1.1 and h2c with prior knowledge on the same port, or TLS).
pub struct Server {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    pub async fn start(id: usize, h: Handler) -> Server {
        Server::start_on("127.0.0.1:0".parse().unwrap(), id, h, Tls::None).await
    }

    pub async fn start_on(addr: SocketAddr, id: usize, h: Handler, tls: Tls) -> Server {
        // A killed server's listener closes once its aborted task is dropped: retry a little.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = match tls {
            Tls::None => None,
            Tls::Server {
                cert_pem,
                key_pem,
                alpn,
                client_ca,
            } => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let b = rustls::ServerConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .unwrap();
                let b = match client_ca {
                    Some(ca) => {
                        let mut roots = rustls::RootCertStore::empty();
                        roots.add(ca).unwrap();
                        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                            .build()
                            .unwrap();
                        b.with_client_cert_verifier(v)
                    }
                    None => b.with_no_client_auth(),
                };
                let mut cfg = b.with_single_cert(chain, key).unwrap();
                cfg.alpn_protocols = alpn;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
            }
        };
        let (rq, cn, ts) = (requests.clone(), connections.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                cn.fetch_add(1, Ordering::SeqCst);
                let (h, rq) = (h.clone(), rq.clone());
                let acceptor = acceptor.clone();
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        rq.fetch_add(1, Ordering::SeqCst);
                        let fut = h(req, id);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc).await;
                        }
                        Some(a) => {
                            let Ok(tls) = a.accept(tcp).await else { return };
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc).await;
                        }
                    }
                });
                ts.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Server {
            addr,
            requests,
            connections,
            tasks,
        }
    }

    pub fn url(&self) -> TargetUrl {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// Stops accepting and drops every connection (the port refuses from now on).
    pub fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A raw TCP server: `respond` gets each accepted connection.
pub async fn raw_server<F, Fut>(respond: F) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let respond = Arc::new(respond);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let r = respond.clone();
            tokio::spawn(async move { r(tcp).await });
        }
    });
    (addr, count, task)
}

/// Reads a request head (up to the blank line) from `tcp`.
pub async fn read_head(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut b).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
        if buf.len() > 65536 {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// An HTTP/1.0 server (`http.server` style): answers and closes.
pub async fn http10_server() -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    raw_server(|mut tcp| async move {
        let _ = read_head(&mut tcp).await;
        let _ = tcp
            .write_all(
                b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3\r\nContent-Type: text/plain\r\n\r\nhello from 1.0",
            )
            .await;
        let _ = tcp.shutdown().await;
    })
    .await
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub fn url(addr: SocketAddr) -> TargetUrl {
    format!("http://{addr}").parse().unwrap()
}

pub fn group(name: &str, targets: Vec<TargetUrl>) -> GroupConfig {
    GroupConfig::new(name, targets)
}

pub fn build(groups: &[GroupConfig]) -> Upstreams {
    Upstreams::build(groups, PoolOptions::default()).unwrap()
}

pub fn opts() -> SendOptions<'static> {
    SendOptions {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        hash_key: None,
        strip_prefix: None,
    }
}

pub fn get(path: &str) -> Request<keyward_upstream::RequestBody> {
    Request::get(path).body(keyward_upstream::RequestBody::Empty).unwrap()
}

pub async fn text<B: Body>(resp: Response<B>) -> String
where
    B::Error: std::fmt::Debug,
{
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

// ---- certificates ----

pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
    pub pem: String,
}

pub fn ca(name: &str) -> Ca {
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

/// A leaf for `names` signed by `ca`: (cert PEM, key PEM).
pub fn leaf(ca: &Ca, names: &[&str], expired: bool) -> (String, String) {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("client"));
    let now = time::OffsetDateTime::now_utc();
    if expired {
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    } else {
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(30);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}
