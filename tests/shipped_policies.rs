//! Shipped policies run for real: `fortress run` on a copy of `policies/NAME.yaml` in
//! `environment: production` (secrets from the environment), in front of a real upstream.
//! Only the addresses and the audit directory are replaced, and the ingress CIDR by
//! 127.0.0.1 (the test plays the ingress). What decision tables cannot show is checked here:
//! the audit records with their correlation ids, a stream cut by the SQL guard.

mod support;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fortress::auth::token::{TokenSpec, mint};
use support::*;

const JWT_SECRET: &str = "Xq7vR2mT9pL4wZ8nB3cK6hJ1sD5fG0aYeUiOoPl";
const AUDIT_KEY: &str = "Nd4Lr8Vb2Qm6Tk0Zx5Hc9Wp3Fy7Js1Ga";

/// A copy of `policies/NAME.yaml` in `dir`, with each `(from, to)` applied (each must exist).
fn shipped(name: &str, dir: &Path, edits: &[(&str, String)]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("policies/{name}.yaml"));
    let mut text = std::fs::read_to_string(&src).expect("read policy");
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "{name}.yaml changed: {from:?} not found"
        );
        text = text.replacen(from, to, 1);
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write policy");
    path
}

fn token(sub: &str, roles: &[&str], tenant: Option<&str>, iss: &str, aud: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let spec = TokenSpec {
        subject: sub.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        tenant: tenant.map(str::to_owned),
        issuer: iss.into(),
        audience: aud.into(),
        ttl_secs: 600,
        jti: None,
    };
    mint(&spec, JWT_SECRET.as_bytes(), now).expect("mint")
}

/// A request as the ingress forwards it: plain HTTP, `X-Forwarded-Proto: https`.
fn via_ingress(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nConnection: close\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-For: 198.51.100.7\r\n"
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: api.example.com\r\n");
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

#[tokio::test]
async fn risk_engine_audits_every_action_with_the_ingress_correlation_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit");
    let upstream = Upstream::echo().await;
    let config = shipped(
        "risk-engine",
        dir.path(),
        &[
            ("listen: 0.0.0.0:8080", "listen: 127.0.0.1:0".into()),
            ("admin: 127.0.0.1:9901", "admin: 127.0.0.1:0".into()),
            (
                "upstream: http://127.0.0.1:8000",
                format!("upstream: http://{}", upstream.addr),
            ),
            (
                "trusted_proxies: [10.0.0.0/8]",
                "trusted_proxies: [127.0.0.1/32]".into(),
            ),
            (
                "dir: /var/lib/fortress/audit",
                format!("dir: {}", audit.display()),
            ),
        ],
    );
    let fx = FortressProcess::spawn_args_env(
        &["run", "--config", config.to_str().expect("utf-8")],
        &[
            ("JWT_SECRET_KEY", JWT_SECRET),
            ("AUDIT_HMAC_KEY", AUDIT_KEY),
        ],
    );
    let iss = ("risk-auth", "risk-engine");
    let viewer = format!(
        "Bearer {}",
        token("u-viewer", &["VIEWER"], Some("bank-a"), iss.0, iss.1)
    );
    let approver = format!(
        "Bearer {}",
        token("u-approver", &["APPROVER"], Some("bank-a"), iss.0, iss.1)
    );
    let empty = format!(
        "Bearer {}",
        token("u-empty", &["ADMIN"], Some(""), iss.0, iss.1)
    );

    // A view, allowed: the app gets the ingress's correlation id and fortress's identity.
    let r = raw(
        fx.addr,
        &via_ingress(
            "GET",
            "/api/tenants/bank-a/assessments/a1",
            &[("Authorization", &viewer), ("X-Request-ID", "corr-view-1")],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "upstream saw GET /api/tenants/bank-a/assessments/a1"
    );
    assert_eq!(r.header("x-request-id"), Some("corr-view-1"));
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let h = |name: &str| {
        seen[0]
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(h("x-request-id").as_deref(), Some("corr-view-1"));
    assert_eq!(h("x-auth-subject").as_deref(), Some("u-viewer"));
    assert_eq!(h("x-tenant-id").as_deref(), Some("bank-a"));

    // An approval by a VIEWER, refused before the app.
    let r = raw(
        fx.addr,
        &via_ingress(
            "POST",
            "/api/tenants/bank-a/assessments/a1/approve",
            &[
                ("Authorization", &viewer),
                ("X-Request-ID", "corr-approve-1"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "missing_permission");
    assert_eq!(r.json()["request_id"], "corr-approve-1");

    // An approval by an APPROVER, allowed.
    let r = raw(
        fx.addr,
        &via_ingress(
            "POST",
            "/api/tenants/bank-a/assessments/a1/approve",
            &[
                ("Authorization", &approver),
                ("X-Request-ID", "corr-approve-2"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // An empty tenant claim is denied.
    let r = raw(
        fx.addr,
        &via_ingress(
            "GET",
            "/api/tenants/bank-a/assessments/a1",
            &[("Authorization", &empty), ("X-Request-ID", "corr-empty-1")],
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "tenant_mismatch");
    assert_eq!(
        upstream.hits(),
        2,
        "only the two allowed requests reach the app"
    );

    // Every one of them is in the audit trail (strict: written before the response), with
    // its correlation id, decision and subject.
    let records = audit_records(&audit);
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["event"] == "request" && r["request_id"] == id)
            .unwrap_or_else(|| panic!("no record for {id}: {records:?}"))
            .clone()
    };
    let view = by_id("corr-view-1");
    assert_eq!(view["decision"], "allow");
    assert_eq!(view["route"], "assessment-view");
    assert_eq!(view["subject"], "u-viewer");
    assert_eq!(view["tenant"], "bank-a");
    assert_eq!(view["client_ip"], "198.51.100.7");
    let refused = by_id("corr-approve-1");
    assert_eq!(refused["decision"], "deny");
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["reason"], "missing_permission");
    assert_eq!(refused["route"], "assessment-approve");
    let approved = by_id("corr-approve-2");
    assert_eq!(approved["decision"], "allow");
    assert_eq!(approved["subject"], "u-approver");
    let empty = by_id("corr-empty-1");
    assert_eq!(empty["decision"], "deny");
    assert_eq!(empty["reason"], "tenant_mismatch");
    for r in [&view, &refused, &approved] {
        assert!(r["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{r}");
    }
}

#[tokio::test]
async fn easydata_cuts_an_answer_whose_sql_the_guard_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit");
    let upstream = Upstream::spawn(|req: http::Request<hyper::body::Incoming>| async move {
        let sql = if req.uri().query() == Some("q=bad") {
            "DELETE FROM customers"
        } else {
            "SELECT region, sum(amount) FROM sales GROUP BY region"
        };
        let lines = [
            r#"{"type":"thinking","trace_id":"t1"}"#.to_owned(),
            format!(r#"{{"type":"technical_view","trace_id":"t1","sql":"{sql}"}}"#),
            r#"{"type":"data","trace_id":"t1","rows":[]}"#.to_owned(),
            r#"{"type":"business_view","trace_id":"t1"}"#.to_owned(),
            r#"{"type":"end","trace_id":"t1"}"#.to_owned(),
        ];
        let mut r = http::Response::new(full(lines.join("\n") + "\n"));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        );
        r
    })
    .await;
    let config = shipped(
        "easydata",
        dir.path(),
        &[
            ("listen: 0.0.0.0:8080", "listen: 127.0.0.1:0".into()),
            ("admin: 127.0.0.1:9901", "admin: 127.0.0.1:0".into()),
            (
                "upstream: http://127.0.0.1:8000",
                format!("upstream: http://{}", upstream.addr),
            ),
            (
                "trusted_proxies: [10.0.0.0/8]",
                "trusted_proxies: [127.0.0.1/32]".into(),
            ),
            (
                "dir: /var/lib/fortress/audit",
                format!("dir: {}", audit.display()),
            ),
        ],
    );
    let fx = FortressProcess::spawn_args_env(
        &["run", "--config", config.to_str().expect("utf-8")],
        &[
            ("JWT_SECRET_KEY", JWT_SECRET),
            ("AUDIT_HMAC_KEY", AUDIT_KEY),
        ],
    );
    let analyst = format!(
        "Bearer {}",
        token(
            "u1",
            &["analyst"],
            Some("acme"),
            "easydata-auth",
            "easydata-api"
        )
    );
    let ask = |query: &'static str| {
        via_ingress(
            "POST",
            query,
            &[("Authorization", analyst.as_str()), ("X-Org-Id", "acme")],
        )
    };

    // A read-only query on allowed tables streams through whole.
    let r = raw(fx.addr, &ask("/api/ask?q=good")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let types: Vec<String> = r
        .text()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("NDJSON")["type"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        ["thinking", "technical_view", "data", "business_view", "end"]
    );

    // A DELETE in the technical view: that line and everything after it never reach the
    // client; the stream ends with fortress's error line.
    let r = raw(fx.addr, &ask("/api/chat/stream?q=bad")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(!text.contains("DELETE"), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["type"], "thinking");
    assert_eq!(lines[1]["type"], "error");
    assert_eq!(lines[1]["error"], "stream_integrity_violation");
    assert_eq!(lines[1]["reason"], "sql_not_allowed");

    // Training stays off until an admin turns the toggle on: the app is not called.
    let ml = format!(
        "Bearer {}",
        token(
            "u2",
            &["ml_engineer"],
            Some("acme"),
            "easydata-auth",
            "easydata-api"
        )
    );
    let r = raw(
        fx.addr,
        &via_ingress(
            "POST",
            "/api/prediction/train",
            &[("Authorization", ml.as_str()), ("X-Org-Id", "acme")],
        ),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["reason"], "feature_disabled");
    assert_eq!(upstream.hits(), 2);

    // The violation is audited.
    let mut records = Vec::new();
    let found = eventually(std::time::Duration::from_secs(10), || {
        records = audit_records(&audit);
        let ok = records.iter().any(|r| r["event"] == "stream_violation");
        async move { ok }
    })
    .await;
    assert!(found, "{records:?}");
    let v = records
        .iter()
        .find(|r| r["event"] == "stream_violation")
        .expect("violation");
    assert_eq!(v["reason"], "sql_not_allowed");
    assert_eq!(v["route"], "chat-stream");
    assert_eq!(v["subject"], "u1");
}

#[tokio::test]
async fn jwks_keycloak_takes_rs256_tokens_and_realm_roles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    // The realm's key set, as Keycloak serves it (a file here: the test has no Keycloak).
    let mut jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys.join("rsa.jwk.json")).expect("jwk"))
            .expect("jwk JSON");
    jwk["kid"] = "realm-key-1".into();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [jwk] }).to_string()).expect("write");
    let upstream = Upstream::echo().await;
    let config = shipped(
        "jwks-keycloak",
        dir.path(),
        &[
            ("listen: 0.0.0.0:8080", "listen: 127.0.0.1:0".into()),
            ("admin: 127.0.0.1:9901", "admin: 127.0.0.1:0".into()),
            (
                "upstream: http://127.0.0.1:8000",
                format!("upstream: http://{}", upstream.addr),
            ),
            (
                "trusted_proxies: [10.0.0.0/8]",
                "trusted_proxies: [127.0.0.1/32]".into(),
            ),
            (
                "url: https://keycloak.example.com/realms/acme/protocol/openid-connect/certs",
                format!("file: {}", jwks.display()),
            ),
            (
                "dir: /var/lib/fortress/audit",
                format!("dir: {}", dir.path().join("audit").display()),
            ),
        ],
    );
    let fx =
        FortressProcess::spawn_args_env(&["run", "--config", config.to_str().expect("utf-8")], &[]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = |roles: &[&str]| {
        serde_json::json!({
            "iss": "https://keycloak.example.com/realms/acme",
            "aud": ["reports-api", "account"],
            "sub": "3f1c0a52-0b7e-4d2f-9a41-7d7c1d0e9f10",
            "preferred_username": "alice",
            "tenant": "acme",
            "iat": now,
            "exp": now + 300,
            "realm_access": { "roles": roles },
            "resource_access": { "reports-api": { "roles": ["admin"] } },
        })
    };
    let rs256 = |roles: &[&str]| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("realm-key-1".into());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(
            &std::fs::read(keys.join("rsa.pem")).expect("rsa.pem"),
        )
        .expect("rsa key");
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, &claims(roles), &key).expect("sign")
        )
    };
    let get = |path: &'static str, auth: String| {
        let fx_addr = fx.addr;
        async move {
            raw(
                fx_addr,
                &via_ingress("GET", path, &[("Authorization", auth.as_str())]),
            )
            .await
        }
    };

    // A realm role under realm_access.roles grants the route; the app sees it.
    let analyst = rs256(&["analyst", "offline_access", "default-roles-acme"]);
    let r = get("/api/orgs/acme/reports/q1", analyst.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = upstream.requests();
    let roles = seen[0]
        .headers
        .get("x-auth-roles")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(roles.split(',').any(|r| r.trim() == "analyst"), "{roles}");
    // A client role named admin is not the admin realm role.
    let r = get("/api/admin/users", analyst).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "missing_permission");
    // Keycloak's default roles alone grant nothing.
    let r = get(
        "/api/orgs/acme/reports/q1",
        rs256(&["offline_access", "uma_authorization"]),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // An HS256 token (signed with the RSA public key as an HMAC secret, the classic
    // confusion) is refused: only RS256 is allowed.
    let public = std::fs::read(keys.join("rsa.pub.pem")).expect("rsa.pub.pem");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("realm-key-1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(&["admin"]),
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .expect("sign");
    let r = get("/api/admin/users", format!("Bearer {forged}")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        upstream.hits(),
        1,
        "only the analyst's report read reaches the app"
    );
}

/// A QuickTrust token: HS256, its tenant in `org`, and a `jti` (required: tokens are
/// revocable).
fn quicktrust_token(sub: &str, roles: &[&str], org: &str, jti: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://auth.quicktrust.example",
        "aud": "quicktrust-portal",
        "sub": sub,
        "roles": roles,
        "org": org,
        "jti": jti,
        "iat": now,
        "exp": now + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn quicktrust_revokes_a_users_tokens_through_the_admin_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = Upstream::echo().await;
    let config = shipped(
        "quicktrust",
        dir.path(),
        &[
            ("listen: 0.0.0.0:8080", "listen: 127.0.0.1:0".into()),
            ("admin: 127.0.0.1:9901", "admin: 127.0.0.1:0".into()),
            (
                "upstream: http://127.0.0.1:3000",
                format!("upstream: http://{}", upstream.addr),
            ),
            (
                "trusted_proxies: [10.0.0.0/8]",
                "trusted_proxies: [127.0.0.1/32]".into(),
            ),
            (
                "dir: /var/lib/fortress/audit",
                format!("dir: {}", dir.path().join("audit").display()),
            ),
        ],
    );
    let fx = FortressProcess::spawn_args_env(
        &["run", "--config", config.to_str().expect("utf-8")],
        &[("JWT_SECRET_KEY", JWT_SECRET)],
    );
    let customer = format!(
        "Bearer {}",
        quicktrust_token("c1", &["customer"], "acme", "t-c1-laptop")
    );
    let admin = format!(
        "Bearer {}",
        quicktrust_token("root", &["admin"], "ops", "t-root")
    );
    let read = |auth: String| {
        let addr = fx.addr;
        async move {
            raw(
                addr,
                &via_ingress(
                    "GET",
                    "/api/orgs/acme/search",
                    &[
                        ("Host", "trust.quicktrust.example"),
                        ("Authorization", auth.as_str()),
                    ],
                ),
            )
            .await
        }
    };
    // Before: the customer searches its organisation.
    let before = read(customer.clone()).await;
    assert_eq!(before.status, 200, "{}", before.text());
    assert_eq!(before.text(), "upstream saw GET /api/orgs/acme/search");

    // A customer may not revoke.
    let body = r#"{"subject":"c1","reason":"lost laptop"}"#;
    let revoke = |auth: String| {
        let admin_addr = fx.admin;
        async move {
            raw(
                admin_addr,
                format!(
                    "POST /admin/revocations HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
                     Authorization: {auth}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
        }
    };
    let r = revoke(customer.clone()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "missing_permission");
    // The admin revokes every token of c1 issued up to now.
    let r = revoke(admin).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["revocation"]["subject"], "c1");

    // After: the same token is refused at authentication, as any invalid token.
    let after = read(customer).await;
    assert_eq!(after.status, 401, "{}", after.text());
    assert_eq!(after.json()["reason"], "invalid_token");
    assert_eq!(
        upstream.hits(),
        1,
        "only the read before the revocation reaches the app"
    );
}
