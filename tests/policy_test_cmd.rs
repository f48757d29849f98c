//! `fortress test`: the shipped decision tables pass (and every shipped policy has one), a
//! broken policy fails with the right cases at the right lines, JUnit, coverage, and strict
//! tests files (unknown keys at FILE:LINE:COL).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fortress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(args)
        // Tables need no secret: easydata.yaml reads JWT_SECRET_KEY, which is not set here.
        .env_remove("JWT_SECRET_KEY")
        .output()
        .expect("run fortress")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The 1-based line of `- name: NAME` in a tests file.
fn case_line(file: &Path, name: &str) -> usize {
    let body = std::fs::read_to_string(file).expect("read tests file");
    body.lines()
        .position(|l| l.trim_start() == format!("- name: {name}"))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no case {name:?} in {}", file.display()))
}

/// Every `policies/*.tests.yaml` passes with every route covered, and every policy in
/// `policies/` has a table (new policies are tested by CI as soon as they ship one).
#[test]
fn every_shipped_policy_has_a_passing_table_covering_every_route() {
    let dir = repo().join("policies");
    let mut tables = Vec::new();
    let mut policies = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("policies/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".tests.yaml") {
            tables.push(path);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            policies.push(path);
        }
    }
    tables.sort();
    policies.sort();
    assert!(!policies.is_empty());
    for p in &policies {
        let table = p.with_extension("tests.yaml");
        assert!(
            tables.contains(&table),
            "{} has no decision table ({} is missing)",
            p.display(),
            table.display()
        );
    }
    for t in &tables {
        let out = fortress(&["test", "--require-coverage", t.to_str().expect("utf-8")]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{}:\n{stdout}{}",
            t.display(),
            text(&out.stderr)
        );
        assert!(stdout.contains(" 0 failed (policy "), "{stdout}");
        assert!(stdout.contains("coverage: every route reached"), "{stdout}");
    }
}

/// A copy of demo.yaml with `edit` applied, in `dir`.
fn broken_demo(dir: &Path, from: &str, to: &str) -> PathBuf {
    let demo = std::fs::read_to_string(repo().join("policies/demo.yaml")).expect("demo.yaml");
    assert!(demo.contains(from), "demo.yaml changed: {from:?} not found");
    let path = dir.join("broken.yaml");
    std::fs::write(&path, demo.replacen(from, to, 1)).expect("write");
    path
}

#[test]
fn a_removed_permission_fails_the_cases_that_relied_on_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = broken_demo(
        dir.path(),
        r#"analyst: ["reports:read", "ask:use"]"#,
        r#"analyst: ["ask:use"]"#,
    );
    let table = repo().join("policies/demo.tests.yaml");
    let t = table.to_str().expect("utf-8");
    let out = fortress(&["test", broken.to_str().expect("utf-8"), t]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let failures: Vec<&str> = stdout.lines().filter(|l| l.contains(": case \"")).collect();
    let line = |name| case_line(&table, name);
    assert_eq!(
        failures,
        vec![
            format!(
                "{t}:{}: case \"analysts read their own tenant's reports\": expected decision \
                 allow; got deny 403 missing_permission (route org-reports, stage authz)",
                line("analysts read their own tenant's reports")
            ),
            format!(
                "{t}:{}: case \"no cross-tenant reads\": expected reason tenant_mismatch; got \
                 deny 403 missing_permission (route org-reports, stage authz)",
                line("no cross-tenant reads")
            ),
            format!(
                "{t}:{}: case \"ml engineers inherit the analyst's reports:read\": expected \
                 decision allow; got deny 403 missing_permission (route org-reports, stage authz)",
                line("ml engineers inherit the analyst's reports:read")
            ),
            format!(
                "{t}:{}: case \"analysts search three times a minute\": expected decision \
                 allow; got deny 403 missing_permission (route search, stage authz)",
                line("analysts search three times a minute")
            ),
            format!(
                "{t}:{}: case \"the fourth search in a minute is rate limited\": expected \
                 status 429, reason rate_limited; got deny 403 missing_permission (route search, \
                 stage authz)",
                line("the fourth search in a minute is rate limited")
            ),
        ]
    );
    assert!(
        stdout.contains(&format!(
            "{t}: 13 passed, 5 failed (policy {}, hash ",
            broken.display()
        )),
        "{stdout}"
    );
}

#[test]
fn a_route_made_public_fails_the_cases_that_expected_a_refusal_and_junit_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = broken_demo(
        dir.path(),
        "    require: [\"admin:*\"]\n",
        "    public: true\n",
    );
    let table = repo().join("policies/demo.tests.yaml");
    let t = table.to_str().expect("utf-8");
    let junit = dir.path().join("junit.xml");
    let out = fortress(&[
        "test",
        t,
        broken.to_str().expect("utf-8"),
        "--junit",
        junit.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let failures: Vec<&str> = stdout.lines().filter(|l| l.contains(": case \"")).collect();
    let analysts = case_line(&table, "analysts do not reach the admin API");
    let no_token = case_line(&table, "no token, no admin API");
    assert_eq!(
        failures,
        vec![
            format!(
                "{t}:{analysts}: case \"analysts do not reach the admin API\": expected decision \
                 deny, status 403, reason missing_permission; got allow (route admin)"
            ),
            format!(
                "{t}:{no_token}: case \"no token, no admin API\": expected decision deny, status \
                 401, reason missing_token, refusal headers (the request was not refused); got \
                 allow (route admin)"
            ),
        ]
    );
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"fortress test\" tests=\"18\" failures=\"2\">\n"), "{xml}");
    assert!(
        xml.contains(&format!(
            "<testsuite name=\"{t}\" tests=\"18\" failures=\"2\">"
        )),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<testcase name=\"the health check is public\" classname=\"{t}\" file=\"{t}\" line=\"{}\"/>",
            case_line(&table, "the health check is public")
        )),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<testcase name=\"no token, no admin API\" classname=\"{t}\" file=\"{t}\" line=\"{no_token}\">\n      <failure message=\"expected decision deny, status 401, reason missing_token, refusal headers (the request was not refused); got allow (route admin)\">{t}:{no_token}: case &quot;no token, no admin API&quot;: expected"
        )),
        "{xml}"
    );
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 18, "{xml}");
}

/// Writes `name` in `dir` with `body`.
fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p
}

const POLICY: &str = "\
version: 1
server:
  listen: 127.0.0.1:8443
  upstream: http://127.0.0.1:8080
  environment: local
  require_https: false
  allow_insecure_local: true
  trusted_proxies: [10.0.0.0/8]
authentication:
  jwt:
    issuer: me
    audiences: [api]
    algorithms: [RS256]
    jwks: { url: https://keys.example.invalid/jwks.json }
default: deny
roles:
  reader: [\"docs:read\"]
routes:
  - name: docs
    match: { methods: [GET], path: \"/docs/{id}\" }
    require: [\"docs:read\"]
    rate_limit: { key: subject, limit: 2, per: 1m }
  - name: office
    match: { methods: [GET], path: /office }
    public: true
    allow_ips: [198.51.100.0/24]
  - name: other
    match: { path: /other }
    public: true
  - name: beta
    match: { path: /beta }
    require: [\"docs:read\"]
    requires_toggle: beta
toggles:
  beta: { default: false }
";

#[test]
fn unknown_keys_and_identities_are_errors_at_file_line_col() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "p.yaml", POLICY);
    let table = write(
        dir.path(),
        "bad.tests.yaml",
        "policy: p.yaml
identities:
  r: { sub: u1, roles: [reader] }
cases:
  - name: one
    request: { path: /docs/1, as: r, colour: blue }
    expect: { decision: allow }
  - name: two
    request: { path: /docs/1, as: nobody }
    expect: { decision: allow, status: fine }
",
    );
    let t = table.to_str().expect("utf-8");
    let out = fortress(&["test", t]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "{t}:6:38: unknown key `colour`, expected one of: "
        )),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{t}:10:40: invalid type")),
        "{stderr}"
    );
    // Once well-formed: an identity no one defined, a case name used twice, a `repeat` out
    // of bounds, each an error at its position.
    let table = write(
        dir.path(),
        "bad.tests.yaml",
        "policy: p.yaml
cases:
  - name: two
    request: { path: /docs/1, as: nobody }
    expect: { decision: allow }
  - name: two
    request: { path: /docs/1, repeat: 0 }
    expect: { decision: allow }
",
    );
    let out = fortress(&["test", table.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{t}:4:35: unknown identity `nobody`\n{t}:6:11: case name `two` is used twice\n\
             {t}:7:39: `repeat` must be between 1 and 10000\n"
        )
    );
}

/// A JWKS / RS256 policy is tested with the test key (no network, no key), rate limits with
/// `repeat`, transport with `peer` / `client_ip`; coverage names the routes no case reached.
#[test]
fn test_key_repeat_transport_and_coverage() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "p.yaml", POLICY);
    let table = write(
        dir.path(),
        "p.tests.yaml",
        "policy: p.yaml
defaults:
  transport: { peer: 203.0.113.1 }
identities:
  r: { sub: u1, roles: [reader] }
cases:
  - name: a client named without a peer is its own peer
    request: { path: /office, transport: { client_ip: 198.51.100.9 } }
    expect: { decision: allow, route: office }
  - name: readers read
    request: { path: /docs/1, as: r }
    expect: { decision: allow, route: docs }
  - name: the third read in a minute is refused
    request: { path: /docs/1, as: r, repeat: 3 }
    expect: { decision: deny, status: 429, reason: rate_limited, headers: { Retry-After: \"30\" } }
  - name: the office network only
    request: { path: /office, transport: { client_ip: 203.0.113.5 } }
    expect: { decision: deny, status: 403, reason: ip_not_allowed }
  - name: the office network behind the load balancer
    request: { path: /office, transport: { peer: 10.0.0.1, client_ip: 198.51.100.9 } }
    expect: { decision: allow }
  - name: an unsigned token never passes
    request: { path: /docs/1, as: r, token: unsigned }
    expect: { decision: deny, status: 401, reason: disallowed_algorithm }
  - name: a token not yet valid
    request: { path: /docs/1, as: r, token: not_yet_valid }
    expect: { decision: deny, status: 401, reason: token_not_yet_valid }
  - name: a revoked subject
    request: { path: /docs/1, as: r, token: revoked }
    expect: { decision: deny, status: 401, reason: token_revoked }
  - name: beta is off by default
    request: { path: /beta, as: r }
    expect: { decision: deny, status: 503, reason: feature_disabled, route: beta }
  - name: beta switched on
    request: { path: /beta, as: r, toggles: { beta: true } }
    expect: { decision: allow, route: beta }
",
    );
    let t = table.to_str().expect("utf-8");
    let out = fortress(&["test", t]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("{t}: 10 passed, 0 failed (policy ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("coverage: 3 of 4 routes reached; no case reaches: other\n"),
        "{stdout}"
    );
    let out = fortress(&["test", "--require-coverage", t]);
    assert_eq!(out.status.code(), Some(1));
    // A client_ip an untrusted peer cannot vouch for is a mistake in the table.
    let table = write(
        dir.path(),
        "p.tests.yaml",
        "policy: p.yaml
cases:
  - name: spoofed
    request: { path: /office, transport: { peer: 203.0.113.1, client_ip: 198.51.100.9 } }
    expect: { decision: allow }
",
    );
    let out = fortress(&["test", table.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).starts_with(&format!(
            "{t}:3: case \"spoofed\": {t}:4:74: client_ip 198.51.100.9 differs from the peer \
             203.0.113.1, which is not a trusted proxy"
        )),
        "{}",
        text(&out.stdout)
    );
}
