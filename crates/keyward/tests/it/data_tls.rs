//! Issue 23, point 3: TLS to the data stores on the one crypto provider (rustls on aws-lc-rs),
//! with certificates made here: a redis-server with `--tls-port` that requires client
//! certificates, and a PostgreSQL of the test's own (`initdb` + `pg_ctl`, `ssl = on`, only
//! `hostssl` connections accepted). Verified connections work; a wrong CA, a wrong name, a
//! missing client certificate or root file are clear start-up errors; a certificate problem
//! that appears while running is named by `/readyz`.
//!
//! Redis: needs `KEYWARD_TEST_REDIS_SERVER` (see `it::redis_ha`). PostgreSQL: needs
//! `KEYWARD_TEST_PG_BIN`, the directory of `initdb` and `pg_ctl` (e.g.
//! `/usr/lib/postgresql/15/bin`); run as root, the server runs as the `postgres` user
//! (`runuser`). Unset: the test prints a line and passes; set: it runs and fails when it cannot
//! start its server (`.ci/run` sets both).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::harness::*;
use super::redis_ha::{
    free_port, keyward_nodes, redis_server, section, unique_prefix, ClusterTls, RedisCluster, RedisProc, SentinelSet,
};
use super::tls::{ca, Ca};

/// A certificate for `names` (DNS names or IP addresses) signed by `ca`, both usages, as PEM
/// (certificate, key).
fn leaf(ca: &Ca, names: &[&str], cn: &str) -> (String, String) {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(30);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn readyz(kw: &Kw) -> (u16, Value) {
    let r = kw.http.get(format!("{}/readyz", kw.admin)).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// A TLS-only redis-server (`--port 0 --tls-port`) that requires client certificates signed
/// by `client_ca`.
fn tls_redis(bin: &str, dir: &Path, port: u16, cert: &Path, key: &Path, client_ca: &Path) -> RedisProc {
    let args: Vec<String> = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &cert.display().to_string(),
        "--tls-key-file",
        &key.display().to_string(),
        "--tls-ca-cert-file",
        &client_ca.display().to_string(),
        "--tls-auth-clients",
        "yes",
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    RedisProc::start(bin, &args, port, &dir.join(format!("redis-{port}-{n}.log")))
}

/// Redis over TLS: verified with the CA of `redis.ca_file` and a client certificate, limits
/// and revocations work across two nodes; a wrong CA, a wrong name and a missing client
/// certificate are start-up errors naming the TLS problem; a server certificate replaced by one
/// from another CA while running makes `/readyz` answer 503 with the TLS problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_is_verified_and_refused_when_it_should_be() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good_ca = ca("redis test CA");
    let other_ca = ca("some other CA");
    // The certificate names localhost only: 127.0.0.1 is a wrong name.
    let (server_cert, server_key) = leaf(&good_ca, &["localhost"], "redis");
    let (client_cert, client_key) = leaf(&good_ca, &[], "keyward");
    let ca_file = write(d, "ca.pem", &good_ca.pem);
    let other_ca_file = write(d, "other-ca.pem", &other_ca.pem);
    let cert_file = write(d, "redis.pem", &server_cert);
    let key_file = write(d, "redis.key", &server_key);
    let client_cert_file = write(d, "client.pem", &client_cert);
    let client_key_file = write(d, "client.key", &client_key);
    let port = free_port();
    let mut server = tls_redis(&bin, d, port, &cert_file, &key_file, &ca_file);

    let prefix = unique_prefix();
    let mut redis = section(&prefix);
    redis.url = format!("rediss://localhost:{port}/");
    redis.ca_file = Some(ca_file.clone());
    redis.client_cert_file = Some(client_cert_file.clone());
    redis.client_key_file = Some(client_key_file.clone());
    let nodes = keyward_nodes(2, redis.clone(), super::cluster_limits::tokens_on).await;
    let (_, k) = nodes[0].key("cats", &[], json!({"quota": "10/day"})).await;
    let mut admitted = 0;
    for i in 0..20 {
        match nodes[i % 2].get("/echo", &[("x-api-key", &k)]).await.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            s => panic!("status {s}"),
        }
    }
    assert_eq!(admitted, 10, "the quota is shared over TLS");
    let (s, body) = readyz(&nodes[0]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["checks"]["redis"], "up", "{body}");
    super::cluster_limits::revocation_reaches_every_node(&nodes).await;

    // Start-up errors: each names the TLS problem and no secret.
    let refused = |r: keyward::config::RedisSection| async move {
        let e = try_boot_with(|c| c.redis = Some(r))
            .await
            .err()
            .expect("keyward started")
            .to_string();
        assert!(!e.contains("BEGIN"), "{e}");
        e
    };
    let mut wrong_ca = redis.clone();
    wrong_ca.ca_file = Some(other_ca_file.clone());
    let e = refused(wrong_ca).await;
    println!("wrong CA: {e}");
    assert!(e.contains("redis.url: tls: invalid peer certificate"), "{e}");
    assert!(e.contains("UnknownIssuer"), "{e}");

    let mut wrong_name = redis.clone();
    wrong_name.url = format!("rediss://127.0.0.1:{port}/");
    let e = refused(wrong_name).await;
    println!("wrong name: {e}");
    assert!(
        e.contains("tls: invalid peer certificate: certificate not valid for name"),
        "{e}"
    );

    let mut no_client_cert = redis.clone();
    no_client_cert.client_cert_file = None;
    no_client_cert.client_key_file = None;
    let e = refused(no_client_cert).await;
    println!("no client certificate: {e}");
    assert!(e.contains("tls:"), "{e}");

    let mut plain = redis.clone();
    plain.url = format!("redis://localhost:{port}/");
    let e = refused(plain).await;
    assert!(e.contains("apply to rediss:// URLs only"), "{e}");

    let mut garbage_ca = redis.clone();
    garbage_ca.ca_file = Some(write(d, "garbage.pem", "not a certificate"));
    let e = refused(garbage_ca).await;
    assert!(e.contains("redis.ca_file holds no PEM certificate"), "{e}");
    let mut missing = redis.clone();
    missing.client_key_file = Some(d.join("nope.key"));
    let e = refused(missing).await;
    assert!(e.contains("redis.client_key_file: cannot read"), "{e}");

    // While running: the server comes back with a certificate from another CA.
    let (bad_cert, bad_key) = leaf(&other_ca, &["localhost"], "impostor");
    let bad_cert_file = write(d, "impostor.pem", &bad_cert);
    let bad_key_file = write(d, "impostor.key", &bad_key);
    server.kill();
    let _impostor = tls_redis(&bin, d, port, &bad_cert_file, &bad_key_file, &ca_file);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, body) = readyz(&nodes[0]).await;
        if s == 503
            && body["checks"]["redis_error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid peer certificate"))
        {
            println!("readyz with an impostor certificate: {body}");
            assert_eq!(body["down"], json!(["redis"]), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz did not report the certificate problem: {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Meanwhile the routes keep their failure mode (local by default: the node decides alone,
    // never a 5xx): the quota Redis reported used up stays refused, a fresh key is admitted
    // (limit / nodes_hint, from zero).
    assert_eq!(nodes[1].get("/echo", &[("x-api-key", &k)]).await.status(), 429);
    let (_, fresh) = nodes[0].key("cats", &[], json!({"quota": "10/day"})).await;
    assert_eq!(nodes[1].get("/echo", &[("x-api-key", &fresh)]).await.status(), 200);
}

/// Redis Cluster over TLS (`tls-cluster`, `tls-replication`; three masters): keyward verifies
/// every node it is redirected to (the nodes announce 127.0.0.1, which their certificate
/// carries) and presents a client certificate; a quota is exact across two nodes and DPoP
/// claims are shared; a wrong CA is a start-up error naming the TLS problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_over_tls() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let the_ca = ca("cluster CA");
    let (cert, key) = leaf(&the_ca, &["127.0.0.1", "localhost"], "node");
    let tls = ClusterTls {
        ca: write(d, "ca.pem", &the_ca.pem),
        cert: write(d, "node.pem", &cert),
        key: write(d, "node.key", &key),
    };
    let cluster = RedisCluster::start(&bin, 3, 0, Some(&tls));
    let mut redis = section(&unique_prefix());
    redis.cluster_nodes = cluster.seeds();
    redis.ca_file = Some(tls.ca.clone());
    redis.client_cert_file = Some(tls.cert.clone());
    redis.client_key_file = Some(tls.key.clone());
    let nodes = keyward_nodes(2, redis.clone(), |_| {}).await;
    let mut admitted = 0;
    for app in ["a", "b", "c"] {
        let (_, k) = nodes[0].key(app, &[], json!({"quota": "10/day"})).await;
        for i in 0..20 {
            match nodes[i % 2].get("/echo", &[("x-api-key", &k)]).await.status().as_u16() {
                200 => admitted += 1,
                429 => {}
                s => panic!("status {s}"),
            }
        }
    }
    assert_eq!(admitted, 30, "three quotas of 10, exact over TLS");
    let limiter = |n: &Kw| n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
    for i in 0..10 {
        let entry = format!("jkt:tls-{i}");
        assert!(limiter(&nodes[0])
            .first_use(&entry, Duration::from_secs(60))
            .await
            .unwrap());
        assert!(!limiter(&nodes[1])
            .first_use(&entry, Duration::from_secs(60))
            .await
            .unwrap());
    }
    let other = ca("not the cluster's CA");
    let mut wrong = redis.clone();
    wrong.ca_file = Some(write(d, "other.pem", &other.pem));
    let e = try_boot_with(|c| c.redis = Some(wrong))
        .await
        .err()
        .expect("keyward started")
        .to_string();
    println!("cluster, wrong CA: {e}");
    assert!(
        e.contains("redis.cluster_nodes") && e.contains("tls: invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
}

/// Sends `n` requests with `key`, alternating over `nodes`; how many were admitted (anything
/// but 200 or 429 fails the test).
async fn admitted(nodes: &[Kw], key: &str, n: usize) -> u32 {
    let mut ok = 0;
    for i in 0..n {
        match nodes[i % nodes.len()]
            .get("/echo", &[("x-api-key", key)])
            .await
            .status()
            .as_u16()
        {
            200 => ok += 1,
            429 => {}
            s => panic!("status {s}"),
        }
    }
    ok
}

/// Sentinel over TLS: master, replica and three sentinels on TLS ports only (`tls-replication
/// yes`, client certificates required everywhere). keyward asks the sentinels over TLS
/// (`rediss://` sentinel URLs, `redis.ca_file`, a client certificate) and reaches the master
/// they name over TLS too; a quota is exact across two nodes; the master is killed, the
/// sentinels promote the replica and both nodes follow without a restart (the used-up quota
/// survived the failover, a new one is exact again, a revocation travels); a wrong CA is a
/// start-up error naming the TLS problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_over_tls_follows_a_failover() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let the_ca = ca("sentinel CA");
    // Sentinels name the master by address: the certificate carries 127.0.0.1.
    let (cert, key) = leaf(&the_ca, &["127.0.0.1", "localhost"], "node");
    let tls = ClusterTls {
        ca: write(d, "ca.pem", &the_ca.pem),
        cert: write(d, "node.pem", &cert),
        key: write(d, "node.key", &key),
    };
    let mut set = SentinelSet::start(&bin, Some(&tls));
    let prefix = unique_prefix();
    let mut redis = section(&prefix);
    redis.sentinel_nodes = set.urls();
    assert!(redis.sentinel_nodes.iter().all(|u| u.starts_with("rediss://")));
    redis.sentinel_master = Some(SentinelSet::MASTER.into());
    redis.ca_file = Some(tls.ca.clone());
    redis.client_cert_file = Some(tls.cert.clone());
    redis.client_key_file = Some(tls.key.clone());
    let nodes = keyward_nodes(2, redis.clone(), super::cluster_limits::tokens_on).await;

    // A quota shared over TLS, through the master the sentinels named.
    let (_, before) = nodes[0].key("cats", &[], json!({"quota": "10/day"})).await;
    assert_eq!(admitted(&nodes, &before, 20).await, 10, "the quota is shared over TLS");
    let master_keys = set.server_cli(
        set.master.port,
        &["--scan", "--pattern", &format!("kw:{{{prefix}}}:q:*")],
    );
    assert_eq!(
        master_keys.lines().count(),
        1,
        "the state is on the master: {master_keys}"
    );
    // The replica has it too (replication over TLS), before the master is killed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rp = set.replica.port;
    while set
        .server_cli(rp, &["--scan", "--pattern", &format!("kw:{{{prefix}}}:q:*")])
        .lines()
        .count()
        != 1
    {
        assert!(Instant::now() < deadline, "the replica did not receive the quota state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let took = set.fail_over(Duration::from_secs(30)).await;
    println!(
        "sentinels (TLS) promoted the replica {:.2} s after the kill",
        took.as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in &nodes {
        let r = n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
        loop {
            if r.breaker_state() == keyward_engine::limit::breaker::BreakerState::Closed && r.ping().await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "a node did not follow the failover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The used-up quota survived on the promoted replica; a new quota is exact again.
    for n in &nodes {
        assert_eq!(n.get("/echo", &[("x-api-key", &before)]).await.status(), 429);
    }
    let (_, after) = nodes[0].key("cats", &[], json!({"quota": "10/day"})).await;
    assert_eq!(
        admitted(&nodes, &after, 20).await,
        10,
        "exact through the promoted replica"
    );
    let held = set.server_cli(rp, &["--scan", "--pattern", &format!("kw:{{{prefix}}}:q:*")]);
    assert_eq!(held.lines().count(), 2, "both quota states on the new master: {held}");
    super::cluster_limits::revocation_reaches_every_node(&nodes).await;

    // A wrong CA: the sentinels' certificate does not verify.
    let other = ca("not the sentinels' CA");
    let mut wrong = redis.clone();
    wrong.ca_file = Some(write(d, "other.pem", &other.pem));
    let e = try_boot_with(|c| c.redis = Some(wrong))
        .await
        .err()
        .expect("keyward started")
        .to_string();
    println!("sentinel, wrong CA: {e}");
    assert!(!e.contains("BEGIN"), "{e}");
    assert!(
        e.contains("redis.sentinel_nodes") && e.contains("tls: invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
    // Plain redis:// to TLS-only sentinels: no answer, a start-up error too.
    let mut plain = redis.clone();
    plain.sentinel_nodes = plain
        .sentinel_nodes
        .iter()
        .map(|u| u.replace("rediss://", "redis://"))
        .collect();
    plain.ca_file = None;
    plain.client_cert_file = None;
    plain.client_key_file = None;
    let e = try_boot_with(|c| c.redis = Some(plain))
        .await
        .err()
        .expect("keyward started")
        .to_string();
    println!("sentinel, plain to TLS ports: {e}");
    assert!(e.contains("redis.sentinel_nodes"), "{e}");
}

/// A PostgreSQL of the test's own, killed (immediate stop) when dropped.
struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl OwnPostgres {
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> String {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `initdb`, a server certificate, `ssl = on`, TLS-only `pg_hba.conf`, `pg_ctl start`.
    fn start(bin: &Path, cert_pem: &str, key_pem: &str) -> OwnPostgres {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = current_uid() == 0;
        let pg = OwnPostgres {
            bin: bin.to_owned(),
            data: dir.path().join("data"),
            port: free_port(),
            dir,
            as_postgres,
        };
        if as_postgres {
            chown_postgres(pg.dir.path());
        }
        let data = pg.data.display().to_string();
        pg.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
        );
        pg.install_cert(cert_pem, key_pem);
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\n\
             ssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\n",
            pg.port,
            pg.dir.path().display()
        );
        let mut c = std::fs::read_to_string(pg.data.join("postgresql.conf")).unwrap();
        c.push_str(&conf);
        std::fs::write(pg.data.join("postgresql.conf"), c).unwrap();
        std::fs::write(
            pg.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let log = pg.dir.path().join("log").display().to_string();
        pg.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "30", "start"]);
        println!(
            "own PostgreSQL with ssl = on ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        pg
    }

    fn install_cert(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let (crt, key) = (self.data.join("server.crt"), self.data.join("server.key"));
        std::fs::write(&crt, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if self.as_postgres {
            chown_postgres(&crt);
            chown_postgres(&key);
        }
    }

    /// Runs SQL as the superuser over the Unix socket (no TLS needed there).
    fn sql(&self, q: &str) -> String {
        let sock = self.dir.path().display().to_string();
        self.run(
            "psql",
            &[
                "-h",
                &sock,
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-At",
                "-c",
                q,
            ],
        )
    }

    fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

fn chown_postgres(p: &Path) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a postgres user")
    };
    std::os::unix::fs::chown(p, Some(id("-u")), Some(id("-g"))).unwrap();
}

/// PostgreSQL over TLS with `sslmode=verify-full` and `sslrootcert`: keyward works through it
/// (the server refuses every connection without TLS, so it is TLS); a wrong CA, a name the
/// certificate does not carry, a missing root file and `sslmode=disable` are start-up errors;
/// a certificate from another CA that appears while running is named by `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verify_full_is_verified_and_refused_when_it_should_be() {
    let bin = match std::env::var("KEYWARD_TEST_PG_BIN") {
        Ok(b) if !b.is_empty() => PathBuf::from(b),
        _ => {
            println!("skipped: KEYWARD_TEST_PG_BIN is not set");
            return;
        }
    };
    let files = tempfile::tempdir().unwrap();
    let good_ca = ca("postgres test CA");
    let other_ca = ca("another CA");
    let ca_file = write(files.path(), "ca.pem", &good_ca.pem);
    let other_ca_file = write(files.path(), "other.pem", &other_ca.pem);
    // The certificate names the address only: "localhost" is a wrong name.
    let (cert, key) = leaf(&good_ca, &["127.0.0.1"], "db");
    let pg = OwnPostgres::start(&bin, &cert, &key);
    let verify = |root: &Path| format!("sslmode=verify-full&sslrootcert={}", root.display());

    let url = pg.url("127.0.0.1", &verify(&ca_file));
    let kw = boot_with(|c| c.store.url = url.clone()).await;
    let (_, k) = kw.key("cats", &[], json!({})).await;
    assert_eq!(kw.get("/echo", &[("x-api-key", &k)]).await.status(), 200);
    let (s, body) = readyz(&kw).await;
    assert_eq!(s, 200, "{body}");
    let ssl = pg.sql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND application_name = 'keyward'",
    );
    assert!(
        ssl.trim().parse::<u32>().unwrap() >= 1,
        "keyward's connections use TLS: {ssl}"
    );

    let refused = |url: String| async move {
        let e = try_boot_with(|c| {
            c.store.url = url;
            c.store.connect_timeout = Duration::from_secs(3);
        })
        .await
        .err()
        .expect("keyward started")
        .to_string();
        assert!(!e.contains("BEGIN"), "{e}");
        e
    };
    let e = refused(pg.url("127.0.0.1", &verify(&other_ca_file))).await;
    println!("wrong CA: {e}");
    assert!(e.contains("TLS error") && e.contains("UnknownIssuer"), "{e}");
    let e = refused(pg.url("localhost", &verify(&ca_file))).await;
    println!("wrong name: {e}");
    assert!(
        e.contains("TLS error: invalid peer certificate: certificate not valid for name"),
        "{e}"
    );
    let e = refused(pg.url("127.0.0.1", &verify(&files.path().join("missing.pem")))).await;
    println!("missing sslrootcert: {e}");
    assert!(
        e.contains("sslrootcert") && e.contains("missing.pem") && e.contains("not found"),
        "{e}"
    );
    let e = refused(pg.url("127.0.0.1", "sslmode=disable")).await;
    println!("without TLS: {e}");
    assert!(e.contains("database error 28000"), "{e}");

    // While running: the server's certificate is replaced by one from another CA, and
    // keyward's connections are cut; the pool cannot reconnect, and /readyz says why.
    let (bad_cert, bad_key) = leaf(&other_ca, &["127.0.0.1"], "impostor");
    pg.install_cert(&bad_cert, &bad_key);
    pg.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'keyward'");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, body) = readyz(&kw).await;
        if s == 503
            && body["checks"]["store_error"]
                .as_str()
                .is_some_and(|e| e.contains("invalid peer certificate"))
        {
            println!("readyz with an impostor certificate: {body}");
            assert_eq!(body["down"], json!(["store"]), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz did not report the certificate problem: {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A known key is served from the cache while the store cannot be reached (unless the
    // change channel came back in between and dropped the caches, as designed): never a 5xx
    // other than the documented 503 store_unavailable.
    let r = kw.get("/echo", &[("x-api-key", &k)]).await;
    if r.status() != 200 {
        problem(r, 503, "store_unavailable").await;
    }
}
