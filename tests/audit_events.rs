//! Audit events beyond request decisions, through a real fortress: an NDJSON stream
//! violation, budget warning and exhaustion (once per period), aborted requests and every
//! request under `include: [all]`, and the stdout sink (lines a log shipper can tell apart).

mod support;

use std::path::Path;

use bytes::Bytes;
use http::Response;
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "audit-events-secret-0123456789abcdef-xyz";

fn records(dir: &Path) -> Vec<Value> {
    audit_records(dir)
}

fn of_event<'a>(all: &'a [Value], event: &str) -> Vec<&'a Value> {
    all.iter().filter(|r| r["event"] == event).collect()
}

#[tokio::test]
async fn a_stream_violation_is_recorded_once_with_its_request() {
    // The app answers an NDJSON stream whose second line has no `type`.
    let up = Upstream::spawn(|req: http::Request<hyper::body::Incoming>| async move {
        let trace = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split('-').nth(1))
            .unwrap_or("")
            .to_owned();
        let mut r = Response::new(full(Bytes::from(format!(
            "{{\"type\":\"data\",\"trace_id\":\"{trace}\"}}\n{{\"no_type\":1,\"trace_id\":\"{trace}\"}}\n\
             {{\"type\":\"end\",\"trace_id\":\"{trace}\"}}\n"
        ))));
        r.headers_mut()
            .insert("content-type", "application/x-ndjson".parse().expect("hv"));
        r
    })
    .await;
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let rest = format!(
        "audit:\n  dir: {}\nstreams:\n  s:\n    order: [data, end]\n    repeatable: [data]\n    \
         terminal: [end]\nroutes:\n  - name: ask\n    match: {{ path: /ask }}\n    public: true\n    \
         stream: s\n",
        dir.display()
    );
    let fx = TestFortress::start(&config(up.addr, "", &rest)).await;
    let resp = get(fx.addr(), "/ask").await;
    assert_eq!(resp.status, 200);
    let id = resp.header("x-request-id").expect("id").to_owned();
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);
    let all = records(&dir);
    // Default `include: [denied, violations]`: the allowed request itself has no record.
    let v = of_event(&all, "stream_violation");
    assert_eq!(v.len(), 1, "{all:#?}");
    assert_eq!(v[0]["request_id"], id.as_str());
    assert_eq!(v[0]["reason"], "missing_type");
    assert_eq!(v[0]["route"], "ask");
    assert_eq!(v[0]["decision"], "allow");
    assert_eq!(v[0]["status"], 200);
    assert_eq!(v[0]["path"], "/ask");
    assert_eq!(of_event(&all, "request").len(), 0);
}

fn token(sub: &str, tenant: &str) -> String {
    let now = TestClock::START / 1000;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({
            "sub": sub, "roles": ["user"], "tenant": tenant, "iss": "iss", "aud": "aud",
            "iat": now, "exp": now + 3600,
        }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn budget_warning_and_exhaustion_are_recorded_once_per_period() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let rest = format!(
        "audit:\n  dir: {}\n  include: [denied, budget]\n\
         authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
         secret: {{ value: \"{SECRET}\" }}\n  claims: {{ subject: sub, roles: roles, tenant: tenant }}\n\
         roles:\n  user: [\"*\"]\nbudgets:\n  per_tenant: {{ daily: 10, warn_at: 0.5 }}\n\
         routes:\n  - name: gen\n    match: {{ path: /gen }}\n    budget: {{ cost: 3 }}\n",
        dir.display()
    );
    let fx = TestFortress::start_with_clock(
        &config(up.addr, "allow_insecure_local: true", &rest),
        &clock,
    )
    .await;
    let bearer = format!("Bearer {}", token("alice", "acme"));
    let mut statuses = Vec::new();
    let mut ids = Vec::new();
    // 3, 6 (crosses 5: warning), 9, 12 > 10 refused, and again refused.
    for _ in 0..5 {
        let r = get_with(fx.addr(), "/gen", &[("authorization", bearer.as_str())]).await;
        statuses.push(r.status);
        ids.push(r.header("x-request-id").expect("id").to_owned());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);
    let all = records(&dir);
    let warnings = of_event(&all, "budget_warning");
    assert_eq!(warnings.len(), 1, "{all:#?}");
    assert_eq!(warnings[0]["request_id"], ids[1].as_str());
    assert_eq!(warnings[0]["tenant"], "acme");
    assert_eq!(warnings[0]["reason"], "budget_warning");
    assert_eq!(
        warnings[0]["detail"],
        json!({ "period": "daily", "used": 6, "limit": 10 })
    );
    // 9 of 10 used: the last unit is never charged by a cost-3 route, so the exhaustion shows
    // as the refusals (denied) — no `budget_exhausted` event without a charge reaching 10.
    assert_eq!(of_event(&all, "budget_exhausted").len(), 0);
    let denied: Vec<&Value> = of_event(&all, "request");
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[0]["request_id"], ids[3].as_str());
    assert_eq!(denied[0]["reason"], "budget_exhausted");
}

#[tokio::test]
async fn a_charge_that_uses_the_last_unit_records_budget_exhausted() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let rest = format!(
        "audit:\n  dir: {}\n  include: [budget]\n\
         authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
         secret: {{ value: \"{SECRET}\" }}\n  claims: {{ subject: sub, roles: roles, tenant: tenant }}\n\
         roles:\n  user: [\"*\"]\nbudgets:\n  per_tenant: {{ daily: 4, warn_at: 0.5 }}\n\
         routes:\n  - name: gen\n    match: {{ path: /gen }}\n    budget: {{ cost: 2 }}\n",
        dir.display()
    );
    let fx = TestFortress::start_with_clock(
        &config(up.addr, "allow_insecure_local: true", &rest),
        &clock,
    )
    .await;
    let bearer = format!("Bearer {}", token("bob", "globex"));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            get_with(fx.addr(), "/gen", &[("authorization", bearer.as_str())])
                .await
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 429]);
    fx.fx.shutdown();
    assert!(fx.fx.wait().await);
    let all = records(&dir);
    let kinds: Vec<&str> = all
        .iter()
        .filter_map(|r| r["event"].as_str())
        .filter(|e| e.starts_with("budget"))
        .collect();
    // 2 of 4: warning (50 %); 4 of 4: exhausted. `include: [budget]` only: no request records.
    assert_eq!(kinds, ["budget_warning", "budget_exhausted"]);
    let ex = of_event(&all, "budget_exhausted")[0];
    assert_eq!(
        ex["detail"],
        json!({ "period": "daily", "used": 4, "limit": 4 })
    );
    assert_eq!(of_event(&all, "request").len(), 0);
}

#[tokio::test]
async fn include_all_records_every_request_and_stdout_lines_say_type_audit() {
    let up = Upstream::echo().await;
    let trail = tempfile::tempdir().expect("tempdir");
    let cfg = trail.path().join("fortress.yaml");
    std::fs::write(
        &cfg,
        config(
            up.addr,
            "",
            &format!("audit:\n  stdout: true\n  include: [all]\n{CATCH_ALL}"),
        ),
    )
    .expect("write");
    let proc = FortressProcess::spawn(&cfg);
    let ok = get(proc.addr, "/hello?x=1").await;
    assert_eq!(ok.status, 200);
    let id = ok.header("x-request-id").expect("id").to_owned();
    proc.signal("TERM");
    let found = eventually(std::time::Duration::from_secs(20), || async {
        proc.logs().iter().any(|l| l.contains("\"event\":\"seal\""))
    })
    .await;
    assert!(
        found,
        "the seal reaches stdout at shutdown: {:?}",
        proc.logs()
    );
    let audit: Vec<Value> = proc
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "audit")
        .collect();
    let events: Vec<&str> = audit.iter().filter_map(|r| r["event"].as_str()).collect();
    assert_eq!(events, ["startup", "request", "shutdown", "seal"]);
    assert_eq!(audit[1]["request_id"], id.as_str());
    assert_eq!(audit[1]["decision"], "allow");
    assert_eq!(audit[1]["path"], "/hello");
    assert_eq!(audit[1]["query"], "x=1");
    assert_eq!(audit[1]["route"], "all");
}
