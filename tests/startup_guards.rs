//! Fail-closed startup (SPEC §4, issue 12 item 3): a production config with one flaw makes
//! `fortress run` exit 2, before binding anything, with one fatal line naming the reason; all
//! flaws together are named in that one line; the same flaws with `environment: local` start
//! (or pass `fortress check`) with one warning per relaxation the config states. And the
//! readiness guards: a route whose guard's condition fails answers 503 `not_ready`.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::*;

/// A secret the checks accept (48 random-looking bytes).
const GOOD_SECRET: &str = "q8Jz3vWt0pLx7Rk2mN5bY4cH9sD1fG6aQ2wE8rT5yU3iO7pZ";

/// A production config that passes every check, with `{AUDIT}` replaced by an audit dir.
/// Each test changes one thing.
const GOOD: &str = "\
version: 1
server:
  listen: 127.0.0.1:0
  admin: 127.0.0.1:0
  upstream: http://127.0.0.1:9
  environment: production
  trusted_proxies: [10.0.0.0/8]
audit:
  dir: {AUDIT}
authentication:
  jwt:
    issuer: iss
    audiences: [aud]
    algorithms: [HS256]
    secret: { env: JWT_SECRET }
    leeway: 30s
roles:
  analyst: [\"reports:read\"]
default: deny
routes:
  - name: health
    match: { path: /health }
    public: true
  - name: reports
    match: { path: \"/api/reports/**\" }
    require: [\"reports:read\"]
";

struct Case {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

/// Writes `GOOD` with the replacements applied (each `(from, to)` must occur).
fn case(edits: &[(&str, &str)]) -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit");
    let mut yaml = GOOD.replace("{AUDIT}", &audit.display().to_string());
    for (from, to) in edits {
        assert!(yaml.contains(from), "{from:?} not in the config");
        yaml = yaml.replacen(from, to, 1);
    }
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, yaml).expect("write config");
    Case { dir, path }
}

/// Runs the fortress binary with a clean environment plus `env`.
fn fortress(args: &[&str], path: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fortress"));
    cmd.args(args).arg(path).env_clear().env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run fortress")
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `fortress run` refuses: exit 2, one fatal line holding every `reason`.
fn refuses(c: &Case, env: &[(&str, &str)], reasons: &[&str]) -> String {
    let out = fortress(&["run", "--config"], &c.path, env);
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let fatal: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("fortress cannot start"))
        .collect();
    assert_eq!(fatal.len(), 1, "one fatal line: {text}");
    for r in reasons {
        assert!(fatal[0].contains(r), "{r:?} not in {:?}", fatal[0]);
    }
    assert!(!text.contains("fortress listening"), "{text}");
    // Nothing was bound, and the audit trail was not opened.
    assert!(!c.dir.path().join("audit").exists(), "{text}");
    fatal[0].to_owned()
}

fn secret(v: &str) -> [(&str, &str); 1] {
    [("JWT_SECRET", v)]
}

/// `fortress check` in the same environment: exit code and output.
fn check(c: &Case, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = fortress(&["check"], &c.path, env);
    (out.status.code(), all_output(&out))
}

#[test]
fn the_good_config_passes_check_and_starts() {
    let c = case(&[]);
    let (code, text) = check(&c, &secret(GOOD_SECRET));
    assert_eq!(code, Some(0), "{text}");
    let fx = FortressProcess::spawn_args_env(
        &["run", "--config", c.path.to_str().expect("utf-8")],
        &secret(GOOD_SECRET),
    );
    assert!(!fx.logs().iter().any(|l| l.contains("relaxation")));
}

#[test]
fn audit_disabled() {
    let c = case(&[("audit:\n  dir:", "x_audit:\n  dir:")]);
    // (An unknown key is an error too; remove the block instead.)
    let text = std::fs::read_to_string(&c.path).expect("read");
    let text = text
        .lines()
        .filter(|l| !l.starts_with("x_audit:") && !l.starts_with("  dir: /"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&c.path, text).expect("write");
    refuses(&c, &secret(GOOD_SECRET), &["audit is disabled"]);
}

#[test]
fn authentication_without_a_secret_or_key() {
    let c = case(&[("    secret: { env: JWT_SECRET }\n", "")]);
    refuses(
        &c,
        &[],
        &["authentication is on without a `secret`, `keys` or `jwks`"],
    );
}

#[test]
fn a_secret_under_32_bytes() {
    let c = case(&[]);
    refuses(
        &c,
        &secret("change-me-in-production"),
        &["the secret is shorter than 32 bytes"],
    );
}

#[test]
fn a_well_known_secret() {
    let c = case(&[]);
    refuses(
        &c,
        &secret("please-change-this-secret-in-production-0123456789"),
        &["the secret is a well-known default"],
    );
}

#[test]
fn a_secret_of_one_repeated_character() {
    let c = case(&[]);
    refuses(
        &c,
        &secret(&"x".repeat(48)),
        &["the secret is weak (one repeated character)"],
    );
}

#[test]
fn a_dictionary_phrase_padded_to_length() {
    let c = case(&[]);
    refuses(
        &c,
        &secret("change-me-in-production-change-me-in-production"),
        &["the secret is weak (a well-known phrase padded to length)"],
    );
}

#[test]
fn a_secret_env_variable_not_set() {
    let c = case(&[]);
    refuses(&c, &[], &["environment variable `JWT_SECRET` is not set"]);
}

fn tls_case(cert_pem: &str, key_pem: &str) -> Case {
    let c = case(&[(
        "  trusted_proxies: [10.0.0.0/8]\n",
        "  tls: { cert: server.crt, key: server.key }\n",
    )]);
    std::fs::write(c.dir.path().join("server.crt"), cert_pem).expect("cert");
    std::fs::write(c.dir.path().join("server.key"), key_pem).expect("key");
    c
}

#[test]
fn tls_with_a_valid_certificate_passes() {
    let certs = TestCerts::new("ok");
    let c = tls_case(&certs.cert_pem, &certs.key_pem);
    let (code, text) = check(&c, &secret(GOOD_SECRET));
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn tls_with_a_missing_certificate() {
    let certs = TestCerts::new("ok");
    let c = tls_case(&certs.cert_pem, &certs.key_pem);
    std::fs::remove_file(c.dir.path().join("server.crt")).expect("rm");
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &["TLS: ", "server.crt: cannot read certificate"],
    );
}

#[test]
fn tls_with_an_unreadable_key() {
    let certs = TestCerts::new("ok");
    let c = tls_case(&certs.cert_pem, "not a key\n");
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &["TLS: ", "server.key: cannot read private key"],
    );
}

#[test]
fn tls_with_a_mismatched_key() {
    let (a, b) = (TestCerts::new("a"), TestCerts::new("b"));
    let c = tls_case(&a.cert_pem, &b.key_pem);
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &["TLS: ", "certificate and key are not usable together"],
    );
}

#[test]
fn tls_with_an_expired_certificate() {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert");
    let c = tls_case(&cert.pem(), &key.serialize_pem());
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &["TLS: the certificate", "has expired"],
    );
}

#[test]
fn a_plain_listener_without_trusted_proxies() {
    let c = case(&[("  trusted_proxies: [10.0.0.0/8]\n", "")]);
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &["a plain-HTTP listener needs `require_https: true`"],
    );
}

#[test]
fn a_plain_listener_with_require_https_off() {
    let c = case(&[(
        "  trusted_proxies: [10.0.0.0/8]\n",
        "  trusted_proxies: [10.0.0.0/8]\n  require_https: false\n",
    )]);
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &["a plain-HTTP listener needs `require_https: true`"],
    );
}

#[test]
fn default_allow() {
    let c = case(&[("default: deny", "default: allow")]);
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &["`default: allow` forwards every request"],
    );
}

#[test]
fn a_non_public_route_without_authentication() {
    let c = case(&[(
        "authentication:\n  jwt:\n    issuer: iss\n    audiences: [aud]\n    algorithms: [HS256]\n    secret: { env: JWT_SECRET }\n    leeway: 30s\n",
        "",
    )]);
    refuses(
        &c,
        &[],
        &["route `reports` is not `public: true` but no `authentication` is configured"],
    );
}

#[test]
fn an_inline_secret() {
    let c = case(&[(
        "secret: { env: JWT_SECRET }",
        "secret: { value: q8Jz3vWt0pLx7Rk2mN5bY4cH9sD1fG6aQ2wE8rT5yU3iO7pZ }",
    )]);
    refuses(
        &c,
        &[],
        &["an inline secret `value` is only allowed with `environment: local`"],
    );
}

#[test]
fn an_undeclared_fortress_variable() {
    let c = case(&[]);
    refuses(
        &c,
        &[
            ("JWT_SECRET", GOOD_SECRET),
            ("FORTRESS_TEST_CLOK", "/tmp/x"),
        ],
        &["environment variable(s) FORTRESS_TEST_CLOK set but not declared in .env.schema"],
    );
}

#[test]
fn trusted_proxies_of_every_address() {
    for every in ["0.0.0.0/0", "::/0"] {
        let c = case(&[("[10.0.0.0/8]", &format!("[10.0.0.0/8, \"{every}\"]"))]);
        refuses(
            &c,
            &secret(GOOD_SECRET),
            &[&format!("trusted proxy `{every}` is every address")],
        );
    }
}

#[test]
fn a_jwks_url_over_plain_http() {
    let c = case(&[
        ("algorithms: [HS256]", "algorithms: [RS256]"),
        (
            "secret: { env: JWT_SECRET }",
            "jwks: { url: \"http://keys.example.test/jwks.json\" }",
        ),
    ]);
    refuses(
        &c,
        &[],
        &["the JWKS URL `http://keys.example.test/jwks.json` is plain http://"],
    );
}

#[test]
fn a_leeway_over_five_minutes() {
    let c = case(&[("leeway: 30s", "leeway: 10m")]);
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &["`leeway: 10m` is over 5 minutes"],
    );
    // Five minutes exactly is allowed.
    let ok = case(&[("leeway: 30s", "leeway: 5m")]);
    let (code, text) = check(&ok, &secret(GOOD_SECRET));
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn an_admin_listener_on_a_non_loopback_address() {
    let c = case(&[("admin: 127.0.0.1:0", "admin: 0.0.0.0:0")]);
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &["the admin listener `0.0.0.0:0` is not a loopback address and has no TLS"],
    );
}

#[test]
fn a_global_dry_run_unless_allowed_next_to_it() {
    let c = case(&[("version: 1\n", "version: 1\nmode: dry-run\n")]);
    refuses(&c, &secret(GOOD_SECRET), &["the global `mode: dry-run`"]);
    let ok = case(&[(
        "version: 1\n",
        "version: 1\nmode: dry-run\nallow_dry_run_in_production: true\n",
    )]);
    let (code, text) = check(&ok, &secret(GOOD_SECRET));
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn a_readiness_guard_the_policy_can_never_satisfy() {
    let c = case(&[
        (
            "default: deny\n",
            "default: deny\nreadiness:\n  sql: { sql_guard: true }\n",
        ),
        (
            "    require: [\"reports:read\"]\n",
            "    require: [\"reports:read\"]\n    guard: sql\n",
        ),
    ]);
    refuses(
        &c,
        &secret(GOOD_SECRET),
        &[
            "route `reports` has `guard: sql`, whose condition `sql_guard` this policy can never satisfy",
        ],
    );
}

#[test]
fn the_test_clock_outside_local() {
    let c = case(&[]);
    refuses(
        &c,
        &[
            ("JWT_SECRET", GOOD_SECRET),
            ("FORTRESS_TEST_CLOCK", "/tmp/now"),
        ],
        &["FORTRESS_TEST_CLOCK is set: the test clock is only available with `environment: local`"],
    );
}

/// Every flaw at once: one line, every reason.
const ALL_FLAWS: &[(&str, &str)] = &[
    ("version: 1\n", "version: 1\nmode: dry-run\n"),
    ("admin: 127.0.0.1:0", "admin: 0.0.0.0:0"),
    (
        "  trusted_proxies: [10.0.0.0/8]\n",
        "  trusted_proxies: [\"0.0.0.0/0\"]\n  require_https: false\n",
    ),
    ("audit:\n  dir: ", "x-audit-dir: "),
    (
        "secret: { env: JWT_SECRET }",
        "secret: { value: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa }",
    ),
    ("leeway: 30s", "leeway: 1h"),
    ("default: deny", "default: allow"),
];

/// Removes the `x-audit-dir:` line the edits leave (no `audit:` block at all).
fn drop_audit(c: &Case) {
    let text = std::fs::read_to_string(&c.path).expect("read");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("x-audit-dir:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&c.path, text).expect("write");
}

#[test]
fn every_reason_is_reported_together() {
    let c = case(ALL_FLAWS);
    drop_audit(&c);
    let line = refuses(
        &c,
        &[("FORTRESS_NOPE", "1")],
        &[
            "audit is disabled",
            "FORTRESS_NOPE set but not declared",
            "the global `mode: dry-run`",
            "`default: allow`",
            "the admin listener `0.0.0.0:0`",
            "a plain-HTTP listener needs",
            "trusted proxy `0.0.0.0/0` is every address",
            "an inline secret `value` is only allowed",
            "`leeway: 1h` is over 5 minutes",
        ],
    );
    // `fortress check` reports the same reasons, one per line, exit 1.
    let (code, text) = check(&c, &[("FORTRESS_NOPE", "1")]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(text.lines().count(), 9, "{text}\n{line}");
    // Offline, the environment's reasons are left out.
    let out = fortress(&["check", "--offline"], &c.path, &[("FORTRESS_NOPE", "1")]);
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(!text.contains("FORTRESS_NOPE"), "{text}");
}

#[test]
fn the_same_flaws_start_in_local_with_one_warning_per_stated_relaxation() {
    // Local: the flaws that are relaxations the config states are warned about once each;
    // the others are allowed silently (local is for a laptop).
    let c = case(ALL_FLAWS);
    drop_audit(&c);
    let text = std::fs::read_to_string(&c.path).expect("read");
    std::fs::write(
        &c.path,
        text.replace("environment: production", "environment: local")
            .replace("admin: 0.0.0.0:0", "admin: 127.0.0.1:0")
            .replace(
                "  require_https: false\n",
                "  require_https: false\n  allow_insecure_local: true\n",
            ),
    )
    .expect("write");
    let (code, out) = check(&c, &[("FORTRESS_NOPE", "1")]);
    assert_eq!(code, Some(0), "{out}");
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("local relaxation"))
        .collect();
    assert_eq!(warnings.len(), 5, "{out}");
    for w in [
        "server.require_https: false",
        "server.allow_insecure_local: true",
        "no `audit:` block",
        "authentication.jwt.secret is written inline",
        "no server.state_dir",
    ] {
        assert!(warnings.iter().any(|l| l.contains(w)), "{w:?}: {out}");
    }
    // And it starts, logging the same warnings once each.
    let fx =
        FortressProcess::spawn_args_env(&["run", "--config", c.path.to_str().expect("utf-8")], &[]);
    let logs = fx.logs();
    let logged: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("local relaxation"))
        .collect();
    assert_eq!(logged.len(), 5, "{logs:?}");
}

#[test]
fn a_local_config_without_relaxations_starts_without_warnings() {
    let c = case(&[("environment: production", "environment: local")]);
    let text = std::fs::read_to_string(&c.path).expect("read");
    std::fs::write(
        &c.path,
        text.replace(
            "  trusted_proxies: [10.0.0.0/8]\n",
            &format!(
                "  trusted_proxies: [10.0.0.0/8]\n  state_dir: {}\n",
                c.dir.path().join("state").display()
            ),
        ),
    )
    .expect("write");
    let (code, out) = check(&c, &secret(GOOD_SECRET));
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("relaxation"), "{out}");
}

// ---- readiness guards --------------------------------------------------------------------

const DAY: u64 = 86_400_000;

#[tokio::test]
async fn a_failing_audit_sink_closes_a_guarded_route_and_its_recovery_opens_it() {
    let up = Upstream::echo().await;
    let clock = TestClock::new();
    let trail = tempfile::tempdir().expect("tempdir");
    let dir = trail.path().join("audit");
    let yaml = config(
        up.addr,
        "",
        &format!(
            "audit:\n  dir: {}\n  include: [denied]\n  durability: strict\n\
             readiness:\n  training: {{ audit: true }}\n\
             routes:\n  - name: train\n    match: {{ path: /train }}\n    public: true\n    guard: training\n\
             \x20 - name: other\n    match: {{ path: /other }}\n    public: true\n",
            dir.display()
        ),
    );
    let fx = TestFortress::start_with_clock(&yaml, &clock).await;
    let open = get_with(fx.addr(), "/train", &[]).await;
    assert_eq!(open.status, 200, "{}", open.text());
    assert_eq!(up.hits(), 1);
    let verbose = get_with(fx.admin(), "/readyz?verbose", &[]).await;
    assert_eq!(verbose.status, 200, "{}", verbose.text());
    assert_eq!(
        verbose.json(),
        serde_json::json!({"status": "ready", "guards": {"training": {"ready": true, "failing": []}}})
    );
    // Tomorrow's file cannot be created: the next record (a denial) fails the sink.
    let blocker = dir.join("audit-2026-01-02.jsonl");
    std::fs::create_dir_all(blocker.join("x")).expect("mkdir");
    clock.advance(DAY);
    assert_eq!(get_with(fx.addr(), "/nowhere", &[]).await.status, 503);
    let closed = get_with(fx.addr(), "/train", &[]).await;
    assert_eq!(closed.status, 503, "{}", closed.text());
    let body = closed.json();
    assert_eq!(body["error"], "service_unavailable");
    assert_eq!(body["reason"], "not_ready");
    assert_eq!(
        body["request_id"],
        closed.header("x-request-id").expect("id")
    );
    assert_eq!(closed.header("retry-after"), Some("5"));
    assert_eq!(up.hits(), 1, "the app never saw the refused request");
    // A route without the guard is served.
    assert_eq!(get_with(fx.addr(), "/other", &[]).await.status, 200);
    assert_eq!(up.hits(), 2);
    let verbose = get_with(fx.admin(), "/readyz?verbose", &[]).await;
    assert_eq!(
        verbose.json()["guards"],
        serde_json::json!({"training": {"ready": false, "failing": ["audit"]}})
    );
    // /readyz itself is unchanged: the instance is ready, one route is not.
    let plain = get_with(fx.admin(), "/readyz", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.text(), r#"{"status":"ready"}"#);
    // The sink comes back (the writer probes every second): the route opens by itself.
    std::fs::remove_dir_all(&blocker).expect("rmdir");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = get_with(fx.addr(), "/train", &[]).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["reason"], "not_ready");
        assert!(std::time::Instant::now() < deadline, "the guard opens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn a_guard_on_a_route_without_a_sql_guard_stays_closed_in_local() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "",
        "streams:\n  s:\n    order: [a, end]\n\
         readiness:\n  g: { sql_guard: true }\n\
         routes:\n  - name: r\n    match: { path: /r }\n    public: true\n    stream: s\n    guard: g\n",
    ))
    .await;
    let r = get_with(fx.addr(), "/r", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["reason"], "not_ready");
    assert_eq!(up.hits(), 0);
}

#[test]
fn an_unknown_guard_and_a_guard_without_conditions_are_config_errors() {
    let c = case(&[
        (
            "default: deny\n",
            "default: deny\nreadiness:\n  empty: {}\n",
        ),
        (
            "    require: [\"reports:read\"]\n",
            "    require: [\"reports:read\"]\n    guard: nope\n",
        ),
    ]);
    let (code, text) = check(&c, &secret(GOOD_SECRET));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("readiness guard `empty` has no condition"),
        "{text}"
    );
    assert!(
        text.contains("`guard: nope` names no guard under `readiness:`"),
        "{text}"
    );
}

/// A trusted proxy (127.0.0.1) vouching for HTTPS.
const HTTPS: &[(&str, &str)] = &[("X-Forwarded-Proto", "https")];

// ---- reload -------------------------------------------------------------------------------

#[tokio::test]
async fn a_reload_to_a_production_config_that_could_not_start_is_refused() {
    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = format!(
        "version: 1\nserver:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  upstream: http://{}\n  \
         environment: production\n  trusted_proxies: [127.0.0.1/32]\n\
         audit:\n  dir: {}\n\
         default: deny\nroutes:\n  - name: health\n    match: {{ path: /health }}\n    public: true\n",
        up.addr,
        dir.path().join("audit").display()
    );
    let path = dir.path().join("fortress.yaml");
    std::fs::write(&path, &good).expect("write");
    let fx = fortress::Fortress::start(&path).await.expect("starts");
    assert_eq!(get_with(fx.client_addr, "/other", HTTPS).await.status, 404);
    // The same file with `default: allow`: compiles, but production may not run it.
    std::fs::write(&path, good.replace("default: deny", "default: allow")).expect("write");
    let r = raw(
        fx.admin_addr,
        b"POST /admin/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let body = r.json();
    assert_eq!(body["result"], "refused");
    assert!(
        body["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("`default: allow` forwards every request")),
        "{body}"
    );
    // The last good config keeps serving: still denied, the app saw nothing.
    assert_eq!(get_with(fx.client_addr, "/other", HTTPS).await.status, 404);
    assert_eq!(up.hits(), 0);
    fx.shutdown();
    fx.wait().await;
}

#[test]
fn explain_judges_only_what_the_policy_knows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.yaml");
    std::fs::write(
        &path,
        "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:9\n  \
         environment: local\n  require_https: false\n\
         streams:\n  s:\n    order: [a, end]\n\
         audit:\n  stdout: true\n\
         readiness:\n  sql: { sql_guard: true }\n  rec: { audit: true }\n\
         routes:\n  - name: q\n    match: { path: /q }\n    public: true\n    stream: s\n    guard: sql\n\
         \x20 - name: r\n    match: { path: /r }\n    public: true\n    guard: rec\n",
    )
    .expect("write");
    let explain = |target: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
            .args(["explain", "--config"])
            .arg(&path)
            .args(["--path", target])
            .output()
            .expect("explain");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = explain("/q");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("readiness  deny"), "{text}");
    assert!(text.contains("not_ready"), "{text}");
    let (code, text) = explain("/r");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(
            "readiness  skip     runtime conditions (audit, jwks) are not judged by explain"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_toggle_condition_opens_and_closes_a_guarded_route_at_once() {
    let up = Upstream::echo().await;
    let fx = TestFortress::start(&config(
        up.addr,
        "",
        "toggles:\n  training_enabled: { default: false }\n\
         readiness:\n  training: { toggle: training_enabled }\n\
         routes:\n  - name: train\n    match: { path: /train }\n    public: true\n    guard: training\n",
    ))
    .await;
    let r = get(fx.addr(), "/train").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["reason"], "not_ready");
    let verbose = get(fx.admin(), "/readyz?verbose").await;
    assert_eq!(
        verbose.json()["guards"]["training"]["failing"],
        serde_json::json!(["toggle"]),
        "{}",
        verbose.text()
    );
    // The override the admin API writes (through the state store) opens the guard.
    let store = fx.fx.state.store.clone();
    store
        .set_toggle("training_enabled", Some(true))
        .await
        .expect("override");
    assert_eq!(get(fx.addr(), "/train").await.status, 200);
    store
        .set_toggle("training_enabled", Some(false))
        .await
        .expect("override");
    assert_eq!(get(fx.addr(), "/train").await.status, 503);
    assert_eq!(up.hits(), 1);
}

#[test]
fn a_toggle_condition_must_name_a_toggle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fortress.yaml");
    std::fs::write(
        &path,
        config(
            "127.0.0.1:9".parse().expect("addr"),
            "",
            "readiness:\n  training: { toggle: nope }\n\
             routes:\n  - name: train\n    match: { path: /train }\n    public: true\n    guard: training\n",
        ),
    )
    .expect("write");
    let err = match fortress::config::load_file(&path) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("`toggle: nope` names no toggle under `toggles:`"),
        "{err}"
    );
}
