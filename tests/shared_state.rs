//! Shared state in Redis, with a real `redis-server` and real fortress processes: two
//! instances enforce one combined rate limit and one combined budget; a revocation and a
//! toggle flip made through one instance's admin API reach the other within a second; a
//! killed Redis gives the configured failure behaviour (deny, or each instance's local share)
//! and recovery once it is back; a stopped (unresponsive) Redis never holds a request past
//! the timeout; a killed instance's concurrency leases expire after the lease time.
//!
//! Real time with short windows; the bounds are correctness bounds ("within 1 s"), not
//! performance thresholds.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::redis::RedisServer;
use support::*;

const SECRET: &str = "shared-state-test-secret-0123456789abcd";

/// The policy both instances run: `store_extra` lines are indented into `store:`.
fn policy(up: SocketAddr, redis: &RedisServer, prefix: &str, store_extra: &str) -> String {
    let extra: String = store_extra
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {l}\n"))
        .collect();
    config(
        up,
        "allow_insecure_local: true",
        &format!(
            "store:
  backend: redis
  redis: {{ url: \"{}\", key_prefix: \"{prefix}\", timeout: 200ms, resync: 200ms }}
{extra}authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: {{ value: \"{SECRET}\" }}
roles:
  ops: [\"admin:*\"]
  user: [\"api:use\"]
toggles:
  beta: {{ default: true }}
budgets:
  per_tenant: {{ daily: 10 }}
classes:
  bulk: {{ max_in_flight: 10, per_tenant_max_in_flight: 1 }}
routes:
  - name: limited
    match: {{ path: \"/rl/**\" }}
    require: [\"api:use\"]
    rate_limit: {{ key: subject, limit: 4, per: 1m }}
  - name: spend
    match: {{ path: \"/spend/**\" }}
    require: [\"api:use\"]
    budget: {{ cost: 3 }}
  - name: beta
    match: {{ path: /beta }}
    public: true
    requires_toggle: beta
  - name: slow
    match: {{ path: \"/slow/**\" }}
    require: [\"api:use\"]
    class: bulk
  - name: api
    match: {{ path: \"/api/**\" }}
    require: [\"api:use\"]
",
            redis.url()
        ),
    )
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(sub: &str, roles: &[&str], tenant: &str, jti: &str) -> String {
    let now = now_s();
    let claims = json!({
        "sub": sub, "roles": roles, "tenant": tenant, "jti": jti,
        "iss": "iss", "aud": "aud", "iat": now, "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// RFC 3339 UTC of Unix seconds.
fn rfc3339(secs: u64) -> String {
    let (y, m, d) = fortress::store::civil_from_days(secs / 86_400);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

async fn call(addr: SocketAddr, target: &str, tok: &str) -> RawResponse {
    let bearer = format!("Bearer {tok}");
    get_with(addr, target, &[("Authorization", &bearer)]).await
}

async fn admin(
    admin: SocketAddr,
    method: &str,
    target: &str,
    tok: &str,
    body: &str,
) -> RawResponse {
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(admin, req.as_bytes()).await
}

fn start(yaml: &str, dir: &tempfile::TempDir, name: &str) -> FortressProcess {
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write policy");
    FortressProcess::spawn(&path)
}

fn reason(r: &RawResponse) -> Value {
    r.json()["reason"].clone()
}

#[tokio::test]
async fn two_instances_enforce_one_rate_limit_and_one_budget() {
    let redis = RedisServer::start();
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = policy(up.addr, &redis, "t1:", "");
    let (a, b) = (start(&yaml, &dir, "a.yaml"), start(&yaml, &dir, "b.yaml"));
    let tok = token("u1", &["user"], "acme", "j-rate");

    // 4 per minute for u1, whichever instance is asked: alternating, four pass, then both
    // refuse.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let to = if i % 2 == 0 { a.addr } else { b.addr };
        let r = call(to, "/rl/x", &tok).await;
        if r.status == 429 {
            assert_eq!(reason(&r), "rate_limited", "{}", r.text());
            assert!(r.header("retry-after").is_some());
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429]);
    // Another subject has its own counter.
    let other = token("u2", &["user"], "acme", "j-other");
    assert_eq!(call(b.addr, "/rl/x", &other).await.status, 200);

    // Budget 10 a day for tenant acme, 3 per request: 3 + 3 + 3 on alternating instances,
    // then the fourth (12 > 10) is refused by either.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let to = if i % 2 == 0 { b.addr } else { a.addr };
        let r = call(to, "/spend/x", &tok).await;
        if r.status == 429 {
            assert_eq!(reason(&r), "budget_exhausted", "{}", r.text());
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // The counters are in Redis under the versioned prefix.
    let keys = redis
        .command(&["KEYS", "t1:v1:l:*"])
        .expect("redis answers");
    assert!(keys.contains("t1:v1:l:budget|day|acme@"), "{keys}");
    assert_eq!(metric(a.admin, "fortress_store_up").await, Some(1.0));
}

#[tokio::test]
async fn revocation_and_toggle_reach_the_other_instance_within_a_second() {
    let redis = RedisServer::start();
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = policy(up.addr, &redis, "t2:", "");
    let (a, b) = (start(&yaml, &dir, "a.yaml"), start(&yaml, &dir, "b.yaml"));
    let ops = token("alice", &["ops"], "acme", "j-ops");
    let user = token("bob", &["user"], "acme", "j-bob");
    assert_eq!(call(b.addr, "/api/x", &user).await.status, 200);
    assert_eq!(get(b.addr, "/beta").await.status, 200);

    // Revoked through A ...
    let body = format!(
        r#"{{"jti": "j-bob", "expires_at": "{}", "reason": "leaked"}}"#,
        rfc3339(now_s() + 7200)
    );
    let r = admin(a.admin, "POST", "/admin/revocations", &ops, &body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let t0 = Instant::now();
    // ... refused by B within a second (and by A at once).
    assert_eq!(call(a.addr, "/api/x", &user).await.status, 401);
    let refused = eventually(Duration::from_secs(1), || async {
        call(b.addr, "/api/x", &user).await.status == 401
    })
    .await;
    assert!(
        refused,
        "B still accepts the revoked token after {:?}",
        t0.elapsed()
    );
    let r = call(b.addr, "/api/x", &user).await;
    assert_eq!(r.status, 401);
    assert_eq!(reason(&r), "invalid_token");
    // B lists it too (its mirror).
    let r = admin(b.admin, "GET", "/admin/revocations", &ops, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("j-bob"), "{}", r.text());

    // A toggle flipped off through A: B answers 503 feature_disabled within a second.
    let r = admin(
        a.admin,
        "PUT",
        "/admin/toggles/beta",
        &ops,
        r#"{"enabled": false, "reason": "incident"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t0 = Instant::now();
    let off = eventually(Duration::from_secs(1), || async {
        get(b.addr, "/beta").await.status == 503
    })
    .await;
    assert!(off, "B still serves /beta after {:?}", t0.elapsed());
    let r = get(b.addr, "/beta").await;
    assert_eq!(reason(&r), "feature_disabled");
    // The override lives in Redis, under the versioned prefix.
    let v = redis
        .command(&["HGET", "t2:v1:toggles", "beta"])
        .expect("redis");
    assert!(v.contains("\r\n0\r\n"), "{v:?}");
}

#[tokio::test]
async fn a_killed_redis_denies_then_recovers() {
    let mut redis = RedisServer::start();
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = policy(
        up.addr,
        &redis,
        "t3:",
        "on_store_error: deny\nmax_staleness: 1s",
    );
    let a = start(&yaml, &dir, "a.yaml");
    let tok = token("u1", &["user"], "acme", "j-deny");
    assert_eq!(call(a.addr, "/rl/x", &tok).await.status, 200);

    redis.kill();
    // Limits cannot be checked: 503 state_unavailable with Retry-After, the upstream not
    // reached.
    let hits = up.hits();
    for _ in 0..5 {
        let r = call(a.addr, "/rl/x", &tok).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(reason(&r), "state_unavailable");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(up.hits(), hits);
    // The outage is logged once, not per request.
    let unreachable = a
        .logs()
        .iter()
        .filter(|l| l.contains("state store unreachable"))
        .count();
    assert_eq!(unreachable, 1, "{:#?}", a.logs());
    assert_eq!(metric(a.admin, "fortress_store_up").await, Some(0.0));
    // Past max_staleness the copy of the revocations is not trusted: authenticated routes
    // without limits refuse too, and the instance reports not ready.
    let stale = eventually(Duration::from_secs(5), || async {
        call(a.addr, "/api/x", &tok).await.status == 503
    })
    .await;
    assert!(stale);
    assert_eq!(
        reason(&call(a.addr, "/api/x", &tok).await),
        "state_unavailable"
    );
    assert_eq!(get(a.admin, "/readyz").await.status, 503);

    // Redis back (empty): everything recovers by itself.
    redis.restart();
    let back = eventually(Duration::from_secs(10), || async {
        call(a.addr, "/rl/x", &tok).await.status == 200
    })
    .await;
    assert!(back, "{:#?}", a.logs());
    assert_eq!(call(a.addr, "/api/x", &tok).await.status, 200);
    assert_eq!(get(a.admin, "/readyz").await.status, 200);
    assert_eq!(metric(a.admin, "fortress_store_up").await, Some(1.0));
    // Reachable at startup, then again after the outage: two lines.
    let reachable = a
        .logs()
        .iter()
        .filter(|l| l.contains("state store reachable"))
        .count();
    assert_eq!(reachable, 2, "{:#?}", a.logs());
}

#[tokio::test]
async fn allow_local_enforces_each_instances_share_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = policy(
        up.addr,
        &redis,
        "t4:",
        "on_store_error: allow_local\nexpected_replicas: 2\nmax_staleness: 60s",
    );
    let a = start(&yaml, &dir, "a.yaml");
    let tok = token("u1", &["user"], "acme", "j-local");
    assert_eq!(call(a.addr, "/rl/x", &tok).await.status, 200);
    redis.kill();
    // 4 a minute shared by 2 replicas: this one allows its share, 2, then refuses.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(call(a.addr, "/rl/x", &tok).await.status);
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    let local = metric(a.admin, "fortress_store_local_decisions_total")
        .await
        .expect("metric");
    assert_eq!(local, 4.0);
    redis.restart();
    // Back on Redis (empty after the restart): the shared limit counts again from zero.
    let back = eventually(Duration::from_secs(10), || async {
        metric(a.admin, "fortress_store_up").await == Some(1.0)
    })
    .await;
    assert!(back);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(call(a.addr, "/rl/x", &tok).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
}

#[tokio::test]
async fn an_unresponsive_redis_never_holds_a_request_past_the_timeout() {
    let redis = RedisServer::start();
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = policy(up.addr, &redis, "t5:", "on_store_error: deny");
    let a = start(&yaml, &dir, "a.yaml");
    let tok = token("u1", &["user"], "acme", "j-slow");
    assert_eq!(call(a.addr, "/rl/x", &tok).await.status, 200);
    // Stopped: connections are accepted by the kernel, nothing answers.
    redis.signal("STOP");
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = call(a.addr, "/rl/x", &tok).await;
        let took = t0.elapsed();
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(reason(&r), "state_unavailable");
        // timeout 200 ms; a generous bound, far below "hangs".
        assert!(took < Duration::from_secs(2), "held for {took:?}");
    }
    redis.signal("CONT");
    // The checks that timed out were still queued and run when Redis woke up (they count:
    // a late check errs towards counting), so u1 may be limited now; another subject passes.
    let fresh = token("u2", &["user"], "acme", "j-fresh");
    let back = eventually(Duration::from_secs(10), || async {
        call(a.addr, "/rl/x", &fresh).await.status == 200
    })
    .await;
    assert!(back, "{:#?}", a.logs());
}

#[tokio::test]
async fn a_killed_instances_leases_expire_after_the_lease_time() {
    let redis = RedisServer::start();
    // /slow/hold waits until released; everything else answers at once.
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let up = Upstream::spawn(move |req| {
        let g = g.clone();
        async move {
            if req.uri().path() == "/slow/hold" {
                g.notified().await;
            }
            hyper::Response::new(full("ok"))
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = policy(up.addr, &redis, "t6:", "lease: 2s");
    let mut a = start(&yaml, &dir, "a.yaml");
    let b = start(&yaml, &dir, "b.yaml");
    let tok = token("u1", &["user"], "acme", "j-lease");

    // Tenant acme may have one request in flight in class bulk, across instances.
    let held = {
        let (addr, tok) = (a.addr, tok.clone());
        tokio::spawn(async move { call(addr, "/slow/hold", &tok).await })
    };
    // A holds it once its request reached the app.
    let reached = eventually(Duration::from_secs(5), || async {
        up.requests().iter().any(|s| s.target == "/slow/hold")
    })
    .await;
    assert!(reached, "{:#?}", a.logs());
    let r = call(b.addr, "/slow/x", &tok).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(reason(&r), "overloaded");
    // Another tenant is not affected.
    let other = token("u9", &["user"], "globex", "j-globex");
    assert_eq!(call(b.addr, "/slow/x", &other).await.status, 200);

    // A dies holding the lease (SIGKILL: nothing is given back).
    let killed = Instant::now();
    let _ = a.child.kill();
    let _ = a.child.wait();
    let _ = held.await;
    // Still held until the lease expires (2 s after it was taken) ...
    let free = eventually(Duration::from_secs(6), || async {
        call(b.addr, "/slow/x", &tok).await.status == 200
    })
    .await;
    assert!(free, "the lease leaked");
    // ... and not longer than the lease time (plus polling slack).
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "{:?}",
        killed.elapsed()
    );
    gate.notify_waiters();

    // A request that ends gives its lease back (released right after the response): one
    // after another they all pass.
    for _ in 0..3 {
        let ok = eventually(Duration::from_secs(1), || async {
            call(b.addr, "/slow/x", &tok).await.status == 200
        })
        .await;
        assert!(ok);
    }
}

#[tokio::test]
async fn a_client_throttled_on_one_instance_is_throttled_on_the_other() {
    let redis = RedisServer::start();
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = policy(up.addr, &redis, "t7:", "").replace(
        "toggles:\n",
        "failed_auth_limit: { max: 2, per: 1m }\ntoggles:\n",
    );
    let (a, b) = (start(&yaml, &dir, "a.yaml"), start(&yaml, &dir, "b.yaml"));
    let good = token("u1", &["user"], "acme", "j-good");
    // Forged tokens (right shape, wrong signature) count as failures: two on A, one on B.
    let forged = {
        let mut t = good.clone();
        t.pop();
        t.push(if good.ends_with('A') { 'B' } else { 'A' });
        t
    };
    for to in [a.addr, a.addr, b.addr] {
        let r = call(to, "/api/x", &forged).await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // Three failures > 2 in the window: the instance that counted the third refuses this
    // client at once, even with a valid token; the other within a second.
    let r = call(b.addr, "/api/x", &good).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(reason(&r), "too_many_failed_authentications");
    assert!(r.header("retry-after").is_some());
    let throttled = eventually(Duration::from_secs(1), || async {
        call(a.addr, "/api/x", &good).await.status == 429
    })
    .await;
    assert!(throttled);
    // Another client IP would not be affected; the block is in Redis under the prefix.
    let blocked = redis.command(&["HKEYS", "t7:v1:blocked"]).expect("redis");
    assert!(blocked.contains("127.0.0.1"), "{blocked:?}");
}

#[tokio::test]
async fn a_reload_that_changes_the_store_is_refused() {
    let redis = RedisServer::start();
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = policy(up.addr, &redis, "t8:", "");
    let path = dir.path().join("a.yaml");
    std::fs::write(&path, &yaml).expect("write");
    let a = FortressProcess::spawn(&path);
    let ops = token("alice", &["ops"], "acme", "j-ops8");
    let tok = token("u1", &["user"], "acme", "j-u8");
    std::fs::write(
        &path,
        yaml.replace("key_prefix: \"t8:\"", "key_prefix: \"other:\""),
    )
    .expect("rewrite");
    let r = admin(a.admin, "POST", "/admin/reload", &ops, "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["result"], "refused");
    // Refused for the store (by this call, or already by the file watcher, whose refusal
    // this call then repeats).
    assert!(
        a.logs()
            .iter()
            .any(|l| l.contains("config reload refused") && l.contains("`store` changed")),
        "{:#?}",
        a.logs()
    );
    // Still on the old store: counting goes on under t8:.
    assert_eq!(call(a.addr, "/rl/x", &tok).await.status, 200);
    let keys = redis.command(&["KEYS", "t8:v1:l:rl*"]).expect("redis");
    assert!(keys.contains("sub:u1"), "{keys}");
}

#[tokio::test]
async fn rediss_with_a_ca_file_shares_limits_over_tls() {
    let certs = TestCerts::new("redis");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("server.crt"), &certs.cert_pem).expect("cert");
    std::fs::write(dir.path().join("server.key"), &certs.key_pem).expect("key");
    std::fs::write(dir.path().join("ca.pem"), &certs.ca_pem).expect("ca");
    let redis = RedisServer::start_tls(dir.path());
    let up = Upstream::echo().await;
    let ca = dir.path().join("ca.pem");
    let yaml = policy(up.addr, &redis, "t9:", "").replace(
        "resync: 200ms }",
        &format!("resync: 200ms, ca_file: \"{}\" }}", ca.display()),
    );
    assert!(yaml.contains("rediss://localhost:"), "{yaml}");
    let (a, b) = (start(&yaml, &dir, "a.yaml"), start(&yaml, &dir, "b.yaml"));
    let tok = token("u1", &["user"], "acme", "j-tls");
    let mut statuses = Vec::new();
    for i in 0..6 {
        let to = if i % 2 == 0 { a.addr } else { b.addr };
        statuses.push(call(to, "/rl/x", &tok).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(metric(a.admin, "fortress_store_up").await, Some(1.0));
    assert_eq!(get(b.admin, "/readyz").await.status, 200);

    // Without the CA the server's certificate is not trusted: nothing is shared, and with
    // `deny` the limited route fails closed.
    let untrusted = policy(up.addr, &redis, "t9:", "on_store_error: deny");
    let c = start(&untrusted, &dir, "c.yaml");
    let r = call(c.addr, "/rl/x", &token("u5", &["user"], "acme", "j-tls5")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(reason(&r), "state_unavailable");
    assert_eq!(get(c.admin, "/readyz").await.status, 503);
}
