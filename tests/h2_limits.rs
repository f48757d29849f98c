//! HTTP/2 edge: cookies joined for the HTTP/1.1 upstream (RFC 9113 §8.2.3), connection-specific
//! fields refused (RFC 9113 §8.2.2), the server's advertised limits, and the two flood
//! classes: rapid reset (CVE-2023-44487) and CONTINUATION flood (CVE-2024-27316). Raw frames
//! are written by hand over TLS (ALPN h2), so the client can misbehave on purpose.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fortress::Fortress;
use http::Request;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

async fn start_tls(upstream: SocketAddr, certs: &TestCerts) -> (Fortress, tempfile::TempDir) {
    tls_fortress(upstream, certs, CATCH_ALL).await
}

// Frame types and flags (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const PROTOCOL_ERROR: u32 = 0x1;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("len");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header field as an HPACK literal without indexing, new name, no Huffman.
fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// A GET's header block for `path` on `addr`, plus `extra` fields.
fn get_block(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    literal(&mut b, ":method", b"GET");
    literal(&mut b, ":scheme", b"https");
    literal(&mut b, ":path", path.as_bytes());
    literal(
        &mut b,
        ":authority",
        format!("localhost:{}", addr.port()).as_bytes(),
    );
    for (k, v) in extra {
        literal(&mut b, k, v.as_bytes());
    }
    b
}

/// The client preface and an empty SETTINGS frame.
fn preface() -> Vec<u8> {
    let mut p = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    p.extend(frame(SETTINGS, 0, 0, &[]));
    p
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Reads frames until the server closes the connection (or reset), or `stop` says so. (The
/// server's SETTINGS go unacknowledged: nothing here waits on them.)
async fn read_frames<S: AsyncRead + Unpin>(
    s: &mut S,
    mut stop: impl FnMut(&Frame) -> bool,
) -> Vec<Frame> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout_at(deadline, s.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return out,
            Err(_) => panic!("no end within 20s; frames so far: {out:?}"),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).await.is_err() {
            return out;
        }
        let f = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        let done = stop(&f);
        out.push(f);
        if done {
            return out;
        }
    }
}

fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
}

fn rst_code(frames: &[Frame], stream: u32) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == RST_STREAM && f.stream == stream)
        .map(|f| u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]))
}

/// A well-behaved HTTP/2 client gets 200 while (or after) another one misbehaves.
async fn served(addr: SocketAddr, ca: &str) {
    let mut h2 = h2_tls(addr, ca).await;
    let req = Request::get(format!("https://localhost:{}/ok", addr.port()))
        .body(full(Bytes::new()))
        .expect("request");
    let resp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn h2_server_advertises_explicit_limits() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("h2-limits");
    let (fx, _dir) = start_tls(up.addr, &certs).await;
    let mut s = tls_stream(fx.client_addr, &certs.ca_pem, &[b"h2"]).await;
    s.write_all(&preface()).await.expect("write");
    let frames = read_frames(&mut s, |f| f.kind == SETTINGS && f.flags & ACK == 0).await;
    let settings = &frames.last().expect("SETTINGS").payload;
    let mut advertised = std::collections::HashMap::new();
    for p in settings.chunks(6) {
        advertised.insert(
            u16::from_be_bytes([p[0], p[1]]),
            u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
        );
    }
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3), SETTINGS_MAX_HEADER_LIST_SIZE (0x6).
    assert_eq!(advertised.get(&0x3), Some(&100), "{advertised:?}");
    assert_eq!(advertised.get(&0x6), Some(&(96 * 1024)), "{advertised:?}");
}

#[tokio::test]
async fn h2_cookie_fields_are_joined_for_the_upstream() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("h2-cookie");
    let (fx, _dir) = start_tls(up.addr, &certs).await;
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    let req = Request::get(format!("https://localhost:{}/c", fx.client_addr.port()))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3; d=4")
        .body(full(Bytes::new()))
        .expect("request");
    let resp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    let seen = up.requests();
    let cookies: Vec<_> = seen[0].headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2; c=3; d=4"]);
}

#[tokio::test]
async fn h2_connection_specific_fields_are_refused() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("h2-te");
    let (fx, _dir) = start_tls(up.addr, &certs).await;
    let addr = fx.client_addr;
    let mut s = tls_stream(addr, &certs.ca_pem, &[b"h2"]).await;
    let mut out = preface();
    let bad: [&[(&str, &str)]; 5] = [
        &[("transfer-encoding", "chunked")],
        &[("transfer-encoding", "gzip, chunked")],
        &[("connection", "keep-alive")],
        &[("te", "gzip")],
        &[("upgrade", "h2c")],
    ];
    for (i, extra) in bad.iter().enumerate() {
        let id = 1 + 2 * i as u32;
        out.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &get_block(addr, "/te", extra),
        ));
    }
    // Then a well-formed request on the same connection.
    let ok = 1 + 2 * bad.len() as u32;
    out.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        ok,
        &get_block(addr, "/fine", &[]),
    ));
    s.write_all(&out).await.expect("write");
    let frames = read_frames(&mut s, |f| {
        f.stream == ok && f.kind == DATA && f.flags & END_STREAM != 0
    })
    .await;
    for i in 0..bad.len() as u32 {
        assert_eq!(
            rst_code(&frames, 1 + 2 * i),
            Some(PROTOCOL_ERROR),
            "{:?}",
            bad[i as usize]
        );
    }
    assert!(frames.iter().any(|f| f.kind == HEADERS && f.stream == ok));
    let targets: Vec<String> = up.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        ["/fine"],
        "only the well-formed request reached the upstream"
    );
}

#[tokio::test]
async fn h2_rapid_reset_gets_goaway_and_others_are_still_served() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("h2-rapid-reset");
    let (fx, _dir) = start_tls(up.addr, &certs).await;
    let addr = fx.client_addr;
    let mut s = tls_stream(addr, &certs.ca_pem, &[b"h2"]).await;
    s.write_all(&preface()).await.expect("write");
    // Open and reset thousands of streams, written in batches as fast as the socket takes them.
    const STREAMS: u32 = 5_000;
    let block = get_block(addr, "/rr", &[]);
    let (mut rd, mut wr) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        let mut sent = 0u32;
        for batch in 0..STREAMS / 100 {
            let mut out = Vec::new();
            for i in 0..100 {
                let id = 1 + 2 * (batch * 100 + i);
                out.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
                out.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            }
            if wr.write_all(&out).await.is_err() {
                break; // fortress closed the connection
            }
            sent += 100;
        }
        sent
    });
    // Another client is served while the flood runs, and after it.
    let (frames, ()) = tokio::join!(
        read_frames(&mut rd, |f| f.kind == GOAWAY),
        served(addr, &certs.ca_pem)
    );
    assert_eq!(
        goaway_code(&frames),
        Some(ENHANCE_YOUR_CALM),
        "GOAWAY expected"
    );
    let sent = writer.await.expect("writer");
    eprintln!("rapid reset: client wrote {sent} of {STREAMS} open+reset pairs before the close");
    served(addr, &certs.ca_pem).await;
    // The upstream saw a bounded number of the reset streams.
    let reset_seen = up.requests().iter().filter(|r| r.target == "/rr").count();
    eprintln!("rapid reset: upstream saw {reset_seen} of {STREAMS} reset streams");
    assert!(reset_seen <= 500, "upstream saw {reset_seen} reset streams");
}

#[tokio::test]
async fn h2_continuation_flood_closes_the_connection() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("h2-continuation");
    let (fx, _dir) = start_tls(up.addr, &certs).await;
    let addr = fx.client_addr;
    // Many small CONTINUATION frames (the frame count is the bound), and a few large ones
    // whose header list exceeds the 96 KiB limit (the size is the bound).
    for (frames_sent, per_frame) in [(100_000usize, 8usize), (2048, 16 * 1024 - 64)] {
        let s = tls_stream(addr, &certs.ca_pem, &[b"h2"]).await;
        let (mut rd, mut wr) = tokio::io::split(s);
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&preface()).await;
            let _ = wr
                .write_all(&frame(
                    HEADERS,
                    END_STREAM,
                    1,
                    &get_block(addr, "/flood", &[]),
                ))
                .await;
            let mut piece = Vec::new();
            literal(&mut piece, "x-f", &vec![b'a'; per_frame]);
            let mut written = 0usize;
            for _ in 0..frames_sent / 16 {
                let mut out = Vec::new();
                for _ in 0..16 {
                    out.extend(frame(CONTINUATION, 0, 1, &piece));
                }
                if wr.write_all(&out).await.is_err() {
                    break;
                }
                written += 16;
            }
            written
        });
        let frames = read_frames(&mut rd, |f| f.kind == GOAWAY).await;
        let code = goaway_code(&frames);
        assert!(
            code == Some(ENHANCE_YOUR_CALM) || code == Some(PROTOCOL_ERROR),
            "GOAWAY expected, got {frames:?}"
        );
        let written = writer.await.expect("writer");
        eprintln!(
            "CONTINUATION flood ({per_frame} B/frame): client wrote {written} frames before the close"
        );
        assert!(
            written < frames_sent,
            "the connection was closed before the flood ended"
        );
        served(addr, &certs.ca_pem).await;
    }
    assert!(up.requests().iter().all(|r| r.target != "/flood"));
}
