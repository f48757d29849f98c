//! The env schema (issue 12 item 4): every environment variable fortress reads is declared in
//! `.env.schema`, read through `src/env.rs` only, and `fortress env` prints the schema.

use std::path::{Path, PathBuf};
use std::process::Command;

const PREFIXES: [&str; 4] = ["FORTRESS_", "OTEL_", "RUST_", "TOKIO_"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Names declared in `.env.schema` (first field of each non-comment line).
fn schema_names() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(".env.schema")).expect("read .env.schema");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let fields: Vec<&str> = l.split(" | ").collect();
            assert_eq!(
                fields.len(),
                4,
                "NAME | TYPE | DEFAULT | DESCRIPTION: {l:?}"
            );
            assert!(
                fields.iter().all(|f| !f.trim().is_empty()),
                "empty field: {l:?}"
            );
            fields[0].trim().to_owned()
        })
        .collect()
}

/// String literals `"PREFIX_NAME"` in `text` (an environment variable name).
fn env_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices('"') {
        let rest = &text[i + 1..];
        if !PREFIXES.iter().any(|p| rest.starts_with(p)) {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if rest[name.len()..].starts_with('"') {
            out.push(name);
        }
    }
    out
}

#[test]
fn code_and_schema_agree() {
    let declared = schema_names();
    let env_rs = std::fs::read_to_string(root().join("src/env.rs")).expect("src/env.rs");
    // Every declared name is a constant in src/env.rs, and every constant there is declared.
    let consts: Vec<String> = env_rs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split_once(": &str = \""))
        .map(|(_, v)| v.trim_end_matches("\";").to_owned())
        .collect();
    let mut a = consts.clone();
    let mut b = declared.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "src/env.rs constants vs .env.schema");

    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut problems = Vec::new();
    for f in &files {
        if f.ends_with("src/env.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read");
        // Only src/env.rs touches the process environment.
        for call in [
            "std::env::var(",
            "std::env::var_os(",
            "std::env::vars(",
            "std::env::vars_os(",
            "env::var(",
            "env::var_os(",
            "env::vars_os(",
            "from_default_env",
            "dotenv",
        ] {
            // `crate::env::var(` is the module's own API.
            let hits = text.matches(call).count() - text.matches(&format!("crate::{call}")).count();
            if hits > 0 {
                problems.push(format!(
                    "{}: reads the environment with `{call}`",
                    f.display()
                ));
            }
        }
        // A variable name written anywhere else must be declared.
        for name in env_literals(&text) {
            if !declared.contains(&name) {
                problems.push(format!("{}: `{name}` is not in .env.schema", f.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_scanner_finds_literals() {
    assert_eq!(
        env_literals(r#"let a = "FORTRESS_X"; b("OTEL_Y_Z", "FORTRESS_*", "other")"#),
        vec!["FORTRESS_X".to_string(), "OTEL_Y_Z".to_string()]
    );
}

#[test]
fn fortress_env_prints_the_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .arg("env")
        .output()
        .expect("run fortress");
    assert_eq!(out.status.code(), Some(0));
    let schema = std::fs::read_to_string(root().join(".env.schema")).expect("schema");
    assert_eq!(String::from_utf8_lossy(&out.stdout), schema);
    for name in schema_names() {
        assert!(schema.contains(&name));
    }
    assert!(schema_names().contains(&"OTEL_EXPORTER_OTLP_ENDPOINT".to_string()));
}
