//! `fortress audit verify DIR`: checks the whole trail, file by file, line by line.
//!
//! A line is intact when it is exactly the canonical form of what it parses to, its `hash` is
//! the hash of the rest, its `seq` follows the previous record's and its `prev_hash` is the
//! previous record's `hash` (across files, days and restarts). Every file but the newest ends
//! with a `seal` whose `count` is the number of records in the file; each seal's count matches
//! its line number. The first kept record links to [`GENESIS`], or a later `retention` record
//! vouches for where the kept trail starts (older files were deleted by retention, not by
//! someone else).
//!
//! Outcomes: [`Verdict::Sealed`] (exit 0), [`Verdict::Unsealed`] (exit 3: every record checks
//! but the newest file does not end with a seal — a crash, or a cut tail; compare the last seq
//! with a published anchor), [`VerifyError::Tampered`] (exit 1, naming the first bad file and
//! line), [`VerifyError::Cannot`] (exit 2: unreadable directory, no files, a missing key).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::{ChainKey, GENESIS, hash_of};
use super::record::canonical;
use super::writer::list;

/// A trail that checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checks and the newest file ends with a seal.
    Sealed(Summary),
    /// Every record checks, but the newest file ends without a seal.
    Unsealed(Summary),
}

/// What was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records checked.
    pub records: u64,
    /// Files checked.
    pub files: usize,
    /// The last record's seq and hash (the chain head).
    pub last: Option<(u64, String)>,
    /// A partial last line found at the end of the newest file (never acknowledged).
    pub partial_tail: bool,
}

/// Why a trail does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A record was edited, inserted, deleted or moved, a file cut short or missing.
    #[error("{file}:{line}: {why}")]
    Tampered {
        /// The file.
        file: String,
        /// 1-based line number (0: the file as a whole).
        line: u64,
        /// What is wrong.
        why: String,
    },
    /// The trail cannot be checked.
    #[error("{0}")]
    Cannot(String),
}

/// Checks the trail in `dir`; `keys` are the HMAC keys (any number: keys rotate).
pub fn verify(dir: &Path, keys: &[ChainKey]) -> Result<Verdict, VerifyError> {
    let keys: HashMap<&str, &ChainKey> = keys.iter().map(|k| (k.id(), k)).collect();
    let files = list(dir).map_err(|e| VerifyError::Cannot(format!("{}: {e}", dir.display())))?;
    if files.is_empty() {
        return Err(VerifyError::Cannot(format!(
            "{}: no audit files (audit-YYYY-MM-DD.jsonl)",
            dir.display()
        )));
    }
    let mut prev: Option<(u64, String)> = None;
    let mut first_link: Option<(String, u64, String)> = None; // file, seq, prev_hash
    let mut vouched: Vec<(Option<u64>, Option<String>)> = Vec::new();
    let mut records = 0u64;
    let mut sealed_at_end = false;
    let mut partial_tail = false;
    let n_files = files.len();
    for (i, (_, path, _)) in files.iter().enumerate() {
        let newest = i + 1 == n_files;
        let name = file_label(path);
        let bytes = std::fs::read(path).map_err(|e| VerifyError::Cannot(format!("{name}: {e}")))?;
        let tampered = |line: u64, why: String| VerifyError::Tampered {
            file: name.clone(),
            line,
            why,
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| tampered(0, "not UTF-8".into()))?;
        let (body, tail) = match text.rfind('\n') {
            Some(i) => (&text[..=i], &text[i + 1..]),
            None => ("", text),
        };
        if !tail.is_empty() {
            if newest {
                // A crash mid-write: that record was never acknowledged.
                partial_tail = true;
            } else {
                return Err(tampered(
                    body.lines().count() as u64 + 1,
                    "partial last line in a file that is not the newest".into(),
                ));
            }
        }
        if body.is_empty() {
            return Err(tampered(0, "empty file".into()));
        }
        sealed_at_end = false;
        for (n, line) in body.lines().enumerate() {
            let lineno = n as u64 + 1;
            let v: Value = serde_json::from_str(line)
                .map_err(|_| tampered(lineno, "not a JSON record".into()))?;
            if canonical(&v) != line {
                return Err(tampered(lineno, "not in canonical form (edited)".into()));
            }
            let obj = v
                .as_object()
                .ok_or_else(|| tampered(lineno, "not a JSON object".into()))?;
            let seq = obj
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or_else(|| tampered(lineno, "no seq".into()))?;
            let hash = obj
                .get("hash")
                .and_then(Value::as_str)
                .ok_or_else(|| tampered(lineno, "no hash".into()))?;
            let prev_hash = obj
                .get("prev_hash")
                .and_then(Value::as_str)
                .ok_or_else(|| tampered(lineno, "no prev_hash".into()))?;
            let key = match obj.get("key_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(*keys.get(id.as_str()).ok_or_else(|| {
                    VerifyError::Cannot(format!(
                        "{name}:{lineno}: signed with HMAC key id {id}; pass that key"
                    ))
                })?),
                Some(_) => return Err(tampered(lineno, "bad key_id".into())),
            };
            let mut without = obj.clone();
            without.remove("hash");
            if hash_of(&canonical(&Value::Object(without)), key) != hash {
                return Err(tampered(
                    lineno,
                    format!("hash mismatch at seq {seq} (edited)"),
                ));
            }
            match &prev {
                None => first_link = Some((name.clone(), seq, prev_hash.to_owned())),
                Some((pseq, phash)) => {
                    if seq != pseq + 1 {
                        let why = if n == 0 {
                            format!(
                                "seq jumps from {pseq} to {seq} at the start of this file \
                                 (records or a file missing before it)"
                            )
                        } else {
                            format!(
                                "seq {seq} follows {pseq} (a record deleted, inserted or moved)"
                            )
                        };
                        return Err(tampered(lineno, why));
                    }
                    if prev_hash != phash {
                        return Err(tampered(
                            lineno,
                            format!("prev_hash does not match the hash of seq {pseq}"),
                        ));
                    }
                }
            }
            let event = obj.get("event").and_then(Value::as_str);
            sealed_at_end = event == Some("seal");
            if sealed_at_end {
                let count = obj
                    .get("detail")
                    .and_then(|d| d.get("count"))
                    .and_then(Value::as_u64);
                if count != Some(lineno) {
                    return Err(tampered(
                        lineno,
                        format!(
                            "seal counts {count:?} records but it is record {lineno} of the file"
                        ),
                    ));
                }
            }
            if event == Some("retention") {
                let d = obj.get("detail");
                vouched.push((
                    d.and_then(|d| d.get("kept_from_seq"))
                        .and_then(Value::as_u64),
                    d.and_then(|d| d.get("kept_from_prev_hash"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                ));
            }
            prev = Some((seq, hash.to_owned()));
            records += 1;
        }
        if !newest && !sealed_at_end {
            return Err(tampered(
                body.lines().count() as u64,
                "file does not end with a seal (cut short)".into(),
            ));
        }
    }
    // Where the kept trail starts.
    if let Some((file, seq, prev_hash)) = first_link {
        let genesis = seq == 0 && prev_hash == GENESIS;
        let vouched_for = vouched
            .iter()
            .any(|(s, h)| *s == Some(seq) && h.as_deref() == Some(prev_hash.as_str()));
        if !genesis && !vouched_for {
            return Err(VerifyError::Tampered {
                file,
                line: 1,
                why: format!(
                    "the trail starts at seq {seq} but no retention record says older files \
                     were deleted (files missing)"
                ),
            });
        }
    }
    let summary = Summary {
        records,
        files: n_files,
        last: prev,
        partial_tail,
    };
    Ok(if sealed_at_end && !partial_tail {
        Verdict::Sealed(summary)
    } else {
        Verdict::Unsealed(summary)
    })
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| PathBuf::from(path).display().to_string())
}
