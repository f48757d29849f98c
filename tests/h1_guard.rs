//! The HTTP/1 raw-byte guard (`server::h1_guard`): request heads and chunked bodies that
//! hyper's parser would accept but an app server or another proxy may read differently are
//! refused with fortress's JSON 400 (or 431 for the head limits) and the connection closed;
//! the upstream never sees the request. Variants from RFC 9112 (§2.2 line endings, §3
//! request line, §5 field syntax, §6.1/§6.3 framing, §7.1 chunked coding) and the request
//! smuggling literature (CL.TE, TE.CL, TE.TE, chunk-size tricks, bare-LF desyncs).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` and reads until fortress closes the connection (EOF or reset); fails if
/// it stays open for 20 s. Returns every byte received.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut chunk))
            .await
            .expect("fortress answers and closes within 20s")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

/// Splits a byte stream of responses with `Content-Length` bodies.
fn responses(mut buf: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = parse_response(&buf[..end + 4]);
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let total = (end + 4 + len).min(buf.len());
        out.push(parse_response(&buf[..total]));
        buf = &buf[total..];
    }
    out
}

/// Asserts a guard refusal: the exact status, JSON body and `Connection: close`.
fn assert_refused(r: &RawResponse, status: u16, error: &str, reason: &str, shown: &str) {
    assert_eq!(r.status, status, "{shown}: {}", r.text());
    assert_eq!(r.header("connection"), Some("close"), "{shown}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{shown}"
    );
    let json = r.json();
    assert_eq!(json["error"], error, "{shown}");
    assert_eq!(json["reason"], reason, "{shown}");
    let id = json["request_id"].as_str().expect("request id");
    assert_eq!(r.header("x-request-id"), Some(id), "{shown}");
    assert_eq!(json["trace_id"], trace_id(r).as_str(), "{shown}");
    assert_eq!(
        json.as_object().expect("object").len(),
        4,
        "no internals: {shown}"
    );
}

const MALFORMED: &str = "malformed_head";

/// Request heads hyper accepts (or normalizes) that the guard refuses, with the reason.
fn head_cases() -> Vec<(Vec<u8>, &'static str)> {
    let c = |s: &[u8], reason: &'static str| (s.to_vec(), reason);
    vec![
        // Bare LF line endings (RFC 9112 §2.2), in every position.
        c(b"GET / HTTP/1.1\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHost: a\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHost: a\r\n\n", MALFORMED),
        c(b"GET / HTTP/1.1\nHost: a\n\n", MALFORMED),
        c(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nX: y\nContent-Length: 5\r\n\r\nhello",
            MALFORMED,
        ),
        // Lone CR.
        c(b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", MALFORMED),
        // Request line: spacing, method, target bytes, version (RFC 9112 §3).
        c(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET /\tx HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET /a\xe8u HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.01\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/01.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET / http/1.1\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", MALFORMED),
        c(b"GET /\r\nHost: a\r\n\r\n", MALFORMED),
        // Field syntax (RFC 9112 §5): obs-fold, whitespace before the colon, empty or
        // non-token names, control bytes in values.
        c(b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", MALFORMED),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello",
            MALFORMED,
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
            MALFORMED,
        ),
        c(b"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHost: a\r\nno-colon\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x1bb\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n", MALFORMED),
        c(b"GET / HTTP/1.1\r\nHo\x00st: a\r\n\r\n", MALFORMED),
        // CL.TE / TE.CL: both framings (hyper drops Content-Length and reads chunked).
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            "content_length_with_transfer_encoding",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
            "content_length_with_transfer_encoding",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "content_length_with_transfer_encoding",
        ),
        // TE.TE: obfuscated or repeated Transfer-Encoding.
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: x\r\n\r\n0\r\n\r\n",
            "repeated_transfer_encoding",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            "unsupported_transfer_coding",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            "unsupported_transfer_coding",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
            "unsupported_transfer_coding",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n",
            MALFORMED,
        ),
        c(
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "transfer_encoding_not_allowed",
        ),
        // Repeated Content-Length, even equal; lists, signs.
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            "repeated_content_length",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            "repeated_content_length",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
            "invalid_content_length",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
            "invalid_content_length",
        ),
        c(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "invalid_content_length",
        ),
    ]
}

#[tokio::test]
async fn guard_refuses_ambiguous_heads_with_json_400_and_closes() {
    let (up, _) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    for (req, reason) in head_cases() {
        let shown = format!("{:?}", String::from_utf8_lossy(&req));
        let got = responses(&exchange(fx.addr(), &req).await);
        assert_eq!(got.len(), 1, "{shown}");
        assert_refused(&got[0], 400, "bad_request", reason, &shown);
    }
    assert_eq!(up.hits(), 0, "nothing reached the upstream");
    // Counted as denials (4xx).
    let denied = metric(fx.admin(), DENIED).await;
    assert_eq!(denied, Some(head_cases().len() as f64));
}

#[tokio::test]
async fn requests_before_the_bad_one_are_served_and_nothing_after_it() {
    let (up, _) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let good = b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let after = b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n";
    for (i, (bad, reason)) in head_cases().into_iter().enumerate() {
        let mut req = good.clone();
        req.extend_from_slice(&bad);
        req.extend_from_slice(after);
        let shown = format!("{:?}", String::from_utf8_lossy(&bad));
        let got = responses(&exchange(fx.addr(), &req).await);
        assert_eq!(got.len(), 2, "{shown}");
        assert_eq!(
            (got[0].status, got[0].text().as_str()),
            (200, "hello"),
            "{shown}"
        );
        assert_refused(&got[1], 400, "bad_request", reason, &shown);
        assert_eq!(up.hits(), i + 1, "{shown}");
    }
    for seen in up.requests() {
        assert_eq!(seen.target, "/first");
    }
}

#[tokio::test]
async fn valid_pipelined_requests_are_all_served() {
    let (up, bodies) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let req = b"\r\nGET /one HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
        POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ndef\r\n0\r\n\r\n\
        GET /four HTTP/1.0\r\nHost: a\r\nX-Obs-Text: caf\xc3\xa9\r\n\r\n";
    let got = responses(&exchange(fx.addr(), req).await);
    let summary: Vec<(u16, String)> = got.iter().map(|r| (r.status, r.text())).collect();
    assert_eq!(
        summary,
        vec![
            (200, String::new()),
            (200, "abc".into()),
            (200, "def".into()),
            (200, String::new())
        ]
    );
    let targets: Vec<String> = up.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/one", "/two", "/three", "/four"]);
    assert_eq!(bodies.lock().expect("lock").len(), 4);
}

#[tokio::test]
async fn chunked_uploads_with_extensions_and_trailers_are_forwarded_byte_exact() {
    let (up, bodies) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let mut body = Vec::new();
    // A large chunk, a chunk with extensions (token and quoted values), a 1-byte chunk,
    // upper-case hex, trailers.
    body.extend_from_slice(format!("{:X};name=value;flag\r\n", 65_536).as_bytes());
    body.extend_from_slice(&data[..65_536]);
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(format!("{:x};q=\"a \\\" b\"\r\n", 4463).as_bytes());
    body.extend_from_slice(&data[65_536..69_999]);
    body.extend_from_slice(b"\r\n1\r\n");
    body.extend_from_slice(&data[69_999..]);
    body.extend_from_slice(b"\r\n0;last=1\r\nX-Checksum: abc\r\nX-Other: d e\r\n\r\n");
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    req.extend_from_slice(&body);
    // Also written in small pieces, so heads and chunk lines straddle reads.
    for pieces in [1usize, 7] {
        let mut tcp = TcpStream::connect(fx.addr()).await.expect("connect");
        if pieces == 1 {
            tcp.write_all(&req).await.expect("write");
        } else {
            for part in req.chunks(req.len() / pieces + 1) {
                tcp.write_all(part).await.expect("write");
                tcp.flush().await.expect("flush");
            }
        }
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        let r = parse_response(&buf);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), data.len());
    }
    let seen = bodies.lock().expect("lock").clone();
    assert_eq!(seen, vec![data.clone(), data]);
}

#[tokio::test]
async fn bad_chunked_bodies_are_400_malformed_body() {
    let (up, bodies) = body_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let cases: &[&[u8]] = &[
        // Leading zeros, whitespace around the size, prefixes, signs (hyper accepts the
        // first ones; another parser may read a different size).
        b"05\r\nhello\r\n0\r\n\r\n",
        b"0000000000000000005\r\nhello\r\n0\r\n\r\n",
        b"00\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5\t\r\nhello\r\n0\r\n\r\n",
        b"5 ;a=b\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-0\r\n\r\n",
        // Overlong sizes (64-bit overflow and wrap-around to a small number).
        b"10000000000000005\r\nhello\r\n0\r\n\r\n",
        b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        // Extension syntax: empty, spaced, bare LF, unterminated or trailing-garbage quotes.
        b"5;\r\nhello\r\n0\r\n\r\n",
        b"5; a=b\r\nhello\r\n0\r\n\r\n",
        b"5;a = b\r\nhello\r\n0\r\n\r\n",
        b"5;a\nhello\r\n0\r\n\r\n",
        b"5;a=\"b\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n",
        b"5;a=b\rc\r\nhello\r\n0\r\n\r\n",
        // Line endings in chunk lines.
        b"5\nhello\r\n0\r\n\r\n",
        b"5\rhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r0\r\n\r\n",
        b"5\r\nhello\r\n0\n\n",
        // Chunk data longer than its size (TE.CL desync).
        b"5\r\nhelloGET / HTTP/1.1\r\n0\r\n\r\n",
        // Trailers: bare LF, folding, whitespace before the colon, control bytes.
        b"5\r\nhello\r\n0\r\nX: y\n\r\n",
        b"5\r\nhello\r\n0\r\nX: y\r\n z\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX : y\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX: \x00\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\r\n",
    ];
    for body in cases {
        let mut req =
            b"POST /submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(body);
        let shown = format!("{:?}", String::from_utf8_lossy(body));
        let got = responses(&exchange(fx.addr(), &req).await);
        assert_eq!(got.len(), 1, "{shown}");
        assert_refused(&got[0], 400, "bad_request", "malformed_body", &shown);
    }
    assert!(
        bodies.lock().expect("lock").is_empty(),
        "no complete body reached the upstream"
    );
    assert_eq!(
        metric(fx.admin(), "fortress_client_body_errors_total").await,
        Some(cases.len() as f64)
    );
}

fn limits_config(up: SocketAddr) -> String {
    config(up, "max_header_bytes: 2048\nmax_headers: 10", CATCH_ALL)
}

fn with_fields(n: usize, value_len: usize) -> Vec<u8> {
    let mut r = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 1..n {
        r.extend_from_slice(format!("X-{i}: {}\r\n", "v".repeat(value_len)).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r
}

#[tokio::test]
async fn head_limits_are_431_on_http1() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&limits_config(up.addr)).await;
    // 10 fields, 1 KiB: served (the connection stays open: read one response).
    let r = raw_one(fx.addr(), &with_fields(10, 10)).await;
    assert_eq!(r.status, 200);
    let big_ok = with_fields(2, 2048 - 60);
    assert!(big_ok.len() <= 2048);
    let r = raw_one(fx.addr(), &big_ok).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 2);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with_fields(11, 1), "header_count"),
        (with_fields(50, 1), "header_count"),
        (with_fields(2, 2100), "header_bytes"),
        (with_fields(5, 500), "header_bytes"),
        // A head that never ends.
        (with_fields(2, 4000)[..3000].to_vec(), "header_bytes"),
    ];
    for (req, reason) in cases {
        let got = responses(&exchange(fx.addr(), &req).await);
        assert_eq!(got.len(), 1, "{reason}");
        assert_refused(
            &got[0],
            431,
            "request_header_fields_too_large",
            reason,
            reason,
        );
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn head_limits_are_431_on_http2() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("h1-guard");
    let dir = tempfile::tempdir().expect("tempdir");
    certs.write(dir.path());
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        config(
            up.addr,
            "tls: { cert: server.crt, key: server.key }\nmax_header_bytes: 2048\nmax_headers: 10",
            CATCH_ALL,
        ),
    )
    .expect("write");
    let fx = fortress::Fortress::start(&path).await.expect("start");
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    let request = |n: usize, len: usize| {
        let mut b = http::Request::get(format!("https://localhost:{}/", fx.client_addr.port()));
        for i in 1..n {
            b = b.header(format!("x-{i}"), "v".repeat(len));
        }
        b.body(full("")).expect("request")
    };
    // 10 fields (no `host` on HTTP/2: `:authority`).
    let resp = h2.send_request(request(11, 1)).await.expect("send");
    assert_eq!(resp.status(), 200);
    // Cookie crumbs (RFC 9113 §8.2.3) count as one field.
    let mut b = http::Request::get(format!("https://localhost:{}/", fx.client_addr.port()));
    for i in 0..20 {
        b = b.header("cookie", format!("c{i}=v"));
    }
    let resp = h2
        .send_request(b.body(full("")).expect("req"))
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(up.hits(), 2);
    // One field too many: fortress's JSON 431.
    let resp = h2.send_request(request(12, 1)).await.expect("send");
    assert_eq!(resp.status(), 431);
    let body = body_bytes(resp).await;
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["error"], "request_header_fields_too_large");
    assert_eq!(json["reason"], "header_count");
    // Over SETTINGS_MAX_HEADER_LIST_SIZE: the h2 library answers 431 itself (no body) and
    // resets the stream; the upstream never sees it.
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    let resp = h2.send_request(request(3, 1500)).await.expect("h2 answers");
    assert_eq!(resp.status(), 431);
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn a_refused_upgrade_does_not_switch_the_guard_off() {
    // `Upgrade` on a route without `websocket: true` is stripped and the request served as
    // plain HTTP: the guard, which waited for the response status, goes on judging the next
    // request on the connection.
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let req = b"GET /up HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\
        GET /smuggled HTTP/1.1\nHost: a\r\n\r\n";
    let got = responses(&exchange(fx.addr(), req).await);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].status, 200);
    assert_refused(&got[1], 400, "bad_request", MALFORMED, "after upgrade");
    let targets: Vec<String> = up.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/up"]);
}

#[tokio::test]
async fn config_limits_are_checked() {
    for (extra, want) in [
        (
            "max_header_bytes: 0",
            "`max_header_bytes` must be between 1024 and 1048576",
        ),
        (
            "max_header_bytes: 2000000",
            "`max_header_bytes` must be between 1024 and 1048576",
        ),
        (
            "max_headers: 0",
            "`max_headers` must be between 1 and 10000",
        ),
        (
            "max_headers: 100000",
            "`max_headers` must be between 1 and 10000",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fortress.yaml");
        std::fs::write(
            &path,
            config("127.0.0.1:9".parse().expect("addr"), extra, CATCH_ALL),
        )
        .expect("write");
        let err = match fortress::Fortress::start(&path).await {
            Ok(_) => panic!("{extra} accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(want), "{extra}: {err}");
        assert!(err.contains("fortress.yaml:8:"), "located: {err}");
    }
}

const DENIED: &str = r#"fortress_requests_total{decision="deny",method="GET",mode="enforce",route="-",status="4xx"}"#;
