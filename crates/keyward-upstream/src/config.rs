//! `[[upstreams]]` groups as written in `keyward.toml` (serde, `deny_unknown_fields`, so that the
//! binary's configuration embeds them as they are), and their validation.
//!
//! ```toml
//! [[upstreams]]
//! name = "api"
//! targets = ["https://10.0.0.1:9443/base", "https://10.0.0.2:9443/base"]
//! balance = "hash"          # round_robin (default) | least_requests | hash
//! hash_by = "key"           # key (default) | app | client_ip — used by the gateway to make the hash
//! max_fails = 3             # passive health, as nginx: failures within fail_timeout eject for fail_timeout
//! fail_timeout = "10s"
//! protocol = "auto"         # http1 | h2c | h2 | auto (ALPN over TLS; plain http: HTTP/1.1)
//! ca_file = "/etc/keyward/upstream-ca.pem"   # instead of the system's roots
//! server_name = "api.internal"               # SNI and the name the certificate must carry
//! client_cert_file = "/etc/keyward/up.pem"   # mutual TLS towards the upstream
//! client_key_file = "/etc/keyward/up.key"
//! [upstreams.health]
//! path = "/healthz"
//! interval = "5s"
//! timeout = "1s"
//! healthy = 2
//! unhealthy = 3
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::target::{Scheme, TargetUrl};

/// One `[[upstreams]]` group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The name routes use in `upstream = "NAME"`.
    pub name: String,
    /// `http://host:port/base` or `https://host:port/base`, at least one.
    pub targets: Vec<TargetUrl>,
    #[serde(default)]
    pub balance: Balance,
    /// What the gateway hashes when `balance = "hash"`.
    #[serde(default)]
    pub hash_by: HashBy,
    /// Failures within `fail_timeout` that eject a target for `fail_timeout`; 0 turns passive
    /// health off (nginx's default is 1; keyward's is 3).
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    #[serde(default = "default_fail_timeout", with = "dur")]
    pub fail_timeout: Duration,
    #[serde(default)]
    pub protocol: Protocol,
    /// PEM file of the CA(s) that sign the targets' certificates (replaces the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and checked in the targets' certificates (default: each target's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS towards the targets; with `client_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// Active health checks (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
}

/// `[upstreams.health]`: a `GET path` on every target every `interval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path (and query) probed; a 2xx or 3xx answer within `timeout` is a success.
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_interval", with = "dur")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout", with = "dur")]
    pub timeout: Duration,
    /// Consecutive successes that bring an unhealthy target back.
    #[serde(default = "default_healthy")]
    pub healthy: u32,
    /// Consecutive failures that mark a target unhealthy.
    #[serde(default = "default_unhealthy")]
    pub unhealthy: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: default_health_path(),
            interval: default_interval(),
            timeout: default_health_timeout(),
            healthy: default_healthy(),
            unhealthy: default_unhealthy(),
        }
    }
}

/// How a target is chosen for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastRequests,
    /// Rendezvous (highest random weight) hashing of the caller's hash key.
    Hash,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequests => "least_requests",
            Balance::Hash => "hash",
        }
    }
}

/// What the gateway hashes for `balance = "hash"` (the key id, the app id, the client address).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashBy {
    #[default]
    Key,
    App,
    ClientIp,
}

/// The protocol spoken to the targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 (an HTTP/1.0 target works too).
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// ALPN over TLS (h2 if offered, else HTTP/1.1); HTTP/1.1 for `http` targets.
    #[default]
    Auto,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
            Protocol::Auto => "auto",
        }
    }
}

fn default_max_fails() -> u32 {
    3
}
fn default_fail_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_health_path() -> String {
    "/".to_owned()
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_healthy() -> u32 {
    2
}
fn default_unhealthy() -> u32 {
    3
}

/// Why a group is refused; the message names the group and the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstreams.{group}: {message}")]
pub struct ConfigError {
    pub group: String,
    pub message: String,
}

fn invalid(group: &str, message: impl fmt::Display) -> ConfigError {
    ConfigError {
        group: group.to_owned(),
        message: message.to_string(),
    }
}

impl GroupConfig {
    /// A group of these targets with every other setting at its default.
    pub fn new(name: impl Into<String>, targets: Vec<TargetUrl>) -> Self {
        GroupConfig {
            name: name.into(),
            targets,
            balance: Balance::default(),
            hash_by: HashBy::default(),
            max_fails: default_max_fails(),
            fail_timeout: default_fail_timeout(),
            protocol: Protocol::default(),
            ca_file: None,
            server_name: None,
            client_cert_file: None,
            client_key_file: None,
            health: None,
        }
    }

    /// Checks what serde cannot: names, targets, TLS options against schemes, protocol against
    /// schemes, durations and thresholds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = self.name.as_str();
        if g.is_empty() {
            return Err(invalid("<unnamed>", "name must not be empty"));
        }
        if g.len() > 64
            || !g
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(invalid(g, "name: use at most 64 letters, digits, '-', '_' or '.'"));
        }
        if self.targets.is_empty() {
            return Err(invalid(g, "targets must list at least one http:// or https:// URL"));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if self.targets[..i].iter().any(|o| o.origin_eq(t)) {
                return Err(invalid(g, format_args!("targets: {t} is listed twice")));
            }
        }
        let any_https = self.targets.iter().any(|t| t.scheme() == Scheme::Https);
        let any_http = self.targets.iter().any(|t| t.scheme() == Scheme::Http);
        let tls_options = [
            ("ca_file", self.ca_file.is_some()),
            ("server_name", self.server_name.is_some()),
            ("client_cert_file", self.client_cert_file.is_some()),
            ("client_key_file", self.client_key_file.is_some()),
        ];
        if !any_https {
            if let Some((name, _)) = tls_options.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    g,
                    format_args!("{name} applies to https:// targets only, and every target is http://"),
                ));
            }
        }
        match self.protocol {
            Protocol::H2c if any_https => {
                return Err(invalid(
                    g,
                    "protocol = \"h2c\" is HTTP/2 without TLS: use \"h2\" (or \"auto\") for https:// targets",
                ))
            }
            Protocol::H2 if any_http => {
                return Err(invalid(
                    g,
                    "protocol = \"h2\" is HTTP/2 over TLS: use \"h2c\" for http:// targets",
                ))
            }
            _ => {}
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(_), None) => return Err(invalid(g, "client_cert_file needs client_key_file")),
            (None, Some(_)) => return Err(invalid(g, "client_key_file needs client_cert_file")),
            _ => {}
        }
        if let Some(name) = &self.server_name {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(invalid(
                    g,
                    format_args!("server_name {name:?} is not a DNS name or an IP address"),
                ));
            }
        }
        if self.max_fails > 0 && self.fail_timeout.is_zero() {
            return Err(invalid(g, "fail_timeout must be positive"));
        }
        if let Some(h) = &self.health {
            if !h.path.starts_with('/') || h.path.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(invalid(
                    g,
                    format_args!("health.path {:?} must be a path starting with '/'", h.path),
                ));
            }
            if h.interval.is_zero() {
                return Err(invalid(g, "health.interval must be positive"));
            }
            if h.timeout.is_zero() {
                return Err(invalid(g, "health.timeout must be positive"));
            }
            if h.timeout > h.interval {
                return Err(invalid(g, "health.timeout must not be longer than health.interval"));
            }
            if h.healthy == 0 || h.unhealthy == 0 {
                return Err(invalid(g, "health.healthy and health.unhealthy must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Validates several groups: each one, and that names are unique.
pub fn validate_all(groups: &[GroupConfig]) -> Result<(), ConfigError> {
    for (i, g) in groups.iter().enumerate() {
        g.validate()?;
        if groups[..i].iter().any(|o| o.name == g.name) {
            return Err(invalid(&g.name, "two [[upstreams]] groups have this name"));
        }
    }
    Ok(())
}

/// Durations as human strings (`2s`, `500ms`, `1m`), as in the rest of keyward's configuration.
pub(crate) mod dur {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        let v = humantime::parse_duration(s.trim())
            .map_err(|_| serde::de::Error::custom(format!("invalid duration {s:?}: use e.g. 500ms, 2s, 1m")))?;
        if v.is_zero() {
            return Err(serde::de::Error::custom("a duration must be positive"));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_src: &str) -> Result<GroupConfig, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            upstreams: Vec<GroupConfig>,
        }
        let f: File = toml::from_str(toml_src).map_err(|e| e.to_string())?;
        let g = f.upstreams.into_iter().next().ok_or("no group")?;
        g.validate().map_err(|e| e.to_string())?;
        Ok(g)
    }

    fn err(toml_src: &str) -> String {
        match parse(toml_src) {
            Ok(g) => panic!("accepted: {g:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn full_group_parses_with_every_contract_name() {
        let g = parse(
            r#"
            [[upstreams]]
            name = "api"
            targets = ["https://10.0.0.1:9443/base/", "https://b.example:443"]
            balance = "hash"
            hash_by = "client_ip"
            max_fails = 2
            fail_timeout = "30s"
            protocol = "h2"
            ca_file = "/etc/ca.pem"
            server_name = "api.internal"
            client_cert_file = "/etc/c.pem"
            client_key_file = "/etc/c.key"
            [upstreams.health]
            path = "/healthz?deep=1"
            interval = "2s"
            timeout = "500ms"
            healthy = 1
            unhealthy = 4
            "#,
        )
        .unwrap();
        assert_eq!(g.balance, Balance::Hash);
        assert_eq!(g.hash_by, HashBy::ClientIp);
        assert_eq!(g.protocol, Protocol::H2);
        assert_eq!(g.max_fails, 2);
        assert_eq!(g.fail_timeout, Duration::from_secs(30));
        assert_eq!(g.targets[0].to_string(), "https://10.0.0.1:9443/base");
        assert_eq!(g.targets[1].to_string(), "https://b.example:443");
        let h = g.health.unwrap();
        assert_eq!((h.path.as_str(), h.healthy, h.unhealthy), ("/healthz?deep=1", 1, 4));
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_secs(2), Duration::from_millis(500))
        );
    }

    #[test]
    fn defaults() {
        let g =
            parse("[[upstreams]]\nname = \"a\"\ntargets = [\"http://127.0.0.1:9000\"]\n[upstreams.health]\n").unwrap();
        assert_eq!(g.balance, Balance::RoundRobin);
        assert_eq!(g.hash_by, HashBy::Key);
        assert_eq!(g.protocol, Protocol::Auto);
        assert_eq!((g.max_fails, g.fail_timeout), (3, Duration::from_secs(10)));
        assert_eq!(g.health, Some(HealthConfig::default()));
        let mut d = GroupConfig::new("a", g.targets.clone());
        d.health = Some(HealthConfig::default());
        assert_eq!(g, d);
        let back = toml::to_string(&g).unwrap();
        assert!(back.contains("fail_timeout = \"10s\""), "{back}");
    }

    #[test]
    fn unknown_fields_and_values_refused() {
        assert!(err("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\nweight = 3\n").contains("unknown field"));
        assert!(
            err("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\nbalance = \"random\"\n")
                .contains("unknown variant")
        );
        assert!(
            err("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\nhash_by = \"header\"\n")
                .contains("unknown variant")
        );
        assert!(
            err("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\nprotocol = \"h3\"\n")
                .contains("unknown variant")
        );
        assert!(
            err("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\n[upstreams.health]\nport = 1\n")
                .contains("unknown field")
        );
    }

    #[test]
    fn bad_urls_refused_with_the_reason() {
        for (url, why) in [
            ("ftp://h:1", "http:// or https://"),
            ("h:1", "http:// or https://"),
            ("http://", "host"),
            ("http://user:pw@h:1", "credentials"),
            ("http://h:1/a?b=c", "query"),
            ("http://h:1/a#f", "fragment"),
            ("http://h:99999", "port"),
            ("http://h:0", "port"),
            ("http://h :1", "invalid"),
            ("http://[::1:1", "invalid"),
        ] {
            let e = err(&format!("[[upstreams]]\nname = \"a\"\ntargets = [{url:?}]\n"));
            assert!(e.contains(why), "{url}: {e}");
        }
        let long = format!("http://h:1/{}", "a".repeat(5000));
        assert!(err(&format!("[[upstreams]]\nname = \"a\"\ntargets = [{long:?}]\n")).contains("too long"));
    }

    #[test]
    fn empty_targets_duplicate_targets_and_bad_names_refused() {
        assert!(err("[[upstreams]]\nname = \"a\"\ntargets = []\n").contains("at least one"));
        assert!(err("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\", \"http://H:1/x\"]\n").contains("twice"));
        assert!(err("[[upstreams]]\nname = \"\"\ntargets = [\"http://h:1\"]\n").contains("name must not be empty"));
        assert!(err("[[upstreams]]\nname = \"a b\"\ntargets = [\"http://h:1\"]\n").contains("name: use"));
        let two = [
            GroupConfig::new("a", vec!["http://h:1".parse().unwrap()]),
            GroupConfig::new("a", vec!["http://h:2".parse().unwrap()]),
        ];
        assert!(validate_all(&two)
            .unwrap_err()
            .to_string()
            .contains("two [[upstreams]]"));
        assert!(validate_all(&two[..1]).is_ok());
    }

    #[test]
    fn tls_options_on_http_targets_refused() {
        for opt in [
            "ca_file = \"/ca.pem\"",
            "server_name = \"x\"",
            "client_cert_file = \"/c\"\nclient_key_file = \"/k\"",
        ] {
            let e = err(&format!(
                "[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\n{opt}\n"
            ));
            assert!(e.contains("applies to https:// targets only"), "{opt}: {e}");
        }
        let e = err("[[upstreams]]\nname = \"a\"\ntargets = [\"https://h:1\"]\nclient_cert_file = \"/c\"\n");
        assert!(e.contains("needs client_key_file"), "{e}");
        let e = err("[[upstreams]]\nname = \"a\"\ntargets = [\"https://h:1\"]\nclient_key_file = \"/k\"\n");
        assert!(e.contains("needs client_cert_file"), "{e}");
        let e = err("[[upstreams]]\nname = \"a\"\ntargets = [\"https://h:1\"]\nserver_name = \"not a name!\"\n");
        assert!(e.contains("server_name"), "{e}");
    }

    #[test]
    fn protocol_must_fit_the_schemes() {
        let e = err("[[upstreams]]\nname = \"a\"\ntargets = [\"https://h:1\"]\nprotocol = \"h2c\"\n");
        assert!(e.contains("h2c"), "{e}");
        let e = err("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\nprotocol = \"h2\"\n");
        assert!(e.contains("use \"h2c\""), "{e}");
        parse("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\nprotocol = \"h2c\"\n").unwrap();
        parse("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\", \"https://h:2\"]\nprotocol = \"auto\"\n")
            .unwrap();
    }

    #[test]
    fn zero_and_bad_durations_and_thresholds_refused() {
        for (section, why) in [
            ("fail_timeout = \"0s\"", "positive"),
            ("fail_timeout = \"soon\"", "invalid duration"),
            ("[upstreams.health]\ninterval = \"0s\"", "positive"),
            ("[upstreams.health]\ntimeout = \"0ms\"", "positive"),
            (
                "[upstreams.health]\ninterval = \"1s\"\ntimeout = \"2s\"",
                "not be longer",
            ),
            ("[upstreams.health]\nhealthy = 0", "at least 1"),
            ("[upstreams.health]\nunhealthy = 0", "at least 1"),
            ("[upstreams.health]\nhealthy = -1", "invalid value"),
            ("[upstreams.health]\npath = \"healthz\"", "starting with '/'"),
            ("[upstreams.health]\npath = \"/a b\"", "starting with '/'"),
            ("max_fails = -1", "invalid value"),
        ] {
            let e = err(&format!(
                "[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\n{section}\n"
            ));
            assert!(e.contains(why), "{section}: {e}");
        }
        // max_fails = 0 turns passive health off.
        let g = parse("[[upstreams]]\nname = \"a\"\ntargets = [\"http://h:1\"]\nmax_fails = 0\n").unwrap();
        assert_eq!(g.max_fails, 0);
    }
}
