//! Rules on request bodies, against a real upstream and a real fortress:
//! - `_method` in a form body (urlencoded keys in every spelling, multipart part names) is
//!   refused 400 `method_override` as the body streams, and the upstream never receives a
//!   complete body; form bodies without it, and JSON bodies, pass byte for byte;
//! - a second `Content-Type` field on a body is refused on every route (415);
//! - `server.timeouts.body_read`: a client that stops sending mid-body gets 408 and the
//!   upstream sees a body cut short; `upstream_response` only starts once the body was sent,
//!   so a slow upload with short gaps still gets 200, and an app that takes none of the body
//!   still times out (504);
//! - HTTP/2 form bodies are scanned across DATA frames.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What the upstream got of each request body: the bytes of a complete body, `Err` for one cut
/// short.
type Bodies = mpsc::UnboundedReceiver<(String, Result<Vec<u8>, String>)>;

/// An upstream that reads every request body to its end, reports it, and answers 200 `got N`.
async fn reading_upstream() -> (Upstream, Bodies) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Arc::new(Mutex::new(tx));
    let up = Upstream::spawn(move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let path = req.uri().path().to_owned();
            let got = match req.into_body().collect().await {
                Ok(b) => Ok(b.to_bytes().to_vec()),
                Err(e) => Err(e.to_string()),
            };
            let n = got.as_ref().map_or(0, Vec::len);
            let _ = tx.lock().expect("lock").send((path, got));
            Response::new(full(format!("got {n}")))
        }
    })
    .await;
    (up, rx)
}

async fn next_body(rx: &mut Bodies) -> (String, Result<Vec<u8>, String>) {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("upstream reported within 20s")
        .expect("channel open")
}

/// Reads reports up to the one for `sentinel` (sent last, complete), and asserts that no
/// report before it is a complete body for a path other than `sentinel`.
async fn no_complete_body_before(rx: &mut Bodies, sentinel: &str) {
    loop {
        let (path, got) = next_body(rx).await;
        if path == sentinel {
            assert!(got.is_ok(), "the sentinel body was complete");
            return;
        }
        assert!(got.is_err(), "{path}: the upstream got a complete body");
    }
}

const ROUTES: &str = r#"routes:
  - name: forms
    match: { path: "/forms/**" }
    public: true
  - name: typed
    match: { path: "/typed/**" }
    public: true
    content_types: [application/json]
"#;

async fn start(up: &Upstream, server_extra: &str) -> TestFortress {
    TestFortress::start(&config(up.addr, server_extra, ROUTES)).await
}

/// A `POST target` with `Connection: close`, extra header lines, and a `Content-Length` body.
async fn post(addr: SocketAddr, target: &str, headers: &str, body: &[u8]) -> RawResponse {
    let mut req = format!(
        "POST {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req).await
}

/// The same body sent chunked, `size` bytes per chunk.
async fn post_chunked(
    addr: SocketAddr,
    target: &str,
    headers: &str,
    body: &[u8],
    size: usize,
) -> RawResponse {
    let mut req = format!(
        "POST {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{headers}Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for c in body.chunks(size) {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    raw(addr, &req).await
}

fn assert_refusal(r: &RawResponse, status: u16, error: &str, reason: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let id = r.header("x-request-id").expect("x-request-id");
    assert_eq!(
        r.json(),
        serde_json::json!({"error": error, "reason": reason, "request_id": id, "trace_id": trace_id(r)})
    );
}

const FORM: &str = "Content-Type: application/x-www-form-urlencoded\r\n";

#[tokio::test]
async fn method_in_an_urlencoded_body_is_refused_as_it_streams() {
    let (up, mut bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    let cases = [
        "_method=DELETE",
        "title=a&_method=DELETE&body=b",
        "title=a&body=b&_method=DELETE",
        "title=a&_method",
        "%5Fmethod=DELETE",
        "%5fMETHOD=delete",
        "_method[]=DELETE",
        "_method%5Bx%5D=DELETE",
        "+_method=DELETE",
    ];
    for (i, body) in cases.iter().enumerate() {
        let r = post(fx.addr(), &format!("/forms/cl-{i}"), FORM, body.as_bytes()).await;
        assert_refusal(&r, 400, "bad_request", "method_override");
        // Split across chunks, down to one byte per chunk.
        for size in [1, 2, 3, 5] {
            let r = post_chunked(
                fx.addr(),
                &format!("/forms/te-{i}-{size}"),
                FORM,
                format!("{}&{body}", "x".repeat(40)).as_bytes(),
                size,
            )
            .await;
            assert_refusal(&r, 400, "bad_request", "method_override");
        }
    }
    // With a charset parameter, and in another case: the same.
    let r = post(
        fx.addr(),
        "/forms/charset",
        "Content-Type: Application/X-WWW-Form-URLEncoded; charset=utf-8\r\n",
        b"_method=PUT",
    )
    .await;
    assert_refusal(&r, 400, "bad_request", "method_override");
    // No Content-Type at all: Rack reads a POST body without a type as a form.
    let r = post(fx.addr(), "/forms/untyped", "", b"_method=PUT").await;
    assert_refusal(&r, 400, "bad_request", "method_override");
    // A long body whose `_method` comes late: the part before it was forwarded, the rest never.
    let mut long = "a=".to_owned() + &"b".repeat(64 * 1024);
    long.push_str("&_method=DELETE&c=d");
    let r = post_chunked(fx.addr(), "/forms/late", FORM, long.as_bytes(), 4096).await;
    assert_refusal(&r, 400, "bad_request", "method_override");
    let sentinel = post(fx.addr(), "/forms/sentinel", FORM, b"a=1").await;
    assert_eq!((sentinel.status, sentinel.text().as_str()), (200, "got 3"));
    no_complete_body_before(&mut bodies, "/forms/sentinel").await;
    let seen = up.requests();
    assert!(
        seen.iter().all(|s| s.method == "POST"),
        "only POSTs reached the upstream"
    );
    // The late one was forwarded in part (the upstream saw its head, then a cut body).
    assert!(seen.iter().any(|s| s.target == "/forms/late"));
}

/// Laravel makes a JSON body the request bag Symfony's `getMethod()` reads: a `_method` key at
/// any depth, in any escape, is refused like a form field.
#[tokio::test]
async fn method_as_a_json_key_is_refused() {
    let (up, mut bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    let json = "Content-Type: application/json\r\n";
    for (i, body) in [
        r#"{"_method":"DELETE"}"#,
        r#"{"title":"x","_method":"DELETE"}"#,
        r#"{"\u005fmethod":"DELETE"}"#,
        r#"{"data":{"_method":"PUT"}}"#,
    ]
    .iter()
    .enumerate()
    {
        let r = post(
            fx.addr(),
            &format!("/forms/json-{i}"),
            json,
            body.as_bytes(),
        )
        .await;
        assert_refusal(&r, 400, "bad_request", "method_override");
        let r = post_chunked(
            fx.addr(),
            &format!("/forms/json-te-{i}"),
            json,
            body.as_bytes(),
            2,
        )
        .await;
        assert_refusal(&r, 400, "bad_request", "method_override");
    }
    let r = post(
        fx.addr(),
        "/forms/vnd",
        "Content-Type: application/vnd.api+json\r\n",
        br#"{"_method":"DELETE"}"#,
    )
    .await;
    assert_refusal(&r, 400, "bad_request", "method_override");
    let sentinel = post(fx.addr(), "/forms/sentinel", FORM, b"a=1").await;
    assert_eq!((sentinel.status, sentinel.text().as_str()), (200, "got 3"));
    no_complete_body_before(&mut bodies, "/forms/sentinel").await;
}

#[tokio::test]
async fn method_in_a_multipart_part_name_is_refused() {
    let (up, mut bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    let ct = "Content-Type: multipart/form-data; boundary=----fortressXYZ\r\n";
    let body = |disposition: &str, content: &str| {
        format!(
            "------fortressXYZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n\
             ------fortressXYZ\r\n{disposition}\r\n\r\n{content}\r\n------fortressXYZ--\r\n"
        )
    };
    for (i, d) in [
        "Content-Disposition: form-data; name=\"_method\"",
        "Content-Disposition: form-data; name=_method",
        "content-disposition: form-data; name=\"_METHOD\"",
        "Content-Disposition: form-data; name=\"_method[]\"",
        "Content-Disposition: form-data; name*=UTF-8''%5Fmethod",
        "Content-Disposition: form-data; name*0=\"_me\"; name*1=\"thod\"",
    ]
    .iter()
    .enumerate()
    {
        let b = body(d, "DELETE");
        let r = post(fx.addr(), &format!("/forms/mp-{i}"), ct, b.as_bytes()).await;
        assert_refusal(&r, 400, "bad_request", "method_override");
        let r = post_chunked(fx.addr(), &format!("/forms/mp-te-{i}"), ct, b.as_bytes(), 3).await;
        assert_refusal(&r, 400, "bad_request", "method_override");
    }
    let sentinel = post(fx.addr(), "/forms/sentinel", FORM, b"a=1").await;
    assert_eq!(sentinel.status, 200);
    no_complete_body_before(&mut bodies, "/forms/sentinel").await;
}

#[tokio::test]
async fn bodies_without_a_method_override_pass_byte_for_byte() {
    let (up, mut bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    let mp = "Content-Type: multipart/form-data; boundary=XyZ\r\n";
    let file_part = "--XyZ\r\nContent-Disposition: form-data; name=\"x_method\"\r\n\r\n1\r\n\
                     --XyZ\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"f.txt\"\r\n\
                     Content-Type: text/plain\r\n\r\n_method=DELETE\r\nname=\"_method\"\r\n\
                     Content-Disposition: form-data; name=\"_method\"\r\n--XyZ--\r\n";
    let json = "Content-Type: application/json\r\n";
    let cases: Vec<(&str, &str, &[u8])> = vec![
        ("x", FORM, b"x_method=1"),
        ("method", FORM, b"method=DELETE"),
        ("value", FORM, b"a=_method&b=%5Fmethod"),
        ("methods", FORM, b"_methods=1&__method=2"),
        ("file", mp, file_part.as_bytes()),
        (
            "json",
            json,
            br#"{"title":"_method","x_method":1,"tags":["_method"]}"#,
        ),
        ("json-form-like", json, b"_method=DELETE"),
        ("text", "Content-Type: text/plain\r\n", b"_method=DELETE"),
    ];
    for (name, headers, body) in &cases {
        let target = format!("/forms/{name}");
        let r = post(fx.addr(), &target, headers, body).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.text(), format!("got {}", body.len()), "{name}");
        let (path, got) = next_body(&mut bodies).await;
        assert_eq!(path, target);
        assert_eq!(got.as_deref(), Ok(*body), "{name}");
        // Chunked, three bytes at a time: the same bytes.
        let r = post_chunked(fx.addr(), &target, headers, body, 3).await;
        assert_eq!(r.status, 200, "{name} chunked: {}", r.text());
        let (_, got) = next_body(&mut bodies).await;
        assert_eq!(got.as_deref(), Ok(*body), "{name} chunked");
    }
}

#[tokio::test]
async fn a_second_content_type_on_a_body_is_refused_on_every_route() {
    let (up, mut bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    let two =
        "Content-Type: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\n";
    for target in ["/forms/two", "/typed/two"] {
        let r = post(fx.addr(), target, two, b"_method=DELETE").await;
        assert_refusal(&r, 415, "unsupported_media_type", "ambiguous_content_type");
    }
    assert_eq!(up.hits(), 0);
    // Without a body there is nothing to misread: forwarded.
    let r = get_with(
        fx.addr(),
        "/forms/get",
        &[
            ("Content-Type", "application/json"),
            ("Content-Type", "text/plain"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        next_body(&mut bodies).await,
        ("/forms/get".into(), Ok(vec![]))
    );
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_upstream_a_cut_body() {
    let (up, mut bodies) = reading_upstream().await;
    let fx = start(&up, "timeouts: { body_read: 300ms }").await;
    let mut tcp = TcpStream::connect(fx.addr()).await.expect("connect");
    tcp.write_all(
        b"POST /forms/stall HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\n\
          Content-Length: 100\r\n\r\nfirst ten.",
    )
    .await
    .expect("write");
    // Nothing more is sent; fortress answers and closes the connection.
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf))
        .await
        .expect("closed within 20s")
        .expect("read");
    let r = parse_response(&buf);
    assert_refusal(&r, 408, "request_timeout", "body_timeout");
    assert_eq!(r.header("connection"), Some("close"));
    let (path, got) = next_body(&mut bodies).await;
    assert_eq!(path, "/forms/stall");
    assert!(got.is_err(), "the upstream got a complete body: {got:?}");
    // Chunked, stalled after one chunk: the same.
    let mut tcp = TcpStream::connect(fx.addr()).await.expect("connect");
    tcp.write_all(
        b"POST /forms/stall-te HTTP/1.1\r\nHost: app.test\r\nContent-Type: text/plain\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf))
        .await
        .expect("closed within 20s")
        .expect("read");
    assert_refusal(
        &parse_response(&buf),
        408,
        "request_timeout",
        "body_timeout",
    );
    let (path, got) = next_body(&mut bodies).await;
    assert_eq!(path, "/forms/stall-te");
    assert!(got.is_err(), "the upstream got a complete body: {got:?}");
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_refusals_total{reason="body_timeout",route="forms"}"#
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_upstream_errors_total{kind="timeout"}"#
        )
        .await,
        Some(0.0)
    );
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_by_the_upstream_response_timeout() {
    let (up, mut bodies) = reading_upstream().await;
    // The upload below takes several times `upstream_response`; each gap is far under
    // `body_read`.
    let fx = start(
        &up,
        "timeouts: { upstream_response: 200ms, body_read: 10s }",
    )
    .await;
    let mut tcp = TcpStream::connect(fx.addr()).await.expect("connect");
    tcp.write_all(
        b"POST /forms/slow HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\
          Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .expect("write");
    let mut sent = Vec::new();
    for i in 0..8u8 {
        let chunk = [b'a' + i; 10];
        tcp.write_all(b"a\r\n").await.expect("write");
        tcp.write_all(&chunk).await.expect("write");
        tcp.write_all(b"\r\n").await.expect("write");
        sent.extend_from_slice(&chunk);
        // The slow client itself: nothing to wait for but the clock.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tcp.write_all(b"0\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf))
        .await
        .expect("response within 20s")
        .expect("read");
    let r = parse_response(&buf);
    assert_eq!((r.status, r.text().as_str()), (200, "got 80"));
    assert_eq!(
        next_body(&mut bodies).await,
        ("/forms/slow".into(), Ok(sent))
    );
}

#[tokio::test]
async fn an_upstream_that_takes_none_of_the_body_still_times_out() {
    // An app that accepts the connection and never reads nor answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up_addr = listener.local_addr().expect("addr");
    let (held_tx, mut held) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            // Held open, never read.
            if held_tx.send(tcp).is_err() {
                return;
            }
        }
    });
    let fx = TestFortress::start(&config(
        up_addr,
        "max_body: 256MiB\ntimeouts: { upstream_response: 300ms, body_read: 30s }",
        ROUTES,
    ))
    .await;
    let tcp = TcpStream::connect(fx.addr()).await.expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    const TOTAL: usize = 192 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST /forms/big HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {TOTAL}\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..TOTAL / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    // The answer comes while the client is still sending (its socket blocked behind the app).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = rd.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
            if n == 0 || buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.ends_with(b"}") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("answered within 20s");
    assert_refusal(
        &parse_response(&buf),
        504,
        "gateway_timeout",
        "upstream_timeout",
    );
    assert!(
        !writer.is_finished(),
        "the client was still sending when it was answered"
    );
    writer.abort();
    assert!(held.try_recv().is_ok(), "the app got the connection");
}

/// A request body sent as the given DATA frames (HTTP/2), without a length.
struct Frames(std::collections::VecDeque<&'static [u8]>);

impl http_body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|f| Ok(http_body::Frame::data(bytes::Bytes::from_static(f)))),
        )
    }
}

#[tokio::test]
async fn http2_form_bodies_are_scanned_across_data_frames() {
    let (up, mut bodies) = reading_upstream().await;
    let certs = TestCerts::new("body-h2");
    let (fx, _dir) = tls_fortress(up.addr, &certs, ROUTES).await;
    let url = |p: &str| format!("https://localhost:{}{p}", fx.client_addr.port());
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    let send = |path: &str, frames: &[&'static [u8]]| {
        Request::post(url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Frames(frames.iter().copied().collect()).boxed())
            .expect("request")
    };
    // `_method` split across three DATA frames.
    let resp = h2
        .send_request(send("/forms/h2-bad", &[b"a=1&_me", b"th", b"od=DELETE"]))
        .await
        .expect("h2 response");
    assert_eq!(resp.status(), 400);
    let id = resp.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let trace = trace_id_in(resp.headers());
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(resp).await).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"error": "bad_request", "reason": "method_override", "request_id": id, "trace_id": trace})
    );
    // Without it: forwarded whole.
    let resp = h2
        .send_request(send("/forms/h2-good", &[b"a=1&_me", b"th", b"ods=DELETE"]))
        .await
        .expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "got 19");
    no_complete_body_before(&mut bodies, "/forms/h2-good").await;
}
