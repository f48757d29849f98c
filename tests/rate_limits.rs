//! Rate limits: 429 `rate_limited` with `Retry-After` and the `RateLimit-Policy` / `RateLimit`
//! headers, keys by ip (trusted-proxy XFF), subject, tenant and path parameter each
//! independent, several limits on one route all-or-nothing, the policy-wide default, counters
//! kept or reset by a reload, and the bench candidate's policy. Time comes from a test clock.

mod support;

use std::net::SocketAddr;

use serde_json::json;
use support::*;

const SECRET: &str = "rate-limit-test-secret-0123456789abcdef";

fn token(sub: &str, tenant: Option<&str>) -> String {
    let now = TestClock::START / 1000;
    let mut claims = json!({
        "sub": sub, "roles": ["admin"], "iss": "iss", "aud": "aud", "iat": now, "exp": now + 86_400 * 40,
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

/// An `authentication:` block reading the secret from a file in `dir`.
fn auth(dir: &std::path::Path) -> String {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    format!(
        "authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
         secret: {{ file: \"{}\" }}\n  claims: {{ subject: sub, roles: roles, tenant: tenant }}\n",
        secret.display()
    )
}

async fn as_user(addr: SocketAddr, target: &str, tok: &str) -> RawResponse {
    let bearer = format!("Bearer {tok}");
    get_with(addr, target, &[("authorization", bearer.as_str())]).await
}

/// Asserts the exact 429 of a rate limit.
fn assert_rate_limited(r: &RawResponse, retry: &str, policy: &str, state: &str) {
    assert_eq!(r.status, 429, "{}", r.text());
    let rid = r.header("x-request-id").expect("request id");
    assert_eq!(
        r.json(),
        json!({"error": "too_many_requests", "reason": "rate_limited", "request_id": rid, "trace_id": trace_id(r)})
    );
    assert_eq!(r.header("retry-after"), Some(retry));
    assert_eq!(r.header("ratelimit-policy"), Some(policy));
    assert_eq!(r.header("ratelimit"), Some(state));
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn ip_limit_refuses_with_exact_status_headers_and_body() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let rest = "routes:\n  - name: api\n    match: { path: \"/api/**\" }\n    public: true\n    \
                rate_limit: { key: ip, limit: 2, per: 1m }\n";
    let fx = TestFortress::start_with_clock(&config(up.addr, "", rest), &clock).await;

    // burst defaults to limit: two at once, then one every 30 s.
    let r = get(fx.addr(), "/api/a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-policy"), Some("\"api\";q=2;w=60"));
    assert_eq!(r.header("ratelimit"), Some("\"api\";r=1;t=30"));
    let r = get(fx.addr(), "/api/a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), Some("\"api\";r=0;t=60"));
    let r = get(fx.addr(), "/api/a").await;
    assert_rate_limited(&r, "30", "\"api\";q=2;w=60", "\"api\";r=0;t=30");
    assert_eq!(up.hits(), 2, "the upstream never sees a refused request");

    // Retry-After is whole seconds rounded up.
    clock.advance(29_500);
    let r = get(fx.addr(), "/api/a").await;
    assert_rate_limited(&r, "1", "\"api\";q=2;w=60", "\"api\";r=0;t=1");
    clock.advance(500);
    assert_eq!(get(fx.addr(), "/api/a").await.status, 200);
    assert_eq!(up.hits(), 3);
    assert_eq!(
        metric(
            fx.admin(),
            "fortress_refusals_total{reason=\"rate_limited\",route=\"api\"}"
        )
        .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn trusted_proxy_clients_are_keyed_by_their_forwarded_address() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let rest = "routes:\n  - name: api\n    match: { path: \"/**\" }\n    public: true\n    \
                rate_limit: { key: ip, limit: 1, per: 1m }\n";
    let fx = TestFortress::start_with_clock(
        &config(up.addr, "trusted_proxies: [127.0.0.1/32]", rest),
        &clock,
    )
    .await;
    let from = |xff: &'static str| [("x-forwarded-for", xff)];
    assert_eq!(
        get_with(fx.addr(), "/x", &from("203.0.113.7")).await.status,
        200
    );
    assert_eq!(
        get_with(fx.addr(), "/x", &from("203.0.113.8")).await.status,
        200
    );
    // A spoofed left part does not help: the right-most untrusted address is the client.
    let r = get_with(fx.addr(), "/x", &from("198.51.100.1, 203.0.113.7")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(
        get_with(fx.addr(), "/x", &from("203.0.113.8")).await.status,
        429
    );
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn subject_tenant_and_path_parameter_limits_are_independent() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let rest = format!(
        "{}roles:\n  admin: [\"*\"]\nroutes:\n  \
         - name: by-subject\n    match: {{ path: \"/s/**\" }}\n    rate_limit: {{ key: subject, limit: 1, per: 1m }}\n  \
         - name: by-tenant\n    match: {{ path: \"/t/**\" }}\n    rate_limit: {{ key: tenant, limit: 1, per: 1m }}\n  \
         - name: train\n    match: {{ path: \"/projects/{{project}}/train\", methods: [GET] }}\n    \
         rate_limit: {{ key: param:project, limit: 1, per: 1d }}\n",
        auth(dir.path())
    );
    let fx = TestFortress::start_with_clock(
        &config(up.addr, "allow_insecure_local: true", &rest),
        &clock,
    )
    .await;
    let (alice, bob, carol) = (
        token("alice", Some("t1")),
        token("bob", Some("t2")),
        token("carol", Some("t1")),
    );
    let addr = fx.addr();

    // By subject: alice's second request is refused, bob is not affected.
    assert_eq!(as_user(addr, "/s/x", &alice).await.status, 200);
    let r = as_user(addr, "/s/x", &alice).await;
    assert_rate_limited(
        &r,
        "60",
        "\"by-subject\";q=1;w=60",
        "\"by-subject\";r=0;t=60",
    );
    assert_eq!(as_user(addr, "/s/x", &bob).await.status, 200);

    // By tenant: carol shares t1 with alice; bob's t2 is separate.
    assert_eq!(as_user(addr, "/t/x", &alice).await.status, 200);
    assert_eq!(as_user(addr, "/t/x", &carol).await.status, 429);
    assert_eq!(as_user(addr, "/t/x", &bob).await.status, 200);

    // By path parameter: one training a day per project, whoever asks.
    assert_eq!(
        as_user(addr, "/projects/p1/train", &alice).await.status,
        200
    );
    let r = as_user(addr, "/projects/p1/train", &bob).await;
    assert_rate_limited(
        &r,
        "86400",
        "\"train\";q=1;w=86400",
        "\"train\";r=0;t=86400",
    );
    assert_eq!(
        as_user(addr, "/projects/p2/train", &alice).await.status,
        200
    );
    assert_eq!(up.hits(), 6);
    let seen: Vec<String> = up.requests().iter().map(|s| s.target.clone()).collect();
    assert_eq!(
        seen,
        [
            "/s/x",
            "/s/x",
            "/t/x",
            "/t/x",
            "/projects/p1/train",
            "/projects/p2/train"
        ]
    );

    // A day later the project may train again.
    clock.advance(86_400_000);
    assert_eq!(as_user(addr, "/projects/p1/train", &bob).await.status, 200);
}

#[tokio::test]
async fn two_limits_on_one_route_all_must_pass_and_a_refusal_consumes_nothing() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let rest = "routes:\n  - name: api\n    match: { path: \"/**\" }\n    public: true\n    \
                rate_limit:\n      - { key: ip, limit: 3, per: 1m, name: per-ip }\n      \
                - { key: \"header:X-Api-Key\", limit: 1, per: 10s, name: per-key }\n";
    let fx = TestFortress::start_with_clock(&config(up.addr, "", rest), &clock).await;
    let key = |k: &'static str| [("x-api-key", k)];
    let addr = fx.addr();

    let r = get_with(addr, "/x", &key("a")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"per-ip\";q=3;w=60, \"per-key\";q=1;w=10")
    );
    assert_eq!(
        r.header("ratelimit"),
        Some("\"per-ip\";r=2;t=20, \"per-key\";r=0;t=10")
    );
    // Key `a` is spent: refused by per-key; the per-ip token is NOT consumed.
    let r = get_with(addr, "/x", &key("a")).await;
    assert_rate_limited(
        &r,
        "10",
        "\"per-ip\";q=3;w=60, \"per-key\";q=1;w=10",
        "\"per-ip\";r=2;t=20, \"per-key\";r=0;t=10",
    );
    // So two more keys still pass per-ip (3 in all) ...
    assert_eq!(get_with(addr, "/x", &key("b")).await.status, 200);
    assert_eq!(get_with(addr, "/x", &key("c")).await.status, 200);
    // ... and then per-ip refuses, without spending key `d`.
    let r = get_with(addr, "/x", &key("d")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("20"));
    assert_eq!(
        r.header("ratelimit"),
        Some("\"per-ip\";r=0;t=20, \"per-key\";r=1;t=0")
    );
    clock.advance(20_000);
    assert_eq!(get_with(addr, "/x", &key("d")).await.status, 200);
    assert_eq!(up.hits(), 4);

    // A repeated key header is ambiguous: 400, nothing spent.
    let r = raw(
        addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Api-Key: e\r\nX-Api-Key: f\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "ambiguous_limit_key");
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn policy_wide_default_is_shared_across_routes_and_adds_to_route_limits() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let rest = "rate_limit: { key: ip, limit: 3, per: 1m }\nroutes:\n  \
                - name: a\n    match: { path: \"/a\" }\n    public: true\n  \
                - name: b\n    match: { path: \"/b\" }\n    public: true\n    \
                rate_limit: { key: ip, limit: 1, per: 1m }\n";
    let fx = TestFortress::start_with_clock(&config(up.addr, "", rest), &clock).await;
    let addr = fx.addr();
    let r = get(addr, "/b").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"default\";q=3;w=60, \"b\";q=1;w=60")
    );
    // The route's own limit refuses; the default spent nothing for it.
    assert_eq!(get(addr, "/b").await.status, 429);
    assert_eq!(get(addr, "/a").await.status, 200);
    let r = get(addr, "/a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), Some("\"default\";r=0;t=60"));
    // The default counts across routes: 3 passed (b, a, a), the next is refused.
    let r = get(addr, "/a").await;
    assert_rate_limited(&r, "20", "\"default\";q=3;w=60", "\"default\";r=0;t=20");
    assert_eq!(up.hits(), 3);
}

/// `POST /admin/reload`.
async fn admin_reload(admin: SocketAddr) -> RawResponse {
    raw(
        admin,
        b"POST /admin/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_limit_and_resets_a_changed_one() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let route = |limit: u32, extra: &str| {
        format!(
            "routes:\n  - name: api\n    match: {{ path: \"/api/**\" }}\n    public: true\n    \
             rate_limit: {{ key: ip, limit: {limit}, per: 1h }}\n{extra}"
        )
    };
    let fx = TestFortress::start_with_clock(&config(up.addr, "", &route(1, "")), &clock).await;
    assert_eq!(get(fx.addr(), "/api/x").await.status, 200);
    assert_eq!(get(fx.addr(), "/api/x").await.status, 429);

    // Another route added, this limit unchanged: its counter is kept.
    let other = "  - name: other\n    match: { path: \"/other\" }\n    public: true\n";
    std::fs::write(&fx.config_path, config(up.addr, "", &route(1, other))).expect("write");
    assert_eq!(admin_reload(fx.admin()).await.status, 200);
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            get(fx.addr(), "/other").await.status == 200
        })
        .await,
        "the new policy is active"
    );
    assert_eq!(get(fx.addr(), "/api/x").await.status, 429, "counter kept");

    // The limit changed: a new fingerprint, a fresh counter.
    std::fs::write(&fx.config_path, config(up.addr, "", &route(2, other))).expect("write");
    assert_eq!(admin_reload(fx.admin()).await.status, 200);
    let r = get(fx.addr(), "/api/x").await;
    assert_eq!(r.status, 200, "changed limit starts fresh");
    assert_eq!(r.header("ratelimit-policy"), Some("\"api\";q=2;w=3600"));
    assert_eq!(r.header("ratelimit"), Some("\"api\";r=1;t=1800"));
}

#[tokio::test]
async fn the_bench_candidate_policy_is_accepted_and_refuses_after_five() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = format!(
        "server:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  upstream: http://{}\n  \
         environment: local\n  require_https: true\n  trusted_proxies: [127.0.0.1/32]\n\
         default: deny\nauthentication:\n  jwt:\n    issuer: easydata-auth\n    audiences: [easydata-api]\n    \
         algorithms: [HS256]\n    secret: {{ env: JWT_SECRET_KEY }}\n    leeway: 30s\n    \
         required_claims: [sub, roles]\n  claims: {{ subject: sub, roles: roles, tenant: tenant }}\n\
         roles:\n  admin: [\"*\"]\n  viewer: [\"api:read\"]\nroutes:\n  - name: admin\n    \
         match: {{ path: \"/admin/**\" }}\n    require: [\"admin:*\"]\n    \
         rate_limit: {{ key: subject, limit: 5, per: 10s }}\n  - name: api\n    \
         match: {{ path: \"/api/**\" }}\n    rate_limit: {{ key: subject, limit: 5, per: 10s }}\n",
        up.addr
    );
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, &policy).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fortress"))
        .arg("check")
        .arg(&path)
        .env("JWT_SECRET_KEY", SECRET)
        .output()
        .expect("fortress check");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The same policy served (secret from a file: tests do not touch the process env).
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let served = policy.replace(
        "{ env: JWT_SECRET_KEY }",
        &format!("{{ file: \"{}\" }}", secret.display()),
    );
    let fx = TestFortress::start(&served).await;
    let now = jsonwebtoken::get_current_timestamp();
    let tok = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "bench", "roles": ["admin"], "tenant": "t", "iss": "easydata-auth",
                "aud": "easydata-api", "iat": now, "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    let bearer = format!("Bearer {tok}");
    let mut codes = Vec::new();
    for _ in 0..8 {
        let r = get_with(
            fx.addr(),
            "/admin/x",
            &[
                ("authorization", bearer.as_str()),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
        codes.push(r.status);
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(up.hits(), 5);
}

#[test]
fn limit_config_errors_are_precise() {
    let load = |rest: &str| {
        let text = format!(
            "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  \
             environment: local\n{rest}"
        );
        fortress::config::load_str(&text, std::path::Path::new("/nowhere/f.yaml"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let route = |rl: &str| {
        format!(
            "routes:\n  - name: r\n    match: {{ path: \"/p/{{id}}\" }}\n    public: true\n    rate_limit: {rl}\n"
        )
    };
    let e = load(&route("{ key: subject, limit: 1, per: 1m }")).expect_err("subject on public");
    assert!(
        e.contains("f.yaml:10:24:") && e.contains("is public"),
        "{e}"
    );
    let e = load(&route("{ key: \"param:other\", limit: 1, per: 1m }")).expect_err("param");
    assert!(
        e.contains("`other` is not a parameter of the path pattern `/p/{id}`"),
        "{e}"
    );
    let e = load(&route("{ key: ip, limit: 1, per: 500ms }")).expect_err("period");
    assert!(e.contains("expected 1s to 1d"), "{e}");
    let e = load(&route("{ key: ip, limit: 1, per: 2d }")).expect_err("period");
    assert!(e.contains("expected 1s to 1d"), "{e}");
    let e = load(&route("{ key: ip, limit: 0, per: 1m }")).expect_err("limit");
    assert!(e.contains("`limit` must be at least 1"), "{e}");
    let e = load(&route("{ key: bogus, limit: 1, per: 1m }")).expect_err("key");
    assert!(e.contains("unknown rate limit key `bogus`"), "{e}");
    let e = load(&route("{ key: ip, limit: 1, per: 1m, extra: 1 }")).expect_err("unknown");
    assert!(e.contains("unknown key `extra`"), "{e}");
    let e = load(&format!(
        "rate_limit: {{ key: \"param:id\", limit: 1, per: 1m }}\n{}",
        route("{ key: ip, limit: 1, per: 1m }")
    ))
    .expect_err("param in default");
    assert!(e.contains("`param:` keys are for a route"), "{e}");
    // Accepted: a list, a composite key, `param:` declared in the pattern, 1s and 1d.
    load(&route(
        "[ { key: [ip, route], limit: 1, per: 1s }, { key: \"param:id\", limit: 5, per: 1d, burst: 2 } ]",
    ))
    .expect("valid");
}

#[test]
fn explain_shows_the_limits_and_keys_without_spending_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  \
         environment: local\n{}rate_limit: {{ key: ip, limit: 100, per: 1m }}\n\
         budgets:\n  per_tenant: {{ daily: 1000 }}\nroles:\n  admin: [\"*\"]\nroutes:\n  \
         - name: train\n    match: {{ path: \"/projects/{{project}}/train\" }}\n    \
         rate_limit: {{ key: [subject, \"param:project\"], limit: 1, per: 1d }}\n    budget: {{ cost: 5 }}\n",
        auth(dir.path())
    );
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, yaml).expect("write");
    let explain = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fortress"))
            .args(["explain", "--config"])
            .arg(&path)
            .args([
                "--path",
                "/projects/p1/train",
                "--claims",
                r#"{"sub":"alice","tenant":"t1","roles":["admin"]}"#,
            ])
            .output()
            .expect("explain")
    };
    for _ in 0..2 {
        let out = explain();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("admission"))
            .expect("admission line");
        assert_eq!(
            line,
            "admission  pass     rate `default` 100/60s burst 100 by ip key \
             rl|default|b92a44e09e777ab5|ip:127.0.0.1; rate `train` 1/86400s burst 1 by [subject, param:project] \
             key rl|train|bfc14106c3194094|sub:alice|param:p1; budget daily 1000 key budget|day|t1"
        );
    }
}
