//! IP allowlists end to end: the policy-wide `allow_ips` and a route's own list (both must
//! pass), IPv4, IPv6 and IPv4-mapped IPv6 clients, the client address behind a trusted proxy
//! (right-most untrusted `X-Forwarded-For`), a spoofed `X-Forwarded-For` from an untrusted
//! peer, the check running before authentication, and dry-run.

mod support;

use std::net::SocketAddr;

use serde_json::json;
use support::*;

/// Asserts the exact 403 `ip_not_allowed` answer.
fn assert_ip_refused(r: &RawResponse) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("retry-after").is_none());
    assert!(r.header("www-authenticate").is_none());
    let rid = r.header("x-request-id").expect("request id");
    assert_eq!(
        r.json(),
        json!({"error": "forbidden", "reason": "ip_not_allowed", "request_id": rid, "trace_id": trace_id(r)})
    );
}

async fn from(addr: SocketAddr, target: &str, xff: &str) -> RawResponse {
    get_with(addr, target, &[("x-forwarded-for", xff)]).await
}

const SECRET: &str = "fortress-ip-allow-test-secret-0123456789-abcdef";

fn routes() -> String {
    format!(
        "authentication:\n  jwt:\n    issuer: ip-test\n    audiences: [api]\n    algorithms: [HS256]\n    \
         secret: {{ value: \"{SECRET}\" }}\n\
         allow_ips: [10.0.0.0/8, 192.168.1.5, \"2001:db8::/32\"]\n\
         routes:\n  - name: admin\n    match: {{ path: \"/admin/**\" }}\n    public: true\n    \
         allow_ips: [10.1.0.0/16, \"2001:db8:1::/48\"]\n  \
         - name: api\n    match: {{ path: \"/api/**\" }}\n  \
         - name: trial\n    match: {{ path: \"/trial/**\" }}\n    public: true\n    mode: dry-run\n    \
         allow_ips: [10.9.0.0/16]\n  \
         - name: open\n    match: {{ path: \"/**\" }}\n    public: true\n"
    )
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_judged() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "trusted_proxies: [127.0.0.1/32]\nallow_insecure_local: true",
        &routes(),
    ))
    .await;
    let addr = fx.addr();

    // In the policy-wide list: v4, a single address, v6, and the v4-mapped v6 form.
    for client in [
        "10.2.3.4",
        "192.168.1.5",
        "2001:db8:9::1",
        "::ffff:10.2.3.4",
    ] {
        let r = from(addr, "/x", client).await;
        assert_eq!(r.status, 200, "{client}: {}", r.text());
        assert_eq!(r.text(), "upstream saw GET /x");
    }
    assert_eq!(up.hits(), 4);
    // Outside it, in every spelling (a mapped v6 address is its v4 address).
    for client in [
        "11.0.0.1",
        "192.168.1.6",
        "2001:db9::1",
        "::ffff:11.0.0.1",
        "::ffff:192.168.1.6",
        "[2001:db9::1]:443",
        "10.2.3.4, 172.16.0.9",
    ] {
        assert_ip_refused(&from(addr, "/x", client).await);
    }
    assert_eq!(up.hits(), 4, "no refused request reached the upstream");

    // The route's list narrows the policy-wide one: both must pass.
    for client in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8:1::5"] {
        let r = from(addr, "/admin/users", client).await;
        assert_eq!(r.status, 200, "{client}: {}", r.text());
    }
    for client in ["10.2.0.1", "2001:db8:2::5", "192.168.1.5"] {
        assert_ip_refused(&from(addr, "/admin/users", client).await);
    }
    assert_eq!(up.hits(), 7);

    // Before authentication: a client that may not be here learns nothing about tokens.
    assert_ip_refused(&from(addr, "/api/x", "11.0.0.1").await);
    let r = from(addr, "/api/x", "10.2.3.4").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.hits(), 7);

    // Dry-run route: recorded and forwarded.
    let r = from(addr, "/trial/x", "10.2.3.4").await;
    assert_eq!(
        (r.status, r.text()),
        (200, "upstream saw GET /trial/x".to_owned())
    );
    assert_eq!(up.hits(), 8);
    assert_eq!(
        metric(
            fx.admin(),
            "fortress_refusals_total{reason=\"ip_not_allowed\",route=\"trial\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            fx.admin(),
            "fortress_refusals_total{reason=\"ip_not_allowed\",route=\"admin\"}"
        )
        .await,
        Some(3.0)
    );
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_help() {
    let up = Upstream::echo().await;
    // The peer (127.0.0.1) is not a trusted proxy and not in the list.
    let fx = TestFortress::start(&config(up.addr, "allow_insecure_local: true", &routes())).await;
    let addr = fx.addr();
    for spoof in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1"] {
        assert_ip_refused(&from(addr, "/x", spoof).await);
        assert_ip_refused(&from(addr, "/admin/x", spoof).await);
        let r = get_with(addr, "/x", &[("x-real-ip", spoof)]).await;
        assert_ip_refused(&r);
    }
    assert_ip_refused(&get(addr, "/x").await);
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn the_tcp_peer_is_judged_without_a_proxy() {
    let up = Upstream::echo().await;
    let allowed = config(
        up.addr,
        "",
        "allow_ips: [\"::ffff:127.0.0.0/104\"]\nroutes:\n  - name: all\n    match: { path: \"/**\" }\n    public: true\n    allow_ips: [127.0.0.1]\n",
    );
    let fx = TestFortress::start(&allowed).await;
    let r = get(fx.addr(), "/x").await;
    assert_eq!(
        (r.status, r.text()),
        (200, "upstream saw GET /x".to_owned())
    );
    let refused = config(
        up.addr,
        "",
        &format!("allow_ips: [10.0.0.0/8]\n{CATCH_ALL}"),
    );
    let fx2 = TestFortress::start(&refused).await;
    assert_ip_refused(&get(fx2.addr(), "/x").await);
    assert_eq!(up.hits(), 1);
}
