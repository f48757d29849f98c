//! `fortress diff`: the summary of a representative policy change, pinned line for line;
//! exit 0 without changes, 2 for a file that does not compile.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fortress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(args)
        .env_remove("JWT_SECRET_KEY")
        .output()
        .expect("run fortress")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn demo() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/demo.yaml");
    std::fs::read_to_string(path).expect("demo.yaml")
}

fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "demo.yaml changed: {from:?} not found");
    text.replacen(from, to, 1)
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p.to_str().expect("utf-8").to_owned()
}

#[test]
fn a_representative_change_is_summarized_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = demo();
    let mut new = edit(
        &old,
        r#"analyst: ["reports:read", "ask:use"]"#,
        r#"analyst: ["reports:read", "ask:use", "export:run"]"#,
    );
    new = edit(
        &new,
        "  support: [\"reports:read\", \"tenants:cross\"]\n",
        "  support: [\"tenants:cross\"]\n  auditor: [\"reports:read\"]\n",
    );
    new = edit(&new, "    require: [\"admin:*\"]\n", "    public: true\n");
    new = edit(
        &new,
        "    require: [\"ask:use\"]\n",
        "    require: [\"ask:use\", \"ask:premium\"]\n    rate_limit: { key: subject, limit: 10, per: 1m }\n",
    );
    new = edit(&new, "    leeway: 30s", "    leeway: 60s");
    new = edit(
        &new,
        "demo-only-secret-never-use-in-production-0123456789",
        "demo-only-secret-never-use-in-production-rotated-987",
    );
    new = edit(
        &new,
        "  - name: health\n    match: { path: /health }\n    public: true\n",
        "",
    );
    new.push_str(
        "  - name: export\n    match: { methods: [POST], path: /api/export }\n    require: [\"export:run\"]\n",
    );
    new = edit(&new, "default: deny", "default: allow");
    let (a, b) = (
        write(dir.path(), "old.yaml", &old),
        write(dir.path(), "new.yaml", &new),
    );
    let out = fortress(&["diff", &a, &b]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "\
routes:
  ! admin: made public (was require [admin:*])
  ~ ask: require [ask:use] → [ask:premium, ask:use] (+[ask:premium])
  ~ ask: rate_limit: (none) → {key: subject, limit: 10, per: 1m}
  + added export: POST /api/export, require [export:run]
  - removed health: * /health, public
roles:
  ! analyst: gains [export:run]
  + added auditor: [reports:read]
  ! ml_engineer: gains [export:run]
  ~ support: loses [reports:read]
settings:
  ~ authentication.jwt.leeway: 30s → 60s
  ~ authentication.jwt.secret.value: (set) → (set, changed)
  ! default: deny → allow
12 changes; 4 widen access (marked !)
"
    );
    // The secret itself is never printed.
    assert!(!text(&out.stdout).contains("rotated-987"));
    // A policy against itself is no change.
    let out = fortress(&["diff", &a, &a]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "no change\n");
}

#[test]
fn a_policy_that_does_not_compile_is_an_error_at_file_line_col() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = write(dir.path(), "old.yaml", &demo());
    let new = write(
        dir.path(),
        "new.yaml",
        &edit(&demo(), "default: deny", "default: maybe"),
    );
    let out = fortress(&["diff", &old, &new]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let line = demo()
        .lines()
        .position(|l| l == "default: deny")
        .expect("default")
        + 1;
    assert!(
        text(&out.stderr).starts_with(&format!("{new}:{line}:10: unknown value `maybe`")),
        "{}",
        text(&out.stderr)
    );
}

/// A policy whose secret comes from the environment is compared without it; the variable's
/// name is shown (it is not the secret), a narrowed `require_any` is not a widening.
#[test]
fn secrets_from_the_environment_are_not_needed_and_their_names_are_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/easydata.yaml");
    let old = std::fs::read_to_string(&path).expect("easydata.yaml");
    let mut new = edit(
        &old,
        "secret: { env: JWT_SECRET_KEY }",
        "secret: { env: JWT_SECRET_KEY_V2 }",
    );
    new = edit(
        &new,
        "require_any: [\"predictions:read\", \"reports:read\"]",
        "require_any: [\"predictions:read\"]",
    );
    let (a, b) = (
        write(dir.path(), "easydata.yaml", &old),
        write(dir.path(), "next.yaml", &new),
    );
    let out = fortress(&["diff", &a, &b]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "\
routes:
  ~ predictions: require_any [predictions:read, reports:read] → [predictions:read] (-[reports:read])
settings:
  ~ authentication.jwt.secret.env: JWT_SECRET_KEY → JWT_SECRET_KEY_V2
2 changes; 0 widen access (marked !)
"
    );
}
