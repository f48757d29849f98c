//! `fortress replay`: real traffic through a real fortress with `audit.include: [all]`, then
//! the policy changes and replay must report exactly the requests whose decision changes
//! (and, under the unchanged policy, none).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::*;

const SECRET: &str = "replay-test-secret-0123456789abcdef-xyz";

const POLICY: &str = "
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { value: SECRET_VALUE }
roles:
  analyst: [\"reports:read\", \"ask:use\"]
  support: [\"reports:read\", \"tenants:cross\"]
  ops: [\"admin:*\"]
routes:
  - name: health
    match: { methods: [GET], path: /health }
    public: true
  - name: org-reports
    match: { methods: [GET], path: \"/api/orgs/{org_id}/reports/**\" }
    require: [\"reports:read\"]
    tenant: { path_param: org_id, cross_tenant_permission: \"tenants:cross\" }
  - name: ask
    match: { methods: [POST], path: /api/ask }
    require: [\"ask:use\"]
    tenant: { header: X-Org-Id }
  - name: admin
    match: { path: \"/api/admin/**\" }
    require: [\"admin:*\"]
  - name: docs
    match: { methods: [GET], path: \"/docs/**\" }
    public: true
";

fn policy(up: SocketAddr, audit_dir: &Path, body: &str) -> String {
    config(
        up,
        "allow_insecure_local: true",
        &format!(
            "audit:\n  dir: {}\n  include: [all]\n  durability: strict\n  fsync: false\n{}",
            audit_dir.display(),
            body.replace("SECRET_VALUE", &format!("\"{SECRET}\""))
        ),
    )
}

fn token(sub: &str, roles: &[&str], tenant: &str, exp_offset: i64) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "sub": sub, "roles": roles, "tenant": tenant, "iss": "iss", "aud": "aud",
        "iat": now.saturating_sub(7200), "exp": now.saturating_add_signed(exp_offset),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// Sends one request; returns (status, request id).
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    tok: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    if let Some(t) = tok {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    let r = raw(addr, req.as_bytes()).await;
    let id = r.header("x-request-id").expect("x-request-id").to_owned();
    (r.status, id)
}

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fortress"))
        .arg("replay")
        .args(args)
        .output()
        .expect("run fortress replay")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reports_exactly_the_requests_whose_decision_changes() {
    let up = Upstream::echo().await;
    let audit_dir = tempfile::tempdir().expect("tempdir");
    let fx = TestFortress::start(&policy(up.addr, audit_dir.path(), POLICY)).await;
    let addr = fx.addr();
    let analyst = token("u1", &["analyst"], "acme", 600);
    let support = token("s1", &["support"], "acme", 600);
    let ops = token("o1", &["ops"], "acme", 600);
    let expired = token("u1", &["analyst"], "acme", -3600);
    let mut ids = BTreeMap::new();
    let mut sent = |name: &'static str, (status, id): (u16, String), want: u16| {
        assert_eq!(status, want, "{name}");
        ids.insert(name, id);
    };
    sent("health", send(addr, "GET", "/health", None, &[]).await, 200);
    sent(
        "own reports",
        send(
            addr,
            "GET",
            "/api/orgs/acme/reports/q1?year=2026",
            Some(&analyst),
            &[],
        )
        .await,
        200,
    );
    sent(
        "cross-tenant reports",
        send(
            addr,
            "GET",
            "/api/orgs/globex/reports/q1",
            Some(&analyst),
            &[],
        )
        .await,
        403,
    );
    sent(
        "support crosses",
        send(
            addr,
            "GET",
            "/api/orgs/globex/reports/q1",
            Some(&support),
            &[],
        )
        .await,
        200,
    );
    sent(
        "ask own tenant",
        send(
            addr,
            "POST",
            "/api/ask",
            Some(&analyst),
            &[("X-Org-Id", "acme")],
        )
        .await,
        200,
    );
    sent(
        "ask other tenant",
        send(
            addr,
            "POST",
            "/api/ask",
            Some(&analyst),
            &[("X-Org-Id", "globex")],
        )
        .await,
        403,
    );
    sent(
        "admin as analyst",
        send(addr, "GET", "/api/admin/users", Some(&analyst), &[]).await,
        403,
    );
    sent(
        "admin as ops",
        send(addr, "GET", "/api/admin/users", Some(&ops), &[]).await,
        200,
    );
    sent(
        "admin without token",
        send(addr, "GET", "/api/admin/users", None, &[]).await,
        401,
    );
    sent(
        "expired token",
        send(
            addr,
            "GET",
            "/api/orgs/acme/reports/q1",
            Some(&expired),
            &[],
        )
        .await,
        401,
    );
    sent(
        "docs",
        send(addr, "GET", "/docs/readme", None, &[]).await,
        200,
    );
    sent(
        "ask two tenants",
        send(
            addr,
            "POST",
            "/api/ask",
            Some(&analyst),
            &[("X-Org-Id", "acme"), ("X-Org-Id", "globex")],
        )
        .await,
        400,
    );
    assert_eq!(up.hits(), 6, "the upstream saw the allowed requests only");
    let recorded: Vec<Value> = audit_records(audit_dir.path())
        .into_iter()
        .filter(|r| r["event"] == "request")
        .collect();
    assert_eq!(recorded.len(), 12);
    // The tenant header is recorded (replay sends it again); the token never is.
    let ask = recorded
        .iter()
        .find(|r| r["request_id"] == ids["ask other tenant"].as_str())
        .expect("ask record");
    assert_eq!(
        ask["request_headers"],
        json!({"host": "app.test", "content-length": "0", "x-org-id": "globex"})
    );
    assert!(!recorded.iter().any(|r| r.to_string().contains(&analyst)));
    fx.fx.shutdown();
    fx.fx.wait().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let audit = audit_dir.path().to_str().expect("utf-8");
    // Under the same policy, nothing changes: every recorded request is rebuilt faithfully
    // (claims, tenant header, query, transport, the expired token's refusal).
    let same = dir.path().join("same.yaml");
    std::fs::write(&same, policy(up.addr, audit_dir.path(), POLICY)).expect("write");
    let out = replay(&["--audit", audit, "--policy", same.to_str().expect("utf-8")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("\n0 of 12 replayed requests change decision\n"),
        "{stdout}"
    );

    // Tokens over plain HTTP no longer accepted (no `allow_insecure_local`): every request
    // that carried one is refused for it; the others do not change.
    let strict = dir.path().join("strict.yaml");
    std::fs::write(
        &strict,
        config(
            up.addr,
            "",
            &format!(
                "audit:\n  dir: {}\n  include: [all]\n{}",
                audit_dir.path().display(),
                POLICY.replace("SECRET_VALUE", &format!("\"{SECRET}\""))
            ),
        ),
    )
    .expect("write");
    let out = replay(&[
        "--audit",
        audit,
        "--policy",
        strict.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut changed: Vec<(String, String)> = report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let name = ids
                .iter()
                .find(|(_, id)| c["request_id"] == id.as_str())
                .map(|(n, _)| n.to_string())
                .expect("a request we sent");
            assert_eq!(c["new"]["reason"], "credentials_over_http", "{c}");
            (name, c["change"].as_str().expect("change").to_owned())
        })
        .collect();
    changed.sort();
    let pair = |n: &str, c: &str| (n.to_string(), c.to_string());
    assert_eq!(
        changed,
        vec![
            pair("admin as analyst", "deny: reason changed"),
            pair("admin as ops", "allow → deny"),
            pair("ask other tenant", "deny: reason changed"),
            pair("ask own tenant", "allow → deny"),
            pair("ask two tenants", "deny: reason changed"),
            pair("cross-tenant reports", "deny: reason changed"),
            pair("own reports", "allow → deny"),
            pair("support crosses", "allow → deny"),
        ]
    );

    // The new policy: analysts lose reports:read, the docs need a token, admin is public.
    let changed = POLICY
        .replace(
            "analyst: [\"reports:read\", \"ask:use\"]",
            "analyst: [\"ask:use\"]\n  reader: [\"docs:read\"]",
        )
        .replace(
            "    match: { methods: [GET], path: \"/docs/**\" }\n    public: true\n",
            "    match: { methods: [GET], path: \"/docs/**\" }\n    require: [\"docs:read\"]\n",
        )
        .replace(
            "    match: { path: \"/api/admin/**\" }\n    require: [\"admin:*\"]\n",
            "    match: { path: \"/api/admin/**\" }\n    public: true\n",
        );
    assert_ne!(changed, POLICY);
    let new = dir.path().join("new.yaml");
    std::fs::write(&new, policy(up.addr, audit_dir.path(), &changed)).expect("write");
    let new = new.to_str().expect("utf-8");
    let out = replay(&["--audit", audit, "--policy", new, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["records"], 12);
    assert_eq!(report["replayed"], 12);
    assert_eq!(report["changed"], 5);
    let changes: BTreeMap<String, (String, Value, Value)> = report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let name = ids
                .iter()
                .find(|(_, id)| c["request_id"] == id.as_str())
                .map(|(n, _)| n.to_string())
                .expect("a request we sent");
            (
                name,
                (
                    c["change"].as_str().expect("change").to_owned(),
                    c["old"].clone(),
                    c["new"].clone(),
                ),
            )
        })
        .collect();
    let o = |d: &str, s: Option<u16>, r: Option<&str>, route: &str| json!({"decision": d, "status": s, "reason": r, "route": route});
    let want: BTreeMap<String, (String, Value, Value)> = [
        (
            "own reports",
            "allow → deny",
            o("allow", Some(200), None, "org-reports"),
            o("deny", Some(403), Some("missing_permission"), "org-reports"),
        ),
        (
            "docs",
            "allow → deny",
            o("allow", Some(200), None, "docs"),
            o("deny", Some(401), Some("missing_token"), "docs"),
        ),
        (
            "admin as analyst",
            "deny → allow",
            o("deny", Some(403), Some("missing_permission"), "admin"),
            o("allow", None, None, "admin"),
        ),
        (
            "admin without token",
            "deny → allow",
            o("deny", Some(401), Some("missing_token"), "admin"),
            o("allow", None, None, "admin"),
        ),
        (
            "cross-tenant reports",
            "deny: reason changed",
            o("deny", Some(403), Some("tenant_mismatch"), "org-reports"),
            o("deny", Some(403), Some("missing_permission"), "org-reports"),
        ),
    ]
    .into_iter()
    .map(|(n, k, a, b)| (n.to_string(), (k.to_string(), a, b)))
    .collect();
    assert_eq!(changes, want);
    // Grouped by old → new decision and route, with counts.
    let groups: Vec<(String, String, u64)> = report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["change"].as_str().expect("change").to_owned(),
                g["route"].as_str().expect("route").to_owned(),
                g["count"].as_u64().expect("count"),
            )
        })
        .collect();
    let g = |c: &str, r: &str, n| (c.to_string(), r.to_string(), n);
    assert_eq!(
        groups,
        vec![
            g("allow → deny", "docs", 1),
            g("allow → deny", "org-reports", 1),
            g("deny → allow", "admin", 2),
            g("deny: reason changed", "org-reports", 1),
        ]
    );

    // The text report: the header says what replay judges by, then the groups.
    let out = replay(&["--audit", audit, "--policy", new]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("fortress replay: 12 request records in "),
        "{stdout}"
    );
    assert!(stdout.contains("note: tokens are never recorded: each request is re-decided with its recorded subject, roles and tenant as verified claims"), "{stdout}");
    assert!(
        stdout.contains(
            "\n5 of 12 replayed requests change decision\n\nallow → deny: 2\n  route docs: 1\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        " GET /api/orgs/acme/reports/q1?year=2026 sub=u1 roles=[analyst] tenant=acme: allow → deny 403 missing_permission [request {}]\n",
        ids["own reports"]
    )), "{stdout}");
    assert!(
        stdout.contains("\ndeny → allow: 2\n  route admin: 2\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\ndeny: reason changed: 1\n  route org-reports: 1\n"),
        "{stdout}"
    );

    // A window with no records replays nothing.
    let out = replay(&["--audit", audit, "--policy", new, "--until", "2000-01-01"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("\n0 of 0 replayed requests change decision\n"));
    // Bad input: exit 2.
    let out = replay(&["--audit", audit, "--policy", new, "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "fortress replay: --since `yesterday` is not a time (2026-01-01, 2026-01-01T10:00:00Z)\n"
    );
}

/// One request record as the trail writes it (the chain fields are not read by replay).
fn record(seq: u64, fields: Value) -> String {
    let mut r = json!({
        "type": "audit", "event": "request", "seq": seq, "ts": format!("2026-03-02T09:00:{:02}.000Z", seq),
        "request_id": format!("req-{seq}"), "trace_id": null, "decision": "deny", "reason": null,
        "status": null, "route": null, "method": "GET", "path": "/", "query": null,
        "request_headers": {"host": "app.test"}, "subject": null, "tenant": null,
        "requested_tenant": null, "roles": null, "client_ip": "127.0.0.1", "transport": "plain",
        "latency_ms": 0.1, "policy_version": "x", "detail": null, "prev_hash": "0", "hash": "0",
        "key_id": null,
    });
    for (k, v) in fields.as_object().expect("object") {
        r[k] = v.clone();
    }
    r.to_string()
}

/// A trail of denials only (the default `include`): replay says it cannot see allowed traffic,
/// skips what it cannot judge (and says why), and still finds refusals the new policy lifts.
#[test]
fn a_denials_only_trail_is_replayed_for_what_it_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).expect("mkdir");
    let analyst = json!({"subject": "u1", "roles": ["analyst"], "tenant": "acme"});
    let with = |base: &Value, more: Value| {
        let mut v = base.clone();
        for (k, x) in more.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    let lines = [
        json!({"type": "audit", "event": "startup", "seq": 0, "ts": "2026-03-02T09:00:00.000Z"})
            .to_string(),
        record(
            1,
            with(
                &analyst,
                json!({"reason": "missing_permission", "status": 403, "route": "admin", "path": "/api/admin/users"}),
            ),
        ),
        record(
            2,
            with(
                &analyst,
                json!({"reason": "tenant_mismatch", "status": 403, "route": "org-reports", "path": "/api/orgs/globex/reports/q1", "requested_tenant": "globex"}),
            ),
        ),
        record(
            3,
            with(
                &analyst,
                json!({"reason": "overloaded", "status": 503, "route": "ask", "method": "POST", "path": "/api/ask"}),
            ),
        ),
        record(
            4,
            json!({"decision": "aborted", "route": "docs", "path": "/docs/a"}),
        ),
        record(
            5,
            with(
                &analyst,
                json!({"reason": "tenant_mismatch", "status": 403, "route": "org-reports", "path": "/api/orgs/x/reports/q1", "requested_tenant": "hmac-sha256:00112233445566778899aabbccddeeff"}),
            ),
        ),
        record(
            6,
            json!({"reason": "no_route", "status": 404, "path": "/x…[truncated]"}),
        ),
        record(
            7,
            json!({"reason": "token_expired", "status": 401, "route": "admin", "path": "/api/admin/users"}),
        ),
        // A dry-run refusal: under the enforcing policy, the same refusal, enforced.
        record(
            8,
            json!({"decision": "dry_run_deny", "reason": "token_expired", "status": 200, "route": "org-reports", "path": "/api/orgs/acme/reports/q1"}),
        ),
        // The toggle was off, then switched on through the admin API: each request is judged
        // with the override in force when it came (no change either time).
        record(
            9,
            json!({"reason": "feature_disabled", "status": 503, "route": "beta", "path": "/beta"}),
        ),
        json!({"type": "audit", "event": "toggle_change", "seq": 10, "ts": "2026-03-02T09:00:10.000Z",
               "decision": "applied", "detail": {"toggle": "beta", "default": false, "old": false, "new": true}})
            .to_string(),
        record(
            11,
            json!({"reason": "missing_token", "status": 401, "route": "beta", "path": "/beta"}),
        ),
    ];
    // The last line was cut off by a crash (never acknowledged): not a record.
    std::fs::write(
        audit.join("audit-2026-03-02.jsonl"),
        lines.join("\n") + "\n{\"type\":\"audit\",\"event\":\"requ",
    )
    .expect("write");
    let up: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let new = dir.path().join("new.yaml");
    let public_admin = POLICY.replace(
        "    match: { path: \"/api/admin/**\" }\n    require: [\"admin:*\"]\n",
        "    match: { path: \"/api/admin/**\" }\n    public: true\n",
    ) + "  - name: beta\n    match: { path: /beta }\n    require: [\"ask:use\"]\n    requires_toggle: beta\ntoggles:\n  beta: { default: false }\n";
    std::fs::write(&new, policy(up, &audit, &public_admin)).expect("write");
    let out = replay(&[
        "--audit",
        audit.to_str().expect("utf-8"),
        "--policy",
        new.to_str().expect("utf-8"),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let body: Vec<&str> = stdout.lines().skip(2).collect();
    assert_eq!(
        body,
        vec![
            "note: the trail records no allowed request (audit.include has no `all`): only refusals can be re-judged, so changes to allow → deny cannot show",
            "note: 1 toggle change from the trail applied when made",
            "skipped: 1 aborted, 1 redacted tenant or client IP, 1 runtime refusal, 1 truncated target",
            "3 of 6 replayed requests change decision",
            "",
            "deny → allow: 2",
            "  route admin: 2",
            "    2026-03-02T09:00:01.000Z GET /api/admin/users sub=u1 roles=[analyst] tenant=acme: deny 403 missing_permission → allow [request req-1]",
            "    2026-03-02T09:00:07.000Z GET /api/admin/users no token: deny 401 token_expired → allow [request req-7]",
            "",
            "dry_run_deny → deny: 1",
            "  route org-reports: 1",
            "    2026-03-02T09:00:08.000Z GET /api/orgs/acme/reports/q1 no token: dry_run_deny token_expired → deny 401 token_expired [request req-8]",
        ],
        "{stdout}"
    );
    assert!(
        stdout.starts_with("fortress replay: 10 request records in "),
        "{stdout}"
    );
}
