//! TLS towards `https` targets: rustls on aws-lc-rs (the one crypto provider of the graph), the
//! system's roots unless `ca_file` is set, `server_name` for SNI and the certificate check, a client
//! certificate for mutual TLS; ALPN from the group's protocol.

use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{GroupConfig, Protocol};
use crate::error::UpstreamError;

/// The rustls client configuration of one group, and the name every target is checked against
/// when `server_name` is set.
pub(crate) struct GroupTls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: Option<ServerName<'static>>,
}

pub(crate) fn build(cfg: &GroupConfig) -> Result<GroupTls, UpstreamError> {
    let fail = |reason: String| UpstreamError::Config {
        group: cfg.name.clone(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(fail(format!("ca_file {}: no certificate in it", path.display())));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    group = %cfg.name,
                    "no system root certificate found: https targets need ca_file"
                );
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&cfg.client_cert_file, &cfg.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| fail(format!("client_cert_file {}: {e}", cert.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("client_cert_file {}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(fail(format!(
                    "client_cert_file {}: no certificate in it",
                    cert.display()
                )));
            }
            // The key's parse error never quotes the key.
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|_| fail(format!("client_key_file {}: no readable private key", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| fail(format!("client certificate and key: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match cfg.protocol {
        Protocol::H2 => vec![b"h2".to_vec()],
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Auto | Protocol::H2c => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    let server_name = match &cfg.server_name {
        Some(n) => Some(
            ServerName::try_from(n.clone())
                .map_err(|_| fail(format!("server_name {n:?} is not a DNS name or an IP")))?,
        ),
        None => None,
    };
    Ok(GroupTls {
        config: Arc::new(config),
        server_name,
    })
}
