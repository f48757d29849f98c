//! Failed-authentication throttling end to end, on the test clock: more than `max` forged or
//! unreadable tokens from one client IP in a window → 429 `too_many_failed_authentications`
//! with `Retry-After` to the window's end, for every authenticated route (a valid token
//! included) until the window passes; missing, malformed and expired tokens do not count; other IPs,
//! public routes and `fortress explain` are unaffected; a reload keeps the counts.

mod support;

use std::net::SocketAddr;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use support::*;

const SECRET: &str = "fortress-throttle-test-secret-0123456789-abcdef";

fn token_with(secret: &str, iat: u64, exp: u64) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": "alice", "iss": "throttle-test", "aud": "api", "iat": iat, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A valid token on the test clock.
fn valid() -> String {
    let start = TestClock::START / 1000;
    token_with(SECRET, start, start + 3600)
}

/// A token signed with another secret (a guess).
fn forged() -> String {
    let start = TestClock::START / 1000;
    token_with(
        "not-the-secret-0123456789-0123456789-xyz",
        start,
        start + 3600,
    )
}

fn policy(up: SocketAddr, limit: &str) -> String {
    config(
        up,
        "trusted_proxies: [127.0.0.1/32]\nallow_insecure_local: true",
        &format!(
            "authentication:\n  jwt:\n    issuer: throttle-test\n    audiences: [api]\n    algorithms: [HS256]\n    \
             secret: {{ value: \"{SECRET}\" }}\n{limit}\
             roles:\n  ops: [\"admin:*\"]\n\
             routes:\n  - name: api\n    match: {{ path: \"/api/**\" }}\n  \
             - name: health\n    match: {{ path: \"/health\" }}\n    public: true\n"
        ),
    )
}

async fn call(addr: SocketAddr, target: &str, ip: &str, token: Option<&str>) -> RawResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-forwarded-for", ip)];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    get_with(addr, target, &headers).await
}

fn assert_throttled(r: &RawResponse, retry_after: &str) {
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some(retry_after));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("www-authenticate").is_none());
    let rid = r.header("x-request-id").expect("request id");
    assert_eq!(
        r.json(),
        json!({"error": "too_many_requests", "reason": "too_many_failed_authentications", "request_id": rid, "trace_id": trace_id(r)})
    );
}

#[tokio::test]
async fn forged_tokens_trip_the_throttle_until_the_window_passes() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let fx = TestFortress::start_with_clock(
        &policy(up.addr, "failed_auth_limit: { max: 3, per: 1m }\n"),
        &clock,
    )
    .await;
    let (addr, admin) = (fx.addr(), fx.admin());
    let (good, bad) = (valid(), forged());
    const A: &str = "203.0.113.7";

    assert_eq!(call(addr, "/api/x", A, Some(&good)).await.status, 200);
    // Three failures are tolerated, the fourth trips the throttle (it is still a 401).
    for n in 1..=4 {
        let r = call(addr, "/api/x", A, Some(&bad)).await;
        assert_eq!(r.status, 401, "failure {n}: {}", r.text());
        assert_eq!(r.json()["reason"], "invalid_token");
    }
    for _ in 0..3 {
        assert_throttled(&call(addr, "/api/x", A, Some(&bad)).await, "60");
    }
    // A valid token from the throttled IP is refused too (never verified), and so is a
    // request without one.
    assert_throttled(&call(addr, "/api/x", A, Some(&good)).await, "60");
    assert_throttled(&call(addr, "/api/x", A, None).await, "60");
    assert_eq!(up.hits(), 1);
    // Public routes do not authenticate, so they are not throttled.
    assert_eq!(call(addr, "/health", A, None).await.status, 200);
    // Another client is unaffected.
    assert_eq!(
        call(addr, "/api/x", "203.0.113.8", Some(&good))
            .await
            .status,
        200
    );
    assert_eq!(
        call(addr, "/api/x", "203.0.113.8", Some(&bad)).await.status,
        401
    );
    assert_eq!(up.hits(), 3);

    // Retry-After counts down with the clock; the window's end lifts the throttle.
    clock.advance(45_000);
    assert_throttled(&call(addr, "/api/x", A, Some(&good)).await, "15");
    clock.advance(15_000);
    let r = call(addr, "/api/x", A, Some(&good)).await;
    assert_eq!(
        (r.status, r.text()),
        (200, "upstream saw GET /api/x".to_owned())
    );
    assert_eq!(up.hits(), 4);
    assert_eq!(
        metric(
            admin,
            "fortress_refusals_total{reason=\"too_many_failed_authentications\",route=\"api\"}"
        )
        .await,
        Some(6.0)
    );
}

#[tokio::test]
async fn missing_malformed_and_expired_tokens_do_not_count() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let fx = TestFortress::start_with_clock(
        &policy(up.addr, "failed_auth_limit: { max: 2, per: 1m }\n"),
        &clock,
    )
    .await;
    let addr = fx.addr();
    let start = TestClock::START / 1000;
    let expired = token_with(SECRET, start - 7200, start - 3600);
    for _ in 0..10 {
        let r = call(addr, "/api/x", "198.51.100.1", None).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["reason"], "missing_token");
        let r = call(addr, "/api/x", "198.51.100.1", Some(&expired)).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["reason"], "invalid_token");
        let r = call(addr, "/api/x", "198.51.100.1", Some("undefined")).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["reason"], "invalid_token");
    }
    let r = call(addr, "/api/x", "198.51.100.1", Some(&valid())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Forged tokens count.
    for _ in 0..3 {
        assert_eq!(
            call(addr, "/api/x", "198.51.100.1", Some(&forged()))
                .await
                .status,
            401
        );
    }
    assert_throttled(
        &call(addr, "/api/x", "198.51.100.1", Some(&valid())).await,
        "60",
    );
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64_and_a_reload_keeps_the_count() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let fx = TestFortress::start_with_clock(
        &policy(up.addr, "failed_auth_limit: { max: 2, per: 10m }\n"),
        &clock,
    )
    .await;
    let (addr, admin) = (fx.addr(), fx.admin());
    let bad = forged();
    // Rotating addresses inside one /64 does not escape the count.
    for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"] {
        assert_eq!(call(addr, "/api/x", host, Some(&bad)).await.status, 401);
    }
    assert_throttled(
        &call(addr, "/api/x", "2001:db8:1:2::99", Some(&valid())).await,
        "600",
    );
    // The next /64 is another client.
    assert_eq!(
        call(addr, "/api/x", "2001:db8:1:3::1", Some(&valid()))
            .await
            .status,
        200
    );
    // A reload that keeps the limit keeps the count.
    let text = std::fs::read_to_string(&fx.config_path).expect("read");
    std::fs::write(
        &fx.config_path,
        format!("{text}  - name: more\n    match: {{ path: \"/more\" }}\n    public: true\n"),
    )
    .expect("write");
    // The admin API needs a token whose roles grant `admin:reload`.
    let start = TestClock::START / 1000;
    let admin_token = jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": "ops", "roles": ["ops"], "iss": "throttle-test", "aud": "api", "iat": start, "exp": start + 3600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    let r = raw(
        admin,
        format!(
            "POST /admin/reload HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {admin_token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        call(addr, "/more", "2001:db8:1:2::1", None).await.status,
        200
    );
    assert_throttled(
        &call(addr, "/api/x", "2001:db8:1:2::1", Some(&valid())).await,
        "600",
    );
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn throttling_can_be_turned_off() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let fx = TestFortress::start_with_clock(
        &policy(up.addr, "failed_auth_limit: { enabled: false }\n"),
        &clock,
    )
    .await;
    let addr = fx.addr();
    for _ in 0..60 {
        assert_eq!(
            call(addr, "/api/x", "192.0.2.1", Some(&forged()))
                .await
                .status,
            401
        );
    }
    assert_eq!(
        call(addr, "/api/x", "192.0.2.1", Some(&valid()))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_apps_own_401s_count_on_a_token_endpoint() {
    // A login endpoint the app authenticates itself: 401 for a wrong password.
    let up = Upstream::spawn(|req: http::Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_owned();
        let mut r = http::Response::new(full(format!("app saw {path}")));
        if path.ends_with("/wrong") {
            *r.status_mut() = http::StatusCode::UNAUTHORIZED;
        }
        r
    })
    .await;
    let clock = TestClock::new();
    let fx = TestFortress::start_with_clock(
        &config(
            up.addr,
            "trusted_proxies: [127.0.0.1/32]",
            "failed_auth_limit: { max: 2, per: 1m }\nroutes:\n  - name: login\n    match: { path: \"/login/**\" }\n    \
             public: true\n    upstream_401_counts: true\n  \
             - name: site\n    match: { path: \"/**\" }\n    public: true\n",
        ),
        &clock,
    )
    .await;
    let addr = fx.addr();
    const C: &str = "198.51.100.77";
    // 401s on another public route do not count.
    for _ in 0..5 {
        assert_eq!(call(addr, "/site/wrong", C, None).await.status, 401);
    }
    for _ in 0..3 {
        let r = call(addr, "/login/wrong", C, None).await;
        assert_eq!(
            (r.status, r.text()),
            (401, "app saw /login/wrong".to_owned())
        );
    }
    assert_eq!(up.hits(), 8);
    // Throttled on the login endpoint, the right password included; not on the rest.
    assert_throttled(&call(addr, "/login/right", C, None).await, "60");
    assert_eq!(up.hits(), 8);
    assert_eq!(call(addr, "/site/page", C, None).await.status, 200);
    assert_eq!(
        call(addr, "/login/right", "198.51.100.78", None)
            .await
            .status,
        200
    );
    clock.advance(60_000);
    let r = call(addr, "/login/right", C, None).await;
    assert_eq!(
        (r.status, r.text()),
        (200, "app saw /login/right".to_owned())
    );
}
