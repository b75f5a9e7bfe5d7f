//! `keyward scan` as a user runs it (issue 4 point 8, issue 11 point 5): the real binary on
//! the repository itself and on a temporary tree with a minified bundle, a source map, an
//! ignored file and a binary file; statuses and `--revoke` against the in-process server; the
//! gitleaks rule shipped in docs/SCANNING.md. Every key here is generated at runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

use keyward_core::key::{display_hint, KeyEnv};
use keyward_core::KeyFormat;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{boot, ADMIN_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
    /// No key in `keys` appears in stdout or stderr.
    fn assert_no_secret(&self, keys: &[&str]) {
        for k in keys {
            assert!(!self.stdout.contains(k), "a key in stdout: {}", self.stdout);
            assert!(!self.stderr.contains(k), "a key in stderr: {}", self.stderr);
            // Not even the secret part without its prefix.
            let body = &k[8..51];
            assert!(!self.stdout.contains(body) && !self.stderr.contains(body));
        }
    }
}

/// Runs `keyward scan ...` in `cwd` with a clean environment (plus `env`).
fn scan(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = Command::new(BIN);
    c.arg("scan").args(args).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn scan_async(cwd: PathBuf, args: Vec<String>, env: Vec<(String, String)>) -> Out {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        scan(&cwd, &args, &env)
    })
    .await
    .unwrap()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[test]
fn the_repository_itself_has_no_keys() {
    let cwd = tempfile::tempdir().unwrap();
    let root = repo_root();
    let out = scan(cwd.path(), &["--json", root.to_str().unwrap()], &[]);
    let v = out.json();
    assert_eq!(v["findings"], json!([]), "{}", out.stdout);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The walk honoured .gitignore: nothing from target/ was read.
    assert!(v["files_scanned"].as_u64().unwrap() > 20);
    let text = scan(cwd.path(), &[root.to_str().unwrap()], &[]);
    assert_eq!(text.code, 0);
    assert_eq!(text.stdout, "");
}

#[test]
fn usage_errors_exit_2() {
    let cwd = tempfile::tempdir().unwrap();
    let out = scan(cwd.path(), &["does/not/exist"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = scan(cwd.path(), &["--prefix", "Not_A_Prefix", "."], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = scan(cwd.path(), &[], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // --revoke without admin access.
    let out = scan(cwd.path(), &["--revoke", "."], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

fn finding<'a>(v: &'a Value, file_suffix: &str, hint: &str) -> &'a Value {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"].as_str().unwrap().ends_with(file_suffix) && f["hint"] == hint)
        .unwrap_or_else(|| panic!("no finding {hint} in {file_suffix}: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_and_source_maps_statuses_and_revoke() {
    let kw = boot().await;
    let (active_id, active) = kw.key("scan-app", &["facts:read"], json!({})).await;
    let (revoked_id, revoked) = kw.key("scan-app", &["facts:read"], json!({})).await;
    let (s, _) = kw
        .admin(Method::POST, &format!("/v1/keys/{revoked_id}/revoke"), Some(json!({})))
        .await;
    assert!(s.is_success());
    let unknown = KeyFormat::default().generate(KeyEnv::Live).unwrap().expose().to_owned();
    let keys = [active.as_str(), revoked.as_str(), unknown.as_str()];

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("dist")).unwrap();
    // A minified bundle: the key inside a JSON-ish object literal, one long line.
    let bundle = format!(
        "/*! app v1 */\n!function(){{var e={{apiKey:\"{active}\",base:\"/api\"}};fetch(e.base,{{headers:{{\"x-api-key\":e.apiKey}}}})}}();\n"
    );
    std::fs::write(d.join("dist/app.min.js"), &bundle).unwrap();
    // Its source map: keys inside `sourcesContent`, with `\n` and `\u0022` escapes.
    let map = json!({
        "version": 3,
        "sources": ["src/app.js"],
        "sourcesContent": [format!("const KEY = \"{revoked}\";\n{unknown}\n")],
        "mappings": "AAAA",
    })
    .to_string()
    .replace(&format!("\"{revoked}\\\""), &format!("\\u0022{revoked}\\u0022"));
    assert!(map.contains(&format!("\\n{unknown}\\n")), "{map}");
    assert!(map.contains(&format!("\\u0022{revoked}\\u0022")), "{map}");
    std::fs::write(d.join("dist/app.min.js.map"), &map).unwrap();
    // Ignored and binary files are skipped.
    std::fs::write(d.join(".gitignore"), "secrets.env\n").unwrap();
    std::fs::write(d.join("secrets.env"), format!("API_KEY={active}\n")).unwrap();
    let mut blob = vec![0u8, 1, 2, 0, 0x7f];
    blob.extend_from_slice(format!(" {active} ").as_bytes());
    std::fs::write(d.join("dist/blob.bin"), blob).unwrap();
    // A file over the cap (--max-size 1) is skipped too.
    let mut big = "x".repeat(1024 * 1024 + 10);
    big.push_str(&format!("\n{active}\n"));
    std::fs::write(d.join("dist/big.txt"), big).unwrap();

    let root = d.to_str().unwrap().to_owned();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend(["--max-size".into(), "1".into(), root.clone()]);
        a
    };
    let admin_env = vec![
        ("KEYWARD_ADMIN_URL".to_owned(), kw.admin.clone()),
        ("KEYWARD_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
    ];

    // Offline: three findings, all unknown-status, exit 1.
    let out = scan_async(d.to_owned(), args(&["--json"]), vec![]).await;
    out.assert_no_secret(&keys);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["findings"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["skipped"], json!({"binary": 1, "too_large": 1}));
    for f in v["findings"].as_array().unwrap() {
        assert_eq!(f["status"], "unknown-status");
        assert_eq!(f["kind"], "secret");
        assert!(!f["file"].as_str().unwrap().ends_with("secrets.env"));
    }
    let a = finding(&v, "dist/app.min.js", &display_hint(&active));
    assert_eq!((a["line"].as_u64(), a["column"].as_u64()), (Some(2), Some(28)));
    let text = scan_async(d.to_owned(), args(&[]), vec![]).await;
    text.assert_no_secret(&keys);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout.contains(&format!(
            "dist/app.min.js:2: {} (unknown-status)",
            display_hint(&active)
        )),
        "{}",
        text.stdout
    );
    assert!(text.stderr.contains("no admin access"), "{}", text.stderr);

    // With admin access: the key service tells each one apart.
    let out = scan_async(d.to_owned(), args(&["--json"]), admin_env.clone()).await;
    out.assert_no_secret(&keys);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v = out.json();
    let a = finding(&v, "dist/app.min.js", &display_hint(&active));
    assert_eq!(
        (a["status"].as_str(), a["id"].as_str()),
        (Some("active"), Some(active_id.as_str()))
    );
    let r = finding(&v, "dist/app.min.js.map", &display_hint(&revoked));
    assert_eq!(
        (r["status"].as_str(), r["id"].as_str()),
        (Some("revoked"), Some(revoked_id.as_str()))
    );
    assert_eq!(r["line"], 1);
    let u = finding(&v, "dist/app.min.js.map", &display_hint(&unknown));
    assert_eq!((u["status"].as_str(), u["id"].as_str()), (Some("unknown"), None));

    // The key works until --revoke.
    assert_eq!(kw.get("/fact", &[("x-api-key", &active)]).await.status(), 200);
    let out = scan_async(d.to_owned(), args(&["--revoke"]), admin_env.clone()).await;
    out.assert_no_secret(&keys);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("revoked now"), "{}", out.stdout);
    assert_eq!(kw.get("/fact", &[("x-api-key", &active)]).await.status(), 401);
    let (_, audit) = kw.admin(Method::GET, &format!("/v1/audit?key={active_id}"), None).await;
    let audit = audit.to_string();
    assert!(
        audit.contains("found by keyward scan in ") && audit.contains("dist/app.min.js:2"),
        "{audit}"
    );
    assert!(!audit.contains(&active));

    // Now the bundle is clean (its only key is revoked): exit 0. The map still holds an
    // unknown key: exit 1.
    let bundle_path = d.join("dist/app.min.js").to_str().unwrap().to_owned();
    let out = scan_async(d.to_owned(), vec!["--json".into(), bundle_path], admin_env.clone()).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    out.assert_no_secret(&keys);
    assert_eq!(out.json()["findings"][0]["status"], "revoked");
    let out = scan_async(d.to_owned(), args(&[]), admin_env.clone()).await;
    out.assert_no_secret(&keys);
    assert_eq!(out.code, 1);
    // The ignored file is found once ignore rules are off; the binary one never.
    let out = scan_async(d.to_owned(), args(&["--json", "--no-ignore", "--offline"]), vec![]).await;
    out.assert_no_secret(&keys);
    let v = out.json();
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["file"].as_str().unwrap().ends_with("secrets.env")));
    assert!(!out.stdout.contains("blob.bin"));
}

/// The gitleaks rule in docs/SCANNING.md: its regex matches generated keys (any prefix is
/// `[a-z0-9]{1,16}`, both environments) in context and refuses near-misses.
#[test]
fn the_documented_gitleaks_rule_matches_keys_and_not_near_misses() {
    let doc = std::fs::read_to_string(repo_root().join("docs/SCANNING.md")).unwrap();
    let start = doc.find("```toml\n[[rules]]").expect("a ```toml [[rules]] block") + "```toml\n".len();
    let block = &doc[start..start + doc[start..].find("```").unwrap()];
    let parsed: toml::Table = block.parse().unwrap();
    let rule = &parsed["rules"].as_array().unwrap()[0];
    for field in ["id", "description", "regex", "keywords", "entropy"] {
        assert!(rule.get(field).is_some(), "the rule has no {field}");
    }
    assert!(rule["keywords"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k.as_str() == Some("_live_")));
    let re = regex::Regex::new(rule["regex"].as_str().unwrap()).unwrap();
    let secret_group = rule.get("secretGroup").and_then(|g| g.as_integer()).unwrap_or(0) as usize;

    for (prefix, env) in [("kw", KeyEnv::Live), ("kw", KeyEnv::Test), ("acme2", KeyEnv::Live)] {
        let k = KeyFormat::new(prefix)
            .unwrap()
            .generate(env)
            .unwrap()
            .expose()
            .to_owned();
        for ctx in [
            k.clone(),
            format!("var a=\"{k}\",b=1"),
            format!("x-api-key: {k}\n"),
            format!("\"sourcesContent\":[\"a\\n{k}\\n\"]"),
        ] {
            let caps = re.captures(&ctx).unwrap_or_else(|| panic!("no match in {ctx}"));
            assert_eq!(caps.get(secret_group).unwrap().as_str(), k, "{ctx}");
        }
        for near in [
            format!("{k}x"),
            format!("{k}_"),
            k[..k.len() - 1].to_owned(),
            k.replacen("_live_", "_prod_", 1).replacen("_test_", "_prod_", 1),
            k.replacen(&format!("{prefix}_"), &format!("{}_", prefix.to_uppercase()), 1),
            format!("{}-{}", &k[..20], &k[21..]),
        ] {
            let hit = re
                .captures(&near)
                .and_then(|c| c.get(secret_group))
                .map(|m| m.as_str().to_owned());
            assert!(hit.is_none(), "matched a near-miss {near}: {hit:?}");
        }
    }

    // gitleaks computes the Shannon entropy of the secret group: generated keys clear the
    // setting, a placeholder with a valid checksum does not.
    let min = rule["entropy"].as_float().unwrap();
    let f = KeyFormat::default();
    for _ in 0..2000 {
        let k = f.generate(KeyEnv::Live).unwrap();
        assert!(shannon(k.expose()) > min, "{}", display_hint(k.expose()));
    }
    let placeholder = f.assemble(KeyEnv::Live, &"a".repeat(43));
    assert!(re.is_match(placeholder.expose()));
    assert!(shannon(placeholder.expose()) < min);
}

fn shannon(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = s.chars().count() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}
