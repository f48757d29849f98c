//! The audit trail through a real fortress: which requests and events get a record (exactly
//! one each, with every field), the chain across a restart and a day rollover, retention,
//! redaction, reload records, failing closed when the sink fails (and recovering), and
//! `fortress audit verify` / `query` on what fortress wrote.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const SECRET: &str = "audit-test-secret-0123456789abcdef-xyz";
const DAY: u64 = 86_400_000;

const POLICY: &str = "
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { value: SECRET_VALUE }
roles:
  analyst: [\"reports:read\"]
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
  - name: admin
    match: { path: \"/api/admin/**\" }
    require: [\"admin:*\"]
    privileged: true
  - name: shadow
    match: { methods: [GET], path: \"/api/shadow/**\" }
    require: [\"admin:*\"]
    mode: dry-run
";

/// A config with `audit` (lines under `audit:`) and the policy above.
fn yaml(up: SocketAddr, audit: &str) -> String {
    let audit: String = audit
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {}\n", l.trim()))
        .collect();
    config(
        up,
        "allow_insecure_local: true",
        &format!(
            "audit:\n{audit}{}",
            POLICY.replace("SECRET_VALUE", &format!("\"{SECRET}\""))
        ),
    )
}

fn token_at(now_ms: u64, sub: &str, roles: &[&str], tenant: Option<&str>) -> String {
    let now = now_ms / 1000;
    let mut claims = json!({
        "sub": sub, "roles": roles, "iss": "iss", "aud": "aud", "iat": now, "exp": now + 600,
    });
    if let Some(t) = tenant {
        claims["tenant"] = Value::from(t);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

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

fn of_event<'a>(all: &'a [Value], event: &str) -> Vec<&'a Value> {
    all.iter().filter(|r| r["event"] == event).collect()
}

fn by_request<'a>(all: &'a [Value], id: &str) -> Vec<&'a Value> {
    all.iter().filter(|r| r["request_id"] == id).collect()
}

/// `fortress audit ARGS…`: (exit code, stdout).
fn audit_cmd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .arg("audit")
        .args(args)
        .output()
        .expect("run fortress audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Every field of SPEC §5 (plus the chain's), on every record.
const FIELDS: &[&str] = &[
    "ts",
    "seq",
    "type",
    "trace_id",
    "request_id",
    "event",
    "decision",
    "reason",
    "status",
    "route",
    "method",
    "path",
    "query",
    "request_headers",
    "subject",
    "tenant",
    "requested_tenant",
    "roles",
    "client_ip",
    "transport",
    "latency_ms",
    "policy_version",
    "detail",
    "prev_hash",
    "hash",
    "key_id",
];

fn assert_every_field(r: &Value) {
    let obj = r.as_object().expect("object");
    for f in FIELDS {
        assert!(obj.contains_key(*f), "field {f} missing in {r}");
    }
    assert_eq!(obj.len(), FIELDS.len(), "unexpected fields in {r}");
    assert_eq!(r["type"], "audit");
}

/// The one record of the response `resp`, checked against what the response said.
fn the_record<'a>(all: &'a [Value], resp: &RawResponse) -> &'a Value {
    let id = resp.header("x-request-id").expect("x-request-id");
    let found = by_request(all, id);
    assert_eq!(found.len(), 1, "exactly one record for {id}: {found:?}");
    let r = found[0];
    assert_every_field(r);
    assert_eq!(r["status"], u64::from(resp.status));
    r
}

#[tokio::test]
async fn each_audited_request_has_exactly_one_record_with_every_field() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let fx = TestFortress::start_with_clock(
        &yaml(
            up.addr,
            &format!(
                "dir: {}\ninclude: [denied, privileged, violations]\ndurability: strict",
                dir.display()
            ),
        ),
        &clock,
    )
    .await;
    let now = clock.now();
    let analyst = token_at(now, "u-ana", &["analyst"], Some("acme"));
    let support = token_at(now, "u-sup", &["support"], Some("acme"));
    let ops = token_at(now, "u-ops", &["ops"], Some("acme"));

    // Denied at authentication, at authorization (tenant), at routing, at the path check.
    let no_token = call(fx.addr(), "/api/orgs/acme/reports/q1?x=1", None).await;
    assert_eq!(no_token.status, 401);
    let other_tenant = call(fx.addr(), "/api/orgs/globex/reports/q1", Some(&analyst)).await;
    assert_eq!(other_tenant.status, 403);
    let unmatched = call(fx.addr(), "/nowhere", Some(&analyst)).await;
    assert_eq!(unmatched.status, 404);
    let bad_path = call(fx.addr(), "/api/orgs/acme/reports/%2e%2e/x", Some(&analyst)).await;
    assert_eq!(bad_path.status, 400);
    // Allowed: plain (no record), cross-tenant (privileged), privileged route, dry-run denial.
    let plain = call(fx.addr(), "/api/orgs/acme/reports/q1", Some(&analyst)).await;
    assert_eq!(plain.status, 200);
    let cross = call(fx.addr(), "/api/orgs/globex/reports/q1", Some(&support)).await;
    assert_eq!(cross.status, 200);
    let admin = call(fx.addr(), "/api/admin/users", Some(&ops)).await;
    assert_eq!(admin.status, 200);
    let admin_denied = call(fx.addr(), "/api/admin/users", Some(&analyst)).await;
    assert_eq!(admin_denied.status, 403);
    let shadow = call(fx.addr(), "/api/shadow/x", Some(&analyst)).await;
    assert_eq!(shadow.status, 200);
    let health = call(fx.addr(), "/health", None).await;
    assert_eq!(health.status, 200);

    // Strict: every response above was sent after its record was written.
    let all = records(&dir);
    let policy_version = all[0]["policy_version"].clone();
    assert_eq!(all[0]["event"], "startup");
    assert_eq!(all[0]["seq"], 0);
    assert!(policy_version.is_string());

    let r = the_record(&all, &no_token);
    assert_eq!(r["event"], "request");
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["reason"], "missing_token");
    assert_eq!(r["route"], "org-reports");
    assert_eq!(r["method"], "GET");
    assert_eq!(r["path"], "/api/orgs/acme/reports/q1");
    assert_eq!(r["query"], "x=1");
    assert_eq!(r["subject"], Value::Null);
    assert_eq!(r["roles"], Value::Null);
    assert_eq!(r["client_ip"], "127.0.0.1");
    assert_eq!(r["transport"], "plain");
    assert_eq!(r["policy_version"], policy_version);
    assert_eq!(r["ts"], "2026-01-01T00:00:00.000Z");
    assert!(r["latency_ms"].as_f64().is_some_and(|l| l >= 0.0));
    assert_eq!(r["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(no_token.json()["request_id"], r["request_id"]);

    let r = the_record(&all, &other_tenant);
    assert_eq!(
        (&r["decision"], &r["reason"]),
        (&json!("deny"), &json!("tenant_mismatch"))
    );
    assert_eq!(r["subject"], "u-ana");
    assert_eq!(r["tenant"], "acme");
    assert_eq!(r["requested_tenant"], "globex");
    assert_eq!(r["roles"], json!(["analyst"]));

    let r = the_record(&all, &unmatched);
    assert_eq!(
        (&r["reason"], &r["route"]),
        (&json!("no_route"), &Value::Null)
    );
    let r = the_record(&all, &bad_path);
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["path"], "/api/orgs/acme/reports/%2e%2e/x");

    assert!(by_request(&all, plain.header("x-request-id").expect("id")).is_empty());
    assert!(by_request(&all, health.header("x-request-id").expect("id")).is_empty());

    let r = the_record(&all, &cross);
    assert_eq!(
        (&r["decision"], &r["reason"]),
        (&json!("allow"), &Value::Null)
    );
    assert_eq!(r["detail"], json!({ "privileged": "cross_tenant" }));
    assert_eq!(r["requested_tenant"], "globex");
    let r = the_record(&all, &admin);
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["detail"], json!({ "privileged": "route" }));
    let r = the_record(&all, &admin_denied);
    assert_eq!(
        (&r["decision"], &r["reason"]),
        (&json!("deny"), &json!("missing_permission"))
    );
    let r = the_record(&all, &shadow);
    assert_eq!(r["decision"], "dry_run_deny");
    assert_eq!(r["reason"], "missing_permission");
    assert_eq!(r["detail"], json!({ "mode": "dry_run" }));

    // Startup + 8 request records, nothing else yet.
    assert_eq!(of_event(&all, "request").len(), 8, "{all:#?}");
    assert_eq!(all.len(), 9);

    // Shutdown: a shutdown record, then the seal; the trail verifies as sealed.
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);
    let all = records(&dir);
    let n = all.len();
    assert_eq!(all[n - 2]["event"], "shutdown");
    assert_eq!(all[n - 1]["event"], "seal");
    assert_eq!(all[n - 1]["detail"]["count"], n as u64);
    for (i, r) in all.iter().enumerate() {
        assert_every_field(r);
        assert_eq!(r["seq"], i as u64);
    }
    let (code, out) = audit_cmd(&["verify", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("ok: {n} records in 1 files, sealed")),
        "{out}"
    );

    // `audit query --trace-id` finds the record of one request.
    let trace = by_request(&all, other_tenant.header("x-request-id").expect("id"))[0]["trace_id"]
        .as_str()
        .expect("trace id")
        .to_owned();
    let (code, out) = audit_cmd(&["query", dir.to_str().expect("utf-8"), "--trace-id", &trace]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["reason"], "tenant_mismatch");
}

#[tokio::test]
async fn the_chain_continues_across_a_restart_and_a_day_rollover() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let cfg = yaml(up.addr, &format!("dir: {}", dir.display()));
    let fx = TestFortress::start_with_clock(&cfg, &clock).await;
    assert_eq!(call(fx.addr(), "/api/admin/x", None).await.status, 401);
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);

    // Restart: the chain goes on from the last record of the newest file.
    let fx = TestFortress::start_with_clock(&cfg, &clock).await;
    assert_eq!(call(fx.addr(), "/api/admin/y", None).await.status, 401);
    // The next day: the first record of the day seals yesterday's file.
    clock.advance(DAY);
    assert_eq!(call(fx.addr(), "/api/admin/z", None).await.status, 401);
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);

    let day1 = dir.join("audit-2026-01-01.jsonl");
    let day2 = dir.join("audit-2026-01-02.jsonl");
    let first = records_of(&day1);
    let second = records_of(&day2);
    let events = |rs: &[Value]| -> Vec<String> {
        rs.iter()
            .map(|r| r["event"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    // Batched (the `local` default): the batch may hold several records; order is the
    // order they were submitted in.
    assert_eq!(
        events(&first),
        [
            "startup", "request", "shutdown", "seal", "startup", "request", "seal"
        ]
    );
    assert_eq!(first[6]["detail"]["reason"], "rotation");
    assert_eq!(events(&second), ["request", "shutdown", "seal"]);
    let all: Vec<Value> = first.iter().chain(second.iter()).cloned().collect();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r["seq"], i as u64, "{r}");
        if i > 0 {
            assert_eq!(r["prev_hash"], all[i - 1]["hash"]);
        }
    }
    assert_eq!(second[0]["ts"], "2026-01-02T00:00:00.000Z");
    let (code, out) = audit_cmd(&["verify", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("ok: 10 records in 2 files, sealed"),
        "{out}"
    );
}

fn records_of(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

#[tokio::test]
async fn retention_deletes_old_files_and_records_the_deletion() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let fx = TestFortress::start_with_clock(
        &yaml(
            up.addr,
            &format!("dir: {}\nretention_days: 1", dir.display()),
        ),
        &clock,
    )
    .await;
    assert_eq!(call(fx.addr(), "/api/admin/a", None).await.status, 401);
    clock.advance(DAY);
    assert_eq!(call(fx.addr(), "/api/admin/b", None).await.status, 401);
    clock.advance(2 * DAY);
    assert_eq!(call(fx.addr(), "/api/admin/c", None).await.status, 401);
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);
    // Day 1 is older than one day on day 4: deleted (day 2 is too, by then).
    assert!(!dir.join("audit-2026-01-01.jsonl").exists());
    assert!(!dir.join("audit-2026-01-02.jsonl").exists());
    let kept = records_of(&dir.join("audit-2026-01-04.jsonl"));
    let retention: Vec<&Value> = kept.iter().filter(|r| r["event"] == "retention").collect();
    assert_eq!(retention.len(), 1, "{kept:#?}");
    assert_eq!(
        retention[0]["detail"]["deleted"],
        json!(["audit-2026-01-01.jsonl", "audit-2026-01-02.jsonl"])
    );
    let (code, out) = audit_cmd(&["verify", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn redaction_replaces_the_chosen_fields_with_a_keyed_hash() {
    let up = Upstream::echo().await;
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let fx = TestFortress::start(&yaml(
        up.addr,
        &format!(
            "dir: {}\nredact: [client_ip, subject]\nredact_key: {{ value: \"redaction-key-0123456789\" }}",
            dir.display()
        ),
    ))
    .await;
    let now = jsonwebtoken::get_current_timestamp() * 1000;
    let tok = token_at(now, "alice@example.com", &["analyst"], Some("acme"));
    let resp = call(fx.addr(), "/api/orgs/globex/reports/q", Some(&tok)).await;
    assert_eq!(resp.status, 403);
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);
    let all = records(&dir);
    let r = the_record(&all, &resp);
    let hashed = |v: &str| fortress::audit::trail::redacted_value("redaction-key-0123456789", v);
    assert_eq!(r["subject"], hashed("alice@example.com"));
    assert_eq!(r["client_ip"], hashed("127.0.0.1"));
    assert_eq!(r["tenant"], "acme");
    assert_eq!(r["requested_tenant"], "globex");
    let text: String = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .collect();
    assert!(!text.contains("alice@example.com"));
    assert!(!text.contains("\"client_ip\":\"127.0.0.1\""));
    assert!(!text.contains(&tok), "never a token");
}

#[tokio::test]
async fn reloads_are_recorded_applied_or_refused_and_cannot_turn_the_trail_off() {
    let up = Upstream::echo().await;
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let audit = format!("dir: {}\ninclude: [denied]", dir.display());
    let fx = TestFortress::start(&yaml(up.addr, &audit)).await;
    // Reloading through the admin API takes a token granting `admin:reload` (`ops`).
    let ops = token_at(
        jsonwebtoken::get_current_timestamp() * 1000,
        "ops",
        &["ops"],
        None,
    );
    let reload = || async {
        raw(
            fx.admin(),
            format!(
                "POST /admin/reload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {ops}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
    };
    // Applied: `include` may change on reload.
    std::fs::write(
        &fx.config_path,
        yaml(up.addr, &format!("dir: {}\ninclude: [all]", dir.display())),
    )
    .expect("write");
    assert_eq!(reload().await.status, 200);
    // Refused: a broken file; and a policy without `audit:`.
    std::fs::write(&fx.config_path, "version: 1\nserver: [").expect("write");
    assert_ne!(reload().await.status, 200);
    std::fs::write(&fx.config_path, config(up.addr, "", CATCH_ALL)).expect("write");
    let off = reload().await;
    assert_ne!(off.status, 200);
    assert!(
        off.text().contains("cannot be turned off by a reload"),
        "{}",
        off.text()
    );
    // Still on, now with `include: [all]`: an allowed request gets a record.
    let health = call(fx.addr(), "/health", None).await;
    assert_eq!(health.status, 200);
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);
    let all = records(&dir);
    let reloads = of_event(&all, "policy_reload");
    assert_eq!(reloads.len(), 3, "{reloads:#?}");
    assert_eq!(reloads[0]["decision"], "applied");
    assert_eq!(
        reloads[0]["detail"]["previous_version"],
        all[0]["policy_version"]
    );
    assert_ne!(reloads[0]["policy_version"], all[0]["policy_version"]);
    assert_eq!(
        (&reloads[1]["decision"], &reloads[1]["reason"]),
        (&json!("refused"), &json!("invalid_config"))
    );
    assert_eq!(reloads[1]["policy_version"], reloads[0]["policy_version"]);
    assert!(
        reloads[2]["detail"]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("cannot be turned off")),
        "{}",
        reloads[2]
    );
    let r = the_record(&all, &health);
    assert_eq!(
        (&r["decision"], &r["route"]),
        (&json!("allow"), &json!("health"))
    );
}

/// Makes the writer's next file open fail: the path of tomorrow's file is a directory.
fn block_file(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.join("x")).expect("mkdir");
    p
}

#[tokio::test]
async fn a_failing_sink_fails_closed_with_503_and_recovers_without_losing_records() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let fx = TestFortress::start_with_clock(
        &yaml(
            up.addr,
            &format!(
                "dir: {}\ninclude: [denied, privileged]\ndurability: strict",
                dir.display()
            ),
        ),
        &clock,
    )
    .await;
    let tok = token_at(clock.now(), "u-ops", &["ops"], Some("acme"));
    let before = call(fx.addr(), "/api/admin/a", None).await;
    assert_eq!(before.status, 401);
    // Tomorrow's file cannot be created: the first record of the next day fails the sink.
    let blocker = block_file(&dir, "audit-2026-01-02.jsonl");
    clock.advance(DAY);
    let refused = call(fx.addr(), "/api/admin/b", None).await;
    assert_eq!(refused.status, 503);
    let body = refused.json();
    assert_eq!(body["error"], "service_unavailable");
    assert_eq!(body["reason"], "audit_unavailable");
    assert_eq!(
        body["request_id"],
        refused.header("x-request-id").expect("id")
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    // While failing: a privileged request is refused before it reaches the app.
    let hits = up.hits();
    let privileged = call(fx.addr(), "/api/admin/c", Some(&tok)).await;
    assert_eq!(privileged.status, 503);
    assert_eq!(
        up.hits(),
        hits,
        "the app never saw a request that could not be recorded"
    );
    // A request that needs no record is served.
    assert_eq!(call(fx.addr(), "/health", None).await.status, 200);
    assert!(
        metric(
            fx.admin(),
            r#"fortress_refusals_total{reason="audit_unavailable",route="admin"}"#
        )
        .await
        .is_some_and(|v| v >= 2.0)
    );
    assert_eq!(
        metric(fx.admin(), "fortress_audit_sink_up").await,
        Some(0.0)
    );
    assert!(
        metric(fx.admin(), "fortress_audit_write_errors_total")
            .await
            .is_some_and(|v| v >= 1.0)
    );
    // The sink comes back: the writer's probe (every second) notices by itself.
    std::fs::remove_dir_all(&blocker).expect("rmdir");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let r = call(fx.addr(), "/api/admin/d", None).await;
        if r.status == 401 {
            break r;
        }
        assert_eq!(r.status, 503);
        assert!(std::time::Instant::now() < deadline, "the trail recovers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        metric(fx.admin(), "fortress_audit_sink_up").await,
        Some(1.0)
    );
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);
    // Every acknowledged refusal has its record; the 503s have none; the chain is intact.
    let all = records(&dir);
    the_record(&all, &before);
    the_record(&all, &after);
    assert!(by_request(&all, refused.header("x-request-id").expect("id")).is_empty());
    let (code, out) = audit_cmd(&["verify", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn kill_9_under_load_leaves_every_served_refusal_on_disk() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let (up, cfg_path) = rt.block_on(async {
        let up = Upstream::echo().await;
        let cfg = trail.path().join("fortress.yaml");
        std::fs::write(
            &cfg,
            yaml(
                up.addr,
                &format!("dir: {}\ndurability: strict\nfsync: true", dir.display()),
            ),
        )
        .expect("write");
        (up, cfg)
    });
    let proc = FortressProcess::spawn(&cfg_path);
    let addr = proc.addr;
    // Eight clients send refused requests on keep-alive connections; after 400 answers in
    // all, fortress is killed mid-load.
    let served = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let enough = std::sync::Arc::new(tokio::sync::Notify::new());
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..8 {
            let served = served.clone();
            let enough = enough.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut send) = try_h1(addr).await else {
                    return;
                };
                for i in 0.. {
                    let req = http::Request::get(format!("/api/admin/{c}/{i}"))
                        .header("host", "x")
                        .body(full(""))
                        .expect("request");
                    let Ok(resp) = send.send_request(req).await else {
                        return;
                    };
                    if resp.status() != 401 {
                        return;
                    }
                    let id = resp.headers()["x-request-id"]
                        .to_str()
                        .expect("id")
                        .to_owned();
                    let n = {
                        let mut s = served.lock().expect("lock");
                        s.push(id);
                        s.len()
                    };
                    if n == 400 {
                        enough.notify_one();
                    }
                }
            }));
        }
        let waited = tokio::time::timeout(Duration::from_secs(60), enough.notified()).await;
        assert!(waited.is_ok(), "400 refusals within a minute");
        let status = Command::new("kill")
            .args(["-9", &proc.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        for t in tasks {
            let _ = t.await;
        }
    });
    drop(up);
    let served = served.lock().expect("lock").clone();
    assert!(served.len() >= 400);
    let on_disk: std::collections::HashSet<String> = records(&dir)
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = served.iter().filter(|id| !on_disk.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} served refusals have no record: {missing:?}",
        missing.len()
    );
    let (code, out) = audit_cmd(&["verify", dir.to_str().expect("utf-8")]);
    assert_eq!(
        code, 3,
        "killed: every record checks, the trail is unsealed: {out}"
    );
    assert!(out.starts_with("unsealed: "), "{out}");
}

async fn try_h1(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<TestBody>, Box<dyn std::error::Error>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(send)
}
