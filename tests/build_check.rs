//! `docker/build-check.sh` (issue 15): the Dockerfile's static checks pass on the
//! repository, and each check fails on a Dockerfile that breaks it.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// A copy of what build-check.sh reads, with `edit` applied to docker/Dockerfile.
fn run_on_copy(edit: impl Fn(String) -> String) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(ROOT);
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        ".env.schema",
        "LICENSE",
        ".dockerignore",
    ] {
        std::fs::copy(root.join(f), dir.path().join(f)).expect("copy file");
    }
    for d in ["src", "benches", "policies", "docker"] {
        copy_dir(&root.join(d), &dir.path().join(d));
    }
    let df = dir.path().join("docker/Dockerfile");
    let text = std::fs::read_to_string(&df).expect("read");
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&df, edited).expect("write");
    let out = Command::new("bash")
        .arg(dir.path().join("docker/build-check.sh"))
        .output()
        .expect("bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_dockerfile_passes() {
    let out = Command::new("bash")
        .arg("docker/build-check.sh")
        .current_dir(ROOT)
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("build-check: ok (2 stages"), "{text}");
}

#[test]
fn each_check_fails_on_a_dockerfile_that_breaks_it() {
    let cases: [(&str, &str, &str); 8] = [
        (
            "USER 65532:65532",
            "USER root",
            "USER root: must be a numeric non-root uid",
        ),
        (
            "COPY src ./src",
            "COPY src ./src\nCOPY docker ./docker",
            "COPY docker: excluded by .dockerignore",
        ),
        (
            "http://127.0.0.1:9901/readyz",
            "http://127.0.0.1:8080/readyz",
            "must GET http://127.0.0.1:9901/",
        ),
        (
            "\"/usr/local/bin/fortress\", \"health\"",
            "\"/usr/bin/curl\", \"-f\"",
            "must run the image's fortress binary with `health`",
        ),
        (
            "FROM docker.io/library/rust:1.95.0-bookworm AS builder",
            "FROM rust:1-bookworm AS builder",
            "FROM rust:1-bookworm: not pinned",
        ),
        (
            "FROM gcr.io/distroless/cc-debian12:nonroot\n",
            "FROM debian:12.8-slim\n",
            "runtime base debian:12.8-slim is not distroless",
        ),
        (
            "ENTRYPOINT [\"/usr/local/bin/fortress\"]",
            "ENTRYPOINT [\"/usr/bin/fortress\"]",
            "ENTRYPOINT /usr/bin/fortress is not a file copied from the builder",
        ),
        (
            "      org.opencontainers.image.licenses=\"Apache-2.0\" \\\n",
            "",
            "missing LABEL org.opencontainers.image.licenses",
        ),
    ];
    for (from, to, expect) in cases {
        let (ok, text) = run_on_copy(|t| t.replacen(from, to, 1));
        assert!(!ok, "{from} -> {to}: passed:\n{text}");
        assert!(
            text.contains(expect),
            "{from} -> {to}: {expect:?} not in:\n{text}"
        );
    }
}
