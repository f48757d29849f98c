//! Authorization through a real fortress: the allow/deny matrix per role, tenant isolation
//! from path, header and query (ambiguous tenants refused; the app, read the WSGI way, sees
//! the tenant fortress checked), the cross-tenant permission, and dry-run mode.

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
        serde_json::json!({"error": error, "reason": reason, "request_id": rid, "trace_id": trace_id(r)}),
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
    let cases: [TenantCase; 15] = [
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
    // Nor is an ambiguous tenant, although the tenant stage runs after routing.
    let analyst = token("an", &["analyst"], Some("acme"));
    let r = send(
        addr,
        "POST",
        "/api/ask",
        Some(&analyst),
        &[("X-Org-Id", "acme"), ("X-Org-Id", "globex")],
    )
    .await;
    assert_denied(&r, 400, "bad_request", "ambiguous_tenant", "dry-run dup");
    let r = send(
        addr,
        "GET",
        "/api/predictions?org=acme&ORG=globex",
        Some(&analyst),
        &[],
    )
    .await;
    assert_denied(&r, 400, "bad_request", "ambiguous_tenant", "dry-run query");
    assert_eq!(up.hits(), 3);
}

/// Every way to name the header tenant twice (RFC 9110 §5.3 lets a recipient join repeated
/// fields with commas; nginx and WSGI fold `_` onto `-`; `Connection` makes a hop drop it):
/// 400 `ambiguous_tenant`, in both `underscore_headers` modes, and nothing reaches the app.
#[tokio::test]
async fn ambiguous_tenant_header_is_refused() {
    let tok = token("a", &["analyst"], Some("acme"));
    let cases: [(&str, &str); 13] = [
        (
            "issue: both spellings + Connection",
            "X-Org-Id: acme\r\nX_Org_Id: globex\r\nConnection: X-Org-Id\r\n",
        ),
        ("both spellings", "X-Org-Id: acme\r\nX_Org_Id: globex\r\n"),
        ("same value twice", "X-Org-Id: acme\r\nx_org_id: acme\r\n"),
        ("only the `_` spelling", "X_Org_Id: acme\r\n"),
        ("mixed spelling", "X-ORG_ID: globex\r\nX-Org-Id: acme\r\n"),
        (
            "Connection names it",
            "X-Org-Id: acme\r\nConnection: X-Org-Id\r\n",
        ),
        (
            "Connection names its `_` spelling",
            "X-Org-Id: acme\r\nConnection: keep-alive, x_org_id\r\n",
        ),
        ("twice", "X-Org-Id: acme\r\nX-Org-Id: acme\r\n"),
        (
            "twice, other case",
            "X-Org-Id: acme\r\nx-org-id: globex\r\n",
        ),
        ("comma-joined", "X-Org-Id: acme, globex\r\n"),
        ("comma-joined, same", "X-Org-Id: acme,acme\r\n"),
        ("empty list member", "X-Org-Id: acme,\r\n"),
        ("twice, one empty", "X-Org-Id:\r\nX-Org-Id: acme\r\n"),
    ];
    for mode in ["", "server_keep"] {
        let up = Upstream::echo().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).expect("secret");
        let policy = POLICY.replace("SECRET_FILE", &secret.display().to_string());
        let server = if mode.is_empty() {
            "allow_insecure_local: true"
        } else {
            "allow_insecure_local: true\nunderscore_headers: keep"
        };
        let fx = TestFortress::start(&config(up.addr, server, &policy)).await;
        for (what, headers) in cases {
            let req = format!(
                "POST /api/ask HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\
                 Authorization: Bearer {tok}\r\n{headers}\r\n"
            );
            let r = raw_one(fx.addr(), req.as_bytes()).await;
            assert_denied(&r, 400, "bad_request", "ambiguous_tenant", what);
        }
        // The tenant header's `_` spelling is refused on every route, not only tenant ones.
        let r = send(
            fx.addr(),
            "GET",
            "/api/me",
            Some(&tok),
            &[("X_Org_Id", "x")],
        )
        .await;
        assert_denied(&r, 400, "bad_request", "ambiguous_tenant", "other route");
        assert_eq!(up.hits(), 0, "{mode}");
    }
}

/// Query tenants: a key given twice, in another case, as a PHP array, percent-encoded to
/// another case, or next to a `;` (frameworks that split on `;` read another value): 400.
#[tokio::test]
async fn ambiguous_tenant_query_is_refused() {
    let up = Upstream::echo().await;
    let fx = start(&up, "").await;
    let addr = fx.fx.addr();
    let tok = token("a", &["ml_engineer"], Some("acme"));
    for q in [
        "org=acme&org=globex",
        "org=acme&org=acme",
        "org=acme&ORG=globex",
        "ORG=acme",
        "Org=acme",
        "org=acme&%4Frg=globex",
        "%4frg=acme",
        "org[]=acme",
        "org=acme&org[]=globex",
        "org[0]=acme",
        "a=1;org=acme",
        "org=acme;org=globex",
        "org=acme;x=1",
        "x=1&org=acme&y=2;ORG=globex",
    ] {
        let target = format!("/api/predictions?{q}");
        let r = send(addr, "GET", &target, Some(&tok), &[]).await;
        assert_denied(&r, 400, "bad_request", "ambiguous_tenant", q);
    }
    assert_eq!(up.hits(), 0);
    // One plain key (also percent-encoded to the same name) passes, and the app gets the
    // query exactly as it was checked.
    for q in [
        "org=acme",
        "o%72g=acme",
        "org=acme&organization=globex",
        "org=%61cme",
    ] {
        let target = format!("/api/predictions?{q}");
        let r = send(addr, "GET", &target, Some(&tok), &[]).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(up.requests().last().expect("seen").target, target);
    }
}

/// The app reads headers like a WSGI app: `X-Org-Id` and `X_Org_Id` are the same
/// `HTTP_X_ORG_ID`. Whatever the client sends, every request the app gets holds one candidate
/// for the tenant and for each identity key, equal to what fortress checked and verified.
#[tokio::test]
async fn a_wsgi_app_reads_the_tenant_and_identity_fortress_checked() {
    let up = Upstream::wsgi().await;
    // Without fortress in front, the collision is real: the app may read either tenant.
    let direct = raw(
        up.addr,
        b"POST /api/ask HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\
          X-Org-Id: acme\r\nX_Org_Id: globex\r\n\r\n",
    )
    .await;
    assert_eq!(
        direct.json()["HTTP_X_ORG_ID"],
        serde_json::json!(["acme", "globex"])
    );
    for keep in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).expect("secret");
        let policy = POLICY.replace("SECRET_FILE", &secret.display().to_string());
        let server = if keep {
            "allow_insecure_local: true\nunderscore_headers: keep"
        } else {
            "allow_insecure_local: true"
        };
        let fx = TestFortress::start(&config(up.addr, server, &policy)).await;
        let tok = token("alice", &["analyst"], Some("acme"));
        let r = send(
            fx.addr(),
            "POST",
            "/api/ask",
            Some(&tok),
            &[("X-Org-Id", "acme"), ("X_Custom_Flag", "1"), ("X-App", "2")],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let env = r.json();
        let one = |k: &str| env[k].clone();
        assert_eq!(one("HTTP_X_ORG_ID"), serde_json::json!(["acme"]));
        assert_eq!(one("HTTP_X_TENANT_ID"), serde_json::json!(["acme"]));
        assert_eq!(one("HTTP_X_AUTH_SUBJECT"), serde_json::json!(["alice"]));
        assert_eq!(one("HTTP_X_AUTH_ROLES"), serde_json::json!(["analyst"]));
        assert_eq!(one("HTTP_X_REAL_IP"), serde_json::json!(["127.0.0.1"]));
        assert_eq!(one("HTTP_X_APP"), serde_json::json!(["2"]));
        let custom = if keep {
            serde_json::json!(["1"])
        } else {
            serde_json::Value::Null
        };
        assert_eq!(one("HTTP_X_CUSTOM_FLAG"), custom, "keep={keep}");
        // No key of the environ has two candidates: the app cannot pick the wrong one.
        for (k, v) in env.as_object().expect("object") {
            assert_eq!(v.as_array().map(Vec::len), Some(1), "{k}: {v}");
        }
        // Identity and tenant spellings the client tries are refused, not merged.
        for (name, value) in [
            ("X_Org_Id", "globex"),
            ("X_Auth_Subject", "admin"),
            ("x-auth_roles", "admin"),
            ("X_TENANT_ID", "globex"),
        ] {
            let r = send(
                fx.addr(),
                "POST",
                "/api/ask",
                Some(&tok),
                &[("X-Org-Id", "acme"), (name, value)],
            )
            .await;
            assert_eq!(r.status, 400, "{name}: {}", r.text());
        }
    }
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

/// The access log line of every refusal says who asked: the token's subject and tenant, and
/// the tenant the request named (checked on the real binary's log output).
#[tokio::test]
async fn refusal_log_lines_name_the_subject_and_tenants() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let policy = POLICY.replace("SECRET_FILE", &secret.display().to_string());
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        config(up.addr, "allow_insecure_local: true", &policy),
    )
    .expect("write config");
    let fp = FortressProcess::spawn(&path);

    let viewer = token("vera", &["viewer"], Some("acme"));
    let analyst = token("ann", &["analyst"], Some("acme"));
    for (what, method, target, tok, headers, status, fields) in [
        (
            "permission refusal (no tenant rule)",
            "POST",
            "/api/train",
            &viewer,
            vec![],
            403,
            [
                r#"reason="missing_permission""#,
                r#"subject="vera""#,
                r#"tenant="acme""#,
                r#"requested_tenant="""#,
            ],
        ),
        (
            "permission refusal on a tenant route",
            "POST",
            "/api/ask",
            &viewer,
            vec![("X-Org-Id", "acme")],
            403,
            [
                r#"reason="missing_permission""#,
                r#"subject="vera""#,
                r#"tenant="acme""#,
                // Authorization refused before the tenant stage read the request.
                r#"requested_tenant="""#,
            ],
        ),
        (
            "tenant refusal (header)",
            "POST",
            "/api/ask",
            &analyst,
            vec![("X-Org-Id", "globex")],
            403,
            [
                r#"reason="tenant_mismatch""#,
                r#"subject="ann""#,
                r#"tenant="acme""#,
                r#"requested_tenant="globex""#,
            ],
        ),
        (
            "tenant refusal (path)",
            "GET",
            "/api/orgs/initech/reports/q1",
            &viewer,
            vec![],
            403,
            [
                r#"reason="tenant_mismatch""#,
                r#"subject="vera""#,
                r#"tenant="acme""#,
                r#"requested_tenant="initech""#,
            ],
        ),
    ] {
        let r = send(fp.addr, method, target, Some(tok), &headers).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let rid = r.header("x-request-id").expect("rid").to_owned();
        let line_of = |logs: Vec<String>| {
            logs.into_iter()
                .find(|l| l.contains("request finished") && l.contains(&rid))
        };
        assert!(
            eventually(std::time::Duration::from_secs(10), || async {
                line_of(fp.logs()).is_some()
            })
            .await,
            "{what}: no access log line for {rid}: {:#?}",
            fp.logs()
        );
        let line = line_of(fp.logs()).expect("line");
        assert!(line.contains(r#"decision="deny""#), "{what}: {line}");
        assert!(line.contains("http.status=403"), "{what}: {line}");
        for field in fields {
            assert!(line.contains(field), "{what}: {field} missing in {line}");
        }
    }
    assert_eq!(up.hits(), 0, "no refused request reached the upstream");
}

/// A query tenant is read the way every framework reads a query (`+` is a space): the token
/// of tenant `a+b` may name it as `a%2Bb`, not as `a+b` (which the app reads as `a b`).
#[tokio::test]
async fn query_tenant_reads_plus_as_a_space_like_the_app() {
    let up = Upstream::echo().await;
    let fx = start(&up, "").await;
    let addr = fx.fx.addr();
    let tok = token("ann", &["ml_engineer"], Some("a+b"));
    let r = send(addr, "GET", "/api/predictions?org=a%2Bb", Some(&tok), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.hits(), 1);
    for target in ["/api/predictions?org=a+b", "/api/predictions?org=a%20b"] {
        let r = send(addr, "GET", target, Some(&tok), &[]).await;
        assert_denied(&r, 403, "forbidden", "tenant_mismatch", target);
    }
    assert_eq!(up.hits(), 1, "refused requests never reach the app");
}
