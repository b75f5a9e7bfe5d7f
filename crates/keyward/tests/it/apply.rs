//! Configuration as code (issue 20, point 4): `keyward apply -f FILE [--dry-run] [--prune]`
//! and `keyward export`, the real binary against a real server, on SQLite and (with
//! `KEYWARD_TEST_POSTGRES_URL`) on PostgreSQL: the plan as a diff, apply, idempotence, export
//! round trip, prune, audit actor `apply`, keys printed once and never in a file; hostile state
//! files refused with their line, before any change; a refusal by the server mid-way stops the
//! run and a second run finishes it.

use std::path::Path;
use std::process::Stdio;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{boot_with, Kw, ADMIN_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// A public Ed25519 JWK (RFC 8037 A.2).
const PUBLIC_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

struct Run {
    code: i32,
    out: String,
    err: String,
}

/// `keyward ARGS` against `admin` with `token`, as a child process (the server runs in this
/// test's runtime, so the child is awaited, never blocked on).
async fn keyward_with(admin: &str, token: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("KEYWARD_ADMIN_URL", admin)
        .env("KEYWARD_ADMIN_TOKEN", token)
        .env_remove("KEYWARD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn keyward(kw: &Kw, args: &[&str]) -> Run {
    keyward_with(&kw.admin, ADMIN_TOKEN, args).await
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// Every `kw_…`/`kwcs_…`/`kwadm_…` secret printed on a line with "shown once".
fn shown_once(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| l.contains("shown once"))
        .map(|l| {
            let (head, rest) = l.split_once(": ").unwrap();
            (head.to_owned(), rest.split_whitespace().next().unwrap().to_owned())
        })
        .collect()
}

fn state_v1(secret_file: &Path, hook_url: &str) -> String {
    format!(
        r#"version = 1

[[apps]]
name = "cats"
ips = ["0.0.0.0/0", "::/0"]
rate = "100/min"
burst = 20
quota = "100000/month"
max_key_lifetime = "90d"

[[apps.keys]]
name = "ci"
scopes = ["facts:read"]
expires = "30d"

[[apps.keys]]
name = "batch"
scopes = ["facts:read", "facts:write"]
rate = "10/s"

[[apps.keys]]
name = "tripwire"
canary = true

[[apps.keys]]
name = "spare"
scopes = ["facts:read"]
disabled = true

[[apps.clients]]
name = "billing"
scopes = ["facts:read"]
token_ttl = "10m"

[[apps.clients]]
name = "signer"
auth = "private_key_jwt"
scopes = ["facts:read"]
jwks = {{ keys = [{{ kty = "OKP", crv = "Ed25519", x = "{PUBLIC_X}", kid = "k1" }}] }}

[[apps.clients]]
name = "device"
auth = "tls_client_auth"
tls_subject_dn = "CN=device,O=Example"

[[apps]]
name = "dogs"
keys = []

[[admin_tokens]]
name = "ci-read"
role = "read"

[[webhooks]]
name = "siem"
url = "{hook_url}"
secret_file = "{}"
events = ["security."]
timeout = "500ms"
backoff = "50ms"
"#,
        secret_file.display()
    )
}

/// What the scenario leaves for further checks.
struct Outcome {
    ci_key: String,
}

/// The whole flow on one server (SQLite or PostgreSQL).
async fn scenario(kw: &Kw, dir: &Path) -> Outcome {
    let (hook_url, receiver) = crate::webhooks::receiver(0).await;
    let secret_file = dir.join("webhook.secret");
    keyward::config::write_secret_file(&secret_file, crate::webhooks::SECRET).unwrap();
    let f = write(dir, "state.toml", &state_v1(&secret_file, &hook_url));

    // Dry run: the plan, nothing changed.
    let r = keyward(kw, &["apply", "-f", &f, "--dry-run"]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    for line in [
        "+ app cats",
        "    rate: 100/min burst 20",
        "    ips: 0.0.0.0/0, ::/0",
        "    max_key_lifetime: 90d",
        "+ key cats/ci",
        "    scopes: facts:read",
        "    expires: 30d",
        "+ key cats/tripwire",
        "    canary: true",
        "+ client cats/billing",
        "    auth: client_secret_basic",
        "    token_ttl: 10m",
        "+ client cats/signer",
        "+ client cats/device",
        "    tls: subject_dn=CN=device,O=Example",
        "+ app dogs",
        "+ admin token ci-read",
        "    role: read",
        "+ webhook siem",
        "Plan: 11 to create, 0 to change, 0 to remove (disable, revoke or delete).",
        "Dry run: nothing was changed.",
    ] {
        assert!(r.out.lines().any(|l| l == line), "missing {line:?} in:\n{}", r.out);
    }
    let (_, apps) = kw.admin(Method::GET, "/v1/apps", None).await;
    assert_eq!(apps["items"], json!([]), "a dry run changed something");
    let r = keyward(kw, &["apply", "-f", &f, "--dry-run", "--json"]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let v: Value = serde_json::from_str(r.out.trim()).unwrap();
    assert_eq!(v["plan"].as_array().unwrap().len(), 11, "{v}");
    assert_eq!(
        v["plan"][0],
        json!({"op": "create", "kind": "app", "name": "cats", "action": null,
        "fields": ["ips: 0.0.0.0/0, ::/0", "rate: 100/min burst 20", "quota: 100000/month", "max_key_lifetime: 90d"]})
    );

    // Apply: every secret printed once, on stdout only.
    let r = keyward(kw, &["apply", "-f", &f]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.contains("Applied 11 changes."), "{}", r.out);
    let secrets = shown_once(&r.out);
    let secret_of = |what: &str| {
        secrets
            .iter()
            .find(|(h, _)| h.contains(what))
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no secret for {what} in {}", r.out))
    };
    let ci = secret_of("key cats/ci");
    assert!(ci.starts_with("kw_live_"), "{ci}");
    // Created disabled, as the file says: its plaintext printed, refused until enabled.
    let spare = secret_of("key cats/spare");
    let resp = kw.get("/fact", &[("x-api-key", &spare)]).await;
    crate::harness::problem(resp, 401, "disabled_credential").await;
    let batch = secret_of("key cats/batch");
    assert!(batch.starts_with("kw_live_"));
    assert!(secret_of("client cats/billing").starts_with("kwcs_"));
    assert!(secret_of("admin token ci-read").starts_with("kwadm_"));
    // Methods without a secret print none.
    assert!(!secrets
        .iter()
        .any(|(h, _)| h.contains("signer") || h.contains("device")));
    for (_, s) in &secrets {
        assert!(!r.err.contains(s.as_str()), "a secret reached stderr");
    }
    // The key works at the gateway with its scope, and the limits are the file's.
    let resp = kw.get("/fact", &[("x-api-key", &ci)]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("ratelimit-policy").is_some());
    let (_, app) = kw.admin(Method::GET, "/v1/apps/cats", None).await;
    assert_eq!(app["policy"]["rate"], json!({"limit": "100/min", "burst": 20}), "{app}");
    assert_eq!(app["policy"]["key_rules"]["max_lifetime_secs"], 90 * 86400);
    // The admin token it printed works (read role).
    let token = secret_of("admin token ci-read");
    let resp = kw
        .http
        .get(format!("{}/v1/session", kw.admin))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["role"], "read");
    // Audited with the actor `apply`.
    let (_, audit) = kw.admin(Method::GET, "/v1/audit?kind=app.created", None).await;
    let actors: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["apply", "apply"], "{audit}");
    for kind in [
        "key.created",
        "client.created",
        "admin_token.created",
        "webhook.created",
    ] {
        let (_, a) = kw.admin(Method::GET, &format!("/v1/audit?kind={kind}"), None).await;
        let items = a["items"].as_array().unwrap();
        assert!(!items.is_empty(), "no {kind}: {a}");
        assert!(items.iter().all(|e| e["actor"] == "apply"), "{kind}: {a}");
    }
    // The managed webhook delivers: the canary's use reaches it, signed with the file's secret.
    let canary = secret_of("key cats/tripwire");
    assert_eq!(kw.get("/fact", &[("x-api-key", &canary)]).await.status(), 401);
    let d = receiver.wait_for("security.canary_used").await;
    crate::webhooks::verify_signature(&d, crate::webhooks::SECRET);

    // A second apply of the same file plans nothing.
    let r = keyward(kw, &["apply", "-f", &f]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.contains("No changes"), "{}", r.out);
    assert!(shown_once(&r.out).is_empty());
    let r = keyward(kw, &["apply", "-f", &f, "--json"]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert_eq!(serde_json::from_str::<Value>(r.out.trim()).unwrap()["plan"], json!([]));

    // Export: no secret in it; applying it plans nothing, with --prune too.
    let exported = dir.join("exported.toml");
    let r = keyward(kw, &["export", "-o", exported.to_str().unwrap()]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let text = std::fs::read_to_string(&exported).unwrap();
    for (_, s) in &secrets {
        assert!(!text.contains(s.as_str()), "a secret in the export");
    }
    assert!(
        text.contains(PUBLIC_X) && text.contains("CN=device,O=Example"),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&exported).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    for extra in [&[][..], &["--prune"][..]] {
        let mut args = vec!["apply", "-f", exported.to_str().unwrap()];
        args.extend_from_slice(extra);
        let r = keyward(kw, &args).await;
        assert_eq!(r.code, 0, "{}{}", r.out, r.err);
        assert!(
            r.out.contains("No changes"),
            "export → apply {extra:?} planned:\n{}",
            r.out
        );
    }
    // Standard output works too, and is the same file.
    let r = keyward(kw, &["export"]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.out, text);

    // Changes: a policy, a key's scopes, a client's scopes; prune removes what is not named:
    // an unnamed key made by hand, the client `signer`, the admin token, the webhook, and the
    // app `dogs` (its keys disabled).
    let (dogs_key, _) = kw.key("dogs", &["facts:read"], json!({"name": "old"})).await;
    let (stray, stray_plain) = kw.key("cats", &["facts:read"], json!({})).await;
    // `cats` with a new rate, one scope less on `batch`, no `signer`; no `dogs`; the admin
    // tokens and webhooks declared as none.
    let v1 = state_v1(&secret_file, &hook_url);
    let apps_part = &v1[v1.find("[[apps]]").unwrap()..v1.find("[[admin_tokens]]").unwrap()];
    let signer = apps_part.find("[[apps.clients]]\nname = \"signer\"").unwrap();
    let device = apps_part.find("[[apps.clients]]\nname = \"device\"").unwrap();
    let apps_part = format!("{}{}", &apps_part[..signer], &apps_part[device..])
        .replace("rate = \"100/min\"\nburst = 20", "rate = \"200/min\"")
        .replace(
            "scopes = [\"facts:read\", \"facts:write\"]",
            "scopes = [\"facts:read\"]\ndisabled = true",
        )
        .replace(
            "name = \"billing\"\nscopes = [\"facts:read\"]",
            "name = \"billing\"\nscopes = [\"facts:read\", \"facts:write\"]",
        )
        .replace("[[apps]]\nname = \"dogs\"\nkeys = []\n", "");
    let v2 = format!("version = 1\nadmin_tokens = []\nwebhooks = []\n\n{apps_part}");
    let f2 = write(dir, "state-v2.toml", &v2);
    let r = keyward(kw, &["apply", "-f", &f2, "--prune", "--dry-run"]).await;
    assert_eq!(r.code, 0, "{}{}\n{v2}", r.out, r.err);
    for line in [
        "~ app cats",
        "    rate: 100/min burst 20 → 200/min burst 200",
        "    scopes: facts:read, facts:write → facts:read",
        &format!("- key cats/({stray}): disable (keys are never deleted; keyward key enable brings it back)"),
        "- app dogs: disable its active keys and clients (apps are never deleted)",
        "- admin token ci-read: revoke (admin tokens are never deleted)",
        "- webhook siem: delete",
    ] {
        assert!(r.out.lines().any(|l| l == line), "missing {line:?} in:\n{}", r.out);
    }
    assert!(
        r.out
            .lines()
            .any(|l| l.starts_with("- client cats/signer (cl_") && l.ends_with("delete (with its secrets)")),
        "{}",
        r.out
    );
    assert!(
        r.out
            .lines()
            .any(|l| l.starts_with("~ key cats/batch (key_") && l.ends_with("): disable")),
        "{}",
        r.out
    );
    let client_change = r
        .out
        .lines()
        .position(|l| l.starts_with("~ client cats/billing (cl_"))
        .unwrap();
    assert_eq!(
        r.out.lines().nth(client_change + 1),
        Some("    scopes: facts:read → facts:read, facts:write")
    );
    let r = keyward(kw, &["apply", "-f", &f2, "--prune"]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert_eq!(kw.get("/fact", &[("x-api-key", &stray_plain)]).await.status(), 401);
    assert_eq!(
        kw.get("/fact", &[("x-api-key", &batch)]).await.status(),
        401,
        "batch is disabled"
    );
    assert_eq!(kw.get("/fact", &[("x-api-key", &ci)]).await.status(), 200);
    let (_, k) = kw.admin(Method::GET, &format!("/v1/keys/{dogs_key}"), None).await;
    assert_eq!(k["state"], "disabled");
    let resp = kw
        .http
        .get(format!("{}/v1/session", kw.admin))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the pruned admin token still works");
    let (_, hooks) = kw.admin(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(hooks["items"], json!([]));
    let r = keyward(kw, &["apply", "-f", &f2, "--prune"]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.contains("No changes"), "{}", r.out);
    Outcome { ci_key: ci }
}

#[tokio::test]
async fn apply_plans_applies_is_idempotent_round_trips_and_prunes_on_sqlite() {
    let kw = boot_with(|c| c.oauth.enabled = true).await;
    let dir = tempfile::tempdir().unwrap();
    let out = scenario(&kw, dir.path()).await;
    // Nothing secret at rest: the store holds no plaintext key.
    let db = std::fs::read(kw.db_path()).unwrap();
    assert!(!db.windows(out.ci_key.len()).any(|w| w == out.ci_key.as_bytes()));
}

#[tokio::test]
async fn apply_on_postgres() {
    let Some(schema) = crate::cluster_store::Schema::new("apply").await else {
        return;
    };
    let kw = crate::cluster_store::node(schema.url(None), |c| c.oauth.enabled = true).await;
    let dir = tempfile::tempdir().unwrap();
    scenario(&kw, dir.path()).await;
    drop(kw);
    schema.drop_now().await;
}

#[tokio::test]
async fn conflicts_and_refusals_mid_way() {
    let kw = boot_with(|c| c.oauth.enabled = true).await;
    let dir = tempfile::tempdir().unwrap();
    // An immutable difference: nothing at all is applied, the rate change included.
    kw.key("cats", &[], json!({"name": "ci", "env": "test"})).await;
    let f = write(
        dir.path(),
        "conflict.toml",
        "version = 1\n[[apps]]\nname = \"cats\"\nrate = \"5/s\"\n[[apps.keys]]\nname = \"ci\"\n",
    );
    let r = keyward(&kw, &["apply", "-f", &f]).await;
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("! key cats/ci (key_") && r.out.contains("env Test (file: Live)"),
        "{}",
        r.out
    );
    assert!(r.err.contains("nothing was applied"), "{}", r.err);
    let (_, app) = kw.admin(Method::GET, "/v1/apps/cats", None).await;
    assert!(app["policy"].get("rate").is_none(), "{app}");

    // The server refuses the third call (a publishable key with a write scope): the first two
    // stay, the plaintext of the key made before the refusal was printed, and a second run with
    // the file fixed plans only what is left.
    let text = "version = 1\n[[apps]]\nname = \"web\"\n\
                [[apps.keys]]\nname = \"a\"\nscopes = [\"facts:read\"]\n\
                [[apps.keys]]\nname = \"page\"\nkind = \"publishable\"\norigins = [\"https://shop.example\"]\nscopes = [\"facts:write\"]\n\
                [[apps.keys]]\nname = \"z\"\n";
    let f = write(dir.path(), "midway.toml", text);
    let r = keyward(&kw, &["apply", "-f", &f]).await;
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("stopped at key web/page after 2 of 4 changes"),
        "{}",
        r.out
    );
    assert!(r.err.contains("read-only"), "{}", r.err);
    let printed = shown_once(&r.out);
    assert_eq!(printed.len(), 1, "{}", r.out);
    assert_eq!(kw.get("/fact", &[("x-api-key", &printed[0].1)]).await.status(), 200);
    let fixed = write(dir.path(), "midway.toml", &text.replace("[\"facts:write\"]", "[]"));
    let r = keyward(&kw, &["apply", "-f", &fixed]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("Plan: 2 to create, 0 to change, 0 to remove"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("web/a"), "{}", r.out);

    // A scoped write token: audited as apply:admin:<name>; admin tokens need the bootstrap token.
    let (_, t) = kw
        .admin(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "deployer", "role": "write"})),
        )
        .await;
    let write_token = t["token"].as_str().unwrap().to_owned();
    let f = write(dir.path(), "scoped.toml", "version = 1\n[[apps]]\nname = \"birds\"\n");
    let r = keyward_with(&kw.admin, &write_token, &["apply", "-f", &f]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let (_, audit) = kw.admin(Method::GET, "/v1/audit?kind=app.created&limit=1", None).await;
    assert_eq!(audit["items"][0]["actor"], "apply:admin:deployer", "{audit}");
    let f = write(dir.path(), "tokens.toml", "version = 1\nadmin_tokens = []\n");
    let r = keyward_with(&kw.admin, &write_token, &["apply", "-f", &f]).await;
    assert_eq!(r.code, 2, "{}{}", r.out, r.err);
    assert!(r.err.contains("needs the bootstrap admin token"), "{}", r.err);
    let r = keyward_with(&kw.admin, &write_token, &["export"]).await;
    assert_eq!(r.code, 2, "{}{}", r.out, r.err);
    assert!(r.err.contains("--no-admin-tokens"), "{}", r.err);
    let r = keyward_with(&kw.admin, &write_token, &["export", "--no-admin-tokens"]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("name = \"birds\"") && !r.out.contains("admin_tokens"),
        "{}",
        r.out
    );
    // The actor header takes one value; anything else is refused.
    let resp = kw
        .http
        .get(format!("{}/v1/apps", kw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-keyward-actor", "admin")
        .send()
        .await
        .unwrap();
    crate::harness::problem(resp, 400, "invalid_actor").await;
}

/// Files that must be refused before any call, each with its line and a clear reason, and
/// never echoing a secret.
#[tokio::test]
async fn hostile_state_files_are_refused_with_their_line() {
    let kw = boot_with(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let key = keyward_core::KeyFormat::default()
        .generate(keyward_core::KeyEnv::Live)
        .unwrap()
        .expose()
        .to_owned();
    let adm = format!(
        "kwadm_{}",
        "aB3xY9qLm2Pz7Rt5Kw8Nv4Jc6Hd1Gf0SeUoIiQyTbVr"
            .chars()
            .take(43)
            .collect::<String>()
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown top-level field", "version = 1\ncolour = \"red\"\n".into(), ":2: unknown field `colour`"),
        (
            "unknown app field",
            "version = 1\n[[apps]]\nname = \"a\"\nrate_limit = \"5/s\"\n".into(),
            ":4: unknown field `rate_limit`",
        ),
        ("missing version", "[[apps]]\nname = \"a\"\n".into(), "missing field `version`"),
        ("another version", "version = 2\n".into(), ":1: version = 2"),
        (
            "duplicate app",
            "version = 1\n[[apps]]\nname = \"a\"\n[[apps]]\nname = \"a\"\n".into(),
            ":5: app \"a\" is declared twice",
        ),
        (
            "duplicate key",
            "version = 1\n[[apps]]\nname = \"a\"\n[[apps.keys]]\nname = \"k\"\n[[apps.keys]]\nname = \"k\"\n".into(),
            ":7: app \"a\": key \"k\" is declared twice",
        ),
        (
            "duplicate admin token",
            "version = 1\n[[admin_tokens]]\nname = \"t\"\nrole = \"read\"\n[[admin_tokens]]\nname = \"t\"\nrole = \"write\"\n".into(),
            ":6: admin token \"t\" is declared twice",
        ),
        (
            "bad CIDR",
            "version = 1\n[[apps]]\nname = \"a\"\nips = [\"10.0.0.0/33\"]\n".into(),
            ":4: invalid CIDR \"10.0.0.0/33\"",
        ),
        (
            "bad duration",
            "version = 1\n[[apps]]\nname = \"a\"\nmax_key_lifetime = \"90 parsecs\"\n".into(),
            ":4: invalid duration or time \"90 parsecs\"",
        ),
        (
            "negative duration",
            "version = 1\n[[admin_tokens]]\nname = \"t\"\nrole = \"read\"\nexpires = \"-1d\"\n".into(),
            ":5:",
        ),
        (
            "bad rate",
            "version = 1\n[[apps]]\nname = \"a\"\nrate = \"5/fortnight\"\n".into(),
            ":4: invalid rate \"5/fortnight\"",
        ),
        (
            "burst without rate",
            "version = 1\n[[apps]]\nname = \"a\"\nburst = 5\n".into(),
            ":3: app \"a\": burst needs a rate",
        ),
        (
            "bad role",
            "version = 1\n[[admin_tokens]]\nname = \"t\"\nrole = \"root\"\n".into(),
            ":4: unknown variant `root`",
        ),
        (
            "empty name",
            "version = 1\n[[apps]]\nname = \"  \"\n".into(),
            ":3: invalid name",
        ),
        (
            "publishable without origins",
            "version = 1\n[[apps]]\nname = \"a\"\n[[apps.keys]]\nname = \"p\"\nkind = \"publishable\"\n".into(),
            ":5: app \"a\", key \"p\": a publishable key needs at least one origin",
        ),
        (
            "a key in the file",
            format!("version = 1\n[[apps]]\nname = \"a\"\n# old key: {key}\n"),
            ":4: this looks like a keyward API key",
        ),
        (
            "an admin token in the file",
            format!("version = 1\n[[admin_tokens]]\nname = \"{adm}\"\nrole = \"read\"\n"),
            ":3: this looks like an admin token",
        ),
        (
            "a private key in the file",
            "version = 1\n[[webhooks]]\nname = \"w\"\nurl = \"https://x.example\"\nsecret_env = \"S\"\n# -----BEGIN PRIVATE KEY-----\n".into(),
            ":6: this looks like a PEM private key",
        ),
        (
            "a private JWK",
            format!(
                "version = 1\n[[apps]]\nname = \"a\"\n[[apps.clients]]\nname = \"c\"\nauth = \"private_key_jwt\"\n\
                 jwks = {{ keys = [{{ kty = \"OKP\", crv = \"Ed25519\", x = \"{PUBLIC_X}\", d = \"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\" }}] }}\n"
            ),
            ":5: app \"a\", client \"c\": invalid jwks: a JWK Set for a client must hold public keys only",
        ),
        (
            "a webhook secret as secret_env",
            "version = 1\n[[webhooks]]\nname = \"w\"\nurl = \"https://x.example\"\nsecret_env = \"hunter2 is my secret\"\n".into(),
            ":5: secret_env is the name of an environment variable",
        ),
        (
            "a webhook with a relative secret file",
            "version = 1\n[[webhooks]]\nname = \"w\"\nurl = \"https://x.example\"\nsecret_file = \"w.secret\"\n".into(),
            ":3: webhook \"w\": invalid secret_file",
        ),
        (
            "a webhook without a secret",
            "version = 1\n[[webhooks]]\nname = \"w\"\nurl = \"https://x.example\"\n".into(),
            "exactly one of secret_env and secret_file",
        ),
        (
            "a webhook URL with user info",
            "version = 1\n[[webhooks]]\nname = \"w\"\nurl = \"https://user:pw@x.example\"\nsecret_env = \"S\"\n".into(),
            ":3: webhook \"w\": invalid url",
        ),
        (
            "a tls client without a registration",
            "version = 1\n[[apps]]\nname = \"a\"\n[[apps.clients]]\nname = \"c\"\nauth = \"tls_client_auth\"\n".into(),
            ":5: app \"a\", client \"c\": tls_client_auth needs exactly one of",
        ),
        (
            "a syntax error",
            "version = 1\n[[apps]\nname = \"a\"\n".into(),
            ":2:",
        ),
    ];
    for (what, text, want) in &cases {
        let f = write(dir.path(), "hostile.toml", text);
        let r = keyward(&kw, &["apply", "-f", &f, "--dry-run"]).await;
        assert_eq!(r.code, 2, "{what}: {}{}", r.out, r.err);
        assert!(r.err.contains(*want), "{what}: want {want:?} in:\n{}", r.err);
        assert!(!r.err.contains("panicked"), "{what}: {}", r.err);
        assert!(
            !r.err.contains(&key) && !r.err.contains(&adm),
            "{what}: a secret echoed"
        );
        assert!(
            !r.err.contains("hunter2") && !r.err.contains("nWGxne"),
            "{what}: a secret echoed: {}",
            r.err
        );
    }
    // Oversized, not UTF-8, a directory, a missing file.
    let big = dir.path().join("big.toml");
    std::fs::write(&big, format!("version = 1\n#{}\n", "x".repeat(1024 * 1024))).unwrap();
    let odd = dir.path().join("odd.toml");
    std::fs::write(&odd, b"version = 1\n# \xff\xfe\n").unwrap();
    for (path, want) in [
        (big.to_str().unwrap(), "a state file is at most 1048576 bytes"),
        (odd.to_str().unwrap(), "not UTF-8"),
        (dir.path().to_str().unwrap(), "not a regular file"),
        ("/nonexistent/state.toml", "No such file"),
    ] {
        let r = keyward(&kw, &["apply", "-f", path]).await;
        assert_eq!(r.code, 2, "{path}: {}{}", r.out, r.err);
        assert!(r.err.contains(want), "{path}: {}", r.err);
    }
    // Nothing reached the server.
    let (_, apps) = kw.admin(Method::GET, "/v1/apps", None).await;
    assert_eq!(apps["items"], json!([]));
    let (_, audit) = kw.admin(Method::GET, "/v1/audit", None).await;
    assert_eq!(audit["items"], json!([]));
}

/// The admin API calls apply relies on, with bad input: `PATCH /v1/clients/{id}` and the
/// managed webhooks. Every refusal is a problem document; nothing changes.
#[tokio::test]
async fn client_changes_and_managed_webhooks_refuse_bad_input() {
    let kw = boot_with(|c| c.oauth.enabled = true).await;
    let dir = tempfile::tempdir().unwrap();
    kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    let (s, c) = kw
        .admin(
            Method::POST,
            "/v1/clients",
            Some(json!({"app": "cats", "name": "svc", "scopes": ["a"]})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["client_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/clients/{id}");
    let patch = |body: Value| {
        let kw = &kw;
        let path = path.clone();
        async move {
            kw.http
                .patch(format!("{}{path}", kw.admin))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for (body, code) in [
        (json!({"colour": "red"}), "invalid_body"),
        (json!({"token_ttl": "2d"}), "invalid_request"),
        (json!({"token_ttl": "-5m"}), "invalid_request"),
        (json!({"scopes": ["a b"]}), "invalid_request"),
        (json!({"ips": ["10.0.0.0/33"]}), "invalid_request"),
        (json!({"rate": {"limit": "5/fortnight"}}), "invalid_body"),
        (
            json!({"jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": PUBLIC_X}]}}),
            "invalid_request",
        ),
        (json!({"tls_client_auth_san_dns": "a.example"}), "invalid_request"),
        (
            json!({"tls_client_auth_san_dns": "a.example", "tls_client_auth_san_ip": "10.0.0.1"}),
            "invalid_request",
        ),
        (json!({"name": ""}), "invalid_request"),
    ] {
        let resp = patch(body.clone()).await;
        let status = resp.status().as_u16();
        let v = crate::harness::problem(resp, status, code).await;
        assert_eq!(status, 422, "{body}: {v}");
    }
    let resp = patch(json!({"scopes": ["b", "a"], "token_ttl": "1h", "rate": {"limit": "5/s"}, "name": "svc2"})).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["scopes"].clone(), v["token_ttl"].clone(), v["name"].clone()),
        (json!(["a", "b"]), json!(3600), json!("svc2"))
    );
    let (_, a) = kw.admin(Method::GET, "/v1/audit?kind=client.updated", None).await;
    assert_eq!(a["items"].as_array().unwrap().len(), 1, "{a}");
    let resp = patch(json!({"rate": null})).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.unwrap()["policy"].get("rate").is_none());
    let resp = kw
        .http
        .patch(format!("{}/v1/clients/cl_nope", kw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    crate::harness::problem(resp, 404, "not_found").await;

    // Managed webhooks.
    let secret = dir.path().join("hook.secret");
    keyward::config::write_secret_file(&secret, crate::webhooks::SECRET).unwrap();
    let loose = dir.path().join("loose.secret");
    std::fs::write(&loose, "s3cret-s3cret").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let ok = json!({"name": "siem", "url": "http://127.0.0.1:9/hook", "secret_file": secret.to_str().unwrap()});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    for (body, status, code) in [
        (
            json!({"url": "https://x.example", "secret_env": "KEYWARD_WEBHOOK_X"}),
            422,
            "invalid_request",
        ),
        (
            json!({"name": "n", "secret_env": "KEYWARD_WEBHOOK_X"}),
            422,
            "invalid_request",
        ),
        (with("colour", json!("red")), 422, "invalid_body"),
        (with("url", json!("ftp://x.example")), 422, "invalid_request"),
        (with("url", json!("https://user:pw@x.example")), 422, "invalid_request"),
        (with("secret_env", json!("KEYWARD_WEBHOOK_X")), 422, "invalid_request"),
        (json!({"name": "n", "url": "https://x.example"}), 422, "invalid_request"),
        (
            json!({"name": "n", "url": "https://x.example", "secret_env": "KEYWARD_PEPPER"}),
            422,
            "invalid_request",
        ),
        (
            json!({"name": "n", "url": "https://x.example", "secret_env": "KEYWARD_WEBHOOK_NOT_SET_ANYWHERE"}),
            422,
            "invalid_request",
        ),
        (
            json!({"name": "n", "url": "https://x.example", "secret_file": "relative.secret"}),
            422,
            "invalid_request",
        ),
        (
            json!({"name": "n", "url": "https://x.example", "secret_file": "/etc/keyward/keyward.pepper"}),
            422,
            "invalid_request",
        ),
        (
            json!({"name": "n", "url": "https://x.example", "secret_file": "/tmp/../etc/x.secret"}),
            422,
            "invalid_request",
        ),
        (
            json!({"name": "n", "url": "https://x.example", "secret_file": loose.to_str().unwrap()}),
            422,
            "invalid_request",
        ),
        (with("events", json!([])), 422, "invalid_request"),
        (with("events", json!(["a b"])), 422, "invalid_request"),
        (with("timeout", json!("0s")), 422, "invalid_request"),
        (with("timeout", json!("2m")), 422, "invalid_request"),
        (with("timeout", json!("soon")), 422, "invalid_request"),
        (with("max_attempts", json!(0)), 422, "invalid_request"),
        (with("max_attempts", json!(21)), 422, "invalid_request"),
        (with("max_attempts", json!(-1)), 422, "invalid_body"),
        (with("backoff", json!("2h")), 422, "invalid_request"),
        (with("name", json!("a\nb")), 422, "invalid_request"),
    ] {
        let resp = kw
            .http
            .post(format!("{}/v1/webhooks", kw.admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let v = crate::harness::problem(resp, status, code).await;
        assert!(!v.to_string().contains("s3cret"), "{v}");
    }
    let (_, hooks) = kw.admin(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(hooks["items"], json!([]), "a refused webhook was stored");
    let (s, w) = kw.admin(Method::POST, "/v1/webhooks", Some(ok.clone())).await;
    assert_eq!(s, 201, "{w}");
    assert_eq!(
        (w["timeout_ms"].clone(), w["max_attempts"].clone()),
        (json!(5000), json!(6))
    );
    let (s, v) = kw.admin(Method::POST, "/v1/webhooks", Some(ok.clone())).await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = kw
        .admin(
            Method::PATCH,
            "/v1/webhooks/siem",
            Some(json!({"events": ["*"], "backoff": "0s"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["events"].clone(), v["backoff_ms"].clone()), (json!(["*"]), json!(0)));
    let (s, _) = kw
        .admin(Method::PATCH, "/v1/webhooks/siem", Some(json!({"max_attempts": 0})))
        .await;
    assert_eq!(s, 422);
    // A read token reads, never writes.
    let (_, t) = kw
        .admin(
            Method::POST,
            "/v1/admin-tokens",
            Some(json!({"name": "ro", "role": "read"})),
        )
        .await;
    let ro = t["token"].as_str().unwrap();
    let resp = kw
        .http
        .get(format!("{}/v1/webhooks/siem", kw.admin))
        .bearer_auth(ro)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = kw
        .http
        .delete(format!("{}/v1/webhooks/siem", kw.admin))
        .bearer_auth(ro)
        .send()
        .await
        .unwrap();
    crate::harness::problem(resp, 403, "insufficient_role").await;
    let (s, _) = kw.admin(Method::DELETE, "/v1/webhooks/siem", None).await;
    assert_eq!(s, 204);
    let (s, _) = kw.admin(Method::DELETE, "/v1/webhooks/siem", None).await;
    assert_eq!(s, 404);
    let (_, a) = kw.admin(Method::GET, "/v1/audit?kind=webhook.", None).await;
    let kinds: Vec<&str> = a["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["webhook.deleted", "webhook.updated", "webhook.created"], "{a}");
    assert!(
        !a.to_string().contains(crate::webhooks::SECRET),
        "a webhook secret in the audit log"
    );
}

/// A webhook applied through one node delivers from another: the second node hears
/// `Change::Webhooks` (PostgreSQL `NOTIFY`) and builds its sink.
#[tokio::test]
async fn applied_webhooks_reach_every_node_on_postgres() {
    let Some(schema) = crate::cluster_store::Schema::new("apply_nodes").await else {
        return;
    };
    let a = crate::cluster_store::node(schema.url(None), |_| {}).await;
    let b = crate::cluster_store::node(schema.url(None), |_| {}).await;
    crate::cluster_store::listening(&[&a, &b]).await;
    let dir = tempfile::tempdir().unwrap();
    let (hook_url, receiver) = crate::webhooks::receiver(0).await;
    let secret_file = dir.path().join("webhook.secret");
    keyward::config::write_secret_file(&secret_file, crate::webhooks::SECRET).unwrap();
    let f = write(
        dir.path(),
        "state.toml",
        &format!(
            "version = 1\n[[apps]]\nname = \"cats\"\n[[apps.keys]]\nname = \"tripwire\"\ncanary = true\n\
             [[webhooks]]\nname = \"siem\"\nurl = \"{hook_url}\"\nsecret_file = \"{}\"\nbackoff = \"50ms\"\n",
            secret_file.display()
        ),
    );
    let r = keyward(&a, &["apply", "-f", &f]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let canary = shown_once(&r.out)
        .into_iter()
        .find(|(h, _)| h.contains("tripwire"))
        .unwrap()
        .1;
    // Node B learns of the webhook from the announcement (no request reaches node A).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert_eq!(b.get("/fact", &[("x-api-key", &canary)]).await.status(), 401);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if !receiver.of_kind("security.canary_used").is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node B never delivered");
    }
    let d = receiver.wait_for("security.canary_used").await;
    crate::webhooks::verify_signature(&d, crate::webhooks::SECRET);
    drop((a, b));
    schema.drop_now().await;
}

/// Clients registered from files next to the state file: a JSON JWK Set (`jwks_file`) and a
/// self-signed certificate (`cert_file`, registered as a JWK with `x5c`); applying again plans
/// nothing, a changed certificate plans a change of the client's keys, and the export carries the
/// public keys inline (never the private key, which a file next to it must not leak either).
#[tokio::test]
async fn clients_from_jwks_and_certificate_files() {
    let kw = boot_with(|c| c.oauth.enabled = true).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = |cn: &str| {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().pem()
    };
    std::fs::write(dir.path().join("device.pem"), cert("device-1")).unwrap();
    std::fs::write(
        dir.path().join("signer.jwks.json"),
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": PUBLIC_X, "kid": "s1"}]}).to_string(),
    )
    .unwrap();
    let f = write(
        dir.path(),
        "state.toml",
        "version = 1\n[[apps]]\nname = \"iot\"\n\
         [[apps.clients]]\nname = \"device\"\nauth = \"self_signed_tls_client_auth\"\ncert_file = \"device.pem\"\n\
         [[apps.clients]]\nname = \"signer\"\nauth = \"private_key_jwt\"\njwks_file = \"signer.jwks.json\"\n",
    );
    let r = keyward(&kw, &["apply", "-f", &f]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("+ client iot/device") && r.out.contains("    jwks: 1 key ("),
        "{}",
        r.out
    );
    let (_, clients) = kw.admin(Method::GET, "/v1/clients?app=iot", None).await;
    let device = clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "device")
        .unwrap();
    assert!(device["jwks"]["keys"][0]["x5c"][0].is_string(), "{device}");
    let r = keyward(&kw, &["apply", "-f", &f]).await;
    assert!(r.out.contains("No changes"), "{}{}", r.out, r.err);
    // Another certificate: the client's keys change in place (same client id).
    std::fs::write(dir.path().join("device.pem"), cert("device-2")).unwrap();
    let r = keyward(&kw, &["apply", "-f", &f]).await;
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let id = device["client_id"].as_str().unwrap();
    assert!(r.out.contains(&format!("~ client iot/device ({id})")), "{}", r.out);
    assert!(
        r.out
            .lines()
            .any(|l| l.starts_with("    jwks: 1 key (") && l.contains(" → 1 key (")),
        "{}",
        r.out
    );
    let r = keyward(&kw, &["export"]).await;
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("x5c") && r.out.contains(PUBLIC_X), "{}", r.out);
    assert!(!r.out.contains("PRIVATE"), "{}", r.out);
    // A private key where the certificate should be: refused, and not echoed.
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("device.pem"), key.serialize_pem()).unwrap();
    let r = keyward(&kw, &["apply", "-f", &f, "--dry-run"]).await;
    assert_eq!(r.code, 2, "{}{}", r.out, r.err);
    assert!(
        r.err.contains("cert_file") && !r.err.contains("PRIVATE KEY"),
        "{}",
        r.err
    );
}
