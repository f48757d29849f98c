//! Forwarding over HTTP/1.1: canonical paths, unsafe targets, default deny, header hygiene,
//! streaming, 502/504.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use support::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn proxies_http1_and_sets_forwarding_headers() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let r = get_with(
        fx.addr(),
        "/api/items?x=1&y=%2F",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-ID", "client-chosen"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /api/items?x=1&y=%2F");
    assert_eq!(r.header("x-upstream"), Some("yes"));
    let rid = r.header("x-request-id").expect("request id returned");
    assert_eq!(rid.len(), 32, "generated, not the untrusted client's");

    let seen = &up.requests()[0];
    let h = |n: &str| {
        seen.headers
            .get(n)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(h("x-forwarded-host").as_deref(), Some("app.test"));
    assert_eq!(h("host").as_deref(), Some("app.test"));
    assert_eq!(h("x-request-id").as_deref(), Some(rid));
}

#[tokio::test]
async fn trusted_proxy_headers_are_kept_and_extended() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "trusted_proxies: [127.0.0.0/8]",
        CATCH_ALL,
    ))
    .await;
    let r = get_with(
        fx.addr(),
        "/x",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-ID", "edge-123"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("edge-123"));
    let seen = &up.requests()[0];
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-request-id"], "edge-123");
}

#[tokio::test]
async fn upstream_receives_exactly_the_canonical_path() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let cases = [
        ("/a//b///c", "/a/b/c"),
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/.", "/a/b/"),
        ("/%61%62c", "/abc"),
        ("/a%7eb", "/a~b"),
        ("/a%3ab", "/a%3Ab"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/x?q=%2F..%2F", "/x?q=%2F..%2F"),
        ("/", "/"),
    ];
    for (sent, expected) in cases {
        let r = get(fx.addr(), sent).await;
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(r.text(), format!("upstream saw GET {expected}"), "{sent}");
    }
    let targets: Vec<String> = up.requests().into_iter().map(|s| s.target).collect();
    let expected: Vec<&str> = cases.iter().map(|c| c.1).collect();
    assert_eq!(targets, expected);
}

#[tokio::test]
async fn unsafe_targets_get_400_and_never_reach_the_upstream() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let cases: [(&str, &str); 24] = [
        ("/a%2Fb", "encoded_slash"),
        ("/a%2fb", "encoded_slash"),
        ("/..%2Fetc/passwd", "encoded_slash"),
        ("/a%5Cb", "encoded_backslash"),
        ("/a%5cb", "encoded_backslash"),
        ("/a%00b", "nul"),
        ("/a%0Ab", "nul"),
        ("/%252e%252e/etc", "double_encoding"),
        ("/a%252Fb", "double_encoding"),
        ("/%2e%2e/etc/passwd", "encoded_dot_segment"),
        ("/.%2E/x", "encoded_dot_segment"),
        ("/a/%2E/b", "encoded_dot_segment"),
        ("/../etc/passwd", "escapes_root"),
        ("/a/../../etc", "escapes_root"),
        ("/..", "escapes_root"),
        ("/..;/admin", "dot_semicolon"),
        ("/a/..;x/b", "dot_semicolon"),
        ("/%G1", "bad_percent_encoding"),
        ("/abc%2", "bad_percent_encoding"),
        ("/%", "bad_percent_encoding"),
        ("http://evil.example/x", "target_form"),
        ("http://127.0.0.1/a", "target_form"),
        ("*", "target_form"),
        ("/a%7Fb", "nul"),
    ];
    for (target, reason) in cases {
        let r = get(fx.addr(), target).await;
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{target}"
        );
        let rid = r.header("x-request-id").expect("request id").to_owned();
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "bad_request", "reason": reason, "request_id": rid, "trace_id": trace_id(&r)}),
            "{target}"
        );
    }
    // Raw backslash and CONNECT: refused (hyper or fortress), never forwarded.
    for req in [
        "GET /a\\b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw(fx.addr(), req.as_bytes()).await;
        assert_eq!(r.status, 400, "{req:?}");
    }
    assert_eq!(up.hits(), 0, "no unsafe request may reach the upstream");
}

#[tokio::test]
async fn default_deny_is_404_without_upstream_call() {
    let up = Upstream::echo().await;
    let routes = "default: deny\nroutes:\n  - name: reports\n    match: { methods: [GET], path: \
                  \"/api/orgs/{org_id}/reports/**\" }\n    public: true\n";
    let fx = TestFortress::start(&config(up.addr, "", routes)).await;
    let r = get(fx.addr(), "/api/other").await;
    assert_eq!(r.status, 404);
    let rid = r.header("x-request-id").expect("rid").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error":"not_found","reason":"no_route","request_id": rid, "trace_id": trace_id(&r)})
    );
    let r = raw(
        fx.addr(),
        b"DELETE /api/orgs/acme/reports/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["reason"], "method_not_allowed");
    assert_eq!(up.hits(), 0);
    let r = get(fx.addr(), "/api/orgs/acme/reports/q3").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /api/orgs/acme/reports/q3");
    assert_eq!(up.hits(), 1);
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_requests_total{decision="deny",method="GET",mode="enforce",route="-",status="4xx"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let up = Upstream::spawn(|_req| async {
        let mut r = Response::new(full("ok"));
        let h = r.headers_mut();
        h.insert("connection", "x-up-secret".parse().expect("hv"));
        h.insert("x-up-secret", "1".parse().expect("hv"));
        h.insert("keep-alive", "timeout=5".parse().expect("hv"));
        h.insert("proxy-authenticate", "Basic".parse().expect("hv"));
        h.insert("x-kept", "1".parse().expect("hv"));
        r
    })
    .await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let r = raw(
        fx.addr(),
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n\
          Keep-Alive: timeout=1\r\nProxy-Authorization: Basic Zm9v\r\nTE: trailers\r\n\
          Upgrade: websocket\r\nProxy-Connection: keep-alive\r\nX-Normal: n\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-kept"), Some("1"));
    for gone in ["x-up-secret", "keep-alive", "proxy-authenticate"] {
        assert_eq!(r.header(gone), None, "{gone} reached the client");
    }
    let seen = &up.requests()[0].headers;
    assert_eq!(seen["x-normal"], "n");
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
        "proxy-connection",
    ] {
        assert!(seen.get(gone).is_none(), "{gone} reached the upstream");
    }
    // The upstream connection is fortress's own keep-alive, not the client's `close`.
    assert_ne!(
        seen.get("connection").map(|v| v.to_str().expect("ascii")),
        Some("close, X-Secret")
    );
}

#[tokio::test]
async fn first_chunk_reaches_client_before_upstream_finishes() {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let up = Upstream::spawn(move |_req| {
        let rx = rx.clone();
        async move {
            let mut rx = rx.lock().await.take().expect("one stream");
            let (ftx, frx) =
                mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(4);
            tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    if ftx.send(Ok(Frame::data(chunk))).await.is_err() {
                        return;
                    }
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(
                fortress::demo::ReceiverStream::new(frx),
            )))
        }
    })
    .await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let mut client = h1(fx.addr()).await;
    tx.send(Bytes::from_static(b"first\n")).await.expect("send");
    let req = Request::get("/stream")
        .header("host", "a")
        .body(full(""))
        .expect("req");
    let resp = client.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk arrives while the upstream is still open")
        .expect("frame")
        .expect("ok");
    assert_eq!(
        frame.into_data().expect("data"),
        Bytes::from_static(b"first\n")
    );
    tx.send(Bytes::from_static(b"second\n"))
        .await
        .expect("send");
    drop(tx);
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second\n"));
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    // A port with nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let fx = TestFortress::start(&config(closed, "", CATCH_ALL)).await;
    let r = get(fx.addr(), "/x").await;
    assert_eq!(r.status, 502);
    let rid = r.header("x-request-id").expect("rid").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error":"bad_gateway","reason":"upstream_unavailable","request_id":rid, "trace_id": trace_id(&r)})
    );
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_upstream_errors_total{kind="connect"}"#
        )
        .await,
        Some(1.0)
    );

    let (_hold_tx, hold_rx) = tokio::sync::watch::channel(());
    let slow = Upstream::spawn(move |_req| {
        let mut hold = hold_rx.clone();
        async move {
            let _ = hold.changed().await; // never answers while the test runs
            Response::new(full("late"))
        }
    })
    .await;
    let routes = "routes:\n  - name: slow\n    match: { path: \"/**\" }\n    public: true\n    timeout: 300ms\n";
    let fx = TestFortress::start(&config(slow.addr, "", routes)).await;
    let r = get(fx.addr(), "/x").await;
    assert_eq!(r.status, 504);
    let rid = r.header("x-request-id").expect("rid").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error":"gateway_timeout","reason":"upstream_timeout","request_id":rid, "trace_id": trace_id(&r)})
    );
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_upstream_errors_total{kind="timeout"}"#
        )
        .await,
        Some(1.0)
    );
}
