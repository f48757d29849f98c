//! Connection-level limits: the header-read timeout against slowloris clients, the idle
//! keep-alive timeout (which must not cut a request in flight), and `max_connections`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

/// Generous bound for things that should happen within a fraction of a second.
const DEADLINE: Duration = Duration::from_secs(5);

/// Reads one response with a `Content-Length` body from a keep-alive connection.
async fn read_response(tcp: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_response(&buf[..end + 4]);
            let len: usize = head
                .header("content-length")
                .expect("content-length")
                .parse()
                .expect("length");
            if buf.len() >= end + 4 + len {
                assert_eq!(buf.len(), end + 4 + len, "bytes after the response");
                return parse_response(&buf);
            }
        }
        let n = tokio::time::timeout(DEADLINE, tcp.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends a keep-alive `GET target` on `tcp` and reads the response.
async fn keep_alive_get(tcp: &mut TcpStream, target: &str) -> RawResponse {
    let req = format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    read_response(tcp).await
}

/// Waits for fortress to close `tcp`; returns the bytes it sent before closing.
async fn read_until_closed(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut buf))
        .await
        .expect("fortress closes the connection in time")?;
    Ok(buf)
}

async fn open_connections(admin: SocketAddr) -> Option<f64> {
    metric(admin, "fortress_open_connections").await
}

#[tokio::test]
async fn slowloris_is_closed_without_a_response_while_others_are_served() {
    let up = Upstream::echo().await;
    // `idle` is long, so only the header-read timeout can close the slow connections.
    let server = "timeouts:\n  header_read: 500ms\n  idle: 60s";
    let fx = TestFortress::start(&config(up.addr, server, CATCH_ALL)).await;

    // Stalls after part of the header block.
    let mut stalled = TcpStream::connect(fx.addr()).await.expect("connect");
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // Trickles a header byte every 100ms, never finishing: the timeout covers the whole
    // header block, not the gap between bytes.
    let trickler = tokio::spawn({
        let addr = fx.addr();
        async move {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            let deadline = tokio::time::sleep(DEADLINE);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    biased;
                    read = tcp.read(&mut chunk) => match read {
                        Ok(0) => return Ok(buf),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e) => return Err(e),
                    },
                    () = &mut deadline => panic!("trickling connection still open"),
                    _ = ticks.tick() => {
                        // Writing after fortress closed may fail; the read reports the close.
                        let _ = tcp.write_all(b"x").await;
                    }
                }
            }
        }
    });

    // Other clients are served meanwhile.
    let r = get(fx.addr(), "/ok").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /ok");

    // hyper answers a header-read timeout by closing the connection: no 408, just EOF.
    let sent = read_until_closed(&mut stalled).await.expect("clean EOF");
    assert_eq!(
        String::from_utf8_lossy(&sent),
        "",
        "expected EOF without a response"
    );
    // The trickler's last byte may cross fortress's FIN, turning the close into a reset;
    // either way it got no response.
    match trickler.await.expect("trickler task") {
        Ok(sent) => assert_eq!(String::from_utf8_lossy(&sent), ""),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // Neither slow request reached the upstream.
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn idle_keep_alive_is_closed_but_a_slow_request_in_flight_is_not() {
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let up = {
        let release = release.clone();
        Upstream::spawn(move |req: Request<Incoming>| {
            let (arrived, release) = (arrived_tx.clone(), release.clone());
            async move {
                let target = req.uri().path().to_owned();
                if target == "/slow" {
                    let _ = arrived.send(());
                    release.notified().await;
                    return Response::new(full("slow done"));
                }
                Response::new(full(format!("upstream saw GET {target}")))
            }
        })
        .await
    };
    // header_read is long, so only fortress's idle timeout can close idle connections.
    let server = "timeouts:\n  idle: 300ms\n  header_read: 30s\n  upstream_response: 30s";
    let fx = TestFortress::start(&config(up.addr, server, CATCH_ALL)).await;

    // B: a request the upstream holds.
    let mut slow = TcpStream::connect(fx.addr()).await.expect("connect");
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    tokio::time::timeout(DEADLINE, arrived_rx.recv())
        .await
        .expect("slow request reaches the upstream")
        .expect("upstream alive");

    // A: one request, answered keep-alive, then idle: fortress closes it.
    let mut idle = TcpStream::connect(fx.addr()).await.expect("connect");
    let r = keep_alive_get(&mut idle, "/a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /a");
    assert_eq!(r.header("connection"), None, "answered keep-alive");
    let sent = read_until_closed(&mut idle).await.expect("clean EOF");
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));

    // A connection that never sends a request is idle from the start.
    let mut silent = TcpStream::connect(fx.addr()).await.expect("connect");
    let sent = read_until_closed(&mut silent).await.expect("clean EOF");
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));

    // B has now been in flight through two idle periods. Its response arrives complete and
    // the connection stays usable (an idle shutdown would have set `Connection: close`).
    release.notify_one();
    let r = read_response(&mut slow).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow done");
    assert_eq!(
        r.header("connection"),
        None,
        "in-flight request was not cut"
    );
    let r = keep_alive_get(&mut slow, "/b").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /b");
    // And once idle, B is closed too.
    let sent = read_until_closed(&mut slow).await.expect("clean EOF");
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    assert!(
        eventually(DEADLINE, || async {
            open_connections(fx.admin()).await == Some(0.0)
        })
        .await
    );
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_at_once() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "max_connections: 2", CATCH_ALL)).await;
    let mut first = TcpStream::connect(fx.addr()).await.expect("connect");
    let second = TcpStream::connect(fx.addr()).await.expect("connect");
    assert!(
        eventually(DEADLINE, || async {
            open_connections(fx.admin()).await == Some(2.0)
        })
        .await,
        "both connections accepted"
    );

    // The third is closed without a byte of response.
    let mut third = TcpStream::connect(fx.addr()).await.expect("connect");
    let sent = read_until_closed(&mut third).await.expect("clean EOF");
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    assert_eq!(
        metric(fx.admin(), "fortress_connections_rejected_total").await,
        Some(1.0)
    );
    assert_eq!(open_connections(fx.admin()).await, Some(2.0));
    assert_eq!(up.hits(), 0);

    // The admitted connections still work.
    let r = keep_alive_get(&mut first, "/one").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /one");

    // Closing one frees a slot.
    drop(second);
    assert!(
        eventually(DEADLINE, || async {
            open_connections(fx.admin()).await == Some(1.0)
        })
        .await,
        "closed connection released"
    );
    let r = get(fx.addr(), "/again").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /again");
    assert_eq!(
        metric(fx.admin(), "fortress_connections_rejected_total").await,
        Some(1.0)
    );
}
