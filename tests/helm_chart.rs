//! The Helm chart (issue 15), tested through Helm's own Go SDK: `tests/helm/test_chart.py`
//! (PyPI `helm-python-sdk`, module `helm_python`; renders and lints offline) — default values
//! fail with what to set, every documented setup in `helm/fortress-sidecar/ci/` lints, renders
//! a safe pod and a config `fortress check --offline` accepts, the schema rejects unknown
//! policy keys. A missing `helm_python` fails the test (CI installs it: `.ci/run`).

use std::process::{Command, Output};

fn python(args: &[&str]) -> Output {
    Command::new("python3")
        .args(args)
        .env("FORTRESS_BIN", env!("CARGO_BIN_EXE_fortress"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python3 runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_chart_tests_pass_through_the_helm_sdk() {
    let out = python(&["tests/helm/test_chart.py"]);
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(", 0 failed (helm SDK v"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn values_schema_json_is_generated_from_the_current_fortress_schema() {
    let out = python(&[
        "tests/helm/gen_values_schema.py",
        "--check",
        env!("CARGO_BIN_EXE_fortress"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}
