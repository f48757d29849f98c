//! `fortress demo`, the README's first command: the embedded app behind fortress, with the
//! dev tokens it prints, a stream violation cut, a rate limit and the audit trail.

mod support;

use support::*;

#[tokio::test]
async fn demo_serves_with_the_printed_tokens() {
    let audit = tempfile::tempdir().expect("tempdir");
    let audit_dir = audit.path().to_str().expect("utf-8").to_owned();
    let fx = FortressProcess::spawn_args(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--audit-dir",
        &audit_dir,
    ]);
    // The banner is printed right after the readiness line.
    let mut token = None;
    let found = eventually(std::time::Duration::from_secs(10), || {
        token = fx.logs().iter().find_map(|l| {
            l.trim()
                .strip_prefix("export TOKEN=")
                .map(|t| t.split_whitespace().next().unwrap_or("").to_owned())
        });
        let ok = token.is_some();
        async move { ok }
    })
    .await;
    assert!(found, "no token in the banner: {:?}", fx.logs());
    let token = token.unwrap_or_default();
    let bearer = format!("Bearer {token}");

    let r = get(fx.addr, "/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"status":"ok"}"#);
    let r = get(fx.addr, "/api/orgs/acme/reports/q3").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="fortress""#)
    );
    let r = get_with(
        fx.addr,
        "/api/orgs/acme/reports/q3",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["path"], "/api/orgs/acme/reports/q3");
    assert_eq!(body["x-auth-subject"], "alice");
    assert_eq!(body["x-tenant-id"], "acme");
    let r = get_with(
        fx.addr,
        "/api/orgs/globex/reports/q3",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["reason"], "tenant_mismatch");
    let r = get_with(fx.addr, "/api/admin/users", &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["reason"], "missing_permission");
    let r = raw(
        fx.addr,
        format!(
            "POST /api/ask HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\
             Authorization: {bearer}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let lines: Vec<serde_json::Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "thinking",
            "technical_view",
            "data",
            "data",
            "business_view",
            "end"
        ]
    );
    // Every line carries the request's trace id (the stream requires it).
    let trace = trace_id(&r);
    assert!(
        lines.iter().all(|l| l["trace_id"] == trace.as_str()),
        "{lines:?}"
    );
    let r = get(fx.admin, "/readyz").await;
    assert_eq!(r.status, 200);

    // The stream violation the banner shows: `data` before `technical_view` is not forwarded;
    // the stream ends with fortress's error line.
    let r = raw(
        fx.addr,
        format!(
            "POST /api/ask?broken=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\
             Content-Length: 0\r\nAuthorization: {bearer}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let broken_trace = trace_id(&r);
    let lines: Vec<serde_json::Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"type": "thinking", "trace_id": broken_trace}),
            serde_json::json!({"type": "data", "trace_id": broken_trace}),
            serde_json::json!({
                "type": "error",
                "trace_id": broken_trace,
                "error": "stream_integrity_violation",
                "reason": "out_of_order"
            }),
        ]
    );

    // The rate limit the banner shows: three searches a minute, the fourth is refused.
    for i in 1..=3 {
        let r = get_with(fx.addr, "/api/search?q=x", &[("Authorization", &bearer)]).await;
        assert_eq!(r.status, 200, "search {i}: {}", r.text());
        assert_eq!(r.json()["path"], "/api/search");
    }
    let r = get_with(fx.addr, "/api/search?q=x", &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "too_many_requests");
    assert_eq!(body["reason"], "rate_limited");
    assert_eq!(r.header("ratelimit-policy"), Some(r#""search";q=3;w=60"#));
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let limited_request = r.header("x-request-id").expect("x-request-id").to_owned();

    // The audit records the banner points at: the denials (written before the response:
    // `durability: strict`) and the stream violation (written when the stream was cut).
    let mut records = Vec::new();
    let complete = eventually(std::time::Duration::from_secs(10), || {
        records = support::audit_records(audit.path());
        let ok = records.iter().any(|r| r["event"] == "stream_violation");
        async move { ok }
    })
    .await;
    assert!(complete, "no stream_violation record: {records:?}");
    let violation = records
        .iter()
        .find(|r| r["event"] == "stream_violation")
        .expect("violation record");
    assert_eq!(violation["reason"], "out_of_order");
    assert_eq!(violation["route"], "ask");
    assert_eq!(violation["subject"], "alice");
    assert_eq!(violation["trace_id"], broken_trace.as_str());
    let tenant = records
        .iter()
        .find(|r| r["reason"] == "tenant_mismatch")
        .expect("tenant_mismatch record");
    assert_eq!(tenant["decision"], "deny");
    assert_eq!(tenant["status"], 403);
    assert_eq!(tenant["path"], "/api/orgs/globex/reports/q3");
    assert_eq!(tenant["requested_tenant"], "globex");
    let limited = records
        .iter()
        .find(|r| r["request_id"] == limited_request.as_str())
        .expect("the rate-limited request's record");
    assert_eq!(limited["reason"], "rate_limited");
    assert_eq!(limited["status"], 429);
    assert_eq!(limited["route"], "search");
    // Allowed requests on routes that are not privileged get no record.
    assert!(
        records
            .iter()
            .all(|r| r["event"] != "request" || r["decision"] != "allow"),
        "{records:?}"
    );

    // The commands printed for each of them, with this run's addresses and audit directory.
    let logs = fx.logs().join("\n");
    for line in [
        format!("'http://{}/api/ask?broken=1'", fx.addr),
        format!("http://{}/api/search; done", fx.addr),
        format!("fortress audit query {audit_dir} --decision deny"),
        format!("fortress audit query {audit_dir} --event stream_violation"),
        format!("fortress audit verify {audit_dir}"),
    ] {
        assert!(logs.contains(&line), "banner lacks {line:?}: {logs}");
    }

    // `fortress audit query` finds them in the demo's trail.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(["audit", "query", &audit_dir, "--event", "stream_violation"])
        .output()
        .expect("run fortress audit query");
    assert_eq!(out.status.code(), Some(0));
    let found: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["trace_id"], broken_trace.as_str());
}
