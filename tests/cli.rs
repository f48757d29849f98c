//! The command line: `check`, `schema`, `version`, and that every shipped policy is valid.

use std::path::Path;
use std::process::{Command, Output};

fn fortress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(args)
        .output()
        .expect("run fortress")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_prints_every_error_with_file_line_col() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.yaml");
    let yaml = "\
version: 1
server:
  listen: 127.0.0.1:8443
  admin: nowhere
  upstream: ftp://127.0.0.1:8080
  colour: blue
  timeouts:
    header_read: 10 seconds
default: maybe
routes:
  - name: a
    match: { path: \"/a/{x}\" }
    public: true
  - name: b
    match: { path: \"/a/{y}\", methods: [GET, FETCH] }
    public: true
  - name: a
    match: { path: /c/** }
    timeout: 10
    public: true
  - name: d
    match: { path: \"/e/**/f\" }
    public: true
  - name: e
    match: { path: /private }
";
    std::fs::write(&path, yaml).expect("write");
    let out = fortress(&["check", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let p = path.display();
    // Structural errors (unknown key, bad enum value, wrong type) and value errors found while
    // compiling are reported in one run, in file order, each with its own position.
    // The file says no `environment:`, so it is production: the reasons not to start come too.
    let expected = [
        format!("{p}: audit is disabled"),
        format!("{p}:3:11: a plain-HTTP listener needs `require_https: true`"),
        format!("{p}:4:10: `nowhere` is not a socket address"),
        format!("{p}:5:13: `ftp://127.0.0.1:8080`: expected http://HOST:PORT"),
        format!("{p}:6:3: unknown key `colour`, expected one of: listen, admin,"),
        format!("{p}:8:18: `10 seconds` is not a duration"),
        format!("{p}:9:10: unknown value `maybe`, expected one of: deny, allow"),
        format!("{p}:15:20: overlaps route `a` (/a/{{x}}) with equal precedence for GET"),
        format!("{p}:15:45: `FETCH` is not a method"),
        format!("{p}:17:11: duplicate route name `a`"),
        format!("{p}:19:14: invalid type: integer `10`, expected a string"),
        format!("{p}:22:20: `**` may only be the last segment"),
        format!("{p}:24:11: route `e` is not `public: true` but no `authentication` is configured"),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, e) in lines.iter().zip(&expected) {
        assert!(line.starts_with(e.as_str()), "expected {e:?}, got {line:?}");
    }
}

#[test]
fn check_reports_duplicate_keys_and_yaml_syntax_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dup = dir.path().join("dup.yaml");
    std::fs::write(
        &dup,
        "server:\n  listen: 127.0.0.1:1\n  listen: 127.0.0.1:2\n  upstream: http://127.0.0.1:3\n",
    )
    .expect("write");
    let syntax = dir.path().join("syntax.yaml");
    std::fs::write(&syntax, "server: [unclosed\n").expect("write");
    let out = fortress(&[
        "check",
        dup.to_str().expect("utf8"),
        syntax.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:3: duplicate key `listen`: each key may appear only once",
            dup.display()
        )),
        "{stderr}"
    );
    let syntax_line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("{}:", syntax.display())))
        .unwrap_or_else(|| panic!("no syntax error line in {stderr}"));
    let pos: Vec<&str> = syntax_line.splitn(4, ':').collect();
    assert!(
        pos[1].parse::<u32>().is_ok() && pos[2].parse::<u32>().is_ok(),
        "{syntax_line}"
    );
}

#[test]
fn check_refuses_missing_file_and_yaml_bombs() {
    let out = fortress(&["check", "/nonexistent/fortress.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("/nonexistent/fortress.yaml: cannot read file"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bomb = dir.path().join("bomb.yaml");
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..15 {
        let p = i - 1;
        yaml.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{p}"); 10].join(", ")
        ));
    }
    std::fs::write(&bomb, yaml).expect("write");
    let out = fortress(&["check", bomb.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn every_shipped_policy_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files: Vec<String> = std::fs::read_dir(&root)
        .expect("policies/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        // Decision tables (`fortress test`, tests/policy_test_cmd.rs) are not configs.
        .filter(|p| !p.to_string_lossy().ends_with(".tests.yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    // `--offline`: the production example names TLS files that exist only in its pod.
    let mut args = vec!["check", "--offline"];
    args.extend(files.iter().map(String::as_str));
    // The production example reads its secret from the environment, as it would in a pod.
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(&args)
        .env("JWT_SECRET_KEY", "an-example-secret-of-at-least-32-bytes!!")
        .output()
        .expect("run fortress");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for f in &files {
        assert!(text(&out.stdout).contains(&format!("{f}: ok")));
    }
}

#[test]
fn schema_is_json_schema_of_the_config() {
    let out = fortress(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(schema["title"], "Fortress config");
    assert_eq!(schema["additionalProperties"], false);
    let props = schema["properties"].as_object().expect("properties");
    for key in ["version", "server", "default", "routes"] {
        assert!(props.contains_key(key), "{key}");
    }
    assert_eq!(schema["required"], serde_json::json!(["server"]));
}

#[test]
fn version_prints_the_version() {
    let out = fortress(&["version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("fortress {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_rejects_each_lint_case_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lint.yaml");
    std::fs::write(&path, LINT_YAML).expect("write");
    let out = fortress(&["check", path.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let p = path.display();
    let expected = [
        format!("{p}:13:29: role `analyst` includes unknown role `ghost`"),
        format!("{p}:15:12: role include cycle: loop_a -> loop_b -> loop_a"),
        format!("{p}:20:20: route `admin-panel`: path segment `admin` looks privileged"),
        format!("{p}:22:20: route `internal`: path segment `internal` looks privileged"),
        format!("{p}:24:20: route `ops`: path segment `ops` looks privileged"),
        format!("{p}:27:15: permission `reports:write` is granted by no role"),
        format!("{p}:28:11: route `open-but-guarded` is `public: true` but has `require`"),
        format!("{p}:35:42: overlaps route `a` (/x/{{a}}) with equal precedence for GET"),
        format!("{p}:38:57: cross-tenant permission `tenants:cross` is granted by no role"),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, e) in lines.iter().zip(&expected) {
        assert!(line.starts_with(e.as_str()), "expected {e:?}, got {line:?}");
    }
    // The guarded privileged route (`/debug/vars` with `require_any`) is not reported.
    assert!(!stderr.contains("guarded-admin"));
}

const LINT_YAML: &str = r#"server:
  listen: 127.0.0.1:8443
  upstream: http://127.0.0.1:8080
  environment: local
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { value: "local-secret" }
roles:
  admin: ["admin:*"]
  analyst: ["reports:read", "@ghost"]
  loop_a: ["@loop_b"]
  loop_b: ["@loop_a"]
lint:
  privileged_segments: [admin, internal, debug, actuator, metrics, ops]
routes:
  - name: admin-panel
    match: { path: "/admin/**" }
  - name: internal
    match: { path: "/api/internal/jobs" }
  - name: ops
    match: { path: "/ops/{id}" }
  - name: reports
    match: { path: "/reports" }
    require: ["reports:write"]
  - name: open-but-guarded
    match: { path: "/open" }
    public: true
    require: ["reports:read"]
  - name: a
    match: { methods: [GET], path: "/x/{a}" }
  - name: b
    match: { methods: [GET, POST], path: "/x/{b}" }
  - name: cross
    match: { path: "/orgs/{org}" }
    tenant: { path_param: org, cross_tenant_permission: "tenants:cross" }
  - name: guarded-admin
    match: { path: "/debug/vars" }
    require_any: ["admin:read"]
"#;

#[test]
fn explain_shows_each_stage_and_exits_by_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(
        &secret,
        "demo-only-secret-never-use-in-production-0123456789",
    )
    .expect("write");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/demo.yaml");
    let demo = demo.to_str().expect("utf8");
    let out = fortress(&[
        "token",
        "--secret-file",
        secret.to_str().expect("utf8"),
        "--config",
        demo,
        "--sub",
        "alice",
        "--roles",
        "analyst",
        "--tenant",
        "acme",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();

    let allow = fortress(&[
        "explain",
        "--config",
        demo,
        "--method",
        "GET",
        "--path",
        "/api/orgs/acme/reports/q3",
        "--token",
        &token,
    ]);
    assert_eq!(allow.status.code(), Some(0));
    assert_eq!(
        text(&allow.stdout),
        "framing    pass     one unambiguous framing\n\
         transport  pass     https from 127.0.0.1\n\
         host       pass     localhost\n\
         normalize  pass     /api/orgs/acme/reports/q3\n\
         ambiguity  pass     headers and query unambiguous\n\
         route      pass     org-reports (/api/orgs/{org_id}/reports/**)\n\
         toggle     skip     no toggle\n\
         readiness  skip     no guard\n\
         cors       skip     no cors configured\n\
         ip_allow   skip     no allowlist\n\
         request_limits pass     max_body 10485760 bytes\n\
         auth_throttle pass     at most 50 failed authentications per 60s per client IP (explain reads no live counters)\n\
         authn      pass     sub=alice roles=[analyst] tenant=acme\n\
         authz      pass     needs all of [reports:read]\n\
         tenant     pass     acme matches the token\n\
         admission  skip     no rate limit or budget\n\
         concurrency skip     no concurrency class\n\
         decision   allow    forwarded\n"
    );

    let deny = fortress(&[
        "explain",
        "--config",
        demo,
        "--path",
        "/api/admin/users",
        "--token",
        &token,
        "--json",
    ]);
    assert_eq!(deny.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&deny.stdout).expect("JSON");
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["status"], 403);
    assert_eq!(v["reason"], "missing_permission");
    let stages: Vec<(&str, &str)> = v["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap_or(""),
                s["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        stages,
        vec![
            ("framing", "pass"),
            ("transport", "pass"),
            ("host", "pass"),
            ("normalize", "pass"),
            ("ambiguity", "pass"),
            ("route", "pass"),
            ("toggle", "skip"),
            ("readiness", "skip"),
            ("cors", "skip"),
            ("ip_allow", "skip"),
            ("request_limits", "pass"),
            ("auth_throttle", "pass"),
            ("authn", "pass"),
            ("authz", "deny")
        ]
    );

    // The edge rules run in explain too: path parameters, method case, HEAD following GET,
    // a repeated Host.
    for (args, stage, reason) in [
        (
            vec!["--path", "/api/admin;x=1/users"],
            "normalize",
            "path_parameter",
        ),
        (
            vec!["--method", "get", "--path", "/api/admin/users"],
            "route",
            "method_not_uppercase",
        ),
        (
            vec!["--method", "PROPFIND", "--path", "/api/admin/users"],
            "route",
            "unknown_method",
        ),
        (
            vec!["--method", "HEAD", "--path", "/api/admin/users"],
            "authz",
            "missing_permission",
        ),
        (
            vec!["-H", "Host: a.test", "-H", "Host: b.test", "--path", "/x"],
            "host",
            "duplicate_host",
        ),
        (
            vec!["--path", "/api%EF%BC%8Fadmin/users"],
            "normalize",
            "unicode_lookalike",
        ),
    ] {
        let mut all = vec!["explain", "--config", demo, "--token", &token, "--json"];
        all.extend(args.iter().copied());
        let out = fortress(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v["reason"], reason, "{args:?}");
        let last = v["stages"]
            .as_array()
            .and_then(|s| s.last())
            .expect("stages");
        assert_eq!(last["stage"], stage, "{args:?}");
        assert_eq!(last["outcome"], "deny", "{args:?}");
    }

    // A production config refuses to mint tokens.
    let prod = dir.path().join("prod.yaml");
    std::fs::write(
        &prod,
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/demo.yaml"))
            .expect("read")
            .replace("environment: local", "environment: production")
            .replace("  allow_insecure_local: true\n", "")
            .replace(
                "secret: { value: \"demo-only-secret-never-use-in-production-0123456789\" }",
                &format!("secret: {{ file: {} }}", secret.display()),
            ),
    )
    .expect("write");
    let out = fortress(&[
        "token",
        "--secret-file",
        secret.to_str().expect("utf8"),
        "--config",
        prod.to_str().expect("utf8"),
        "--sub",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("environment: production"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_shows_allowlists_throttle_and_class_without_taking_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.yaml");
    std::fs::write(
        &path,
        "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  environment: local\n\
         allow_ips: [10.0.0.0/8]\nfailed_auth_limit: { max: 5, per: 2m }\n\
         classes:\n  bulk: { max_in_flight: 1, queue: 3, queue_timeout: 250ms, per_tenant_max_in_flight: 1 }\n\
         routes:\n  - name: exports\n    match: { path: \"/exports/**\" }\n    public: true\n    class: bulk\n    \
         allow_ips: [10.1.0.0/16]\n",
    )
    .expect("write");
    let cfg = path.to_str().expect("utf8");
    let run = |peer: &str| {
        fortress(&[
            "explain",
            "--config",
            cfg,
            "--path",
            "/exports/1",
            "--peer",
            peer,
        ])
    };
    // The class has one permit: explain twice, both pass (explain takes none).
    for _ in 0..2 {
        let out = run("10.1.2.3");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(
                "ip_allow   pass     client 10.1.2.3 is in the policy's and the route's allow_ips\n"
            ),
            "{stdout}"
        );
        assert!(
            stdout.contains("auth_throttle skip     no authentication here, or throttling off\n"),
            "{stdout}"
        );
        assert!(
            stdout.contains(
                "concurrency pass     class bulk (max_in_flight 1, queue 3, queue_timeout 250ms, \
                 per tenant 1); explain takes no permit\n"
            ),
            "{stdout}"
        );
    }
    let out = run("10.2.0.1");
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "ip_allow   deny     ip_not_allowed (client 10.2.0.1 is not in the route's allow_ips)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("decision   deny     403 ip_not_allowed\n"),
        "{stdout}"
    );
    let out = run("::ffff:11.0.0.1");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("client 11.0.0.1 is not in the policy's allow_ips"),
        "{stdout}"
    );
}

/// `fortress schema | head -c 10`: the reader going away is not a panic (exit 0). The schema
/// is larger than a pipe's 64 KiB buffer, so the write really meets the closed pipe.
#[test]
fn printing_to_a_closed_pipe_is_not_a_panic() {
    use std::io::Read as _;
    let args = ["schema"];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = [0u8; 10];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("some output");
    // stdout dropped: the pipe is closed.
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}
