//! DPoP proofs (RFC 9449): verification at the token endpoint and at the gateway, the replay
//! store and server nonces.
//!
//! A proof is a JWS with `typ: dpop+jwt`, an asymmetric `alg` (ES256, EdDSA, RS256, PS256) and
//! the public `jwk` in its header (private members are refused when the JWK is parsed); its
//! claims bind it to one request: `htm`, `htu` (compared without query and fragment,
//! normalised), a fresh `iat`, a one-time `jti`, and at a resource server `ath` (the SHA-256 of
//! the access token). The proof's key thumbprint (RFC 7638) is what a bound token's `cnf.jkt`
//! names.

use std::collections::HashSet;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration as StdDuration, Instant};

use base64::Engine as _;

use keyward_token::{thumbprint, verify_jws_and_prepare, verify_jws_prepared, Algorithm, Jwk, PreparedKey};
use moka::sync::Cache;

/// Algorithms accepted in proofs (asymmetric only).
pub const DPOP_ALGS: [Algorithm; 4] = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256];
/// Longest proof accepted.
pub const MAX_PROOF_LEN: usize = 8 * 1024;
/// Proofs this process remembers for replay detection at most, by default
/// (`oauth.dpop_replay_capacity`; each as a 128-bit keyed hash of its `jkt:jti`: 16 bytes and
/// the hash table's slack, 20 to 40 bytes; under 160 MB full). A proof is never forgotten before
/// its window has passed: once the store is full, new proofs are refused until older ones leave.
pub const DEFAULT_REPLAY_CAPACITY: usize = 4_000_000;
/// The capacities `oauth.dpop_replay_capacity` may take.
pub const REPLAY_CAPACITY_RANGE: std::ops::RangeInclusive<usize> = 1_000..=400_000_000;
/// Proof headers remembered with their parsed key and its thumbprint (see [`Dpop`]).
pub const PROOF_KEYS: u64 = 10_000;
/// How long a remembered proof header is kept without use.
const PROOF_KEY_IDLE: StdDuration = StdDuration::from_secs(600);

/// Why a proof is refused. `code()` is the OAuth error; `reason()` says which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("invalid DPoP proof: {0}")]
    Invalid(&'static str),
    /// The server requires a nonce (or a fresher one): answer `use_dpop_nonce` with a
    /// `DPoP-Nonce` header.
    #[error("a DPoP nonce is required")]
    UseNonce,
}

impl DpopError {
    pub fn code(&self) -> &'static str {
        match self {
            DpopError::Invalid(_) => "invalid_dpop_proof",
            DpopError::UseNonce => "use_dpop_nonce",
        }
    }
}

/// Settings of DPoP checking.
#[derive(Debug, Clone)]
pub struct DpopConfig {
    /// How far `iat` may be from now, either way.
    pub iat_window: StdDuration,
    /// Require server nonces.
    pub require_nonce: bool,
    /// How long a nonce stays valid.
    pub nonce_lifetime: StdDuration,
    /// Proofs remembered for replay detection at most (see [`DEFAULT_REPLAY_CAPACITY`]).
    pub replay_capacity: usize,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            iat_window: StdDuration::from_secs(60),
            require_nonce: false,
            nonce_lifetime: StdDuration::from_secs(300),
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
        }
    }
}

/// What a verified proof establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopProof {
    /// RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
}

/// A proof header that passed every header check and a signature, with its key made ready and
/// the key's thumbprint.
struct ProofKey {
    key: PreparedKey,
    jkt: String,
}

/// The replay store and nonce issuer.
///
/// A client signs every proof under the same protected header (`typ`, `alg`, its `jwk`), so the
/// header's base64url text, once a proof under it has verified, is remembered (at most
/// [`PROOF_KEYS`], each for ten minutes without use) with the parsed key and its thumbprint:
/// the next proofs skip decoding the header, parsing the JWK and the curve point, and hashing
/// the thumbprint. The header's bytes are the cache key, so a hit is a header that passed every
/// check before; the claims and the signature are checked on every proof.
pub struct Dpop {
    pub cfg: DpopConfig,
    seen: ReplayStore,
    keys: Cache<String, Arc<ProofKey>>,
    /// How long a `jti` is remembered.
    window: StdDuration,
    /// The replay store shared by every node (Redis), when configured.
    shared: Option<std::sync::Arc<keyward_limit::RedisLimiter>>,
    nonce_key: aws_lc_rs::hmac::Key,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// `base64url(SHA-256(token))`, the `ath` claim.
pub fn ath(access_token: &str) -> String {
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes()).as_ref())
}

/// Normalises an `htu` for comparison: scheme and host lowercased, default port dropped, no
/// query or fragment. `None` for anything that is not an absolute http(s) URL.
pub fn normalize_htu(u: &str) -> Option<String> {
    let u = u.split(['#', '?']).next()?;
    let (scheme, rest) = u.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    if let Some(stripped) = authority.strip_suffix(default) {
        authority = stripped.to_owned();
    }
    Some(format!("{scheme}://{authority}{path}"))
}

impl Dpop {
    pub fn new(cfg: DpopConfig) -> Result<Dpop, crate::EngineError> {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| crate::EngineError::Core(keyward_core::CoreError::Random))?;
        let window = cfg.iat_window.saturating_mul(2) + StdDuration::from_secs(5);
        Ok(Dpop {
            seen: ReplayStore::new(window, cfg.replay_capacity),
            keys: Cache::builder()
                .max_capacity(PROOF_KEYS)
                .time_to_idle(PROOF_KEY_IDLE)
                .build(),
            window,
            shared: None,
            nonce_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
            cfg,
        })
    }

    fn nonce_for(&self, bucket: i64) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.nonce_key, &bucket.to_be_bytes());
        format!("{bucket:x}.{}", b64url(&tag.as_ref()[..16]))
    }

    /// Proofs remembered in this process for replay detection (until they leave the window).
    pub fn replay_entries(&self) -> u64 {
        self.seen.len()
    }

    /// The nonce to hand out now (`DPoP-Nonce`).
    pub fn current_nonce(&self, now: i64) -> String {
        let len = i64::try_from(self.cfg.nonce_lifetime.as_secs().max(1)).unwrap_or(300);
        self.nonce_for(now.div_euclid(len))
    }

    fn nonce_valid(&self, nonce: &str, now: i64) -> bool {
        let len = i64::try_from(self.cfg.nonce_lifetime.as_secs().max(1)).unwrap_or(300);
        let b = now.div_euclid(len);
        let ok = |bucket: i64| keyward_core::secret::ct_eq(self.nonce_for(bucket).as_bytes(), nonce.as_bytes());
        ok(b) | ok(b - 1)
    }

    /// Shares the `jti` replay store through Redis: a proof used on one node is refused by
    /// every other. While Redis is unavailable each node falls back to its own store (which
    /// always records what the node saw), so replays across nodes are caught again as soon as
    /// Redis answers.
    pub fn with_shared_replay(mut self, shared: Option<std::sync::Arc<keyward_limit::RedisLimiter>>) -> Dpop {
        self.shared = shared;
        self
    }

    /// Verifies a proof for a request to `htu` with method `htm` at `now` (Unix seconds).
    /// `access_token` is given at a resource server (then `ath` must match). The replay check
    /// uses this node's store only; see [`Dpop::verify_shared`].
    pub fn verify(
        &self,
        proof: &str,
        htm: &str,
        htu: &str,
        access_token: Option<&str>,
        now: i64,
    ) -> Result<DpopProof, DpopError> {
        let (p, entry) = self.check_proof(proof, htm, htu, access_token, now)?;
        self.first_use_here(&entry)?;
        Ok(p)
    }

    /// As [`Dpop::verify`], with the replay check shared by every node when Redis is
    /// configured (one `SET NX PX` per proof).
    pub async fn verify_shared(
        &self,
        proof: &str,
        htm: &str,
        htu: &str,
        access_token: Option<&str>,
        now: i64,
    ) -> Result<DpopProof, DpopError> {
        let (p, entry) = self.check_proof(proof, htm, htu, access_token, now)?;
        let Some(shared) = &self.shared else {
            self.first_use_here(&entry)?;
            return Ok(p);
        };
        let here = self.first_use_here(&entry);
        match shared.first_use(&entry, self.window).await {
            Ok(true) => here.map(|_| p),
            Ok(false) => Err(DpopError::Invalid("the proof was used before")),
            Err(e) => {
                tracing::debug!(error = %e, "shared DPoP replay store unavailable; this node's store decides");
                here.map(|_| p)
            }
        }
    }

    fn first_use_here(&self, entry: &str) -> Result<(), DpopError> {
        self.seen.first_use(entry, Instant::now())
    }

    /// Every check but the replay check; returns the replay-store entry (`jkt:jti`).
    fn check_proof(
        &self,
        proof: &str,
        htm: &str,
        htu: &str,
        access_token: Option<&str>,
        now: i64,
    ) -> Result<(DpopProof, String), DpopError> {
        if proof.len() > MAX_PROOF_LEN {
            return Err(DpopError::Invalid("the proof is too large"));
        }
        let header_b64 = proof.split('.').next().unwrap_or_default();
        let (key, claims, fresh) = match self.keys.get(header_b64) {
            Some(key) => {
                let payload = verify_jws_prepared(proof, &key.key).map_err(|_| DpopError::Invalid("bad signature"))?;
                (key, claims_of(&payload)?, false)
            }
            None => {
                let (key, claims) = check_header_and_signature(header_b64, proof)?;
                (key, claims, true)
            }
        };
        let s = |k: &str| claims.get(k).and_then(serde_json::Value::as_str);
        if s("htm") != Some(htm) {
            return Err(DpopError::Invalid("htm does not match the request method"));
        }
        let claimed = s("htu")
            .and_then(normalize_htu)
            .ok_or(DpopError::Invalid("htu is missing or malformed"))?;
        if Some(claimed) != normalize_htu(htu) {
            return Err(DpopError::Invalid("htu does not match the request URL"));
        }
        let iat = claims
            .get("iat")
            .and_then(serde_json::Value::as_i64)
            .ok_or(DpopError::Invalid("iat is missing"))?;
        let window = i64::try_from(self.cfg.iat_window.as_secs()).unwrap_or(60);
        if iat < now - window {
            return Err(DpopError::Invalid("iat is too old"));
        }
        if iat > now + window {
            return Err(DpopError::Invalid("iat is in the future"));
        }
        let jti = s("jti")
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or(DpopError::Invalid("jti is missing"))?;
        match (access_token, s("ath")) {
            (Some(t), Some(a)) if keyward_core::secret::ct_eq(ath(t).as_bytes(), a.as_bytes()) => {}
            (Some(_), _) => return Err(DpopError::Invalid("ath does not match the access token")),
            (None, _) => {}
        }
        if self.cfg.require_nonce {
            match s("nonce") {
                Some(n) if self.nonce_valid(n, now) => {}
                _ => return Err(DpopError::UseNonce),
            }
        }
        // One use per jti and key, within the window (checked last: a refused proof is not
        // remembered, so it cannot be used to burn someone else's jti).
        let entry = format!("{}:{jti}", key.jkt);
        let jkt = key.jkt.clone();
        if fresh {
            self.keys.insert(header_b64.to_owned(), key);
        }
        Ok((DpopProof { jkt }, entry))
    }
}

/// The replay store: every proof seen in the last `window` at least, as a 128-bit keyed hash of
/// its `jkt:jti` (a collision, 2^-128 per pair, could only refuse a fresh proof, never admit a
/// replay).
///
/// Each shard keeps two generations: proofs are added to `current`; once `current` is a window
/// old it becomes `previous` and the former `previous` is dropped. A proof therefore stays at
/// least one window and at most two. Unlike a cache, nothing is evicted early when the store
/// is full: the proof is refused (`the replay store is full`) and the store recovers as its
/// generations age out.
struct ReplayStore {
    shards: Vec<Mutex<ReplayShard>>,
    hash_keys: (RandomState, RandomState),
    window: StdDuration,
    per_shard: usize,
}

struct ReplayShard {
    /// When `current` was started.
    since: Instant,
    current: HashSet<u128>,
    previous: HashSet<u128>,
}

const REPLAY_SHARDS: usize = 16;

impl ReplayStore {
    fn new(window: StdDuration, capacity: usize) -> ReplayStore {
        let now = Instant::now();
        ReplayStore {
            shards: (0..REPLAY_SHARDS)
                .map(|_| {
                    Mutex::new(ReplayShard {
                        since: now,
                        current: HashSet::new(),
                        previous: HashSet::new(),
                    })
                })
                .collect(),
            hash_keys: (RandomState::new(), RandomState::new()),
            window,
            per_shard: capacity.div_ceil(REPLAY_SHARDS).max(1),
        }
    }

    /// `entry` seen for the first time within the window: remembered. Seen before: refused.
    fn first_use(&self, entry: &str, now: Instant) -> Result<(), DpopError> {
        let h = (u128::from(self.hash_keys.0.hash_one(entry)) << 64) | u128::from(self.hash_keys.1.hash_one(entry));
        let mut shard = lock(&self.shards[(h % REPLAY_SHARDS as u128) as usize]);
        let shard = &mut *shard;
        let age = now.saturating_duration_since(shard.since);
        if age >= self.window {
            if age >= self.window.saturating_mul(2) {
                shard.previous = HashSet::new();
            } else {
                std::mem::swap(&mut shard.current, &mut shard.previous);
            }
            // A new table that grows with the proofs (a cleared one would keep its largest
            // size): the memory follows the load, and both tables together never hold more
            // than the shard's share of the capacity.
            shard.current = HashSet::new();
            shard.since = now;
        }
        if shard.current.contains(&h) || shard.previous.contains(&h) {
            return Err(DpopError::Invalid("the proof was used before"));
        }
        if shard.current.len() + shard.previous.len() >= self.per_shard {
            return Err(DpopError::Invalid("the replay store is full"));
        }
        shard.current.insert(h);
        Ok(())
    }

    /// Proofs remembered (some may be past their window until their generation is dropped).
    fn len(&self) -> u64 {
        let n: usize = self
            .shards
            .iter()
            .map(lock)
            .map(|s| s.current.len() + s.previous.len())
            .sum();
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

/// A shard, also when a thread panicked while holding it (its sets stay consistent).
fn lock(shard: &Mutex<ReplayShard>) -> MutexGuard<'_, ReplayShard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The checks of a proof header seen for the first time, and the proof's signature under its
/// key: the key made ready, with its thumbprint, and the claims.
fn check_header_and_signature(header_b64: &str, proof: &str) -> Result<(Arc<ProofKey>, serde_json::Value), DpopError> {
    let header: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(DpopError::Invalid("the proof header is not JSON"))?;
    if header.get("typ").and_then(serde_json::Value::as_str) != Some("dpop+jwt") {
        return Err(DpopError::Invalid("typ must be dpop+jwt"));
    }
    let alg = header
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    if !DPOP_ALGS.iter().any(|a| a.as_str() == alg) {
        return Err(DpopError::Invalid("alg must be one of ES256, EdDSA, RS256, PS256"));
    }
    let jwk: Jwk = header
        .get("jwk")
        .cloned()
        .and_then(|j| serde_json::from_value(j).ok())
        .ok_or(DpopError::Invalid("jwk must be a public key"))?;
    let (key, payload) =
        verify_jws_and_prepare(proof, &jwk, &DPOP_ALGS).map_err(|_| DpopError::Invalid("bad signature"))?;
    let claims = claims_of(&payload)?;
    let key = Arc::new(ProofKey {
        key,
        jkt: thumbprint(&jwk),
    });
    Ok((key, claims))
}

/// The proof's claims: a JSON object.
fn claims_of(payload: &[u8]) -> Result<serde_json::Value, DpopError> {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(claims) if claims.is_object() => Ok(claims),
        _ => Err(DpopError::Invalid("bad signature")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_normalisation() {
        assert_eq!(
            normalize_htu("https://Server.Example.com:443/token?x=1#f").unwrap(),
            "https://server.example.com/token"
        );
        assert_eq!(normalize_htu("http://a:80").unwrap(), "http://a/");
        assert_eq!(normalize_htu("http://a:8080/p").unwrap(), "http://a:8080/p");
        for bad in ["ftp://a/", "a/b", "https:///x", "https://u@h/x"] {
            assert!(normalize_htu(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ath_of_the_rfc_9449_example_token() {
        // RFC 9449 §7.1 example access token and its ath.
        let token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
        assert_eq!(ath(token), "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
    }

    /// RFC 9449 §4.1: the example proof verifies with a frozen clock, its key's thumbprint is
    /// the `jkt` of §6.1, and it cannot be replayed.
    #[test]
    fn rfc_9449_example_proof() {
        let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
        let d = Dpop::new(DpopConfig::default()).unwrap();
        let ok = d
            .verify(proof, "POST", "https://server.example.com/token", None, 1_562_262_616)
            .unwrap();
        assert_eq!(ok.jkt, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
        assert_eq!(
            d.verify(proof, "POST", "https://server.example.com/token", None, 1_562_262_616),
            Err(DpopError::Invalid("the proof was used before"))
        );
        let fresh = Dpop::new(DpopConfig::default()).unwrap();
        assert!(fresh
            .verify(proof, "GET", "https://server.example.com/token", None, 1_562_262_616)
            .is_err());
        assert!(fresh
            .verify(proof, "POST", "https://server.example.com/other", None, 1_562_262_616)
            .is_err());
        assert!(fresh
            .verify(
                proof,
                "POST",
                "https://server.example.com/token",
                None,
                1_562_262_616 + 61
            )
            .is_err());
        assert!(fresh
            .verify(
                proof,
                "POST",
                "https://server.example.com/token",
                None,
                1_562_262_616 - 61
            )
            .is_err());
        assert!(fresh
            .verify(
                proof,
                "POST",
                "https://server.example.com/token",
                Some("token"),
                1_562_262_616
            )
            .is_err());
        // Query and fragment of the request URL are ignored.
        assert!(fresh
            .verify(
                proof,
                "POST",
                "https://SERVER.example.com:443/token?x#y",
                None,
                1_562_262_616
            )
            .is_ok());
        let nonce = Dpop::new(DpopConfig {
            require_nonce: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            nonce.verify(proof, "POST", "https://server.example.com/token", None, 1_562_262_616),
            Err(DpopError::UseNonce)
        );
    }

    /// A compact JWS of `claims` under `header`, signed by `key` (the signature of another
    /// message when `forge` is set).
    fn sign(
        key: &keyward_token::SigningKey,
        header: &serde_json::Value,
        claims: &serde_json::Value,
        forge: bool,
    ) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (h, p) = (b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signed = if forge { format!("{h}.{p}x") } else { format!("{h}.{p}") };
        let sig = key.sign(signed.as_bytes()).unwrap_or_default();
        format!("{h}.{p}.{}", b64(&sig))
    }

    /// The proof-key cache: proofs under a remembered header verify with the same thumbprint,
    /// and every check that is not about the header still runs on them (signature, claims,
    /// replay); headers of refused proofs are not remembered; a remembered header does not
    /// make another key's signature pass.
    #[test]
    fn remembered_proof_headers_check_everything_but_the_header() {
        use keyward_token::{Algorithm, SigningKey};
        use serde_json::json;
        let now = 1_800_000_000;
        let htu = "https://api.example/v1/x";
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::PS256] {
            let key = SigningKey::generate(alg, None).unwrap_or_else(|e| panic!("{e}"));
            let header = json!({"typ": "dpop+jwt", "alg": alg.as_str(), "jwk": key.public_jwk()});
            let claims = |jti: &str| json!({"jti": jti, "htm": "GET", "htu": htu, "iat": now, "ath": ath("tok")});
            let d = Dpop::new(DpopConfig::default()).unwrap_or_else(|e| panic!("{e}"));
            let verify = |proof: &str| d.verify(proof, "GET", htu, Some("tok"), now);

            // Refused proofs leave nothing behind.
            let forged = sign(&key, &header, &claims("f"), true);
            assert_eq!(verify(&forged), Err(DpopError::Invalid("bad signature")), "{alg}");
            assert_eq!(
                d.keys.iter().count(),
                0,
                "{alg}: a refused proof's header is not remembered"
            );

            let first = verify(&sign(&key, &header, &claims("1"), false)).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(first.jkt, thumbprint(&key.public_jwk()), "{alg}");
            d.keys.run_pending_tasks();
            assert_eq!(d.keys.entry_count(), 1, "{alg}");

            // Under the remembered header: the same key and thumbprint...
            let second = sign(&key, &header, &claims("2"), false);
            assert_eq!(verify(&second), Ok(first.clone()), "{alg}");
            // ...and still one use per jti, a checked signature and checked claims.
            assert_eq!(
                verify(&second),
                Err(DpopError::Invalid("the proof was used before")),
                "{alg}"
            );
            assert_eq!(
                verify(&sign(&key, &header, &claims("3"), true)),
                Err(DpopError::Invalid("bad signature")),
                "{alg}"
            );
            let other = SigningKey::generate(alg, None).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                verify(&sign(&other, &header, &claims("4"), false)),
                Err(DpopError::Invalid("bad signature")),
                "{alg}: another key under a remembered header"
            );
            assert_eq!(
                d.verify(&sign(&key, &header, &claims("5"), false), "POST", htu, Some("tok"), now),
                Err(DpopError::Invalid("htm does not match the request method")),
                "{alg}"
            );
            assert_eq!(
                d.verify(
                    &sign(&key, &header, &claims("6"), false),
                    "GET",
                    htu,
                    Some("other"),
                    now
                ),
                Err(DpopError::Invalid("ath does not match the access token")),
                "{alg}"
            );
            assert_eq!(
                d.verify(
                    &sign(&key, &header, &claims("7"), false),
                    "GET",
                    htu,
                    Some("tok"),
                    now + 120
                ),
                Err(DpopError::Invalid("iat is too old")),
                "{alg}"
            );
            let array = sign(&key, &header, &json!(["not", "an", "object"]), false);
            assert_eq!(verify(&array), Err(DpopError::Invalid("bad signature")), "{alg}");
            let (h, rest) = second.split_once('.').unwrap_or_default();
            assert_eq!(
                verify(&format!("{h}.{}", rest.replacen('.', ".!", 1))),
                Err(DpopError::Invalid("bad signature")),
                "{alg}: a broken signature part"
            );
            d.keys.run_pending_tasks();
            assert_eq!(d.keys.entry_count(), 1, "{alg}");
        }
    }

    /// The replay store remembers every proof for at least its window, forgets it after two,
    /// and, full, refuses new proofs rather than forget one early.
    #[test]
    fn the_replay_store_forgets_nothing_early() {
        let w = StdDuration::from_secs(10);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + StdDuration::from_millis(ms);
        let used: Result<(), DpopError> = Err(DpopError::Invalid("the proof was used before"));
        let full: Result<(), DpopError> = Err(DpopError::Invalid("the replay store is full"));

        let store = ReplayStore::new(w, 1_000);
        assert_eq!(store.first_use("jkt:a", at(0)), Ok(()));
        assert_eq!(store.first_use("jkt:b", at(9_999)), Ok(()));
        assert_eq!(store.first_use("jkt:a", at(1)), used);
        // Past one window "a" moved to the older generation: still remembered, as is "b".
        assert_eq!(store.first_use("jkt:a", at(10_500)), used);
        assert_eq!(store.first_use("jkt:b", at(19_998)), used);
        assert_eq!(store.len(), 2);
        // Two windows after the last rotation of their shards, both are gone.
        assert_eq!(store.first_use("jkt:a", at(60_000)), Ok(()));
        assert_eq!(store.first_use("jkt:b", at(60_000)), Ok(()));

        // 32 proofs at most (2 per shard): the store fills and refuses; what it took stays
        // refused as a replay; two windows later it takes proofs again.
        let small = ReplayStore::new(w, 32);
        let mut taken = Vec::new();
        let mut refused = 0;
        for i in 0..1_000 {
            let e = format!("jkt:{i}");
            match small.first_use(&e, at(i)) {
                Ok(()) => taken.push(e),
                Err(e) => {
                    assert_eq!(Err(e), full);
                    refused += 1;
                }
            }
        }
        assert_eq!(taken.len(), 32, "every shard full");
        assert_eq!(refused, 968);
        assert_eq!(small.len(), 32);
        for e in &taken {
            assert_eq!(small.first_use(e, at(5_000)), used, "{e} forgotten early");
        }
        for e in &taken {
            assert_eq!(small.first_use(e, at(30_000)), Ok(()), "{e}");
        }
    }

    #[test]
    fn nonces_rotate_and_expire() {
        let d = Dpop::new(DpopConfig {
            require_nonce: true,
            ..Default::default()
        })
        .unwrap();
        let n = d.current_nonce(1_000);
        assert!(d.nonce_valid(&n, 1_000));
        assert!(d.nonce_valid(&n, 1_000 + 300), "the previous bucket is still accepted");
        assert!(!d.nonce_valid(&n, 1_000 + 900));
        assert!(!d.nonce_valid("garbage", 1_000));
    }
}
