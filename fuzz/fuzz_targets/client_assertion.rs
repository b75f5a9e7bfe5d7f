//! Client authentication at the token endpoint: the form reading (`read_form`: content type,
//! size, strict form), `oauth_form::client_credentials` (Basic, post, RFC 7523 assertion,
//! exactly one), then the engine's `authenticate_client`, which for an assertion decodes the
//! unverified `iss`, looks the client up in a temporary SQLite store, verifies the JWS with the
//! client's registered keys and checks `iss`/`sub`/`aud`/`exp`/`nbf`/`jti` (replay store).
//!
//! Input: the first line is the `Authorization` header value (empty: none), the rest the body.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use keyward_edge::fuzz_api::read_form;
use keyward_edge::oauth_form::{client_credentials, ClientCredentials};
use keyward_engine::token::ClientAuth;
use keyward_fuzz::Harness;
use libfuzzer_sys::fuzz_target;

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(Harness::new)
}

fuzz_target!(|data: &[u8]| {
    let (auth, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    if !auth.is_empty() {
        let Ok(v) = HeaderValue::from_bytes(auth) else { return };
        headers.insert("authorization", v);
    }
    let Ok(form) = read_form(&headers, &Bytes::copy_from_slice(body)) else {
        return;
    };
    let Ok(creds) = client_credentials(&headers, &form) else {
        return;
    };
    let auth = match &creds {
        ClientCredentials::None | ClientCredentials::IdOnly { .. } => return,
        ClientCredentials::Basic { client_id, secret } => ClientAuth::Basic { client_id, secret },
        ClientCredentials::Post { client_id, secret } => ClientAuth::Post { client_id, secret },
        ClientCredentials::Assertion { assertion, client_id } => ClientAuth::Assertion {
            assertion,
            client_id: client_id.as_deref(),
        },
    };
    let h = harness();
    if let Ok(Some(client)) = h.rt.block_on(h.engine.authenticate_client(&auth)) {
        assert!(
            matches!(creds, ClientCredentials::Assertion { .. }) && client.id == keyward_fuzz::CLIENT_ID,
            "authenticated {} with {creds:?}",
            client.id
        );
    }
});
