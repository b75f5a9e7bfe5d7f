//! Shared by the load generators `dpop_load` and `soak_load`: flags, base64url, HTTP/1.1
//! client connections, and a DPoP prover (one ES256 key, a fresh proof per call).

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use keyward_token::{Algorithm, SigningKey};
use serde_json::json;

/// A TCP connection to `addr` with TCP_NODELAY (requests leave at once).
pub async fn tcp(addr: &str) -> tokio::net::TcpStream {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// An HTTP/1.1 client connection over `io` (plain TCP or TLS), driven on a task of its own.
pub async fn http1<I>(io: I) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The value after `name` on the command line, else `default`; no default: the flag is required.
pub fn arg(args: &[String], name: &str, default: Option<&str>) -> String {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).cloned().expect("flag value"),
        None => default.unwrap_or_else(|| panic!("missing {name}")).to_owned(),
    }
}

/// `ath`: base64url(SHA-256(access token)).
pub fn ath(token: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

/// Per-process prefix + counter: unique jtis without a random draw per request.
static JTI: AtomicU64 = AtomicU64::new(0);

pub struct Prover {
    key: SigningKey,
    header_b64: String,
    prefix: String,
}

impl Prover {
    /// An ES256 prover.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self::with_alg(Algorithm::ES256)
    }

    /// A prover signing with `alg` (ES256 or EdDSA).
    pub fn with_alg(alg: Algorithm) -> Self {
        let key = SigningKey::generate(alg, None).unwrap();
        let header = json!({"typ": "dpop+jwt", "alg": key.alg().as_str(), "jwk": serde_json::to_value(key.public_jwk()).unwrap()});
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self {
            key,
            header_b64: b64(header.to_string().as_bytes()),
            prefix: format!("{nanos:x}"),
        }
    }

    pub fn proof(&self, htm: &str, htu: &str, ath: Option<&str>) -> String {
        let jti = format!("{}-{}", self.prefix, JTI.fetch_add(1, Ordering::Relaxed));
        let mut c = json!({"jti": jti, "htm": htm, "htu": htu, "iat": now()});
        if let Some(a) = ath {
            c["ath"] = json!(a);
        }
        let p = b64(c.to_string().as_bytes());
        let signing_input = format!("{}.{p}", self.header_b64);
        let sig = self.key.sign(signing_input.as_bytes()).unwrap();
        format!("{signing_input}.{}", b64(&sig))
    }
}
