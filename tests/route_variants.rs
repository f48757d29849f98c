//! Route variants (red-team F1, F7) through a real fortress and a real upstream.
//!
//! Express (and Spring Boot < 3, ASP.NET) route without regard to case and with an optional
//! trailing `/`. A spelling of a protected path that fortress would route to a weaker route
//! (a public `/**`, the parent `/api/**`, `default: allow`) is refused with 400
//! `ambiguous_path` and never reaches the app; spellings that every reading routes the same
//! way pass. `paths.route_variants: ignore` restores routing as sent. `fortress check` warns
//! about both shapes, and about method-restricted routes whose other methods fall through.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::*;

const SECRET: &str = "route-variants-secret-0123456789-abcdef";

/// The red-team's base policy: public `/health` and SPA `/**`, `/api/**` for readers and the
/// exact `/api/admin` for admins, `/admin/**`, tenant routes under `/orgs/{org_id}/**`.
const ROUTES: &str = "
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { file: SECRET_FILE }
  claims: { subject: sub, roles: roles, tenant: tenant }
roles:
  admin: [\"*\"]
  user: [\"api:read\", \"orgs:read\"]
routes:
  - name: health
    match: { path: /health }
    public: true
  - name: api
    match: { path: \"/api/**\" }
    require: [\"api:read\"]
  - name: api-admin
    match: { path: /api/admin }
    require: [\"admin:all\"]
  - name: admin
    match: { path: \"/admin/**\" }
    require: [\"admin:all\"]
  - name: orgs
    match: { path: \"/orgs/{org_id}/**\" }
    require: [\"orgs:read\"]
    tenant: { path_param: org_id }
";

const SPA: &str = "  - name: spa
    match: { path: \"/**\" }
    public: true
";

struct Fx {
    fx: TestFortress,
    _dir: tempfile::TempDir,
}

async fn start(up: SocketAddr, top: &str, extra_routes: &str) -> Fx {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let policy = ROUTES.replace("SECRET_FILE", &secret.display().to_string());
    let yaml = config(
        up,
        "allow_insecure_local: true",
        &format!("{top}{policy}{extra_routes}"),
    );
    Fx {
        fx: TestFortress::start(&yaml).await,
        _dir: dir,
    }
}

fn token(roles: &[&str], tenant: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "alice", "roles": roles, "tenant": tenant, "iss": "iss", "aud": "aud",
        "exp": now + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn send(addr: SocketAddr, method: &str, target: &str, tok: Option<&str>) -> RawResponse {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    if let Some(t) = tok {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if method != "GET" && method != "HEAD" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes()).await
}

fn assert_ambiguous(r: &RawResponse, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let rid = r.header("x-request-id").expect("rid").to_owned();
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "bad_request", "reason": "ambiguous_path", "request_id": rid, "trace_id": trace_id(r)}),
        "{what}"
    );
}

fn assert_forwarded(r: &RawResponse, method: &str, target: &str) {
    assert_eq!(r.status, 200, "{method} {target}: {}", r.text());
    assert_eq!(r.text(), format!("upstream saw {method} {target}"));
}

#[tokio::test]
async fn case_and_slash_spellings_of_protected_routes_never_reach_the_app() {
    let up = Upstream::echo().await;
    let f = start(up.addr, "", SPA).await;
    let user = token(&["user"], "acme");
    for tok in [None, Some(user.as_str())] {
        for method in ["GET", "POST", "DELETE"] {
            for target in [
                // Through the public `/**`.
                "/Admin/x",
                "/ADMIN",
                "/admin/X/../../Admin/users",
                "/ORGS/globex/x",
                "/Orgs/globex/reports",
                // Through the parent `/api/**` (and `/**`).
                "/api/Admin",
                "/api/ADMIN",
                "/api/admin/",
                "/api/Admin/",
                "/API/admin",
                "/api/admin/?x=1",
            ] {
                let what = format!("{method} {target} token={}", tok.is_some());
                let r = send(f.fx.addr(), method, target, tok).await;
                assert_ambiguous(&r, &what);
            }
        }
    }
    assert_eq!(up.hits(), 0, "no spelling reached the app");
}

#[tokio::test]
async fn spellings_every_reading_routes_the_same_way_pass() {
    let up = Upstream::echo().await;
    let f = start(up.addr, "", SPA).await;
    let user = token(&["user"], "acme");
    let admin = token(&["admin"], "acme");
    // Public: the root, files, upper-case letters and trailing slashes that only the SPA
    // route takes however they are read.
    for target in [
        "/",
        "/health",
        "/index.html",
        "/Index.HTML",
        "/static/App.js",
        "/docs/",
        "/Docs/Intro/",
    ] {
        let r = send(f.fx.addr(), "GET", target, None).await;
        assert_forwarded(&r, "GET", target);
    }
    // Protected: judged by their route, upper-case ids and trailing slashes included.
    for target in [
        "/api/users",
        "/api/users/",
        "/api/Users/AbC123",
        "/api/users/AbC123/",
        "/orgs/acme/Reports",
        "/orgs/acme/x/",
    ] {
        let r = send(f.fx.addr(), "GET", target, None).await;
        assert_eq!(r.status, 401, "{target}: {}", r.text());
        let r = send(f.fx.addr(), "GET", target, Some(&user)).await;
        assert_forwarded(&r, "GET", target);
    }
    let r = send(f.fx.addr(), "GET", "/api/admin", Some(&user)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "missing_permission");
    for target in ["/api/admin", "/admin/", "/admin/X", "/admin/users/"] {
        let r = send(f.fx.addr(), "GET", target, Some(&admin)).await;
        assert_forwarded(&r, "GET", target);
    }
    // Another tenant, in the spelling the route matches: the tenant rule, not the variant.
    let r = send(f.fx.addr(), "GET", "/orgs/globex/x", Some(&user)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "tenant_mismatch");
    assert_eq!(up.hits(), 7 + 6 + 4);
}

#[tokio::test]
async fn default_allow_refuses_spellings_of_routed_paths() {
    let up = Upstream::echo().await;
    let f = start(up.addr, "default: allow\n", "").await;
    for target in [
        "/Admin/x",
        "/Orgs/globex/x",
        "/ADMIN/",
        "/api/admin/",
        "/Api/x",
    ] {
        let r = send(f.fx.addr(), "GET", target, None).await;
        assert_ambiguous(&r, target);
    }
    assert_eq!(up.hits(), 0);
    // Unrouted however it is read: the default applies (with a token: `authentication`
    // applies to unrouted requests too).
    let user = token(&["user"], "acme");
    for target in ["/Other/Path", "/other/", "/"] {
        let r = send(f.fx.addr(), "GET", target, Some(&user)).await;
        assert_forwarded(&r, "GET", target);
    }
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn case_insensitive_paths_still_refuse_the_trailing_slash() {
    let up = Upstream::echo().await;
    let f = start(up.addr, "paths: { case_insensitive: true }\n", SPA).await;
    let user = token(&["user"], "acme");
    let admin = token(&["admin"], "acme");
    for target in ["/api/admin/", "/API/ADMIN/", "/Api/Admin/"] {
        let r = send(f.fx.addr(), "GET", target, Some(&user)).await;
        assert_ambiguous(&r, target);
    }
    assert_eq!(up.hits(), 0);
    // Upper case is lower-cased first, then judged by the admin route.
    let r = send(f.fx.addr(), "GET", "/API/Admin", Some(&user)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = send(f.fx.addr(), "GET", "/API/Admin", Some(&admin)).await;
    assert_forwarded(&r, "GET", "/api/admin");
    let r = send(f.fx.addr(), "GET", "/ADMIN/X", None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn the_refusal_is_never_dry_run() {
    let up = Upstream::echo().await;
    let f = start(up.addr, "mode: dry-run\n", SPA).await;
    for target in ["/Admin/x", "/api/admin/"] {
        let r = send(f.fx.addr(), "GET", target, None).await;
        assert_ambiguous(&r, target);
    }
    assert_eq!(up.hits(), 0);
    // A policy denial on the same policy is dry-run: forwarded.
    let r = send(f.fx.addr(), "GET", "/admin/x", None).await;
    assert_forwarded(&r, "GET", "/admin/x");
}

#[tokio::test]
async fn ignore_routes_spellings_as_sent() {
    let up = Upstream::echo().await;
    let f = start(up.addr, "paths: { route_variants: ignore }\n", SPA).await;
    let user = token(&["user"], "acme");
    // What the red team saw: the public SPA route and the parent route judge these.
    let r = send(f.fx.addr(), "GET", "/Admin/x", None).await;
    assert_forwarded(&r, "GET", "/Admin/x");
    let r = send(f.fx.addr(), "GET", "/ORGS/globex/x", None).await;
    assert_forwarded(&r, "GET", "/ORGS/globex/x");
    let r = send(f.fx.addr(), "GET", "/api/admin/", Some(&user)).await;
    assert_forwarded(&r, "GET", "/api/admin/");
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn a_pattern_with_a_trailing_slash_is_refused_in_other_spellings() {
    let up = Upstream::echo().await;
    let extra = format!(
        "  - name: slash\n    match: {{ path: /panel/ }}\n    require: [\"admin:all\"]\n{SPA}"
    );
    let f = start(up.addr, "", &extra).await;
    let admin = token(&["admin"], "acme");
    // `/Panel` is read as `/panel/` by the app: the slash route's.
    for target in ["/Panel", "/PANEL/", "/panel/"] {
        let r = send(f.fx.addr(), "GET", target, Some(&admin)).await;
        assert_ambiguous(&r, target);
    }
    assert_eq!(up.hits(), 0);
}

fn check(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(["check", path.to_str().expect("utf8")])
        .output()
        .expect("run fortress");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "p");
    // The local relaxations this config states (inline secret, no audit) are not the subject.
    let stderr: String = stderr
        .lines()
        .filter(|l| !l.contains("local relaxation"))
        .map(|l| format!("{l}\n"))
        .collect();
    (out.status.code(), stderr)
}

const CHECK_HEAD: &str = "version: 1
server:
  listen: 127.0.0.1:8443
  upstream: http://127.0.0.1:8080
  environment: local
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { value: \"0123456789abcdef0123456789abcdef\" }
roles:
  admin: [\"*\"]
  user: [\"api:read\"]
";

#[test]
fn check_warns_about_spellings_and_methods_a_weaker_route_takes() {
    // F1 (p5) and F7 (p13): `/admin/**` for GET only, `/orgs/{org_id}/**` with a tenant, and
    // the exact `/api/admin` under `/api/**`, next to a public `/**`.
    let routes = "routes:
  - name: api
    match: { path: \"/api/**\" }
    require: [\"api:read\"]
  - name: api-admin
    match: { path: /api/admin }
    require: [\"admin:all\"]
  - name: admin
    match: { methods: [GET], path: \"/admin/**\" }
    require: [\"admin:all\"]
  - name: orgs
    match: { path: \"/orgs/{org_id}/**\" }
    require: [\"api:read\"]
    tenant: { path_param: org_id }
  - name: panel
    match: { path: /panel/ }
    require: [\"admin:all\"]
  - name: spa
    match: { path: \"/**\" }
    public: true
";
    let (code, stderr) = check(&format!("{CHECK_HEAD}{routes}"));
    assert_eq!(code, Some(0), "{stderr}");
    let expected = [
        "warning: p:17:20: route `api`: GET /API/x, /API/x/ are caught by route `spa` (/**) with weaker checks; fortress refuses such spellings (400 `ambiguous_path`",
        "warning: p:20:20: route `api-admin` is protected, but GET /api/admin.json is caught by route `api` (/api/**) with weaker checks, and an app that routes case- or trailing-slash-insensitively (Express, Spring Boot < 3, ASP.NET) or with suffix matching serves it as /api/admin",
        "warning: p:20:20: route `api-admin`: GET /api/admin/, /api/ADMIN, /api/ADMIN/ are caught by route `api` (/api/**)",
        "warning: p:20:20: route `api-admin`: GET /API/admin, /API/admin/, /API/ADMIN (and 1 more) are caught by route `spa` (/**)",
        "warning: p:23:36: route `admin`: GET /ADMIN/x, /ADMIN/x/ are caught by route `spa` (/**)",
        "warning: p:23:36: route `admin` (/admin/**) accepts only GET, but POST, PUT, DELETE, PATCH on its paths (e.g. /admin/x) are routed to route `spa` (/**) with weaker checks; an app that serves several methods on one handler serves them there. List those methods in the route's `methods:`, or add a route for them with the same checks",
        "warning: p:26:20: route `orgs`: GET /ORGS/x/x, /ORGS/x/x/ are caught by route `spa` (/**)",
        // The lower-case spelling without the slash is not looked at per request: only the
        // lint says that the app serves `/panel` through the public route.
        "warning: p:30:20: route `panel` is protected, but GET /panel is caught by route `spa` (/**) with weaker checks, and an app",
        "warning: p:30:20: route `panel`: GET /PANEL/, /PANEL are caught by route `spa` (/**) with weaker checks; fortress refuses",
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, e) in lines.iter().zip(expected) {
        assert!(line.starts_with(e), "expected {e:?}\n     got {line:?}");
    }

    // Listing the methods, or a route for them with the same checks, silences F7; the same
    // policy with `route_variants: ignore` says the app serves the spellings.
    let fixed = routes.replace("methods: [GET], ", "");
    let (_, stderr) = check(&format!(
        "{CHECK_HEAD}paths: {{ route_variants: ignore }}\n{fixed}"
    ));
    assert!(!stderr.contains("accepts only"), "{stderr}");
    assert!(!stderr.contains("ambiguous_path"), "{stderr}");
    assert!(
        stderr.contains(
            "route `admin` is protected, but GET /ADMIN/x, /ADMIN/x/ are caught by route `spa` (/**) with weaker checks, and an app"
        ),
        "{stderr}"
    );

    // `default: allow` is weaker than any protected route; a public route is never warned
    // about; a route with the same checks is not weaker.
    let routes = "default: allow
routes:
  - name: admin
    match: { methods: [GET], path: \"/admin/**\" }
    require: [\"admin:all\"]
  - name: admin-write
    match: { methods: [POST, PUT, DELETE, PATCH], path: \"/admin/**\" }
    require: [\"admin:all\"]
  - name: open
    match: { methods: [GET], path: \"/open/**\" }
    public: true
";
    let (code, stderr) = check(&format!("{CHECK_HEAD}{routes}"));
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(
            "warning: p:18:36: route `admin`: GET /ADMIN/x, /ADMIN/x/ are caught by `default: allow`"
        ),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(
            "warning: p:21:57: route `admin-write`: POST /ADMIN/x, /ADMIN/x/ are caught by `default: allow`"
        ),
        "{stderr}"
    );
}

#[test]
fn explain_names_the_matched_route_and_the_refusal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.yaml");
    let routes = "routes:
  - name: admin
    match: { path: \"/admin/**\" }
    require: [\"admin:all\"]
  - name: spa
    match: { path: \"/**\" }
    public: true
";
    std::fs::write(&path, format!("{CHECK_HEAD}{routes}")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(["explain", "--config", path.to_str().expect("utf8")])
        .args(["--path", "/Admin/x"])
        .output()
        .expect("run fortress");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "route      deny     ambiguous_path (matched spa (/**); a case or trailing-slash \
             spelling of this path goes to another route (paths.route_variants: refuse))\n\
             decision   deny     400 ambiguous_path\n"
        ),
        "{text}"
    );
}
