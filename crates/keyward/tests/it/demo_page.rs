//! The cat-facts web page of `keyward demo` (issue 11): served on its own origin with a strict
//! CSP and no secret in it, a publishable key bound to that origin, the backend-for-frontend
//! token endpoint, and a foreign origin that is refused. Over HTTP always; in headless Chromium
//! (tests/demo-page/run.mjs) when `KEYWARD_TEST_CHROMIUM=1` (tests/demo-page/setup.sh installs
//! Debian's chromium and playwright-core).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// `keyward demo --json` running as a user runs it; stopped with SIGTERM when dropped.
struct Demo {
    child: Child,
    v: Value,
}

impl Demo {
    fn start() -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["demo", "--json", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Demo { child, v }
    }

    fn s(&self, field: &str) -> String {
        self.v[field].as_str().unwrap().to_owned()
    }

    /// `http://127.0.0.1:PORT` (the printed URLs end in `/`).
    fn origin(&self, field: &str) -> String {
        self.s(field).trim_end_matches('/').to_owned()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn secret_key_in(text: &str) -> bool {
    // Secret keys are kw_test_… / kw_live_…; publishable ones kw_pk_….
    text.contains("kw_test_") || text.contains("kw_live_")
}

#[tokio::test]
async fn demo_site_over_http() {
    let demo = Demo::start();
    let (gw, site, foreign) = (demo.s("gateway"), demo.origin("site"), demo.origin("foreign_site"));
    assert_ne!(site, foreign);
    let pk = demo.v["keys"]["publishable"].as_str().unwrap().to_owned();
    assert!(pk.starts_with("kw_pk_"), "{pk}");
    let http = reqwest::Client::new();

    // The page: strict headers, no inline script, no secret key, the publishable key in a meta tag.
    let resp = http.get(format!("{site}/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    assert!(csp.contains(&format!("connect-src 'self' {gw}")), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    let cookie = h["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"<script src="/app.js" defer></script>"#));
    assert!(!html.contains("<script>") && !html.contains("https://"));
    assert!(html.contains(&pk));
    assert!(!secret_key_in(&html), "a secret key in the page");
    for path in ["/app.js", "/app.css"] {
        let body = http
            .get(format!("{site}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!secret_key_in(&body), "{path}");
    }

    // The publishable key: from the site's origin 200 with CORS; from the foreign origin or none 403.
    let fact = |origin: Option<String>| {
        let mut r = http.get(format!("{gw}/fact")).header("x-api-key", &pk);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let r = fact(Some(site.clone())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], site.as_str());
    for origin in [Some(foreign.clone()), None] {
        let r = fact(origin.clone()).await.unwrap();
        assert_eq!(r.status(), 403, "{origin:?}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "origin_not_allowed", "{origin:?}: {body}");
    }
    let r = http
        .request(reqwest::Method::OPTIONS, format!("{gw}/fact"))
        .header("origin", &foreign)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the foreign preflight");

    // The backend-for-frontend: a token for this site's pages with a session, nobody else.
    let bff = |origin: Option<&str>, cookie: Option<&str>| {
        let mut r = http.post(format!("{site}/bff/token"));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    assert_eq!(bff(Some(&site), None).await.unwrap().status(), 401, "no session");
    assert_eq!(bff(Some(&foreign), Some(&session)).await.unwrap().status(), 403);
    assert_eq!(bff(None, Some(&session)).await.unwrap().status(), 403);
    let r = bff(Some(&site), Some(&session)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["scope"], "facts:read", "{t}");
    let expires_in = t["expires_in"].as_u64().unwrap();
    assert!((30..=300).contains(&expires_in), "{t}");
    let token = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    // The same session gets the same token until shortly before it expires.
    let again: Value = bff(Some(&site), Some(&session)).await.unwrap().json().await.unwrap();
    assert_eq!(again["access_token"], token.as_str());
    let r = http
        .get(format!("{gw}/fact"))
        .bearer_auth(&token)
        .header("origin", &site)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], site.as_str());
    // It only reads.
    let r = http
        .post(format!("{gw}/facts"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"fact": "Cats own the web."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The foreign page serves the same publishable key, and its CSP lets it try (so what
    // refuses it is CORS and keyward, not its own policy).
    let r = http.get(format!("{foreign}/")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains(&gw) && csp.contains(&site), "{csp}");
    assert!(r.text().await.unwrap().contains(&pk));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_cat_facts() {
    if std::env::var("KEYWARD_TEST_CHROMIUM").as_deref() != Ok("1") {
        println!(
            "skipped: set KEYWARD_TEST_CHROMIUM=1 (after tests/demo-page/setup.sh) to run the demo page in Chromium"
        );
        return;
    }
    let demo = Demo::start();
    let (gw, site, foreign) = (demo.s("gateway"), demo.s("site"), demo.s("foreign_site"));
    // The direct check behind what the browser shows: keyward itself refuses the foreign origin.
    let pk = demo.v["keys"]["publishable"].as_str().unwrap();
    let r = reqwest::Client::new()
        .get(format!("{gw}/fact"))
        .header("x-api-key", pk)
        .header("origin", demo.origin("foreign_site"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "origin_not_allowed", "{body}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shots = root.join("target/demo-page-screenshots");
    let mut child = Command::new("node")
        .arg(root.join("tests/demo-page/run.mjs"))
        .args([&site, &foreign, &gw])
        .arg(&shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (tests/demo-page/setup.sh installs what the harness needs)");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut err_pipe = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    stderr.push_str(&err_reader.join().unwrap());
    let status = child.wait().unwrap();
    println!("{stdout}\n{stderr}\nscreenshots: {}", shots.display());
    assert!(status.success(), "the demo page run in Chromium failed (see above)");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(shots.join("01-site-first-fact.png").exists());
}
