//! `fortress audit verify` and `fortress audit query` on a trail written by the real writer:
//! exit codes, messages, and filters.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use fortress::audit::{ChainKey, Event, Record, Writer, WriterSettings};
use fortress::clock::Clock;

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;
const DAY: u64 = 86_400_000;

fn fortress(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fortress"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run fortress");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A trail over two days: day one has alice's denial and bob's dry-run denial, day two has
/// carol's denial; each with its own trace id.
async fn trail(dir: &Path, key: Option<ChainKey>) {
    let clock_file = dir.join("now");
    std::fs::write(&clock_file, (T0 + 2 * DAY - 1).to_string()).expect("clock");
    let w = Writer::start(
        WriterSettings {
            dir: Some(dir.join("audit")),
            stdout: false,
            fsync: true,
            queue: 16,
            retention_days: None,
            max_total_size: None,
            key,
        },
        Arc::new(Clock::File(clock_file)),
    )
    .expect("writer");
    let rows = [
        (
            T0 + 1_000,
            "alice",
            "acme",
            "deny",
            "tenant_mismatch",
            "t-a",
        ),
        (
            T0 + 2_000,
            "bob",
            "globex",
            "dry_run_deny",
            "missing_permission",
            "t-b",
        ),
        (
            T0 + DAY + 3_000,
            "carol",
            "acme",
            "deny",
            "rate_limited",
            "t-c",
        ),
    ];
    for (at, sub, tenant, decision, reason, trace) in rows {
        let mut r = Record::new(Event::Request, at);
        r.subject = Some(sub.into());
        r.tenant = Some(tenant.into());
        r.decision = Some(decision.into());
        r.reason = Some(reason.into());
        r.trace_id = Some(trace.into());
        r.request_id = Some(format!("r-{sub}"));
        r.status = Some(403);
        r.method = Some("GET".into());
        r.path = Some(format!("/orgs/{tenant}/x"));
        w.submit_acked(r)
            .expect("queued")
            .await
            .expect("answered")
            .expect("written");
    }
    w.close().await;
}

#[tokio::test]
async fn verify_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    trail(tmp.path(), None).await;
    let audit = tmp.path().join("audit");
    let audit = audit.to_str().expect("utf-8");

    let (code, out, _) = fortress(&["audit", "verify", audit], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("ok: 5 records in 2 files, sealed; chain head seq 4 hash "),
        "{out}"
    );

    // Unsealed: the newest file's seal cut off (what a crash leaves).
    let newest = tmp.path().join("audit/audit-2026-01-02.jsonl");
    let text = std::fs::read_to_string(&newest).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        &newest,
        format!("{}\n", lines[..lines.len() - 1].join("\n")),
    )
    .expect("write");
    let (code, out, _) = fortress(&["audit", "verify", audit], &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("unsealed: 4 records in 2 files check"),
        "{out}"
    );
    assert!(out.contains("last seq 3 hash "), "{out}");

    // Tampered: a decision edited in the older file.
    std::fs::write(&newest, &text).expect("restore");
    let older = tmp.path().join("audit/audit-2026-01-01.jsonl");
    let old = std::fs::read_to_string(&older).expect("read");
    std::fs::write(&older, old.replacen("\"deny\"", "\"allow\"", 1)).expect("write");
    let (code, out, _) = fortress(&["audit", "verify", audit], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("TAMPERED: audit-2026-01-01.jsonl:1: hash mismatch at seq 0"),
        "{out}"
    );

    // Cannot check: an empty directory.
    let empty = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = fortress(
        &["audit", "verify", empty.path().to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no audit files"), "{err}");
}

#[tokio::test]
async fn verify_with_an_hmac_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let secret = "audit-hmac-key-for-the-cli-test";
    trail(tmp.path(), Some(ChainKey::new(secret.as_bytes()))).await;
    let audit = tmp.path().join("audit");
    let audit = audit.to_str().expect("utf-8");
    let (code, _, err) = fortress(&["audit", "verify", audit], &[]);
    assert_eq!(code, 2, "without the key it cannot check");
    assert!(err.contains("HMAC key id"), "{err}");
    let (code, out, _) = fortress(
        &["audit", "verify", audit, "--hmac-key-env", "AUDIT_KEY"],
        &[("AUDIT_KEY", secret)],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = fortress(
        &["audit", "verify", audit, "--hmac-key-env", "AUDIT_KEY"],
        &[("AUDIT_KEY", "another key")],
    );
    assert_eq!(code, 2, "a different key has a different id: {out}");
}

#[tokio::test]
async fn query_filters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    trail(tmp.path(), None).await;
    let audit = tmp.path().join("audit");
    let audit = audit.to_str().expect("utf-8");
    let ids = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["request_id"].as_str().unwrap_or("-").to_owned()
            })
            .collect()
    };
    let q = |extra: &[&str]| {
        let mut args = vec!["audit", "query", audit];
        args.extend_from_slice(extra);
        let (code, out, err) = fortress(&args, &[]);
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_eq!(ids(&q(&["--trace-id", "t-b"])), ["r-bob"]);
    assert_eq!(
        ids(&q(&["--tenant", "acme", "--event", "request"])),
        ["r-alice", "r-carol"]
    );
    assert_eq!(
        ids(&q(&["--decision", "deny", "--event", "request"])),
        ["r-alice", "r-carol"]
    );
    assert_eq!(ids(&q(&["--subject", "bob"])), ["r-bob"]);
    assert_eq!(
        ids(&q(&["--since", "2026-01-02", "--event", "request"])),
        ["r-carol"]
    );
    assert_eq!(
        ids(&q(&[
            "--until",
            "2026-01-01T00:00:01.500Z",
            "--event",
            "request"
        ])),
        ["r-alice"]
    );
    assert_eq!(
        ids(&q(&["--event", "request", "--limit", "2"])),
        ["r-alice", "r-bob"]
    );
    assert_eq!(ids(&q(&["--event", "seal"])).len(), 2);
    let table = q(&["--table", "--trace-id", "t-c"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(
        rows[0],
        "ts\tevent\tdecision\tstatus\treason\tmethod\tpath\tsubject\ttenant\trequest_id"
    );
    assert_eq!(
        rows[1],
        "2026-01-02T00:00:03.000Z\trequest\tdeny\t403\trate_limited\tGET\t/orgs/acme/x\tcarol\tacme\tr-carol"
    );
    let (code, _, err) = fortress(&["audit", "query", audit, "--since", "yesterday"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--since yesterday"), "{err}");
}
