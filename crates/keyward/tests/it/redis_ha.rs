//! Issue 23: keyward past one Redis — a real Redis Cluster (three masters, three replicas, made
//! by `redis-cli --cluster create`) and real sentinels (`redis-server --sentinel`), started by
//! the tests from the redis-server binary on free loopback ports in temporary directories.
//!
//! Needs `KEYWARD_TEST_REDIS_SERVER` (the redis-server binary, e.g. `/usr/bin/redis-server`;
//! `redis-cli` is taken from the same directory): unset, each test prints a line and passes;
//! set, the tests run and fail when the servers cannot be started (`.ci/run` sets it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::config::{LimiterFailure, RedisSection};
use keyward_engine::limit::breaker::BreakerState;
use keyward_engine::limit::topology::key_slot;
use keyward_engine::limit::LimitKey;
use serde_json::json;

use super::harness::*;

/// The redis-server binary, when the tests that start their own servers are on.
pub(super) fn redis_server() -> Option<String> {
    match std::env::var("KEYWARD_TEST_REDIS_SERVER") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            println!("skipped: KEYWARD_TEST_REDIS_SERVER is not set");
            None
        }
    }
}

/// `redis-cli` next to `server` (or on the PATH when `server` is a bare name).
fn redis_cli(server: &str) -> String {
    match Path::new(server).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("redis-cli").display().to_string(),
        _ => "redis-cli".into(),
    }
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(super) fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "ha-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// One redis-server (or sentinel) of a test, killed when dropped.
pub(super) struct RedisProc {
    pub port: u16,
    child: Option<Child>,
}

impl RedisProc {
    /// Starts `bin args…` and waits until `port` accepts connections.
    pub(super) fn start(bin: &str, args: &[String], port: u16, log: &Path) -> RedisProc {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (KEYWARD_TEST_REDIS_SERVER): {e}"));
        let mut p = RedisProc {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{bin} exited ({status}) before listening on {port}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "{bin} did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// SIGKILL: the server is gone at once, with whatever it had not replicated.
    pub(super) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli [TLS options] -p port args…` (`cli[0]` is the program, the rest its options),
/// its standard output.
fn cli(cli: &[String], port: u16, args: &[&str]) -> String {
    let out = Command::new(&cli[0])
        .args(&cli[1..])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli[0]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// TLS for a test cluster: the CA, and one certificate (for 127.0.0.1) that every node uses as
/// server and as client (bus and replication over TLS too), redis-cli as well.
pub(super) struct ClusterTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A Redis Cluster of `masters` masters with one replica each.
pub(super) struct RedisCluster {
    pub nodes: Vec<RedisProc>,
    cli: Vec<String>,
    tls: bool,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// `masters` masters, each with `replicas` replicas (0 or 1), over TLS when `tls` is given.
    pub(super) fn start(bin: &str, masters: usize, replicas: usize, tls: Option<&ClusterTls>) -> RedisCluster {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let mut cli_cmd = vec![redis_cli(bin)];
        let mut tls_args: Vec<String> = Vec::new();
        if let Some(t) = tls {
            let (ca, cert, key) = (
                t.ca.display().to_string(),
                t.cert.display().to_string(),
                t.key.display().to_string(),
            );
            cli_cmd.extend(["--tls", "--cacert", &ca, "--cert", &cert, "--key", &key].map(String::from));
            tls_args.extend(
                [
                    "--tls-cert-file",
                    &cert,
                    "--tls-key-file",
                    &key,
                    "--tls-ca-cert-file",
                    &ca,
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                ]
                .map(String::from),
            );
        }
        let mut nodes = Vec::new();
        for i in 0..masters * (1 + replicas) {
            let (port, bus) = (free_port(), free_port());
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir(&d).unwrap();
            let (plain, tls_port) = if tls.is_some() {
                ("0".to_owned(), port.to_string())
            } else {
                (port.to_string(), "0".to_owned())
            };
            let mut args: Vec<String> = [
                "--port",
                &plain,
                "--tls-port",
                &tls_port,
                "--cluster-port",
                &bus.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                // Failure detection in about a second (the default is 15 s).
                "--cluster-node-timeout",
                "1000",
                "--dir",
                &d.display().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                // Replicas sync at once (the default waits 5 s for more replicas to join).
                "--repl-diskless-sync-delay",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(tls_args.iter().cloned());
            nodes.push(RedisProc::start(bin, &args, port, &d.join("log")));
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new(&cli_cmd[0])
            .args(&cli_cmd[1..])
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli_cmd[0]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = RedisCluster {
            nodes,
            cli: cli_cmd,
            tls: tls.is_some(),
            _dir: dir,
        };
        // Every node sees the cluster as ok, every replica is in sync.
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &c.nodes {
            loop {
                let info = cli(&c.cli, n.port, &["cluster", "info"]);
                let repl = cli(&c.cli, n.port, &["info", "replication"]);
                if info.contains("cluster_state:ok")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
                {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not settle: {info} {repl}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        println!(
            "redis cluster{}: {masters} masters + {} replicas ready in {:.1} s",
            if c.tls { " over TLS" } else { "" },
            masters * replicas,
            started.elapsed().as_secs_f64()
        );
        c
    }

    pub(super) fn seeds(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://127.0.0.1:{}", n.port))
            .collect()
    }

    fn live(&self) -> impl Iterator<Item = &RedisProc> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// Port of the master serving `slot`, by `CLUSTER NODES` as a live node sees it.
    pub(super) fn master_of(&self, slot: u16) -> u16 {
        let asker = self.live().next().unwrap().port;
        for line in cli(&self.cli, asker, &["cluster", "nodes"]).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            for range in &f[8..] {
                let (a, b) = match range.split_once('-') {
                    Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
                    None => (range.parse::<u16>(), range.parse::<u16>()),
                };
                if let (Ok(a), Ok(b)) = (a, b) {
                    if (a..=b).contains(&slot) {
                        return port;
                    }
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// The replica of the master on `port`.
    pub(super) fn replica_of(&self, port: u16) -> u16 {
        let asker = self.live().next().unwrap().port;
        let nodes = cli(&self.cli, asker, &["cluster", "nodes"]);
        let id = nodes
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.starts_with(&format!("127.0.0.1:{port}@")))
            })
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_owned();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 3 && f[2].contains("slave") && f[3] == id {
                return f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            }
        }
        panic!("no replica of {port}");
    }

    /// How many keys of `pattern` each live master holds.
    pub(super) fn keys_per_master(&self, pattern: &str) -> BTreeMap<u16, usize> {
        let mut out = BTreeMap::new();
        for n in self.live() {
            if !cli(&self.cli, n.port, &["role"]).starts_with("master") {
                continue;
            }
            let keys = cli(&self.cli, n.port, &["--scan", "--pattern", pattern]);
            out.insert(n.port, keys.lines().filter(|l| !l.is_empty()).count());
        }
        out
    }

    pub(super) fn kill(&mut self, port: u16) {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap().kill();
    }

    /// Waits until the node on `port` is a master serving slots (a replica promoted).
    pub(super) fn wait_master(&self, port: u16, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let role = cli(&self.cli, port, &["role"]);
            let info = cli(&self.cli, port, &["cluster", "info"]);
            if role.starts_with("master") && info.contains("cluster_state:ok") {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "{port} was not promoted: {role} {info}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One master, one replica and three sentinels (`redis-server --sentinel`, quorum 2, master
/// down after 1 s) watching it as `kwmaster`; everything over TLS when `tls` is given (TLS
/// ports only, `tls-replication yes`: replication, sentinel-to-server and sentinel-to-sentinel
/// links are TLS too; every process presents `tls.cert`, as server and as client).
pub(super) struct SentinelSet {
    pub master: RedisProc,
    pub replica: RedisProc,
    pub sentinels: Vec<RedisProc>,
    cli: Vec<String>,
    tls: bool,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub(super) const MASTER: &'static str = "kwmaster";

    pub(super) fn start(bin: &str, tls: Option<&ClusterTls>) -> SentinelSet {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let mut cli_cmd = vec![redis_cli(bin)];
        // Lines of a configuration file (the sentinels') and the same as options (the servers').
        let mut tls_conf: Vec<(String, String)> = Vec::new();
        if let Some(t) = tls {
            let (ca, cert, key) = (
                t.ca.display().to_string(),
                t.cert.display().to_string(),
                t.key.display().to_string(),
            );
            cli_cmd.extend(["--tls", "--cacert", &ca, "--cert", &cert, "--key", &key].map(String::from));
            tls_conf = vec![
                ("tls-cert-file".into(), cert),
                ("tls-key-file".into(), key),
                ("tls-ca-cert-file".into(), ca),
                ("tls-replication".into(), "yes".into()),
            ];
        }
        let ports = |port: u16| -> [(String, String); 2] {
            if tls.is_some() {
                [("port".into(), "0".into()), ("tls-port".into(), port.to_string())]
            } else {
                [("port".into(), port.to_string()), ("tls-port".into(), "0".into())]
            }
        };
        let server = |port: u16, name: &str, replica_of: Option<u16>| -> RedisProc {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            let mut args: Vec<String> = Vec::new();
            for (k, v) in ports(port).iter().chain(tls_conf.iter()) {
                args.extend([format!("--{k}"), v.clone()]);
            }
            args.extend(
                [
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    &d.display().to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .map(String::from),
            );
            if let Some(m) = replica_of {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), m.to_string()]);
            }
            RedisProc::start(bin, &args, port, &dir.path().join(format!("{name}.log")))
        };
        let (mp, rp) = (free_port(), free_port());
        let master = server(mp, "master", None);
        let replica = server(rp, "replica", Some(mp));
        // The replica in sync before anything happens (a replica that has not finished its
        // first sync would be promoted empty: everything consumed so far would be forgotten).
        while !cli(&cli_cmd, rp, &["info", "replication"]).contains("master_link_status:up") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the replica did not sync: {}",
                std::fs::read_to_string(dir.path().join("replica.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel{i}.conf"));
            let mut text = String::new();
            for (k, v) in ports(port).iter().chain(tls_conf.iter()) {
                text.push_str(&format!("{k} {v}\n"));
            }
            let m = Self::MASTER;
            text.push_str(&format!(
                "bind 127.0.0.1\ndir {}\nsentinel monitor {m} 127.0.0.1 {mp} 2\n\
                 sentinel down-after-milliseconds {m} 1000\nsentinel failover-timeout {m} 5000\n\
                 sentinel parallel-syncs {m} 1\n",
                dir.path().display()
            ));
            std::fs::write(&conf, text).unwrap();
            let args = vec![conf.display().to_string(), "--sentinel".into()];
            sentinels.push(RedisProc::start(
                bin,
                &args,
                port,
                &dir.path().join(format!("sentinel{i}.log")),
            ));
        }
        let set = SentinelSet {
            master,
            replica,
            sentinels,
            cli: cli_cmd,
            tls: tls.is_some(),
            _dir: dir,
        };
        // The sentinels know each other and the replica before anything fails.
        loop {
            let m = set.sentinel_cli(0, &["sentinel", "master", Self::MASTER]);
            let lines: Vec<&str> = m.lines().collect();
            let field = |k: &str| {
                lines
                    .iter()
                    .position(|l| *l == k)
                    .and_then(|i| lines.get(i + 1))
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            };
            if field("num-other-sentinels") == 2 && field("num-slaves") == 1 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the sentinels did not settle: {m}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "master + replica + 3 sentinels{} settled in {:.1} s",
            if set.tls { " over TLS" } else { "" },
            started.elapsed().as_secs_f64()
        );
        set
    }

    /// The sentinels as `redis.sentinel_nodes`.
    pub(super) fn urls(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        self.sentinels
            .iter()
            .map(|s| format!("{scheme}://127.0.0.1:{}", s.port))
            .collect()
    }

    /// `redis-cli` against sentinel `i`.
    pub(super) fn sentinel_cli(&self, i: usize, args: &[&str]) -> String {
        cli(&self.cli, self.sentinels[i].port, args)
    }

    /// `redis-cli` against the server on `port`.
    pub(super) fn server_cli(&self, port: u16, args: &[&str]) -> String {
        cli(&self.cli, port, args)
    }

    /// Kills the master; waits until a sentinel names the replica as the master. Returns the
    /// time that took.
    pub(super) async fn fail_over(&mut self, within: Duration) -> Duration {
        self.master.kill();
        let killed = Instant::now();
        let replica = self.replica.port.to_string();
        loop {
            let addr = self.sentinel_cli(1, &["sentinel", "get-master-addr-by-name", Self::MASTER]);
            if addr.lines().nth(1) == Some(replica.as_str()) {
                return killed.elapsed();
            }
            assert!(killed.elapsed() < within, "the sentinels did not fail over: {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `[redis]` section of the tests, with bounds generous enough for debug builds on a
/// loaded two-core machine: several nodes and their load share one process, and an answer later
/// than `timeout` is decided by the route's failure mode, which is not what the tests that count
/// exact admissions measure (see `it::cluster_limits::section`). The tests that kill a server
/// mid-load set their own, shorter timeout ([`FAILOVER_TIMEOUT`]).
pub(super) fn section(prefix: &str) -> RedisSection {
    RedisSection {
        prefix: prefix.into(),
        timeout: Duration::from_secs(2),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(300),
        nodes_hint: 2,
        ..RedisSection::default()
    }
}

/// `redis.timeout` of the tests that kill a server mid-load and tally each failure mode.
const FAILOVER_TIMEOUT: Duration = Duration::from_millis(300);

/// `n` keyward nodes sharing one SQLite file and the given Redis, the upstream allowed 10 s.
pub(super) async fn keyward_nodes(
    n: usize,
    redis: RedisSection,
    tweak: impl Fn(&mut keyward::config::Config),
) -> Vec<Kw> {
    let a = boot_with(|c| {
        c.redis = Some(redis.clone());
        // These tests tally statuses: the upstream's speed on a loaded machine is not theirs
        // (the harness's 500 ms answered a 504 once).
        c.gateway.upstream_timeout = Duration::from_secs(10);
        tweak(c);
    })
    .await;
    let db = a.db_path().display().to_string();
    let mut nodes = vec![a];
    for _ in 1..n {
        nodes.push(
            boot_with(|c| {
                c.store.url = db.clone();
                c.redis = Some(redis.clone());
                c.gateway.upstream_timeout = Duration::from_secs(10);
                tweak(c);
            })
            .await,
        );
    }
    nodes
}

/// Creates an app; returns its id.
async fn app(kw: &Kw, name: &str) -> String {
    let (s, v) = kw
        .admin(reqwest::Method::POST, "/v1/apps", Some(json!({"name": name})))
        .await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// The Redis Cluster slot of an app's limits (`kw:{<prefix>:<group>}`): what keyward computes.
fn app_slot(prefix: &str, app_id: &str) -> u16 {
    let group = LimitKey::stable(&["app-group", app_id]);
    key_slot(format!("{prefix}:{:016x}", group.value()).as_bytes())
}

/// Sends `per_key` requests for each key, `workers` at a time, round-robin over the nodes;
/// returns (admitted, refused) per key. Any other status fails the test.
async fn offer(nodes: &Arc<Vec<Kw>>, path: &str, keys: &[String], per_key: usize, workers: usize) -> Vec<(u32, u32)> {
    let jobs: Arc<Vec<(usize, String)>> =
        Arc::new((0..per_key).flat_map(|_| keys.iter().cloned().enumerate()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (nodes, jobs, next, path) = (nodes.clone(), jobs.clone(), next.clone(), path.to_owned());
        let n_keys = keys.len();
        handles.push(tokio::spawn(async move {
            let mut tally = vec![(0u32, 0u32); n_keys];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((k, key)) = jobs.get(i) else {
                    return tally;
                };
                match nodes[i % nodes.len()]
                    .get(&path, &[("x-api-key", key)])
                    .await
                    .status()
                    .as_u16()
                {
                    200 => tally[*k].0 += 1,
                    429 => tally[*k].1 += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
        }));
    }
    let mut total = vec![(0u32, 0u32); keys.len()];
    for h in handles {
        for (t, (a, r)) in total.iter_mut().zip(h.await.unwrap()) {
            t.0 += a;
            t.1 += r;
        }
    }
    total
}

/// Limits are exact across two keyward nodes on a three-master cluster, with the limit state
/// spread over more than one master (apps chosen so that their slots fall on two masters at
/// least, then checked by scanning each master). A request whose limits span two slots (its
/// app's quota and a route-wide rate) is exact too, and what a refused request's app slot took
/// is given back: the quota counts only the admitted requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_limits_are_exact_across_nodes_with_state_on_several_masters() {
    let Some(bin) = redis_server() else { return };
    let cluster = RedisCluster::start(&bin, 3, 1, None);
    let prefix = unique_prefix();
    let mut redis = section(&prefix);
    redis.cluster_nodes = cluster.seeds();
    let nodes = keyward_nodes(2, redis, |c| {
        let mut glob = c.routes.iter().find(|r| r.name == "echo").unwrap().clone();
        glob.name = "glob".into();
        glob.path_prefix = "/glob".into();
        glob.rate = Some("30/h".into());
        glob.burst = Some(30);
        glob.rate_by = keyward_engine::RateBy::Global;
        c.routes.insert(0, glob);
    })
    .await;

    // Apps until their limits live on two masters at least (each app is one slot).
    let mut keys = Vec::new();
    let mut masters = BTreeSet::new();
    for i in 0.. {
        let name = format!("app{i}");
        let id = app(&nodes[0], &name).await;
        masters.insert(cluster.master_of(app_slot(&prefix, &id)));
        let (_, k) = nodes[0].key(&name, &[], json!({"quota": "30/day"})).await;
        keys.push(k);
        if keys.len() >= 3 && masters.len() >= 2 {
            break;
        }
        assert!(i < 30, "30 apps all on one master");
    }
    let nodes = Arc::new(nodes);
    let tally = offer(&nodes, "/echo", &keys, 60, 8).await;
    println!(
        "cluster: quota 30/day on {} keys, 60 offered each over 2 nodes: {tally:?}",
        keys.len()
    );
    for t in &tally {
        assert_eq!(*t, (30, 30), "a quota of 30 admitted exactly 30");
    }
    let held = cluster.keys_per_master(&format!("kw:{{{prefix}:*"));
    println!("limit keys per master: {held:?}");
    assert!(
        held.values().filter(|&&n| n > 0).count() >= 2,
        "state on more than one master: {held:?}"
    );

    // Two slots per request: the app's quota (1000/day) and the route-wide rate (burst 30).
    let (_, wide) = nodes[0].key("app0", &[], json!({"quota": "1000/day"})).await;
    let tally = offer(&nodes, "/glob", std::slice::from_ref(&wide), 60, 8).await;
    println!("cluster: route-wide rate burst 30 + app quota, 60 offered: {tally:?}");
    assert_eq!(tally[0], (30, 30));
    // The 30 refused requests took nothing from the quota: 1000 − 30 − this one.
    let r = nodes[1].get("/echo", &[("x-api-key", &wide)]).await;
    assert_eq!(r.status(), 200);
    let fields = r.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(fields.contains("\"key-quota\";r=969;"), "{fields}");
}

/// A master is killed mid-load; its replica is promoted (cluster-node-timeout 1 s) and the
/// limiter follows it without a restart. Throughout, each route answers in its configured mode
/// (`fail_closed`: 200/429/503 only; `local` and `fail_open`: 200/429 only: never a 5xx
/// outside the documented 503). Over-admission is measured against the quota and printed: for
/// `fail_closed` it is what the killed master had acknowledged but not yet replicated; for
/// `local` also what each node admitted on its own during the outage (limit / nodes_hint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_mid_load_replica_promoted_decisions_continue() {
    let Some(bin) = redis_server() else { return };
    let mut cluster = RedisCluster::start(&bin, 3, 1, None);
    let prefix = unique_prefix();
    let mut redis = section(&prefix);
    redis.timeout = FAILOVER_TIMEOUT;
    redis.cluster_nodes = cluster.seeds();
    let nodes = keyward_nodes(2, redis, |c| {
        let echo = c.routes.iter().find(|r| r.name == "echo").unwrap().clone();
        for (name, mode) in [
            ("open", LimiterFailure::FailOpen),
            ("closed", LimiterFailure::FailClosed),
            ("local", LimiterFailure::Local),
        ] {
            let mut r = echo.clone();
            r.name = name.into();
            r.path_prefix = format!("/{name}");
            r.on_limiter_failure = Some(mode);
            c.routes.insert(0, r);
        }
    })
    .await;
    const QUOTA: u32 = 100;
    let id = app(&nodes[0], "cats").await;
    let victim = cluster.master_of(app_slot(&prefix, &id));
    let heir = cluster.replica_of(victim);
    let mut keys = BTreeMap::new();
    for mode in ["open", "closed", "local"] {
        let (_, k) = nodes[0]
            .key("cats", &[], json!({"quota": format!("{QUOTA}/day")}))
            .await;
        keys.insert(mode, k);
    }
    let nodes = Arc::new(nodes);
    // Load: each mode's key, about 40 requests a second each, round-robin over the nodes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loads = Vec::new();
    for (mode, key) in keys.clone() {
        let (nodes, stop) = (nodes.clone(), stop.clone());
        loads.push(tokio::spawn(async move {
            let mut seen: BTreeMap<u16, u32> = BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let s = nodes[i % nodes.len()]
                    .get(&format!("/{mode}"), &[("x-api-key", &key)])
                    .await
                    .status()
                    .as_u16();
                *seen.entry(s).or_default() += 1;
                i += 1;
            }
            (mode, seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill(victim);
    let killed = Instant::now();
    println!("killed master 127.0.0.1:{victim}; its replica is 127.0.0.1:{heir}");
    let promoted = cluster.wait_master(heir, Duration::from_secs(20));
    println!("replica promoted {:.2} s after the kill", promoted.as_secs_f64());
    // Decisions come from Redis again on both nodes: fail_closed stops answering 503.
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in nodes.iter() {
        loop {
            let r = n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
            if r.breaker_state() == BreakerState::Closed && r.ping().await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "a node did not follow the promoted replica");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "both nodes decide through the cluster again {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    // More load after the recovery (enough to use the quota up), then the tally.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = BTreeMap::new();
    for l in loads {
        let (mode, seen) = l.await.unwrap();
        results.insert(mode, seen);
    }
    for (mode, seen) in &results {
        let admitted = seen.get(&200).copied().unwrap_or(0);
        let over = i64::from(admitted) - i64::from(QUOTA);
        println!(
            "mode {mode}: statuses {seen:?}; admitted {admitted} against a quota of {QUOTA}: over-admission {over:+} ({:+.1}%)",
            over as f64 * 100.0 / f64::from(QUOTA)
        );
        let allowed: &[u16] = if *mode == "closed" {
            &[200, 429, 503]
        } else {
            &[200, 429]
        };
        for s in seen.keys() {
            assert!(allowed.contains(s), "mode {mode} answered {s}: {seen:?}");
        }
        assert!(
            seen.get(&429).copied().unwrap_or(0) > 0,
            "mode {mode}: the quota was reached: {seen:?}"
        );
    }
    let admitted = |m: &str| results[m].get(&200).copied().unwrap_or(0);
    // fail_closed: never more than the quota plus what the dead master had not replicated.
    assert!(
        admitted("closed") <= QUOTA + 10,
        "fail_closed over-admitted: {}",
        admitted("closed")
    );
    // local: plus at most limit / nodes_hint on each of the two nodes while the slot was down.
    assert!(
        admitted("local") <= 2 * QUOTA + 10,
        "local over-admitted: {}",
        admitted("local")
    );
    // The outage was real: fail_closed refused during it, local decided on its own.
    assert!(results["closed"].contains_key(&503), "{results:?}");
    let fallbacks: u64 = nodes
        .iter()
        .map(|n| {
            let r = n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
            r.stats().local_fallback.load(Ordering::Relaxed)
        })
        .sum();
    assert!(fallbacks > 0);
    // The state survived on the promoted replica: the quota stays used up.
    for n in nodes.iter() {
        assert_eq!(n.get("/closed", &[("x-api-key", &keys["closed"])]).await.status(), 429);
    }
}

/// Unreachable seeds and a cluster that does not serve every slot are clear start-up errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_bad_input_is_a_clear_startup_error() {
    let Some(bin) = redis_server() else { return };
    // Nothing listens on these ports.
    let (p1, p2) = (free_port(), free_port());
    let mut redis = section(&unique_prefix());
    redis.cluster_nodes = vec![
        format!("redis://:s3cret-pass@127.0.0.1:{p1}"),
        format!("redis://:s3cret-pass@127.0.0.1:{p2}"),
    ];
    let e = try_boot_with(|c| c.redis = Some(redis.clone()))
        .await
        .err()
        .unwrap()
        .to_string();
    println!("unreachable seeds: {e}");
    assert!(!e.contains("s3cret"), "{e}");
    assert!(e.contains("redis.cluster_nodes: no seed answered"), "{e}");
    assert!(
        e.contains(&format!("127.0.0.1:{p1}")) && e.contains(&format!("127.0.0.1:{p2}")),
        "{e}"
    );

    // One cluster-enabled node that serves only some slots.
    let dir = tempfile::tempdir().unwrap();
    let (port, bus) = (free_port(), free_port());
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--cluster-port",
        &bus.to_string(),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--dir",
        &dir.path().display().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _node = RedisProc::start(&bin, &args, port, &dir.path().join("log"));
    let slots: Vec<String> = (0..100).map(|s| s.to_string()).collect();
    let mut add = vec!["cluster", "addslots"];
    add.extend(slots.iter().map(String::as_str));
    assert!(cli(&[redis_cli(&bin)], port, &add).contains("OK"));
    redis.cluster_nodes = vec![format!("redis://127.0.0.1:{port}")];
    let e = try_boot_with(|c| c.redis = Some(redis.clone()))
        .await
        .err()
        .unwrap()
        .to_string();
    println!("partial slots: {e}");
    assert!(e.contains("does not serve every slot (missing: 100-16383)"), "{e}");

    // A URL that is not one, and mixed schemes: refused before any connection.
    redis.cluster_nodes = vec!["http://127.0.0.1:1".into()];
    let e = try_boot_with(|c| c.redis = Some(redis.clone()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("redis.cluster_nodes"), "{e}");
    redis.cluster_nodes = vec![
        format!("redis://127.0.0.1:{port}"),
        format!("rediss://127.0.0.1:{port}"),
    ];
    let e = try_boot_with(|c| c.redis = Some(redis.clone()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("mixes redis:// and rediss://"), "{e}");
}

/// One endpoint: a wrong password is a start-up error (without the password in it), while a
/// Redis that is merely down at start is not (keyward starts, `/readyz` says redis is down,
/// routes follow their failure mode), as before Cluster and Sentinel existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_endpoint_wrong_password_refused_down_tolerated() {
    let Some(bin) = redis_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--requirepass",
        "right-password",
        "--dir",
        &dir.path().display().to_string(),
        "--save",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _server = RedisProc::start(&bin, &args, port, &dir.path().join("log"));
    let mut redis = section(&unique_prefix());
    redis.url = format!("redis://:wrong-s3cret@127.0.0.1:{port}/");
    let e = try_boot_with(|c| c.redis = Some(redis.clone()))
        .await
        .err()
        .unwrap()
        .to_string();
    println!("wrong password: {e}");
    assert!(e.contains("redis.url") && e.contains("authentication"), "{e}");
    assert!(!e.contains("wrong-s3cret") && !e.contains("right-password"), "{e}");
    redis.url = format!("redis://127.0.0.1:{port}/");
    let e = try_boot_with(|c| c.redis = Some(redis.clone()))
        .await
        .err()
        .unwrap()
        .to_string();
    println!("no password: {e}");
    assert!(e.contains("redis.url: PING failed: server error NOAUTH"), "{e}");

    redis.url = format!("redis://:right-password@127.0.0.1:{port}/");
    let kw = boot_with(|c| c.redis = Some(redis.clone())).await;
    let (_, k) = kw.key("cats", &[], json!({"quota": "1/day"})).await;
    assert_eq!(kw.get("/echo", &[("x-api-key", &k)]).await.status(), 200);
    assert_eq!(kw.get("/echo", &[("x-api-key", &k)]).await.status(), 429);

    redis.url = format!("redis://127.0.0.1:{}/", free_port());
    let kw = boot_with(|c| c.redis = Some(redis.clone())).await;
    let r = kw.http.get(format!("{}/readyz", kw.admin)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["down"], json!(["redis"]), "{body}");
    assert!(body["checks"]["redis_error"].as_str().is_some(), "{body}");
}

/// DPoP `jti` claims and the token denylist under Cluster: a proof claimed through one node is
/// refused through the other, the claims spread over the masters, and a revocation made on
/// one node reaches the other through pub/sub (classic `PUBLISH` is cluster-wide), also after
/// the master holding the denylist's slot was killed and its replica promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dpop_claims_and_denylist_work() {
    let Some(bin) = redis_server() else { return };
    let mut cluster = RedisCluster::start(&bin, 3, 1, None);
    let prefix = unique_prefix();
    let mut redis = section(&prefix);
    redis.cluster_nodes = cluster.seeds();
    let nodes = keyward_nodes(2, redis, super::cluster_limits::tokens_on).await;
    let limiter = |n: &Kw| n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
    let (a, b) = (limiter(&nodes[0]), limiter(&nodes[1]));
    let mut slots = BTreeSet::new();
    for i in 0..30 {
        let entry = format!("jkt-{i}:jti-{i}");
        assert!(a.first_use(&entry, Duration::from_secs(60)).await.unwrap(), "first use");
        assert!(
            !b.first_use(&entry, Duration::from_secs(60)).await.unwrap(),
            "replay refused"
        );
        let tag = format!("{prefix}:{:016x}", LimitKey::stable(&["dpop", &entry]).value());
        slots.insert(cluster.master_of(key_slot(tag.as_bytes())));
    }
    let held = cluster.keys_per_master(&format!("kw:{{{prefix}:*}}:j:*"));
    println!("DPoP claims per master: {held:?}");
    assert!(held.values().filter(|&&n| n > 0).count() >= 2, "{held:?}");
    assert_eq!(held.values().filter(|&&n| n > 0).count(), slots.len());

    super::cluster_limits::revocation_reaches_every_node(&nodes).await;

    // Kill the master of the denylist's slot; after the promotion the channel and the list
    // work again (each node resubscribes and reloads the list).
    let victim = cluster.master_of(key_slot(prefix.as_bytes()));
    let heir = cluster.replica_of(victim);
    cluster.kill(victim);
    cluster.wait_master(heir, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if a.ping().await.is_ok() && b.ping().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes did not follow the promotion");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A revocation now travels as well (the subscriber may have been on the dead node).
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = b.stats().deny_received.load(Ordering::Relaxed);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        a.deny(&format!("jti-after-{}", unique_prefix()), now + 3600, now)
            .await
            .unwrap_or_else(|e| println!("deny failed once: {e}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        if b.stats().deny_received.load(Ordering::Relaxed) > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no revocation reached the other node after the failover"
        );
    }
}

/// Sentinel: one master, one replica, three sentinels. keyward finds the master through the
/// sentinels; the master is killed mid-load, the sentinels promote the replica, and both
/// keyward nodes follow without a restart (decisions in the configured mode meanwhile, never a
/// 5xx outside fail_closed's 503); the quota state survived on the replica; revocations travel
/// again (each node resubscribes on the new master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed_without_restart() {
    let Some(bin) = redis_server() else { return };
    let mut set = SentinelSet::start(&bin, None);
    let rp = set.replica.port;

    let prefix = unique_prefix();
    let mut redis = section(&prefix);
    redis.timeout = FAILOVER_TIMEOUT;
    redis.sentinel_nodes = set.urls();
    redis.sentinel_master = Some(SentinelSet::MASTER.into());
    let nodes = keyward_nodes(2, redis.clone(), |c| {
        super::cluster_limits::tokens_on(c);
        let echo = c.routes.iter().find(|r| r.name == "echo").unwrap().clone();
        for (name, mode) in [("closed", LimiterFailure::FailClosed), ("local", LimiterFailure::Local)] {
            let mut r = echo.clone();
            r.name = name.into();
            r.path_prefix = format!("/{name}");
            r.on_limiter_failure = Some(mode);
            c.routes.insert(0, r);
        }
    })
    .await;
    const QUOTA: u32 = 40;
    let mut keys = BTreeMap::new();
    for mode in ["closed", "local"] {
        let (_, k) = nodes[0]
            .key("cats", &[], json!({"quota": format!("{QUOTA}/day")}))
            .await;
        keys.insert(mode, k);
    }
    let nodes = Arc::new(nodes);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loads = Vec::new();
    for (mode, key) in keys.clone() {
        let (nodes, stop) = (nodes.clone(), stop.clone());
        loads.push(tokio::spawn(async move {
            let mut seen: BTreeMap<u16, u32> = BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(40));
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let s = nodes[i % nodes.len()]
                    .get(&format!("/{mode}"), &[("x-api-key", &key)])
                    .await
                    .status()
                    .as_u16();
                *seen.entry(s).or_default() += 1;
                i += 1;
            }
            (mode, seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let killed = Instant::now();
    set.fail_over(Duration::from_secs(30)).await;
    println!(
        "sentinels promoted the replica {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in nodes.iter() {
        let r = n.running.as_ref().unwrap().engine.limiter().redis().unwrap().clone();
        loop {
            if r.breaker_state() == BreakerState::Closed && r.ping().await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "a node did not follow the failover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "both nodes decide through the new master {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        let (mode, seen) = l.await.unwrap();
        let admitted = seen.get(&200).copied().unwrap_or(0);
        println!(
            "sentinel, mode {mode}: statuses {seen:?}; admitted {admitted} against {QUOTA}: over-admission {:+}",
            i64::from(admitted) - i64::from(QUOTA)
        );
        let allowed: &[u16] = if mode == "closed" {
            &[200, 429, 503]
        } else {
            &[200, 429]
        };
        for s in seen.keys() {
            assert!(allowed.contains(s), "mode {mode} answered {s}: {seen:?}");
        }
        let bound = if mode == "closed" { QUOTA + 10 } else { 2 * QUOTA + 10 };
        assert!(admitted <= bound, "mode {mode} admitted {admitted}");
        assert!(seen.contains_key(&429), "mode {mode}: the quota was reached: {seen:?}");
        if mode == "closed" {
            assert!(seen.contains_key(&503), "the outage was real: {seen:?}");
        }
    }
    // The keys now live on the promoted replica.
    let held = set.server_cli(rp, &["--scan", "--pattern", &format!("kw:{{{prefix}}}:*")]);
    assert!(held.lines().count() >= 2, "{held}");
    // Revocations travel through the new master.
    super::cluster_limits::revocation_reaches_every_node(&nodes).await;

    // Bad input: a master name the sentinels do not know, sentinels that do not answer.
    redis.sentinel_master = Some("nosuch".into());
    let e = try_boot_with(|c| c.redis = Some(redis.clone()))
        .await
        .err()
        .unwrap()
        .to_string();
    println!("unknown master: {e}");
    assert!(e.contains("redis.sentinel_master") && e.contains("nosuch"), "{e}");
    redis.sentinel_master = Some(SentinelSet::MASTER.into());
    redis.sentinel_nodes = vec![format!("redis://127.0.0.1:{}", free_port())];
    let e = try_boot_with(|c| c.redis = Some(redis.clone()))
        .await
        .err()
        .unwrap()
        .to_string();
    println!("no sentinel: {e}");
    assert!(e.contains("redis.sentinel_nodes"), "{e}");
}
