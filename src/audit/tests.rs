//! The writer and the verifier together: a real trail in a temp directory, tampered with in
//! every way `audit verify` must catch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::chain::ChainKey;
use super::record::{Event, Record, file_name};
use super::verify::{Verdict, VerifyError, verify};
use super::writer::{Writer, WriterSettings};
use crate::clock::Clock;
use crate::store::DAY_MS;

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;

struct Trail {
    dir: tempfile::TempDir,
    clock_file: PathBuf,
}

impl Trail {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock_file = dir.path().join("now");
        let t = Self { dir, clock_file };
        t.set_now(T0);
        t
    }

    fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    fn set_now(&self, ms: u64) {
        std::fs::write(&self.clock_file, ms.to_string()).unwrap();
    }

    fn settings(&self, key: Option<ChainKey>) -> WriterSettings {
        WriterSettings {
            dir: Some(self.audit_dir()),
            stdout: false,
            fsync: false,
            queue: 64,
            retention_days: None,
            max_total_size: None,
            key,
        }
    }

    fn writer(&self, settings: WriterSettings) -> Writer {
        Writer::start(settings, Arc::new(Clock::File(self.clock_file.clone()))).unwrap()
    }

    /// Writes `n` request records at `at`, each acknowledged.
    async fn write(&self, w: &Writer, at: u64, n: usize) {
        for i in 0..n {
            let mut r = Record::new(Event::Request, at + i as u64);
            r.request_id = Some(format!("req-{at}-{i}"));
            r.decision = Some("deny".into());
            r.status = Some(403);
            w.submit_acked(r).unwrap().await.unwrap().unwrap();
        }
    }

    fn file(&self, at: u64) -> PathBuf {
        self.audit_dir().join(file_name(at))
    }

    fn lines(&self, at: u64) -> Vec<String> {
        std::fs::read_to_string(self.file(at))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn set_lines(&self, at: u64, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.file(at), text).unwrap();
    }

    fn verify(&self) -> Result<Verdict, VerifyError> {
        verify(&self.audit_dir(), &[])
    }
}

fn tampered_at(r: Result<Verdict, VerifyError>) -> (String, u64) {
    match r {
        Err(VerifyError::Tampered { file, line, .. }) => (file, line),
        other => panic!("expected tampering, got {other:?}"),
    }
}

/// Two days of records, sealed: 5 on day one (rotation seal), 3 on day two (shutdown seal).
async fn two_days(t: &Trail) {
    let w = t.writer(t.settings(None));
    t.write(&w, T0 + 1_000, 5).await;
    t.write(&w, T0 + DAY_MS + 1_000, 3).await;
    t.set_now(T0 + DAY_MS + 5_000);
    w.close().await;
}

#[tokio::test]
async fn a_sealed_trail_verifies_across_a_day_rollover() {
    let t = Trail::new();
    two_days(&t).await;
    let day1 = t.lines(T0);
    let day2 = t.lines(T0 + DAY_MS);
    assert_eq!(day1.len(), 6, "5 records and the rotation seal");
    assert_eq!(day2.len(), 4, "3 records and the shutdown seal");
    let seal: Value = serde_json::from_str(&day1[5]).unwrap();
    assert_eq!(seal["event"], "seal");
    assert_eq!(seal["detail"]["reason"], "rotation");
    assert_eq!(seal["detail"]["count"], 6);
    let first: Value = serde_json::from_str(&day2[0]).unwrap();
    assert_eq!(first["seq"], 6);
    assert_eq!(first["prev_hash"], seal["hash"]);
    assert_eq!(first["ts"], "2026-01-02T00:00:01.000Z");
    match t.verify() {
        Ok(Verdict::Sealed(s)) => {
            assert_eq!(s.records, 10);
            assert_eq!(s.files, 2);
            assert_eq!(s.last.map(|l| l.0), Some(9));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_kind_of_tampering_is_found() {
    let t = Trail::new();
    two_days(&t).await;
    let day1 = t.lines(T0);
    let day2 = t.lines(T0 + DAY_MS);
    let f1 = file_name(T0);
    let f2 = file_name(T0 + DAY_MS);
    let restore = || {
        t.set_lines(T0, &day1);
        t.set_lines(T0 + DAY_MS, &day2);
    };

    // Edit a field (keeping the JSON canonical).
    let mut edited = day1.clone();
    edited[2] = edited[2].replace("\"decision\":\"deny\"", "\"decision\":\"allow\"");
    assert_ne!(edited[2], day1[2]);
    t.set_lines(T0, &edited);
    assert_eq!(tampered_at(t.verify()), (f1.clone(), 3));
    restore();

    // Reformat a line (same data, not canonical: e.g. an editor's pretty spacing).
    let mut spaced = day1.clone();
    spaced[1] = spaced[1].replacen(':', ": ", 1);
    t.set_lines(T0, &spaced);
    assert_eq!(tampered_at(t.verify()), (f1.clone(), 2));
    restore();

    // Delete a record.
    let mut deleted = day1.clone();
    deleted.remove(2);
    t.set_lines(T0, &deleted);
    assert_eq!(tampered_at(t.verify()), (f1.clone(), 3));
    restore();

    // Insert a copy of a record.
    let mut inserted = day1.clone();
    inserted.insert(3, day1[1].clone());
    t.set_lines(T0, &inserted);
    assert_eq!(tampered_at(t.verify()), (f1.clone(), 4));
    restore();

    // Swap two records.
    let mut swapped = day1.clone();
    swapped.swap(1, 2);
    t.set_lines(T0, &swapped);
    assert_eq!(tampered_at(t.verify()), (f1.clone(), 2));
    restore();

    // Cut a sealed (older) file short.
    t.set_lines(T0, &day1[..4]);
    assert_eq!(tampered_at(t.verify()), (f1.clone(), 4));
    restore();

    // Remove the newer file's first record: the link across files breaks.
    t.set_lines(T0 + DAY_MS, &day2[1..]);
    assert_eq!(tampered_at(t.verify()), (f2.clone(), 1));
    restore();

    // Remove the oldest file: the trail starts mid-chain with no retention record.
    std::fs::remove_file(t.file(T0)).unwrap();
    assert_eq!(tampered_at(t.verify()), (f2.clone(), 1));
    restore();

    // Cut the newest file's seal: every record checks, but the trail is unsealed.
    t.set_lines(T0 + DAY_MS, &day2[..3]);
    match t.verify() {
        Ok(Verdict::Unsealed(s)) => assert_eq!(s.last.map(|l| l.0), Some(8)),
        other => panic!("{other:?}"),
    }
    restore();
    assert!(matches!(t.verify(), Ok(Verdict::Sealed(_))));
}

#[tokio::test]
async fn a_middle_file_removed_is_found() {
    let t = Trail::new();
    let w = t.writer(t.settings(None));
    for d in 0..3 {
        t.write(&w, T0 + d * DAY_MS + 1, 2).await;
    }
    w.close().await;
    assert!(matches!(t.verify(), Ok(Verdict::Sealed(_))));
    std::fs::remove_file(t.file(T0 + DAY_MS)).unwrap();
    assert_eq!(tampered_at(t.verify()), (file_name(T0 + 2 * DAY_MS), 1));
}

#[tokio::test]
async fn the_chain_continues_across_a_restart_and_a_crash() {
    let t = Trail::new();
    let w = t.writer(t.settings(None));
    t.write(&w, T0 + 1, 2).await;
    w.close().await;
    // Restart the same day: appended after the shutdown seal.
    let w = t.writer(t.settings(None));
    t.write(&w, T0 + 10, 2).await;
    // "Crash": the writer is abandoned without a seal (its queue never closes), and a torn
    // write is left behind.
    std::mem::forget(w);
    let mut text = std::fs::read_to_string(t.file(T0)).unwrap();
    text.push_str("{\"decision\":\"de");
    std::fs::write(t.file(T0), &text).unwrap();
    match t.verify() {
        Ok(Verdict::Unsealed(s)) => {
            assert!(s.partial_tail);
            assert_eq!(
                s.records, 5,
                "2, the shutdown seal, 2 after the restart, no seal"
            );
        }
        other => panic!("{other:?}"),
    }
    // The next start cuts the torn line off and continues the chain.
    let w = t.writer(t.settings(None));
    t.write(&w, T0 + 20, 1).await;
    w.close().await;
    match t.verify() {
        Ok(Verdict::Sealed(s)) => assert_eq!(s.records, 7),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn hmac_chain_needs_its_key() {
    let t = Trail::new();
    let key = ChainKey::new(b"an audit key of some length");
    let w = t.writer(t.settings(Some(key.clone())));
    t.write(&w, T0 + 1, 3).await;
    w.close().await;
    assert!(matches!(
        verify(&t.audit_dir(), &[]),
        Err(VerifyError::Cannot(_))
    ));
    assert!(matches!(
        verify(&t.audit_dir(), std::slice::from_ref(&key)),
        Ok(Verdict::Sealed(_))
    ));
    // Someone who edits a record and recomputes a plain SHA-256 chain is still caught.
    let mut lines = t.lines(T0);
    let mut v: Value = serde_json::from_str(&lines[0]).unwrap();
    v["decision"] = Value::from("allow");
    v.as_object_mut().unwrap().remove("hash");
    let h = super::chain::hash_of(&super::record::canonical(&v), None);
    v["hash"] = Value::from(h);
    lines[0] = super::record::canonical(&v);
    t.set_lines(T0, &lines);
    assert_eq!(
        tampered_at(verify(&t.audit_dir(), &[key])),
        (file_name(T0), 1)
    );
}

#[tokio::test]
async fn retention_deletes_old_files_and_vouches_for_the_new_start() {
    let t = Trail::new();
    let w = t.writer(t.settings(None));
    for d in 0..4 {
        t.write(&w, T0 + d * DAY_MS + 1, 2).await;
    }
    w.close().await;
    // Restart on day 5 with a 2-day retention: days 1 and 2 go.
    t.set_now(T0 + 4 * DAY_MS + 1);
    let mut s = t.settings(None);
    s.retention_days = Some(2);
    let w = t.writer(s);
    t.write(&w, T0 + 4 * DAY_MS + 2, 1).await;
    w.close().await;
    assert!(!t.file(T0).exists());
    assert!(!t.file(T0 + DAY_MS).exists());
    assert!(t.file(T0 + 2 * DAY_MS).exists());
    let text = std::fs::read_to_string(t.file(T0 + 4 * DAY_MS)).unwrap();
    assert!(text.contains("\"event\":\"retention\""), "{text}");
    match t.verify() {
        Ok(Verdict::Sealed(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unwritable_directory_fails_closed_and_recovers() {
    let t = Trail::new();
    let w = t.writer(t.settings(None));
    t.write(&w, T0 + 1, 1).await;
    // Make the file unwritable by replacing it with a directory of the same name on the next
    // day (a permission change does not stop root, which the tests may run as).
    let next = t.file(T0 + DAY_MS);
    std::fs::create_dir(&next).unwrap();
    let r = Record::new(Event::Request, T0 + DAY_MS + 1);
    let ack = w.submit_acked(r).unwrap().await.unwrap();
    assert!(ack.is_err(), "the write failed and said so");
    assert!(w.stats().failing.load(std::sync::atomic::Ordering::Acquire));
    assert!(
        w.submit(Record::new(Event::Request, T0 + DAY_MS + 2))
            .is_err()
    );
    std::fs::remove_dir(&next).unwrap();
    t.set_now(T0 + DAY_MS + 3);
    // The probe (every second) reopens the file.
    let mut tries = 0;
    while w.stats().failing.load(std::sync::atomic::Ordering::Acquire) {
        tries += 1;
        assert!(tries < 100, "did not recover");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    t.write(&w, T0 + DAY_MS + 4, 1).await;
    w.close().await;
    assert!(
        matches!(t.verify(), Ok(Verdict::Sealed(_))),
        "{:?}",
        t.verify()
    );
    let _: &Path = t.dir.path();
}
