//! `fortress demo`, the README's first command: the embedded app behind fortress, with the
//! dev tokens it prints.

mod support;

use support::*;

#[tokio::test]
async fn demo_serves_with_the_printed_tokens() {
    let fx =
        FortressProcess::spawn_args(&["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
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
    let r = get(fx.admin, "/readyz").await;
    assert_eq!(r.status, 200);
}
