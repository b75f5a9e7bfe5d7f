//! DPoP proof parsing and verification (RFC 9449): `keyward_engine::dpop::Dpop::verify` for a
//! `POST https://server.example.com/token` at the RFC's example time, with and without an access
//! token (`ath`) and with server nonces required or not.
//!
//! Input: one selector byte (bit 0: check `ath` against the RFC 9449 example access token;
//! bit 1: require a nonce), then the proof.
#![no_main]

use std::sync::OnceLock;

use keyward_engine::dpop::{Dpop, DpopConfig};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_562_262_616;
const TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";

fn dpop(require_nonce: bool) -> &'static Dpop {
    static PLAIN: OnceLock<Dpop> = OnceLock::new();
    static NONCE: OnceLock<Dpop> = OnceLock::new();
    let cell = if require_nonce { &NONCE } else { &PLAIN };
    cell.get_or_init(|| {
        Dpop::new(DpopConfig {
            require_nonce,
            ..DpopConfig::default()
        })
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let Ok(proof) = std::str::from_utf8(rest) else { return };
    let d = dpop(sel & 2 != 0);
    let token = (sel & 1 != 0).then_some(TOKEN);
    let _ = d.verify(proof, "POST", "https://server.example.com/token", token, NOW);
    // The same proof at a URL that only normalisation makes equal.
    let _ = d.verify(proof, "POST", "HTTPS://Server.Example.com:443/token?x#y", token, NOW);
    if let Some(n) = proof.get(..proof.len().min(64)) {
        let _ = keyward_engine::dpop::normalize_htu(n);
    }
});
