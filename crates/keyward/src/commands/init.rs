//! `keyward init`: a configuration, a pepper, an admin token and a key-encryption key.

use super::*;

pub(super) const CONFIG_TEMPLATE: &str = r#"# keyward configuration. Every key can be overridden by an environment variable:
# KEYWARD_<SECTION>__<KEY>, e.g. KEYWARD_GATEWAY__LISTEN=0.0.0.0:8080.

[store]
# A SQLite file (a relative path is relative to this file), created and migrated on first start.
url = "keyward.db"

[keys]
prefix = "kw"

[secrets]
# Mode 0600 files. KEYWARD_PEPPER and KEYWARD_ADMIN_TOKEN take precedence.
pepper_file = "keyward.pepper"
admin_token_file = "admin.token"
# Seals the token signing keys (AES-256-GCM). KEYWARD_KEK takes precedence.
kek_file = "keyward.kek"

[gateway]
listen = "127.0.0.1:8080"
credential_headers = ["x-api-key"]
# 403 reproduces the classic static-key behaviour for invalid keys.
invalid_credential_status = 401
connect_timeout = "2s"
upstream_timeout = "30s"

[admin]
listen = "127.0.0.1:8081"

# The OAuth 2.0 token service on the gateway listener: /oauth/token, /oauth/introspect,
# /oauth/revoke, /.well-known/oauth-authorization-server, /.well-known/jwks.json.
[oauth]
enabled = true
audience = "keyward"
signing_alg = "EdDSA"

# How long data is kept (durations or "forever"); a pass runs every `interval`, in small
# batches. `keyward retention run --dry-run` shows what would go.
[retention]
usage = "400d"          # per-minute usage rows
audit = "2y"            # audit events (a signed checkpoint of the hash chain is kept at the cut)
revoked_keys = "90d"    # after revocation or expiry the key's digest goes; its record stays

# Routes: the longest matching path_prefix wins, then the method.
# `keyward cat-facts --listen 127.0.0.1:9000` runs the example upstream.
[[routes]]
name = "fact"
path_prefix = "/fact"
methods = ["GET"]
upstream = "http://127.0.0.1:9000"
scopes = ["facts:read"]
tokens = true

[[routes]]
name = "facts-read"
path_prefix = "/facts"
methods = ["GET"]
upstream = "http://127.0.0.1:9000"
scopes = ["facts:read"]
tokens = true

[[routes]]
name = "facts-write"
path_prefix = "/facts"
methods = ["POST"]
upstream = "http://127.0.0.1:9000"
scopes = ["facts:write"]
tokens = true
"#;

/// The store's URL in the written configuration: `keyward.db` next to the configuration, or
/// the absolute path of `keyward.db` in `data_dir` (created, mode 0700, when missing).
fn store_url(data_dir: Option<&Path>) -> Result<String> {
    let Some(data) = data_dir else {
        return Ok("keyward.db".into());
    };
    let data = std::path::absolute(data).map_err(|e| CliError::Usage(format!("--data-dir {}: {e}", data.display())))?;
    if !data.is_dir() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&data)
            .map_err(|e| CliError::Io(format!("cannot create {}: {e}", data.display())))?;
    }
    data.join("keyward.db")
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::Usage(format!("--data-dir {}: not valid UTF-8", data.display())))
}

pub(super) fn init(dir: &Path, data_dir: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let cfg = dir.join("keyward.toml");
    let pepper = dir.join("keyward.pepper");
    let token = dir.join("admin.token");
    let kek = dir.join("keyward.kek");
    for p in [&cfg, &pepper, &token, &kek] {
        if p.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists; refusing to overwrite it",
                p.display()
            )));
        }
    }
    let store = store_url(data_dir)?;
    let pepper_text = keyward_core::Pepper::generate_text().map_err(|e| CliError::Io(e.to_string()))?;
    let token_text = keyward_core::secret::random_base62(43).map_err(|e| CliError::Io(e.to_string()))?;
    let io = |p: &Path, e: std::io::Error| CliError::Io(format!("cannot write {}: {e}", p.display()));
    write_secret_file(&pepper, pepper_text.expose()).map_err(|e| io(&pepper, e))?;
    write_secret_file(&token, &token_text).map_err(|e| io(&token, e))?;
    let (_, kek_text) = keyward_token::Kek::generate().map_err(|e| CliError::Io(e.to_string()))?;
    write_secret_file(&kek, &kek_text).map_err(|e| io(&kek, e))?;
    let template = CONFIG_TEMPLATE.replacen(
        "url = \"keyward.db\"",
        &format!("url = {}", toml::Value::String(store.clone())),
        1,
    );
    std::fs::write(&cfg, template).map_err(|e| io(&cfg, e))?;
    println!(
        "wrote {} (configuration; store: {store}, created on first start)",
        cfg.display()
    );
    println!(
        "wrote {} (pepper, mode 0600: back it up; keys cannot be verified without it)",
        pepper.display()
    );
    println!("wrote {} (admin token, mode 0600)", token.display());
    println!(
        "wrote {} (key-encryption key of the token signing keys, mode 0600: back it up)",
        kek.display()
    );
    println!();
    if let Some(data) = store.strip_suffix("keyward.db") {
        if data_dir.is_some() {
            println!(
                "run keyward as the owner of these files (secrets must stay mode 0600), with write access to {data} only (docs/DEPLOYMENT.md)"
            );
        }
    }
    println!("next:");
    println!("  keyward cat-facts --listen 127.0.0.1:9000 &   # the example upstream");
    println!("  keyward serve --config {}", cfg.display());
    println!("  export KEYWARD_ADMIN_TOKEN=$(cat {})", token.display());
    println!("  keyward app create cats && keyward key create --app cats --scope facts:read");
    Ok(())
}
