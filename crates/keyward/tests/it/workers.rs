//! `server.worker_threads`: gateway workers, each an event loop on a thread of its own with its
//! own `SO_REUSEPORT` socket on `gateway.listen` (issue 19, point 3: `WORKERS=2` against nginx's
//! two worker processes). The binary as a user runs it: two listening sockets on one port,
//! requests served by both workers, and every worker draining its requests on SIGTERM.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proc::{url_after, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// An upstream that answers every request with 200 `ok` (a fresh connection each), after
/// `slow` for paths under `/slow`; it counts the slow requests that arrived.
async fn upstream(slow: Duration) -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let arrived = Arc::new(AtomicUsize::new(0));
    let seen = arrived.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if buf.starts_with(b"GET /slow") {
                    seen.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(slow).await;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .await;
            });
        }
    });
    (format!("http://{addr}"), arrived)
}

/// The threads of `pid`: (name, utime + stime in clock ticks).
fn threads(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the `(comm)`: state is the 3rd field, utime the 14th, stime the 15th.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.push((comm.trim().to_owned(), ticks));
    }
    out
}

/// How many listening TCP sockets `pid` holds on `port`.
fn listening_sockets(pid: u32, port: u16) -> usize {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let lport = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && lport == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|link| inodes.iter().any(|i| link.to_str() == Some(i.as_str())))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_workers_share_the_port_serve_and_drain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let init = Command::new(BIN).args(["init", "--dir", d]).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let token = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let (up, slow_arrived) = upstream(Duration::from_secs(2)).await;
    let routes = format!("[{{name = \"all\", path_prefix = \"/\", upstream = \"{up}\"}}]");
    let cfg = dir.path().join("keyward.toml");
    let mut c = Command::new(BIN);
    c.args(["serve", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .env_remove("KEYWARD_ADMIN_TOKEN")
        .env_remove("KEYWARD_PEPPER")
        .env("KEYWARD_GATEWAY__LISTEN", "127.0.0.1:0")
        .env("KEYWARD_ADMIN__LISTEN", "127.0.0.1:0")
        .env("KEYWARD_SERVER__WORKER_THREADS", "2")
        .env("KEYWARD_ROUTES", &routes)
        .env("KEYWARD_LOG", "info")
        .env("KEYWARD_LOG_FORMAT", "json");
    let mut server = Proc::spawn(c);
    let line = server.wait_for("keyward: gateway on", 0);
    let gw_addr = url_after(&line, "gateway on http://");
    let gw = format!("http://{gw_addr}");
    let admin = format!("http://{}", url_after(&line, "admin API on http://"));
    let port: u16 = gw_addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let pid = server.child.id();

    // Two sockets listen on the gateway's port, and the second worker is a thread of its own.
    assert_eq!(listening_sockets(pid, port), 2, "one socket per gateway worker");
    assert!(
        threads(pid).iter().any(|(name, _)| name == "keyward-gw-1"),
        "{:?}",
        threads(pid)
    );

    let key = crate::proc::cats_key(&admin, &token).await;
    // Every request on a fresh connection: the kernel spreads them over both sockets.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..800u32 {
        let (http, gw, key) = (fresh.clone(), gw.clone(), key.clone());
        tasks.spawn(async move {
            let mut req = http.get(format!("{gw}/fast/{i}"));
            if i % 4 != 0 {
                req = req.header("x-api-key", key);
            }
            (i, req.send().await.map(|r| r.status().as_u16()))
        });
        while tasks.len() >= 16 {
            let (i, status) = tasks.join_next().await.unwrap().unwrap();
            let want = if i % 4 == 0 { 401 } else { 200 };
            assert_eq!(status.unwrap(), want, "request {i}");
        }
    }
    while let Some(r) = tasks.join_next().await {
        let (i, status) = r.unwrap();
        assert_eq!(status.unwrap(), if i % 4 == 0 { 401 } else { 200 }, "request {i}");
    }
    // Both event loops did work (the main thread is worker 0; its ticks include start-up).
    let ticks = threads(pid);
    let gw1 = ticks
        .iter()
        .find(|(n, _)| n == "keyward-gw-1")
        .map(|(_, t)| *t)
        .unwrap();
    assert!(gw1 > 0, "the second worker served no request: {ticks:?}");

    // Slow requests in flight on both workers, then SIGTERM: each worker stops accepting and
    // finishes its requests; the process exits cleanly.
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..12 {
        let (http, gw, key) = (fresh.clone(), gw.clone(), key.clone());
        slow.spawn(async move {
            http.get(format!("{gw}/slow/{i}"))
                .header("x-api-key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    // All of them reached the upstream (so all are in flight in keyward) before the signal.
    let waited = Instant::now();
    while slow_arrived.load(Ordering::SeqCst) < 12 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the slow requests never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = server.terminate();
        (s, server.stderr())
    })
    .await
    .unwrap();
    while let Some(r) = slow.join_next().await {
        assert_eq!(r.unwrap().unwrap(), 200, "a request in flight at SIGTERM was cut");
    }
    assert!(status.0.success(), "exit {:?}; stderr: {}", status.0, status.1);
    // After the drain nothing listens any more.
    assert!(tokio::net::TcpStream::connect(&gw_addr).await.is_err());
}
