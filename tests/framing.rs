//! Request framing from clients (RFC 9112 §6–7): what the HTTP/1 raw-byte guard refuses
//! before hyper parses the request, what fortress's framing stage refuses on the parsed head,
//! and broken bodies found while forwarding: always 400 and close, never 502, never an
//! upstream error. (More guard variants: `tests/h1_guard.rs`.)
//! Variants from RFC 9112 §6–7 and the smuggling literature (HTTP Garden, Http11Probe,
//! PortSwigger's request smuggling labs).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream that reads the whole body and answers with it; records every complete body.
async fn body_upstream() -> (Upstream, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let up = Upstream::spawn(move |req| {
        let seen = seen.clone();
        async move {
            match req.into_body().collect().await {
                Ok(b) => {
                    let b = b.to_bytes();
                    seen.lock().expect("lock").push(b.to_vec());
                    Response::new(full(b))
                }
                Err(_) => Response::new(full("broken")),
            }
        }
    })
    .await;
    (up, bodies)
}

/// Sends `request`, optionally half-closes, and reads until fortress closes (EOF or reset).
/// Returns the response and whether the connection was closed.
async fn send_and_read(addr: SocketAddr, request: &[u8], half_close: bool) -> RawResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    if half_close {
        tcp.shutdown().await.expect("shutdown");
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut chunk))
            .await
            .expect("fortress answers and closes within 20s")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    parse_response(&buf)
}

fn post(head_extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("POST /submit HTTP/1.1\r\nHost: app.test\r\n{head_extra}\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

async fn counter(admin: SocketAddr, series: &str) -> f64 {
    metric(admin, series).await.unwrap_or(-1.0)
}

const UPSTREAM_ERRORS: [&str; 3] = [
    r#"fortress_upstream_errors_total{kind="connect"}"#,
    r#"fortress_upstream_errors_total{kind="protocol"}"#,
    r#"fortress_upstream_errors_total{kind="timeout"}"#,
];

async fn assert_no_upstream_errors(admin: SocketAddr) {
    for s in UPSTREAM_ERRORS {
        assert_eq!(counter(admin, s).await, 0.0, "{s}");
    }
}

#[tokio::test]
async fn framing_raw_head_guard_answers_with_fortress_json() {
    // What hyper's parser used to refuse with its own empty 400 (or normalized away) is
    // now refused first by the HTTP/1 raw-byte guard (`server::h1_guard`): fortress's JSON,
    // a request id, `Connection: close`, the same reasons as the framing stage.
    let (up, _) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let cases: &[(&[u8], &str)] = &[
        // Codings whose last one is not `chunked` (RFC 9112 §6.3 item 4).
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            "unsupported_transfer_coding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            "unsupported_transfer_coding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            "unsupported_transfer_coding",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            "repeated_transfer_encoding",
        ),
        // obs-fold (RFC 9112 §5.2: a server must refuse it or replace it).
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip,\r\n chunked\r\n\r\n0\r\n\r\n",
            "malformed_head",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
            "malformed_head",
        ),
        // Whitespace before the colon (RFC 9112 §5.1).
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            "malformed_head",
        ),
        // Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1).
        (
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "transfer_encoding_not_allowed",
        ),
        // Content-Length lists, signs, hex, overflow, duplicates (RFC 9112 §6.3).
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
            "invalid_content_length",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            "repeated_content_length",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
            "invalid_content_length",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "invalid_content_length",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
            "invalid_content_length",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello",
            "invalid_content_length",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "invalid_content_length",
        ),
        // Bare CR as a line ending in the head (RFC 9112 §2.2).
        (
            b"POST / HTTP/1.1\rHost: a\r\nContent-Length: 0\r\n\r\n",
            "malformed_head",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\rContent-Length: 0\r\n\r\n",
            "malformed_head",
        ),
    ];
    for (req, reason) in cases {
        let shown = String::from_utf8_lossy(req);
        let r = send_and_read(fx.addr(), req, false).await;
        assert_eq!(r.status, 400, "{shown:?}");
        assert_eq!(r.header("connection"), Some("close"), "{shown:?}");
        assert_eq!(r.json()["reason"], *reason, "{shown:?}");
        assert!(r.header("x-request-id").is_some(), "{shown:?}");
    }
    assert_eq!(up.hits(), 0, "nothing reached the upstream");
    assert_no_upstream_errors(fx.admin()).await;
    // The process survives and serves the next client.
    let r = send_and_read(
        fx.addr(),
        &post("Content-Length: 2\r\nConnection: close\r\n", b"ok"),
        false,
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

#[tokio::test]
async fn framing_head_size_is_bounded_by_the_read_buffer() {
    // HTTP/1.1 heads up to 96 KiB (the default `server.max_header_bytes`) pass; beyond, the
    // guard answers 431 (the same limit as HTTP/2's SETTINGS_MAX_HEADER_LIST_SIZE).
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let big = |n: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(n)
        )
    };
    let r = send_and_read(fx.addr(), big(90 * 1024).as_bytes(), false).await;
    assert_eq!(r.status, 200);
    let r = send_and_read(fx.addr(), big(100 * 1024).as_bytes(), false).await;
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "request_header_fields_too_large");
    assert_eq!(r.json()["reason"], "header_bytes");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn framing_stage_refuses_what_hyper_lets_through() {
    let (up, _) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let cases: &[(&str, &str)] = &[
        // hyper only checks that `chunked` is the last coding; fortress strips
        // Transfer-Encoding and re-frames, so any other coding would reach the app undeclared.
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            "unsupported_transfer_coding",
        ),
        (
            "Transfer-Encoding: identity, chunked\r\n",
            "unsupported_transfer_coding",
        ),
        (
            "Transfer-Encoding: chunked, chunked\r\n",
            "unsupported_transfer_coding",
        ),
        (
            "Transfer-Encoding: Chunked\r\n",
            "unsupported_transfer_coding",
        ),
        (
            "Transfer-Encoding: CHUNKED\r\n",
            "unsupported_transfer_coding",
        ),
        (
            "Transfer-Encoding: x, chunked\r\n",
            "unsupported_transfer_coding",
        ),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "repeated_transfer_encoding",
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "repeated_transfer_encoding",
        ),
        (
            "Transfer-Encoding: \r\nTransfer-Encoding: chunked\r\n",
            "repeated_transfer_encoding",
        ),
    ];
    for (head, reason) in cases {
        let req = post(head, b"5\r\nhello\r\n0\r\n\r\n");
        let r = send_and_read(fx.addr(), &req, false).await;
        assert_eq!(r.status, 400, "{head:?}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{head:?}");
        assert_eq!(r.json()["reason"], *reason, "{head:?}");
    }
    // Leading zeros beyond 19 digits in Content-Length.
    let req = post("Content-Length: 00000000000000000005\r\n", b"hello");
    let r = send_and_read(fx.addr(), &req, false).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "invalid_content_length");
    assert_eq!(up.hits(), 0, "nothing reached the upstream");
    assert_no_upstream_errors(fx.admin()).await;
}

#[tokio::test]
async fn framing_broken_bodies_are_400_and_never_upstream_errors() {
    let (up, bodies) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let te = "Transfer-Encoding: chunked\r\n";
    let ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(20 * 1024));
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // Chunk sizes that are not plain hex (RFC 9112 §7.1: chunk-size = 1*HEXDIG).
        (te, b"0x5\r\nhello\r\n0\r\n\r\n".to_vec(), false),
        (te, b"+5\r\nhello\r\n0\r\n\r\n".to_vec(), false),
        (te, b"-1\r\nhello\r\n0\r\n\r\n".to_vec(), false),
        (te, b" 5\r\nhello\r\n0\r\n\r\n".to_vec(), false),
        (te, b"5_0\r\nhello\r\n0\r\n\r\n".to_vec(), false),
        (te, b"\r\nhello\r\n0\r\n\r\n".to_vec(), false),
        // Whitespace after the size and leading zeros (hyper accepts them; a parser that
        // caps digits or stops at whitespace may read another size): the guard refuses.
        (te, b"5 \r\nhello\r\n0\r\n\r\n".to_vec(), false),
        (te, b"5\t\r\nhello\r\n0\r\n\r\n".to_vec(), false),
        (te, b"0000000005\r\nhello\r\n0\r\n\r\n".to_vec(), false),
        // Sizes that overflow 64 bits.
        (
            te,
            b"10000000000000000\r\nhello\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        (
            te,
            b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        // Bad extension syntax: bare LF in it, over hyper's 16 KiB extension limit.
        (te, b"5;a\nhello\r\n0\r\n\r\n".to_vec(), false),
        (te, ext.into_bytes(), false),
        // Bare LF / bare CR as line endings in chunk lines.
        (te, b"5\nhello\r\n0\r\n\r\n".to_vec(), false),
        (te, b"5\r\nhello\n0\r\n\r\n".to_vec(), false),
        (te, b"5\r\nhello\r0\r\n\r\n".to_vec(), false),
        (te, b"5\rhello\r\n0\r\n\r\n".to_vec(), false),
        // Chunk data longer or shorter than its size.
        (te, b"5\r\nhelloXX\r\n0\r\n\r\n".to_vec(), false),
        (te, b"5\r\nhel\r\n0\r\n\r\n".to_vec(), false),
        // A body cut short (the client half-closes before it is complete).
        (te, b"5\r\nhel".to_vec(), true),
        ("Content-Length: 10\r\n", b"hello".to_vec(), true),
    ];
    for (i, (head, body, half_close)) in cases.iter().enumerate() {
        let r = send_and_read(fx.addr(), &post(head, body), *half_close).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        assert_eq!(r.status, 400, "{shown:?}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{shown:?}");
        assert_eq!(r.json()["reason"], "malformed_body", "{shown:?}");
        assert_eq!(
            counter(fx.admin(), "fortress_client_body_errors_total").await,
            (i + 1) as f64,
            "{shown:?}"
        );
    }
    assert!(
        bodies.lock().expect("lock").is_empty(),
        "no complete body reached the upstream"
    );
    assert_no_upstream_errors(fx.admin()).await;
    // Counted as denials, with the 4xx class.
    let denied = counter(
        fx.admin(),
        r#"fortress_requests_total{decision="deny",method="POST",mode="enforce",route="all",status="4xx"}"#,
    )
    .await;
    assert_eq!(denied, cases.len() as f64);
    // The process survives.
    let r = send_and_read(
        fx.addr(),
        &post("Content-Length: 2\r\nConnection: close\r\n", b"ok"),
        false,
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

#[tokio::test]
async fn framing_chunk_extensions_and_trailers_are_reframed_for_the_upstream() {
    // Well-formed extensions (RFC 9112 §7.1.1) and trailers pass the guard; fortress never
    // passes the client's chunk lines on: the upstream gets the decoded bytes re-framed.
    // (Whitespace after the size and leading zeros are refused: see above.)
    let (up, bodies) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let cases: &[&[u8]] = &[
        b"5;name=value\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"q\\\"x\"\r\nhello\r\n0\r\n\r\n",
        b"2\r\nhe\r\n3\r\nllo\r\n0\r\nTrailer: x\r\n\r\n",
    ];
    for body in cases {
        let req = post("Transfer-Encoding: chunked\r\nConnection: close\r\n", body);
        let r = send_and_read(fx.addr(), &req, false).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "hello"),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(bodies.lock().expect("lock").len(), cases.len());
    for seen in up.requests() {
        assert!(
            seen.headers.get("content-length").is_none()
                || seen.headers.get("transfer-encoding").is_none()
        );
        assert!(seen.headers.get("trailer").is_none());
    }
    assert_no_upstream_errors(fx.admin()).await;
}

#[tokio::test]
async fn framing_content_length_with_chunked_is_refused() {
    // RFC 9112 §6.3 lets a server read both as chunked and close; hyper drops
    // Content-Length from the parsed head, so the framing stage never saw both. The raw
    // guard does: 400 and close, nothing forwarded (an app or proxy that honours
    // Content-Length would read a smuggled request in the body).
    let (up, bodies) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    for head in [
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    ] {
        let mut req = post(head, b"5\r\nhello\r\n0\r\n\r\n");
        req.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = send_and_read(fx.addr(), &req, false).await;
        assert_eq!(r.status, 400, "{head:?}");
        assert_eq!(r.header("connection"), Some("close"), "{head:?}");
        assert_eq!(
            r.json()["reason"],
            "content_length_with_transfer_encoding",
            "{head:?}"
        );
    }
    assert!(bodies.lock().expect("lock").is_empty());
    assert_eq!(up.hits(), 0);
}
