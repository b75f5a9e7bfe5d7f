//! Validation. [`Config::check`] is everything `keyward serve` refuses before it binds a
//! listener, and `keyward check-config` runs exactly that function: both refuse the same
//! files with the same messages. It collects every problem rather than stopping at the first.
//! [`Config::validate`] is its part that reads no secret (what `Config::load` checks, for the
//! management commands and for a SIGHUP reload).

use std::net::SocketAddr;

use keyward_core::KeyFormat;

use super::{Config, ConfigError};

/// Where a problem is, so that `check-config` can give its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In `routes[i]`.
    Route(usize),
    /// In `webhooks[i]`.
    Webhook(usize),
    /// Elsewhere; a message that starts with a key (`gateway.publishable_rate: …`) is about it.
    Key,
}

/// One problem of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub place: Place,
    pub message: String,
}

impl Problem {
    pub fn new(place: Place, message: impl Into<String>) -> Problem {
        Problem {
            place,
            message: message.into(),
        }
    }

    /// A problem from a builder's error: its problems when it has several, else one at `place`.
    pub(crate) fn from_error(place: Place, e: ConfigError) -> Vec<Problem> {
        match e {
            ConfigError::Problems(p) => p,
            other => vec![Problem::new(place, other.to_string())],
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The HTTP methods a route may name (RFC 9110 and PATCH).
pub const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl Config {
    /// Everything that can be checked without reading a secret or touching the network (but
    /// for the TLS files being readable): the first problem, or all of them in
    /// [`ConfigError::Problems`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::from_problems(self.problems())
    }

    /// What [`Config::validate`] checks, every problem.
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut add = |place: Place, r: Result<(), ConfigError>| {
            if let Err(e) = r {
                for p in Problem::from_error(place, e) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        };
        add(
            Place::Key,
            KeyFormat::new(&self.keys.prefix)
                .map(drop)
                .map_err(|e| ConfigError::Invalid(format!("keys.prefix: {e}"))),
        );
        add(Place::Key, self.gateway_config().map(drop));
        add(Place::Key, self.http_limits().map(drop));
        add(Place::Key, self.gateway_workers().map(drop));
        add(Place::Key, self.tls_settings().map(drop));
        add(Place::Key, self.validate_webhooks());
        add(Place::Key, self.forward_auth_config().map(drop));
        add(Place::Key, self.retention_settings().map(drop));
        add(Place::Key, self.audit_file().map(drop));
        out
    }

    /// Every problem `keyward serve` would refuse at start, before binding a listener: the
    /// file's meaning ([`Config::validate`]), the limiter and token service settings, the
    /// listeners (no two on one address), and the secrets (present, readable by their owner
    /// only, well-formed). `env` is the process environment (`KEYWARD_PEPPER`, …).
    pub fn check(&self, env: &[(String, String)]) -> Vec<Problem> {
        let mut out = self.problems();
        let mut add = |place: Place, r: Result<(), ConfigError>| {
            if let Err(e) = r {
                for p in Problem::from_error(place, e) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        };
        add(Place::Key, self.limiter().map(drop));
        if self.oauth.enabled {
            add(Place::Key, self.oauth_config().map(drop));
        }
        if !crate::telemetry::ENABLED && self.telemetry.otlp_endpoint.is_some() {
            // Refused rather than ignored: an operator who asked for traces must not think
            // they are exported.
            add(
                Place::Key,
                Err(ConfigError::Invalid(crate::telemetry::NOT_BUILT.into())),
            );
        }
        add(Place::Key, self.distinct_listeners());
        add(Place::Key, self.pepper(env).map(drop));
        let admin = self.admin_token(env);
        let verify = self.verify_token(env);
        if let (Ok(a), Ok(Some(v))) = (&admin, &verify) {
            if keyward_core::secret::ct_eq(a.expose().as_bytes(), v.expose().as_bytes()) {
                add(
                    Place::Key,
                    Err(ConfigError::Secret(
                        "the verify token must differ from the admin token (it can only verify)".into(),
                    )),
                );
            }
        }
        add(Place::Key, admin.map(drop));
        add(Place::Key, verify.map(drop));
        if self.oauth.enabled {
            add(Place::Key, self.kek(env).map(drop));
        }
        for i in 0..self.webhooks.len() {
            add(Place::Webhook(i), self.webhook_secret(i, env).map(drop));
        }
        add(Place::Key, self.github_keys().map(drop));
        out
    }

    /// No two listeners (gateway, admin, verify, verify gRPC, metrics) on one address (port 0 excepted:
    /// each such listener gets a port of its own).
    fn distinct_listeners(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        let all = [
            Some((self.gateway.listen, "gateway.listen")),
            Some((self.admin.listen, "admin.listen")),
            self.verify.listen.map(|a| (a, "verify.listen")),
            self.verify.grpc_listen.map(|a| (a, "verify.grpc_listen")),
            self.metrics.listen.map(|a| (a, "metrics.listen")),
        ];
        let mut problems = Vec::new();
        for (addr, key) in all.into_iter().flatten() {
            if addr.port() == 0 {
                continue;
            }
            // A wildcard address overlaps every address of its family on the same port.
            let clash = seen.iter().find(|(a, _)| {
                a.port() == addr.port()
                    && a.is_ipv4() == addr.is_ipv4()
                    && (a.ip() == addr.ip() || a.ip().is_unspecified() || addr.ip().is_unspecified())
            });
            if let Some((other, other_key)) = clash {
                problems.push(Problem::new(
                    Place::Key,
                    format!("{key}: {addr} is also {other_key} ({other}); every listener needs its own address"),
                ));
            }
            seen.push((addr, key));
        }
        ConfigError::from_problems(problems)
    }

    /// The webhooks and the leak-report path, every problem.
    pub(super) fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            let at = format!("webhooks[{i}]");
            let mut bad = |m: String| problems.push(Problem::new(Place::Webhook(i), m));
            if let Err(e) = keyward_engine::webhook::parse_url(&w.url) {
                bad(format!("{at}: {e}"));
            }
            if w.secret_env.is_some() == w.secret_file.is_some() {
                bad(format!("{at}: set exactly one of secret_env and secret_file"));
            }
            if w.max_attempts == 0 {
                bad(format!("{at}: max_attempts must be at least 1"));
            }
            if w.events
                .as_ref()
                .is_some_and(|e| e.is_empty() || e.iter().any(|k| k.is_empty()))
            {
                bad(format!(
                    "{at}: events must name at least one kind (or leave it out for the default)"
                ));
            }
        }
        let p = &self.leak_reports.path;
        if !p.starts_with('/') || p.contains(['{', '}', '*']) {
            problems.push(Problem::new(
                Place::Key,
                format!("leak_reports.path: {p:?} must be a plain absolute path"),
            ));
        }
        ConfigError::from_problems(problems)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn secrets() -> Vec<(String, String)> {
        vec![
            (
                "KEYWARD_PEPPER".into(),
                "test-pepper-0123456789abcdef0123456789abcdef".into(),
            ),
            ("KEYWARD_ADMIN_TOKEN".into(), "admin-token-0123456789".into()),
        ]
    }

    fn listeners(gateway: &str, admin: &str, verify: Option<&str>) -> Vec<String> {
        let mut c = Config::default();
        c.gateway.listen = gateway.parse().unwrap();
        c.admin.listen = admin.parse().unwrap();
        c.verify.listen = verify.map(|v| v.parse().unwrap());
        c.check(&secrets()).into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn defaults_with_secrets_pass_the_check() {
        assert_eq!(Config::default().check(&secrets()), vec![]);
    }

    #[test]
    fn listeners_need_their_own_addresses() {
        assert!(listeners("127.0.0.1:0", "127.0.0.1:0", Some("127.0.0.1:0")).is_empty());
        assert!(listeners("127.0.0.1:9000", "127.0.0.2:9000", None).is_empty());
        assert!(listeners("127.0.0.1:9000", "[::1]:9000", None).is_empty());
        let p = listeners("127.0.0.1:9000", "127.0.0.1:9000", None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("admin.listen: 127.0.0.1:9000 is also gateway.listen"),
            "{p:?}"
        );
        let p = listeners("0.0.0.0:9000", "127.0.0.1:9001", Some("10.0.0.1:9000"));
        assert!(
            p[0].starts_with("verify.listen: 10.0.0.1:9000 is also gateway.listen"),
            "{p:?}"
        );
    }

    #[test]
    fn without_secrets_every_missing_one_is_a_problem() {
        let mut c = Config::default();
        c.oauth.enabled = true;
        let p: Vec<String> = c.check(&[]).into_iter().map(|p| p.message).collect();
        for needle in ["KEYWARD_PEPPER", "KEYWARD_ADMIN_TOKEN", "KEYWARD_KEK"] {
            assert!(p.iter().any(|m| m.contains(needle)), "{needle}: {p:?}");
        }
    }

    #[test]
    fn methods_must_be_known() {
        let c = Config {
            routes: vec![crate::config::RouteSection {
                name: "a".into(),
                path_prefix: "/a".into(),
                upstream: "http://127.0.0.1:9".into(),
                api_keys: true,
                methods: vec!["get".into(), "Patch".into(), "GETS".into(), "".into(), "G T".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let p = c.check(&secrets());
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p
            .iter()
            .all(|p| p.place == Place::Route(0) && p.message.contains("invalid method")));
    }
}
