//! Budget counters on disk (`server.state_dir/budgets.json`), so a restart does not hand every
//! tenant a fresh budget. Rate-limit state is not persisted (it restarts fresh: at worst one
//! extra burst per key).
//!
//! * Written atomically: a temp file in the same directory, `fsync`, `rename`, then an `fsync`
//!   of the directory. A crash leaves the previous file or the new one, never half of one.
//! * Written every [`INTERVAL`] when something changed, and once more at graceful shutdown
//!   (after in-flight requests drained). A crash (kill -9, power loss) loses at most the
//!   charges of the last [`INTERVAL`].
//! * The file carries a format name and version. A file that cannot be read, is not valid
//!   JSON, or has another format or version stops startup with a clear message: budgets are
//!   never silently reset to zero. Entries of periods that already ended are skipped on load.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Millis;
use super::memory::{BudgetEntry, MemoryStore};

/// The file name under `state_dir`.
pub const FILE: &str = "budgets.json";
/// The `format` field.
pub const FORMAT: &str = "fortress-budgets";
/// The current format version.
pub const VERSION: u32 = 1;
/// How often changed budgets are written.
pub const INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    saved_at_ms: Millis,
    entries: Vec<BudgetEntry>,
}

/// Why the state file could not be loaded or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PersistError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// The state file under `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the persisted budget entries (none when there is no file yet). Creates `dir` when
/// missing.
pub fn load(dir: &Path) -> Result<Vec<BudgetEntry>, PersistError> {
    let file = path(dir);
    let fail = |message: String| PersistError {
        path: file.clone(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| PersistError {
        path: dir.to_path_buf(),
        message: format!("cannot create the state directory: {e}"),
    })?;
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fail(format!("cannot read the budget state: {e}"))),
    };
    let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        fail(format!(
            "the budget state file is corrupt ({e}); refusing to start with budgets reset to \
             zero: restore it from a backup, or delete it to reset every tenant's usage"
        ))
    })?;
    let format = doc.get("format").and_then(|v| v.as_str());
    let version = doc.get("version").and_then(|v| v.as_u64());
    if format != Some(FORMAT) || version != Some(u64::from(VERSION)) {
        return Err(fail(format!(
            "unknown budget state format {:?} version {:?} (this fortress reads `{FORMAT}` \
             version {VERSION}); refusing to start with budgets reset to zero",
            format.unwrap_or("-"),
            version
        )));
    }
    let parsed: File = serde_json::from_value(doc).map_err(|e| {
        fail(format!(
            "the budget state file is corrupt ({e}); refusing to start with budgets reset to zero"
        ))
    })?;
    Ok(parsed.entries)
}

/// Writes `entries` atomically (temp file, fsync, rename, directory fsync).
pub fn save(dir: &Path, now: Millis, entries: Vec<BudgetEntry>) -> Result<(), PersistError> {
    let file = path(dir);
    let fail = |message: String| PersistError {
        path: file.clone(),
        message,
    };
    let doc = File {
        format: FORMAT.into(),
        version: VERSION,
        saved_at_ms: now,
        entries,
    };
    let bytes = serde_json::to_vec(&doc).map_err(|e| fail(e.to_string()))?;
    write_atomic(dir, FILE, &bytes).map_err(|e| fail(format!("cannot write the budget state: {e}")))
}

/// Writes `dir/name` atomically: a temp file beside it (`.NAME.tmp`), `fsync`, `rename`,
/// then an `fsync` of the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    // The rename itself is durable once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all()?;
    }
    Ok(())
}

/// Saves the store's budgets when they differ from `last` (what was written before).
pub fn save_if_changed(
    store: &MemoryStore,
    dir: &Path,
    now: Millis,
    last: &mut Option<Vec<BudgetEntry>>,
) -> Result<(), PersistError> {
    let entries = store.export_budgets(now);
    if last.as_ref() == Some(&entries) {
        return Ok(());
    }
    save(dir, now, entries.clone())?;
    *last = Some(entries);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).expect("no file yet").is_empty());
        let e = BudgetEntry {
            key: "budget|day|t".into(),
            start: 0,
            used: 5,
            expires_at: 86_400_000,
        };
        save(dir.path(), 1, vec![e.clone()]).expect("save");
        assert_eq!(load(dir.path()).expect("load"), vec![e]);
        assert!(!dir.path().join(".budgets.json.tmp").exists());

        std::fs::write(path(dir.path()), b"{not json").expect("write");
        let err = load(dir.path()).expect_err("corrupt").to_string();
        assert!(
            err.contains("corrupt") && err.contains("budgets.json"),
            "{err}"
        );

        std::fs::write(
            path(dir.path()),
            br#"{"format":"fortress-budgets","version":2,"saved_at_ms":0,"entries":[]}"#,
        )
        .expect("write");
        let err = load(dir.path()).expect_err("version").to_string();
        assert!(err.contains("unknown budget state format"), "{err}");
    }
}
