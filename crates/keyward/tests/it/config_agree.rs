//! `keyward check-config` and `keyward serve` refuse the same files with the same messages
//! (issue 17 point 6): both run `Config::check`. Each test writes a real file with real 0600
//! secret files, runs both commands as child processes, and compares what they say.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::Proc;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// `keyward ARGS` in `dir`, without any secret or configuration from the test's environment;
/// killed (and the test failed) if it is still running after 30 s, e.g. a `serve` that
/// started although it should have refused.
fn keyward(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(dir).stdin(Stdio::null());
    for k in [
        "KEYWARD_CONFIG",
        "KEYWARD_PEPPER",
        "KEYWARD_ADMIN_TOKEN",
        "KEYWARD_KEK",
        "KEYWARD_VERIFY_TOKEN",
        "KEYWARD_ADMIN_URL",
    ] {
        c.env_remove(k);
    }
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "keyward {args:?} still running after 30 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory with a pepper and an admin token (0600) and a configuration that `serve`
/// accepts, plus `extra` TOML appended (sections after `[admin]`), or `gateway`/`admin`
/// listen addresses of the caller's choosing.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        keyward::config::write_secret_file(&dir.path().join("keyward.pepper"), crate::harness::PEPPER).unwrap();
        keyward::config::write_secret_file(&dir.path().join("admin.token"), "admin-token-0123456789").unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `keyward.toml`: the base configuration with `gateway` and `admin` listen
    /// addresses, then `extra`.
    fn write(&self, gateway: &str, admin: &str, extra: &str) -> PathBuf {
        let p = self.path("keyward.toml");
        std::fs::write(
            &p,
            format!(
                "[store]\nurl = \"k.db\"\n\n[secrets]\npepper_file = \"keyward.pepper\"\nadmin_token_file = \"admin.token\"\n\n\
                 [gateway]\nlisten = \"{gateway}\"\n\n[admin]\nlisten = \"{admin}\"\n\n{extra}"
            ),
        )
        .unwrap();
        p
    }

    /// Runs check-config and serve on `cfg`: both refuse, check-config with exit status 2;
    /// every message check-config prints is in serve's error too, and each of `needles` is in
    /// both. Returns check-config's findings as (line, message).
    fn both_refuse(&self, cfg: &Path, needles: &[&str]) -> Vec<(Option<usize>, String)> {
        let name = cfg.to_str().unwrap();
        let (code, out, err) = keyward(self.dir.path(), &["check-config", name]);
        assert_eq!(code, 2, "check-config: {out}{err}");
        let (scode, sout, serr) = keyward(self.dir.path(), &["serve", "--config", name]);
        assert_eq!(scode, 1, "serve: {sout}{serr}");
        // serve's refusal is a log event: with JSON logs (stderr is not a terminal) its text is
        // in the `error` field, JSON-escaped; read it back as text.
        let serr = serr
            .lines()
            .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(v) => format!(
                    "{} {}",
                    v["message"].as_str().unwrap_or(""),
                    v["error"].as_str().unwrap_or("")
                ),
                Err(_) => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!serr.contains("cannot listen"), "serve got as far as binding: {serr}");
        let findings: Vec<(Option<usize>, String)> = out
            .lines()
            .map(|l| {
                let rest = l.strip_prefix(&format!("{name}:")).unwrap_or_else(|| panic!("{l}"));
                match rest.split_once(':') {
                    Some((n, m)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                        (Some(n.parse().unwrap()), m.trim().to_owned())
                    }
                    _ => (None, rest.trim().to_owned()),
                }
            })
            .collect();
        assert!(!findings.is_empty(), "{out}");
        for (_, m) in &findings {
            assert!(serr.contains(m.as_str()), "serve does not say {m:?}:\n{serr}");
        }
        for n in needles {
            assert!(out.contains(n), "check-config does not say {n:?}:\n{out}");
            assert!(serr.contains(n), "serve does not say {n:?}:\n{serr}");
        }
        findings
    }
}

#[test]
fn a_file_both_accept() {
    let s = Setup::new();
    let cfg = s.write("127.0.0.1:0", "127.0.0.1:0", "");
    let (code, out, err) = keyward(s.dir.path(), &["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with(": ok\n"), "{out}");
    let mut c = Command::new(BIN);
    c.args(["serve", "--config", cfg.to_str().unwrap()])
        .env_remove("KEYWARD_PEPPER")
        .env_remove("KEYWARD_ADMIN_TOKEN")
        .env_remove("KEYWARD_CONFIG")
        .env("KEYWARD_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut serve = Proc::spawn(c);
    serve.wait_for("keyward is serving", 0);
    assert!(serve.terminate().success(), "{}", serve.stderr());
}

#[cfg(unix)]
#[test]
fn secret_files_readable_by_others_are_refused_by_both() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    let cfg = s.write("127.0.0.1:0", "127.0.0.1:0", "");
    for (file, mode) in [("keyward.pepper", 0o640), ("admin.token", 0o604)] {
        let p = s.path(file);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let needle = format!("{} has mode {mode:o}", p.display());
        s.both_refuse(&cfg, &[&needle, "chmod 600"]);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn missing_secret_files_are_refused_by_both() {
    let s = Setup::new();
    std::fs::remove_file(s.path("admin.token")).unwrap();
    let cfg = s.write("127.0.0.1:0", "127.0.0.1:0", "");
    s.both_refuse(&cfg, &["admin.token", "cannot read"]);
    // The KEK, when the token service is on.
    let cfg = s.write("127.0.0.1:0", "127.0.0.1:0", "[oauth]\nenabled = true\n");
    keyward::config::write_secret_file(&s.path("admin.token"), "admin-token-0123456789").unwrap();
    s.both_refuse(&cfg, &["KEYWARD_KEK", "secrets.kek_file"]);
}

#[test]
fn two_listeners_on_one_address_are_refused_by_both() {
    // A port nobody listens on (so that a serve that tried would not fail for another reason).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Setup::new();
    let addr = format!("127.0.0.1:{port}");
    let cfg = s.write(&addr, &addr, "");
    let f = s.both_refuse(&cfg, &[&format!("admin.listen: {addr} is also gateway.listen")]);
    // Reported at the line of the key.
    assert!(
        f.iter().any(|(l, m)| *l == Some(12) && m.starts_with("admin.listen")),
        "{f:?}"
    );
    // The verify listener too, and a wildcard address overlaps a specific one.
    let cfg = s.write(
        "127.0.0.1:0",
        &format!("0.0.0.0:{port}"),
        &format!("[verify]\nlisten = \"{addr}\"\n"),
    );
    s.both_refuse(&cfg, &[&format!("verify.listen: {addr} is also admin.listen")]);
}

#[test]
fn unknown_http_methods_are_refused_by_both() {
    let s = Setup::new();
    let cfg = s.write(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[[routes]]\nname = \"a\"\npath_prefix = \"/a\"\nmethods = [\"get\", \"FETCH\"]\nupstream = \"http://127.0.0.1:9\"\n",
    );
    let f = s.both_refuse(&cfg, &["invalid method \"FETCH\""]);
    // At the line of the route's `[[routes]]` header; `get` (any case) is fine.
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, Some(14), "{f:?}");
}

#[test]
fn every_problem_of_a_route_is_reported_by_both() {
    let s = Setup::new();
    let cfg = s.write(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[[routes]]\nname = \"ok\"\npath_prefix = \"/ok\"\nupstream = \"http://127.0.0.1:9\"\n\n\
         [[routes]]\nname = \"bad\"\npath_prefix = \"bad\"\nmethods = [\"YEET\"]\nupstream = \"ftp://x\"\n\
         scopes = [\"no spaces allowed\"]\nrate = \"lots\"\ncost = 0\n",
    );
    let f = s.both_refuse(
        &cfg,
        &[
            "path_prefix must start with '/'",
            "invalid method \"YEET\"",
            "ftp",
            "no spaces allowed",
            "lots",
            "cost must be at least 1",
        ],
    );
    // Six problems, all of the second route, all at its header's line.
    assert_eq!(f.len(), 6, "{f:?}");
    assert!(
        f.iter()
            .all(|(l, m)| *l == Some(19) && m.starts_with("routes[1] (\"bad\")")),
        "{f:?}"
    );
}

#[test]
fn a_missing_file_is_exit_status_2_for_check_config_and_refused_by_serve() {
    let s = Setup::new();
    let missing = s.path("nope.toml");
    let name = missing.to_str().unwrap();
    let (code, out, err) = keyward(s.dir.path(), &["check-config", name]);
    assert_eq!(code, 2, "{out}{err}");
    let msg = format!("cannot read {name}");
    assert!(err.contains(&msg), "{err}");
    let (code, _, serr) = keyward(s.dir.path(), &["serve", "--config", name]);
    assert_ne!(code, 0);
    assert!(serr.contains(&msg), "{serr}");
}

#[cfg(not(feature = "otel"))]
#[test]
fn trace_export_without_the_otel_feature_is_refused_by_both() {
    let s = Setup::new();
    let cfg = s.write(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n",
    );
    let f = s.both_refuse(&cfg, &["built without the otel feature"]);
    // At the line of the key.
    assert_eq!(f, vec![(Some(15), keyward::telemetry::NOT_BUILT.to_owned())]);
}

/// Issue 23: every malformed `[redis]` topology or TLS setting is refused by both, with the
/// key named, before any connection is tried (the addresses here do not exist).
#[test]
fn hostile_redis_topologies_and_tls_files_are_refused_by_both() {
    let s = Setup::new();
    std::fs::write(s.path("not-pem.pem"), "this is not a certificate").unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "url = \"redis://10.255.255.1:6379\"\ncluster_nodes = [\"redis://10.255.255.1:7000\"]",
            "set exactly one",
        ),
        ("sentinel_nodes = [\"redis://10.255.255.1:26379\"]", "redis.sentinel_master is required"),
        (
            "url = \"redis://10.255.255.1:6379\"\nsentinel_master = \"m\"",
            "redis.sentinel_master: only with redis.sentinel_nodes",
        ),
        ("prefix = \"k\"", "redis.url, redis.cluster_nodes or redis.sentinel_nodes is required"),
        ("cluster_nodes = [\"http://10.255.255.1:7000\"]", "redis.cluster_nodes: not a redis:// or rediss:// URL"),
        ("cluster_nodes = [\"redis:///tmp/redis.sock\"]", "redis.cluster_nodes"),
        (
            "cluster_nodes = [\"redis://10.255.255.1:7000\", \"rediss://10.255.255.2:7000\"]",
            "mixes redis:// and rediss:// URLs",
        ),
        ("url = \"rediss://10.255.255.1:6379/#insecure\"", "#insecure"),
        (
            "url = \"redis://10.255.255.1:6379\"\nca_file = \"not-pem.pem\"",
            "apply to rediss:// URLs only",
        ),
        (
            "url = \"rediss://10.255.255.1:6379\"\nca_file = \"not-pem.pem\"",
            "redis.ca_file holds no PEM certificate",
        ),
        (
            "url = \"rediss://10.255.255.1:6379\"\nca_file = \"missing.pem\"",
            "redis.ca_file: cannot read",
        ),
        (
            "url = \"rediss://10.255.255.1:6379\"\nclient_cert_file = \"not-pem.pem\"",
            "set both or neither",
        ),
        (
            "url = \"rediss://10.255.255.1:6379\"\nclient_cert_file = \"not-pem.pem\"\nclient_key_file = \"not-pem.pem\"",
            "redis.client_cert_file holds no PEM certificate",
        ),
        ("cluster_nodes = []\nurl = \"\"", "is required when [redis] is present"),
    ];
    for (section, needle) in cases {
        let cfg = s.write("127.0.0.1:0", "127.0.0.1:0", &format!("[redis]\n{section}\n"));
        s.both_refuse(&cfg, &[needle]);
    }
}
