//! The binary as a user runs it: init, serve, the management commands, demo, and what ends
//! up in the logs (issue 2, points 7, 8 and 10).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::proc::{url_after, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn keyward(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("KEYWARD_ADMIN_TOKEN")
        .env_remove("KEYWARD_ADMIN_URL")
        .env_remove("KEYWARD_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keyward ARGS` as a child process (no admin or pepper from the test's environment), its
/// stderr collected.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut c = Command::new(BIN);
    c.args(args).stdout(Stdio::piped()).stdin(Stdio::null());
    c.env_remove("KEYWARD_ADMIN_TOKEN").env_remove("KEYWARD_PEPPER");
    for (k, v) in env {
        c.env(k, v);
    }
    Proc::spawn(c)
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_serve_manage_and_nothing_secret_in_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = keyward(&["init", "--dir", d], &[]);
    assert_eq!(code, 0, "{out}{err}");
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.path().join("keyward.pepper")), 0o600);
        assert_eq!(mode(&dir.path().join("admin.token")), 0o600);
        assert_eq!(mode(&dir.path().join("keyward.kek")), 0o600);
    }
    let (code, _, err) = keyward(&["init", "--dir", d], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let pepper = std::fs::read_to_string(dir.path().join("keyward.pepper"))
        .unwrap()
        .trim()
        .to_owned();
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let kek = std::fs::read_to_string(dir.path().join("keyward.kek"))
        .unwrap()
        .trim()
        .to_owned();

    // The upstream.
    let upstream = spawn(&["cat-facts", "--listen", "127.0.0.1:0"], &[]);
    let up = url_after(&upstream.wait_for("cat-facts API on", 0), "on http://");
    let routes = format!(
        "[{{name = \"fact\", path_prefix = \"/fact\", methods = [\"GET\"], upstream = \"http://{up}\", scopes = [\"facts:read\"]}}]"
    );
    let cfg = dir.path().join("keyward.toml");
    let mut server = spawn(
        &["serve", "--config", cfg.to_str().unwrap()],
        &[
            ("KEYWARD_GATEWAY__LISTEN", "127.0.0.1:0"),
            ("KEYWARD_ADMIN__LISTEN", "127.0.0.1:0"),
            ("KEYWARD_ROUTES", &routes),
            ("KEYWARD_LOG", "trace"),
            ("KEYWARD_LOG_FORMAT", "json"),
        ],
    );
    let line = server.wait_for("keyward: gateway on", 0);
    let gw = format!("http://{}", url_after(&line, "gateway on http://"));
    let admin = format!("http://{}", url_after(&line, "admin API on http://"));
    assert!(
        dir.path().join("keyward.db").exists(),
        "the store is created on first start"
    );

    let env = [
        ("KEYWARD_ADMIN_URL", admin.as_str()),
        ("KEYWARD_ADMIN_TOKEN", token.as_str()),
    ];
    let (code, out, err) = keyward(&["app", "create", "cats"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created app cats"), "{out}");
    let (code, out, err) = keyward(
        &[
            "key",
            "create",
            "--app",
            "cats",
            "--name",
            "ci",
            "--scope",
            "facts:read",
            "--expires",
            "90d",
            "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    // Human output of create shows the key once, with a warning.
    let (code, out, _) = keyward(&["key", "create", "--app", "cats"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("kw_live_") && out.contains("never show it again"), "{out}");

    // The management commands also find the admin API through the configuration file.
    let (code, out, err) = keyward(
        &["--config", cfg.to_str().unwrap(), "app", "list"],
        &[("KEYWARD_ADMIN_URL", admin.as_str())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cats") && out.contains("NAME"), "{out}");
    let (code, out, _) = keyward(&["key", "list", "--app", "cats"], &env);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("facts:read") && !out.contains(&key),
        "{out}"
    );
    let (code, out, _) = keyward(&["key", "show", &id, "--json"], &env);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(shown["expires_at"].is_string());
    assert!(shown.get("key").is_none() && !out.contains(&key));

    // Errors: clear, non-zero, before any request when they can be.
    let (code, _, err) = keyward(&["key", "create", "--app", "cats", "--expires", "soon"], &env);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--expires"), "{err}");
    let (code, _, err) = keyward(
        &["key", "create", "--app", "cats", "--expires", "2001-01-01T00:00:00Z"],
        &env,
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = keyward(&["key", "create", "--app", "cats", "--scope", "a b"], &env);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = keyward(&["key", "create", "--app", "no-such-app"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("app not found"), "{err}");
    let (code, _, err) = keyward(&["key", "show", "key_nope"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = keyward(
        &["app", "list"],
        &[
            ("KEYWARD_ADMIN_URL", admin.as_str()),
            ("KEYWARD_ADMIN_TOKEN", "wrong-token-wrong-token"),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("401") && !err.contains(&token), "{err}");
    let (code, _, err) = keyward(
        &["app", "list"],
        &[
            ("KEYWARD_ADMIN_URL", "http://127.0.0.1:9"),
            ("KEYWARD_ADMIN_TOKEN", &token),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, _) = keyward(&["key", "frobnicate"], &env);
    assert_eq!(code, 2);

    // Limits on the command line (issue 3): checked locally, then applied by the server.
    for (flag, value) in [
        ("--rate", "0/min"),
        ("--rate", "-1/s"),
        ("--rate", "10/fortnight"),
        ("--rate", "99999999999999999999/s"),
        ("--quota", "0/month"),
        ("--quota", "10/fortnight"),
        ("--ip", "fe80::1%eth0/64"),
        ("--ip", "10.0.0.0/33"),
        ("--scope", ""),
    ] {
        let (code, _, err) = keyward(&["key", "create", "--app", "cats", flag, value], &env);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag} {value}: {err}");
    }
    // Issue 22, point 8: a bad unit names exactly the accepted forms (month for quotas only).
    for (flag, units) in [
        ("--quota", keyward_core::policy::QUOTA_UNITS),
        ("--rate", keyward_core::policy::RATE_UNITS),
    ] {
        let (code, _, err) = keyward(&["key", "create", "--app", "cats", flag, "10/fortnight"], &env);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("the unit must be {units}")), "{flag}: {err}");
    }
    let (code, out, err) = keyward(
        &[
            "key", "create", "--app", "cats", "--quota", "10/week", "--rate", "70/week", "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let weekly: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(weekly["policy"]["quota"], "10/week", "{out}");
    assert_eq!(weekly["policy"]["rate"]["limit"], "70/week", "{out}");
    let (code, _, err) = keyward(&["key", "create", "--app", "cats", "--burst", "5"], &env);
    assert_eq!(code, 2, "--burst needs --rate: {err}");
    let (code, out, err) = keyward(
        &[
            "key",
            "create",
            "--app",
            "cats",
            "--ip",
            "10.0.0.0/8",
            "--ip",
            "127.0.0.1",
            "--rate",
            "100/min",
            "--burst",
            "20",
            "--quota",
            "10000/month",
            "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let limited: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(limited["policy"]["rate"]["limit"], "100/min");
    assert_eq!(limited["policy"]["rate"]["burst"], 20);
    assert_eq!(limited["policy"]["quota"], "10000/month");
    assert_eq!(
        limited["policy"]["ips"],
        serde_json::json!(["10.0.0.0/8", "127.0.0.1/32"])
    );
    let lid = limited["id"].as_str().unwrap().to_owned();
    let (code, out, err) = keyward(
        &[
            "key",
            "update",
            &lid,
            "--no-rate",
            "--quota",
            "5/day",
            "--scope",
            "facts:read",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("quota 5/day") && !out.contains("rate 100/min"), "{out}");
    let (code, out, _) = keyward(&["key", "show", &lid], &env);
    assert_eq!(code, 0);
    assert!(out.contains("ips 10.0.0.0/8,127.0.0.1/32"), "{out}");
    let (code, out, err) = keyward(&["app", "update", "cats", "--rate", "1000/min"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rate 1000/min"), "{out}");
    let (code, out, _) = keyward(&["app", "update", "cats", "--no-rate"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("limits: -"), "{out}");

    // Lifecycle from the command line (issue 4).
    let (code, out, err) = keyward(
        &[
            "key",
            "create",
            "--app",
            "cats",
            "--scope",
            "facts:read",
            "--expires",
            "30d",
            "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let rid = serde_json::from_str::<Value>(out.trim()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (grace, why) in [("-1d", "negative"), ("soon", "duration"), ("1000000d", "100 years")] {
        let (code, _, err) = keyward(&["key", "rotate", &rid, "--grace", grace], &env);
        assert_eq!(code, 2, "{grace}: {err}");
        assert!(err.contains("--grace") && err.contains(why), "{grace}: {err}");
    }
    let (code, out, err) = keyward(&["key", "rotate", &rid, "--grace", "1h", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    let rotated: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(rotated["key"].as_str().unwrap().starts_with("kw_live_"));
    assert!(
        rotated["expires_at"].is_string(),
        "the successor keeps the expiry policy"
    );
    assert_eq!(rotated["previous"]["id"], rid.as_str());
    let (code, _, err) = keyward(&["key", "rotate", &rid], &env);
    assert_eq!(code, 1);
    assert!(err.contains("already rotated"), "{err}");
    let (code, out, _) = keyward(&["key", "disable", &rid], &env);
    assert_eq!(code, 0);
    assert!(out.contains("disabled"), "{out}");
    let (code, out, _) = keyward(&["key", "enable", &rid], &env);
    assert_eq!(code, 0);
    assert!(out.contains("state: active"), "{out}");
    let (code, out, err) = keyward(&["key", "create", "--app", "cats", "--canary", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["canary"], true);
    let (code, out, err) = keyward(&["usage", "--key", &id, "--since", "24h"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("usage since"), "{out}");
    let (code, _, _) = keyward(&["usage", "--since", "24h"], &env);
    assert_eq!(code, 2, "--key or --app is required");
    let (code, out, err) = keyward(&["audit", "--kind", "key.", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    let audit: Value = serde_json::from_str(&out).unwrap();
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "key.rotated"));
    assert!(!out.contains(rotated["key"].as_str().unwrap()));
    let (code, out, _) = keyward(&["audit", "--key", &rid], &env);
    assert_eq!(code, 0);
    assert!(out.contains("key.disabled") && out.contains("KIND"), "{out}");
    let (code, _, _) = keyward(&["audit", "--limit", "0"], &env);
    assert_eq!(code, 2);

    // OAuth clients and signing keys from the command line (issue 5).
    let (code, out, err) = keyward(
        &[
            "client",
            "create",
            "--app",
            "cats",
            "--scope",
            "facts:read",
            "--token-ttl",
            "10m",
            "--json",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let cl: Value = serde_json::from_str(out.trim()).unwrap();
    let cid = cl["client_id"].as_str().unwrap().to_owned();
    let csecret = cl["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(cl["token_ttl"], 600);
    let (code, out, _) = keyward(&["client", "show", &cid], &env);
    assert_eq!(code, 0);
    assert!(
        out.contains(&cid) && !out.contains(&csecret) && out.contains("secret"),
        "{out}"
    );
    let (code, out, _) = keyward(&["client", "list", "--app", "cats"], &env);
    assert_eq!(code, 0);
    assert!(out.contains(&cid) && out.contains("client_secret_basic"), "{out}");
    let (code, out, err) = keyward(&["client", "rotate-secret", &cid, "--grace", "1h", "--json"], &env);
    assert_eq!(code, 0, "{err}");
    let rotated_secret: Value = serde_json::from_str(out.trim()).unwrap();
    assert_ne!(rotated_secret["client_secret"], csecret.as_str());
    for (args, why) in [
        (
            vec!["client", "create", "--app", "cats", "--token-ttl", "48h"],
            "token_ttl",
        ),
        (
            vec!["client", "create", "--app", "cats", "--auth", "private_key_jwt"],
            "--jwks-file",
        ),
        (vec!["client", "create", "--app", "cats", "--auth", "none"], "auth"),
        (
            vec!["client", "create", "--app", "cats", "--jwks-file", "/nonexistent"],
            "--jwks-file",
        ),
        (vec!["client", "rotate-secret", &cid, "--grace", "-1h"], "--grace"),
    ] {
        let (code, _, err) = keyward(&args, &env);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let (code, out, _) = keyward(&["signing-key", "list"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("EdDSA") && out.contains("active"), "{out}");
    let (code, out, err) = keyward(&["signing-key", "rotate", "--alg", "RS256"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("RS256"), "{out}");
    let (code, _, _) = keyward(&["signing-key", "rotate", "--alg", "HS256"], &env);
    assert_eq!(code, 2);
    let (code, _, _) = keyward(&["client", "delete", &cid], &env);
    assert_eq!(code, 0);
    let (code, _, err) = keyward(&["client", "show", &cid], &env);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");

    // Import reads the secret from standard input only.
    let (code, _, err) = keyward(&["key", "import", "--app", "cats", "--secret", "abc"], &env);
    assert_eq!(code, 2, "{err}");
    let import = |input: &str, extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(["key", "import", "--app", "cats", "--json"]).args(extra);
        for (k, v) in &env {
            c.env(k, v);
        }
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = import("the-old-static-api-key-0001\n", &["--sunset", "30d"]);
    assert_eq!(code, 0, "{err}");
    let imported: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(imported["legacy"], true);
    assert!(!out.contains("the-old-static-api-key-0001"));
    assert_eq!(
        reqwest::blocking_free::client()(&gw, "/fact", &[("x-api-key", "the-old-static-api-key-0001")]),
        403,
        "no facts:read scope"
    );
    let (code, _, err) = import("", &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = import("two\nlines-of-secrets\n", &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = import("another-old-static-key", &["--sunset", "-1d"]);
    assert_eq!(code, 2, "{err}");

    // Traffic, good and bad, with the key in every place it could leak from.
    let http = reqwest::blocking_free::client();
    assert_eq!(http(&gw, "/fact", &[("x-api-key", &key)]), 200);
    assert_eq!(http(&gw, "/fact", &[("authorization", &format!("Bearer {key}"))]), 200);
    assert_eq!(http(&gw, "/fact", &[("x-api-key", &format!("{key}{key}"))]), 401);
    assert_eq!(http(&gw, "/fact", &[("x-api-key", &key), ("x-api-key", &key)]), 400);
    assert_eq!(http(&gw, "/nope", &[("x-api-key", &key)]), 404);
    let (code, _, _) = keyward(&["key", "revoke", &id], &env);
    assert_eq!(code, 0);
    assert_eq!(http(&gw, "/fact", &[("x-api-key", &key)]), 401);

    assert_eq!(server.terminate().code(), Some(0), "graceful shutdown exits 0");
    let logs = server.stderr();
    assert!(
        logs.contains("key created") && logs.contains("key revoked"),
        "trace logs were captured: {logs}"
    );
    assert!(logs.lines().filter(|l| l.starts_with('{')).count() > 3, "JSON logs");
    for secret in [&key, &key[8..51].to_owned(), &pepper, &token, &kek, &csecret] {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
    }
    drop(upstream);
}

#[test]
fn serve_refuses_unsafe_secrets_and_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(keyward(&["init", "--dir", d], &[]).0, 0);
    let cfg = dir.path().join("keyward.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("keyward.pepper"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let (code, _, err) = keyward(&["serve", "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(code, 1);
        assert!(err.contains("chmod 600"), "{err}");
    }
    let (code, _, err) = keyward(
        &["serve", "--config", cfg.to_str().unwrap()],
        &[("KEYWARD_PEPPER", "short")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("pepper"), "{err}");
    let (code, _, err) = keyward(
        &["serve", "--config", cfg.to_str().unwrap()],
        &[("KEYWARD_GATEWAY__LISTN", "x")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("listn"), "{err}");
    std::fs::write(&cfg, "[gateway]\nlisten = \"127.0.0.1:0\"\n[bogus]\n").unwrap();
    let (code, _, err) = keyward(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("bogus"), "{err}");
    let (code, _, err) = keyward(&["serve", "--config", "/nonexistent/keyward.toml"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn demo_json_runs_the_five_scenarios() {
    let mut c = Command::new(BIN);
    c.args(["demo", "--json", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["admin", "admin_token", "foreign_site", "gateway", "keys", "site"]
    );
    let gw = v["gateway"].as_str().unwrap();
    let read = v["keys"]["read"].as_str().unwrap();
    let write = v["keys"]["write"].as_str().unwrap();
    let http = reqwest::blocking_free::client();
    assert_eq!(http(gw, "/fact", &[]), 401);
    let wrong = keyward_core::KeyFormat::default()
        .generate(keyward_core::KeyEnv::Test)
        .unwrap();
    assert_eq!(http(gw, "/fact", &[("x-api-key", wrong.expose())]), 401);
    assert_eq!(http(gw, "/fact", &[("x-api-key", read)]), 200);
    let post = reqwest::blocking_free::post();
    assert_eq!(post(gw, "/facts", read, "{\"fact\":\"Cats purr.\"}"), 403);
    assert_eq!(post(gw, "/facts", write, "{\"fact\":\"Cats purr.\"}"), 201);
    // The admin API answers with the printed token.
    let admin = v["admin"].as_str().unwrap();
    let (code, out, _) = keyward(
        &["key", "list"],
        &[
            ("KEYWARD_ADMIN_URL", admin),
            ("KEYWARD_ADMIN_TOKEN", v["admin_token"].as_str().unwrap()),
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("read-only") && out.contains("read-write"), "{out}");
    // Nothing else on stdout.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "exactly one line on stdout");
    let status = child.wait().unwrap();
    assert!(status.success());
}

/// Issue 22 point 6: the human output of `keyward demo` names the console and how to sign in,
/// and both work as printed.
#[test]
fn demo_prints_the_console_and_how_to_sign_in() {
    let mut c = Command::new(BIN);
    c.args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        text.push_str(&line);
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let field = |label: &str| -> String {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
            .trim()
            .to_owned()
    };
    let admin_line = field("admin API");
    let admin = admin_line.split_whitespace().next().unwrap().to_owned();
    let token = admin_line
        .split("(token: ")
        .nth(1)
        .and_then(|t| t.strip_suffix(')'))
        .unwrap()
        .to_owned();
    let console_line = field("console");
    let url = console_line.split_whitespace().next().unwrap();
    assert_eq!(url, format!("{admin}/console/"), "{text}");
    assert!(console_line.contains("sign in with the admin token"), "{text}");
    assert!(
        text.contains(&format!("{admin}/console/ (sign in with the KEYWARD_ADMIN_TOKEN")),
        "{text}"
    );
    // The printed URL serves the console, and the printed token signs in (with every right).
    let http = reqwest::blocking_free::client();
    assert_eq!(http(&admin, "/console/", &[]), 200);
    let bearer = format!("Bearer {token}");
    assert_eq!(http(&admin, "/v1/session", &[("authorization", &bearer)]), 200);
    assert_eq!(http(&admin, "/v1/session", &[]), 401);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
}

/// Minimal blocking HTTP helpers over a private runtime (the tests above are synchronous).
mod reqwest {
    pub mod blocking_free {
        use std::sync::OnceLock;

        fn rt() -> &'static tokio::runtime::Runtime {
            static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
            RT.get_or_init(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            })
        }

        pub fn client() -> impl Fn(&str, &str, &[(&str, &str)]) -> u16 {
            |base, path, headers| {
                rt().block_on(async {
                    let mut req = ::reqwest::Client::new().get(format!("{base}{path}"));
                    for (k, v) in headers {
                        req = req.header(*k, *v);
                    }
                    req.send().await.unwrap().status().as_u16()
                })
            }
        }

        pub fn post() -> impl Fn(&str, &str, &str, &str) -> u16 {
            |base, path, key, body| {
                rt().block_on(async {
                    ::reqwest::Client::new()
                        .post(format!("{base}{path}"))
                        .header("x-api-key", key)
                        .header("content-type", "application/json")
                        .body(body.to_owned())
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                })
            }
        }
    }
}

/// Issue 22 point 12: with `KEYWARD_CONFIG` set, no usage line presents `--config` as if it
/// had to be given; without it, a missing configuration is still named clearly.
#[test]
fn usage_lines_do_not_present_config_as_required() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keyward.toml");
    std::fs::write(&cfg, "[gateway]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let env = [
        ("KEYWARD_CONFIG", cfg.to_str().unwrap()),
        ("KEYWARD_ADMIN_URL", "http://127.0.0.1:9"),
    ];
    let usage_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.trim_start().starts_with("Usage:"))
            .map(str::to_owned)
            .collect()
    };
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["check-config", "--help"],
        vec!["key"],
        vec!["serve", "--bogus"],
        vec!["key", "create"],
        vec!["scan"],
    ] {
        let (code, out, err) = keyward(&args, &env);
        let lines = usage_lines(&format!("{out}{err}"));
        assert!(!lines.is_empty(), "{args:?}: no usage line in {out}{err}");
        for l in &lines {
            assert!(!l.contains("--config") && !l.contains("--admin-url"), "{args:?}: {l}");
        }
        if args.contains(&"--help") {
            assert_eq!(code, 0);
            // The option itself is documented, as optional, with its environment variable.
            if args == ["--help"] {
                assert!(
                    out.contains("--config <FILE>") && out.contains("KEYWARD_CONFIG"),
                    "{out}"
                );
            }
        } else {
            assert_eq!(code, 2, "{args:?}: {err}");
        }
    }
    // KEYWARD_CONFIG is still honoured: check-config without a FILE checks it.
    let (code, out, err) = keyward(&["check-config"], &env);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains(cfg.to_str().unwrap()), "{out}");
    // Without it (and no ./keyward.toml), a clear error, exit status 2.
    let empty = tempfile::tempdir().unwrap();
    let mut c = Command::new(BIN);
    c.arg("check-config")
        .current_dir(empty.path())
        .env_remove("KEYWARD_CONFIG");
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no configuration file to check") && err.contains("KEYWARD_CONFIG"),
        "{err}"
    );
    // A KEYWARD_CONFIG that names a missing file: named in the error.
    let (code, _, err) = keyward(&["serve"], &[("KEYWARD_CONFIG", "/nonexistent/k.toml")]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/k.toml"), "{err}");
}

/// Issue 22 point 14: `init --dir /etc/... --data-dir /var/lib/...` writes four files (the
/// configuration and three 0600 secrets) into --dir and points the store into --data-dir;
/// what it prints is the layout docs/DEPLOYMENT.md describes.
#[test]
fn init_writes_config_and_secrets_in_dir_and_the_store_path_in_data_dir() {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/keyward");
    let var = root.path().join("var/lib/keyward");
    let (code, out, err) = keyward(
        &[
            "init",
            "--dir",
            etc.to_str().unwrap(),
            "--data-dir",
            var.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let mut names: Vec<String> = std::fs::read_dir(&etc)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["admin.token", "keyward.kek", "keyward.pepper", "keyward.toml"]);
    #[cfg(unix)]
    {
        for f in ["admin.token", "keyward.kek", "keyward.pepper"] {
            assert_eq!(mode(&etc.join(f)), 0o600, "{f}");
        }
        // The configuration holds no secret; the data directory is the service's alone.
        assert_eq!(mode(&etc.join("keyward.toml")) & 0o077 & !0o044, 0);
        assert_eq!(mode(&var), 0o700);
    }
    // Nothing but the directory in --data-dir until the first start.
    assert_eq!(std::fs::read_dir(&var).unwrap().count(), 0);
    let text = std::fs::read_to_string(etc.join("keyward.toml")).unwrap();
    let store = var.join("keyward.db");
    assert!(text.contains(&format!("url = \"{}\"", store.display())), "{text}");
    let cfg: keyward::config::Config = toml::from_str(&text).unwrap();
    assert_eq!(cfg.store.url, store.to_str().unwrap());
    assert_eq!(cfg.secrets.pepper_file.as_deref(), Some(Path::new("keyward.pepper")));
    // What it prints: every file, the store, and next steps naming the real paths.
    for f in ["keyward.toml", "keyward.pepper", "admin.token", "keyward.kek"] {
        assert!(out.contains(&format!("wrote {}", etc.join(f).display())), "{out}");
    }
    assert!(out.contains(&store.display().to_string()), "{out}");
    assert!(out.contains("docs/DEPLOYMENT.md"), "{out}");
    assert!(
        out.contains(&format!(
            "keyward serve --config {}",
            etc.join("keyward.toml").display()
        )),
        "{out}"
    );
    // The written files pass check-config as they are (secrets read from --dir, 0600).
    let (code, out2, err2) = keyward(&["check-config", etc.join("keyward.toml").to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out2}{err2}");
    // A second init refuses to overwrite.
    let (code, _, err) = keyward(&["init", "--dir", etc.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("refusing to overwrite"), "{err}");

    // A --data-dir that cannot be a directory: a clear error, and nothing written.
    let blocked = root.path().join("blocked");
    std::fs::write(&blocked, "a file").unwrap();
    let two = root.path().join("two");
    let (code, out, err) = keyward(
        &[
            "init",
            "--dir",
            two.to_str().unwrap(),
            "--data-dir",
            blocked.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("cannot create {}", blocked.display())), "{err}");
    assert_eq!(std::fs::read_dir(&two).map(Iterator::count).unwrap_or(0), 0);

    // Without --data-dir: the store next to the configuration (a relative path, as before).
    let one = root.path().join("one");
    let (code, out, err) = keyward(&["init", "--dir", one.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(one.join("keyward.toml")).unwrap();
    assert!(text.contains("url = \"keyward.db\""), "{text}");
}

#[tokio::test]
async fn upstream_list_prints_each_target_as_a_table_and_as_json() {
    let (kw, live, dead) = crate::upstreams::boot_with_pool().await;
    let (_, key) = kw.key("cats", &[], serde_json::json!({})).await;
    // Enough GETs for passive health to eject the dead target (none of them lost).
    for i in 0..12 {
        let r = kw.get(&format!("/pooled/{i}"), &[("x-api-key", &key)]).await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    let admin = kw.admin.clone();
    let run = |args: &'static [&'static str], token: &'static str| {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            keyward(args, &[("KEYWARD_ADMIN_URL", &admin), ("KEYWARD_ADMIN_TOKEN", token)])
        })
    };
    let (code, out, err) = run(&["upstream", "list"], crate::harness::ADMIN_TOKEN).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let header = out.lines().next().unwrap();
    for col in [
        "GROUP",
        "BALANCE",
        "TARGET",
        "HEALTHY",
        "EJECTED UNTIL",
        "FAILS",
        "IN FLIGHT",
        "PROTOCOL",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = |url: &str| {
        out.lines()
            .find(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(&"pool") && cols.get(2).map(|c| c.trim_end_matches('/')) == Some(url)
            })
            .unwrap_or_else(|| panic!("no row for {url} in\n{out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let d = row(&dead);
    assert_eq!(d[1], "round_robin", "{d:?}");
    assert_eq!(d[3], "no", "{d:?}");
    assert!(d[4].contains('T'), "an ejection time: {d:?}");
    assert!(d[5].parse::<u32>().is_ok(), "{d:?}");
    let l = row(&live);
    assert_eq!(l[3], "yes", "{l:?}");
    assert_eq!(l[4], "-", "{l:?}");
    assert!(out.lines().any(|l| l.starts_with("route.fact.0")), "{out}");

    let (code, out, err) = run(&["upstream", "list", "--json"], crate::harness::ADMIN_TOKEN)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let pool = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "pool")
        .unwrap_or_else(|| panic!("{v}"));
    let targets = pool["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{v}");
    assert!(
        targets
            .iter()
            .any(|t| t["url"].as_str().unwrap().trim_end_matches('/') == dead && t["healthy"] == false),
        "{v}"
    );

    // A wrong admin token: a failure exit and a clear message, the token not echoed.
    let (code, out, err) = run(&["upstream", "list"], "kwadm_wrong-token-value").await.unwrap();
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("admin token"), "{err}");
    assert!(!err.contains("wrong-token-value"), "{err}");
    // No such subcommand: usage error.
    let (code, _, _) = run(&["upstream", "eject"], crate::harness::ADMIN_TOKEN).await.unwrap();
    assert_eq!(code, 2);
}

#[test]
fn cat_facts_tls_flags_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // One without the other: clap refuses (usage error, exit 2), nothing listens.
    let (code, _, err) = keyward(&["cat-facts", "--listen", "127.0.0.1:0", "--tls-cert", "x.pem"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-key"), "{err}");
    // Files that are missing or not PEM: a start-up error naming the file, never a panic.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    for (cert, key) in [
        (dir.path().join("missing.pem"), junk.clone()),
        (junk.clone(), junk.clone()),
    ] {
        let (code, _, err) = keyward(
            &[
                "cat-facts",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            &[],
        );
        assert_ne!(code, 0, "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains(".pem"), "the error names the file: {err}");
    }
}
