//! Tunnels with real sockets: a TCP echo server behind `pump`, idle timeout, max duration,
//! revocation through the registry.

use std::time::{Duration, Instant};

use keyward_upstream::tunnel::{pump, EndReason, Limits, Owner, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server; returns its address.
async fn echo() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A client socket, and the tunnel task between its accepted side and the echo server.
async fn tunnel(
    limits: Limits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (TcpStream, tokio::task::JoinHandle<keyward_upstream::tunnel::End>) {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(front.local_addr().unwrap()).await.unwrap();
    let (accepted, _) = front.accept().await.unwrap();
    let upstream = TcpStream::connect(echo().await).await.unwrap();
    let task = tokio::spawn(async move { pump(accepted, upstream, &limits, stop).await });
    (client, task)
}

fn limits(idle_ms: u64, max_ms: u64) -> Limits {
    Limits {
        idle_timeout: Duration::from_millis(idle_ms),
        max_duration: Duration::from_millis(max_ms),
    }
}

async fn roundtrip(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test]
async fn bytes_flow_both_ways_until_close() {
    let (mut c, task) = tunnel(limits(5_000, 60_000), std::future::pending()).await;
    roundtrip(&mut c, b"hello").await;
    let big = vec![7u8; 200_000];
    let (mut r, mut w) = c.split();
    let writer = async {
        w.write_all(&big).await.unwrap();
    };
    let mut back = vec![0u8; big.len()];
    let reader = r.read_exact(&mut back);
    let (_, n) = tokio::join!(writer, reader);
    n.unwrap();
    assert_eq!(back, big);
    // The client closes its side: the echo server closes too, and the tunnel ends.
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    let end = task.await.unwrap();
    assert_eq!(end.reason, EndReason::Closed);
    assert_eq!(end.a_to_b, 5 + 200_000);
    assert_eq!(end.b_to_a, 5 + 200_000);
}

#[tokio::test]
async fn idle_timeout_closes() {
    let (mut c, task) = tunnel(limits(200, 60_000), std::future::pending()).await;
    roundtrip(&mut c, b"x").await;
    let end = task.await.unwrap();
    assert_eq!(end.reason, EndReason::Idle);
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).await.unwrap(), 0, "the client sees the close");
}

#[tokio::test]
async fn max_duration_closes_a_busy_tunnel() {
    let (mut c, task) = tunnel(limits(5_000, 400), std::future::pending()).await;
    let start = Instant::now();
    while !task.is_finished() {
        if c.write_all(b"busy").await.is_err() {
            break;
        }
        let mut b = [0u8; 4];
        if c.read_exact(&mut b).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(task.await.unwrap().reason, EndReason::MaxDuration);
}

#[tokio::test]
async fn close_matching_closes_only_the_revoked_tunnels() {
    let reg = Registry::new();
    let owner = |key: &str, app: &str| Owner {
        key_id: Some(key.into()),
        app_id: Some(app.into()),
        ..Default::default()
    };
    let h1 = reg.open(owner("key_1", "app_a"));
    let h2 = reg.open(owner("key_2", "app_a"));
    let h3 = reg.open(Owner {
        token_id: Some("jti-9".into()),
        client_id: Some("cli".into()),
        ..Default::default()
    });
    let (mut c1, t1) = tunnel(limits(30_000, 60_000), h1.stopped()).await;
    let (mut c2, t2) = tunnel(limits(30_000, 60_000), h2.stopped()).await;
    let (mut c3, t3) = tunnel(limits(30_000, 60_000), h3.stopped()).await;
    roundtrip(&mut c1, b"a").await;
    roundtrip(&mut c2, b"b").await;
    roundtrip(&mut c3, b"c").await;
    assert_eq!(reg.len(), 3);

    let start = Instant::now();
    assert_eq!(reg.close_matching(|o| o.key_id.as_deref() == Some("key_1")), 1);
    let end = tokio::time::timeout(Duration::from_secs(1), t1)
        .await
        .expect("closed within a second")
        .unwrap();
    assert_eq!(end.reason, EndReason::Stopped);
    let mut rest = Vec::new();
    assert_eq!(c1.read_to_end(&mut rest).await.unwrap(), 0);
    assert!(start.elapsed() < Duration::from_secs(1));
    drop(h1);
    assert_eq!(reg.len(), 2);
    // The others still carry bytes.
    roundtrip(&mut c2, b"still").await;
    roundtrip(&mut c3, b"here").await;
    // By token id.
    assert_eq!(reg.close_matching(|o| o.token_id.as_deref() == Some("jti-9")), 1);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), t3)
            .await
            .unwrap()
            .unwrap()
            .reason,
        EndReason::Stopped
    );
    roundtrip(&mut c2, b"and still").await;
    // No match: nothing closed.
    assert_eq!(reg.close_matching(|o| o.app_id.as_deref() == Some("app_z")), 0);
    roundtrip(&mut c2, b"!").await;
    // A signal sent before the tunnel waits on it still closes it.
    assert_eq!(reg.close_matching(|o| o.app_id.as_deref() == Some("app_a")), 1);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), t2)
            .await
            .unwrap()
            .unwrap()
            .reason,
        EndReason::Stopped
    );
    drop((h2, h3));
    assert!(reg.is_empty());
}

#[tokio::test]
async fn stop_before_pump_starts_still_stops() {
    let reg = Registry::new();
    let h = reg.open(Owner {
        key_id: Some("k".into()),
        ..Default::default()
    });
    assert_eq!(reg.close_matching(|_| true), 1);
    let (_c, t) = tunnel(limits(30_000, 60_000), h.stopped()).await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), t)
            .await
            .unwrap()
            .unwrap()
            .reason,
        EndReason::Stopped
    );
}
