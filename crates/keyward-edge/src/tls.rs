//! TLS listeners: rustls on the aws-lc-rs provider, ALPN `h2` and `http/1.1`, optional or
//! required client certificates (verified against a CA bundle, with CRLs; optionally also
//! self-signed ones, for RFC 8705 `self_signed_tls_client_auth`), and the server certificate,
//! the client CA bundle and the CRLs re-read from disk when their files change, without a
//! restart.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::ConnectInfo;
use axum::Router;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::DigitallySignedStruct;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::serve::HttpLimits;

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
    /// Also accept client certificates that do not chain to the CA bundle (self-signed ones);
    /// the handshake still proves possession of the key, and requests carry
    /// `chain_verified = false` for them.
    pub accept_self_signed: bool,
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
/// the client presented one the listener accepted.
#[derive(Debug, Clone)]
pub struct PeerCertificates {
    pub chain: Arc<Vec<CertificateDer<'static>>>,
    /// The chain verified against the client CA bundle and CRLs (always true unless the
    /// listener accepts self-signed certificates).
    pub chain_verified: bool,
}

impl PeerCertificates {
    /// The leaf certificate as the engine wants it.
    pub fn presented(&self) -> Option<keyward_engine::mtls::PresentedCert<'_>> {
        self.chain.first().map(|c| keyward_engine::mtls::PresentedCert {
            der: c.as_ref(),
            chain_verified: self.chain_verified,
        })
    }
}

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
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca)? {
        roots.add(c).map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
    }
    Ok(roots)
}

fn read_crls(files: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut crls = Vec::new();
    for f in files {
        let list = CertificateRevocationListDer::pem_file_iter(f)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError(format!("{}: {e}", f.display())))?;
        if list.is_empty() {
            return Err(TlsError(format!("{}: no PEM revocation list", f.display())));
        }
        crls.extend(list);
    }
    Ok(crls)
}

/// Client verification that accepts certificates chaining to the CA bundle and, failing that,
/// certificates of unknown issuers (self-signed ones) that are within their validity period.
/// Revoked, expired or otherwise broken chains are still refused. The handshake signature is
/// always checked, so the client holds the certificate's key.
#[derive(Debug)]
struct SelfSignedToo {
    ca: Option<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for SelfSignedToo {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // No hints: clients may send whatever certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(ca) = &self.ca {
            match ca.verify_client_cert(end_entity, intermediates, now) {
                Ok(v) => return Ok(v),
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {}
                Err(e) => return Err(e),
            }
        }
        let cert = keyward_token::ClientCert::parse(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now > cert.not_after {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired));
        }
        if now < cert.not_before {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidYet));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What the trust files produce: the rustls configuration and, when self-signed certificates
/// are accepted, the CA-only verifier that tells requests whether their chain verified.
struct Trust {
    config: Arc<ServerConfig>,
    chain_check: Option<Arc<dyn ClientCertVerifier>>,
}

fn build_trust(settings: &TlsSettings, cert: Arc<ReloadingCert>) -> Result<Trust, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS: {e}")))?;
    let ca_verifier = |allow_none: bool| -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
        let Some(ca) = &settings.client_ca_file else {
            return Ok(None);
        };
        let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider.clone())
            .with_crls(read_crls(&settings.crl_files)?);
        if allow_none {
            v = v.allow_unauthenticated();
        }
        let v = v
            .build()
            .map_err(|e| TlsError(format!("client certificate verifier: {e}")))?;
        Ok(Some(v))
    };
    let (builder, chain_check) = match (settings.client_auth, settings.accept_self_signed) {
        (ClientAuth::None, _) => (builder.with_no_client_auth(), None),
        (auth, true) => {
            let ca = ca_verifier(false)?;
            let v = Arc::new(SelfSignedToo {
                ca: ca.clone(),
                mandatory: auth == ClientAuth::Required,
                algorithms: provider.signature_verification_algorithms,
            });
            (builder.with_client_cert_verifier(v), ca)
        }
        (auth, false) => {
            let v = ca_verifier(auth == ClientAuth::Optional)?
                .ok_or_else(|| TlsError("client certificates need a CA bundle (tls_client_ca_file)".into()))?;
            (builder.with_client_cert_verifier(v), None)
        }
    };
    let mut cfg = builder.with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Trust {
        config: Arc::new(cfg),
        chain_check,
    })
}

fn trust_stamp(settings: &TlsSettings) -> Vec<(Option<SystemTime>, u64)> {
    settings
        .client_ca_file
        .iter()
        .chain(settings.crl_files.iter())
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => (m.modified().ok(), m.len()),
            Err(_) => (None, 0),
        })
        .collect()
}

/// A TLS listener's state: the server certificate, and the client trust (CA bundle, CRLs),
/// each re-read when its files change.
pub struct TlsServer {
    settings: TlsSettings,
    cert: Arc<ReloadingCert>,
    trust: RwLock<Arc<Trust>>,
    trust_seen: Mutex<Vec<(Option<SystemTime>, u64)>>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Reads every file; fails naming the first one that is unusable.
    pub fn load(settings: &TlsSettings) -> Result<Arc<TlsServer>, TlsError> {
        let cert = Arc::new(ReloadingCert::load(&settings.cert_file, &settings.key_file)?);
        let seen = trust_stamp(settings);
        let trust = build_trust(settings, cert.clone())?;
        Ok(Arc::new(TlsServer {
            settings: settings.clone(),
            cert,
            trust: RwLock::new(Arc::new(trust)),
            trust_seen: Mutex::new(seen),
        }))
    }

    fn trust(&self) -> Arc<Trust> {
        match self.trust.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The rustls configuration new connections get.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.trust().config.clone()
    }

    /// Re-reads the CA bundle and CRLs when they changed. `Ok(true)`: new connections use them;
    /// `Err`: the new files are unusable and the previous trust stays.
    pub fn reload_trust_if_changed(&self) -> Result<bool, TlsError> {
        let now = trust_stamp(&self.settings);
        {
            let mut seen = match self.trust_seen.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let trust = build_trust(&self.settings, self.cert.clone())?;
        match self.trust.write() {
            Ok(mut g) => *g = Arc::new(trust),
            Err(p) => *p.into_inner() = Arc::new(trust),
        }
        Ok(true)
    }

    /// Checks the certificate, key, CA bundle and CRL files every `reload_interval` until
    /// `shutdown` turns true.
    pub async fn reload_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let this = self.clone();
            let done =
                tokio::task::spawn_blocking(move || (this.cert.reload_if_changed(), this.reload_trust_if_changed()))
                    .await;
            let Ok((cert, trust)) = done else {
                tracing::error!("TLS reload task failed");
                continue;
            };
            match cert {
                Ok(true) => tracing::info!(cert = %self.settings.cert_file.display(), "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot reload the TLS certificate; the previous one is still served")
                }
            }
            match trust {
                Ok(true) => tracing::info!("TLS client CA bundle / CRLs reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    error = %e,
                    "cannot reload the TLS client CA bundle or CRLs; the previous ones stay in force"
                ),
            }
        }
    }

    /// Serves `router` over TLS on `listener` until `shutdown` turns true, then lets open
    /// connections finish their requests (graceful shutdown) before returning. Every request
    /// carries `ConnectInfo<SocketAddr>` and, when the client presented one,
    /// [`PeerCertificates`]. At most `limits.max_connections` connections (handshakes
    /// included) are open at once; beyond, new ones wait to be accepted (see [`crate::serve`]).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        router: Router,
        limits: HttpLimits,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<()> {
        let limits = Arc::new(limits);
        let max = limits.max_connections;
        let stop = shutdown.clone();
        crate::serve::accept_loop(listener, max, stop, move |tcp, peer, guard| {
            let trust = self.trust();
            let task = Connection {
                acceptor: TlsAcceptor::from(trust.config.clone()),
                chain_check: trust.chain_check.clone(),
                router: router.clone(),
                handshake_timeout: self.settings.handshake_timeout,
                limits: limits.clone(),
                shutdown: shutdown.clone(),
                _guard: guard,
            };
            tokio::spawn(task.run(tcp, peer));
        })
        .await
    }
}

struct Connection {
    acceptor: TlsAcceptor,
    /// Set when self-signed certificates are accepted: tells whether a chain verified.
    chain_check: Option<Arc<dyn ClientCertVerifier>>,
    router: Router,
    handshake_timeout: Duration,
    limits: Arc<HttpLimits>,
    shutdown: watch::Receiver<bool>,
    /// The connection's place under `max_connections`, given back when it ends.
    _guard: crate::serve::ConnectionGuard,
}

impl Connection {
    async fn run(mut self, tcp: TcpStream, peer: SocketAddr) {
        // (TCP_NODELAY is set by the accept loop.) A handshake in progress is abandoned on shutdown rather than waited for.
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
        let certs = tls.get_ref().1.peer_certificates().and_then(|c| {
            let (leaf, intermediates) = c.split_first()?;
            let chain_verified = match &self.chain_check {
                None => true,
                Some(v) => v.verify_client_cert(leaf, intermediates, UnixTime::now()).is_ok(),
            };
            Some(PeerCertificates {
                chain: Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()),
                chain_verified,
            })
        });
        crate::serve::connection(tls, self.router, &self.limits, self.shutdown, peer, move |ext| {
            ext.insert(ConnectInfo(peer));
            if let Some(c) = &certs {
                ext.insert(c.clone());
            }
        })
        .await;
    }
}
