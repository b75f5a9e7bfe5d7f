//! Secrets: read from the environment or from files readable by their owner only (mode
//! 0600), never from the configuration file itself.

use std::path::Path;

use keyward_core::secret::SecretString;
use keyward_core::Pepper;

use super::{Config, ConfigError};

impl Config {
    /// Reads the pepper: `KEYWARD_PEPPER`, else `secrets.pepper_file`.
    pub fn pepper(&self, env: &[(String, String)]) -> Result<Pepper, ConfigError> {
        let text = secret_from(
            env,
            "KEYWARD_PEPPER",
            self.secrets.pepper_file.as_deref(),
            "secrets.pepper_file",
        )?;
        Pepper::from_text(text.expose()).map_err(|e| ConfigError::Secret(e.to_string()))
    }

    /// Reads the key-encryption key: `KEYWARD_KEK`, else `secrets.kek_file`.
    pub fn kek(&self, env: &[(String, String)]) -> Result<keyward_token::Kek, ConfigError> {
        let t = secret_from(env, "KEYWARD_KEK", self.secrets.kek_file.as_deref(), "secrets.kek_file")?;
        keyward_token::Kek::parse(t.expose()).map_err(|e| ConfigError::Secret(format!("key-encryption key: {e}")))
    }

    /// Reads the admin token: `KEYWARD_ADMIN_TOKEN`, else `secrets.admin_token_file`.
    pub fn admin_token(&self, env: &[(String, String)]) -> Result<SecretString, ConfigError> {
        let t = secret_from(
            env,
            "KEYWARD_ADMIN_TOKEN",
            self.secrets.admin_token_file.as_deref(),
            "secrets.admin_token_file",
        )?;
        if t.expose().len() < 16 {
            return Err(ConfigError::Secret(
                "the admin token must be at least 16 characters".into(),
            ));
        }
        Ok(t)
    }

    /// The secret of `webhooks[i]`: its `secret_env` variable from `env`, or its 0600 file.
    pub fn webhook_secret(&self, i: usize, env: &[(String, String)]) -> Result<SecretString, ConfigError> {
        let Some(w) = self.webhooks.get(i) else {
            return Err(ConfigError::Secret(format!("webhooks[{i}]: no such webhook")));
        };
        match (&w.secret_env, &w.secret_file) {
            (Some(var), _) => match env.iter().find(|(k, _)| k == var) {
                Some((_, v)) if !v.trim().is_empty() => Ok(SecretString::new(v.trim().to_owned())),
                _ => Err(ConfigError::Secret(format!(
                    "webhooks[{i}].secret_env: {var} is not set or empty"
                ))),
            },
            (None, Some(file)) => read_secret_file(file),
            (None, None) => Err(ConfigError::Secret(format!("webhooks[{i}]: no secret"))),
        }
    }

    /// Reads the verify service token: `KEYWARD_VERIFY_TOKEN`, else `verify.token_file`, else
    /// none (the verify API is then off). It must differ from the admin token.
    pub fn verify_token(&self, env: &[(String, String)]) -> Result<Option<SecretString>, ConfigError> {
        let present = env.iter().any(|(k, _)| k == "KEYWARD_VERIFY_TOKEN");
        if !present && self.verify.token_file.is_none() {
            if self.verify.forward_auth_require_token {
                return Err(ConfigError::Secret(
                    "verify.forward_auth_require_token needs KEYWARD_VERIFY_TOKEN or verify.token_file".into(),
                ));
            }
            return Ok(None);
        }
        let t = secret_from(
            env,
            "KEYWARD_VERIFY_TOKEN",
            self.verify.token_file.as_deref(),
            "verify.token_file",
        )?;
        if t.expose().len() < 16 {
            return Err(ConfigError::Secret(
                "the verify token must be at least 16 characters".into(),
            ));
        }
        Ok(Some(t))
    }
}

fn secret_from(
    env: &[(String, String)],
    var: &str,
    file: Option<&Path>,
    key: &str,
) -> Result<SecretString, ConfigError> {
    if let Some((_, v)) = env.iter().find(|(k, _)| k == var) {
        let v = v.trim();
        if v.is_empty() {
            return Err(ConfigError::Secret(format!("{var} is set but empty")));
        }
        return Ok(SecretString::new(v.to_owned()));
    }
    let Some(path) = file else {
        return Err(ConfigError::Secret(format!("set {var} or {key} in the configuration")));
    };
    read_secret_file(path)
}

/// Reads a secret file, refusing files that others could read.
pub fn read_secret_file(path: &Path) -> Result<SecretString, ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta =
            std::fs::metadata(path).map_err(|e| ConfigError::Secret(format!("cannot read {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::Secret(format!(
                "{} has mode {mode:o}: secret files must be readable by their owner only (chmod 600)",
                path.display()
            )));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Secret(format!("cannot read {}: {e}", path.display())))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(ConfigError::Secret(format!("{} is empty", path.display())));
    }
    Ok(SecretString::new(t.to_owned()))
}

/// Writes a secret file with mode 0600, refusing to overwrite.
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}
