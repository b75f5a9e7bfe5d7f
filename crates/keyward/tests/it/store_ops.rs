//! Operating the store for years (issue 20, points 1–3): retention in the background and from
//! the CLI, the tamper-evident audit chain (`keyward audit verify` against rows edited behind
//! keyward's back, on SQLite and PostgreSQL), the audit file sink, and `keyward backup` /
//! `keyward restore` under load.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_core::audit::{hash32, ChainRow, Checkpoint};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cluster_store::Schema;
use crate::harness::{boot_with, problem, Kw, ADMIN_TOKEN, PEPPER};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// `keyward ARGS --config FILE` with the test pepper in the environment and nothing else of
/// the test's: (exit code, stdout, stderr).
fn keyward(config: &Path, args: &[&str]) -> (i32, String, String) {
    keyward_env(config, args, &[("KEYWARD_PEPPER", PEPPER)])
}

fn keyward_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .env("KEYWARD_LOG", "warn");
    for k in [
        "KEYWARD_CONFIG",
        "KEYWARD_PEPPER",
        "KEYWARD_ADMIN_TOKEN",
        "KEYWARD_KEK",
        "KEYWARD_ADMIN_URL",
    ] {
        c.env_remove(k);
    }
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

/// A configuration file in `dir` naming the store `url`, plus `extra` TOML.
fn config_for(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("ops.toml");
    std::fs::write(&path, format!("[store]\nurl = {}\n{extra}", toml_str(url))).unwrap();
    path
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn sqlite(kw: &Kw) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{}", kw.db_path().display()))
        .await
        .unwrap()
}

/// Some admin changes (audit events): an app, keys, a revocation, an update.
async fn changes(kw: &Kw) -> (String, String) {
    let (id, key) = kw.key("cats", &["facts:read"], json!({"name": "one"})).await;
    let (id2, _) = kw.key("cats", &["facts:read"], json!({"name": "two"})).await;
    let (s, _) = kw
        .admin(
            Method::POST,
            &format!("/v1/keys/{id2}/revoke"),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = kw
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(s, 200);
    (id, key)
}

fn chain_of(v: &Value) -> (bool, Option<i64>, String) {
    (
        v["ok"].as_bool().unwrap(),
        v["broken"]["seq"].as_i64(),
        v["broken"]["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// `keyward audit verify --json` on the store of `config`: (exit code, ok, broken seq, reason).
fn verify_cli(config: &Path) -> (i32, bool, Option<i64>, String) {
    let (code, out, err) = keyward(config, &["audit", "verify", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    let (ok, seq, reason) = chain_of(&v);
    if !ok {
        assert!(err.contains("the audit chain is broken at event"), "{err}");
    }
    (code, ok, seq, reason)
}

#[tokio::test]
async fn audit_verify_finds_a_row_edited_behind_keywards_back_sqlite() {
    let mut kw = boot_with(|_| {}).await;
    changes(&kw).await;
    let cfg = config_for(kw.dir.path(), &kw.db_path().display().to_string(), "");
    // Intact: exit 0, in words and in JSON.
    let (code, out, err) = keyward(&cfg, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain intact"), "{out}");
    let (code, ok, _, _) = verify_cli(&cfg);
    assert_eq!((code, ok), (0, true));

    // An event edited in place, its trigger dropped first: the first broken link is it.
    let pool = sqlite(&kw).await;
    sqlx::query("DROP TRIGGER audit_no_update")
        .execute(&pool)
        .await
        .unwrap();
    let n = sqlx::query("UPDATE audit SET details = '{\"before\":null,\"after\":{\"name\":\"evil\"}}' WHERE seq = 3")
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
    let (code, ok, seq, reason) = verify_cli(&cfg);
    assert_eq!((code, ok, seq), (1, false, Some(3)), "{reason}");
    assert!(reason.contains("changed after it was written"), "{reason}");
    let (code, out, err) = keyward(&cfg, &["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("BROKEN") && out.contains("event 3"), "{out}");
    assert!(err.contains("broken at event 3"), "{err}");
    // The server itself says the same.
    let r = kw.running.as_ref().unwrap().engine.verify_audit_chain().await.unwrap();
    assert_eq!(r.broken.unwrap().seq, 3);
    kw.stop().await;
}

#[tokio::test]
async fn audit_verify_finds_a_row_edited_behind_keywards_back_postgres() {
    let Some(schema) = Schema::new("chain_verify").await else {
        return;
    };
    let url = schema.url(None);
    let mut kw = crate::cluster_store::node(url.clone(), |_| {}).await;
    changes(&kw).await;
    let cfg = config_for(kw.dir.path(), &url, "");
    let (code, ok, _, _) = verify_cli(&cfg);
    assert_eq!((code, ok), (0, true));
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("DROP TRIGGER audit_no_update ON audit")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit SET actor = 'someone-else' WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let (code, ok, seq, reason) = verify_cli(&cfg);
    assert_eq!((code, ok, seq), (1, false, Some(2)), "{reason}");
    assert!(reason.contains("changed after it was written"), "{reason}");
    pool.close().await;
    kw.stop().await;
    schema.drop_now().await;
}

/// Each way of tampering, on a fresh store, found by the walk: an edit, a rewrite with every
/// later hash recomputed (caught by the signed checkpoint), a deleted event, the newest events
/// removed, a forged checkpoint, hashes wiped.
#[tokio::test]
async fn every_kind_of_tampering_is_a_broken_link() {
    async fn fresh() -> (Kw, sqlx::SqlitePool) {
        let kw = boot_with(|_| {}).await;
        changes(&kw).await;
        // A retention pass signs an anchor checkpoint of the head (event 5).
        let engine = kw.running.as_ref().unwrap().engine.clone();
        let r = engine
            .run_retention(&Default::default(), false, "test", None)
            .await
            .unwrap();
        assert_eq!(r.checkpoints_written, 1);
        let more = kw.key("cats", &[], json!({})).await;
        assert!(!more.0.is_empty());
        let v = engine.verify_audit_chain().await.unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!((v.events, v.anchored_up_to), (6, Some(5)));
        let pool = sqlite(&kw).await;
        for t in [
            "audit_no_update",
            "audit_no_delete",
            "audit_checkpoints_no_update",
            "audit_checkpoints_no_delete",
        ] {
            sqlx::query(&format!("DROP TRIGGER {t}")).execute(&pool).await.unwrap();
        }
        (kw, pool)
    }
    async fn broken(kw: &Kw) -> (i64, String) {
        let r = kw.running.as_ref().unwrap().engine.verify_audit_chain().await.unwrap();
        assert!(!r.ok);
        let b = r.broken.unwrap();
        (b.seq, b.reason)
    }
    async fn rows(pool: &sqlx::SqlitePool) -> Vec<ChainRow> {
        use sqlx::Row;
        sqlx::query("SELECT seq, at, actor, kind, severity, target, source_ip, details, prev_hash, hash FROM audit ORDER BY seq")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| ChainRow {
                seq: r.get("seq"),
                at: r.get("at"),
                actor: r.get("actor"),
                kind: r.get("kind"),
                severity: r.get("severity"),
                target: r.get("target"),
                source_ip: r.get("source_ip"),
                details: r.get("details"),
                prev_hash: r.get("prev_hash"),
                hash: r.get("hash"),
            })
            .collect()
    }

    // A rewrite that recomputes every hash from event 2 on and moves the head: every link
    // holds, but event 5 no longer has the hash the signed checkpoint pinned.
    let (kw, pool) = fresh().await;
    let mut all = rows(&pool).await;
    all[1].actor = "nobody".into();
    let mut prev = hash32(all[0].hash.as_deref().unwrap()).unwrap();
    for r in all.iter_mut().skip(1) {
        let h = r.compute_hash(&prev);
        sqlx::query("UPDATE audit SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(&r.actor)
            .bind(&prev[..])
            .bind(&h[..])
            .bind(r.seq)
            .execute(&pool)
            .await
            .unwrap();
        prev = h;
    }
    sqlx::query("UPDATE audit_head SET hash = $1")
        .bind(&prev[..])
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken(&kw).await;
    assert_eq!(seq, 5, "{reason}");
    assert!(reason.contains("signed checkpoint"), "{reason}");

    // A recomputed event without its successor recomputed: the successor's link breaks.
    let (kw, pool) = fresh().await;
    let mut r2 = rows(&pool).await.remove(1);
    r2.kind = "app.deleted".into();
    let h = r2.compute_hash(&hash32(r2.prev_hash.as_deref().unwrap()).unwrap());
    sqlx::query("UPDATE audit SET kind = $1, hash = $2 WHERE seq = 2")
        .bind(&r2.kind)
        .bind(&h[..])
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken(&kw).await;
    assert_eq!(seq, 3, "{reason}");
    assert!(reason.contains("does not link to the event before it"), "{reason}");

    // An event deleted from the middle.
    let (kw, pool) = fresh().await;
    sqlx::query("DELETE FROM audit WHERE seq = 4")
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken(&kw).await;
    assert_eq!(seq, 5, "{reason}");
    assert!(reason.contains("events 4 to 4 are missing"), "{reason}");

    // The newest event removed and the head left alone, then the head rewound as well (the
    // anchor at 5 is still beyond nothing; remove 5 and 6 and rewind: the anchor is beyond).
    let (kw, pool) = fresh().await;
    sqlx::query("DELETE FROM audit WHERE seq = 6")
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken(&kw).await;
    assert_eq!(seq, 5, "{reason}");
    assert!(reason.contains("the newest events were removed"), "{reason}");
    sqlx::query("DELETE FROM audit WHERE seq = 5")
        .execute(&pool)
        .await
        .unwrap();
    let four = rows(&pool).await.pop().unwrap();
    sqlx::query("UPDATE audit_head SET seq = 4, hash = $1")
        .bind(four.hash.unwrap())
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken(&kw).await;
    assert_eq!(seq, 5, "{reason}");
    assert!(reason.contains("beyond the chain head"), "{reason}");

    // A checkpoint forged without the pepper (a cut that would allow deleting everything).
    let (kw, pool) = fresh().await;
    let other = keyward_core::Pepper::from_text("not-the-pepper-0123456789abcdef0123456789").unwrap();
    let forged = Checkpoint::sign(&other, 6, [0; 32], true, 1);
    sqlx::query("INSERT INTO audit_checkpoints (seq, cut, hash, at, mac) VALUES ($1, 1, $2, $3, $4)")
        .bind(forged.seq)
        .bind(&forged.hash[..])
        .bind(forged.at)
        .bind(&forged.mac[..])
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken(&kw).await;
    assert_eq!(seq, 6, "{reason}");
    assert!(reason.contains("invalid MAC"), "{reason}");

    // Hashes wiped, as if the event predated the chain.
    let (kw, pool) = fresh().await;
    sqlx::query("UPDATE audit SET prev_hash = NULL, hash = NULL WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken(&kw).await;
    assert_eq!(seq, 2, "{reason}");
    assert!(reason.contains("no chain hashes"), "{reason}");

    // Every hash wiped and the head told that everything predates the chain: the events the
    // anchor pins are caught.
    let (kw, pool) = fresh().await;
    sqlx::query("UPDATE audit SET prev_hash = NULL, hash = NULL")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_head SET legacy_seq = 100, hash = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let (seq, reason) = broken(&kw).await;
    assert_eq!(seq, 5, "{reason}");
    assert!(reason.contains("pins one"), "{reason}");

    // The whole log rewritten and every checkpoint deleted: nothing in the database can tell
    // (the documented limit), but a head recorded earlier outside it can.
    let (kw, pool) = fresh().await;
    let before = kw.running.as_ref().unwrap().engine.verify_audit_chain().await.unwrap();
    let recorded = format!("{}:{}", before.head_seq, before.head_hash.clone().unwrap());
    let mut all = rows(&pool).await;
    all[0].actor = "nobody".into();
    let mut prev = keyward_core::audit::GENESIS;
    for r in all.iter_mut() {
        let h = r.compute_hash(&prev);
        sqlx::query("UPDATE audit SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(&r.actor)
            .bind(&prev[..])
            .bind(&h[..])
            .bind(r.seq)
            .execute(&pool)
            .await
            .unwrap();
        prev = h;
    }
    sqlx::query("UPDATE audit_head SET hash = $1")
        .bind(&prev[..])
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_checkpoints")
        .execute(&pool)
        .await
        .unwrap();
    let r = kw.running.as_ref().unwrap().engine.verify_audit_chain().await.unwrap();
    assert!(r.ok, "a consistent rewrite without checkpoints passes: {r:?}");
    let cfg = config_for(kw.dir.path(), &kw.db_path().display().to_string(), "");
    let (code, out, err) = keyward(&cfg, &["audit", "verify", "--expect", &recorded]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("the log was rewritten"), "{out}");
    // --expect of the current head passes; malformed values are usage errors.
    let now = format!("{}:{}", r.head_seq, r.head_hash.unwrap());
    let (code, out, err) = keyward(&cfg, &["audit", "verify", "--expect", &now]);
    assert_eq!(code, 0, "{out}{err}");
    for bad in [
        "",
        "5",
        "x:00",
        "0:ab",
        "5:abc",
        &format!("5:{}", "g".repeat(64)),
        &format!("-1:{}", "0".repeat(64)),
    ] {
        let (code, _, err) = keyward(&cfg, &["audit", "verify", &format!("--expect={bad}")]);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("SEQ:HASH"), "{bad:?}: {err}");
    }
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server's own job: after `revoked_keys` a revoked key and an expired one become
/// tombstones (never verify again, record kept), usage rows and audit events past their
/// horizon go, in batches, and the chain still verifies with its cut checkpoint.
#[tokio::test]
async fn the_retention_job_purges_in_the_background_and_the_chain_still_verifies() {
    let mut kw = boot_with(|c| {
        c.retention.interval = Duration::from_secs(1);
        c.retention.batch_size = 2;
        c.retention.batch_pause = Duration::from_millis(1);
        c.usage.flush_interval = Duration::from_millis(50);
    })
    .await;
    let engine = kw.running.as_ref().unwrap().engine.clone();
    let (revoked, revoked_key) = kw.key("cats", &["facts:read"], json!({})).await;
    let (live, live_key) = kw.key("cats", &["facts:read"], json!({})).await;
    let (expiring, _) = kw.key("cats", &["facts:read"], json!({"expires_in": "1h"})).await;
    for _ in 0..3 {
        assert_eq!(kw.get("/fact", &[("x-api-key", &live_key)]).await.status(), 200);
    }
    let (s, _) = kw
        .admin(Method::POST, &format!("/v1/keys/{revoked}/revoke"), None)
        .await;
    assert_eq!(s, 200);
    problem(
        kw.get("/fact", &[("x-api-key", &revoked_key)]).await,
        401,
        "revoked_credential",
    )
    .await;
    wait_for("the usage flush", async || {
        !engine.store().usage(Some(&live), None, 0).await.unwrap().is_empty()
    })
    .await;
    let events_before = engine.store().audit_head().await.unwrap().seq;
    let day0 = engine.store().usage(Some(&live), None, 0).await.unwrap()[0].clone();

    // 91 days later: both ended keys are tombstones; the live one and everything else stay.
    kw.clock.advance(time::Duration::days(91));
    wait_for("the tombstones", async || {
        let (_, v) = kw.admin(Method::GET, &format!("/v1/keys/{expiring}"), None).await;
        v["purged_at"].is_string()
    })
    .await;
    let (_, v) = kw.admin(Method::GET, &format!("/v1/keys/{revoked}"), None).await;
    assert!(v["purged_at"].is_string(), "{v}");
    assert_eq!(v["state"], "revoked", "the record stays: {v}");
    let (_, v) = kw.admin(Method::GET, &format!("/v1/keys/{live}"), None).await;
    assert_eq!(v["purged_at"], Value::Null, "{v}");
    assert_eq!(kw.get("/fact", &[("x-api-key", &live_key)]).await.status(), 200);
    // The digest is gone: the key is now as unknown as a random one.
    problem(
        kw.get("/fact", &[("x-api-key", &revoked_key)]).await,
        401,
        "invalid_credential",
    )
    .await;
    let (s, v) = kw
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{revoked}"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, 409, "a tombstone is not edited: {v}");
    let purge_events = engine
        .list_audit(&keyward_core::model::AuditFilter {
            kind: Some("retention.run".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(purge_events.len(), 1);
    assert_eq!(purge_events[0].actor, "retention");
    assert_eq!(purge_events[0].details["keys_purged"], 2);
    assert!(
        engine
            .store()
            .usage(Some(&live), None, 0)
            .await
            .unwrap()
            .iter()
            .any(|r| (r.minute, &r.outcome) == (day0.minute, &day0.outcome)),
        "usage is kept 400 days"
    );

    // 401 days on: usage goes (the request made on day 91 too). 2 years on: the audit events
    // before the cut go, in batches of 2; the chain verifies from its cut checkpoint.
    kw.clock.advance(time::Duration::days(401));
    wait_for("the usage rows to go", async || {
        engine.store().usage(None, None, 0).await.unwrap().is_empty()
    })
    .await;
    kw.clock.advance(time::Duration::days(2 * 366));
    wait_for("the old audit events to go", async || {
        let first = engine.store().audit_chain(0, 1).await.unwrap();
        first.first().is_some_and(|r| r.seq > events_before)
    })
    .await;
    let r = engine.verify_audit_chain().await.unwrap();
    assert!(r.ok, "{r:?}");
    assert!(r.latest_cut.unwrap() >= events_before, "{r:?}");
    kw.stop().await;
    // The CLI says the same from the file.
    let cfg = config_for(kw.dir.path(), &kw.db_path().display().to_string(), "");
    let (code, ok, _, reason) = verify_cli(&cfg);
    assert_eq!((code, ok), (0, true), "{reason}");
}

/// `keyward retention run --dry-run` counts and changes nothing; `retention run` removes
/// exactly that; both work while the server runs, on data made with a clock three years back.
#[tokio::test]
async fn retention_run_from_the_cli_dry_run_then_run() {
    retention_run_from_the_cli(None).await;
}

#[tokio::test]
async fn retention_run_from_the_cli_dry_run_then_run_postgres() {
    let Some(schema) = Schema::new("retention_cli").await else {
        return;
    };
    retention_run_from_the_cli(Some(schema.url(None))).await;
    schema.drop_now().await;
}

/// On the store `pg` (PostgreSQL), or on a SQLite file.
async fn retention_run_from_the_cli(pg: Option<String>) {
    let url = pg.clone();
    let mut kw = boot_with(move |c| {
        c.usage.flush_interval = Duration::from_millis(50);
        if let Some(u) = url {
            c.store.url = u;
        }
    })
    .await;
    let store_url = pg.unwrap_or_else(|| kw.db_path().display().to_string());
    kw.clock.advance(-time::Duration::days(3 * 366));
    let (a, key_a) = kw.key("cats", &["facts:read"], json!({})).await;
    let (b, _) = kw.key("cats", &["facts:read"], json!({})).await;
    for _ in 0..2 {
        assert_eq!(kw.get("/fact", &[("x-api-key", &key_a)]).await.status(), 200);
    }
    let (s, _) = kw.admin(Method::POST, &format!("/v1/keys/{b}/revoke"), None).await;
    assert_eq!(s, 200);
    let engine = kw.running.as_ref().unwrap().engine.clone();
    wait_for("the usage flush", async || {
        !engine.store().usage(Some(&a), None, 0).await.unwrap().is_empty()
    })
    .await;
    kw.clock.advance(time::Duration::days(3 * 366));
    // A recent event, which stays.
    kw.key("dogs", &[], json!({})).await;
    let cfg = config_for(kw.dir.path(), &store_url, "");

    let (code, out, err) = keyward(&cfg, &["retention", "run", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let dry: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["keys_purged"], 1, "{dry}");
    assert!(dry["usage_rows"].as_u64().unwrap() >= 1, "{dry}");
    assert!(dry["audit_events"].as_u64().unwrap() >= 4, "{dry}");
    assert_eq!(dry["checkpoints_written"], 0);
    let (code, out2, _) = keyward(&cfg, &["retention", "run", "--dry-run", "--json"]);
    assert_eq!(code, 0);
    let again: Value = serde_json::from_str(out2.trim()).unwrap();
    for k in ["usage_rows", "audit_events", "keys_purged", "tombstones_deleted"] {
        assert_eq!(again[k], dry[k], "a dry run changes nothing: {k}");
    }
    let (code, out, _) = keyward(&cfg, &["retention", "run", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("would go") && out.contains("nothing changed"), "{out}");

    let (code, out, err) = keyward(&cfg, &["retention", "run", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let done: Value = serde_json::from_str(out.trim()).unwrap();
    for k in ["usage_rows", "audit_events", "keys_purged", "tombstones_deleted"] {
        assert_eq!(done[k], dry[k], "{k}: {done}");
    }
    assert!(done["checkpoints_written"].as_u64().unwrap() >= 1, "{done}");
    let (_, v) = kw.admin(Method::GET, &format!("/v1/keys/{b}"), None).await;
    assert!(v["purged_at"].is_string(), "{v}");
    let (code, out, _) = keyward(&cfg, &["retention", "run"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 went"), "a second pass has nothing left: {out}");
    let (code, ok, _, reason) = verify_cli(&cfg);
    assert_eq!((code, ok), (0, true), "{reason}");
    kw.stop().await;
}

/// Retention settings: accepted forms and refusals that name the key.
#[test]
fn retention_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db").display().to_string();
    let ok = config_for(
        dir.path(),
        &db,
        "[retention]\nusage = \"30d\"\naudit = \"forever\"\nrevoked_keys = \"12h\"\ntombstones = \"1y\"\n\
         interval = \"10m\"\nbatch_size = 100\nbatch_pause = \"5ms\"\n",
    );
    let (code, out, err) = keyward(&ok, &["retention", "run", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit events: kept forever"), "{out}");
    for (extra, want) in [
        ("[retention]\nusage = \"0s\"\n", "retention must be positive"),
        ("[retention]\naudit = \"soon\"\n", "invalid retention \"soon\""),
        ("[retention]\nrevoked_keys = 90\n", "invalid type"),
        ("[retention]\nbatch_size = 0\n", "retention.batch_size"),
        ("[retention]\nbatch_size = 1000000\n", "retention.batch_size"),
        ("[retention]\ninterval = \"0s\"\n", "a duration must be positive"),
        ("[retention]\nkeep = \"1d\"\n", "unknown field `keep`"),
        ("[audit]\nsink = \"file\"\n", "audit.sink = \"file\" needs audit.path"),
        ("[audit]\nsink = \"syslog\"\n", "unknown variant `syslog`"),
        ("[audit]\npath = \"a.log\"\n", "audit.path is set but audit.sink is not"),
    ] {
        let cfg = config_for(dir.path(), &db, extra);
        let (code, out, err) = keyward(&cfg, &["retention", "run", "--dry-run"]);
        assert_ne!(code, 0, "{extra}: {out}");
        assert!(err.contains(want), "{extra}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A store file of the wrong kind is refused, not overwritten.
    std::fs::write(
        dir.path().join("junk.db"),
        b"not sqlite at all, just bytes, many of them",
    )
    .unwrap();
    let cfg = config_for(dir.path(), &dir.path().join("junk.db").display().to_string(), "");
    let (code, _, err) = keyward(&cfg, &["retention", "run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("store"), "{err}");
    // No pepper: the checkpoints cannot be signed or checked.
    let cfg = config_for(dir.path(), &db, "");
    for args in [&["retention", "run"][..], &["audit", "verify"]] {
        let (code, _, err) = keyward_env(&cfg, args, &[]);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.to_lowercase().contains("pepper"), "{args:?}: {err}");
    }
    // `audit` keeps listing events (flags) and `audit verify` is a subcommand: not both.
    let (code, _, err) = keyward(&cfg, &["audit", "--limit", "5", "verify"]);
    assert_eq!(code, 2, "{err}");
}

/// `[audit] sink = "file"`: every stored event (admin changes and security events alike) as
/// one JSON line, mode 0600, never a key.
#[tokio::test]
async fn the_audit_file_sink_gets_every_event_as_a_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let path = log.clone();
    let mut kw = boot_with(move |c| {
        c.audit.sink = keyward::config::AuditSink::File;
        c.audit.path = Some(path);
    })
    .await;
    let (_, key) = changes(&kw).await;
    let (_, canary) = kw.key("cats", &[], json!({"canary": true})).await;
    problem(
        kw.get("/fact", &[("x-api-key", &canary)]).await,
        401,
        "invalid_credential",
    )
    .await;
    let engine = kw.running.as_ref().unwrap().engine.clone();
    wait_for("the canary event", async || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("security.canary_used")
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let head = engine.store().audit_head().await.unwrap().seq;
    let mut seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "every stored event, once");
    let canary_line = lines.iter().find(|l| l["kind"] == "security.canary_used").unwrap();
    assert_eq!(canary_line["severity"], "high");
    assert!(lines.iter().any(|l| l["kind"] == "key.revoked"));
    for secret in [&key, &canary, &ADMIN_TOKEN.to_owned(), &PEPPER.to_owned()] {
        assert!(!text.contains(secret.as_str()), "a secret in the audit file");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
    }
    kw.stop().await;
}

/// What the load task saw: every churned key, in order, and whether its revocation returned.
#[derive(Default)]
struct Churn {
    keys: Vec<(String, String, bool)>,
}

/// `keyward backup` while requests flow through the gateway and keys are created and revoked;
/// `keyward restore` into a new directory; a server on the copy verifies every key that was
/// live when the backup started and refuses every revoked one; the churned keys show one
/// instant (a prefix of the churn, at most its last key not yet revoked); the chain verifies.
#[tokio::test]
async fn backup_under_load_restore_into_a_new_directory_and_every_key_still_verifies() {
    let kw = boot_with(|c| c.usage.flush_interval = Duration::from_millis(20)).await;
    let mut live = Vec::new();
    let mut revoked = Vec::new();
    for i in 0..30 {
        let (id, key) = kw.key("cats", &["facts:read"], json!({"name": format!("k{i}")})).await;
        if i % 3 == 0 {
            let (s, _) = kw.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None).await;
            assert_eq!(s, 200);
            revoked.push(key);
        } else {
            live.push(key);
        }
    }
    // Load: requests with live, revoked and unknown keys, and a churn of keys.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = Arc::new(Mutex::new(Churn::default()));
    let kw = Arc::new(kw);
    let mut load = tokio::task::JoinSet::new();
    for t in 0..4 {
        let (kw, stop, live) = (kw.clone(), stop.clone(), live.clone());
        load.spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = &live[(n + t) % live.len()];
                assert_eq!(kw.get("/fact", &[("x-api-key", key)]).await.status(), 200);
                n += 1;
            }
            n
        });
    }
    {
        let (kw, stop, churn) = (kw.clone(), stop.clone(), churn.clone());
        load.spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (id, key) = kw.key("churn", &["facts:read"], json!({})).await;
                churn.lock().unwrap().keys.push((id.clone(), key, false));
                let (s, _) = kw.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None).await;
                assert_eq!(s, 200);
                churn.lock().unwrap().keys.last_mut().unwrap().2 = true;
                n += 1;
            }
            n
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out_dir = tempfile::tempdir().unwrap();
    let copy = out_dir.path().join("keyward-backup.db");
    let cfg = config_for(
        kw.dir.path(),
        &kw.db_path().display().to_string(),
        "[secrets]\npepper_file = \"/etc/keyward/keyward.pepper\"\nkek_file = \"/etc/keyward/keyward.kek\"\n",
    );
    let copy_s = copy.display().to_string();
    let (code, out, err) = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || keyward(&cfg, &["backup", &copy_s])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("backup: wrote"), "{out}");
    assert!(
        out.contains("/etc/keyward/keyward.pepper") && out.contains("/etc/keyward/keyward.kek"),
        "{out}"
    );
    assert!(out.contains("without the pepper"), "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    while let Some(n) = load.join_next().await {
        requests += n.unwrap();
    }
    assert!(requests > 50, "requests flowed during the backup: {requests}");
    let churned = std::mem::take(&mut churn.lock().unwrap().keys);
    assert!(!churned.is_empty());

    // Restore while the server runs: refused, the store untouched.
    let (code, _, err) = keyward(&cfg, &["restore", &copy.display().to_string(), "--force"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use"), "{err}");
    assert_eq!(kw.get("/fact", &[("x-api-key", &live[0])]).await.status(), 200);
    let mut kw = Arc::try_unwrap(kw).unwrap_or_else(|_| panic!("the load still holds the server"));
    kw.stop().await;

    // Into a new directory, then a server on it.
    let new_dir = tempfile::tempdir().unwrap();
    let restored = new_dir.path().join("data/keyward.db");
    let new_cfg = config_for(new_dir.path(), &restored.display().to_string(), "");
    let (code, out, err) = keyward(&new_cfg, &["restore", &copy.display().to_string(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["keep_also"], json!(["pepper", "kek"]));
    assert!(r["note"].as_str().unwrap().contains("without the pepper"));
    let (code, ok, _, reason) = verify_cli(&new_cfg);
    assert_eq!((code, ok), (0, true), "{reason}");
    let path = restored.display().to_string();
    let mut back = boot_with(move |c| c.store.url = path).await;
    for key in &live {
        assert_eq!(back.get("/fact", &[("x-api-key", key)]).await.status(), 200);
    }
    for key in &revoked {
        problem(
            back.get("/fact", &[("x-api-key", key)]).await,
            401,
            "revoked_credential",
        )
        .await;
    }
    // The churn: a prefix of the keys exists; all of it revoked but perhaps its last key.
    let mut present = Vec::new();
    for (id, _, _) in &churned {
        let (s, v) = back.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
        present.push((s == 200, v["state"] == "revoked"));
    }
    let n = present.iter().take_while(|(p, _)| *p).count();
    assert!(present[n..].iter().all(|(p, _)| !p), "not a prefix: {present:?}");
    assert!(n > 0, "the backup ran while keys were being churned");
    if n > 0 {
        assert!(present[..n - 1].iter().all(|(_, r)| *r), "{present:?}");
    }
    for (i, (_, key, _)) in churned.iter().enumerate().take(n) {
        let resp = back.get("/fact", &[("x-api-key", key)]).await;
        if present[i].1 {
            problem(resp, 401, "revoked_credential").await;
        } else {
            assert_eq!(resp.status(), 200);
        }
    }
    back.stop().await;
}

/// Bad input to `backup` and `restore`: clear errors, the right exit codes, nothing
/// overwritten; PostgreSQL is sent to pg_dump / pg_restore with the secrets to keep.
#[tokio::test]
async fn backup_and_restore_refuse_what_they_cannot_do() {
    let mut kw = boot_with(|_| {}).await;
    changes(&kw).await;
    let cfg = config_for(kw.dir.path(), &kw.db_path().display().to_string(), "");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("b.db");
    let copy_s = copy.display().to_string();
    let (code, out, err) = keyward(&cfg, &["backup", &copy_s, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["keys"], 2);
    let size = std::fs::metadata(&copy).unwrap().len();
    // Never over an existing file, never the store itself, never into a missing directory.
    for (args, want) in [
        (vec!["backup", copy_s.as_str()], "exists"),
        (vec!["backup", &kw.db_path().display().to_string()], "store itself"),
        (vec!["backup", "/nonexistent/dir/b.db"], "cannot create"),
    ] {
        let (code, _, err) = keyward(&cfg, &args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);
    let (code, _, err) = keyward(&cfg, &["backup"]);
    assert_eq!(code, 2, "{err}");
    kw.stop().await;
    // Restore: junk, an empty file, a directory, a missing file; into an existing store
    // without --force.
    std::fs::write(dir.path().join("junk.db"), vec![0x42; 4096]).unwrap();
    std::fs::write(dir.path().join("empty.db"), b"").unwrap();
    for (file, want) in [
        (dir.path().join("junk.db"), "not a SQLite database"),
        (dir.path().join("empty.db"), "not a keyward store"),
        (dir.path().to_path_buf(), "not a file"),
        (dir.path().join("missing.db"), "No such file"),
        (copy.clone(), "pass --force"),
    ] {
        let (code, _, err) = keyward(&cfg, &["restore", &file.display().to_string()]);
        assert_eq!(code, 1, "{}: {err}", file.display());
        assert!(err.contains(want), "{}: {err}", file.display());
        assert!(!err.contains("panicked"));
    }
    // --force moves the store aside, with nothing lost.
    let (code, out, err) = keyward(&cfg, &["restore", &copy_s, "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kept as"), "{out}");
    let aside: Vec<_> = std::fs::read_dir(kw.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("keyward.db.replaced-"))
        .collect();
    assert_eq!(aside.len(), 1);

    // PostgreSQL: the procedure, exit 2, and the secrets to keep.
    let pg = config_for(dir.path(), "postgres://keyward@127.0.0.1:1/keyward", "");
    for (cmd, tool) in [("backup", "pg_dump"), ("restore", "pg_restore")] {
        let (code, out, err) = keyward(&pg, &[cmd, "x.dump"]);
        assert_eq!(code, 2, "{cmd}: {out}{err}");
        assert!(err.contains(tool), "{cmd}: {err}");
        assert!(
            err.contains("pepper") && err.contains("key-encryption key"),
            "{cmd}: {err}"
        );
        assert!(err.contains("DEPLOYMENT.md"), "{err}");
    }
}

/// The PostgreSQL procedure of docs/DEPLOYMENT.md works: pg_dump of a live store, pg_restore
/// into an empty database, a node on it verifies every key and refuses the revoked one, and the
/// audit chain verifies. Needs `pg_dump` and `pg_restore` on the PATH besides
/// `KEYWARD_TEST_POSTGRES_URL`.
#[tokio::test]
async fn postgres_pg_dump_and_pg_restore_keep_every_key() {
    let Ok(base) = std::env::var("KEYWARD_TEST_POSTGRES_URL") else {
        println!("skipped postgres_pg_dump_and_pg_restore_keep_every_key: KEYWARD_TEST_POSTGRES_URL is not set");
        return;
    };
    let admin = sqlx::PgPool::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("KEYWARD_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {e}"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let (from_db, to_db) = (format!("kw_dump_a_{nanos}"), format!("kw_dump_b_{nanos}"));
    for db in [&from_db, &to_db] {
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
    }
    let db_url = |db: &str| {
        let (head, tail) = base.split_at(base.rfind('/').unwrap());
        let query = tail.find('?').map(|i| &tail[i..]).unwrap_or("");
        format!("{head}/{db}{query}")
    };
    let mut kw = crate::cluster_store::node(db_url(&from_db), |_| {}).await;
    let (_, live) = kw.key("cats", &["facts:read"], json!({})).await;
    let (rid, revoked) = kw.key("cats", &["facts:read"], json!({})).await;
    let (s, _) = kw.admin(Method::POST, &format!("/v1/keys/{rid}/revoke"), None).await;
    assert_eq!(s, 200);
    let dump = tempfile::tempdir().unwrap();
    let file = dump.path().join("keyward.dump");
    let st = Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(&file)
        .arg(db_url(&from_db))
        .status()
        .expect("pg_dump is needed with KEYWARD_TEST_POSTGRES_URL");
    assert!(st.success());
    kw.stop().await;
    let st = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname"])
        .arg(db_url(&to_db))
        .arg(&file)
        .status()
        .expect("pg_restore is needed with KEYWARD_TEST_POSTGRES_URL");
    assert!(st.success());
    let mut back = crate::cluster_store::node(db_url(&to_db), |_| {}).await;
    assert_eq!(back.get("/fact", &[("x-api-key", &live)]).await.status(), 200);
    problem(
        back.get("/fact", &[("x-api-key", &revoked)]).await,
        401,
        "revoked_credential",
    )
    .await;
    let r = back
        .running
        .as_ref()
        .unwrap()
        .engine
        .verify_audit_chain()
        .await
        .unwrap();
    assert!(r.ok && r.events >= 4, "{r:?}");
    // Appends continue the restored chain.
    back.key("dogs", &[], json!({})).await;
    assert!(
        back.running
            .as_ref()
            .unwrap()
            .engine
            .verify_audit_chain()
            .await
            .unwrap()
            .ok
    );
    back.stop().await;
    drop(back);
    for db in [&from_db, &to_db] {
        sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    }
}
