//! Transport rules (HTTPS, trusted proxies, X-Forwarded-Proto, no credentials over plain HTTP)
//! and identity headers (client copies stripped in every spelling, fortress's own injected).

mod support;

use std::net::SocketAddr;

use support::*;

const SECRET: &str = "transport-test-secret-0123456789abcdef";

/// A config with authentication (HS256, secret in a file) and three routes.
fn policy(up: SocketAddr, dir: &std::path::Path, server_extra: &str, auth_extra: &str) -> String {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let extra: String = server_extra.lines().map(|l| format!("  {l}\n")).collect();
    let auth_extra: String = auth_extra.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "server:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  upstream: http://{up}\n  \
         environment: local\n{extra}\
         authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    \
         secret: {{ file: {} }}\n{auth_extra}\
         routes:\n  - name: api\n    match: {{ path: \"/api/**\" }}\n  - name: open\n    \
         match: {{ path: /open }}\n    public: true\n",
        secret.display()
    )
}

fn token(sub: &str, roles: &[&str], tenant: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": sub, "roles": roles, "tenant": tenant,
        "iss": "iss", "aud": "aud", "iat": now, "exp": now + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// A running fortress and the directory holding its secret (kept alive with it).
struct Fx {
    fx: TestFortress,
    _secret_dir: tempfile::TempDir,
}

impl Fx {
    fn addr(&self) -> SocketAddr {
        self.fx.addr()
    }
    fn admin(&self) -> SocketAddr {
        self.fx.admin()
    }
}

async fn start(up: &Upstream, server_extra: &str, auth_extra: &str) -> Fx {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = policy(up.addr, dir.path(), server_extra, auth_extra);
    Fx {
        fx: TestFortress::start(&yaml).await,
        _secret_dir: dir,
    }
}

fn assert_refused(r: &RawResponse, status: u16, error: &str, reason: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let rid = r.header("x-request-id").expect("request id").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error": error, "reason": reason, "request_id": rid})
    );
}

#[tokio::test]
async fn trusted_proxy_vouching_https_passes() {
    let up = Upstream::echo().await;
    let fx = start(
        &up,
        "require_https: true\ntrusted_proxies: [127.0.0.0/8]",
        "",
    )
    .await;
    let bearer = format!("Bearer {}", token("alice", &["analyst"], "acme"));
    let r = get_with(
        fx.addr(),
        "/api/x",
        &[("X-Forwarded-Proto", "https"), ("Authorization", &bearer)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0].headers;
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-auth-subject"], "alice");
    // A public route needs no token, but HTTPS is still required.
    let r = get_with(fx.addr(), "/open", &[("X-Forwarded-Proto", "HTTPS")]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn forwarded_proto_from_untrusted_peer_is_refused() {
    let up = Upstream::echo().await;
    let fx = start(
        &up,
        "require_https: true\ntrusted_proxies: [10.0.0.0/8]",
        "",
    )
    .await;
    let r = get_with(fx.addr(), "/open", &[("X-Forwarded-Proto", "https")]).await;
    assert_refused(&r, 403, "forbidden", "untrusted_forwarded_proto");
    let r = get(fx.addr(), "/open").await;
    assert_refused(&r, 403, "forbidden", "https_required");
    assert_eq!(up.hits(), 0);
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_transport_refusals_total{reason="untrusted_forwarded_proto"}"#
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn forwarded_proto_from_trusted_peer_must_be_one_https() {
    let up = Upstream::echo().await;
    let fx = start(
        &up,
        "require_https: true\ntrusted_proxies: [127.0.0.1/32]",
        "",
    )
    .await;
    let missing = get(fx.addr(), "/open").await;
    assert_refused(&missing, 403, "forbidden", "https_required");
    let http = get_with(fx.addr(), "/open", &[("X-Forwarded-Proto", "http")]).await;
    assert_refused(&http, 403, "forbidden", "https_required");
    let dup = get_with(
        fx.addr(),
        "/open",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Proto", "https"),
        ],
    )
    .await;
    assert_refused(&dup, 400, "bad_request", "malformed_forwarded_proto");
    let list = get_with(fx.addr(), "/open", &[("X-Forwarded-Proto", "https, http")]).await;
    assert_refused(&list, 400, "bad_request", "malformed_forwarded_proto");
    assert_eq!(up.hits(), 0);
    assert_eq!(
        metric(
            fx.admin(),
            r#"fortress_transport_refusals_total{reason="https_required"}"#
        )
        .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn bearer_over_plain_untrusted_http_is_always_refused() {
    let up = Upstream::echo().await;
    let fx = start(&up, "require_https: false", "").await;
    let bearer = format!("Bearer {}", token("alice", &["analyst"], "acme"));
    let r = get_with(fx.addr(), "/api/x", &[("Authorization", &bearer)]).await;
    assert_refused(&r, 403, "forbidden", "credentials_over_http");
    // Even on a public route, and even with a spoofed X-Forwarded-Proto.
    let r = get_with(
        fx.addr(),
        "/open",
        &[("Authorization", &bearer), ("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_refused(&r, 403, "forbidden", "credentials_over_http");
    assert_eq!(up.hits(), 0);
    // Without credentials a public route is served over plain HTTP when HTTPS is not required.
    let r = get(fx.addr(), "/open").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn local_mode_may_allow_tokens_over_plain_http_explicitly() {
    let up = Upstream::echo().await;
    let fx = start(&up, "require_https: false\nallow_insecure_local: true", "").await;
    let bearer = format!("Bearer {}", token("alice", &["analyst"], "acme"));
    let r = get_with(fx.addr(), "/api/x", &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn allow_insecure_local_is_refused_outside_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let yaml = policy(up, dir.path(), "allow_insecure_local: true", "")
        .replace("environment: local", "environment: production");
    let path = dir.path().join("f.yaml");
    std::fs::write(&path, yaml).expect("write");
    let err = fortress::config::load_file(&path).expect_err("refused");
    assert!(
        err.to_string()
            .contains("`allow_insecure_local` is only allowed with `environment: local`"),
        "{err}"
    );
}

#[tokio::test]
async fn upstream_never_sees_a_client_chosen_identity() {
    let up = Upstream::echo().await;
    let fx = start(&up, "require_https: false\nallow_insecure_local: true", "").await;
    let tok = token("alice", &["analyst", "viewer"], "acme");
    let req = format!(
        "GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer {tok}\r\n\
         X-Auth-Subject: admin\r\nX_Auth_Roles: admin\r\nx-tenant_id: other\r\n\
         X-AUTH-CLAIMS: {{}}\r\n\r\n"
    );
    let r = raw(fx.addr(), req.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0].headers;
    assert_eq!(seen["x-auth-subject"], "alice");
    assert_eq!(seen["x-auth-roles"], "analyst,viewer");
    assert_eq!(seen["x-tenant-id"], "acme");
    let identity_like: Vec<&str> = seen
        .keys()
        .map(|k| k.as_str())
        .filter(|k| {
            k.replace('_', "-").starts_with("x-auth") || k.replace('_', "-") == "x-tenant-id"
        })
        .collect();
    assert_eq!(
        identity_like,
        vec!["x-auth-subject", "x-auth-roles", "x-tenant-id"],
        "only fortress's own identity headers reach the upstream"
    );
    for v in seen.get_all("x-auth-subject") {
        assert_eq!(v, "alice");
    }

    // A public route: client identity headers are stripped and nothing is injected.
    let r = raw(
        fx.addr(),
        b"GET /open HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Auth-Subject: admin\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(up.requests()[1].headers.get("x-auth-subject").is_none());
}

#[tokio::test]
async fn connection_header_naming_protected_headers_is_refused() {
    let up = Upstream::echo().await;
    let fx = start(&up, "require_https: false\nallow_insecure_local: true", "").await;
    let tok = token("alice", &["analyst"], "acme");
    for connection in [
        "X-Auth-Subject",
        "close, authorization",
        "x_auth_roles",
        "X-Tenant-Id",
    ] {
        let req = format!(
            "GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: {connection}\r\n\
             Authorization: Bearer {tok}\r\nX-Auth-Subject: admin\r\n\r\n"
        );
        let r = raw_one(fx.addr(), req.as_bytes()).await;
        assert_refused(&r, 400, "bad_request", "connection_names_protected_header");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn authorization_is_forwarded_unless_configured_otherwise() {
    let up = Upstream::echo().await;
    let fx = start(&up, "require_https: false\nallow_insecure_local: true", "").await;
    let bearer = format!("Bearer {}", token("alice", &["a"], "t"));
    let r = get_with(fx.addr(), "/api/x", &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.requests()[0].headers["authorization"], bearer.as_str());

    let up = Upstream::echo().await;
    let fx = start(
        &up,
        "require_https: false\nallow_insecure_local: true",
        "forward_token: false",
    )
    .await;
    let r = get_with(fx.addr(), "/api/x", &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 200);
    assert!(up.requests()[0].headers.get("authorization").is_none());
    assert_eq!(up.requests()[0].headers["x-auth-subject"], "alice");
}
