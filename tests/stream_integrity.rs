//! NDJSON stream integrity through a real fortress: valid streams pass unchanged and line by
//! line; every violation class ends the stream with the one error line; HTTP/2 clients see it
//! too; non-2xx and non-NDJSON responses pass unchecked; a 1 GiB stream in bounded memory.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use support::*;
use tokio::sync::{Mutex, mpsc};

const STREAMS: &str = "
streams:
  chat:
    order: [thinking, technical_view, data, business_view, end]
    repeatable: [thinking, data]
    required: [end]
    terminal: [end]
    trace_must_match_request: true
    max_line_bytes: 4KiB
    sql_guard: { field: sql, read_only: true, allowed_tables: [sales, customers] }
routes:
  - name: ask
    match: { methods: [POST], path: /api/ask }
    public: true
    stream: chat
  - name: other
    match: { path: \"/other/**\" }
    public: true
";

/// The trace id fortress sent upstream in `traceparent`.
fn trace_of(req: &Request<Incoming>) -> String {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .unwrap_or("")
        .to_owned()
}

fn line(kind: &str, trace: &str) -> String {
    format!("{{\"type\":\"{kind}\",\"trace_id\":\"{trace}\"}}\n")
}

fn ndjson(chunks: Vec<String>) -> Response<TestBody> {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(c))));
    let body = StreamBody::new(futures_stream(frames.collect()));
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut()
        .insert("content-type", "application/x-ndjson".parse().expect("hv"));
    r
}

/// A `Stream` over a ready list of frames.
fn futures_stream<T>(items: Vec<T>) -> fortress::demo::ReceiverStream<T> {
    let (tx, rx) = mpsc::channel(items.len().max(1));
    for i in items {
        // Capacity equals the item count, so this never fails.
        let _ = tx.try_send(i);
    }
    fortress::demo::ReceiverStream::new(rx)
}

/// An upstream whose `/api/ask` answers with `script(trace_id)` as body chunks.
async fn upstream(script: fn(&str) -> Vec<String>) -> Upstream {
    Upstream::spawn(move |req: Request<Incoming>| async move {
        let trace = trace_of(&req);
        ndjson(script(&trace))
    })
    .await
}

async fn post(addr: SocketAddr, path: &str) -> RawResponse {
    raw(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
}

fn error_line(trace: &str, reason: &str) -> String {
    format!(
        "{{\"type\":\"error\",\"trace_id\":\"{trace}\",\"error\":\"stream_integrity_violation\",\"reason\":\"{reason}\"}}\n"
    )
}

#[tokio::test]
async fn valid_stream_passes_unchanged() {
    let up = upstream(|t| {
        vec![
            line("thinking", t) + &line("thinking", t),
            // A line split across frames, and \r\n endings.
            "{\"type\":\"technical_view\",\"trace_id\":\"".to_string() + t,
            "\",\"sql\":\"SELECT c.name FROM customers c JOIN sales s ON s.cid = c.id\"}\r\n"
                .into(),
            line("data", t) + &line("data", t) + "\n",
            line("business_view", t),
            line("end", t),
        ]
    })
    .await;
    let fx = TestFortress::start(&config(up.addr, "", STREAMS)).await;
    let r = post(fx.addr(), "/api/ask").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), None);
    let trace = up.requests()[0].headers["traceparent"]
        .to_str()
        .expect("ascii")
        .split('-')
        .nth(1)
        .expect("trace")
        .to_owned();
    let t = trace.as_str();
    let expected = line("thinking", t)
        + &line("thinking", t)
        + "{\"type\":\"technical_view\",\"trace_id\":\""
        + t
        + "\",\"sql\":\"SELECT c.name FROM customers c JOIN sales s ON s.cid = c.id\"}\r\n"
        + &line("data", t)
        + &line("data", t)
        + &line("business_view", t)
        + &line("end", t);
    assert_eq!(
        r.text(),
        expected,
        "empty lines dropped, everything else unchanged"
    );
}

#[tokio::test]
async fn each_violation_ends_the_stream_with_one_error_line() {
    // (name, script, reason, number of valid lines forwarded before the error line)
    type Script = fn(&str) -> Vec<String>;
    let cases: Vec<(&str, Script, &str, usize)> = vec![
        (
            "backwards",
            |t| vec![line("data", t), line("thinking", t), line("end", t)],
            "out_of_order",
            1,
        ),
        (
            "repeat",
            |t| vec![line("business_view", t), line("business_view", t)],
            "repeated_type",
            1,
        ),
        (
            "unknown type",
            |t| vec![line("thinking", t), line("gossip", t)],
            "unknown_type",
            1,
        ),
        (
            "after end",
            |t| vec![line("end", t), line("data", t)],
            "after_terminal",
            1,
        ),
        (
            "truncated",
            |t| vec![line("thinking", t), line("data", t)],
            "missing_required",
            2,
        ),
        (
            "cut mid-line",
            |t| vec![line("thinking", t), "{\"type\":\"da".into()],
            "invalid_json",
            1,
        ),
        (
            "invalid json",
            |t| vec![line("thinking", t), "{\"type\":\"data\",\n".into()],
            "invalid_json",
            1,
        ),
        (
            "not an object",
            |_| vec!["[1,2]\n".into()],
            "not_an_object",
            0,
        ),
        (
            "control char",
            |t| {
                vec![
                    line("thinking", t),
                    "{\"type\":\"data\",\"x\":\"\u{1}\"}\n".into(),
                ]
            },
            "invalid_json",
            1,
        ),
        (
            "missing trace",
            |_| vec!["{\"type\":\"thinking\"}\n".into()],
            "missing_trace_id",
            0,
        ),
        (
            "wrong trace",
            |_| vec![line("thinking", "0123456789abcdef0123456789abcdef")],
            "trace_id_mismatch",
            0,
        ),
        (
            "duplicate type",
            |t| {
                vec![format!(
                    "{{\"type\":\"data\",\"type\":\"end\",\"trace_id\":\"{t}\"}}\n"
                )]
            },
            "duplicate_type",
            0,
        ),
        (
            "line too long",
            |t| {
                vec![
                    line("thinking", t),
                    format!(
                        "{{\"type\":\"data\",\"trace_id\":\"{t}\",\"x\":\"{}\"}}\n",
                        "a".repeat(5000)
                    ),
                ]
            },
            "line_too_long",
            1,
        ),
        (
            "sql write",
            |t| {
                vec![format!(
                    "{{\"type\":\"technical_view\",\"trace_id\":\"{t}\",\"sql\":\"DELETE FROM sales\"}}\n"
                )]
            },
            "sql_not_allowed",
            0,
        ),
        (
            "sql table",
            |t| {
                vec![format!(
                    "{{\"type\":\"technical_view\",\"trace_id\":\"{t}\",\"sql\":\"SELECT * FROM sales WHERE id IN (SELECT id FROM secrets)\"}}\n"
                )]
            },
            "sql_not_allowed",
            0,
        ),
        (
            "sql function",
            |t| {
                vec![
                    line("thinking", t),
                    format!(
                        "{{\"type\":\"technical_view\",\"trace_id\":\"{t}\",\"sql\":\"SELECT count(*), PG_CATALOG.pg_read_file('/etc/passwd') FROM sales\"}}\n"
                    ),
                ]
            },
            "sql_not_allowed",
            1,
        ),
        (
            "sql function in from",
            |t| {
                vec![format!(
                    "{{\"type\":\"technical_view\",\"trace_id\":\"{t}\",\"sql\":\"SELECT * FROM sales, LATERAL dblink('host=x', 'select 1') AS d(a int)\"}}\n"
                )]
            },
            "sql_not_allowed",
            0,
        ),
        (
            "sql reg cast",
            |t| {
                vec![format!(
                    "{{\"type\":\"technical_view\",\"trace_id\":\"{t}\",\"sql\":\"SELECT 'pg_sleep'::regproc FROM sales\"}}\n"
                )]
            },
            "sql_not_allowed",
            0,
        ),
        (
            "sql quoted table",
            |t| {
                vec![format!(
                    "{{\"type\":\"technical_view\",\"trace_id\":\"{t}\",\"sql\":\"SELECT * FROM \\\"Sales\\\"\"}}\n"
                )]
            },
            "sql_not_allowed",
            0,
        ),
    ];
    for (name, script, reason, valid_lines) in cases {
        let up = upstream(script).await;
        let fx = TestFortress::start(&config(up.addr, "", STREAMS)).await;
        let r = post(fx.addr(), "/api/ask").await;
        assert_eq!(r.status, 200, "{name}");
        let trace = trace_of_seen(&up);
        let text = r.text();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        assert_eq!(lines.len(), valid_lines + 1, "{name}: {text:?}");
        assert_eq!(lines[valid_lines], error_line(&trace, reason), "{name}");
        let series =
            format!(r#"fortress_stream_violations_total{{reason="{reason}",route="ask"}}"#);
        assert_eq!(metric(fx.admin(), &series).await, Some(1.0), "{name}");
    }
}

fn trace_of_seen(up: &Upstream) -> String {
    up.requests()[0].headers["traceparent"]
        .to_str()
        .expect("ascii")
        .split('-')
        .nth(1)
        .expect("trace")
        .to_owned()
}

#[tokio::test]
async fn lines_are_forwarded_as_they_complete_and_the_upstream_is_dropped_on_violation() {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let (closed_tx, mut closed_rx) = mpsc::channel::<()>(1);
    let up = Upstream::spawn(move |req: Request<Incoming>| {
        let rx = rx.clone();
        let closed_tx = closed_tx.clone();
        async move {
            let _ = trace_of(&req);
            let mut rx = rx.lock().await.take().expect("one stream");
            let (ftx, frx) = mpsc::channel(8);
            tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    if ftx.send(Ok(Frame::data(chunk))).await.is_err() {
                        // Fortress dropped the body: the upstream sees the close.
                        let _ = closed_tx.send(()).await;
                        return;
                    }
                }
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(
                fortress::demo::ReceiverStream::new(frx),
            )));
            r.headers_mut()
                .insert("content-type", "application/x-ndjson".parse().expect("hv"));
            r
        }
    })
    .await;
    let fx = TestFortress::start(&config(up.addr, "", STREAMS)).await;
    let mut client = h1(fx.addr()).await;
    let req = Request::post("/api/ask")
        .header("host", "a")
        .body(full(""))
        .expect("req");
    let send = tokio::spawn(async move { client.send_request(req).await });
    // The trace id is only known once the request reached the upstream.
    let trace = loop {
        if let Some(s) = up.requests().first() {
            break s.headers["traceparent"]
                .to_str()
                .expect("ascii")
                .split('-')
                .nth(1)
                .expect("t")
                .to_owned();
        }
        tokio::task::yield_now().await;
    };
    tx.send(Bytes::from(line("thinking", &trace)))
        .await
        .expect("send");
    let resp = send.await.expect("join").expect("response");
    let mut body = resp.into_body();
    let first = next_data(&mut body).await;
    assert_eq!(
        first,
        line("thinking", &trace),
        "first line arrives while the upstream is open"
    );
    // Half a line: nothing is forwarded until it completes.
    tx.send(Bytes::from("{\"type\":\"data\","))
        .await
        .expect("send");
    tx.send(Bytes::from(format!("\"trace_id\":\"{trace}\"}}\n")))
        .await
        .expect("send");
    assert_eq!(next_data(&mut body).await, line("data", &trace));
    // A violation: the error line, then the end of the body.
    tx.send(Bytes::from(line("thinking", &trace)))
        .await
        .expect("send");
    assert_eq!(
        next_data(&mut body).await,
        error_line(&trace, "out_of_order")
    );
    assert!(body.frame().await.is_none(), "nothing after the error line");
    // The upstream connection is dropped: its next write fails.
    let _ = tx.send(Bytes::from(line("end", &trace))).await;
    tokio::time::timeout(Duration::from_secs(5), closed_rx.recv())
        .await
        .expect("upstream closed promptly");
}

async fn next_data(body: &mut Incoming) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a frame in time")
        .expect("a frame")
        .expect("ok");
    String::from_utf8(frame.into_data().expect("data").to_vec()).expect("utf8")
}

#[tokio::test]
async fn http2_clients_see_the_error_line() {
    let up = upstream(|t| vec![line("thinking", t), line("data", t)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::new("stream");
    certs.write(dir.path());
    let yaml = config(
        up.addr,
        "tls: { cert: server.crt, key: server.key }",
        STREAMS,
    );
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, yaml).expect("write");
    let fx = fortress::Fortress::start(&path).await.expect("start");
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    let req = Request::post(format!(
        "https://localhost:{}/api/ask",
        fx.client_addr.port()
    ))
    .body(full(""))
    .expect("req");
    let resp = h2.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let text = String::from_utf8(body_bytes(resp).await.to_vec()).expect("utf8");
    let trace = trace_of_seen(&up);
    assert_eq!(
        text,
        line("thinking", &trace) + &line("data", &trace) + &error_line(&trace, "missing_required")
    );
}

#[tokio::test]
async fn non_2xx_and_non_ndjson_pass_unchecked_but_counted() {
    let up = Upstream::spawn(|req: Request<Incoming>| async move {
        let mut r = Response::new(full("not ndjson at all"));
        if req.uri().query() == Some("fail") {
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut()
                .insert("content-type", "application/x-ndjson".parse().expect("hv"));
        } else {
            r.headers_mut()
                .insert("content-type", "text/plain".parse().expect("hv"));
        }
        r
    })
    .await;
    let fx = TestFortress::start(&config(up.addr, "", STREAMS)).await;
    let r = post(fx.addr(), "/api/ask").await;
    assert_eq!((r.status, r.text().as_str()), (200, "not ndjson at all"));
    let r = post(fx.addr(), "/api/ask?fail").await;
    assert_eq!((r.status, r.text().as_str()), (503, "not ndjson at all"));
    for reason in ["content_type", "status"] {
        let series = format!(r#"fortress_stream_unchecked_total{{reason="{reason}",route="ask"}}"#);
        assert_eq!(metric(fx.admin(), &series).await, Some(1.0), "{reason}");
    }
}

#[tokio::test]
async fn a_1_gib_stream_passes_in_bounded_memory() {
    const TOTAL: u64 = 1 << 30;
    let up = Upstream::spawn(|req: Request<Incoming>| async move {
        let trace = trace_of(&req);
        // ~8 KiB data lines, 64 lines a frame (~512 KiB), then `end`.
        let payload = "x".repeat(8 * 1024 - 64);
        let data = format!("{{\"type\":\"data\",\"trace_id\":\"{trace}\",\"p\":\"{payload}\"}}\n");
        let chunk = Bytes::from(data.repeat(64));
        let frames = TOTAL.div_ceil(chunk.len() as u64);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let first = Frame::data(Bytes::from(line("thinking", &trace)));
            if tx
                .send(Ok::<_, Box<dyn std::error::Error + Send + Sync>>(first))
                .await
                .is_err()
            {
                return;
            }
            for _ in 0..frames {
                if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                    return;
                }
            }
            let _ = tx
                .send(Ok(Frame::data(Bytes::from(line("end", &trace)))))
                .await;
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(
            fortress::demo::ReceiverStream::new(rx),
        )));
        r.headers_mut()
            .insert("content-type", "application/x-ndjson".parse().expect("hv"));
        r
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        config(up.addr, "", &STREAMS.replace("4KiB", "64KiB")),
    )
    .expect("write");
    let fx = FortressProcess::spawn(&path);
    let mut client = h1(fx.addr).await;
    let req = Request::post("/api/ask")
        .header("host", "a")
        .body(full(""))
        .expect("req");
    let resp = client.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (mut bytes, mut last) = (0u64, Vec::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            bytes += data.len() as u64;
            last = data.to_vec();
        }
    }
    assert!(bytes >= TOTAL, "{bytes}");
    let tail = String::from_utf8_lossy(&last);
    assert!(
        tail.contains("\"type\":\"end\""),
        "the stream ended with its own end line"
    );
    assert!(!tail.contains("stream_integrity_violation"), "{tail}");
    let rss = fx.peak_rss_kib();
    eprintln!("1 GiB NDJSON stream: fortress peak RSS {rss} KiB");
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB");
}

/// A named upstream script and the violation it should cause.
type Case = (&'static str, fn(&str) -> Vec<String>, &'static str);

/// An upstream whose `/api/ask` answers with `script(trace_id)`, and any other path with
/// `ok`; every request records the upstream connection it came on.
async fn pooled_upstream(script: fn(&str) -> Vec<String>) -> Upstream {
    Upstream::spawn(move |req: Request<Incoming>| async move {
        if req.uri().path() == "/api/ask" {
            let trace = trace_of(&req);
            ndjson(script(&trace))
        } else {
            Response::new(full("ok"))
        }
    })
    .await
}

#[tokio::test]
async fn a_stream_violation_takes_the_upstream_connection_out_of_the_pool() {
    // Each class, found at different places: at EOF after a complete HTTP response (the
    // connection would otherwise be reusable), mid-stream, and in the first line.
    let cases: Vec<Case> = vec![
        (
            "missing end, found at EOF",
            |t| vec![line("thinking", t), line("data", t)],
            "missing_required",
        ),
        (
            "cut mid-line at EOF",
            |t| vec![line("thinking", t), "{\"type\":\"da".into()],
            "invalid_json",
        ),
        (
            "out of order in the last frame",
            |t| vec![line("data", t) + &line("thinking", t)],
            "out_of_order",
        ),
        (
            "wrong trace id in the first line",
            |_| vec![line("thinking", "0000"), line("end", "0000")],
            "trace_id_mismatch",
        ),
        (
            "lone surrogate escape",
            |t| {
                vec![format!(
                    "{{\"type\":\"end\",\"trace_id\":\"{t}\",\"text\":\"\\ud800\"}}\n"
                )]
            },
            "invalid_escape",
        ),
    ];
    for (name, script, reason) in cases {
        let up = pooled_upstream(script).await;
        let fx = TestFortress::start(&config(up.addr, "", STREAMS)).await;
        let r = post(fx.addr(), "/api/ask").await;
        assert_eq!(r.status, 200, "{name}");
        assert!(
            r.text().ends_with(&format!("\"reason\":\"{reason}\"}}\n")),
            "{name}: {}",
            r.text()
        );
        for _ in 0..3 {
            assert_eq!(get(fx.addr(), "/other/x").await.status, 200, "{name}");
        }
        let seen = up.requests();
        let bad = seen[0].conn;
        assert!(
            seen[1..].iter().all(|s| s.conn != bad),
            "{name}: the connection of the violating stream was reused: {:?}",
            seen.iter().map(|s| s.conn).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_stream_violation_drops_a_kept_client_connections_upstream_connection() {
    // An HTTP/1.1 client connection sends on its own upstream connection: the violation is
    // found at EOF of a complete response, and the next request on the same client
    // connection goes out on a new upstream connection.
    let up = pooled_upstream(|t| vec![line("thinking", t), line("data", t)]).await;
    let fx = TestFortress::start(&config(up.addr, "", STREAMS)).await;
    let mut c = h1(fx.addr()).await;
    let send = |target: &'static str, method: &'static str| {
        Request::builder()
            .method(method)
            .uri(target)
            .header("host", "a")
            .body(full(""))
            .expect("request")
    };
    let resp = c.send_request(send("/other/1", "GET")).await.expect("resp");
    assert_eq!(resp.status(), 200);
    body_bytes(resp).await;
    c.ready().await.expect("ready");
    let resp = c
        .send_request(send("/api/ask", "POST"))
        .await
        .expect("resp");
    assert_eq!(resp.status(), 200);
    let body = String::from_utf8_lossy(&body_bytes(resp).await).into_owned();
    assert!(
        body.ends_with("\"reason\":\"missing_required\"}\n"),
        "{body}"
    );
    for _ in 0..2 {
        c.ready().await.expect("ready");
        let resp = c.send_request(send("/other/2", "GET")).await.expect("resp");
        assert_eq!(resp.status(), 200);
        body_bytes(resp).await;
    }
    let conns: Vec<(String, usize)> = up
        .requests()
        .iter()
        .map(|s| (s.target.clone(), s.conn))
        .collect();
    assert_eq!(
        conns[0].1, conns[1].1,
        "kept before the violation: {conns:?}"
    );
    assert_ne!(
        conns[1].1, conns[2].1,
        "dropped after the violation: {conns:?}"
    );
    assert_eq!(conns[2].1, conns[3].1, "the new one is kept: {conns:?}");
}

#[tokio::test]
async fn a_clean_stream_leaves_its_connection_reusable() {
    // The control for the test above: without a violation the pool does reuse connections,
    // so "never reused" there is not an artefact of the setup.
    let up = pooled_upstream(|t| vec![line("thinking", t), line("end", t)]).await;
    let fx = TestFortress::start(&config(up.addr, "", STREAMS)).await;
    assert_eq!(post(fx.addr(), "/api/ask").await.status, 200);
    for _ in 0..5 {
        assert_eq!(get(fx.addr(), "/other/x").await.status, 200);
    }
    let seen = up.requests();
    let conns: std::collections::BTreeSet<usize> = seen.iter().map(|s| s.conn).collect();
    assert!(
        conns.len() < seen.len(),
        "no request reused a connection: {conns:?}"
    );
}

#[tokio::test]
async fn a_last_line_without_newline_is_a_complete_line() {
    let up = upstream(|t| vec![line("thinking", t), line("end", t).trim_end().to_owned()]).await;
    let fx = TestFortress::start(&config(up.addr, "", STREAMS)).await;
    let r = post(fx.addr(), "/api/ask").await;
    assert_eq!(r.status, 200);
    let trace = trace_of_seen(&up);
    let expected = line("thinking", &trace) + line("end", &trace).trim_end();
    assert_eq!(r.text(), expected);
    let series = r#"fortress_stream_violations_total{reason="missing_required",route="ask"}"#;
    assert_eq!(metric(fx.admin(), series).await, None);
}

const DRY_RUN_STREAMS: &str = "
streams:
  chat:
    order: [thinking, data, end]
    repeatable: [data]
    required: [end]
    trace_must_match_request: true
routes:
  - name: ask
    match: { methods: [POST], path: /api/ask }
    public: true
    mode: dry-run
    stream: chat
";

#[tokio::test]
async fn dry_run_records_a_stream_violation_and_does_not_cut_the_stream() {
    // Violations of several classes, each followed by more lines: in dry-run every byte
    // reaches the client as the upstream sent it, and the first violation is counted.
    let cases: Vec<Case> = vec![
        (
            "out of order",
            |t| vec![line("data", t), line("thinking", t), line("end", t)],
            "out_of_order",
        ),
        (
            "invalid json mid-stream",
            |t| vec![line("thinking", t), "{nope\n".into(), line("end", t)],
            "invalid_json",
        ),
        (
            "unknown type, then missing end",
            |t| vec![line("thinking", t), line("weird", t)],
            "unknown_type",
        ),
        (
            "missing end only",
            |t| vec![line("thinking", t), line("data", t)],
            "missing_required",
        ),
    ];
    for (name, script, reason) in cases {
        let up = upstream(script).await;
        let fx = TestFortress::start(&config(up.addr, "", DRY_RUN_STREAMS)).await;
        let r = post(fx.addr(), "/api/ask").await;
        assert_eq!(r.status, 200, "{name}");
        let trace = trace_of_seen(&up);
        assert_eq!(
            r.text(),
            script(&trace).concat(),
            "{name}: forwarded unchanged"
        );
        assert!(!r.text().contains("stream_integrity_violation"), "{name}");
        let series =
            format!(r#"fortress_stream_violations_total{{reason="{reason}",route="ask"}}"#);
        assert!(
            eventually(Duration::from_secs(5), || async {
                metric(fx.admin(), &series).await == Some(1.0)
            })
            .await,
            "{name}: {series}"
        );
    }
}

/// A stream route asks the app for an uncompressed stream; an app that compresses anyway gets
/// its stream refused (its lines cannot be checked) with a plain, readable error line, and
/// the upstream connection is not reused. On a dry-run route the stream passes unchanged and
/// the violation is recorded.
#[tokio::test]
async fn compressed_streams_are_refused_with_a_readable_error_line() {
    let up = Upstream::spawn(|req: Request<Incoming>| async move {
        let trace = trace_of(&req);
        let asked = req
            .headers()
            .get_all("accept-encoding")
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>()
            .join("|");
        let mut r = ndjson(vec![line("thinking", &trace), line("end", &trace)]);
        r.headers_mut()
            .insert("x-asked-encoding", asked.parse().expect("hv"));
        if req.uri().query() != Some("plain") {
            r.headers_mut()
                .insert("content-encoding", "gzip".parse().expect("hv"));
        }
        r
    })
    .await;
    let streams = STREAMS.to_owned()
        + "  - name: trial\n    match: { methods: [POST], path: /api/trial }\n    public: true\n    \
           stream: chat\n    mode: dry-run\n";
    let fx = TestFortress::start(&config(up.addr, "", &streams)).await;
    let send = |path: &'static str| {
        let addr = fx.addr();
        async move {
            raw(
                addr,
                format!(
                    "POST {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\
                     Accept-Encoding: gzip, br\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
        }
    };
    // Uncompressed: passes, and the app was asked for identity whatever the client accepts.
    let r = send("/api/ask?plain").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-asked-encoding"), Some("identity"));
    assert_eq!(r.header("content-encoding"), None);
    let trace = last_trace(&up);
    assert_eq!(
        r.text(),
        format!("{}{}", line("thinking", &trace), line("end", &trace))
    );
    // Compressed anyway: only the error line, as plain text.
    let r = send("/api/ask").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    let trace = last_trace(&up);
    assert_eq!(r.text(), error_line(&trace, "content_encoded"));
    let series = r#"fortress_stream_violations_total{reason="content_encoded",route="ask"}"#;
    assert_eq!(metric(fx.admin(), series).await, Some(1.0));
    // Dry-run: forwarded unchanged (still compressed as the app sent it), recorded.
    let r = send("/api/trial").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let trace = last_trace(&up);
    assert_eq!(
        r.text(),
        format!("{}{}", line("thinking", &trace), line("end", &trace))
    );
}

/// The trace id of the upstream's latest request.
fn last_trace(up: &Upstream) -> String {
    let seen = up.requests().pop().expect("a request");
    seen.headers["traceparent"]
        .to_str()
        .expect("ascii")
        .split('-')
        .nth(1)
        .expect("trace")
        .to_owned()
}
