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
            // Not even the secret part without its prefix (the hint shows 4 + 4 symbols of it).
            let body = &k[k.rfind('_').map_or(0, |i| i + 1)..];
            let middle = &body[4..body.len() - 4];
            assert!(!self.stdout.contains(middle) && !self.stderr.contains(middle));
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
            "dist/app.min.js:2:28: error: {} (unknown-status)",
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
    // The map's `\"` became `\\u0022` (an escaped backslash, then `u0022`): in the source the
    // key follows `const KEY = \u0022`.
    assert_eq!(r["source"], json!({"name": "src/app.js", "line": 1, "column": 19}));
    let u = finding(&v, "dist/app.min.js.map", &display_hint(&unknown));
    assert_eq!((u["status"].as_str(), u["id"].as_str()), (Some("unknown"), None));
    assert_eq!(u["source"], json!({"name": "src/app.js", "line": 2, "column": 1}));
    assert_eq!(
        (u["severity"].as_str(), r["severity"].as_str()),
        (Some("error"), Some("info"))
    );

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

    // The second rule: scoped admin tokens, `kwadm_` + 43 random base62 symbols.
    let rule = &parsed["rules"].as_array().unwrap()[1];
    assert_eq!(rule["id"].as_str(), Some("keyward-admin-token"));
    assert_eq!(rule["keywords"].as_array().unwrap()[0].as_str(), Some("kwadm_"));
    let re = regex::Regex::new(rule["regex"].as_str().unwrap()).unwrap();
    let group = rule["secretGroup"].as_integer().unwrap() as usize;
    let min = rule["entropy"].as_float().unwrap();
    // The random part of a generated key is drawn as an admin token's is (43 base62).
    let token = || format!("kwadm_{}", &secret_key()[8..51]);
    for _ in 0..2000 {
        let t = token();
        assert!(shannon(&t) > min, "{}", display_hint(&t));
    }
    let t = token();
    for ctx in [
        t.clone(),
        format!("export KEYWARD_ADMIN_TOKEN={t}\n"),
        format!("Authorization: Bearer {t}"),
        format!("{{\"token\":\"{t}\"}}"),
        format!("\"a\\n{t}\\n\""),
    ] {
        let caps = re.captures(&ctx).unwrap_or_else(|| panic!("no match in {ctx}"));
        assert_eq!(caps.get(group).unwrap().as_str(), t, "{ctx}");
    }
    for near in [
        format!("{t}x"),
        format!("x{t}"),
        t[..t.len() - 1].to_owned(),
        t.replacen("kwadm_", "kwadmin_", 1),
        t.replacen("kwadm_", "KWADM_", 1),
    ] {
        assert!(re.captures(&near).is_none(), "matched a near-miss {near}");
    }
    let placeholder = format!("kwadm_{}", "x".repeat(43));
    assert!(re.is_match(&placeholder) && shannon(&placeholder) < min);
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

// ---------------------------------------------------------------------------------------------
// Issue 11 point 5: minified JavaScript, source maps, publishable vs secret keys.

fn secret_key() -> String {
    KeyFormat::default().generate(KeyEnv::Live).unwrap().expose().to_owned()
}

/// A publishable key, `kw_pk_<env>_<43 base62><6 base62 CRC32 of everything before>`, built
/// independently of the key service's code.
fn publishable_key(env: &str) -> String {
    let random = &secret_key()[8..51];
    let head = format!("kw_pk_{env}_{random}");
    let crc = crc32fast::hash(head.as_bytes());
    format!(
        "{head}{}",
        keyward_core::base62::encode_fixed(u64::from(crc), 6).unwrap()
    )
}

/// The same key with its checksum's last symbol changed.
fn bad_checksum(k: &str) -> String {
    let mut b = k.as_bytes().to_vec();
    let last = b.len() - 1;
    b[last] = if b[last] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap()
}

/// A one-line minified bundle around `literal` (a JS expression).
fn bundle(literal: &str) -> String {
    format!(
        "!function(e,t){{\"use strict\";var n={{a:1}},r=[1,2,3].map(function(e){{return e*2}});\
         e.config={{apiKey:{literal},base:\"/api\"}};t(e)}}(window,function(e){{fetch(e.config.base)}});\n"
    )
}

fn findings(v: &Value) -> Vec<Value> {
    v["findings"].as_array().unwrap().clone()
}

fn scan_one(dir: &Path, file: &str, extra: &[&str]) -> Out {
    let mut args = vec!["--json", "--offline"];
    args.extend_from_slice(extra);
    args.push(file);
    scan(dir, &args, &[])
}

#[test]
fn minified_bundles_secret_and_publishable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = secret_key();
    let pk = publishable_key("live");
    let pk_test = publishable_key("test");
    let keys = [secret.as_str(), pk.as_str(), pk_test.as_str()];

    // A secret key in a string literal: found, error, exit 1.
    std::fs::write(d.join("secret.min.js"), bundle(&format!("\"{secret}\""))).unwrap();
    let out = scan_one(d, "secret.min.js", &[]);
    out.assert_no_secret(&keys);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let f = findings(&out.json());
    assert_eq!(f.len(), 1, "{}", out.stdout);
    assert_eq!(
        (f[0]["kind"].as_str(), f[0]["severity"].as_str()),
        (Some("secret"), Some("error"))
    );
    let col = bundle("").find("apiKey:").unwrap() + "apiKey:\"".len() + 1;
    assert_eq!(
        (f[0]["line"].as_u64(), f[0]["column"].as_u64()),
        (Some(1), Some(col as u64))
    );
    assert_eq!(f[0]["hint"], display_hint(&secret));

    // A publishable key: information, exit 0, in JSON and in text.
    std::fs::write(d.join("public.min.js"), bundle(&format!("'{pk}'"))).unwrap();
    let out = scan_one(d, "public.min.js", &[]);
    out.assert_no_secret(&keys);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let v = out.json();
    assert_eq!(v["failing"], 0);
    let f = findings(&v);
    assert_eq!(f.len(), 1, "{v}");
    assert_eq!(
        (f[0]["kind"].as_str(), f[0]["severity"].as_str(), f[0]["note"].as_str()),
        (
            Some("publishable"),
            Some("info"),
            Some("publishable key: fine in client code")
        )
    );
    assert_eq!(f[0]["hint"], display_hint(&pk));
    let text = scan(d, &["--offline", "public.min.js"], &[]);
    text.assert_no_secret(&keys);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout
            .starts_with(&format!("public.min.js:1:{col}: info: {}", display_hint(&pk)))
            && text.stdout.contains("publishable key: fine in client code"),
        "{}",
        text.stdout
    );
    // ... unless publishable keys are not wanted either.
    let out = scan_one(d, "public.min.js", &["--fail-on-publishable"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(findings(&out.json())[0]["severity"], "error");

    // Both kinds in one file (a template literal and a JSON-in-JS string): both, with their kinds.
    std::fs::write(
        d.join("both.min.js"),
        bundle(&format!(
            "`${{x}}{pk_test}`,s=JSON.parse(\"{{\\\"k\\\":\\\"{secret}\\\"}}\")"
        )),
    )
    .unwrap();
    let out = scan_one(d, "both.min.js", &[]);
    out.assert_no_secret(&keys);
    assert_eq!(out.code, 1);
    let v = out.json();
    let kinds: Vec<(&str, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["hint"].as_str().unwrap()))
        .collect();
    let (h_pk, h_secret) = (display_hint(&pk_test), display_hint(&secret));
    assert_eq!(
        kinds,
        vec![("publishable", h_pk.as_str()), ("secret", h_secret.as_str())]
    );
    assert_eq!(v["failing"], 1);

    // Key-like strings with a bad checksum are nobody's key: nothing, exit 0.
    std::fs::write(
        d.join("bad.min.js"),
        bundle(&format!("\"{}\",p=\"{}\"", bad_checksum(&secret), bad_checksum(&pk))),
    )
    .unwrap();
    let out = scan_one(d, "bad.min.js", &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.json()["findings"], json!([]));
}

#[test]
fn escaped_keys_in_minified_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = secret_key();
    let pk = publishable_key("live");
    let variants = [
        ("u.min.js", format!("\"{}\"", secret.replace('_', "\\u005f"))),
        ("x.min.js", format!("'{}'", secret.replace('_', "\\x5f"))),
        ("brace.min.js", format!("`{}`", secret.replace('_', "\\u{5f}"))),
        (
            "json.min.js",
            format!("JSON.parse(\"{{\\\"apiKey\\\":\\\"{secret}\\\"}}\").apiKey"),
        ),
        (
            "jsonu.min.js",
            format!(
                "JSON.parse(\"{{\\\"apiKey\\\":\\\"{}\\\"}}\").apiKey",
                secret.replace('_', "\\\\u005f")
            ),
        ),
    ];
    for (name, literal) in &variants {
        let js = bundle(literal);
        assert!(!js.contains(&secret) || name.starts_with("json."), "{js}");
        std::fs::write(d.join(name), &js).unwrap();
        let out = scan_one(d, name, &[]);
        out.assert_no_secret(&[&secret]);
        assert_eq!(out.code, 1, "{name}: {}", out.stdout);
        let f = findings(&out.json());
        assert_eq!(f.len(), 1, "{name}: {}", out.stdout);
        assert_eq!(
            (f[0]["kind"].as_str(), f[0]["hint"].as_str()),
            (Some("secret"), Some(display_hint(&secret).as_str()))
        );
        // The column is where the key starts in the file as written.
        let col = js.find("apiKey:").unwrap() + "apiKey:".len() + 2;
        if !name.starts_with("json") {
            assert_eq!(f[0]["column"].as_u64(), Some(col as u64), "{name}");
        }
    }
    // An escaped publishable key is still publishable.
    std::fs::write(
        d.join("pk.min.js"),
        bundle(&format!("\"{}\"", pk.replace('_', "\\x5f"))),
    )
    .unwrap();
    let out = scan_one(d, "pk.min.js", &[]);
    assert_eq!(out.code, 0);
    assert_eq!(findings(&out.json())[0]["kind"], "publishable");
}

#[test]
fn source_maps_files_and_inline() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = secret_key();
    let pk = publishable_key("live");
    let keys = [secret.as_str(), pk.as_str()];
    let config_src = format!(
        "// Configuration\nexport const config = {{\n  publishableKey: '{pk}',\n  secretKey: \"{secret}\",\n}};\n"
    );
    let map = json!({
        "version": 3,
        "file": "app.min.js",
        "sourceRoot": "",
        "sources": ["webpack:///src/index.js", "webpack:///src/config.js"],
        "sourcesContent": ["import { config } from './config';\nconsole.log(config);\n", config_src],
        "names": ["config"],
        "mappings": "AAAA,SAASA"
    })
    .to_string();
    std::fs::write(d.join("app.min.js.map"), &map).unwrap();
    let out = scan_one(d, "app.min.js.map", &[]);
    out.assert_no_secret(&keys);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let f = findings(&out.json());
    assert_eq!(f.len(), 2, "{}", out.stdout);
    assert_eq!(f[0]["kind"], "publishable");
    assert_eq!(f[0]["severity"], "info");
    assert_eq!(
        f[0]["source"],
        json!({"name": "webpack:///src/config.js", "line": 3, "column": 20})
    );
    assert_eq!(f[1]["kind"], "secret");
    assert_eq!(
        f[1]["source"],
        json!({"name": "webpack:///src/config.js", "line": 4, "column": 15})
    );
    // Positions in the map file itself: one line; the column is where the key is written.
    let at = map.find(&secret).unwrap() + 1;
    assert_eq!(
        (f[1]["line"].as_u64(), f[1]["column"].as_u64()),
        (Some(1), Some(at as u64))
    );
    let text = scan(d, &["--offline", "app.min.js.map"], &[]);
    text.assert_no_secret(&keys);
    assert!(
        text.stdout.contains(&format!(
            ": error: {} (unknown-status) in webpack:///src/config.js:4:15",
            display_hint(&secret)
        )),
        "{}",
        text.stdout
    );

    // The same map inline, base64, at the end of the bundle (no key in clear in the file).
    let js = format!(
        "{}//# sourceMappingURL=data:application/json;charset=utf-8;base64,{}\n",
        bundle("\"/api\""),
        base64::engine::general_purpose::STANDARD.encode(&map)
    );
    assert!(!js.contains(&secret) && !js.contains(&pk));
    std::fs::write(d.join("inline.min.js"), &js).unwrap();
    let out = scan_one(d, "inline.min.js", &[]);
    out.assert_no_secret(&keys);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let f = findings(&out.json());
    assert_eq!(f.len(), 2, "{}", out.stdout);
    for (f, kind) in f.iter().zip(["publishable", "secret"]) {
        assert_eq!(f["kind"], kind);
        assert_eq!(f["inline_source_map"], true);
        assert_eq!(f["line"], 2);
        assert_eq!(f["source"]["name"], "webpack:///src/config.js");
    }
    // Only the publishable key in the inline map: exit 0.
    let clean_map = map.replace(&secret, "nothing");
    let js = format!(
        "{}//# sourceMappingURL=data:application/json;base64,{}",
        bundle("1"),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&clean_map)
    );
    std::fs::write(d.join("inline-pk.min.js"), &js).unwrap();
    let out = scan_one(d, "inline-pk.min.js", &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(findings(&out.json()).len(), 1);
}

#[test]
fn client_secrets_fail_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cs = format!("kwcs_{}", &secret_key()[8..51]);
    std::fs::write(d.join("oauth.min.js"), bundle(&format!("{{clientSecret:\"{cs}\"}}"))).unwrap();
    let out = scan_one(d, "oauth.min.js", &[]);
    out.assert_no_secret(&[&cs]);
    assert_eq!(out.code, 1);
    let f = findings(&out.json());
    assert_eq!(
        (f[0]["kind"].as_str(), f[0]["severity"].as_str()),
        (Some("client_secret"), Some("error"))
    );
}

/// A real scoped admin token left in a deploy script: found whatever the key prefix, never sent
/// to the key service (the admin API is reachable here), fails the run, and is not printed.
#[tokio::test]
async fn admin_tokens_fail_the_run() {
    let kw = boot().await;
    let (s, v) = kw
        .admin(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "deploy", "role": "write"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deploy.sh"),
        format!("#!/bin/sh\nexport KEYWARD_ADMIN_TOKEN={token}\nkeyward key list\n"),
    )
    .unwrap();
    for prefix in ["kw", "acme"] {
        let out = scan_async(
            dir.path().to_path_buf(),
            ["--json", "--prefix", prefix, "deploy.sh"].map(String::from).to_vec(),
            vec![
                ("KEYWARD_ADMIN_URL".into(), kw.admin.clone()),
                ("KEYWARD_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            ],
        )
        .await;
        out.assert_no_secret(&[&token]);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        let f = findings(&out.json());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (
                f[0]["kind"].as_str(),
                f[0]["severity"].as_str(),
                f[0]["status"].as_str(),
                f[0]["line"].as_u64()
            ),
            (Some("admin_token"), Some("error"), Some("unknown-status"), Some(2)),
            "{f:?}"
        );
    }
    // The token still works: a scan reports, it does not revoke admin tokens.
    let r = kw
        .http
        .get(format!("{}/v1/apps", kw.admin))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A 5 MB one-line bundle with keys at its start, middle and end: found where they are, in
/// linear time (and, the file being read once and decoded at most once, memory of the order
/// of the file).
#[test]
fn a_five_megabyte_one_line_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = secret_key();
    let pk = publishable_key("live");
    let chunk = "function(e,t,n){\"use strict\";var r=n(42),o=n.n(r),i=/[\\x00-\\x1f]/g;\
                 e.exports=function(e){return o()(e).replace(i,\"\\\\u0000\")+\"%20\"}},";
    let mut js = format!("!function(){{var a=\"{pk}\";");
    let mut mid = None;
    while js.len() < 5 * 1024 * 1024 {
        js.push_str(chunk);
        if mid.is_none() && js.len() > 2_500_000 {
            mid = Some(js.len() + 3);
            js.push_str(&format!("k=\"{}\",", secret.replace('_', "\\u005f")));
        }
    }
    let end = js.len() + 3;
    js.push_str(&format!("z=\"{secret}\"}}();"));
    assert!(!js.contains('\n'));
    std::fs::write(d.join("vendor.min.js"), &js).unwrap();
    let started = std::time::Instant::now();
    let out = scan_one(d, "vendor.min.js", &[]);
    let took = started.elapsed();
    out.assert_no_secret(&[&secret, &pk]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v = out.json();
    let at: Vec<(String, u64, u64)> = findings(&v)
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["line"].as_u64().unwrap(),
                f["column"].as_u64().unwrap(),
            )
        })
        .collect();
    let pk_col = "!function(){var a=\"".len() as u64 + 1;
    assert_eq!(
        at,
        vec![
            ("publishable".into(), 1, pk_col),
            ("secret".into(), 1, mid.unwrap() as u64 + 1),
            ("secret".into(), 1, end as u64 + 1)
        ]
    );
    assert!(v["bytes_scanned"].as_u64().unwrap() > 5_000_000);
    // A debug build on a loaded machine; the scan itself is a few memchr passes.
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    eprintln!("5 MB one-line bundle scanned in {took:?}");
}

// ---------------------------------------------------------------------------------------------
// Issue 22 point 7: hidden files are scanned by default (`.env`), `.git/` never.

#[test]
fn a_key_in_dot_env_is_found_by_default_and_one_in_dot_git_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let in_env = secret_key();
    let in_hidden_dir = secret_key();
    let in_git = secret_key();
    std::fs::write(d.join(".env"), format!("API_KEY={in_env}\n")).unwrap();
    std::fs::create_dir_all(d.join(".config")).unwrap();
    std::fs::write(d.join(".config/app.toml"), format!("key = \"{in_hidden_dir}\"\n")).unwrap();
    std::fs::create_dir_all(d.join(".git/objects")).unwrap();
    std::fs::write(d.join(".git/config"), format!("[remote]\n  token = {in_git}\n")).unwrap();
    std::fs::write(d.join(".git/objects/loose"), format!("{in_git}\n")).unwrap();
    let hint = |k: &str| display_hint(k);
    let files = |out: &Out| -> Vec<String> {
        findings(&out.json())
            .iter()
            .map(|f| f["file"].as_str().unwrap().to_owned())
            .collect()
    };

    // Default: both hidden files found, nothing under .git/; the run fails (live secret keys).
    let out = scan_one(d, ".", &[]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let found = files(&out);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|f| f.ends_with(".env")), "{found:?}");
    assert!(found.iter().any(|f| f.ends_with("app.toml")), "{found:?}");
    assert!(!found.iter().any(|f| f.contains(".git/")), "{found:?}");
    let hints: Vec<Value> = findings(&out.json()).iter().map(|f| f["hint"].clone()).collect();
    assert!(hints.contains(&json!(hint(&in_env))), "{hints:?}");
    assert!(!hints.contains(&json!(hint(&in_git))), "{hints:?}");
    out.assert_no_secret(&[&in_env, &in_hidden_dir, &in_git]);

    // `--hidden` is still accepted and changes nothing.
    let again = scan_one(d, ".", &["--hidden"]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert_eq!(files(&again), found);

    // `--no-hidden` skips hidden files and directories: clean.
    let skipped = scan_one(d, ".", &["--no-hidden"]);
    assert_eq!(skipped.code, 0, "{}{}", skipped.stdout, skipped.stderr);
    assert!(files(&skipped).is_empty());

    // Ignore files still apply to hidden files.
    std::fs::write(d.join(".gitignore"), ".env\n").unwrap();
    let ignored = scan_one(d, ".", &[]);
    let found = files(&ignored);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("app.toml"), "{found:?}");

    // Both flags at once are a usage error.
    let both = scan_one(d, ".", &["--hidden", "--no-hidden"]);
    assert_eq!(both.code, 2, "{}", both.stderr);
}
