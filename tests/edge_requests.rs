//! Edge hardening through a real fortress and a real upstream: `;` path parameters (refused,
//! or stripped before matching *and* forwarding), method case and unknown methods, HEAD
//! routed like GET, `Host` / `:authority` rules and the `server.hosts` allowlist (421), and
//! request targets that are not clean UTF-8 or hold characters RFC 3986 does not allow.
//!
//! Items 2 and 3 are also checked against an upstream that reads requests the way a WSGI or
//! Tomcat/Spring app does (method upper-cased, `;…` stripped from each segment, then
//! percent-decoded): every request it receives, it reads exactly as fortress forwarded and
//! judged it, and it never sees an admin path that fortress did not judge by the admin route.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, Version};
use support::*;

const SECRET: &str = "edge-test-secret-0123456789abcdef-xyz";

/// `/api/admin` (GET) and `/api/admin/**` need `admin:*`; everything else under `/api` is
/// public for every method.
const POLICY: &str = "
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { file: SECRET_FILE }
roles:
  admin: [\"admin:*\"]
  viewer: [\"reports:read\"]
routes:
  - name: api
    match: { path: \"/api/**\" }
    public: true
  - name: admin
    match: { methods: [GET], path: /api/admin }
    require: [\"admin:*\"]
  - name: admin-tree
    match: { path: \"/api/admin/**\" }
    require: [\"admin:*\"]
  - name: reports
    match: { methods: [GET], path: /reports }
    require: [\"reports:read\"]
";

struct Fx {
    fx: TestFortress,
    _dir: tempfile::TempDir,
}

async fn start(up: SocketAddr, top: &str) -> Fx {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let policy = POLICY.replace("SECRET_FILE", &secret.display().to_string());
    let yaml = config(up, "allow_insecure_local: true", &format!("{top}{policy}"));
    Fx {
        fx: TestFortress::start(&yaml).await,
        _dir: dir,
    }
}

fn token(roles: &[&str]) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "u1", "roles": roles, "iss": "iss", "aud": "aud", "exp": now + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// `METHOD target` with `Host: app.test`, an optional bearer token, `Connection: close`.
async fn send(addr: SocketAddr, method: &str, target: &str, tok: Option<&str>) -> RawResponse {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    if let Some(t) = tok {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes()).await
}

fn assert_refused(r: &RawResponse, status: u16, error: &str, reason: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let rid = r.header("x-request-id").expect("rid").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error": error, "reason": reason, "request_id": rid, "trace_id": trace_id(r)}),
        "{what}"
    );
}

/// How a WSGI / Tomcat / Spring app reads a request line: the method upper-cased, `;…`
/// (raw or `%3B`) removed from each segment, then each segment percent-decoded.
fn app_view(method: &str, target: &str) -> (String, String) {
    let path = target.split('?').next().unwrap_or_default();
    let segments: Vec<String> = path
        .split('/')
        .map(|seg| {
            let lower = seg.to_ascii_lowercase();
            let cut = [lower.find(';'), lower.find("%3b")]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(seg.len());
            percent_decode(&seg[..cut])
        })
        .collect();
    (method.to_ascii_uppercase(), segments.join("/"))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The app's own idea of the route: admin paths are `/api/admin` and below.
fn app_is_admin(path: &str) -> bool {
    path == "/api/admin" || path.starts_with("/api/admin/")
}

/// An upstream that reads requests like [`app_view`] and answers `app saw METHOD PATH`.
async fn app_upstream() -> Upstream {
    Upstream::spawn(|req: Request<hyper::body::Incoming>| async move {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let (m, p) = app_view(req.method().as_str(), &target);
        Response::new(full(format!("app saw {m} {p}")))
    })
    .await
}

/// The agreement: every request the app received, it reads exactly as fortress forwarded it
/// (so as fortress matched it), and the admin paths it received all came with the admin token.
fn assert_app_agrees(up: &Upstream, admin_token: &str, admin_hits: usize) {
    let mut admin = 0;
    for seen in up.requests() {
        let (m, p) = app_view(&seen.method, &seen.target);
        let sent_path = seen.target.split('?').next().unwrap_or_default();
        assert_eq!(m, seen.method, "the app reads another method: {seen:?}");
        assert_eq!(p, sent_path, "the app reads another path: {seen:?}");
        if app_is_admin(&p) {
            admin += 1;
            let auth = seen
                .headers
                .get("authorization")
                .expect("admin path with a token");
            assert_eq!(auth, format!("Bearer {admin_token}").as_str(), "{seen:?}");
        }
    }
    assert_eq!(admin, admin_hits, "admin paths the app served");
}

#[tokio::test]
async fn path_parameters_are_refused_by_default_and_never_reach_the_app() {
    let up = app_upstream().await;
    let fx = start(up.addr, "").await;
    let admin = token(&["admin"]);
    let cases = [
        ("/api/admin;x=1/users", "path_parameter"),
        ("/api/admin;/users", "path_parameter"),
        ("/api/admin;", "path_parameter"),
        ("/api/admin/users;x", "path_parameter"),
        ("/api/public;jsessionid=0123ABC", "path_parameter"),
        ("/api/public;jsessionid=1/x", "path_parameter"),
        ("/api/admin%3Bx=1/users", "path_parameter"),
        ("/api/admin%3b/users", "path_parameter"),
        ("/api/a;x;y=2/b", "path_parameter"),
        ("/api/;x/admin", "path_parameter"),
        ("/api/public;a/b;c", "path_parameter"),
        ("/api/x/..;/admin", "dot_semicolon"),
        ("/api/..;x/admin", "dot_semicolon"),
        ("/api/x/.;/admin", "dot_semicolon"),
        ("/api/x/%2e%2e;/admin", "dot_semicolon"),
    ];
    for (target, reason) in cases {
        for tok in [None, Some(admin.as_str())] {
            let r = send(fx.fx.addr(), "GET", target, tok).await;
            assert_refused(&r, 400, "bad_request", reason, target);
        }
    }
    assert_eq!(up.hits(), 0);
    // Without `;`, the same paths are judged and served as usual.
    let r = send(fx.fx.addr(), "GET", "/api/admin/users", None).await;
    assert_refused(&r, 401, "unauthorized", "missing_token", "no token");
    let r = send(fx.fx.addr(), "GET", "/api/admin/users", Some(&admin)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "app saw GET /api/admin/users");
    assert_app_agrees(&up, &admin, 1);
}

#[tokio::test]
async fn stripped_path_parameters_are_matched_and_forwarded_in_the_same_form() {
    let up = app_upstream().await;
    let fx = start(up.addr, "paths: { matrix_parameters: strip }\n").await;
    let admin = token(&["admin"]);
    let viewer = token(&["viewer"]);
    // Admin paths in disguise: judged by the admin route, never by `/api/**`.
    for target in [
        "/api/admin;x=1/users",
        "/api/admin;/users",
        "/api/admin%3Bx=1/users",
        "/api/admin%3b/users",
        "/api/admin;jsessionid=ABC/users;y",
        "/api/;x/admin/users",
        "/api/admin;a;b=c/users",
    ] {
        let r = send(fx.fx.addr(), "GET", target, None).await;
        assert_refused(&r, 401, "unauthorized", "missing_token", target);
        let r = send(fx.fx.addr(), "GET", target, Some(&viewer)).await;
        assert_refused(&r, 403, "forbidden", "missing_permission", target);
        let r = send(fx.fx.addr(), "GET", target, Some(&admin)).await;
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.text(), "app saw GET /api/admin/users", "{target}");
    }
    // `;` at the end of the last segment: the exact GET route `/api/admin`.
    for target in ["/api/admin;", "/api/admin;x=1", "/api/admin%3B"] {
        let r = send(fx.fx.addr(), "GET", target, None).await;
        assert_refused(&r, 401, "unauthorized", "missing_token", target);
    }
    // Public paths are forwarded stripped, query untouched.
    let cases = [
        ("/api/public;jsessionid=0123ABC", "/api/public"),
        ("/api/public;jsessionid=1/x", "/api/public/x"),
        ("/api/a;/b;c=1;d/", "/api/a/b/"),
        ("/api/x;y?q=;z", "/api/x?q=;z"),
    ];
    for (sent, forwarded) in cases {
        let r = send(fx.fx.addr(), "GET", sent, None).await;
        assert_eq!(r.status, 200, "{sent}");
        let path = forwarded.split('?').next().unwrap_or_default();
        assert_eq!(r.text(), format!("app saw GET {path}"), "{sent}");
    }
    // `..;` is never resolved, in this mode either.
    for target in [
        "/api/x/..;/admin",
        "/api/..;x/admin",
        "/api/x/%2e%2e%3b/admin",
    ] {
        let r = send(fx.fx.addr(), "GET", target, Some(&admin)).await;
        assert_refused(&r, 400, "bad_request", "dot_semicolon", target);
    }
    let targets: Vec<String> = up.requests().into_iter().map(|s| s.target).collect();
    let mut expected = vec!["/api/admin/users"; 7];
    expected.extend(cases.iter().map(|c| c.1));
    assert_eq!(targets, expected);
    assert_app_agrees(&up, &admin, 7);
}

#[tokio::test]
async fn methods_must_be_upper_case_and_known_and_head_follows_get() {
    let up = app_upstream().await;
    let fx = start(up.addr, "").await;
    let admin = token(&["admin"]);
    // Lower- or mixed-case: the app would read GET/HEAD/DELETE and serve the admin route.
    for method in [
        "get", "Get", "gET", "head", "Head", "post", "dElEtE", "options",
    ] {
        for target in ["/api/admin", "/api/public"] {
            let r = send(fx.fx.addr(), method, target, Some(&admin)).await;
            assert_refused(&r, 400, "bad_request", "method_not_uppercase", method);
        }
    }
    // Unknown methods: 405 with what the path accepts, whatever the routes' `methods`.
    for method in [
        "PROPFIND", "MKCOL", "FOO", "GETS", "M-SEARCH", "PURGE", "QUERY",
    ] {
        let r = send(fx.fx.addr(), method, "/api/admin", Some(&admin)).await;
        assert_refused(&r, 405, "method_not_allowed", "method_not_allowed", method);
        assert_eq!(
            r.header("allow"),
            Some("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"),
            "{method}"
        );
        let r = send(fx.fx.addr(), method, "/reports", None).await;
        assert_refused(&r, 405, "method_not_allowed", "method_not_allowed", method);
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
    assert_eq!(up.hits(), 0, "no odd method reached the app");

    // HEAD follows the GET route of the same path, not the public `/api/**`.
    let r = send(fx.fx.addr(), "HEAD", "/api/admin", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="fortress""#)
    );
    let r = send(
        fx.fx.addr(),
        "HEAD",
        "/api/admin",
        Some(&token(&["viewer"])),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(up.hits(), 0);
    let r = send(fx.fx.addr(), "HEAD", "/api/admin", Some(&admin)).await;
    assert_eq!(r.status, 200);
    let r = send(fx.fx.addr(), "HEAD", "/reports", None).await;
    assert_eq!(
        r.status, 401,
        "GET-only route: HEAD gets its checks, not 405"
    );
    let r = send(fx.fx.addr(), "HEAD", "/api/other", None).await;
    assert_eq!(r.status, 200);
    // Other methods do not follow GET.
    let r = send(fx.fx.addr(), "POST", "/reports", None).await;
    assert_refused(&r, 405, "method_not_allowed", "method_not_allowed", "POST");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let seen: Vec<(String, String)> = up
        .requests()
        .into_iter()
        .map(|s| (s.method, s.target))
        .collect();
    assert_eq!(
        seen,
        [
            ("HEAD".to_string(), "/api/admin".to_string()),
            ("HEAD".to_string(), "/api/other".to_string())
        ]
    );
    assert_app_agrees(&up, &admin, 1);
}

#[tokio::test]
async fn unknown_methods_are_refused_even_with_default_allow() {
    let up = Upstream::echo().await;
    let routes = "default: allow\nroutes:\n  - name: known\n    match: { methods: [GET], path: /known }\n    public: true\n";
    let fx = TestFortress::start(&config(up.addr, "", routes)).await;
    let r = send(fx.addr(), "FOO", "/elsewhere", None).await;
    assert_refused(&r, 405, "method_not_allowed", "method_not_allowed", "FOO");
    assert_eq!(
        r.header("allow"),
        Some("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE")
    );
    let r = send(fx.addr(), "FOO", "/known", None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = send(fx.addr(), "delete", "/elsewhere", None).await;
    assert_refused(&r, 400, "bad_request", "method_not_uppercase", "delete");
    assert_eq!(up.hits(), 0);
    let r = send(fx.addr(), "DELETE", "/elsewhere", None).await;
    assert_eq!(r.status, 200, "known methods still follow `default: allow`");
    assert_eq!(r.text(), "upstream saw DELETE /elsewhere");
}

/// `GET /x` with the given raw header block (each line ending in CRLF) and version.
async fn with_head(addr: SocketAddr, version: &str, head: &str) -> RawResponse {
    let req = format!("GET /x {version}\r\n{head}Connection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

#[tokio::test]
async fn host_must_be_one_well_formed_host() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let a = fx.addr();
    let cases: &[(&str, &str, &str)] = &[
        ("HTTP/1.1", "", "missing_host"),
        (
            "HTTP/1.1",
            "Host: a.test\r\nHost: a.test\r\n",
            "duplicate_host",
        ),
        (
            "HTTP/1.1",
            "Host: a.test\r\nHost: evil.test\r\n",
            "duplicate_host",
        ),
        (
            "HTTP/1.1",
            "Host: a.test\r\nhost: evil.test\r\n",
            "duplicate_host",
        ),
        ("HTTP/1.1", "Host: a.test:65536\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: a.test:123456\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: a.test:\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: a.test:8o\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: user@a.test\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: user:pw@a.test\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: a.test/admin\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: a.test?x\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: a test\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: a.test, evil.test\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: \r\n", "invalid_host"),
        ("HTTP/1.1", "Host: [::1\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: [fe80::1%25eth0]\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: ::1\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: a%2etest\r\n", "invalid_host"),
        ("HTTP/1.1", "Host: http://a.test\r\n", "invalid_host"),
        (
            "HTTP/1.0",
            "Host: a.test\r\nHost: b.test\r\n",
            "duplicate_host",
        ),
    ];
    for (version, head, reason) in cases {
        let r = with_head(a, version, head).await;
        assert_refused(
            &r,
            400,
            "bad_request",
            reason,
            &format!("{version} {head:?}"),
        );
    }
    assert_eq!(up.hits(), 0);
    for (version, head) in [
        ("HTTP/1.1", "Host: a.test\r\n"),
        ("HTTP/1.1", "Host: A.Test:8080\r\n"),
        ("HTTP/1.1", "Host: 127.0.0.1:65535\r\n"),
        ("HTTP/1.1", "Host: [::1]:8443\r\n"),
        ("HTTP/1.1", "Host: a.test.\r\n"),
        ("HTTP/1.0", ""),
    ] {
        let r = with_head(a, version, head).await;
        assert_eq!(r.status, 200, "{version} {head:?}: {}", r.text());
    }
    assert_eq!(up.hits(), 6);
    // Malformed header lines never get as far as fortress: the parser refuses them (400).
    for head in [
        "Host : a.test\r\n",
        "Host: a.test\r\n  .evil.test\r\n",
        " Host: a.test\r\n",
    ] {
        let r = with_head(a, "HTTP/1.1", head).await;
        assert_eq!(r.status, 400, "{head:?}");
    }
    assert_eq!(up.hits(), 6);
}

#[tokio::test]
async fn hosts_outside_the_allowlist_get_421() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "hosts: [\"api.example.com\", \"*.example.com\", \"admin.test:8443\"]",
        CATCH_ALL,
    ))
    .await;
    let a = fx.addr();
    for host in [
        "example.com",
        "evil.test",
        "127.0.0.1",
        "localhost",
        "a.b.example.com",
        "api.example.com.evil.test",
        "evilexample.com",
        "admin.test",
        "admin.test:8444",
        "[::1]",
    ] {
        let r = with_head(a, "HTTP/1.1", &format!("Host: {host}\r\n")).await;
        assert_refused(&r, 421, "misdirected_request", "host_not_allowed", host);
    }
    let r = with_head(a, "HTTP/1.0", "").await;
    assert_refused(
        &r,
        421,
        "misdirected_request",
        "host_not_allowed",
        "HTTP/1.0",
    );
    assert_eq!(up.hits(), 0);
    for host in [
        "api.example.com",
        "API.EXAMPLE.COM:8443",
        "api.example.com.",
        "x.example.com",
        "admin.test:8443",
    ] {
        let r = with_head(a, "HTTP/1.1", &format!("Host: {host}\r\n")).await;
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(
            up.requests()
                .last()
                .map(|s| s.headers["host"].clone())
                .expect("seen"),
            host
        );
    }
}

/// `GET https://localhost:PORT/x` over HTTP/2, with an optional `host` header.
async fn h2_send(
    h2: &mut hyper::client::conn::http2::SendRequest<TestBody>,
    port: u16,
    host: Option<&str>,
) -> (u16, Bytes) {
    let mut req = Request::get(format!("https://localhost:{port}/x"));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let resp = h2
        .send_request(req.body(full(Bytes::new())).expect("request"))
        .await
        .expect("h2 response");
    assert_eq!(resp.version(), Version::HTTP_2);
    let status = resp.status().as_u16();
    (status, body_bytes(resp).await)
}

#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let up = Upstream::echo().await;
    let certs = TestCerts::new("edge-h2");
    let dir = tempfile::tempdir().expect("tempdir");
    certs.write(dir.path());
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        config(
            up.addr,
            "tls: { cert: server.crt, key: server.key }",
            CATCH_ALL,
        ),
    )
    .expect("write config");
    let fx = fortress::Fortress::start(&path).await.expect("starts");
    let port = fx.client_addr.port();
    let mut h2 = h2_tls(fx.client_addr, &certs.ca_pem).await;
    for host in [
        "evil.test".to_string(),
        "localhost".to_string(),
        format!("localhost:{}", port + 1),
        format!("evil.test:{port}"),
    ] {
        let (status, body) = h2_send(&mut h2, port, Some(&host)).await;
        assert_eq!(status, 400, "{host}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["reason"], "authority_mismatch", "{host}");
    }
    // Two `host` fields, even both equal to `:authority`.
    let authority = format!("localhost:{port}");
    let req = Request::get(format!("https://{authority}/x"))
        .header("host", authority.as_str())
        .header("host", authority.as_str())
        .body(full(Bytes::new()))
        .expect("request");
    let resp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = serde_json::from_slice(&body_bytes(resp).await).expect("json");
    assert_eq!(v["reason"], "duplicate_host");
    assert_eq!(up.hits(), 0);
    let (status, _) = h2_send(&mut h2, port, None).await;
    assert_eq!(status, 200);
    let (status, _) = h2_send(&mut h2, port, Some(&format!("LOCALHOST:{port}"))).await;
    assert_eq!(status, 200);
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn request_targets_must_be_clean_utf8_and_rfc3986_characters() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(up.addr, "", CATCH_ALL)).await;
    let cases: &[(&str, &str)] = &[
        // Not UTF-8 after decoding (overlong, lone continuation, surrogates, truncated).
        ("/%C0%AE%C0%AE/etc/passwd", "invalid_utf8"),
        ("/a/%C0%AF", "invalid_utf8"),
        ("/%E0%80%AF", "invalid_utf8"),
        ("/%F0%80%80%AF", "invalid_utf8"),
        ("/%C1%9C", "invalid_utf8"),
        ("/%80", "invalid_utf8"),
        ("/a%BFb", "invalid_utf8"),
        ("/%ED%A0%80", "invalid_utf8"),
        ("/%ED%B0%80", "invalid_utf8"),
        ("/%F4%90%80%80", "invalid_utf8"),
        ("/%FE%FF", "invalid_utf8"),
        ("/%C3", "invalid_utf8"),
        ("/%C3/x", "invalid_utf8"),
        ("/%E2%82%41", "invalid_utf8"),
        // Compatibility forms of `.`, `/`, `\`.
        ("/api%EF%BC%8Fadmin", "unicode_lookalike"),
        ("/%EF%BC%8E%EF%BC%8E/admin", "unicode_lookalike"),
        ("/%E2%80%A4%E2%80%A4/admin", "unicode_lookalike"),
        ("/%E2%80%A5/admin", "unicode_lookalike"),
        ("/%EF%B9%92%EF%B9%92/admin", "unicode_lookalike"),
        ("/api%E2%88%95admin", "unicode_lookalike"),
        ("/api%E2%81%84admin", "unicode_lookalike"),
        ("/api%EF%BC%BCadmin", "unicode_lookalike"),
        ("/api%ef%bc%8fadmin", "unicode_lookalike"),
    ];
    for (target, reason) in cases {
        let r = get(fx.addr(), target).await;
        assert_refused(&r, 400, "bad_request", reason, target);
    }
    // Raw characters RFC 3986 does not allow in a path. Fortress refuses those that get past
    // the HTTP parser with `disallowed_character` (`non_ascii`, `backslash` have their own
    // codes); the HTTP/1 guard refuses control bytes, DEL and spaces in the request line
    // and invalid UTF-8 (`malformed_head`); hyper's parser refuses `<`, `>` and backtick
    // itself (400, empty body). Either way: 400, and never forwarded.
    let raw_cases: &[(&[u8], Option<&str>)] = &[
        (b"/a\"b", Some("disallowed_character")),
        (b"/a<b", None),
        (b"/a>b", None),
        (b"/a\\b", Some("backslash")),
        (b"/a^b", Some("disallowed_character")),
        (b"/a`b", None),
        (b"/a{b", Some("disallowed_character")),
        (b"/a|b", Some("disallowed_character")),
        (b"/a}b", Some("disallowed_character")),
        (b"/a[b", Some("disallowed_character")),
        (b"/a]b", Some("disallowed_character")),
        (b"/a\x7fb", Some("malformed_head")),
        (b"/a b", Some("malformed_head")),
        (b"/a\x00b", Some("malformed_head")),
        (b"/a\tb", Some("malformed_head")),
        (b"/caf\xc3\xa9", Some("non_ascii")),
        (b"/a\x80b", Some("malformed_head")),
        (b"/\xef\xbc\x8fadmin", Some("non_ascii")),
    ];
    for (target, reason) in raw_cases {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
        let r = raw(fx.addr(), &req).await;
        let what = String::from_utf8_lossy(target);
        match reason {
            Some(reason) => assert_refused(&r, 400, "bad_request", reason, &what),
            None => assert_eq!((r.status, r.body.len()), (400, 0), "{what}"),
        }
    }
    assert_eq!(up.hits(), 0);
    // A fragment is not part of a request-target; the HTTP parser drops `#…` before fortress
    // sees the target, so what is judged is what is forwarded: the path without it.
    let r = get(fx.addr(), "/api/x#/../../admin").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw GET /api/x");
    assert_eq!(up.hits(), 1);
    // Valid UTF-8 and encoded reserved characters pass, unchanged.
    let r = get(
        fx.addr(),
        "/caf%C3%A9/%E2%82%AC/%F0%9F%98%80/%22%3C%3E%7B%7D",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "upstream saw GET /caf%C3%A9/%E2%82%AC/%F0%9F%98%80/%22%3C%3E%7B%7D"
    );
}

#[tokio::test]
async fn case_insensitive_paths_are_judged_and_forwarded_lower_cased() {
    // For apps that route case-insensitively (ASP.NET, IIS, Spring with case-insensitive
    // matching): `/API/ADMIN` must be judged by the admin route, and the app must receive the
    // path fortress judged.
    let up = Upstream::echo().await;
    let f = start(up.addr, "paths: { case_insensitive: true }\n").await;
    let admin = token(&["admin"]);
    let viewer = token(&["viewer"]);
    for target in [
        "/API/ADMIN",
        "/Api/Admin",
        "/api/ADMIN",
        "/API/admin/USERS",
        "/aPi/AdMiN/x",
    ] {
        let r = send(f.fx.addr(), "GET", target, Some(&viewer)).await;
        assert_refused(&r, 403, "forbidden", "missing_permission", target);
        let r = send(f.fx.addr(), "GET", target, Some(&admin)).await;
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(
            r.text(),
            format!("upstream saw GET {}", target.to_ascii_lowercase()),
            "{target}"
        );
    }
    // Escapes keep their (canonical, upper-case) hex digits; the query is left alone.
    let r = send(f.fx.addr(), "GET", "/API/Files/A%2FB?Q=X", None).await;
    assert_refused(&r, 400, "bad_request", "encoded_slash", "encoded slash");
    let r = send(f.fx.addr(), "GET", "/API/N%C3%A9e?Q=X", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "upstream saw GET /api/n%C3%A9e?Q=X");
    let before = up.hits();
    let r = send(f.fx.addr(), "GET", "/REPORTS", None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.hits(), before, "refused requests never reach the app");
}

#[tokio::test]
async fn case_insensitive_paths_need_lower_case_patterns() {
    let up = Upstream::echo().await;
    let yaml = config(
        up.addr,
        "",
        "paths: { case_insensitive: true }\nroutes:\n  - name: a\n    match: { path: /Api/x }\n    public: true\n",
    );
    let err = fortress::config::load_str(&yaml, std::path::Path::new("p.yaml"))
        .expect_err("upper-case pattern refused")
        .to_string();
    assert!(err.contains("p.yaml:11:"), "{err}");
    assert!(err.contains("`/Api/x` has upper-case letters"), "{err}");
}

#[test]
fn protected_routes_a_broader_route_would_catch_are_warned_about() {
    let yaml = |top: &str| {
        format!(
            "server:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  environment: local\n\
             {top}authentication:\n  jwt:\n    issuer: i\n    audiences: [a]\n    algorithms: [HS256]\n    \
             secret: {{ value: \"0123456789abcdef0123456789abcdef\" }}\n\
             roles:\n  admin: [\"admin:*\"]\n{POLICY_ROUTES}"
        )
    };
    let load = |top: &str| {
        fortress::config::load_str(&yaml(top), std::path::Path::new("p.yaml")).expect("valid")
    };
    let warnings = load("").warnings;
    // `/api/admin` (GET, protected): `/api/admin.json` is caught by the public `/api/**`
    // (suffix matching: served by the app); `/api/admin/` and `/api/ADMIN` by `/api/**` and
    // `/API/admin` by `default: allow` (refused by the route stage); other methods on
    // `/api/admin` by `/api/**`. `/reports` likewise, through `default: allow`.
    let expected = [
        "p.yaml:19:36: route `admin` is protected, but GET /api/admin.json is caught by route `api` (/api/**) with weaker checks, and an app",
        "p.yaml:19:36: route `admin`: GET /api/admin/, /api/ADMIN, /api/ADMIN/ are caught by route `api` (/api/**) with weaker checks; fortress refuses such spellings (400 `ambiguous_path`",
        "p.yaml:19:36: route `admin`: GET /API/admin, /API/admin/, /API/ADMIN (and 1 more) are caught by `default: allow` with weaker checks; fortress refuses",
        "p.yaml:19:36: route `admin` (/api/admin) accepts only GET, but POST, PUT, DELETE, PATCH on its paths (e.g. /api/admin) are routed to route `api` (/api/**) with weaker checks",
        "p.yaml:22:36: route `reports` is protected, but GET /reports.json is caught by `default: allow` with weaker checks, and an app",
        "p.yaml:22:36: route `reports`: GET /reports/, /REPORTS, /REPORTS/ are caught by `default: allow` with weaker checks; fortress refuses",
        "p.yaml:22:36: route `reports` (/reports) accepts only GET, but POST, PUT, DELETE, PATCH on its paths (e.g. /reports) are routed to `default: allow` with weaker checks",
    ];
    assert_eq!(warnings.len(), expected.len(), "{warnings:#?}");
    for (w, e) in warnings.iter().zip(expected) {
        assert!(w.starts_with(e), "expected {e:?}, got {w:?}");
    }
    // Case variants cannot reach another route when paths are lower-cased; the trailing
    // slash still can (and is refused), and so can other methods.
    let warnings = load("paths: { case_insensitive: true }\n").warnings;
    let expected = [
        "p.yaml:20:36: route `admin` is protected, but GET /api/admin.json is caught by route `api`",
        "p.yaml:20:36: route `admin`: GET /api/admin/ is caught by route `api` (/api/**) with weaker checks; fortress refuses",
        "p.yaml:20:36: route `admin` (/api/admin) accepts only GET, but POST, PUT, DELETE, PATCH",
        "p.yaml:23:36: route `reports` is protected, but GET /reports.json is caught by `default: allow`",
        "p.yaml:23:36: route `reports`: GET /reports/ is caught by `default: allow` with weaker checks; fortress refuses",
        "p.yaml:23:36: route `reports` (/reports) accepts only GET, but POST, PUT, DELETE, PATCH",
    ];
    assert_eq!(warnings.len(), expected.len(), "{warnings:#?}");
    for (w, e) in warnings.iter().zip(expected) {
        assert!(w.starts_with(e), "expected {e:?}, got {w:?}");
    }
    // `route_variants: ignore`: the case and slash spellings are served by the app, and the
    // warning says so.
    let warnings = load("paths: { route_variants: ignore }\n").warnings;
    assert_eq!(warnings.len(), 5, "{warnings:#?}");
    assert!(warnings[0].starts_with(
        "p.yaml:20:36: route `admin` is protected, but GET /api/admin/, /api/ADMIN, /api/ADMIN/ (and 1 more) are caught by route `api`"
    ), "{warnings:#?}");
    assert!(
        warnings.iter().all(|w| !w.contains("ambiguous_path")),
        "{warnings:#?}"
    );
}

const POLICY_ROUTES: &str = "default: allow
routes:
  - name: api
    match: { path: \"/api/**\" }
    public: true
  - name: admin
    match: { methods: [GET], path: /api/admin }
    require: [\"admin:*\"]
  - name: reports
    match: { methods: [GET], path: /reports }
    require: [\"admin:*\"]
";
