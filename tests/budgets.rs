//! Per-tenant budgets: `X-Budget-Warning` at `warn_at`, 429 `budget_exhausted` with
//! `Retry-After` to the next UTC reset, day and month resets via the test clock, metered cost
//! from a response header and from a trailer of a streamed response, persistence across a
//! restart, and the startup refusals (corrupt state file, no `state_dir` outside local).

mod support;

use std::net::SocketAddr;
use std::path::Path;

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "budget-test-secret-0123456789abcdef-xyz";
const DAY: u64 = 86_400_000;
const HOUR: u64 = 3_600_000;

fn token(sub: &str, tenant: Option<&str>) -> String {
    let now = TestClock::START / 1000;
    let mut claims = json!({
        "sub": sub, "roles": ["user"], "iss": "iss", "aud": "aud", "iat": now,
        "exp": now + 86_400 * 60,
    });
    if let Some(t) = tenant {
        claims["tenant"] = json!(t);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// A policy with `budgets` and `routes`, the secret in `dir`.
fn policy(
    upstream: SocketAddr,
    dir: &Path,
    server_extra: &str,
    budgets: &str,
    routes: &str,
) -> String {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let rest = format!(
        "authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
         secret: {{ file: \"{}\" }}\n  claims: {{ subject: sub, roles: roles, tenant: tenant }}\n\
         roles:\n  user: [\"*\"]\nbudgets:\n  per_tenant: {budgets}\nroutes:\n{routes}",
        secret.display()
    );
    config(
        upstream,
        &format!("allow_insecure_local: true\n{server_extra}"),
        &rest,
    )
}

async fn call(addr: SocketAddr, target: &str, tok: &str, extra: &[(&str, &str)]) -> RawResponse {
    let bearer = format!("Bearer {tok}");
    let mut headers = vec![("authorization", bearer.as_str())];
    headers.extend_from_slice(extra);
    get_with(addr, target, &headers).await
}

fn assert_exhausted(r: &RawResponse, retry_after: u64) {
    assert_eq!(r.status, 429, "{}", r.text());
    let rid = r.header("x-request-id").expect("request id");
    assert_eq!(
        r.json(),
        json!({"error": "too_many_requests", "reason": "budget_exhausted", "request_id": rid, "trace_id": trace_id(r)})
    );
    assert_eq!(
        r.header("retry-after"),
        Some(retry_after.to_string().as_str())
    );
    assert_eq!(r.header("x-budget-warning"), None);
}

#[tokio::test]
async fn warning_at_90_percent_refusal_at_100_and_day_and_month_resets() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = "  - name: gen\n    match: { path: \"/gen\" }\n    budget: { cost: 3 }\n  \
                  - name: free\n    match: { path: \"/free\" }\n";
    let yaml = policy(
        up.addr,
        dir.path(),
        "",
        "{ daily: 10, monthly: 15, warn_at: 0.9 }",
        routes,
    );
    // 2026-01-30T10:00Z: 14 h to the day's end, 2 days to the month's.
    clock.set(TestClock::START + 29 * DAY + 10 * HOUR);
    let fx = TestFortress::start_with_clock(&yaml, &clock).await;
    let (t1, t2) = (token("alice", Some("t1")), token("bob", Some("t2")));
    let addr = fx.addr();

    let r = call(addr, "/gen", &t1, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-budget-warning"), None, "3 of 10");
    assert_eq!(
        call(addr, "/gen", &t1, &[])
            .await
            .header("x-budget-warning"),
        None
    );
    let r = call(addr, "/gen", &t1, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-budget-warning"), Some("daily=90%"), "9 of 10");
    // 9 + 3 > 10: refused until midnight UTC (14 h), nothing spent.
    assert_exhausted(&call(addr, "/gen", &t1, &[]).await, 14 * 3600);
    // Other tenants and routes without a budget are not affected.
    assert_eq!(call(addr, "/gen", &t2, &[]).await.status, 200);
    assert_eq!(call(addr, "/free", &t1, &[]).await.status, 200);
    assert_eq!(up.hits(), 5);
    assert_eq!(
        metric(
            fx.admin(),
            "fortress_budget_warnings_total{period=\"daily\"}"
        )
        .await,
        Some(1.0)
    );

    // Next day: the daily budget is fresh, the monthly one is at 9 of 15.
    clock.set(TestClock::START + 30 * DAY);
    let r = call(addr, "/gen", &t1, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-budget-warning"),
        None,
        "daily 3/10, monthly 12/15"
    );
    let r = call(addr, "/gen", &t1, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-budget-warning"), Some("monthly=100%"));
    // The month is spent: refused until February 1st (one day).
    assert_exhausted(&call(addr, "/gen", &t1, &[]).await, 86_400);
    clock.set(TestClock::START + 31 * DAY);
    assert_eq!(call(addr, "/gen", &t1, &[]).await.status, 200);
    assert_eq!(
        metric(
            fx.admin(),
            "fortress_refusals_total{reason=\"budget_exhausted\",route=\"gen\"}"
        )
        .await,
        Some(2.0)
    );

    // A token without a tenant cannot be charged: 403, never forwarded.
    let hits = up.hits();
    let r = call(addr, "/gen", &token("carol", None), &[]).await;
    assert_eq!(r.status, 403);
    let rid = r.header("x-request-id").expect("request id");
    assert_eq!(
        r.json(),
        json!({"error": "forbidden", "reason": "missing_tenant", "request_id": rid, "trace_id": trace_id(&r)})
    );
    assert_eq!(up.hits(), hits);
}

/// An upstream answering with `X-Usage-Units` set from the request's `x-want-units`.
async fn metering_upstream() -> Upstream {
    Upstream::spawn(|req: http::Request<hyper::body::Incoming>| async move {
        let units = req.headers().get("x-want-units").cloned();
        let mut r = http::Response::new(full("done"));
        if let Some(u) = units {
            r.headers_mut().insert("x-usage-units", u);
        }
        r
    })
    .await
}

#[tokio::test]
async fn metered_cost_from_a_response_header() {
    let up = metering_upstream().await;
    let clock = TestClock::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = "  - name: llm\n    match: { path: \"/llm\" }\n    \
                  budget: { cost_header: X-Usage-Units }\n";
    let yaml = policy(up.addr, dir.path(), "", "{ daily: 100 }", routes);
    let fx = TestFortress::start_with_clock(&yaml, &clock).await;
    let t1 = token("alice", Some("t1"));
    let addr = fx.addr();
    let units = |n: &'static str| [("x-want-units", n)];

    let r = call(addr, "/llm", &t1, &units("50")).await;
    assert_eq!((r.status, r.header("x-budget-warning")), (200, None));
    let r = call(addr, "/llm", &t1, &units("45")).await;
    assert_eq!(r.header("x-budget-warning"), Some("daily=95%"));
    // Still below 100 %: admitted; the app reports more than is left, the charge lands.
    let r = call(addr, "/llm", &t1, &units("10")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-budget-warning"), Some("daily=105%"));
    assert_exhausted(&call(addr, "/llm", &t1, &units("1")).await, 86_400);
    assert_eq!(up.hits(), 3);
}

/// A raw upstream that streams a chunked response and reports the cost in a trailer.
async fn trailer_upstream(units: u64) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = tcp.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\
                             Transfer-Encoding: chunked\r\nTrailer: X-Usage-Units\r\n\r\n\
                             6\r\n{{\"a\":1\r\n2\r\n}}\n\r\n0\r\nX-Usage-Units: {units}\r\n\r\n"
                        );
                        if tcp.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn metered_cost_from_a_trailer_of_a_streamed_response() {
    let upstream = trailer_upstream(60).await;
    let clock = TestClock::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = "  - name: llm\n    match: { path: \"/llm\" }\n    \
                  budget: { cost_header: X-Usage-Units }\n";
    let yaml = policy(upstream, dir.path(), "", "{ daily: 100 }", routes);
    let fx = TestFortress::start_with_clock(&yaml, &clock).await;
    let t1 = token("alice", Some("t1"));

    let r = call(fx.addr(), "/llm", &t1, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "{\"a\":1}\n");
    // 60 charged at the end of the first stream: still below 100 %, admitted.
    let r = call(fx.addr(), "/llm", &t1, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // 120 of 100: exhausted.
    assert_exhausted(&call(fx.addr(), "/llm", &t1, &[]).await, 86_400);
}

#[tokio::test]
async fn an_exhausted_budget_is_still_exhausted_after_a_restart() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let routes = "  - name: gen\n    match: { path: \"/gen\" }\n    budget: { cost: 10 }\n";
    let yaml = policy(
        up.addr,
        dir.path(),
        &format!("state_dir: \"{}\"", state.display()),
        "{ daily: 20 }",
        routes,
    );
    let t1 = token("alice", Some("t1"));
    let fx = TestFortress::start_with_clock(&yaml, &clock).await;
    let used_on_disk = || -> Option<u64> {
        let bytes = std::fs::read(state.join("budgets.json")).ok()?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        doc["entries"][0]["used"].as_u64()
    };
    assert_eq!(call(fx.addr(), "/gen", &t1, &[]).await.status, 200);
    // Written in the background every few seconds while serving.
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            used_on_disk() == Some(10)
        })
        .await,
        "the periodic write saved the charge"
    );
    let r = call(fx.addr(), "/gen", &t1, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-budget-warning"), Some("daily=100%"));
    assert_exhausted(&call(fx.addr(), "/gen", &t1, &[]).await, 86_400);
    let TestFortress { fx, dir: _cfg, .. } = fx;
    fx.shutdown();
    assert!(fx.wait().await, "drained");

    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("budgets.json")).expect("state file"))
            .expect("json");
    assert_eq!(saved["format"], "fortress-budgets");
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["entries"][0]["key"], "budget|day|t1");
    assert_eq!(saved["entries"][0]["used"], 20);

    let fx = TestFortress::start_with_clock(&yaml, &clock).await;
    assert_exhausted(&call(fx.addr(), "/gen", &t1, &[]).await, 86_400);
    assert_eq!(up.hits(), 2);
    // The next day it is fresh again.
    clock.advance(DAY);
    assert_eq!(call(fx.addr(), "/gen", &t1, &[]).await.status, 200);
}

#[tokio::test]
async fn a_corrupt_state_file_stops_startup_with_a_clear_message() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    std::fs::write(state.join("budgets.json"), b"{\"format\": \"fortress-bud").expect("write");
    let routes = "  - name: gen\n    match: { path: \"/gen\" }\n    budget: {}\n";
    let yaml = policy(
        up.addr,
        dir.path(),
        &format!("state_dir: \"{}\"", state.display()),
        "{ daily: 10 }",
        routes,
    );
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, yaml).expect("write");
    let err = match fortress::Fortress::start_with_clock(&path, clock.clock()).await {
        Ok(_) => panic!("started on a corrupt state file"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("budgets.json") && err.contains("corrupt") && err.contains("reset to zero"),
        "{err}"
    );
    // An unknown version is refused the same way.
    std::fs::write(
        state.join("budgets.json"),
        br#"{"format":"fortress-budgets","version":99,"saved_at_ms":0,"entries":[]}"#,
    )
    .expect("write");
    let err = match fortress::Fortress::start_with_clock(&path, clock.clock()).await {
        Ok(_) => panic!("started on an unknown version"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("unknown budget state format"), "{err}");
}

#[test]
fn budget_config_rules() {
    let load = |env: &str, server_extra: &str, rest: &str| {
        let text = format!(
            "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  \
             environment: {env}\n{server_extra}authentication:\n  jwt:\n    issuer: i\n    \
             audiences: [a]\n    algorithms: [HS256]\n    secret: {{ file: /nowhere/secret }}\n{rest}"
        );
        fortress::config::load_str(&text, Path::new("/nowhere/f.yaml"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let budgets = "budgets:\n  per_tenant: { daily: 10 }\n";
    let route = "routes:\n  - name: r\n    match: { path: \"/r\" }\n    budget: { cost: 2 }\n";
    let e = load("production", "", &format!("{budgets}{route}")).expect_err("no state_dir");
    assert!(
        e.contains("budgets need `server.state_dir` outside `environment: local`"),
        "{e}"
    );
    let e = load("local", "", route).expect_err("no budgets");
    assert!(
        e.contains("has a `budget` but no `budgets.per_tenant`"),
        "{e}"
    );
    let e = load(
        "local",
        "",
        &format!(
            "{budgets}routes:\n  - name: r\n    match: {{ path: \"/r\" }}\n    public: true\n    budget: {{}}\n"
        ),
    )
    .expect_err("public");
    assert!(e.contains("is public: a budget is charged"), "{e}");
    let e = load(
        "local",
        "",
        &format!(
            "{budgets}routes:\n  - name: r\n    match: {{ path: \"/r\" }}\n    budget: {{ cost: 1, cost_header: X-U }}\n"
        ),
    )
    .expect_err("both");
    assert!(
        e.contains("`cost` and `cost_header` exclude each other"),
        "{e}"
    );
    let e = load(
        "local",
        "",
        &format!("budgets:\n  per_tenant: {{ warn_at: 1.5 }}\n{route}"),
    )
    .expect_err("bad budget");
    assert!(e.contains("needs `daily`, `monthly` or both"), "{e}");
    assert!(e.contains("`warn_at` must be a fraction"), "{e}");
}
