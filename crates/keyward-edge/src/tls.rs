//! TLS listeners: rustls on the aws-lc-rs provider, ALPN `h2` and `http/1.1`, optional or
//! required client certificates (verified against a CA bundle, with CRLs), and a server
//! certificate re-read from disk when its files change, without a restart.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No certificate is asked for (default).
    #[default]
    None,
    /// A certificate is asked for; one that is presented must verify, none is fine too.
    Optional,
    /// Connections without a valid certificate fail in the handshake.
    Required,
}

/// A TLS listener's settings (paths already resolved).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM bundle of the CAs client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// PEM certificate revocation lists of the client CAs.
    pub crl_files: Vec<PathBuf>,
    /// How often the certificate and key files are checked for changes.
    pub reload_interval: Duration,
    /// How long a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
}

/// A TLS setup error, naming the file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The client's certificate chain (leaf first), in the request extensions of connections where
/// the client presented one that verified.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{}: no PEM certificate", path.display())));
    }
    Ok(certs)
}

fn read_certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError(format!("{}: {e}", key.display())))?;
    CertifiedKey::from_der(chain, der, provider)
        .map_err(|e| TlsError(format!("{} and {}: {e}", cert.display(), key.display())))
}

/// Modification time and length of both files: a change of either means "read them again".
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    [one(cert), one(key)]
}

/// The server certificate, re-read when its files change ([`ReloadingCert::reload_if_changed`]).
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Stamp>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Reads the certificate chain and key; fails when they are unreadable or do not match.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let provider = provider();
        let seen = stamp(cert_file, key_file);
        let key = read_certified_key(cert_file, key_file, &provider)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        })
    }

    /// The certificate served to new connections.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the files when their modification time or length changed. `Ok(true)`: a new
    /// certificate is served; `Err`: the new files are unusable and the old certificate stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.cert_file, &self.key_file);
        {
            let mut seen = match self.seen.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if *seen == now {
                return Ok(false);
            }
            // Recorded even when the files turn out bad: one error per change, not per check.
            *seen = now;
        }
        let key = read_certified_key(&self.cert_file, &self.key_file, &self.provider)?;
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(key),
            Err(p) => *p.into_inner() = Arc::new(key),
        }
        Ok(true)
    }

    /// Checks the files every `every` until `shutdown` turns true.
    pub async fn reload_loop(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "cannot reload the TLS certificate; the previous one is still served"
                ),
                Err(e) => tracing::error!(error = %e, "TLS certificate reload task failed"),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls configuration of a listener: its certificate (reloading), client verification and
/// ALPN `h2`, `http/1.1`.
pub fn server_config(settings: &TlsSettings, cert: Arc<ReloadingCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS: {e}")))?;
    let builder = match (settings.client_auth, &settings.client_ca_file) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError(
                "client certificates need a CA bundle (tls_client_ca_file)".into(),
            ))
        }
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
            }
            let mut crls = Vec::new();
            for f in &settings.crl_files {
                let list = CertificateRevocationListDer::pem_file_iter(f)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| TlsError(format!("{}: {e}", f.display())))?;
                if list.is_empty() {
                    return Err(TlsError(format!("{}: no PEM revocation list", f.display())));
                }
                crls.extend(list);
            }
            let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).with_crls(crls);
            if auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| TlsError(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true, then lets open
/// connections finish their requests (graceful shutdown) before returning. Every request
/// carries `ConnectInfo<SocketAddr>` and, when the client presented one, [`PeerCertificates`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    // Every connection task holds a sender; `recv` returns `None` once they all have ended.
    let (alive, mut all_done) = mpsc::channel::<Infallible>(1);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => Some(r),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let (tcp, peer) = match accepted {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            None => break,
        };
        let task = Connection {
            acceptor: acceptor.clone(),
            router: router.clone(),
            handshake_timeout,
            shutdown: shutdown.clone(),
            _alive: alive.clone(),
        };
        tokio::spawn(task.run(tcp, peer));
    }
    drop(listener);
    drop(alive);
    let _ = all_done.recv().await;
    Ok(())
}

struct Connection {
    acceptor: TlsAcceptor,
    router: Router,
    handshake_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    _alive: mpsc::Sender<Infallible>,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream, peer: SocketAddr) {
        // Responses go out as soon as hyper writes them, never held back by Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
        // A handshake in progress is abandoned on shutdown rather than waited for.
        let handshake = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp));
        let shaken = tokio::select! {
            r = handshake => Some(r),
            _ = self.shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(shaken) = shaken else {
            return;
        };
        let tls = match shaken {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let certs = tls
            .get_ref()
            .1
            .peer_certificates()
            .filter(|c| !c.is_empty())
            .map(|c| PeerCertificates(Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())));
        let service = self.router.map_request(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(c) = &certs {
                req.extensions_mut().insert(c.clone());
            }
            req
        });
        let builder = Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service));
        let mut conn = std::pin::pin!(conn);
        let done = tokio::select! {
            r = conn.as_mut() => Some(r),
            _ = self.shutdown.wait_for(|stop| *stop) => None,
        };
        let result = match done {
            Some(r) => r,
            None => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
