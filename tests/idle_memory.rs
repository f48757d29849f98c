//! Memory per idle keep-alive connection: 3 000 clients each send one request and keep the
//! connection open; fortress's resident memory grows by a bounded amount per connection.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 3_000;
/// Generous bound (the measured figure is in docs/performance.md).
const LIMIT_KIB_PER_CONNECTION: u64 = 64;

/// One keep-alive request on a new connection; returns the open connection.
async fn one_request(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /idle HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(b"upstream saw GET /idle") {
            return tcp;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_cost_bounded_memory() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, config(up.addr, "timeouts:\n  idle: 300s", CATCH_ALL))
        .expect("write config");
    let fx = FortressProcess::spawn(&path);
    // Warm up: the runtime, the pool, the first allocations.
    let mut warm = Vec::new();
    for _ in 0..50 {
        warm.push(one_request(fx.addr).await);
    }
    let before = fx.rss_kib();
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS / 50 {
        let batch: Vec<_> = (0..50)
            .map(|_| tokio::spawn(one_request(fx.addr)))
            .collect();
        for b in batch {
            conns.push(b.await.expect("task"));
        }
    }
    assert_eq!(
        metric(fx.admin, "fortress_open_connections").await,
        Some((CONNECTIONS + warm.len()) as f64)
    );
    let after = fx.rss_kib();
    let per_conn = after.saturating_sub(before) as f64 / CONNECTIONS as f64;
    eprintln!(
        "fortress RSS with {CONNECTIONS} idle keep-alive connections: before {before} KiB, \
         after {after} KiB, {per_conn:.1} KiB per connection"
    );
    assert!(
        per_conn < LIMIT_KIB_PER_CONNECTION as f64,
        "{per_conn} KiB per idle connection is not under {LIMIT_KIB_PER_CONNECTION} KiB"
    );
    drop(conns);
}
