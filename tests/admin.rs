//! The admin listener: health, readiness, JSON errors and the Prometheus exposition.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use support::*;

fn assert_json(r: &RawResponse, status: u16, body: serde_json::Value) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.json(), body);
}

/// A port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The value of the one sample whose line starts with `prefix` (labels included).
fn sample(text: &str, prefix: &str) -> Option<String> {
    let mut found = text
        .lines()
        .filter(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .map(|l| l[prefix.len() + 1..].to_owned());
    let first = found.next();
    assert_eq!(found.next(), None, "{prefix} appears twice");
    first
}

#[tokio::test]
async fn health_readiness_and_json_errors() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let admin = fx.admin();

    assert_json(
        &get(admin, "/healthz").await,
        200,
        serde_json::json!({"status": "ok"}),
    );
    assert_json(
        &get(admin, "/readyz").await,
        200,
        serde_json::json!({"status": "ready"}),
    );
    let r = raw(
        admin,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_json(
        &r,
        405,
        serde_json::json!({"error": "method_not_allowed", "reason": "method_not_allowed", "request_id": "-"}),
    );
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = get(admin, "/admin/reload").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_json(
        &get(admin, "/nope").await,
        404,
        serde_json::json!({"error": "not_found", "reason": "no_route", "request_id": "-"}),
    );
    // The admin listener does not proxy anything.
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn readyz_is_503_while_the_upstream_is_down() {
    let fx = TestFortress::start(&config(closed_port(), "", CATCH_ALL)).await;
    assert_json(
        &get(fx.admin(), "/readyz").await,
        503,
        serde_json::json!({"status": "not_ready"}),
    );
    // Liveness does not depend on the upstream.
    assert_json(
        &get(fx.admin(), "/healthz").await,
        200,
        serde_json::json!({"status": "ok"}),
    );
}

#[tokio::test]
async fn metrics_after_one_proxied_request() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let admin = fx.admin();

    // One request on a keep-alive connection that stays open for now.
    let mut client = h1(fx.addr()).await;
    let req = Request::get("/x")
        .header("host", "app.test")
        .body(full(""))
        .expect("request");
    let resp = client.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "upstream saw GET /x");

    // The request is recorded when its response body is finished, which may be just after
    // the client has read it.
    let requests = r#"fortress_requests_total{decision="allow",method="GET",mode="enforce",route="all",status="2xx"}"#;
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(admin, requests).await == Some(1.0)
        })
        .await,
        "{requests} never reached 1"
    );

    let r = get(admin, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let s = |prefix: &str| sample(&text, prefix);
    assert_eq!(s(requests).as_deref(), Some("1"));
    assert_eq!(
        s(r#"fortress_request_duration_seconds_count{route="all"}"#).as_deref(),
        Some("1")
    );
    assert_eq!(
        s("fortress_upstream_response_seconds_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        s(r#"fortress_policy_reload_total{result="ok"}"#).as_deref(),
        Some("0")
    );
    // The active policy: exactly one info series, its hash 16 lowercase hex digits, value 1,
    // and the same hash the running config has.
    let info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("fortress_policy_info{"))
        .collect();
    assert_eq!(info.len(), 1, "{info:?}");
    let hash = info[0]
        .strip_prefix(r#"fortress_policy_info{hash=""#)
        .and_then(|rest| rest.strip_suffix(r#""} 1"#))
        .unwrap_or_else(|| panic!("unexpected policy_info line {:?}", info[0]));
    assert_eq!(hash.len(), 16, "{hash}");
    assert!(
        hash.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{hash}"
    );
    assert_eq!(hash, fx.fx.state.config.snapshot().hash);

    // The client connection is the only one open; closing it brings the gauge back to 0.
    assert_eq!(s("fortress_open_connections").as_deref(), Some("1"));
    drop(client);
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(admin, "fortress_open_connections").await == Some(0.0)
        })
        .await,
        "fortress_open_connections did not return to 0"
    );
}

#[tokio::test]
async fn metrics_and_admin_api_answer_only_hosts_no_outsider_controls() {
    // A DNS-rebinding page (its own domain now resolving to 127.0.0.1) must not read metrics
    // or reload; probes stay reachable under any name (kubelet).
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "admin_hosts: [fortress-admin.prod.example.com]",
        "routes:\n  - name: all\n    match: { path: \"/**\" }\n    public: true\n",
    ))
    .await;
    let admin = fx.admin();
    let ask = |host: &'static str, req: &'static str| async move {
        raw(
            admin,
            format!("{req}\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
    };
    for host in [
        "attacker.example.net",
        "attacker.example.net:9901",
        "localhost.attacker.net",
        "127.0.0.1.nip.io",
        "admin.evil.com",
    ] {
        for req in ["GET /metrics HTTP/1.1", "POST /admin/reload HTTP/1.1"] {
            let r = ask(host, req).await;
            assert_json(
                &r,
                421,
                serde_json::json!({"error": "misdirected_request", "reason": "unexpected_host", "request_id": "-"}),
            );
        }
        assert_eq!(
            ask(host, "GET /healthz HTTP/1.1").await.status,
            200,
            "{host}"
        );
    }
    for host in [
        "localhost",
        "localhost:9901",
        "127.0.0.1",
        "[::1]:9901",
        "10.20.30.40:9901",
        "fortress-admin",
        "fortress.ns.svc.cluster.local",
        "fortress-admin.prod.example.com",
        "FORTRESS-ADMIN.PROD.EXAMPLE.COM:9901",
    ] {
        assert_eq!(
            ask(host, "GET /metrics HTTP/1.1").await.status,
            200,
            "{host}"
        );
    }
    // Two Host headers are not one expected host.
    let r = raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nHost: attacker.net\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 421);
}

#[tokio::test]
async fn cross_site_posts_to_the_admin_api_are_refused() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "",
        "routes:\n  - name: all\n    match: { path: \"/**\" }\n    public: true\n",
    ))
    .await;
    let admin = fx.admin();
    let post = |extra: &'static str| async move {
        raw(
            admin,
            format!(
                "POST /admin/reload HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
    };
    for extra in [
        "Origin: https://attacker.example.net\r\n",
        "Origin: null\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
        "Sec-Fetch-Site: same-site\r\n",
        "Origin: http://localhost.attacker.net\r\n",
    ] {
        assert_json(
            &post(extra).await,
            403,
            serde_json::json!({"error": "forbidden", "reason": "cross_site_request", "request_id": "-"}),
        );
    }
    assert_eq!(reloads_ok(admin).await, 0.0, "no refused POST reloaded");
    // Same-origin browsers, curl and operators' tools (no Origin) are served.
    for extra in [
        "",
        "Origin: http://localhost:9901\r\n",
        "Sec-Fetch-Site: same-origin\r\n",
        "Sec-Fetch-Site: none\r\n",
    ] {
        let r = post(extra).await;
        assert_eq!(r.status, 200, "{extra:?}: {}", r.text());
        assert_eq!(r.json()["result"], "applied", "{extra:?}");
    }
    assert_eq!(reloads_ok(admin).await, 4.0);
}

async fn reloads_ok(admin: std::net::SocketAddr) -> f64 {
    metric(admin, r#"fortress_policy_reload_total{result="ok"}"#)
        .await
        .unwrap_or(-1.0)
}
