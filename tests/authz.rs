//! Authorization through a real fortress: the allow/deny matrix per role, tenant isolation
//! from path, header and query, the cross-tenant permission, and dry-run mode.

mod support;

use std::net::SocketAddr;

use support::*;

const SECRET: &str = "authz-test-secret-0123456789abcdef-xyz";

const POLICY: &str = "
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { file: SECRET_FILE }
roles:
  admin: [\"*\"]
  analyst: [\"reports:read\", \"ask:use\"]
  ml_engineer: [\"@analyst\", \"training:run\"]
  ops: [\"admin:*\"]
  support: [\"reports:read\", \"tenants:cross\"]
  viewer: [\"reports:read\"]
routes:
  - name: health
    match: { methods: [GET], path: /health }
    public: true
  - name: admin
    match: { path: \"/api/admin/**\" }
    require: [\"admin:*\"]
  - name: org-reports
    match: { methods: [GET], path: \"/api/orgs/{org_id}/reports/**\" }
    require: [\"reports:read\"]
    tenant: { path_param: org_id, cross_tenant_permission: \"tenants:cross\" }
  - name: ask
    match: { methods: [POST], path: /api/ask }
    require: [\"ask:use\"]
    tenant: { header: X-Org-Id }
  - name: train
    match: { methods: [POST], path: /api/train }
    require: [\"training:run\", \"reports:read\"]
  - name: predictions
    match: { methods: [GET], path: /api/predictions }
    require_any: [\"training:run\", \"admin:read\"]
    tenant: { query: org }
  - name: me
    match: { methods: [GET], path: /api/me }
  - name: shadow
    match: { methods: [GET], path: \"/api/shadow/**\" }
    require: [\"admin:*\"]
    mode: dry-run
";

/// A fortress with [`POLICY`] (plus `extra` top-level lines) in front of `up`.
struct Fx {
    fx: TestFortress,
    _dir: tempfile::TempDir,
}

async fn start(up: &Upstream, extra: &str) -> Fx {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let policy = POLICY.replace("SECRET_FILE", &secret.display().to_string());
    let yaml = config(
        up.addr,
        "allow_insecure_local: true",
        &format!("{extra}{policy}"),
    );
    Fx {
        fx: TestFortress::start(&yaml).await,
        _dir: dir,
    }
}

fn token(sub: &str, roles: &[&str], tenant: Option<&str>) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = serde_json::json!({
        "sub": sub, "roles": roles, "iss": "iss", "aud": "aud", "exp": now + 600,
    });
    if let Some(t) = tenant {
        claims["tenant"] = serde_json::Value::from(t);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    tok: Option<&str>,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    if let Some(t) = tok {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes()).await
}

fn assert_denied(r: &RawResponse, status: u16, error: &str, reason: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let rid = r.header("x-request-id").expect("rid").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error": error, "reason": reason, "request_id": rid}),
        "{what}"
    );
}

#[tokio::test]
async fn allow_deny_matrix_per_role() {
    let up = Upstream::echo().await;
    let fx = start(&up, "").await;
    let roles = [
        "admin",
        "analyst",
        "ml_engineer",
        "ops",
        "support",
        "viewer",
    ];
    // (method, target, extra header, expected status per role in the order above)
    let org = ("X-Org-Id", "acme");
    let none = ("X-Unused", "1");
    let matrix: [Row; 8] = [
        ("GET", "/health", none, [200, 200, 200, 200, 200, 200]),
        (
            "GET",
            "/api/admin/users",
            none,
            [200, 403, 403, 200, 403, 403],
        ),
        (
            "GET",
            "/api/orgs/acme/reports/q3",
            none,
            [200, 200, 200, 403, 200, 200],
        ),
        ("POST", "/api/ask", org, [200, 200, 200, 403, 403, 403]),
        ("POST", "/api/train", none, [200, 403, 200, 403, 403, 403]),
        (
            "GET",
            "/api/predictions?org=acme",
            none,
            [200, 403, 200, 200, 403, 403],
        ),
        ("GET", "/api/me", none, [200, 200, 200, 200, 200, 200]),
        // Dry-run route: every role is forwarded; the would-be denials are recorded.
        ("GET", "/api/shadow/x", none, [200, 200, 200, 200, 200, 200]),
    ];
    let mut forwarded = 0;
    for (method, target, header, expected) in matrix {
        for (role, want) in roles.iter().zip(expected) {
            let tok = token(&format!("{role}-user"), &[role], Some("acme"));
            let r = send(fx.fx.addr(), method, target, Some(&tok), &[header]).await;
            let what = format!("{role} {method} {target}");
            if want == 200 {
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                forwarded += 1;
                let seen = up.requests().pop().expect("upstream saw it");
                assert_eq!(seen.target, target, "{what}");
                if target != "/health" {
                    assert_eq!(
                        seen.headers["x-auth-subject"],
                        format!("{role}-user").as_str()
                    );
                    assert_eq!(seen.headers["x-auth-roles"], *role);
                }
            } else {
                assert_denied(&r, 403, "forbidden", "missing_permission", &what);
            }
            assert_eq!(
                up.hits(),
                forwarded,
                "{what}: a denied request reached the upstream"
            );
        }
    }
    let dry = metric(
        fx.fx.admin(),
        r#"fortress_requests_total{decision="dry_run_deny",method="GET",mode="dry_run",route="shadow",status="2xx"}"#,
    )
    .await;
    assert_eq!(
        dry,
        Some(4.0),
        "analyst, ml_engineer, support and viewer would be denied"
    );
    let denied = metric(
        fx.fx.admin(),
        r#"fortress_requests_total{decision="deny",method="GET",mode="enforce",route="admin",status="4xx"}"#,
    )
    .await;
    assert_eq!(denied, Some(4.0));
}

#[tokio::test]
async fn tenant_isolation_from_path_header_and_query() {
    let up = Upstream::echo().await;
    let fx = start(&up, "").await;
    let addr = fx.fx.addr();
    let acme = token("a", &["ml_engineer"], Some("acme"));
    let empty = token("e", &["ml_engineer"], Some(""));
    let none = token("n", &["ml_engineer"], None);
    const ORG: &str = "X-Org-Id";
    // (what, method, target, token, headers, forwarded?)
    let cases: [TenantCase; 17] = [
        (
            "path match",
            "GET",
            "/api/orgs/acme/reports/x",
            &acme,
            &[],
            true,
        ),
        (
            "path mismatch",
            "GET",
            "/api/orgs/globex/reports/x",
            &acme,
            &[],
            false,
        ),
        (
            "no case folding",
            "GET",
            "/api/orgs/ACME/reports/x",
            &acme,
            &[],
            false,
        ),
        (
            "empty claim",
            "GET",
            "/api/orgs/acme/reports/x",
            &empty,
            &[],
            false,
        ),
        (
            "missing claim",
            "GET",
            "/api/orgs/acme/reports/x",
            &none,
            &[],
            false,
        ),
        // The canonical path is what is compared: %61cme is acme.
        (
            "canonical",
            "GET",
            "/api/orgs/%61cme/reports/x",
            &acme,
            &[],
            true,
        ),
        (
            "header match",
            "POST",
            "/api/ask",
            &acme,
            &[(ORG, "acme")],
            true,
        ),
        (
            "header mismatch",
            "POST",
            "/api/ask",
            &acme,
            &[(ORG, "globex")],
            false,
        ),
        ("header missing", "POST", "/api/ask", &acme, &[], false),
        (
            "header empty",
            "POST",
            "/api/ask",
            &acme,
            &[(ORG, "")],
            false,
        ),
        (
            "header case",
            "POST",
            "/api/ask",
            &acme,
            &[(ORG, "Acme")],
            false,
        ),
        (
            "header twice",
            "POST",
            "/api/ask",
            &acme,
            &[(ORG, "acme"), (ORG, "acme")],
            false,
        ),
        (
            "query match",
            "GET",
            "/api/predictions?org=acme",
            &acme,
            &[],
            true,
        ),
        (
            "query mismatch",
            "GET",
            "/api/predictions?org=globex",
            &acme,
            &[],
            false,
        ),
        (
            "query missing",
            "GET",
            "/api/predictions",
            &acme,
            &[],
            false,
        ),
        (
            "query empty",
            "GET",
            "/api/predictions?org=",
            &acme,
            &[],
            false,
        ),
        (
            "query twice",
            "GET",
            "/api/predictions?org=acme&org=globex",
            &acme,
            &[],
            false,
        ),
    ];
    let mut forwarded = 0;
    for (what, method, target, tok, headers, ok) in cases {
        let r = send(addr, method, target, Some(tok), headers).await;
        if ok {
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            forwarded += 1;
        } else {
            assert_denied(&r, 403, "forbidden", "tenant_mismatch", what);
        }
        assert_eq!(up.hits(), forwarded, "{what}");
    }
}

#[tokio::test]
async fn cross_tenant_permission_and_admins_do_not_cross() {
    let up = Upstream::echo().await;
    let fx = start(&up, "").await;
    let addr = fx.fx.addr();
    let support = token("s", &["support"], Some("helpdesk"));
    let r = send(addr, "GET", "/api/orgs/acme/reports/x", Some(&support), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests()[0].headers["x-tenant-id"], "helpdesk");
    // `*` does not grant crossing tenants: the admin stays in its tenant.
    let admin = token("root", &["admin"], Some("ops"));
    let r = send(addr, "GET", "/api/orgs/acme/reports/x", Some(&admin), &[]).await;
    assert_denied(&r, 403, "forbidden", "tenant_mismatch", "admin crossing");
    // The cross-tenant permission only applies where the route allows it.
    let r = send(
        addr,
        "POST",
        "/api/ask",
        Some(&support),
        &[("X-Org-Id", "acme")],
    )
    .await;
    assert_denied(
        &r,
        403,
        "forbidden",
        "missing_permission",
        "support cannot ask",
    );
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn global_dry_run_forwards_and_records_every_denial() {
    let up = Upstream::echo().await;
    let fx = start(&up, "mode: dry-run\n").await;
    let addr = fx.fx.addr();
    let viewer = token("v", &["viewer"], Some("acme"));
    // Missing permission, wrong tenant, no token at all: all forwarded in dry-run.
    let r = send(addr, "GET", "/api/admin/users", Some(&viewer), &[]).await;
    assert_eq!(r.status, 200);
    let r = send(
        addr,
        "GET",
        "/api/orgs/globex/reports/x",
        Some(&viewer),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(addr, "GET", "/api/me", None, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), 3);
    // The unauthenticated request reaches the app without any identity.
    assert!(up.requests()[2].headers.get("x-auth-subject").is_none());
    let admin = metrics(fx.fx.admin()).await;
    for (route, n) in [("admin", 1), ("org-reports", 1), ("me", 1)] {
        let series = format!(
            r#"fortress_requests_total{{decision="dry_run_deny",method="GET",mode="dry_run",route="{route}",status="2xx"}} {n}"#
        );
        assert!(admin.contains(&series), "missing {series}");
    }
    assert!(admin.contains(r#"fortress_auth_failures_total{reason="missing_token"} 1"#));
    // Transport and path safety are never dry-run: an unsafe path is still refused.
    let r = send(addr, "GET", "/api/a%2Fb", Some(&viewer), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(up.hits(), 3);
}

/// One tenant case: what, method, target, token, headers, forwarded?
type TenantCase<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    bool,
);

/// One row of the matrix: method, target, an extra header, expected status per role.
type Row = (
    &'static str,
    &'static str,
    (&'static str, &'static str),
    [u16; 6],
);

async fn metrics(admin: SocketAddr) -> String {
    get(admin, "/metrics").await.text()
}
