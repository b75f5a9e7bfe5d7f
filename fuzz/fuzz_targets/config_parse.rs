//! The configuration: TOML text → `Config::load` (the real entry point: file read, TOML parse
//! with its line-numbered errors, `KEYWARD_*` environment overrides, typed deserialisation,
//! relative paths, `validate()`), then the derived runtime settings: `gateway_config`,
//! `oauth_config`, `cache_config`, `engine_options`, `key_format`, `limiter`,
//! `forward_auth_config`. Secrets (pepper, KEK, admin token, webhook secrets) are not read.
//!
//! Input: the TOML text, optionally followed by a NUL byte and environment overrides, one
//! `NAME=value` per line.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use keyward::config::Config;
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let (text, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(env) = std::str::from_utf8(env) else { return };
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let path = dir().path().join("keyward.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text).unwrap();
    drop(f);
    let Ok(cfg) = Config::load(Some(&path), &env) else {
        return;
    };
    // `load` validated: everything it vouches for must now build.
    let gw = cfg.gateway_config();
    assert!(
        gw.is_ok(),
        "validated configuration, but gateway_config failed: {:?}",
        gw.err()
    );
    assert!(cfg.key_format().is_ok());
    assert!(cfg.forward_auth_config().is_ok());
    let _ = cfg.oauth_config();
    let _ = cfg.cache_config();
    let _ = cfg.engine_options();
    let _ = cfg.limiter();
});
