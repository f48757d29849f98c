//! Concurrency classes end to end: a bulk flood held in a slow upstream fills its class and
//! its queue; further bulk requests get 503 `overloaded` at once while realtime requests keep
//! passing; queued requests are admitted when a permit frees, or refused when they waited
//! `queue_timeout`; a client that goes away mid-stream gives its permit back; a tenant cannot
//! take a whole class; a reload that keeps a class keeps its in-flight count.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

const SECRET: &str = "fortress-classes-test-secret-0123456789-abcdef";

/// An upstream that answers `/…/hold/…` only once the test adds a permit to the returned
/// semaphore (each arrival is reported on the channel), `/…/stream/…` with a body the test
/// feeds through the sender it receives, and anything else at once.
struct HeldUpstream {
    up: Upstream,
    release: Arc<Semaphore>,
    arrivals: mpsc::UnboundedReceiver<String>,
    streams: mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>,
}

impl HeldUpstream {
    async fn start() -> Self {
        let release = Arc::new(Semaphore::new(0));
        let (arrived_tx, arrivals) = mpsc::unbounded_channel();
        let (stream_tx, streams) = mpsc::unbounded_channel();
        let r = release.clone();
        let up = Upstream::spawn(move |req: Request<Incoming>| {
            let (release, arrived, streams) = (r.clone(), arrived_tx.clone(), stream_tx.clone());
            async move {
                let path = req.uri().path().to_owned();
                if path.contains("/stream/") {
                    let (tx, rx) = mpsc::channel::<Bytes>(1);
                    tx.send(Bytes::from_static(b"first\n"))
                        .await
                        .expect("first");
                    streams.send(tx).expect("stream sender");
                    return Response::new(ChannelBody(rx).boxed());
                }
                if path.contains("/hold/") {
                    arrived.send(path.clone()).expect("arrival");
                    release.acquire().await.expect("release").forget();
                }
                Response::new(full(format!("done {path}")))
            }
        })
        .await;
        Self {
            up,
            release,
            arrivals,
            streams,
        }
    }

    async fn arrived(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(10), self.arrivals.recv())
                .await
                .expect("arrival within 10s")
                .expect("arrival");
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body fed through a channel; ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

const CLASSES: &str = "classes:\n  realtime: { max_in_flight: 100 }\n  \
                       bulk: { max_in_flight: 2, queue: 2, queue_timeout: 10s }\n";

const ROUTES: &str = "routes:\n  - name: bulk\n    match: { path: \"/bulk/**\" }\n    public: true\n    class: bulk\n  \
                      - name: rt\n    match: { path: \"/rt/**\" }\n    public: true\n    class: realtime\n";

fn spawn_get(addr: SocketAddr, target: String) -> tokio::task::JoinHandle<RawResponse> {
    tokio::spawn(async move { get(addr, &target).await })
}

async fn gauge(admin: SocketAddr, series: &str) -> f64 {
    metric(admin, series).await.unwrap_or(-1.0)
}

async fn wait_gauge(admin: SocketAddr, series: &str, want: f64) {
    let ok = eventually(Duration::from_secs(10), || async move {
        gauge(admin, series).await == want
    })
    .await;
    assert!(
        ok,
        "{series} never reached {want} (is {})",
        gauge(admin, series).await
    );
}

/// Asserts the exact 503 `overloaded` answer.
fn assert_overloaded(r: &RawResponse) {
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let rid = r.header("x-request-id").expect("request id");
    assert_eq!(
        r.json(),
        json!({"error": "service_unavailable", "reason": "overloaded", "request_id": rid, "trace_id": trace_id(r)})
    );
}

#[tokio::test]
async fn a_bulk_flood_is_shed_while_realtime_passes() {
    let mut held = HeldUpstream::start().await;
    let fx = TestFortress::start(&config(held.up.addr, "", &format!("{CLASSES}{ROUTES}"))).await;
    let (addr, admin) = (fx.addr(), fx.admin());

    // Two bulk requests hold both permits in the upstream…
    let mut bulk = Vec::new();
    for i in 0..2 {
        bulk.push(spawn_get(addr, format!("/bulk/hold/{i}")));
    }
    held.arrived(2).await;
    // …two more wait in the class queue…
    for i in 2..4 {
        bulk.push(spawn_get(addr, format!("/bulk/hold/{i}")));
    }
    wait_gauge(admin, "fortress_class_queued{class=\"bulk\"}", 2.0).await;
    assert_eq!(
        gauge(admin, "fortress_class_in_flight{class=\"bulk\"}").await,
        2.0
    );
    // …and the next ones are refused at once, never reaching the upstream.
    for i in 4..7 {
        let r = get(addr, &format!("/bulk/hold/{i}")).await;
        assert_overloaded(&r);
    }
    assert_eq!(held.up.hits(), 2);
    // Realtime requests keep passing, one after another and at once.
    for i in 0..5 {
        let r = get(addr, &format!("/rt/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), format!("done /rt/{i}"));
    }
    let burst: Vec<_> = (0..20)
        .map(|i| spawn_get(addr, format!("/rt/burst/{i}")))
        .collect();
    for b in burst {
        assert_eq!(b.await.expect("join").status, 200);
    }
    assert_eq!(held.up.hits(), 27);
    assert_eq!(
        metric(
            admin,
            "fortress_refusals_total{reason=\"overloaded\",route=\"bulk\"}"
        )
        .await,
        Some(3.0)
    );

    // Release the upstream: the queued requests are admitted as permits free, and all four
    // bulk requests complete.
    held.release.add_permits(4);
    for (i, b) in bulk.into_iter().enumerate() {
        let r = b.await.expect("join");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), format!("done /bulk/hold/{i}"));
    }
    assert_eq!(held.up.hits(), 29);
    wait_gauge(admin, "fortress_class_in_flight{class=\"bulk\"}", 0.0).await;
    assert_eq!(
        gauge(admin, "fortress_class_queued{class=\"bulk\"}").await,
        0.0
    );
}

#[tokio::test]
async fn a_queued_request_is_refused_after_queue_timeout_and_admitted_when_a_permit_frees() {
    let mut held = HeldUpstream::start().await;
    let classes = "classes:\n  bulk: { max_in_flight: 1, queue: 1, queue_timeout: 200ms }\n  \
                   strict: { max_in_flight: 1 }\n";
    let routes = "routes:\n  - name: bulk\n    match: { path: \"/bulk/**\" }\n    public: true\n    class: bulk\n  \
                  - name: strict\n    match: { path: \"/strict/**\" }\n    public: true\n    class: strict\n";
    let fx = TestFortress::start(&config(held.up.addr, "", &format!("{classes}{routes}"))).await;
    let (addr, admin) = (fx.addr(), fx.admin());

    let first = tokio::spawn(get(addr, "/bulk/hold/1"));
    held.arrived(1).await;
    // Waits in the queue, then 503 once queue_timeout passed.
    let r = get(addr, "/bulk/hold/2").await;
    assert_overloaded(&r);
    assert_eq!(held.up.hits(), 1);
    assert_eq!(
        gauge(admin, "fortress_class_queued{class=\"bulk\"}").await,
        0.0
    );

    // No queue: refused at once.
    let strict = tokio::spawn(get(addr, "/strict/hold/1"));
    held.arrived(1).await;
    assert_overloaded(&get(addr, "/strict/hold/2").await);
    assert_eq!(held.up.hits(), 2);

    held.release.add_permits(2);
    assert_eq!(first.await.expect("join").status, 200);
    assert_eq!(strict.await.expect("join").status, 200);
    // Permits are back: the class takes requests again.
    let r = get(addr, "/bulk/now").await;
    assert_eq!((r.status, r.text()), (200, "done /bulk/now".to_owned()));
}

#[tokio::test]
async fn a_waiting_request_gets_the_permit_a_finished_one_frees() {
    let mut held = HeldUpstream::start().await;
    let classes = "classes:\n  bulk: { max_in_flight: 1, queue: 1, queue_timeout: 10s }\n";
    let routes = "routes:\n  - name: bulk\n    match: { path: \"/bulk/**\" }\n    public: true\n    class: bulk\n";
    let fx = TestFortress::start(&config(held.up.addr, "", &format!("{classes}{routes}"))).await;
    let (addr, admin) = (fx.addr(), fx.admin());
    let first = tokio::spawn(get(addr, "/bulk/hold/1"));
    held.arrived(1).await;
    let second = tokio::spawn(get(addr, "/bulk/hold/2"));
    wait_gauge(admin, "fortress_class_queued{class=\"bulk\"}", 1.0).await;
    assert_eq!(held.up.hits(), 1, "the queued request waits in fortress");
    held.release.add_permits(1);
    assert_eq!(first.await.expect("join").status, 200);
    // The queued request got the freed permit and reached the upstream.
    held.arrived(1).await;
    held.release.add_permits(1);
    let r = second.await.expect("join");
    assert_eq!((r.status, r.text()), (200, "done /bulk/hold/2".to_owned()));
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_gives_its_permit_back() {
    let mut held = HeldUpstream::start().await;
    let classes = "classes:\n  bulk: { max_in_flight: 1 }\n";
    let routes = "routes:\n  - name: bulk\n    match: { path: \"/bulk/**\" }\n    public: true\n    class: bulk\n";
    let fx = TestFortress::start(&config(held.up.addr, "", &format!("{classes}{routes}"))).await;
    let (addr, admin) = (fx.addr(), fx.admin());

    // A streamed response: the client reads its first chunk, the permit is held.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /bulk/stream/1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    while !buf.windows(6).any(|w| w == b"first\n") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("first chunk within 10s")
            .expect("read");
        assert!(n > 0, "stream ended early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let tx = held.streams.recv().await.expect("stream sender");
    assert_eq!(
        gauge(admin, "fortress_class_in_flight{class=\"bulk\"}").await,
        1.0
    );
    assert_overloaded(&get(addr, "/bulk/other").await);

    // The client goes away mid-stream. Fortress notices at the latest when it next writes;
    // once it dropped the response, the upstream's body sender fails.
    drop(tcp);
    let mut dropped = false;
    for _ in 0..400 {
        if tx.send(Bytes::from_static(b"more\n")).await.is_err() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        dropped,
        "fortress kept the upstream stream after the client left"
    );
    wait_gauge(admin, "fortress_class_in_flight{class=\"bulk\"}", 0.0).await;
    let r = get(addr, "/bulk/after").await;
    assert_eq!((r.status, r.text()), (200, "done /bulk/after".to_owned()));
}

fn token(sub: &str, tenant: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": sub, "tenant": tenant, "iss": "classes-test", "aud": "api", "iat": now, "exp": now + 600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn auth_block() -> String {
    format!(
        "authentication:\n  jwt:\n    issuer: classes-test\n    audiences: [api]\n    algorithms: [HS256]\n    \
         secret: {{ value: \"{SECRET}\" }}\n  claims: {{ subject: sub, tenant: tenant }}\n"
    )
}

#[tokio::test]
async fn one_tenant_cannot_take_a_whole_class() {
    let mut held = HeldUpstream::start().await;
    let classes = "classes:\n  bulk: { max_in_flight: 10, queue: 5, queue_timeout: 10s, per_tenant_max_in_flight: 2 }\n";
    let routes = "routes:\n  - name: bulk\n    match: { path: \"/bulk/**\" }\n    class: bulk\n";
    let fx = TestFortress::start(&config(
        held.up.addr,
        "allow_insecure_local: true",
        &format!("{}{classes}{routes}", auth_block()),
    ))
    .await;
    let addr = fx.addr();
    let t1 = format!("Bearer {}", token("alice", "t1"));
    let t2 = format!("Bearer {}", token("bob", "t2"));

    let mut holds = Vec::new();
    for i in 0..2 {
        let t1 = t1.clone();
        holds.push(tokio::spawn(async move {
            get_with(addr, &format!("/bulk/hold/{i}"), &[("authorization", &t1)]).await
        }));
    }
    held.arrived(2).await;
    // A third request of t1 is refused at once (it does not queue), although the class has
    // eight free permits.
    let r = get_with(addr, "/bulk/x", &[("authorization", &t1)]).await;
    assert_overloaded(&r);
    assert_eq!(held.up.hits(), 2);
    // Another tenant passes.
    let r = get_with(addr, "/bulk/y", &[("authorization", &t2)]).await;
    assert_eq!((r.status, r.text()), (200, "done /bulk/y".to_owned()));

    held.release.add_permits(2);
    for h in holds {
        assert_eq!(h.await.expect("join").status, 200);
    }
    let r = get_with(addr, "/bulk/z", &[("authorization", &t1)]).await;
    assert_eq!((r.status, r.text()), (200, "done /bulk/z".to_owned()));
}

/// `POST /admin/reload`.
async fn admin_reload(admin: SocketAddr) -> RawResponse {
    raw(
        admin,
        b"POST /admin/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
}

#[tokio::test]
async fn a_reload_that_keeps_a_class_keeps_its_in_flight_count() {
    let mut held = HeldUpstream::start().await;
    let routes = "routes:\n  - name: bulk\n    match: { path: \"/bulk/**\" }\n    public: true\n    class: bulk\n";
    let v1 = config(
        held.up.addr,
        "",
        &format!("classes:\n  bulk: {{ max_in_flight: 1 }}\n{routes}"),
    );
    let fx = TestFortress::start(&v1).await;
    let (addr, admin) = (fx.addr(), fx.admin());
    let first = tokio::spawn(get(addr, "/bulk/hold/1"));
    held.arrived(1).await;

    // Same class, another route added: the permit taken before the reload still counts.
    let v2 =
        format!("{v1}  - name: other\n    match: {{ path: \"/other/**\" }}\n    public: true\n");
    std::fs::write(&fx.config_path, &v2).expect("write");
    let r = admin_reload(admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(addr, "/other/x").await.status, 200, "v2 is active");
    assert_overloaded(&get(addr, "/bulk/x").await);

    // A changed class is a new gate: the request in flight finishes on the old one.
    let v3 = v2.replace("max_in_flight: 1", "max_in_flight: 2");
    std::fs::write(&fx.config_path, &v3).expect("write");
    let r = admin_reload(admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(addr, "/bulk/y").await;
    assert_eq!((r.status, r.text()), (200, "done /bulk/y".to_owned()));
    held.release.add_permits(1);
    assert_eq!(first.await.expect("join").status, 200);
    wait_gauge(admin, "fortress_class_in_flight{class=\"bulk\"}", 0.0).await;
}

#[tokio::test]
async fn a_dry_run_route_records_overloaded_and_forwards_without_waiting() {
    let mut held = HeldUpstream::start().await;
    let classes = "classes:\n  bulk: { max_in_flight: 1, queue: 5, queue_timeout: 10s }\n";
    let routes = "routes:\n  - name: trial\n    match: { path: \"/trial/**\" }\n    public: true\n    class: bulk\n    mode: dry-run\n";
    let fx = TestFortress::start(&config(held.up.addr, "", &format!("{classes}{routes}"))).await;
    let (addr, admin) = (fx.addr(), fx.admin());
    let first = spawn_get(addr, "/trial/hold/1".into());
    held.arrived(1).await;
    // Class full: recorded as `overloaded`, forwarded at once (no queueing, no permit).
    let r = get(addr, "/trial/now").await;
    assert_eq!((r.status, r.text()), (200, "done /trial/now".to_owned()));
    assert_eq!(
        gauge(admin, "fortress_class_queued{class=\"bulk\"}").await,
        0.0
    );
    assert_eq!(
        metric(
            admin,
            "fortress_refusals_total{reason=\"overloaded\",route=\"trial\"}"
        )
        .await,
        Some(1.0)
    );
    held.release.add_permits(1);
    assert_eq!(first.await.expect("join").status, 200);
    wait_gauge(admin, "fortress_class_in_flight{class=\"bulk\"}", 0.0).await;
}
