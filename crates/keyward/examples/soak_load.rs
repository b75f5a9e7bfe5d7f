//! Mixed, long-running load for the soak test (issue 9, point 4): `bench/soak.sh` runs it against
//! a real keyward gateway for ten minutes while sampling the server's RSS and open descriptors.
//!
//! It makes its own objects through the admin API (an app, an unlimited key, a key limited to
//! 20/s, a key with a small quota, an OAuth client), then runs `--connections` tasks, each on its
//! own keep-alive connection, cycling through this mix (per 20 requests):
//!
//! * 7 × `GET` with the unlimited key (`x-api-key`): 200;
//! * 2 × `GET` with the rate-limited key: 200 or 429 (`rate_limited`), and 1 × with the quota key:
//!   200 or 429 (`quota_exhausted`) — the limits trip all the time;
//! * 1 × `GET` with an unknown, well-formed key, and 1 × with a fresh random one (key stuffing:
//!   the negative cache must stay bounded): 401;
//! * 2 × `GET` with a Bearer access token (a new token every 100 uses: `POST /oauth/token`);
//! * 4 × `GET` with a DPoP-bound token and a fresh ES256 proof (new token every 100 uses), and
//!   1 × a replayed proof: 401;
//! * 1 × a new connection (the old one is dropped: connection churn).
//!
//! One more task churns credentials on its own connections: creates a key, uses it (200), revokes
//! it, uses it again (401 at once); fetches a token, uses it, revokes it (`/oauth/revoke`), uses it
//! again (401).
//!
//! Every response is checked against what it must be; anything else counts as `unexpected` and
//! the run exits 1. One line of counters is printed every `--report-every` seconds and a
//! `key: value` summary at the end (parsed by bench/soak.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod load_common;

use load_common::{arg, ath, http1, tcp, Prover};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::{json, Value};

/// A keep-alive HTTP/1.1 connection that reconnects when the server closes it.
struct Conn {
    addr: String,
    send: Option<SendRequest<Full<Bytes>>>,
    connects: u64,
}

impl Conn {
    fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            send: None,
            connects: 0,
        }
    }

    async fn connect(&mut self) -> SendRequest<Full<Bytes>> {
        self.connects += 1;
        http1(tcp(&self.addr).await).await
    }

    fn drop_connection(&mut self) {
        self.send = None;
    }

    /// Sends one request; `None` when the connection failed (counted by the caller).
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Option<(u16, Bytes)> {
        for _attempt in 0..2 {
            let mut send = match self.send.take() {
                Some(s) => s,
                None => self.connect().await,
            };
            if send.ready().await.is_err() {
                continue;
            }
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", self.addr.as_str());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
                .unwrap();
            match send.send_request(req).await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let keep = !r
                        .headers()
                        .get("connection")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    let Ok(b) = r.into_body().collect().await else {
                        return None;
                    };
                    if keep {
                        self.send = Some(send);
                    }
                    return Some((status, b.to_bytes()));
                }
                Err(_) => continue,
            }
        }
        None
    }
}

/// Outcome counters: `name -> count`; `unexpected:*` entries fail the run.
#[derive(Default)]
struct Stats(Mutex<BTreeMap<String, u64>>);

impl Stats {
    fn add(&self, name: &str, n: u64) {
        *self.0.lock().unwrap().entry(name.to_owned()).or_default() += n;
    }
    fn merge(&self, local: &mut BTreeMap<String, u64>) {
        let mut g = self.0.lock().unwrap();
        for (k, v) in std::mem::take(local) {
            *g.entry(k).or_default() += v;
        }
    }
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}

fn count(local: &mut BTreeMap<String, u64>, what: &str, got: Option<u16>, ok: &[u16]) {
    let name = match got {
        Some(s) if ok.contains(&s) => format!("{what}:{s}"),
        Some(s) => format!("unexpected:{what}:{s}"),
        None => format!("unexpected:{what}:connection"),
    };
    *local.entry(name).or_default() += 1;
}

struct Setup {
    gw: String,
    issuer: String,
    path: String,
    key: String,
    limited_key: String,
    quota_key: String,
    unknown_key: String,
    client_id: String,
    client_secret: String,
    admin: String,
    admin_token: String,
}

async fn admin_call(c: &mut Conn, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = body.to_string();
    let (s, b) = c
        .call(
            method,
            path,
            &[("authorization", &auth), ("content-type", "application/json")],
            Some(&body),
        )
        .await
        .expect("admin API reachable");
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn token(c: &mut Conn, s: &Setup, proof: Option<String>) -> Option<(u16, String)> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.client_id, s.client_secret));
    let basic = format!("Basic {basic}");
    let mut h = vec![
        ("authorization", basic.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    if let Some(p) = &proof {
        h.push(("dpop", p.as_str()));
    }
    let (st, b) = c
        .call("POST", "/oauth/token", &h, Some("grant_type=client_credentials"))
        .await?;
    let t = serde_json::from_slice::<Value>(&b)
        .ok()
        .and_then(|v| v["access_token"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Some((st, t))
}

async fn worker(s: Arc<Setup>, stats: Arc<Stats>, stop: Arc<AtomicBool>) -> u64 {
    let mut c = Conn::new(&s.gw);
    let prover = Prover::new();
    let htu = format!("{}{}", s.issuer, s.path);
    let token_htu = format!("{}/oauth/token", s.issuer);
    let mut local = BTreeMap::new();
    let (mut bearer, mut bearer_uses) = (String::new(), u64::MAX);
    let (mut dpop, mut dpop_ath, mut dpop_uses) = (String::new(), String::new(), u64::MAX);
    let mut i: u64 = 0;
    let mut last_flush = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let slot = i % 20;
        i += 1;
        match slot {
            0..=6 => {
                let r = c.call("GET", &s.path, &[("x-api-key", &s.key)], None).await;
                count(&mut local, "key", r.map(|r| r.0), &[200]);
            }
            7 | 8 => {
                let r = c.call("GET", &s.path, &[("x-api-key", &s.limited_key)], None).await;
                count(&mut local, "rate_limited_key", r.map(|r| r.0), &[200, 429]);
            }
            9 => {
                let r = c.call("GET", &s.path, &[("x-api-key", &s.quota_key)], None).await;
                count(&mut local, "quota_key", r.map(|r| r.0), &[200, 429]);
            }
            10 => {
                let r = c.call("GET", &s.path, &[("x-api-key", &s.unknown_key)], None).await;
                count(&mut local, "unknown_key", r.map(|r| r.0), &[401]);
            }
            11 => {
                // A fresh unknown key every time (key stuffing): the negative cache must stay bounded.
                let k = keyward_core::KeyFormat::default()
                    .generate(keyward_core::KeyEnv::Live)
                    .unwrap();
                let r = c.call("GET", &s.path, &[("x-api-key", k.expose())], None).await;
                count(&mut local, "random_unknown_key", r.map(|r| r.0), &[401]);
            }
            12 | 13 => {
                if bearer_uses >= 100 {
                    let r = token(&mut c, &s, None).await;
                    count(&mut local, "token", r.as_ref().map(|r| r.0), &[200]);
                    bearer = r.map(|r| r.1).unwrap_or_default();
                    bearer_uses = 0;
                }
                bearer_uses += 1;
                let auth = format!("Bearer {bearer}");
                let r = c.call("GET", &s.path, &[("authorization", &auth)], None).await;
                count(&mut local, "bearer", r.map(|r| r.0), &[200]);
            }
            14..=17 => {
                if dpop_uses >= 100 {
                    let r = token(&mut c, &s, Some(prover.proof("POST", &token_htu, None))).await;
                    count(&mut local, "dpop_token", r.as_ref().map(|r| r.0), &[200]);
                    dpop = r.map(|r| r.1).unwrap_or_default();
                    dpop_ath = ath(&dpop);
                    dpop_uses = 0;
                }
                dpop_uses += 1;
                let auth = format!("DPoP {dpop}");
                let proof = prover.proof("GET", &htu, Some(&dpop_ath));
                let r = c
                    .call("GET", &s.path, &[("authorization", &auth), ("dpop", &proof)], None)
                    .await;
                count(&mut local, "dpop", r.map(|r| r.0), &[200]);
                if slot == 17 {
                    // The same proof again: a replay.
                    let r = c
                        .call("GET", &s.path, &[("authorization", &auth), ("dpop", &proof)], None)
                        .await;
                    count(&mut local, "dpop_replay", r.map(|r| r.0), &[401]);
                }
            }
            18 => c.drop_connection(),
            _ => {
                let r = c.call("GET", &s.path, &[("x-api-key", &s.key)], None).await;
                count(&mut local, "key", r.map(|r| r.0), &[200]);
            }
        }
        if last_flush.elapsed() > Duration::from_millis(500) {
            stats.merge(&mut local);
            last_flush = Instant::now();
        }
    }
    stats.merge(&mut local);
    c.connects
}

/// Creates, uses and revokes keys and tokens, one after the other, for the whole run.
async fn churn(s: Arc<Setup>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut admin = Conn::new(&s.admin);
    let mut gw = Conn::new(&s.gw);
    let mut local = BTreeMap::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (st, k) = admin_call(
            &mut admin,
            &s.admin_token,
            "POST",
            "/v1/keys",
            json!({"app": "soak", "name": format!("churn-{n}"), "scopes": ["facts:read"]}),
        )
        .await;
        count(&mut local, "churn_create", Some(st), &[201]);
        let (Some(id), Some(key)) = (k["id"].as_str(), k["key"].as_str()) else {
            continue;
        };
        let r = gw.call("GET", &s.path, &[("x-api-key", key)], None).await;
        count(&mut local, "churn_use", r.map(|r| r.0), &[200]);
        let (st, _) = admin_call(
            &mut admin,
            &s.admin_token,
            "POST",
            &format!("/v1/keys/{id}/revoke"),
            json!({"reason": "soak"}),
        )
        .await;
        count(&mut local, "churn_revoke", Some(st), &[200]);
        let r = gw.call("GET", &s.path, &[("x-api-key", key)], None).await;
        count(&mut local, "churn_use_revoked", r.map(|r| r.0), &[401]);

        let r = token(&mut gw, &s, None).await;
        count(&mut local, "churn_token", r.as_ref().map(|r| r.0), &[200]);
        if let Some((200, t)) = r {
            let auth = format!("Bearer {t}");
            let r = gw.call("GET", &s.path, &[("authorization", &auth)], None).await;
            count(&mut local, "churn_token_use", r.map(|r| r.0), &[200]);
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", s.client_id, s.client_secret));
            let basic = format!("Basic {basic}");
            let body = format!("token={t}");
            let r = gw
                .call(
                    "POST",
                    "/oauth/revoke",
                    &[
                        ("authorization", &basic),
                        ("content-type", "application/x-www-form-urlencoded"),
                    ],
                    Some(&body),
                )
                .await;
            count(&mut local, "churn_token_revoke", r.map(|r| r.0), &[200]);
            let r = gw.call("GET", &s.path, &[("authorization", &auth)], None).await;
            count(&mut local, "churn_token_use_revoked", r.map(|r| r.0), &[401]);
        }
        stats.merge(&mut local);
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gw_url = arg(&args, "--base", None);
    let issuer = arg(&args, "--issuer", Some(&gw_url));
    let admin_url = arg(&args, "--admin", None);
    let path = arg(&args, "--path", Some("/fact"));
    let conns: usize = arg(&args, "--connections", Some("16")).parse().unwrap();
    let secs: f64 = arg(&args, "--duration", Some("600")).parse().unwrap();
    let every: f64 = arg(&args, "--report-every", Some("10")).parse().unwrap();
    let admin_token = std::env::var("KEYWARD_ADMIN_TOKEN").expect("KEYWARD_ADMIN_TOKEN");
    let strip = |u: &str| {
        u.strip_prefix("http://")
            .expect("http://HOST:PORT")
            .trim_end_matches('/')
            .to_owned()
    };
    let (gw, admin) = (strip(&gw_url), strip(&admin_url));

    // Objects of the run.
    let mut a = Conn::new(&admin);
    let (st, _) = admin_call(&mut a, &admin_token, "POST", "/v1/apps", json!({"name": "soak"})).await;
    assert_eq!(st, 201, "create app");
    let mut mk = async |body: Value| -> String {
        let (st, k) = admin_call(&mut a, &admin_token, "POST", "/v1/keys", body).await;
        assert_eq!(st, 201, "create key: {k}");
        k["key"].as_str().unwrap().to_owned()
    };
    let key = mk(json!({"app": "soak", "name": "plain", "scopes": ["facts:read"]})).await;
    let limited_key =
        mk(json!({"app": "soak", "name": "limited", "scopes": ["facts:read"], "rate": {"limit": "20/s"}})).await;
    let quota_key = mk(json!({"app": "soak", "name": "quota", "scopes": ["facts:read"], "quota": "2000/day"})).await;
    // A well-formed key (valid checksum) that was never issued: it reaches the store lookup.
    let unknown_key = keyward_core::KeyFormat::default()
        .generate(keyward_core::KeyEnv::Live)
        .unwrap()
        .expose()
        .to_owned();
    let (st, c) = admin_call(
        &mut a,
        &admin_token,
        "POST",
        "/v1/clients",
        json!({"app": "soak", "scopes": ["facts:read"], "token_ttl": "2m"}),
    )
    .await;
    assert_eq!(st, 201, "create client: {c}");
    let setup = Arc::new(Setup {
        gw,
        issuer,
        path,
        key,
        limited_key,
        quota_key,
        unknown_key,
        client_id: c["client_id"].as_str().unwrap().to_owned(),
        client_secret: c["client_secret"].as_str().unwrap().to_owned(),
        admin,
        admin_token,
    });

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(worker(setup.clone(), stats.clone(), stop.clone())));
    }
    let churner = tokio::spawn(churn(setup.clone(), stats.clone(), stop.clone()));
    let deadline = start + Duration::from_secs_f64(secs);
    let mut previous = 0u64;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs_f64(every))).await;
        let snap = stats.snapshot();
        let total: u64 = snap.values().sum();
        let unexpected: u64 = snap
            .iter()
            .filter(|(k, _)| k.starts_with("unexpected:"))
            .map(|(_, v)| v)
            .sum();
        eprintln!(
            "[soak_load] t={:>5.0}s requests={total} (+{}/s) unexpected={unexpected} 429s={} churned_keys={}",
            start.elapsed().as_secs_f64(),
            (total - previous) as f64 / every,
            snap.get("rate_limited_key:429").unwrap_or(&0) + snap.get("quota_key:429").unwrap_or(&0),
            snap.get("churn_revoke:200").unwrap_or(&0),
        );
        previous = total;
    }
    stop.store(true, Ordering::Relaxed);
    let mut connects = 0;
    for t in tasks {
        connects += t.await.unwrap();
    }
    churner.await.unwrap();
    stats.add("connections_opened", connects);
    let snap = stats.snapshot();
    let elapsed = start.elapsed().as_secs_f64();
    let total: u64 = snap
        .iter()
        .filter(|(k, _)| k.as_str() != "connections_opened")
        .map(|(_, v)| v)
        .sum();
    let unexpected: u64 = snap
        .iter()
        .filter(|(k, _)| k.starts_with("unexpected:"))
        .map(|(_, v)| v)
        .sum();
    println!("duration_s: {elapsed:.1}");
    println!("requests: {total}");
    println!("rps: {:.1}", total as f64 / elapsed);
    println!("unexpected: {unexpected}");
    for (k, v) in &snap {
        println!("{k}: {v}");
    }
    if unexpected > 0 {
        std::process::exit(1);
    }
}
