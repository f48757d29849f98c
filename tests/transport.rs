//! Transport rules (HTTPS, trusted proxies, X-Forwarded-Proto, no credentials over plain HTTP),
//! identity headers (client copies stripped, `_` spellings refused, fortress's own injected),
//! header names with `_`, method overrides, and client-IP headers from untrusted peers.

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
        serde_json::json!({"error": error, "reason": reason, "request_id": rid, "trace_id": trace_id(r)})
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
         X-Auth-Subject: admin\r\nX-Auth-Roles: admin\r\nx-tenant-id: other\r\n\
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

/// A raw request on `target` with extra header lines (each ending in `\r\n`).
fn request(target: &str, tok: Option<&str>, headers: &str) -> String {
    let auth = tok.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{auth}{headers}\r\n")
}

/// The header names the upstream received, sorted.
fn names(seen: &Seen) -> Vec<String> {
    let mut names: Vec<String> = seen.headers.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    names
}

/// nginx's default (`underscores_in_headers off`): header names with `_` are dropped. An `_`
/// spelling of a header fortress reads or sets (RFC 9112 framing headers, `X-Forwarded-*`,
/// identity headers) is refused in both modes: it is an attack, not noise.
#[tokio::test]
async fn underscore_header_names_are_dropped_or_kept_and_protected_spellings_refused() {
    let tok = token("alice", &["analyst"], "acme");
    let protected = [
        "Transfer_Encoding: chunked",
        "Content_Length: 5",
        "X_Forwarded_For: 6.6.6.6",
        "X_Forwarded_Proto: https",
        "X-Forwarded_Host: evil.example",
        "x_forwarded_prefix: /admin",
        "X_Auth_Subject: admin",
        "X_AUTH_ROLES: admin",
        "x-tenant_id: other",
        "X_Real_IP: 6.6.6.6",
        "X_Request_ID: chosen",
    ];
    for keep in [false, true] {
        let up = Upstream::echo().await;
        let server = if keep {
            "require_https: false\nallow_insecure_local: true\nunderscore_headers: keep"
        } else {
            "require_https: false\nallow_insecure_local: true"
        };
        let fx = start(&up, server, "identity_headers: [X-User-Email]").await;
        for h in protected.iter().chain(&["X_User_Email: root@example"]) {
            for tok in [Some(tok.as_str()), None] {
                let target = if tok.is_some() { "/api/x" } else { "/open" };
                let r = raw(
                    fx.addr(),
                    request(target, tok, &format!("{h}\r\n")).as_bytes(),
                )
                .await;
                assert_refused(&r, 400, "bad_request", "protected_header_spelling");
            }
        }
        assert_eq!(up.hits(), 0, "keep={keep}");
        let r = raw(
            fx.addr(),
            request(
                "/api/x",
                Some(&tok),
                "X_Custom: 1\r\nSome_Header: 2\r\nx_: 3\r\n_x: 4\r\nX-Normal: 5\r\n",
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = &up.requests()[0];
        let underscored: Vec<String> = names(seen)
            .into_iter()
            .filter(|n| n.contains('_'))
            .collect();
        if keep {
            assert_eq!(underscored, vec!["_x", "some_header", "x_", "x_custom"]);
            assert_eq!(seen.headers["x_custom"], "1");
        } else {
            assert!(underscored.is_empty(), "{underscored:?}");
        }
        assert_eq!(seen.headers["x-normal"], "5");
        assert_eq!(seen.headers["x-auth-subject"], "alice");
    }
}

/// Method and URL override headers never reach the app (any spelling, any peer); a `_method`
/// query parameter in any spelling a framework reads (Rails, Laravel, Symfony, PHP arrays,
/// `;` separators) is refused on every route.
#[tokio::test]
async fn method_overrides_are_stripped_or_refused() {
    let tok = token("alice", &["analyst"], "acme");
    let up = Upstream::echo().await;
    let fx = start(
        &up,
        "require_https: false\nallow_insecure_local: true\ntrusted_proxies: [127.0.0.0/8]\n\
         underscore_headers: keep",
        "",
    )
    .await;
    for q in [
        "_method=DELETE",
        "_METHOD=DELETE",
        "_Method=put",
        "a=1&_method=PATCH",
        "%5Fmethod=DELETE",
        "%5fmethod=DELETE",
        "_m%65thod=DELETE",
        "_method[]=DELETE",
        "x=1;_method=DELETE",
        "_method",
    ] {
        for (path, tok) in [("/open", None), ("/api/x", Some(tok.as_str()))] {
            let target = format!("{path}?{q}");
            let r = raw(fx.addr(), request(&target, tok, "").as_bytes()).await;
            assert_refused(&r, 400, "bad_request", "method_override");
        }
    }
    assert_eq!(up.hits(), 0);
    let overrides = "X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: PUT\r\n\
         X-Method-Override: PATCH\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n\
         X-Original-Method: DELETE\r\nX_HTTP_Method_Override: DELETE\r\nx-original_url: /a\r\n";
    let r = raw(
        fx.addr(),
        request("/api/x?method=x&a_method=y", Some(&tok), overrides).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/api/x?method=x&a_method=y");
    for n in names(seen) {
        let folded = n.replace('_', "-");
        assert!(
            !folded.contains("method")
                && !folded.contains("original")
                && !folded.contains("rewrite"),
            "{n} reached the app"
        );
    }
}

const CLIENT_IP_HEADERS: &str = "X-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\n\
    X-Client-IP: 6.6.6.6\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Scheme: https\r\n\
    X-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /admin\r\nCF-Connecting-IP: 6.6.6.6\r\n\
    Forwarded: for=6.6.6.6;proto=https\r\nX-Forwarded-For: 6.6.6.6\r\n";

/// Client-IP and scheme headers an app may trust (nginx `real_ip`, Envoy, Cloudflare, RFC
/// 7239 `Forwarded`) are removed when the peer is not a trusted proxy, and `X-Real-IP` is
/// always fortress's: the TCP peer, or behind trusted proxies the right-most untrusted
/// `X-Forwarded-For` address.
#[tokio::test]
async fn client_ip_headers_from_untrusted_peers_are_replaced() {
    let up = Upstream::echo().await;
    let fx = start(&up, "require_https: false", "").await;
    let r = raw(
        fx.addr(),
        request("/open", None, CLIENT_IP_HEADERS).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0];
    let client_side: Vec<String> = names(seen)
        .into_iter()
        .filter(|n| n.contains("ip") || n.starts_with("x-forwarded") || n == "forwarded")
        .collect();
    assert_eq!(
        client_side,
        vec![
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-real-ip"
        ]
    );
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");

    // From a trusted proxy they are kept; X-Real-IP is the right-most untrusted address.
    let up = Upstream::echo().await;
    let fx = start(
        &up,
        "require_https: false\ntrusted_proxies: [127.0.0.0/8, 10.0.0.0/8]",
        "",
    )
    .await;
    for (xff, real) in [
        (
            "X-Forwarded-For: 6.6.6.6, 203.0.113.9, 10.0.0.5\r\n",
            "203.0.113.9",
        ),
        (
            "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.9\r\n",
            "203.0.113.9",
        ),
        ("X-Forwarded-For: 10.0.0.9, 10.0.0.5\r\n", "10.0.0.9"),
        (
            "X-Forwarded-For: 6.6.6.6, unknown, 10.0.0.5\r\n",
            "10.0.0.5",
        ),
        ("", "127.0.0.1"),
    ] {
        let headers = format!("True-Client-IP: 198.51.100.7\r\nX-Real-IP: 6.6.6.6\r\n{xff}");
        let r = raw(fx.addr(), request("/open", None, &headers).as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = up.requests().pop().expect("seen");
        assert_eq!(seen.headers["x-real-ip"], real, "{xff}");
        assert_eq!(seen.headers.get_all("x-real-ip").iter().count(), 1);
        assert_eq!(seen.headers["true-client-ip"], "198.51.100.7");
    }

    // The list is configurable; `Forwarded` from untrusted peers always goes.
    let up = Upstream::echo().await;
    let fx = start(
        &up,
        "require_https: false\nstrip_client_headers: [X-Custom-IP]",
        "",
    )
    .await;
    let r = raw(
        fx.addr(),
        request(
            "/open",
            None,
            "X-Custom-IP: 6.6.6.6\r\nTrue-Client-IP: 1.2.3.4\r\nForwarded: for=6.6.6.6\r\n",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0];
    assert!(seen.headers.get("x-custom-ip").is_none());
    assert!(seen.headers.get("forwarded").is_none());
    assert_eq!(seen.headers["true-client-ip"], "1.2.3.4");
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
}

#[test]
fn header_rule_settings_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let yaml = policy(
        up,
        dir.path(),
        "underscore_headers: sometimes\nstrip_client_headers: [\"bad name\"]",
        "",
    );
    let path = dir.path().join("f.yaml");
    std::fs::write(&path, yaml).expect("write");
    let err = fortress::config::load_file(&path).expect_err("refused");
    assert!(err.to_string().contains("sometimes"), "{err}");
    let yaml = policy(up, dir.path(), "strip_client_headers: [\"bad name\"]", "")
        + "  - name: t\n    match: { path: /t }\n    tenant: { header: X_Org }\n";
    std::fs::write(&path, yaml).expect("write");
    let err = fortress::config::load_file(&path)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("`bad name` is not a header name"), "{err}");
    assert!(err.contains("tenant header `X_Org` contains `_`"), "{err}");
}

#[tokio::test]
async fn a_wsgi_app_sees_no_override_or_client_ip_header_in_any_spelling() {
    // The environ a CGI/WSGI app builds (`HTTP_` + upper case, `-` → `_`), for a request that
    // carries every override and client-IP header in several spellings, with `_` header
    // names kept: nothing of it reaches the app, and `X-Real-IP` is fortress's.
    let tok = token("alice", &["analyst"], "acme");
    let up = Upstream::wsgi().await;
    for keep in ["keep", "drop"] {
        let fx = start(
            &up,
            &format!(
                "require_https: false\nallow_insecure_local: true\nunderscore_headers: {keep}"
            ),
            "",
        )
        .await;
        let sent = "X-HTTP-Method-Override: DELETE\r\nx-http-method: PUT\r\n\
             X-METHOD-OVERRIDE: PATCH\r\nX-Original-URL: /admin\r\nX-Rewrite-Url: /admin\r\n\
             X-Original-Method: DELETE\r\nX_HTTP_Method_Override: DELETE\r\nX_Original_URL: /a\r\n\
             X-Real-IP: 10.9.9.9\r\nTrue-Client-IP: 10.9.9.9\r\nX-Client-IP: 10.9.9.9\r\n\
             CF-Connecting-IP: 10.9.9.9\r\nX-Forwarded-Prefix: /admin\r\nForwarded: for=10.9.9.9\r\n\
             SCRIPT_NAME: /api\r\nPath-Info: /admin\r\nREMOTE_USER: root\r\nRemote-Addr: 10.9.9.9\r\n\
             X-Original-URI: /admin\r\nX-Forwarded-Uri: /admin\r\nX-Forwarded-Method: DELETE\r\n\
             X-Forwarded-Protocol: ssl\r\nClient-IP: 10.9.9.9\r\nX-Cluster-Client-IP: 10.9.9.9\r\n\
             X-Forwarded-Anything: x\r\nFront-End-Https: on\r\nX-Original-Host: evil.test\r\n";
        let r = raw(fx.addr(), request("/api/x", Some(&tok), sent).as_bytes()).await;
        assert_eq!(r.status, 200, "{keep}: {}", r.text());
        let env: std::collections::BTreeMap<String, Vec<String>> =
            serde_json::from_str(&r.text()).expect("environ");
        for key in [
            "HTTP_X_HTTP_METHOD_OVERRIDE",
            "HTTP_X_HTTP_METHOD",
            "HTTP_X_METHOD_OVERRIDE",
            "HTTP_X_ORIGINAL_URL",
            "HTTP_X_REWRITE_URL",
            "HTTP_X_ORIGINAL_METHOD",
            "HTTP_TRUE_CLIENT_IP",
            "HTTP_X_CLIENT_IP",
            "HTTP_CF_CONNECTING_IP",
            "HTTP_X_FORWARDED_PREFIX",
            "HTTP_FORWARDED",
            "HTTP_SCRIPT_NAME",
            "HTTP_PATH_INFO",
            "HTTP_REMOTE_USER",
            "HTTP_REMOTE_ADDR",
            "HTTP_X_ORIGINAL_URI",
            "HTTP_X_FORWARDED_URI",
            "HTTP_X_FORWARDED_METHOD",
            "HTTP_X_FORWARDED_PROTOCOL",
            "HTTP_CLIENT_IP",
            "HTTP_X_CLUSTER_CLIENT_IP",
            "HTTP_X_FORWARDED_ANYTHING",
            "HTTP_FRONT_END_HTTPS",
            "HTTP_X_ORIGINAL_HOST",
        ] {
            assert!(
                !env.contains_key(key),
                "{keep}: the app sees {key}: {env:?}"
            );
        }
        assert_eq!(
            env.get("HTTP_X_REAL_IP"),
            Some(&vec!["127.0.0.1".to_owned()]),
            "{keep}"
        );
    }
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_host_obeys_the_host_rules() {
    let up = Upstream::echo().await;
    let fx = start(
        &up,
        "require_https: false\ntrusted_proxies: [127.0.0.0/8]\nhosts: [app.example.com]",
        "",
    )
    .await;
    let send = |xfh: &'static str| {
        let addr = fx.addr();
        async move {
            raw(
                addr,
                format!(
                    "GET /open HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n{xfh}\r\n"
                )
                .as_bytes(),
            )
            .await
        }
    };
    // Allowed, and kept for the app.
    let r = send("X-Forwarded-Host: APP.example.com:443\r\n").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        up.requests().pop().expect("seen").headers["x-forwarded-host"],
        "APP.example.com:443"
    );
    let before = up.hits();
    // Not a host this listener serves: 421, like `Host`.
    let r = send("X-Forwarded-Host: evil.com\r\n").await;
    assert_eq!(r.status, 421, "{}", r.text());
    // Malformed, a list, or repeated: 400.
    for bad in [
        "X-Forwarded-Host: evil.com/x?y\r\n",
        "X-Forwarded-Host: a@evil.com:1\r\n",
        "X-Forwarded-Host: app.example.com, evil.com\r\n",
        "X-Forwarded-Host: app.example.com\r\nX-Forwarded-Host: app.example.com\r\n",
    ] {
        let r = send(bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        let rid = r.header("x-request-id").expect("rid").to_owned();
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "bad_request", "reason": "invalid_forwarded_host", "request_id": rid, "trace_id": trace_id(&r)}),
            "{bad}"
        );
    }
    assert_eq!(up.hits(), before, "no refused request reached the app");
}
