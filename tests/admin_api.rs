//! The authenticated admin API through a real fortress: toggles (flip, refusals, audit,
//! persistence across a restart, route behaviour changing at once), revocations by jti and by
//! subject (effective on the next request, persisted, pruned after expiry), reload requiring
//! `admin:reload`, and the read endpoints.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const SECRET: &str = "admin-api-test-secret-0123456789abcdef";
const HOUR: u64 = 3_600_000;

/// A policy with authentication, roles, two toggles, a toggled route and a protected API.
fn yaml(up: SocketAddr, state_dir: &Path, audit_dir: &Path) -> String {
    config(
        up,
        &format!(
            "allow_insecure_local: true\nstate_dir: {}",
            state_dir.display()
        ),
        &format!(
            "audit:
  dir: {}
  include: [denied]
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: {{ value: \"{SECRET}\" }}
roles:
  ops: [\"admin:*\"]
  toggler: [\"admin:toggles\"]
  reloader: [\"admin:reload\"]
  user: [\"api:use\"]
admin:
  permissions: {{ toggles: \"admin:toggles\", revocations: \"admin:revoke\", reload: \"admin:reload\", read: \"admin:read\" }}
toggles:
  training_enabled: {{ default: false }}
  beta: {{ default: true }}
budgets:
  per_tenant: {{ daily: 10 }}
routes:
  - name: train
    match: {{ path: /train }}
    public: true
    requires_toggle: training_enabled
  - name: api
    match: {{ path: \"/api/**\" }}
    require: [\"api:use\"]
",
            audit_dir.display()
        ),
    )
}

/// A token signed with the test secret: `iat` = `now_ms`, `exp` = `iat + ttl_s`.
fn token(now_ms: u64, sub: &str, roles: &[&str], jti: Option<&str>, ttl_s: u64) -> String {
    let now = now_ms / 1000;
    let mut claims = json!({
        "sub": sub, "roles": roles, "iss": "iss", "aud": "aud", "iat": now, "exp": now + ttl_s,
    });
    if let Some(j) = jti {
        claims["jti"] = Value::from(j);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// One request to the admin listener (`Host: localhost`), with an optional bearer token and
/// an optional JSON body.
async fn admin_call(
    admin: SocketAddr,
    method: &str,
    target: &str,
    tok: Option<&str>,
    body: Option<&str>,
) -> RawResponse {
    admin_call_typed(admin, method, target, tok, body, "application/json").await
}

async fn admin_call_typed(
    admin: SocketAddr,
    method: &str,
    target: &str,
    tok: Option<&str>,
    body: Option<&str>,
    content_type: &str,
) -> RawResponse {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = tok {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    match body {
        Some(b) => req.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    raw(admin, req.as_bytes()).await
}

/// A client request with an optional bearer token.
async fn call(addr: SocketAddr, target: &str, tok: Option<&str>) -> RawResponse {
    let bearer = tok.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    get_with(addr, target, &headers).await
}

fn records(dir: &Path) -> Vec<Value> {
    audit_records(dir)
}

/// The records of `event`, waiting (bounded) until there are at least `n` (refusals are
/// written by the batched writer, not waited for).
async fn wait_records(dir: &Path, event: &str, n: usize) -> Vec<Value> {
    let of = |dir: &Path| -> Vec<Value> {
        records(dir)
            .into_iter()
            .filter(|r| r["event"] == event)
            .collect()
    };
    let found = eventually(Duration::from_secs(10), || async { of(dir).len() >= n }).await;
    let got = of(dir);
    assert!(found, "{n} `{event}` records expected, got {got:#?}");
    got
}

/// The error body fortress sends, with the response's request id.
fn error_body(r: &RawResponse, error: &str, reason: &str) -> Value {
    json!({"error": error, "reason": reason, "request_id": r.header("x-request-id").expect("x-request-id")})
}

struct Env {
    up: Upstream,
    clock: TestClock,
    state: tempfile::TempDir,
    audit: tempfile::TempDir,
}

impl Env {
    async fn new() -> Self {
        Self {
            up: Upstream::echo().await,
            clock: TestClock::new(),
            state: tempfile::tempdir().expect("tempdir"),
            audit: tempfile::tempdir().expect("tempdir"),
        }
    }

    async fn start(&self) -> TestFortress {
        TestFortress::start_with_clock(
            &yaml(self.up.addr, self.state.path(), self.audit.path()),
            &self.clock,
        )
        .await
    }

    fn tok(&self, sub: &str, roles: &[&str]) -> String {
        token(self.clock.now(), sub, roles, None, 600)
    }
}

async fn stop(fx: TestFortress) {
    fx.fx.shutdown();
    assert!(fx.fx.wait().await, "drained");
}

#[tokio::test]
async fn toggle_flip_is_audited_persisted_and_takes_effect_at_once() {
    let env = Env::new().await;
    let fx = env.start().await;
    let ops = env.tok("alice", &["ops"]);

    // Off by default: 503 feature_disabled, nothing forwarded.
    let r = call(fx.addr(), "/train", None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.json()["reason"], "feature_disabled", "{}", r.text());
    assert_eq!(r.json()["error"], "service_unavailable");
    assert_eq!(env.up.hits(), 0);

    let r = admin_call(fx.admin(), "GET", "/admin/toggles", Some(&ops), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"toggles": [
            {"name": "beta", "default": true, "override": null, "effective": true},
            {"name": "training_enabled", "default": false, "override": null, "effective": false},
        ]})
    );

    let r = admin_call(
        fx.admin(),
        "PUT",
        "/admin/toggles/training_enabled",
        Some(&ops),
        Some(r#"{"enabled": true, "reason": "launch of the training beta"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"name": "training_enabled", "default": false, "override": true, "effective": true, "previous": false})
    );
    let request_id = r.header("x-request-id").expect("request id").to_owned();

    // At once: the next request is forwarded.
    let r = call(fx.addr(), "/train", None).await;
    assert_eq!(
        (r.status, r.text()),
        (200, "upstream saw GET /train".into())
    );
    assert_eq!(env.up.hits(), 1);

    // Audited (the response waited for the record): who, roles, old, new, reason, ids.
    let recs = wait_records(env.audit.path(), "toggle_change", 1).await;
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let rec = &recs[0];
    assert_eq!(rec["decision"], "applied");
    assert_eq!(rec["subject"], "alice");
    assert_eq!(rec["roles"], json!(["ops"]));
    assert_eq!(rec["request_id"], request_id.as_str());
    assert_eq!(rec["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(rec["method"], "PUT");
    assert_eq!(rec["path"], "/admin/toggles/training_enabled");
    assert_eq!(rec["client_ip"], "127.0.0.1");
    assert_eq!(rec["status"], 200);
    assert_eq!(
        rec["detail"],
        json!({"toggle": "training_enabled", "default": false, "old": false, "new": true,
               "old_override": null, "reason": "launch of the training beta"})
    );

    // Persisted with a format version.
    let file: Value = serde_json::from_slice(
        &std::fs::read(env.state.path().join("admin-state.json")).expect("state file"),
    )
    .expect("json");
    assert_eq!(file["format"], "fortress-admin-state");
    assert_eq!(file["version"], 1);
    assert_eq!(file["toggles"], json!({"training_enabled": true}));

    // A restart with the same state_dir keeps the override.
    stop(fx).await;
    let fx = env.start().await;
    let r = call(fx.addr(), "/train", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin_call(fx.admin(), "GET", "/admin/toggles", Some(&ops), None).await;
    assert_eq!(r.json()["toggles"][1]["override"], true, "{}", r.text());

    // Off again: refused at once.
    let r = admin_call(
        fx.admin(),
        "PUT",
        "/admin/toggles/training_enabled",
        Some(&ops),
        Some(r#"{"enabled": false, "reason": "incident 42"}"#),
    )
    .await;
    assert_eq!(r.json()["previous"], true, "{}", r.text());
    assert_eq!(call(fx.addr(), "/train", None).await.status, 503);
    assert_eq!(env.up.hits(), 2);
}

#[tokio::test]
async fn toggle_refusals_change_nothing_and_refused_attempts_are_audited() {
    let env = Env::new().await;
    let fx = env.start().await;
    let admin = fx.admin();
    let ops = env.tok("alice", &["ops"]);
    let path = "/admin/toggles/training_enabled";
    let put = |tok: Option<String>, body: &'static str| {
        let tok = tok.clone();
        async move { admin_call(admin, "PUT", path, tok.as_deref(), Some(body)).await }
    };

    // Unauthenticated: 401 with the challenge, audited.
    let r = put(None, r#"{"enabled": true, "reason": "x"}"#).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="fortress""#)
    );
    assert_eq!(r.json(), error_body(&r, "unauthorized", "missing_token"));
    // A forged token: 401 invalid_token.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "mallory", "roles": ["ops"], "iss": "iss", "aud": "aud",
                "iat": TestClock::START / 1000, "exp": TestClock::START / 1000 + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-0123456789abcdefghij"),
    )
    .expect("sign");
    let r = put(Some(forged), r#"{"enabled": true, "reason": "x"}"#).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), error_body(&r, "unauthorized", "invalid_token"));
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="fortress", error="invalid_token""#)
    );
    // A valid token without the permission: 403, audited with who tried.
    let user = env.tok("bob", &["user"]);
    let r = put(Some(user.clone()), r#"{"enabled": true, "reason": "x"}"#).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), error_body(&r, "forbidden", "missing_permission"));
    // `admin:reload` does not grant `admin:toggles`.
    let reloader = env.tok("rita", &["reloader"]);
    let r = put(Some(reloader), r#"{"enabled": true, "reason": "x"}"#).await;
    assert_eq!(r.status, 403);

    let recs = wait_records(env.audit.path(), "toggle_change", 4).await;
    let seen: Vec<(Value, Value, Value, Value)> = recs
        .iter()
        .map(|r| {
            (
                r["decision"].clone(),
                r["reason"].clone(),
                r["status"].clone(),
                r["subject"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                json!("deny"),
                json!("missing_token"),
                json!(401),
                Value::Null
            ),
            (
                json!("deny"),
                json!("invalid_signature"),
                json!(401),
                Value::Null
            ),
            (
                json!("deny"),
                json!("missing_permission"),
                json!(403),
                json!("bob")
            ),
            (
                json!("deny"),
                json!("missing_permission"),
                json!(403),
                json!("rita")
            ),
        ]
    );
    assert_eq!(recs[2]["roles"], json!(["user"]));
    assert!(
        recs.iter()
            .all(|r| r["path"] == path && r["request_id"].is_string())
    );

    // Bad bodies from an admin: 400 / 404 / 413 / 415.
    for (body, reason) in [
        (r#"{"enabled": true}"#, "reason_required"),
        (r#"{"enabled": true, "reason": "   "}"#, "reason_required"),
        (
            r#"{"enabled": true, "reason": "a\u0000b"}"#,
            "invalid_reason",
        ),
        (r#"{"enabled": "yes", "reason": "x"}"#, "invalid_body"),
        (
            r#"{"enabled": true, "reason": "x", "extra": 1}"#,
            "invalid_body",
        ),
        ("not json", "invalid_body"),
    ] {
        let r = put(Some(ops.clone()), body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json(), error_body(&r, "bad_request", reason), "{body}");
    }
    let long = format!(r#"{{"enabled": true, "reason": "{}"}}"#, "r".repeat(513));
    let r = admin_call(admin, "PUT", path, Some(&ops), Some(&long)).await;
    assert_eq!(r.json(), error_body(&r, "bad_request", "reason_too_long"));
    let ok_len = format!(r#"{{"enabled": false, "reason": "{}"}}"#, "r".repeat(512));
    let r = admin_call(admin, "PUT", path, Some(&ops), Some(&ok_len)).await;
    assert_eq!(r.status, 200, "512 bytes is the limit: {}", r.text());
    let huge = format!(
        r#"{{"enabled": true, "reason": "x", "pad": "{}"}}"#,
        "p".repeat(5000)
    );
    let r = admin_call(admin, "PUT", path, Some(&ops), Some(&huge)).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json(),
        error_body(&r, "payload_too_large", "body_too_large")
    );
    let r = admin_call_typed(
        admin,
        "PUT",
        path,
        Some(&ops),
        Some(r#"{"enabled": true, "reason": "x"}"#),
        "text/plain",
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(
        r.json(),
        error_body(&r, "unsupported_media_type", "json_required")
    );
    let r = admin_call(
        admin,
        "PUT",
        "/admin/toggles/no_such_toggle",
        Some(&ops),
        Some(r#"{"enabled": true, "reason": "x"}"#),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), error_body(&r, "not_found", "unknown_toggle"));
    let r = admin_call(admin, "POST", path, Some(&ops), None).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("PUT")));

    // Nothing but the one valid change (to `false`, the default) happened: still off.
    assert_eq!(call(fx.addr(), "/train", None).await.status, 503);
    let r = admin_call(admin, "GET", "/admin/toggles", Some(&ops), None).await;
    assert_eq!(r.json()["toggles"][1]["override"], false);
    let applied: Vec<Value> = records(env.audit.path())
        .into_iter()
        .filter(|r| r["event"] == "toggle_change" && r["decision"] == "applied")
        .collect();
    assert_eq!(applied.len(), 1);

    // Reads need the permission too (401 / 403), but are not audited.
    let r = admin_call(admin, "GET", "/admin/toggles", None, None).await;
    assert_eq!(r.status, 401);
    let r = admin_call(admin, "GET", "/admin/toggles", Some(&user), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(env.up.hits(), 0);
}

#[tokio::test]
async fn revocations_by_jti_and_subject_take_effect_persist_and_expire() {
    let env = Env::new().await;
    let fx = env.start().await;
    let start = env.clock.now();
    let ops = token(start, "alice", &["ops"], None, 10 * 3600);
    // Tokens valid for 10 hours, so the revocation's own expiry shows.
    let j1 = token(start, "bob", &["user"], Some("j1"), 10 * 3600);
    let carol = token(start, "carol", &["user"], Some("c1"), 10 * 3600);
    for t in [&j1, &carol] {
        assert_eq!(call(fx.addr(), "/api/x", Some(t)).await.status, 200);
    }

    let r = admin_call(
        fx.admin(),
        "POST",
        "/admin/revocations",
        Some(&ops),
        Some(r#"{"jti": "j1", "expires_at": "2026-01-01T01:00:00Z", "reason": "leaked in a log"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"revocation": {"jti": "j1", "expires_at": "2026-01-01T01:00:00Z", "reason": "leaked in a log"}})
    );
    // "Log out everywhere": every token of carol issued up to now.
    let r = admin_call(
        fx.admin(),
        "POST",
        "/admin/revocations",
        Some(&ops),
        Some(r#"{"subject": "carol", "expires_at": "2026-01-01T20:00:00Z", "reason": "lost laptop"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"revocation": {"subject": "carol", "before": "2026-01-01T00:00:01Z",
                              "expires_at": "2026-01-01T20:00:00Z", "reason": "lost laptop"}})
    );

    // The next request with either token: 401, on every route that authenticates.
    for t in [&j1, &carol] {
        let r = call(fx.addr(), "/api/x", Some(t)).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["reason"], "invalid_token");
        // The admin API refuses it too.
        let r = admin_call(fx.admin(), "GET", "/admin/toggles", Some(t), None).await;
        assert_eq!(r.status, 401);
    }
    let denied = wait_records(env.audit.path(), "request", 2).await;
    assert!(
        denied.iter().all(|r| r["reason"] == "token_revoked"),
        "{denied:#?}"
    );
    // Carol's next login (a token issued after `before`) works.
    env.clock.advance(2_000);
    let carol2 = token(env.clock.now(), "carol", &["user"], Some("c2"), 600);
    assert_eq!(call(fx.addr(), "/api/x", Some(&carol2)).await.status, 200);
    assert_eq!(env.up.hits(), 3);

    let recs = wait_records(env.audit.path(), "revocation", 2).await;
    assert_eq!(recs[0]["subject"], "alice");
    assert_eq!(recs[0]["decision"], "applied");
    assert_eq!(
        recs[0]["detail"],
        json!({"jti": "j1", "expires_at": "2026-01-01T01:00:00Z", "reason": "leaked in a log"})
    );
    assert_eq!(recs[1]["detail"]["subject"], "carol");

    let listed = json!({"revocations": [
        {"jti": "j1", "expires_at": "2026-01-01T01:00:00Z", "reason": "leaked in a log"},
        {"subject": "carol", "before": "2026-01-01T00:00:01Z", "expires_at": "2026-01-01T20:00:00Z", "reason": "lost laptop"},
    ]});
    let r = admin_call(fx.admin(), "GET", "/admin/revocations", Some(&ops), None).await;
    assert_eq!(r.json(), listed, "{}", r.text());

    // Persisted: a restart keeps refusing both.
    stop(fx).await;
    let fx = env.start().await;
    for t in [&j1, &carol] {
        assert_eq!(call(fx.addr(), "/api/x", Some(t)).await.status, 401);
    }
    let r = admin_call(fx.admin(), "GET", "/admin/revocations", Some(&ops), None).await;
    assert_eq!(r.json(), listed);

    // Past the jti revocation's expiry: pruned (listed no more, dropped from the file at the
    // next start) and the token is judged on its own again; the subject one stays.
    env.clock.set(start + 2 * HOUR);
    let r = admin_call(fx.admin(), "GET", "/admin/revocations", Some(&ops), None).await;
    assert_eq!(r.json()["revocations"], json!([listed["revocations"][1]]));
    assert_eq!(call(fx.addr(), "/api/x", Some(&j1)).await.status, 200);
    assert_eq!(call(fx.addr(), "/api/x", Some(&carol)).await.status, 401);
    stop(fx).await;
    let fx = env.start().await;
    let file: Value = serde_json::from_slice(
        &std::fs::read(env.state.path().join("admin-state.json")).expect("state file"),
    )
    .expect("json");
    assert_eq!(
        file["revocations"],
        json!([{"subject": "carol", "before": TestClock::START / 1000 + 1,
                "expires_at": TestClock::START / 1000 + 20 * 3600, "reason": "lost laptop"}])
    );
    assert_eq!(call(fx.addr(), "/api/x", Some(&carol)).await.status, 401);
}

#[tokio::test]
async fn revocation_requests_are_validated_and_need_admin_revoke() {
    let env = Env::new().await;
    let fx = env.start().await;
    let admin = fx.admin();
    let ops = env.tok("alice", &["ops"]);
    for (body, reason) in [
        (
            r#"{"jti": "j", "expires_at": "2026-01-01T01:00:00Z"}"#,
            "reason_required",
        ),
        (r#"{"jti": "j", "reason": "x"}"#, "expires_at_required"),
        (
            r#"{"jti": "j", "expires_at": "tomorrow", "reason": "x"}"#,
            "invalid_time",
        ),
        (
            r#"{"jti": "j", "expires_at": "2025-12-31T23:00:00Z", "reason": "x"}"#,
            "already_expired",
        ),
        (
            r#"{"jti": "j", "subject": "s", "expires_at": "2026-01-01T01:00:00Z", "reason": "x"}"#,
            "jti_or_subject_required",
        ),
        (r#"{"reason": "x"}"#, "jti_or_subject_required"),
        (
            r#"{"jti": "", "expires_at": "2026-01-01T01:00:00Z", "reason": "x"}"#,
            "invalid_jti",
        ),
        (
            r#"{"subject": "s", "before": "2026-01-01", "reason": "x"}"#,
            "invalid_time",
        ),
        (
            r#"{"subject": "s", "reason": "x", "tenant": "t"}"#,
            "invalid_body",
        ),
    ] {
        let r = admin_call(admin, "POST", "/admin/revocations", Some(&ops), Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json(), error_body(&r, "bad_request", reason), "{body}");
    }
    let body = r#"{"jti": "j", "expires_at": "2026-01-01T01:00:00Z", "reason": "x"}"#;
    let toggler = env.tok("tom", &["toggler"]);
    let r = admin_call(
        admin,
        "POST",
        "/admin/revocations",
        Some(&toggler),
        Some(body),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = admin_call(admin, "POST", "/admin/revocations", None, Some(body)).await;
    assert_eq!(r.status, 401);
    let recs = wait_records(env.audit.path(), "revocation", 2).await;
    assert_eq!(
        recs.iter()
            .map(|r| (
                r["decision"].clone(),
                r["reason"].clone(),
                r["subject"].clone()
            ))
            .collect::<Vec<_>>(),
        [
            (json!("deny"), json!("missing_permission"), json!("tom")),
            (json!("deny"), json!("missing_token"), Value::Null),
        ]
    );
    let r = admin_call(admin, "GET", "/admin/revocations", Some(&ops), None).await;
    assert_eq!(r.json(), json!({"revocations": []}));
}

#[tokio::test]
async fn reload_through_the_api_requires_admin_reload() {
    let env = Env::new().await;
    let fx = env.start().await;
    let admin = fx.admin();
    let r = admin_call(admin, "POST", "/admin/reload", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), error_body(&r, "unauthorized", "missing_token"));
    let toggler = env.tok("tom", &["toggler"]);
    let r = admin_call(admin, "POST", "/admin/reload", Some(&toggler), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), error_body(&r, "forbidden", "missing_permission"));
    let reloader = env.tok("rita", &["reloader"]);
    let r = admin_call(admin, "POST", "/admin/reload", Some(&reloader), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "applied");
    let request_id = r.header("x-request-id").expect("request id").to_owned();
    let recs = wait_records(env.audit.path(), "policy_reload", 3).await;
    assert_eq!(
        recs.iter()
            .map(|r| (
                r["decision"].clone(),
                r["reason"].clone(),
                r["subject"].clone()
            ))
            .collect::<Vec<_>>(),
        [
            (json!("deny"), json!("missing_token"), Value::Null),
            (json!("deny"), json!("missing_permission"), json!("tom")),
            (json!("applied"), Value::Null, json!("rita")),
        ]
    );
    // The applied reload names who asked, with the admin request's ids.
    assert_eq!(recs[2]["roles"], json!(["reloader"]));
    assert_eq!(recs[2]["request_id"], request_id.as_str());
    assert_eq!(recs[2]["client_ip"], "127.0.0.1");
    assert_eq!(recs[2]["path"], "/admin/reload");
}

#[tokio::test]
async fn a_reload_keeps_overrides_of_toggles_still_defined() {
    let env = Env::new().await;
    let fx = env.start().await;
    let ops = env.tok("alice", &["ops"]);
    for (name, on) in [("training_enabled", "true"), ("beta", "false")] {
        let r = admin_call(
            fx.admin(),
            "PUT",
            &format!("/admin/toggles/{name}"),
            Some(&ops),
            Some(&format!(r#"{{"enabled": {on}, "reason": "test"}}"#)),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The new policy drops `beta` and adds `gamma`.
    let text = std::fs::read_to_string(&fx.config_path).expect("read");
    let text = text.replace(
        "  beta: { default: true }\n",
        "  gamma: { default: true }\n",
    );
    std::fs::write(&fx.config_path, text).expect("write");
    let r = admin_call(fx.admin(), "POST", "/admin/reload", Some(&ops), None).await;
    assert_eq!(r.json()["result"], "applied", "{}", r.text());
    let r = admin_call(fx.admin(), "GET", "/admin/toggles", Some(&ops), None).await;
    assert_eq!(
        r.json(),
        json!({"toggles": [
            {"name": "gamma", "default": true, "override": null, "effective": true},
            {"name": "training_enabled", "default": false, "override": true, "effective": true},
        ]})
    );
    assert_eq!(call(fx.addr(), "/train", None).await.status, 200);
    // `beta`'s override is kept (unused) and no longer settable.
    let r = admin_call(
        fx.admin(),
        "PUT",
        "/admin/toggles/beta",
        Some(&ops),
        Some(r#"{"enabled": true, "reason": "x"}"#),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn policy_and_budget_reads_need_admin_read() {
    let env = Env::new().await;
    let fx = env.start().await;
    let ops = env.tok("alice", &["ops"]);
    let r = admin_call(fx.admin(), "GET", "/admin/policy", Some(&ops), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let text = std::fs::read_to_string(&fx.config_path).expect("read");
    assert_eq!(
        v["policy_hash"],
        fortress::config::short_hash(text.as_bytes()).as_str()
    );
    assert_eq!(v["source"], "fortress.yaml");
    assert_eq!(v["loaded_at"], "2026-01-01T00:00:00.000Z");
    assert_eq!(v["last_reload_error"], Value::Null);
    // No readiness guard in this policy: an empty map (guards: tests/startup_guards.rs).
    assert_eq!(v["readiness"], serde_json::json!({}));
    // A refused reload shows, without the config directory.
    std::fs::write(&fx.config_path, format!("{text}bogus_key: 1\n")).expect("write");
    let r = admin_call(fx.admin(), "POST", "/admin/reload", Some(&ops), None).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = admin_call(fx.admin(), "GET", "/admin/policy", Some(&ops), None).await;
    let err = &r.json()["last_reload_error"];
    assert_eq!(err["at"], "2026-01-01T00:00:00.000Z");
    let errors = err["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .all(|e| e.as_str().is_some_and(|e| e.starts_with("fortress.yaml:"))),
        "{errors:?}"
    );

    let r = admin_call(fx.admin(), "GET", "/admin/budgets/acme", Some(&ops), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"tenant": "acme", "budgets": [{"period": "daily", "limit": 10, "used": 0, "remaining": 10,
               "window_start": "2026-01-01T00:00:00.000Z", "resets_at": "2026-01-02T00:00:00.000Z"}]})
    );
    let r = admin_call(fx.admin(), "GET", "/admin/budgets/a%2Fb", Some(&ops), None).await;
    assert_eq!(r.json(), error_body(&r, "bad_request", "invalid_tenant"));
    let toggler = env.tok("tom", &["toggler"]);
    for target in ["/admin/policy", "/admin/budgets/acme"] {
        let r = admin_call(fx.admin(), "GET", target, Some(&toggler), None).await;
        assert_eq!(r.status, 403, "{target}");
    }
    let r = admin_call(fx.admin(), "GET", "/admin/nothing", Some(&ops), None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn without_authentication_the_admin_api_is_closed_but_reload_stays_on_loopback() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "",
        &format!("toggles:\n  t: {{ default: false }}\n{CATCH_ALL}"),
    ))
    .await;
    let r = admin_call(fx.admin(), "GET", "/admin/toggles", None, None).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        error_body(&r, "forbidden", "admin_requires_authentication")
    );
    let r = admin_call(
        fx.admin(),
        "PUT",
        "/admin/toggles/t",
        None,
        Some(r#"{"enabled": true, "reason": "x"}"#),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = admin_call(fx.admin(), "POST", "/admin/reload", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Probes and metrics stay unauthenticated.
    assert_eq!(get(fx.admin(), "/healthz").await.status, 200);
    assert_eq!(get(fx.admin(), "/metrics").await.status, 200);
}

/// This host's address on its default route, if it has one that is not loopback.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The admin listener on every address: probes and metrics answer a non-loopback peer, the
/// admin API refuses it (403 admin_requires_loopback, audited for mutations) before reading
/// its token. Needs a non-loopback interface (skipped, with a note, on a host without one).
#[tokio::test]
async fn a_non_loopback_peer_gets_probes_but_not_the_admin_api() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipped: this host has no non-loopback address");
        return;
    };
    let env = Env::new().await;
    let text = yaml(env.up.addr, env.state.path(), env.audit.path())
        .replace("admin: 127.0.0.1:0", "admin: 0.0.0.0:0");
    let fx = TestFortress::start_with_clock(&text, &env.clock).await;
    let admin = SocketAddr::new(ip, fx.admin().port());
    let ops = env.tok("alice", &["ops"]);
    assert_eq!(get(admin, "/healthz").await.status, 200);
    assert_eq!(get(admin, "/metrics").await.status, 200);
    for (method, target, body) in [
        ("GET", "/admin/toggles", None),
        (
            "PUT",
            "/admin/toggles/training_enabled",
            Some(r#"{"enabled": true, "reason": "x"}"#),
        ),
        ("POST", "/admin/reload", None),
    ] {
        let r = admin_call(admin, method, target, Some(&ops), body).await;
        assert_eq!(r.status, 403, "{method} {target}");
        assert_eq!(
            r.json(),
            error_body(&r, "forbidden", "admin_requires_loopback")
        );
    }
    // The same token from loopback works.
    let local = SocketAddr::from(([127, 0, 0, 1], fx.admin().port()));
    let r = admin_call(local, "GET", "/admin/toggles", Some(&ops), None).await;
    assert_eq!(r.status, 200);
    let recs = wait_records(env.audit.path(), "toggle_change", 1).await;
    assert_eq!(recs[0]["reason"], "admin_requires_loopback");
    assert_eq!(recs[0]["client_ip"], ip.to_string());
    assert_eq!(call(fx.addr(), "/train", None).await.status, 503);
}

#[tokio::test]
async fn a_refused_attempt_with_a_long_path_makes_a_bounded_record() {
    let env = Env::new().await;
    let fx = env.start().await;
    let target = format!("/admin/toggles/{}", "a".repeat(4000));
    let r = admin_call(
        fx.admin(),
        "PUT",
        &target,
        None,
        Some(r#"{"enabled": true, "reason": "x"}"#),
    )
    .await;
    assert_eq!(r.status, 401);
    let recs = wait_records(env.audit.path(), "toggle_change", 1).await;
    let path = recs[0]["path"].as_str().expect("path");
    assert_eq!(path, format!("{}…[truncated]", &target[..512]));
}
