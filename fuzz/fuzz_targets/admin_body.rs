//! Admin API request bodies, through the real axum admin router in-process (tower `oneshot`)
//! on a temporary SQLite store: strict JSON extraction of `CreateApp`, `UpdatePolicy`,
//! `CreateKey`, `UpdateKey`, `CheckBody`, `ImportBody`, `RevokeBody`, `RotateBody`,
//! `CreateClient`, `RotateSecret`, `CreateToken` and signing `RotateBody`, then each handler's
//! validation and the engine operation. A panic or a 500 is a finding.
//!
//! Input: one selector byte (the endpoint, modulo the table below), then the JSON body.
#![no_main]

use std::sync::OnceLock;

use http::{Method, StatusCode};
use keyward_fuzz::Harness;
use libfuzzer_sys::fuzz_target;

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(Harness::new)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let h = harness();
    let (method, path) = match sel % 13 {
        0 => (Method::POST, "/v1/apps".to_owned()),
        1 => (Method::PATCH, "/v1/apps/fuzz".to_owned()),
        2 => (Method::POST, "/v1/keys".to_owned()),
        3 => (Method::PATCH, format!("/v1/keys/{}", h.key_id)),
        4 => (Method::POST, "/v1/keys/check".to_owned()),
        5 => (Method::POST, "/v1/keys/import".to_owned()),
        6 => (Method::POST, format!("/v1/keys/{}/revoke", h.victim_id)),
        7 => (Method::POST, format!("/v1/keys/{}/rotate", h.victim_id)),
        8 => (Method::POST, "/v1/clients".to_owned()),
        9 => (
            Method::POST,
            format!("/v1/clients/{}/rotate-secret", h.secret_client_id),
        ),
        10 => (Method::POST, "/v1/admin-tokens".to_owned()),
        11 => (Method::POST, "/v1/signing-keys/rotate".to_owned()),
        _ => (Method::POST, format!("/v1/keys/{}/disable", h.victim_id)),
    };
    let (status, problem) = h.request(method, &path, body);
    assert!(status != StatusCode::INTERNAL_SERVER_ERROR, "500 on {path}: {problem}");
});
