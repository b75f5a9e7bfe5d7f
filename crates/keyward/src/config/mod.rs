//! Configuration: TOML with unknown fields refused, every key overridable by a `KEYWARD_*`
//! environment variable (`KEYWARD_<SECTION>__<KEY>`, e.g. `KEYWARD_GATEWAY__LISTEN`;
//! top-level arrays such as `routes` as `KEYWARD_ROUTES` holding a TOML inline array).
//! Secrets never live in the file: the pepper and the admin token come from the environment
//! or from files readable by their owner only (mode 0600).

use std::path::{Path, PathBuf};

mod build;
mod gateway;
mod schema;
mod secrets;
mod validate;

pub use schema::*;
pub use secrets::{read_secret_file, write_secret_file};
pub use validate::{Place, Problem};

/// Environment variables with a `KEYWARD_` prefix that are not configuration overrides.
pub const RESERVED_ENV: &[&str] = &[
    "PEPPER",
    "ADMIN_TOKEN",
    "ADMIN_URL",
    "CONFIG",
    "LOG",
    "LOG_FORMAT",
    "KEK",
    "VERIFY_TOKEN",
];

/// A configuration error, with the file and (when known) the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("secret: {0}")]
    Secret(String),
    /// Several problems (never empty); one line each.
    #[error("{}", list(.0))]
    Problems(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    match problems {
        [one] => one.message.clone(),
        many => {
            let mut s = format!("{} configuration problems:", many.len());
            for p in many {
                s.push_str("\n  ");
                s.push_str(&p.message);
            }
            s
        }
    }
}

impl ConfigError {
    /// `Ok` when there is no problem, else one error holding them all.
    pub fn from_problems(problems: Vec<Problem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Problems(problems))
        }
    }

    /// The file named does not exist (a usage error: exit status 2).
    pub fn is_missing_file(&self) -> bool {
        matches!(self, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl Config {
    /// Loads `path` (if given), applies `KEYWARD_*` overrides from `env` and validates the
    /// result ([`Config::validate`]: no secret is read).
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let cfg = Config::read(path, env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads `path` (if given) and applies `KEYWARD_*` overrides from `env`, without
    /// validating: `serve` runs [`Config::check`] on it, `check-config` too.
    pub fn read(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?,
            None => String::new(),
        };
        Config::from_text(&text, path, env)
    }

    /// Parses `text` (the content of `path`, which relative paths are resolved against) and
    /// applies `KEYWARD_*` overrides from `env`, without validating.
    pub fn from_text(text: &str, path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let origin = path.map_or_else(|| "configuration".to_owned(), |p| p.display().to_string());
        let mut table = parse_table(text, &origin)?;
        apply_env(&mut table, env)?;
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(format!("configuration: {}", e.message())))?;
        if let Some(base) = path.and_then(Path::parent) {
            cfg.resolve_paths(base);
        }
        Ok(cfg)
    }

    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = self.secrets.pepper_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self.secrets.admin_token_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self.secrets.kek_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self.verify.token_file.as_mut() {
            abs(p);
        }
        for w in &mut self.webhooks {
            if let Some(p) = w.secret_file.as_mut() {
                abs(p);
            }
        }
        if let Some(p) = self.leak_reports.github_keys_file.as_mut() {
            abs(p);
        }
        if let Some(p) = self.audit.path.as_mut() {
            abs(p);
        }
        let g = &mut self.gateway;
        for p in [&mut g.tls_cert_file, &mut g.tls_key_file, &mut g.tls_client_ca_file]
            .into_iter()
            .flatten()
        {
            abs(p);
        }
        for p in &mut g.tls_crl_files {
            abs(p);
        }
        if !self.store.url.contains("://") && !self.store.url.starts_with("sqlite:") {
            let mut p = PathBuf::from(&self.store.url);
            abs(&mut p);
            self.store.url = p.display().to_string();
        }
    }
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .map(|l| format!(" at line {l}"))
            .unwrap_or_default();
        ConfigError::Invalid(format!("{origin}{line}: {}", e.message()))
    })
}

/// Applies `KEYWARD_<SECTION>__<KEY>=value` overrides. Values are read as TOML when they
/// parse as a TOML value (numbers, booleans, arrays, inline tables), else as strings.
pub fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("KEYWARD_") else {
            continue;
        };
        if RESERVED_ENV.contains(&rest) || rest.starts_with("TEST_") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid(format!("{k}: malformed override name")));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.clone()));
        let mut cur = &mut *table;
        for (i, seg) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur.insert(seg.clone(), value.clone());
            } else {
                let entry = cur
                    .entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                cur = entry
                    .as_table_mut()
                    .ok_or_else(|| ConfigError::Invalid(format!("{k}: {seg} is not a section")))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.gateway.listen.port(), 8080);
        assert_eq!(c.keys.prefix, "kw");
    }

    #[test]
    fn env_overrides_every_kind_of_value() {
        let c = Config::load(
            None,
            &env(&[
                ("KEYWARD_GATEWAY__LISTEN", "127.0.0.1:9999"),
                ("KEYWARD_GATEWAY__INVALID_CREDENTIAL_STATUS", "403"),
                ("KEYWARD_GATEWAY__CREDENTIAL_HEADERS", "[\"x-key\", \"x-api-key\"]"),
                ("KEYWARD_CACHE__TTL", "5s"),
                ("KEYWARD_KEYS__PREFIX", "acme"),
                (
                    "KEYWARD_ROUTES",
                    "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://127.0.0.1:1\"}]",
                ),
                ("KEYWARD_PEPPER", "not a config key"),
                ("KEYWARD_TEST_POSTGRES_URL", "ignored"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.gateway.listen.port(), 9999);
        assert_eq!(c.gateway.invalid_credential_status, 403);
        assert_eq!(c.gateway.credential_headers, vec!["x-key", "x-api-key"]);
        assert_eq!(c.cache.ttl, Duration::from_secs(5));
        assert_eq!(c.keys.prefix, "acme");
        assert_eq!(c.routes.len(), 1);
        // The body read deadline reaches every listener's limits.
        let c = Config::load(None, &env(&[("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "7s")])).unwrap();
        assert_eq!(c.http_limits().unwrap().body_read_timeout, Duration::from_secs(7));
    }

    #[test]
    fn gateway_workers_are_bounded() {
        let workers =
            |v: &str| Config::load(None, &env(&[("KEYWARD_SERVER__WORKER_THREADS", v)])).map(|c| c.gateway_workers());
        assert_eq!(workers("3").unwrap().unwrap(), 3);
        assert_eq!(workers("1024").unwrap().unwrap(), 1024);
        assert!(workers("0").unwrap().unwrap() >= 1, "0 is one per core");
        // Refused when the configuration is read, naming the key and the bound.
        let e = format!("{:?}", workers("1025").map(drop).unwrap_err());
        assert!(e.contains("server.worker_threads") && e.contains("1024"), "{e}");
        let mut c = Config::load(None, &env(&[])).unwrap();
        c.server.worker_threads = 20_000;
        assert!(c.gateway_workers().is_err());
        assert!(
            c.check(&[])
                .iter()
                .any(|p| p.to_string().contains("server.worker_threads")),
            "check-config names it"
        );
        // Not a count at all: refused when the configuration is read.
        for bad in ["-1", "two", "1e9", "99999999999999999999999"] {
            assert!(workers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dpop_replay_capacity_is_bounded() {
        let capacity = |v: &str| {
            Config::load(None, &env(&[("KEYWARD_OAUTH__DPOP_REPLAY_CAPACITY", v)]))
                .and_then(|c| c.oauth_config())
                .map(|o| o.dpop.replay_capacity)
        };
        let default = Config::load(None, &env(&[])).unwrap().oauth_config().unwrap();
        assert_eq!(default.dpop.replay_capacity, 4_000_000);
        assert_eq!(capacity("1000").unwrap(), 1_000);
        assert_eq!(capacity("400000000").unwrap(), 400_000_000);
        // Outside the range: refused, naming the key and the range.
        for bad in ["999", "0", "400000001"] {
            let e = capacity(bad).unwrap_err().to_string();
            assert!(
                e.contains("oauth.dpop_replay_capacity") && e.contains("1000..=400000000"),
                "{bad}: {e}"
            );
        }
        // Not a count at all: refused when the configuration is read.
        for bad in ["-1", "lots", "1e9", "99999999999999999999999"] {
            assert!(capacity(bad).is_err(), "{bad}");
        }
        let mut c = Config::load(None, &env(&[])).unwrap();
        c.oauth.enabled = true;
        c.oauth.dpop_replay_capacity = 5;
        assert!(
            c.check(&[])
                .iter()
                .any(|p| p.to_string().contains("oauth.dpop_replay_capacity")),
            "check-config names it"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "[gateway]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap();
        let e = Config::load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        std::fs::write(&p, "[gateway]\nlisten = \n").unwrap();
        let e = Config::load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = Config::load(None, &env(&[("KEYWARD_NOPE__X", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (k, v) in [
            ("KEYWARD_GATEWAY__INVALID_CREDENTIAL_STATUS", "500"),
            ("KEYWARD_GATEWAY__CONNECT_TIMEOUT", "0s"),
            ("KEYWARD_GATEWAY__CONNECT_TIMEOUT", "soon"),
            ("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "0s"),
            ("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "-5s"),
            ("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "\"30\""),
            ("KEYWARD_GATEWAY__BODY_READ_TIMEOUT", "99999999999999999999s"),
            ("KEYWARD_GATEWAY__CREDENTIAL_HEADERS", "[\"bad header\"]"),
            ("KEYWARD_GATEWAY__CREDENTIAL_HEADERS", "[\"authorization\"]"),
            ("KEYWARD_KEYS__PREFIX", "Bad_Prefix"),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"r\", upstream = \"http://h:1\"}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"ftp://h:1\"}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", scopes = [\"a b\"]}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", rate = \"0/min\"}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", rate = \"10/fortnight\"}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", burst = 5}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", cost = 0}]",
            ),
            (
                "KEYWARD_ROUTES",
                "[{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\", rate_by = \"planet\"}]",
            ),
            ("KEYWARD_GATEWAY__TRUSTED_PROXIES", "[\"10.0.0.0/33\"]"),
            ("KEYWARD_GATEWAY__TRUSTED_PROXIES", "[\"fe80::1%eth0/64\"]"),
            ("KEYWARD_GATEWAY__LISTEN", "nowhere"),
        ] {
            assert!(Config::load(None, &env(&[(k, v)])).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn proxy_options_are_checked() {
        let route = |extra: &str| format!("[{{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\"{extra}}}]");
        let load = |routes: &str, upstreams: Option<&str>| {
            let mut vars = vec![("KEYWARD_ROUTES", routes.to_owned())];
            if let Some(u) = upstreams {
                vars.push(("KEYWARD_UPSTREAMS", u.to_owned()));
            }
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Config::load(None, &env(&vars))
        };
        // Accepted.
        for ok in [
            ", hosts = [\"api.example.com\", \"*.example.com\"], strip_prefix = true, preserve_host = true",
            ", request_headers = {set = {\"x-env\" = \"prod\"}, remove = [\"cookie\"]}, response_headers = {remove = [\"server\"]}",
            ", timeout = \"5s\", connect_timeout = \"1s\", max_body_size = 1024",
            ", websocket = true, idle_timeout = \"30s\", max_tunnel_duration = \"1h\"",
            ", public = true, api_keys = false, rate = \"10/s\", rate_by = \"client_ip\"",
            ", rate = \"10/s\", rate_by = \"client_ip\"",
        ] {
            assert!(load(&route(ok), None).is_ok(), "{ok}: {:?}", load(&route(ok), None).err());
        }
        let group = "[{name = \"cats\", targets = [\"http://10.0.0.1:9000\", \"http://10.0.0.2:9000\"], balance = \"hash\", hash_by = \"client_ip\"}]";
        let named = "[{name = \"r\", path_prefix = \"/r\", upstream = \"cats\"}]";
        assert!(load(named, Some(group)).is_ok(), "{:?}", load(named, Some(group)).err());
        // Refused, each with the key named.
        for (bad, says) in [
            (", hosts = [\"http://a.com\"]", "hosts"),
            (", hosts = [\"a..b\"]", "hosts"),
            (
                ", request_headers = {set = {\"x-keyward-app\" = \"evil\"}}",
                "request_headers",
            ),
            (
                ", response_headers = {remove = [\"transfer-encoding\"]}",
                "response_headers",
            ),
            (", request_headers = {set = {\"x-a\" = \"b\"}, add = [\"c\"]}", "add"),
            (", timeout = \"0s\"", "positive"),
            (", max_body_size = 0", "max_body_size"),
            (", idle_timeout = \"30s\"", "websocket"),
            (", public = true, scopes = [\"a:b\"]", "public"),
            (", public = true, rate = \"1/s\"", "client_ip"),
            (", protocol = \"h3\"", "expected one of `http1`, `h2c`, `h2`, `auto`"),
        ] {
            let e = load(&route(bad), None).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // A group name that does not exist; TLS settings on a route that names a group.
        let e = load(named, None).unwrap_err().to_string();
        assert!(e.contains("[[upstreams]]"), "{e}");
        let tls_on_named = "[{name = \"r\", path_prefix = \"/r\", upstream = \"cats\", ca_file = \"/x\"}]";
        let e = load(tls_on_named, Some(group)).unwrap_err().to_string();
        assert!(e.contains("go on the [[upstreams]] group"), "{e}");
        // A bad group: no targets, a password in a target (never echoed), h2c over https.
        for (g, says) in [
            ("[{name = \"cats\", targets = []}]", "targets"),
            (
                "[{name = \"cats\", targets = [\"https://10.0.0.1\"], protocol = \"h2c\"}]",
                "h2c",
            ),
        ] {
            let e = load(named, Some(g)).unwrap_err().to_string();
            assert!(e.contains(says), "{g}: {e}");
        }
        let e = load(
            named,
            Some("[{name = \"cats\", targets = [\"http://u:hunter2@10.0.0.1\"]}]"),
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("hunter2"), "a password in an error: {e}");
    }

    #[test]
    fn decision_cache_is_checked() {
        let load = |extra: &str| {
            let routes = format!("[{{name = \"r\", path_prefix = \"/r\", upstream = \"http://h:1\"{extra}}}]");
            Config::load(None, &env(&[("KEYWARD_ROUTES", routes.as_str())]))
        };
        let c = load(", decision_cache = \"5s\"").unwrap();
        let gw = c.gateway_config().unwrap();
        assert_eq!(gw.routes[0].options.decision_cache, Some(Duration::from_secs(5)));
        let c = load("").unwrap();
        assert_eq!(
            c.gateway_config().unwrap().routes[0].options.decision_cache,
            None,
            "off by default"
        );
        assert!(load(", decision_cache = \"300s\", public = true").is_ok());
        for (bad, says) in [
            (", decision_cache = \"5s\", rate = \"10/s\"", "route rate"),
            (", decision_cache = \"5s\", cost = 2", "quota cost"),
            (", decision_cache = \"5s\", cost = 1", "quota cost"),
            (", decision_cache = \"1500ms\"", "whole seconds"),
            (", decision_cache = \"301s\"", "whole seconds"),
            (", decision_cache = \"0s\"", "positive"),
            (", decision_cache = \"soon\"", "invalid duration"),
            (", decision_cache = 5", "expected a string"),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_grpc_listener_needs_its_own_address() {
        let c = Config::load(None, &env(&[("KEYWARD_VERIFY__GRPC_LISTEN", "\"127.0.0.1:8083\"")])).unwrap();
        assert_eq!(c.verify.grpc_listen, Some("127.0.0.1:8083".parse().unwrap()));
        for bad in ["\"nowhere\"", "8083", "[\"127.0.0.1:8083\"]"] {
            assert!(
                Config::load(None, &env(&[("KEYWARD_VERIFY__GRPC_LISTEN", bad)])).is_err(),
                "{bad}"
            );
        }
        // The admin listener's default address: refused when starting (`check`).
        let c = Config::load(None, &env(&[("KEYWARD_VERIFY__GRPC_LISTEN", "\"127.0.0.1:8081\"")])).unwrap();
        let p: Vec<String> = c.check(&[]).into_iter().map(|p| p.message).collect();
        assert!(
            p.iter()
                .any(|m| m.starts_with("verify.grpc_listen: 127.0.0.1:8081 is also admin.listen")),
            "{p:?}"
        );
    }

    #[test]
    fn tls_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&key, "x").unwrap();
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        let missing = dir.path().join("nope.pem").display().to_string();
        let ok = Config::load(
            None,
            &env(&[
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", &c),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", &k),
            ]),
        )
        .unwrap();
        let t = ok.tls_settings().unwrap().unwrap();
        assert_eq!(t.reload_interval, Duration::from_secs(30));
        assert_eq!(t.client_auth, keyward_edge::tls::ClientAuth::None);
        assert!(Config::default().tls_settings().unwrap().is_none());
        for pairs in [
            vec![("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str())],
            vec![("KEYWARD_GATEWAY__TLS_KEY_FILE", k.as_str())],
            vec![
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str()),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", missing.as_str()),
            ],
            vec![
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str()),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", k.as_str()),
                ("KEYWARD_GATEWAY__TLS_CLIENT_AUTH", "required"),
            ],
            vec![
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str()),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", k.as_str()),
                ("KEYWARD_GATEWAY__TLS_CLIENT_AUTH", "sometimes"),
            ],
            vec![
                ("KEYWARD_GATEWAY__TLS_CERT_FILE", c.as_str()),
                ("KEYWARD_GATEWAY__TLS_KEY_FILE", k.as_str()),
                ("KEYWARD_GATEWAY__TLS_CLIENT_AUTH", "optional"),
                ("KEYWARD_GATEWAY__TLS_CLIENT_CA_FILE", missing.as_str()),
            ],
            vec![("KEYWARD_GATEWAY__TLS_CLIENT_AUTH", "optional")],
        ] {
            assert!(Config::load(None, &env(&pairs)).is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn secret_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pepper");
        write_secret_file(&p, &"a".repeat(64)).unwrap();
        assert!(read_secret_file(&p).is_ok());
        assert!(write_secret_file(&p, "x").is_err(), "never overwrites");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = read_secret_file(&p).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
        }
    }
}
