//! Edge rules against a real upstream and a real fortress: `max_body` (413 on
//! `Content-Length`, on a chunked upload cut mid-stream, on HTTP/2 DATA), `content_types`
//! (415), security response headers (forwarded, refused, admin; HSTS only over HTTPS), CORS
//! (preflights answered before authentication, refused, wildcard tricks) and `scrub_errors`.

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;
use tokio::sync::mpsc;

/// What the upstream got of each request body: `Ok(len)` for a complete body, `Err` for one
/// cut short.
type Bodies = mpsc::UnboundedReceiver<(String, Result<usize, String>)>;

/// An upstream that reads every request body to its end, reports it, and answers 200
/// `got N` with headers an app might set (`Server`, `X-Powered-By`, `X-Frame-Options`, an
/// `Access-Control-Allow-Origin: *`). `/boom` answers 500 with a traceback, `/busy` 503 with
/// `Retry-After`.
async fn reading_upstream() -> (Upstream, Bodies) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Arc::new(Mutex::new(tx));
    let up = Upstream::spawn(move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let path = req.uri().path().to_owned();
            let got = match req.into_body().collect().await {
                Ok(b) => Ok(b.to_bytes().len()),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.lock().expect("lock").send((path.clone(), got.clone()));
            let mut r = match path.as_str() {
                p if p.starts_with("/boom") => {
                    let mut r = Response::new(full(
                        "Traceback (most recent call last):\n  File \"/srv/app/db.py\", line 42\n\
                         psycopg2.OperationalError: password authentication failed for user \"app\"\n",
                    ));
                    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    r.headers_mut()
                        .insert("content-type", "text/plain".parse().expect("v"));
                    r.headers_mut()
                        .insert("set-cookie", "debug=1".parse().expect("v"));
                    r
                }
                "/busy" => {
                    let mut r = Response::new(full("db pool exhausted at 10.0.3.7:5432"));
                    *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    r.headers_mut()
                        .insert("retry-after", "7".parse().expect("v"));
                    r
                }
                _ => Response::new(full(format!("got {}", got.as_ref().map_or(0, |n| *n)))),
            };
            let h = r.headers_mut();
            h.insert("server", "gunicorn/20.1.0".parse().expect("v"));
            h.insert("x-powered-by", "Django".parse().expect("v"));
            h.insert("x-frame-options", "ALLOWALL".parse().expect("v"));
            h.insert("access-control-allow-origin", "*".parse().expect("v"));
            r
        }
    })
    .await;
    (up, rx)
}

async fn next_body(rx: &mut Bodies) -> (String, Result<usize, String>) {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("upstream reported within 20s")
        .expect("channel open")
}

const ROUTES: &str = r#"authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { value: "local-secret-local-secret-local-secret" }
routes:
  - name: small
    match: { path: "/small/**" }
    public: true
  - name: upload
    match: { path: /upload, methods: [POST] }
    public: true
    max_body: 4KiB
  - name: json
    match: { path: /json, methods: [GET, POST, DELETE] }
    public: true
    content_types: [application/json, "text/*"]
  - name: private
    match: { path: /private }
  - name: boom
    match: { path: /boom }
    public: true
    scrub_errors: true
  - name: busy
    match: { path: /busy }
    public: true
    scrub_errors: true
  - name: boom-local
    match: { path: /boom-local }
    public: true
  - name: framed
    match: { path: /framed }
    public: true
    security_headers:
      frame_options: SAMEORIGIN
      referrer_policy: false
      content_security_policy: "default-src 'none'; frame-ancestors 'none'"
  - name: kept
    match: { path: /kept }
    public: true
    security_headers: { keep: [frame_options] }
"#;

async fn start(up: &Upstream, server_extra: &str) -> TestFortress {
    TestFortress::start(&config(
        up.addr,
        &format!("max_body: 1KiB\n{server_extra}"),
        ROUTES,
    ))
    .await
}

/// One HTTP/1.1 request with `Connection: close` and raw header lines; `body` is sent as is.
async fn send(addr: SocketAddr, head: &str, body: &[u8]) -> RawResponse {
    let mut req = head.replace('\n', "\r\n").into_bytes();
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    raw(addr, &req).await
}

fn chunked(total: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'a', n));
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn assert_refusal(r: &RawResponse, status: u16, error: &str, reason: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let id = r.header("x-request-id").expect("x-request-id").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error": error, "reason": reason, "request_id": id, "trace_id": trace_id(r)})
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_security_headers(r);
}

fn assert_security_headers(r: &RawResponse) {
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        r.header("referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert_eq!(r.header("server"), None);
    assert_eq!(r.header("x-powered-by"), None);
    assert_eq!(r.header("strict-transport-security"), None, "plain HTTP");
}

#[tokio::test]
async fn content_length_over_max_body_is_413_before_the_upstream() {
    let (up, mut bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    let head = "POST /small/x HTTP/1.1\nHost: app.test\nConnection: close\nContent-Length: 1025\n";
    let r = send(fx.addr(), head, &[b'a'; 1025]).await;
    assert_refusal(&r, 413, "payload_too_large", "content_length_too_large");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(up.hits(), 0);
    // Exactly the limit passes, and the upstream gets all of it.
    let head = "POST /small/x HTTP/1.1\nHost: app.test\nConnection: close\nContent-Length: 1024\n";
    let r = send(fx.addr(), head, &[b'a'; 1024]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "got 1024");
    assert_eq!(next_body(&mut bodies).await, ("/small/x".into(), Ok(1024)));
    // The route's own `max_body` (4KiB) overrides the server's (1KiB).
    let head = "POST /upload HTTP/1.1\nHost: app.test\nConnection: close\nContent-Length: 4096\n";
    let r = send(fx.addr(), head, &[b'a'; 4096]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "got 4096"));
    assert_eq!(next_body(&mut bodies).await.1, Ok(4096));
    let head = "POST /upload HTTP/1.1\nHost: app.test\nConnection: close\nContent-Length: 4097\n";
    let r = send(fx.addr(), head, &[b'a'; 4097]).await;
    assert_refusal(&r, 413, "payload_too_large", "content_length_too_large");
    assert_eq!(up.hits(), 2);
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_refusals_total{reason="content_length_too_large",route="upload"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn chunked_upload_over_the_limit_is_cut_and_answered_413() {
    let (up, mut bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    let head =
        "POST /small/up HTTP/1.1\nHost: app.test\nConnection: close\nTransfer-Encoding: chunked\n";
    // Under the limit: forwarded whole.
    let r = send(fx.addr(), head, &chunked(1000, 300)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "got 1000"));
    assert_eq!(next_body(&mut bodies).await, ("/small/up".into(), Ok(1000)));
    // Over it: the upstream saw the head and part of the body, never a complete request.
    let r = send(fx.addr(), head, &chunked(4000, 400)).await;
    assert_refusal(&r, 413, "payload_too_large", "body_too_large");
    let (path, got) = next_body(&mut bodies).await;
    assert_eq!(path, "/small/up");
    assert!(got.is_err(), "the upstream got a complete body: {got:?}");
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_refusals_total{reason="body_too_large",route="small"}"#
        )
        .await,
        Some(1.0)
    );
    // Not counted as an upstream failure.
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_upstream_errors_total{kind="protocol"}"#
        )
        .await,
        Some(0.0)
    );
}

/// A body of `frames` DATA frames of `size` bytes with no known length (so no
/// `content-length` is sent).
struct Dribble {
    frames: usize,
    size: usize,
}

impl http_body::Body for Dribble {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.frames == 0 {
            return Poll::Ready(None);
        }
        self.frames -= 1;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b'h';
            self.size
        ])))))
    }
}

#[tokio::test]
async fn http2_bodies_are_limited_with_and_without_content_length() {
    let (up, mut bodies) = reading_upstream().await;
    let certs = TestCerts::new("edge-h2");
    let (fx, _dir) = tls_fortress(up.addr, &certs, ROUTES).await;
    let url = format!("https://localhost:{}/upload", fx.client_addr.port());
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    // Streamed DATA without content-length, under the limit (4KiB): forwarded whole.
    let req = Request::post(&url)
        .body(
            Dribble {
                frames: 4,
                size: 1000,
            }
            .boxed(),
        )
        .expect("request");
    let resp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "got 4000");
    assert_eq!(next_body(&mut bodies).await.1, Ok(4000));
    // Over it: 413, and the upstream request was aborted.
    let req = Request::post(&url)
        .body(
            Dribble {
                frames: 10,
                size: 1000,
            }
            .boxed(),
        )
        .expect("request");
    let resp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let id = resp.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let trace = trace_id_in(resp.headers());
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(resp).await).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"error": "payload_too_large", "reason": "body_too_large", "request_id": id, "trace_id": trace})
    );
    assert!(next_body(&mut bodies).await.1.is_err());
    // With a content-length over the limit: refused before the upstream.
    let hits = up.hits();
    let req = Request::post(&url)
        .header("content-length", "5000")
        .body(full(vec![b'x'; 5000]))
        .expect("request");
    let resp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 413);
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(resp).await).expect("json");
    assert_eq!(body["reason"], "content_length_too_large");
    assert_eq!(up.hits(), hits);
}

#[tokio::test]
async fn content_types_are_judged_strictly() {
    let (up, mut bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    let post = |ct: &[&str]| {
        let mut head = String::from(
            "POST /json HTTP/1.1\nHost: app.test\nConnection: close\nContent-Length: 2\n",
        );
        for c in ct {
            head.push_str(&format!("Content-Type: {c}\n"));
        }
        head
    };
    for ok in [
        "application/json",
        "Application/JSON; charset=UTF-8",
        "application/json;",
        "application/json ; charset=\"utf-8\"",
        "text/csv",
    ] {
        let r = send(fx.addr(), &post(&[ok]), b"{}").await;
        assert_eq!(r.status, 200, "{ok}: {}", r.text());
        assert_eq!(next_body(&mut bodies).await.1, Ok(2));
    }
    let hits = up.hits();
    for (cts, reason) in [
        (&["application/xml"][..], "content_type_not_allowed"),
        (&["application/jsonp"][..], "content_type_not_allowed"),
        (&[][..], "missing_content_type"),
        (
            &["application/json", "text/html"][..],
            "ambiguous_content_type",
        ),
        (
            &["application/json, text/html"][..],
            "ambiguous_content_type",
        ),
        (&["application /json"][..], "malformed_content_type"),
        (&["application/json; charset"][..], "malformed_content_type"),
        (&["json"][..], "malformed_content_type"),
    ] {
        let r = send(fx.addr(), &post(cts), b"{}").await;
        assert_refusal(&r, 415, "unsupported_media_type", reason);
    }
    // A chunked body without a type is a body too.
    let head =
        "POST /json HTTP/1.1\nHost: app.test\nConnection: close\nTransfer-Encoding: chunked\n";
    let r = send(fx.addr(), head, &chunked(2, 2)).await;
    assert_refusal(&r, 415, "unsupported_media_type", "missing_content_type");
    assert_eq!(up.hits(), hits, "no refused request reached the upstream");
    // No body and no type: a GET, a DELETE, an empty POST pass.
    for head in [
        "GET /json HTTP/1.1\nHost: app.test\nConnection: close\n",
        "DELETE /json HTTP/1.1\nHost: app.test\nConnection: close\n",
        "POST /json HTTP/1.1\nHost: app.test\nConnection: close\nContent-Length: 0\n",
    ] {
        let r = send(fx.addr(), head, b"").await;
        assert_eq!(r.status, 200, "{head}");
        assert_eq!(next_body(&mut bodies).await.1, Ok(0));
    }
    // A type on a bodiless request is still judged.
    let head = "GET /json HTTP/1.1\nHost: app.test\nConnection: close\nContent-Type: text/xml\n";
    let r = send(fx.addr(), head, b"").await;
    assert_eq!(r.status, 200, "text/* allows text/xml");
    assert_eq!(next_body(&mut bodies).await.1, Ok(0));
    let head =
        "GET /json HTTP/1.1\nHost: app.test\nConnection: close\nContent-Type: application/xml\n";
    let r = send(fx.addr(), head, b"").await;
    assert_refusal(
        &r,
        415,
        "unsupported_media_type",
        "content_type_not_allowed",
    );
}

#[tokio::test]
async fn security_headers_on_forwarded_refused_and_admin_responses() {
    let (up, _bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    // Forwarded: fortress's policy replaces the app's X-Frame-Options; Server and
    // X-Powered-By are removed; no HSTS over plain HTTP.
    let r = get(fx.addr(), "/small/page").await;
    assert_eq!(r.status, 200);
    assert_security_headers(&r);
    assert_eq!(r.header("content-security-policy"), None);
    // Refused by fortress: 401, 404, 413.
    let r = get(fx.addr(), "/private").await;
    assert_refusal(&r, 401, "unauthorized", "missing_token");
    let r = get(fx.addr(), "/nowhere").await;
    assert_refusal(&r, 404, "not_found", "no_route");
    // The admin listener.
    for path in ["/metrics", "/healthz"] {
        let r = get(fx.admin(), path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_security_headers(&r);
    }
    // A route's overrides: another value, one removed, one added.
    let r = get(fx.addr(), "/framed").await;
    assert_eq!(r.header("x-frame-options"), Some("SAMEORIGIN"));
    assert_eq!(r.header("referrer-policy"), None);
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // `keep`: the app's own value wins when it sends one.
    let r = get(fx.addr(), "/kept").await;
    assert_eq!(r.header("x-frame-options"), Some("ALLOWALL"));
    assert_eq!(r.header("server"), None);
}

#[tokio::test]
async fn hsts_only_over_https_direct_or_vouched() {
    let (up, _bodies) = reading_upstream().await;
    let certs = TestCerts::new("edge-hsts");
    let (fx, _dir) = tls_fortress(up.addr, &certs, ROUTES).await;
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    for path in ["/small/x", "/nowhere"] {
        let req = Request::get(format!("https://localhost:{}{path}", fx.client_addr.port()))
            .body(full(Bytes::new()))
            .expect("request");
        let resp = h2.send_request(req).await.expect("h2 response");
        assert_eq!(
            resp.headers()["strict-transport-security"],
            "max-age=31536000",
            "{path}"
        );
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
    }
    // Plain HTTP vouched for by a trusted proxy counts as HTTPS; an untrusted peer's claim is
    // refused by the transport rules (and gets no HSTS).
    let (up2, _b) = reading_upstream().await;
    let fx = TestFortress::start(&config(up2.addr, "trusted_proxies: [127.0.0.0/8]", ROUTES)).await;
    let r = get_with(fx.addr(), "/small/x", &[("X-Forwarded-Proto", "https")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    let r = get_with(fx.addr(), "/small/x", &[("X-Forwarded-Proto", "http")]).await;
    assert_eq!(r.header("strict-transport-security"), None);
}

const CORS: &str = r#"cors:
  origins: ["https://app.example.com", "https://*.example.org", "http://localhost:3000"]
  methods: [GET, POST]
  headers: [content-type, x-trace]
  credentials: true
  max_age: 10m
  expose_headers: [x-request-id]
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { value: "local-secret-local-secret-local-secret" }
routes:
  - name: api
    match: { path: /api, methods: [GET, POST, PUT] }
  - name: open
    match: { path: /open }
    public: true
  - name: own-cors
    match: { path: /partner }
    public: true
    cors: { origins: ["https://partner.test"] }
"#;

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> String {
    let mut h = format!(
        "OPTIONS /api HTTP/1.1\nHost: app.test\nConnection: close\nOrigin: {origin}\n\
         Access-Control-Request-Method: {method}\n"
    );
    if let Some(v) = headers {
        h.push_str(&format!("Access-Control-Request-Headers: {v}\n"));
    }
    h
}

#[tokio::test]
async fn cors_preflights_are_answered_before_authentication() {
    let (up, _bodies) = reading_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CORS)).await;
    // Allowed: 204 with the CORS headers, no token needed, nothing forwarded.
    let r = send(
        fx.addr(),
        &preflight(
            "https://app.example.com",
            "POST",
            Some("Content-Type, X-Trace"),
        ),
        b"",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-trace")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(
        r.header("vary"),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
    assert!(r.body.is_empty());
    assert_security_headers(&r);
    // Wildcards: one or more labels, same scheme and port.
    for ok in ["https://a.example.org", "https://a.b.example.org"] {
        let r = send(fx.addr(), &preflight(ok, "GET", None), b"").await;
        assert_eq!(r.status, 204, "{ok}");
        assert_eq!(r.header("access-control-allow-origin"), Some(ok));
    }
    // Refused: 403 without any CORS header.
    for (origin, method, headers, reason) in [
        ("https://evil.test", "POST", None, "cors_origin_not_allowed"),
        (
            "https://example.org",
            "GET",
            None,
            "cors_origin_not_allowed",
        ),
        (
            "http://a.example.org",
            "GET",
            None,
            "cors_origin_not_allowed",
        ),
        (
            "https://a.example.org:8443",
            "GET",
            None,
            "cors_origin_not_allowed",
        ),
        (
            "https://evil.com/.example.org",
            "GET",
            None,
            "cors_origin_not_allowed",
        ),
        (
            "https://a.example.org.evil.com",
            "GET",
            None,
            "cors_origin_not_allowed",
        ),
        (
            "https://evilexample.org",
            "GET",
            None,
            "cors_origin_not_allowed",
        ),
        ("null", "GET", None, "cors_origin_not_allowed"),
        (
            "https://APP.example.com",
            "GET",
            None,
            "cors_origin_not_allowed",
        ),
        (
            "http://localhost:3001",
            "GET",
            None,
            "cors_origin_not_allowed",
        ),
        (
            "https://app.example.com",
            "PUT",
            None,
            "cors_method_not_allowed",
        ),
        (
            "https://app.example.com",
            "POST",
            Some("content-type, x-evil"),
            "cors_header_not_allowed",
        ),
        (
            "https://app.example.com",
            "POST",
            Some("content-type;x"),
            "cors_header_not_allowed",
        ),
    ] {
        let r = send(fx.addr(), &preflight(origin, method, headers), b"").await;
        assert_refusal(&r, 403, "forbidden", reason);
        assert!(
            r.headers
                .iter()
                .all(|(n, _)| !n.starts_with("access-control-")),
            "{origin} {method}: {:?}",
            r.headers
        );
    }
    // A preflight is judged by the route of the method it announces: no route takes DELETE
    // on /api (405), no route has /ghost (404).
    let r = send(
        fx.addr(),
        &preflight("https://app.example.com", "DELETE", None),
        b"",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, PUT"));
    let r = send(
        fx.addr(),
        "OPTIONS /ghost HTTP/1.1\nHost: app.test\nConnection: close\nOrigin: https://app.example.com\nAccess-Control-Request-Method: GET\n",
        b"",
    )
    .await;
    assert_refusal(&r, 404, "not_found", "no_route");
    // A route's own block replaces the policy's.
    let r = send(
        fx.addr(),
        "OPTIONS /partner HTTP/1.1\nHost: app.test\nConnection: close\nOrigin: https://app.example.com\nAccess-Control-Request-Method: GET\n",
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    let r = send(
        fx.addr(),
        "OPTIONS /partner HTTP/1.1\nHost: app.test\nConnection: close\nOrigin: https://partner.test\nAccess-Control-Request-Method: GET\n",
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://partner.test")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(up.hits(), 0, "no preflight reached the upstream");
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_refusals_total{reason="cors_origin_not_allowed",route="api"}"#
        )
        .await,
        Some(10.0)
    );
}

#[tokio::test]
async fn cors_headers_on_actual_requests_of_allowed_origins_only() {
    let (up, _bodies) = reading_upstream().await;
    let fx = TestFortress::start(&config(up.addr, "", CORS)).await;
    let r = get_with(fx.addr(), "/open", &[("Origin", "https://app.example.com")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com"),
        "echoed, and the app's `*` is gone"
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    // A refusal from an allowed origin carries them too (the page can read its 401).
    let r = get_with(fx.addr(), "/api", &[("Origin", "https://app.example.com")]).await;
    assert_refusal(&r, 401, "unauthorized", "missing_token");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // Another origin: served (CORS guards reading, not sending), but no CORS header, and the
    // app's own `Access-Control-Allow-Origin: *` removed.
    let r = get_with(fx.addr(), "/open", &[("Origin", "https://evil.test")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header("vary"), Some("Origin"));
    // Two Origin fields: none allowed.
    let r = get_with(
        fx.addr(),
        "/open",
        &[
            ("Origin", "https://app.example.com"),
            ("Origin", "https://evil.test"),
        ],
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    // A plain OPTIONS (no Access-Control-Request-Method) is not a preflight: routed as OPTIONS.
    let r = send(
        fx.addr(),
        "OPTIONS /open HTTP/1.1\nHost: app.test\nConnection: close\nOrigin: https://app.example.com\n",
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn upstream_5xx_bodies_are_scrubbed() {
    let (up, _bodies) = reading_upstream().await;
    let fx = start(&up, "").await;
    let r = get(fx.addr(), "/boom").await;
    assert_eq!(r.status, 500);
    let id = r.header("x-request-id").expect("id").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "internal_server_error", "reason": "upstream_error", "request_id": id, "trace_id": trace_id(&r)})
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("content-length").map(str::to_owned),
        Some(r.body.len().to_string())
    );
    assert_eq!(r.header("set-cookie"), None);
    assert_security_headers(&r);
    assert!(!r.text().contains("Traceback"));
    let r = get(fx.addr(), "/busy").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "service_unavailable");
    assert_eq!(r.header("retry-after"), Some("7"));
    assert!(!r.text().contains("10.0.3.7"));
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_scrubbed_errors_total{route="boom"}"#
        )
        .await,
        Some(1.0)
    );
    // `environment: local` (these tests): off unless the route says so.
    let r = get(fx.addr(), "/boom-local").await;
    assert_eq!(r.status, 500);
    assert!(r.text().starts_with("Traceback"), "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("server"), None);
}

fn fortress_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(args)
        .output()
        .expect("run fortress")
}

#[test]
fn check_reports_bad_sizes_origins_and_cors_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.yaml");
    let yaml = r#"server:
  listen: 127.0.0.1:8443
  upstream: http://127.0.0.1:8080
  environment: local
  max_body: 10MB
cors:
  origins: ["*", "https://*.com", "null", "https://app.example.com/"]
  credentials: true
security_headers:
  frame_options: true
  keep: [frame]
routes:
  - name: a
    match: { path: /a }
    public: true
    max_body: 1.5MiB
    content_types: [application/json, "json", "*/*"]
    cors: { origins: ["https://ok.test"], max_age: 2d }
"#;
    std::fs::write(&path, yaml).expect("write");
    let out = fortress_cli(&["check", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    let expected = [
        format!("{p}:5:13: `10MB` is not a size"),
        format!("{p}:7:18: `https://*.com` is not an allowed origin: a wildcard needs"),
        format!("{p}:7:35: `null` is not an allowed origin"),
        format!("{p}:7:43: `https://app.example.com/` is not an allowed origin"),
        format!("{p}:8:16: `credentials: true` with origin `*`"),
        format!("{p}:10:18: `frame_options: true` is not a value"),
        format!("{p}:11:10: `frame` is not a security header key"),
        format!("{p}:16:15: `1.5MiB` is not a size"),
        format!("{p}:17:39: `json` is not a media type"),
        format!("{p}:17:47: `*/*` is not a media type"),
        format!("{p}:18:52: `2d` is not a preflight max age"),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, e) in lines.iter().zip(&expected) {
        assert!(line.starts_with(e.as_str()), "expected {e:?}, got {line:?}");
    }
}

#[test]
fn explain_shows_the_cors_and_request_limit_stages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.yaml");
    let yaml = format!(
        "server:\n  listen: 127.0.0.1:8443\n  upstream: http://127.0.0.1:8080\n  \
         environment: local\n  max_body: 1KiB\n{}",
        CORS.replace(
            "  - name: open\n",
            "  - name: open\n    content_types: [application/json]\n"
        )
    );
    std::fs::write(&path, yaml).expect("write");
    let p = path.to_str().expect("utf8");
    let out = fortress_cli(&[
        "explain",
        "-c",
        p,
        "--method",
        "OPTIONS",
        "--path",
        "/api",
        "-H",
        "Origin: https://app.example.com",
        "-H",
        "Access-Control-Request-Method: POST",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "cors       pass     preflight from https://app.example.com for POST: answered 204"
        ),
        "{text}"
    );
    assert!(
        !text.contains("authn"),
        "a preflight skips authentication: {text}"
    );
    assert!(
        text.contains("decision   preflight 204 answered by fortress"),
        "{text}"
    );
    let out = fortress_cli(&[
        "explain",
        "-c",
        p,
        "--method",
        "POST",
        "--path",
        "/open",
        "-H",
        "Content-Length: 2048",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("request_limits deny     content_length_too_large (Content-Length 2048 over max_body 1024)"),
        "{text}"
    );
    let out = fortress_cli(&[
        "explain",
        "-c",
        p,
        "--method",
        "POST",
        "--path",
        "/open",
        "-H",
        "Content-Length: 2",
        "-H",
        "Content-Type: text/html",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "content_type_not_allowed (content_type_not_allowed: Content-Type text/html)"
        ),
        "{text}"
    );
    assert!(text.contains("decision   deny     415"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrubbed_bodies_are_logged_bounded_for_operators() {
    let up = Upstream::spawn(|req: Request<Incoming>| async move {
        // A long traceback: 5000 bytes, of which the log keeps the first 2 KiB.
        let body = if req.uri().path() == "/long" {
            format!(
                "Traceback: secret-dsn=postgres://app:hunter2@db {}",
                "x".repeat(5000)
            )
        } else {
            "Traceback: KeyError 'tenant'".to_owned()
        };
        let mut r = Response::new(full(body));
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        config(up.addr, "", &format!("scrub_errors: true\n{CATCH_ALL}")),
    )
    .expect("write config");
    let fp = FortressProcess::spawn(&path);
    for (target, needle, truncated) in [
        (
            "/short",
            "upstream_body=Traceback: KeyError",
            "truncated=false",
        ),
        (
            "/long",
            "secret-dsn=postgres://app:hunter2@db",
            "truncated=true",
        ),
    ] {
        let r = get(fp.addr, target).await;
        assert_eq!(r.status, 500);
        assert!(!r.text().contains("Traceback"), "{}", r.text());
        let rid = r.header("x-request-id").expect("rid").to_owned();
        let line_of = |logs: Vec<String>| {
            logs.into_iter()
                .find(|l| l.contains("upstream error body scrubbed") && l.contains(&rid))
        };
        assert!(
            eventually(Duration::from_secs(10), || async {
                line_of(fp.logs()).is_some()
            })
            .await,
            "no scrub log line for {rid}: {:#?}",
            fp.logs()
        );
        let line = line_of(fp.logs()).expect("line");
        assert!(line.contains(needle), "{line}");
        assert!(line.contains(truncated), "{line}");
        assert!(line.contains("http.status=500"), "{line}");
        assert!(line.len() < 2048 + 512, "bounded: {} bytes", line.len());
    }
}
