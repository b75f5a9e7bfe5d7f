//! Leak reports in GitHub's secret-scanning partner format, signed with a P-256 key made here.

use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use base64::Engine as _;
use keyward::config::Config;
use keyward_core::model::AuditFilter;
use keyward_engine::leaks::LeakAction;
use serde_json::{json, Value};

use crate::harness::{boot_with, problem, Kw};
use crate::webhooks::{receiver, verify_signature, webhook, SECRET};

const PATH: &str = "/.well-known/keyward/secret-scanning/github";
const KEY_ID: &str = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";

struct Github {
    key: EcdsaKeyPair,
    dir: tempfile::TempDir,
}

impl Github {
    fn new() -> Github {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // GitHub's document, with an older key that is no longer current.
        let old = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let doc = json!({"public_keys": [
            {"key_identifier": "old-key", "key": pem(&old), "is_current": false},
            {"key_identifier": KEY_ID, "key": pem(&key), "is_current": true},
        ]});
        std::fs::write(dir.path().join("github-keys.json"), doc.to_string()).unwrap();
        Github { key, dir }
    }

    fn keys_file(&self) -> std::path::PathBuf {
        self.dir.path().join("github-keys.json")
    }

    fn sign(&self, body: &[u8]) -> String {
        let sig = self.key.sign(&SystemRandom::new(), body).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }
}

fn pem(k: &EcdsaKeyPair) -> String {
    let der = k.public_key().as_der().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

async fn boot(gh: &Github, action: LeakAction) -> Kw {
    let file = gh.keys_file();
    boot_with(move |c| {
        c.leak_reports.github_keys_file = Some(file);
        c.leak_reports.action = action;
    })
    .await
}

async fn post(kw: &Kw, body: &[u8], key_id: Option<&str>, sig: Option<&str>) -> reqwest::Response {
    let mut req = kw
        .http
        .post(format!("{}{PATH}", kw.gw))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(k) = key_id {
        req = req.header("Github-Public-Key-Identifier", k);
    }
    if let Some(s) = sig {
        req = req.header("Github-Public-Key-Signature", s);
    }
    req.send().await.unwrap()
}

async fn report(kw: &Kw, gh: &Github, tokens: &[&str]) -> (u16, Value) {
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({"token": t, "type": "keyward_api_key",
                "url": "https://github.com/octo/repo/blob/abc/config.yml", "source": "content"})
        })
        .collect();
    let body = serde_json::to_vec(&items).unwrap();
    let resp = post(kw, &body, Some(KEY_ID), Some(&gh.sign(&body))).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn audit_text(kw: &Kw) -> String {
    let rows = kw
        .running
        .as_ref()
        .unwrap()
        .engine
        .list_audit(&AuditFilter {
            since: None,
            target: None,
            kind: None,
            before_seq: None,
            limit: 1000,
        })
        .await
        .unwrap();
    serde_json::to_string(&rows).unwrap()
}

#[tokio::test]
async fn a_true_positive_revokes_the_key_and_an_unknown_token_is_a_false_positive() {
    let gh = Github::new();
    let kw = boot(&gh, LeakAction::Revoke).await;
    let (id, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let (_, other) = kw.key("cats", &["facts:read"], json!({})).await;
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    let malformed = "kw_live_notarealkeyatall";
    let unknown = keyward_core::KeyFormat::new("kw")
        .unwrap()
        .generate(keyward_core::KeyEnv::Live)
        .unwrap()
        .expose()
        .to_owned();
    let (status, v) = report(&kw, &gh, &[&key, &unknown, malformed]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!([
            {"token_raw": key, "token_type": "keyward_api_key", "label": "true_positive"},
            {"token_raw": unknown, "token_type": "keyward_api_key", "label": "false_positive"},
            {"token_raw": malformed, "token_type": "keyward_api_key", "label": "false_positive"},
        ])
    );
    // Revoked at once: the very next request is refused.
    let resp = kw.get("/fact", &[("x-api-key", &key)]).await;
    problem(resp, 401, "revoked_credential").await;
    assert_eq!(kw.get("/fact", &[("x-api-key", &other)]).await.status(), 200);
    let (_, rec) = kw.admin(reqwest::Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(rec["state"], "revoked");
    // The audit log tells who and why, and never holds the token.
    let text = audit_text(&kw).await;
    assert!(!text.contains(&key), "the reported token is in the audit log");
    assert!(!text.contains(&other));
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    let leak = rows.iter().find(|r| r["kind"] == "security.leak_reported").unwrap();
    assert_eq!(leak["severity"], "high");
    assert_eq!(leak["target"], id.as_str());
    assert_eq!(leak["actor"], "github-secret-scanning");
    assert_eq!(leak["details"]["revoked"], true);
    assert_eq!(
        leak["details"]["url"],
        "https://github.com/octo/repo/blob/abc/config.yml"
    );
    assert_eq!(leak["details"]["source"], "content");
    let revoked = rows.iter().find(|r| r["kind"] == "key.revoked").unwrap();
    assert_eq!(revoked["actor"], "github-secret-scanning");
    assert!(revoked["details"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("reported leaked by GitHub secret scanning: https://github.com/octo/"));
}

#[tokio::test]
async fn flag_mode_does_not_revoke() {
    let gh = Github::new();
    let kw = boot(&gh, LeakAction::Flag).await;
    let (id, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let (status, v) = report(&kw, &gh, &[&key]).await;
    assert_eq!(status, 200);
    assert_eq!(v[0]["label"], "true_positive");
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);
    let text = audit_text(&kw).await;
    assert!(!text.contains(&key));
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    let leak = rows.iter().find(|r| r["kind"] == "security.leak_reported").unwrap();
    assert_eq!(leak["target"], id.as_str());
    assert_eq!(leak["details"]["revoked"], false);
    assert_eq!(leak["details"]["action"], "flag");
    assert!(rows.iter().all(|r| r["kind"] != "key.revoked"));
}

#[tokio::test]
async fn bad_requests_are_rejected_with_the_right_status() {
    let gh = Github::new();
    let kw = boot(&gh, LeakAction::Revoke).await;
    let (_, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let body = serde_json::to_vec(&json!([{"token": key, "type": "t", "url": "u", "source": "s"}])).unwrap();
    let sig = gh.sign(&body);

    // No signature headers, unknown identifier, a signature of another body, garbage.
    problem(post(&kw, &body, None, None).await, 401, "missing_signature").await;
    problem(post(&kw, &body, Some(KEY_ID), None).await, 401, "missing_signature").await;
    problem(
        post(&kw, &body, Some("nope"), Some(&sig)).await,
        401,
        "unknown_key_identifier",
    )
    .await;
    let other = gh.sign(b"[]");
    problem(
        post(&kw, &body, Some(KEY_ID), Some(&other)).await,
        401,
        "invalid_signature",
    )
    .await;
    problem(
        post(&kw, &body, Some(KEY_ID), Some("%%%")).await,
        401,
        "invalid_signature",
    )
    .await;
    // Signed with the current key but announced as the old one.
    problem(
        post(&kw, &body, Some("old-key"), Some(&sig)).await,
        401,
        "invalid_signature",
    )
    .await;
    // None of that touched the key.
    assert_eq!(kw.get("/fact", &[("x-api-key", &key)]).await.status(), 200);

    // Validly signed but malformed or the wrong shape.
    let not_json = b"[{\"token\": ".to_vec();
    problem(
        post(&kw, &not_json, Some(KEY_ID), Some(&gh.sign(&not_json))).await,
        400,
        "malformed_report",
    )
    .await;
    for shape in [
        json!({"token": "x"}),
        json!([{"type": "t"}]),
        json!([{"token": 5, "type": "t"}]),
    ] {
        let b = serde_json::to_vec(&shape).unwrap();
        problem(
            post(&kw, &b, Some(KEY_ID), Some(&gh.sign(&b))).await,
            422,
            "invalid_report",
        )
        .await;
    }

    // Too large: refused before any verification.
    let big = vec![b' '; 1024 * 1024 + 1];
    problem(
        post(&kw, &big, Some(KEY_ID), Some(&gh.sign(&big))).await,
        413,
        "payload_too_large",
    )
    .await;

    // Only POST.
    let resp = kw.get(PATH, &[]).await;
    problem(resp, 405, "method_not_allowed").await;

    // The genuine report works once; its replay within the hour is refused.
    let resp = post(&kw, &body, Some(KEY_ID), Some(&sig)).await;
    assert_eq!(resp.status(), 200);
    problem(post(&kw, &body, Some(KEY_ID), Some(&sig)).await, 409, "replayed_report").await;
    // After the window the same body is accepted again (the key is already revoked: still ours).
    kw.clock.advance(time::Duration::hours(1) + time::Duration::seconds(1));
    let resp = post(&kw, &body, Some(KEY_ID), Some(&sig)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v[0]["label"], "true_positive");
}

#[tokio::test]
async fn a_report_fires_the_webhook() {
    let gh = Github::new();
    let hook_dir = tempfile::tempdir().unwrap();
    let (url, rx) = receiver(0).await;
    let file = gh.keys_file();
    let w = webhook(&url, &hook_dir);
    let kw = boot_with(move |c| {
        c.leak_reports.github_keys_file = Some(file);
        c.webhooks = vec![w];
    })
    .await;
    let (id, key) = kw.key("cats", &["facts:read"], json!({})).await;
    let (status, _) = report(&kw, &gh, &[&key]).await;
    assert_eq!(status, 200);
    let d = rx.wait_for("security.leak_reported").await;
    verify_signature(&d, SECRET);
    crate::webhooks::check_body(&d, &[&key]);
    let v = d.json();
    assert_eq!(v["target"], id.as_str());
    assert_eq!(v["severity"], "high");
    assert_eq!(v["details"]["revoked"], true);
    // Only the leak event went out (the revocation itself is an info event).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.deliveries().len(), 1);
}

#[test]
fn the_endpoint_is_off_without_keys_and_refuses_a_bad_keys_file() {
    let c = Config::load(None, &[]).unwrap();
    assert!(c.github_keys().unwrap().is_none());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.json");
    std::fs::write(&p, r#"{"public_keys": [{"key_identifier": "a", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}"#).unwrap();
    let c = Config::load(
        None,
        &[("KEYWARD_LEAK_REPORTS__GITHUB_KEYS_FILE".into(), p.display().to_string())],
    )
    .unwrap();
    assert!(c.github_keys().is_err());
    for (k, v) in [
        ("KEYWARD_LEAK_REPORTS__ACTION", "delete"),
        ("KEYWARD_LEAK_REPORTS__PATH", "relative"),
        ("KEYWARD_LEAK_REPORTS__NOPE", "1"),
    ] {
        assert!(Config::load(None, &[(k.into(), v.into())]).is_err(), "{k}={v}");
    }
}
