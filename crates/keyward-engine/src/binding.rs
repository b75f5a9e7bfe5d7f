//! Sender-constrained tokens, written once for the token endpoint and the resource side:
//! DPoP proofs (RFC 9449: exactly one proof, method, URL, nonce, replay, `ath`, the bound
//! `jkt`) and certificate binding (RFC 8705 §3: `cnf.x5t#S256` against the connection's
//! certificate).

use keyward_core::secret::ct_eq;
use keyward_token::Confirmation;

use crate::dpop::{DpopError, DpopProof};
use crate::pipeline::{DpopHeader, RequestContext};
use crate::token::cert_thumbprint;
use crate::{Engine, Rejection};

/// Why a DPoP proof was refused; `nonce` is set when the client must retry with this nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopFailure {
    pub reason: String,
    pub nonce: Option<String>,
}

impl DpopFailure {
    fn new(reason: impl Into<String>) -> DpopFailure {
        DpopFailure {
            reason: reason.into(),
            nonce: None,
        }
    }
}

impl From<DpopFailure> for Rejection {
    fn from(f: DpopFailure) -> Rejection {
        Rejection::InvalidDpop {
            reason: f.reason,
            nonce: f.nonce,
        }
    }
}

impl Engine {
    /// Checks the request's DPoP proof for `htm` and `htu` (and, at a resource, the access
    /// token's hash `ath`): `Ok(None)` when the request has no proof at all. The proof's `jti`
    /// is claimed in the replay store (shared through Redis in a cluster).
    pub async fn check_dpop(
        &self,
        header: DpopHeader<'_>,
        htm: &str,
        htu: &str,
        access_token: Option<&str>,
    ) -> Result<Option<DpopProof>, DpopFailure> {
        let proof = match header {
            DpopHeader::Absent => return Ok(None),
            DpopHeader::One(p) => p,
            DpopHeader::NotAscii => return Err(DpopFailure::new("the DPoP header is not ASCII")),
            DpopHeader::Several => return Err(DpopFailure::new("send exactly one DPoP header")),
        };
        let svc = self
            .token_service()
            .map_err(|_| DpopFailure::new("the token service is not enabled"))?;
        let now = self.now().unix_timestamp();
        match svc.dpop.verify_shared(proof, htm, htu, access_token, now).await {
            Ok(p) => Ok(Some(p)),
            Err(DpopError::UseNonce) => Err(DpopFailure {
                reason: "a DPoP nonce is required".into(),
                nonce: Some(svc.dpop.current_nonce(now)),
            }),
            Err(e) => Err(DpopFailure::new(e.to_string())),
        }
    }

    /// A verified token's sender constraint at a resource: a certificate-bound token needs the
    /// same certificate on the connection; a DPoP-bound token needs the `DPoP` scheme and a
    /// proof by the bound key; a plain token must not pretend to be bound.
    pub(crate) async fn check_token_binding(
        &self,
        cnf: Option<&Confirmation>,
        dpop_scheme: bool,
        token: &str,
        ctx: &RequestContext<'_>,
    ) -> Result<(), Rejection> {
        if let Some(x5t) = cnf.and_then(|c| c.x5t_s256.as_deref()) {
            let presented = ctx.peer_cert.map(|c| cert_thumbprint(c.der));
            if !presented.is_some_and(|t| ct_eq(t.as_bytes(), x5t.as_bytes())) {
                return Err(Rejection::InvalidToken {
                    reason: "certificate_binding_mismatch",
                });
            }
        }
        let bound = cnf.and_then(|c| c.jkt.as_deref());
        let jkt = match (dpop_scheme, bound) {
            (false, None) => return Ok(()),
            (false, Some(_)) => {
                return Err(Rejection::InvalidToken {
                    reason: "dpop_bound_token_sent_as_bearer",
                })
            }
            (true, None) => {
                return Err(Rejection::InvalidToken {
                    reason: "token_not_dpop_bound",
                })
            }
            (true, Some(jkt)) => jkt,
        };
        let htu = match ctx.htu {
            Some(u) => u.to_owned(),
            None => {
                let svc = self
                    .token_service()
                    .map_err(|_| Rejection::InvalidToken { reason: "unknown_kid" })?;
                format!("{}{}", svc.config().issuer, ctx.path)
            }
        };
        match self.check_dpop(ctx.dpop, ctx.method, &htu, Some(token)).await? {
            None => Err(DpopFailure::new("a DPoP proof is required").into()),
            Some(p) if ct_eq(p.jkt.as_bytes(), jkt.as_bytes()) => Ok(()),
            Some(_) => Err(DpopFailure::new("the proof is signed by another key").into()),
        }
    }
}
