//! Upstream connection affinity (`proxy/affinity.rs`): an HTTP/1.1 client connection sends
//! its requests on an upstream connection of its own; a connection the upstream closed, a
//! reload to another upstream and a poisoned stream each get a new one; a client connection
//! that ends parks its upstream connection for the next one; HTTP/2 clients use the pool.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::{
    CATCH_ALL, TestCerts, TestFortress, Upstream, body_bytes, config, eventually, full, get, h1,
    h2_tls, metric, tls_fortress,
};

/// `GET target` on a kept client connection; status and body.
async fn send(
    conn: &mut hyper::client::conn::http1::SendRequest<support::TestBody>,
    target: &str,
) -> (u16, String) {
    conn.ready().await.expect("client connection ready");
    let req = Request::get(target)
        .header("host", "app.test")
        .body(full(""))
        .expect("request");
    let resp = conn.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = body_bytes(resp).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The upstream connection (accept order) each request arrived on, by target.
fn conns_of(up: &Upstream, target: &str) -> Vec<usize> {
    up.requests()
        .iter()
        .filter(|s| s.target == target)
        .map(|s| s.conn)
        .collect()
}

async fn owned(admin: SocketAddr) -> Option<f64> {
    metric(admin, "fortress_upstream_owned_connections").await
}

/// Waits until fortress has closed every client connection (the client connection's upstream
/// connection is parked when it closes).
async fn client_connections_closed(admin: SocketAddr) {
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(admin, "fortress_open_connections").await == Some(0.0)
        })
        .await,
        "client connections closed"
    );
}

#[tokio::test]
async fn each_http1_client_connection_keeps_its_own_upstream_connection() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    assert_eq!(owned(fx.admin()).await, Some(0.0));
    let mut a = h1(fx.addr()).await;
    let mut b = h1(fx.addr()).await;
    for (which, target) in [
        ('a', "/a/1"),
        ('b', "/b/1"),
        ('a', "/a/2"),
        ('b', "/b/2"),
        ('a', "/a/3"),
    ] {
        let conn = if which == 'a' { &mut a } else { &mut b };
        let (status, body) = send(conn, target).await;
        assert_eq!(status, 200, "{target}");
        assert_eq!(body, format!("upstream saw GET {target}"));
    }
    let a_conns: Vec<usize> = ["/a/1", "/a/2", "/a/3"]
        .iter()
        .flat_map(|t| conns_of(&up, t))
        .collect();
    let b_conns: Vec<usize> = ["/b/1", "/b/2"]
        .iter()
        .flat_map(|t| conns_of(&up, t))
        .collect();
    assert_eq!(a_conns.len(), 3);
    assert!(a_conns.iter().all(|c| *c == a_conns[0]), "{a_conns:?}");
    assert!(b_conns.iter().all(|c| *c == b_conns[0]), "{b_conns:?}");
    assert_ne!(
        a_conns[0], b_conns[0],
        "two client connections, two upstream connections"
    );
    assert_eq!(owned(fx.admin()).await, Some(2.0));
    // The upstream sees an origin-form target and the client's Host.
    let seen = up.requests();
    assert_eq!(seen[0].target, "/a/1");
    assert_eq!(seen[0].headers["host"], "app.test");
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_replaced() {
    // `Connection: close` from the upstream on /close.
    let up = Upstream::spawn(|req: Request<Incoming>| async move {
        let mut r = Response::new(full("ok"));
        if req.uri().path() == "/close" {
            r.headers_mut()
                .insert("connection", http::HeaderValue::from_static("close"));
        }
        r
    })
    .await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let mut c = h1(fx.addr()).await;
    assert_eq!(send(&mut c, "/first").await, (200, "ok".into()));
    assert_eq!(send(&mut c, "/close").await, (200, "ok".into()));
    assert_eq!(send(&mut c, "/after").await, (200, "ok".into()));
    let (first, closed, after) = (
        conns_of(&up, "/first"),
        conns_of(&up, "/close"),
        conns_of(&up, "/after"),
    );
    assert_eq!(first, closed, "kept until the upstream said close");
    assert_ne!(closed, after, "a new connection after `Connection: close`");
    assert_eq!(owned(fx.admin()).await, Some(1.0));
}

#[tokio::test]
async fn an_upstream_that_drops_idle_connections_silently_costs_no_request() {
    // A bare upstream: answers one request per connection with a keep-alive response, then
    // closes the socket without saying so (an idle timeout on its side).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let fx = TestFortress::start(&config(addr, "", CATCH_ALL)).await;
    let mut c = h1(fx.addr()).await;
    for round in 1..=3 {
        assert_eq!(
            send(&mut c, "/x").await,
            (200, "ok".into()),
            "round {round}"
        );
        // The upstream closed it: fortress notices and lets it go.
        assert!(
            eventually(Duration::from_secs(5), || async {
                owned(fx.admin()).await == Some(0.0)
            })
            .await,
            "round {round}: the closed upstream connection is released"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_client_connection_that_ends_leaves_its_upstream_connection_to_the_next() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    for i in 0..4 {
        // A fresh client connection each time, `Connection: close`.
        let r = get(fx.addr(), &format!("/one/{i}")).await;
        assert_eq!(r.status, 200);
        client_connections_closed(fx.admin()).await;
    }
    let conns: Vec<usize> = up.requests().iter().map(|s| s.conn).collect();
    assert_eq!(
        conns,
        vec![0, 0, 0, 0],
        "one upstream connection, parked and reused"
    );
    assert_eq!(owned(fx.admin()).await, Some(1.0));
}

#[tokio::test]
async fn a_reload_to_another_upstream_moves_a_kept_client_connection() {
    let first = Upstream::echo().await;
    let second = Upstream::echo().await;
    let fx = TestFortress::start(&config(first.addr, "", CATCH_ALL)).await;
    let mut c = h1(fx.addr()).await;
    assert_eq!(send(&mut c, "/before").await.0, 200);
    std::fs::write(&fx.config_path, config(second.addr, "", CATCH_ALL)).expect("rewrite");
    let r = support::raw(
        fx.admin(),
        b"POST /admin/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(send(&mut c, "/after").await.0, 200);
    assert_eq!(conns_of(&first, "/before").len(), 1);
    assert_eq!(
        conns_of(&first, "/after").len(),
        0,
        "the old upstream got nothing"
    );
    assert_eq!(conns_of(&second, "/after").len(), 1);
}

#[tokio::test]
async fn http2_clients_share_the_pool() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("localhost");
    let (fx, _dir) = tls_fortress(up.addr, &certs, CATCH_ALL).await;
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    for i in 0..3 {
        let req = Request::get(format!("https://localhost/h2/{i}"))
            .body(full(""))
            .expect("request");
        let resp = h2.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            body_bytes(resp).await,
            format!("upstream saw GET /h2/{i}").as_bytes()
        );
    }
    assert_eq!(
        metric(fx.admin_addr, "fortress_upstream_owned_connections").await,
        Some(0.0),
        "no upstream connection owned by an HTTP/2 connection"
    );
    let conns: Vec<usize> = up.requests().iter().map(|s| s.conn).collect();
    assert_eq!(conns, vec![0, 0, 0], "the pool reuses its connection");
}

#[tokio::test]
async fn an_idle_client_connection_parks_its_upstream_connection() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let mut a = h1(fx.addr()).await;
    assert_eq!(send(&mut a, "/a/1").await.0, 200);
    let parked = || async { metric(fx.admin(), "fortress_upstream_parked_connections").await };
    assert_eq!(
        parked().await,
        Some(0.0),
        "held by the active client connection"
    );
    // Idle for the release delay (2 s): parked, while the client connection stays open.
    assert!(
        eventually(Duration::from_secs(10), || async {
            parked().await == Some(1.0)
        })
        .await,
        "parked after the client connection went idle"
    );
    assert_eq!(
        metric(fx.admin(), "fortress_open_connections").await,
        Some(1.0)
    );
    // Another client connection takes it; the first one, busy again, gets a new one.
    let mut b = h1(fx.addr()).await;
    assert_eq!(send(&mut b, "/b/1").await.0, 200);
    assert_eq!(parked().await, Some(0.0));
    assert_eq!(send(&mut a, "/a/2").await.0, 200);
    assert_eq!(conns_of(&up, "/b/1"), conns_of(&up, "/a/1"));
    assert_ne!(conns_of(&up, "/a/2"), conns_of(&up, "/a/1"));
    assert_eq!(owned(fx.admin()).await, Some(2.0));
}

#[tokio::test]
async fn upstream_affinity_false_sends_everything_through_the_pool() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "upstream_affinity: false", CATCH_ALL)).await;
    let mut a = h1(fx.addr()).await;
    let mut b = h1(fx.addr()).await;
    assert_eq!(
        send(&mut a, "/a/1").await,
        (200, "upstream saw GET /a/1".into())
    );
    assert_eq!(
        send(&mut b, "/b/1").await,
        (200, "upstream saw GET /b/1".into())
    );
    assert_eq!(send(&mut a, "/a/2").await.0, 200);
    // Sequential requests from two client connections share the pool's one connection.
    let conns: Vec<usize> = up.requests().iter().map(|s| s.conn).collect();
    assert_eq!(conns, vec![0, 0, 0]);
    assert_eq!(owned(fx.admin()).await, Some(0.0));
}
