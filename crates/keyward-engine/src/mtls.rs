//! Mutual TLS (RFC 8705): client authentication by certificate, certificate-only principals
//! for routes that accept callers by certificate alone, and keys that require mTLS.
//!
//! A certificate is registered to a client (`tls_client_auth`: a subject DN or SAN under the
//! configured client CA; `self_signed_tls_client_auth`: the certificate or its public key in
//! the client's JWK Set), and through the client to its app. The TLS layer has already proven
//! that the caller holds the certificate's private key; whether the certificate chains to the
//! configured CA is passed along as [`PresentedCert::chain_verified`].

use std::sync::Arc;

use keyward_core::model::{ClientAuthMethod, ClientRecord};
use keyward_core::KeyRecord;
use keyward_token::{cert_thumbprint, ClientCert, DistinguishedName, Jwk};

use crate::{Engine, EngineError, Rejection};

/// The client certificate of the TLS connection.
#[derive(Debug, Clone, Copy)]
pub struct PresentedCert<'a> {
    /// DER of the leaf certificate.
    pub der: &'a [u8],
    /// The certificate chains to a configured client CA (and is not revoked by its CRLs).
    pub chain_verified: bool,
}

/// Whether `cert` authenticates `client` (RFC 8705 §2.1.2 and §2.2.2) at `now` (Unix seconds).
pub fn certificate_matches(
    client: &ClientRecord,
    der: &[u8],
    cert: &ClientCert,
    chain_verified: bool,
    now: i64,
) -> bool {
    if client.disabled_at.is_some() || !cert.valid_at(now) {
        return false;
    }
    match client.auth_method {
        ClientAuthMethod::TlsClientAuth => {
            if !chain_verified {
                return false;
            }
            let o = &client.options;
            if let Some(dn) = &o.tls_client_auth_subject_dn {
                return DistinguishedName::parse(dn).is_ok_and(|dn| dn == cert.subject);
            }
            if let Some(d) = &o.tls_client_auth_san_dns {
                return cert.san_dns.iter().any(|s| s.eq_ignore_ascii_case(d));
            }
            if let Some(u) = &o.tls_client_auth_san_uri {
                return cert.san_uri.iter().any(|s| s == u);
            }
            if let Some(e) = &o.tls_client_auth_san_email {
                return cert.san_email.iter().any(|s| s == e);
            }
            if let Some(ip) = &o.tls_client_auth_san_ip {
                return ip.parse::<std::net::IpAddr>().is_ok_and(|ip| cert.san_ip.contains(&ip));
            }
            false
        }
        ClientAuthMethod::SelfSignedTlsClientAuth => {
            let Some(keys) = client
                .jwks
                .as_ref()
                .and_then(|j| j.get("keys"))
                .and_then(serde_json::Value::as_array)
            else {
                return false;
            };
            let presented_key = cert.public_key.as_ref().map(Jwk::thumbprint);
            keys.iter().any(|k| {
                // The registered certificate itself (`x5c`, standard base64 DER), or its key.
                let by_cert = k
                    .get("x5c")
                    .and_then(serde_json::Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(serde_json::Value::as_str)
                    .and_then(|c| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(c).ok()
                    })
                    .is_some_and(|registered| cert_thumbprint(&registered) == cert_thumbprint(der));
                let by_key = presented_key
                    .as_ref()
                    .is_some_and(|p| serde_json::from_value::<Jwk>(k.clone()).is_ok_and(|j| &j.thumbprint() == p));
                by_cert || by_key
            })
        }
        _ => false,
    }
}

impl Engine {
    /// RFC 8705 §2: authenticates `client_id` by the connection's certificate. `Ok(None)` when
    /// the client is unknown, disabled, not a certificate client, or the certificate does not
    /// match its registration — callers answer `invalid_client` without telling which.
    pub async fn authenticate_client_certificate(
        &self,
        client_id: &str,
        cert: Option<PresentedCert<'_>>,
    ) -> Result<Option<ClientRecord>, EngineError> {
        let Some(cert) = cert else { return Ok(None) };
        if client_id.is_empty() || client_id.len() > 64 {
            return Ok(None);
        }
        let Ok(parsed) = ClientCert::parse(cert.der) else {
            return Ok(None);
        };
        let Some(client) = self.store.get_client(client_id).await? else {
            return Ok(None);
        };
        let now = self.now().unix_timestamp();
        Ok(certificate_matches(&client, cert.der, &parsed, cert.chain_verified, now).then_some(client))
    }

    /// The client a certificate is registered to, if any: the oldest matching certificate
    /// client. Cached per certificate (and chain status) for 30 s and dropped on every client
    /// change made through this engine.
    pub async fn client_for_certificate(
        &self,
        cert: PresentedCert<'_>,
    ) -> Result<Option<Arc<ClientRecord>>, EngineError> {
        let key = format!("{}:{}", cert_thumbprint(cert.der), u8::from(cert.chain_verified));
        if let Some(hit) = self.clients.by_cert.get(&key) {
            return Ok(hit);
        }
        let generation = self.clients.generation();
        let found = match ClientCert::parse(cert.der) {
            Err(_) => None,
            Ok(parsed) => {
                let now = self.now().unix_timestamp();
                self.store
                    .list_clients(None)
                    .await?
                    .into_iter()
                    .filter(|c| c.auth_method.uses_certificate())
                    .find(|c| certificate_matches(c, cert.der, &parsed, cert.chain_verified, now))
                    .map(Arc::new)
            }
        };
        // A client change while the store was read must not be cached over.
        if generation == self.clients.generation() {
            self.clients.by_cert.insert(key, found.clone());
        }
        Ok(found)
    }

    /// For a key that requires mTLS (its own policy or its app's): the connection's certificate
    /// must be registered to a client of the key's app.
    pub async fn check_mtls_requirement(
        &self,
        record: &KeyRecord,
        cert: Option<PresentedCert<'_>>,
    ) -> Result<(), Rejection> {
        if !record.policy.require_mtls && !record.app_policy.require_mtls {
            return Ok(());
        }
        let refused = || Rejection::MtlsRequired {
            key_id: record.id.clone(),
        };
        let Some(cert) = cert else { return Err(refused()) };
        match self.client_for_certificate(cert).await {
            Ok(Some(c)) if c.app_id == record.app_id => Ok(()),
            Ok(_) => Err(refused()),
            Err(EngineError::Store(e)) => Err(Rejection::Store(e)),
            Err(_) => Err(refused()),
        }
    }
}
