//! Toggle overrides and revocations on disk (`server.state_dir/admin-state.json`): what the
//! admin API changed survives a restart.
//!
//! * Written atomically ([`super::persist::write_atomic`]) on every change, before the admin
//!   API answers: an acknowledged change is on disk.
//! * The file carries a format name and version. A file that cannot be read, is not valid
//!   JSON, or has another format or version stops startup: revocations are never silently
//!   forgotten. Revocations that expired are dropped on load (and the file rewritten).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::persist::{PersistError, write_atomic};
use super::{Millis, Revocation};

/// The file name under `state_dir`.
pub const FILE: &str = "admin-state.json";
/// The `format` field.
pub const FORMAT: &str = "fortress-admin-state";
/// The current format version.
pub const VERSION: u32 = 1;

/// What the admin API changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminState {
    /// Toggle overrides, sorted by name.
    pub toggles: Vec<(String, bool)>,
    /// Unexpired revocations.
    pub revocations: Vec<Revocation>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    saved_at_ms: Millis,
    toggles: std::collections::BTreeMap<String, bool>,
    revocations: Vec<StoredRevocation>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRevocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<u64>,
    expires_at: u64,
    reason: String,
}

impl From<&Revocation> for StoredRevocation {
    fn from(r: &Revocation) -> Self {
        match r {
            Revocation::Token {
                jti,
                expires_at,
                reason,
            } => Self {
                jti: Some(jti.clone()),
                subject: None,
                before: None,
                expires_at: *expires_at,
                reason: reason.clone(),
            },
            Revocation::Subject {
                subject,
                before,
                expires_at,
                reason,
            } => Self {
                jti: None,
                subject: Some(subject.clone()),
                before: Some(*before),
                expires_at: *expires_at,
                reason: reason.clone(),
            },
        }
    }
}

impl StoredRevocation {
    fn into_revocation(self) -> Option<Revocation> {
        match (self.jti, self.subject, self.before) {
            (Some(jti), None, None) => Some(Revocation::Token {
                jti,
                expires_at: self.expires_at,
                reason: self.reason,
            }),
            (None, Some(subject), Some(before)) => Some(Revocation::Subject {
                subject,
                before,
                expires_at: self.expires_at,
                reason: self.reason,
            }),
            _ => None,
        }
    }
}

/// Reads the persisted admin state (empty when there is no file yet), without the
/// revocations that expired by `now`. Creates `dir` when missing.
pub fn load(dir: &Path, now: Millis) -> Result<AdminState, PersistError> {
    let file = dir.join(FILE);
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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AdminState::default()),
        Err(e) => return Err(fail(format!("cannot read the admin state: {e}"))),
    };
    let corrupt = |e: String| {
        fail(format!(
            "the admin state file is corrupt ({e}); refusing to start without its revocations \
             and toggle overrides: restore it from a backup, or delete it to forget them"
        ))
    };
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let format = doc.get("format").and_then(|v| v.as_str());
    let version = doc.get("version").and_then(|v| v.as_u64());
    if format != Some(FORMAT) || version != Some(u64::from(VERSION)) {
        return Err(fail(format!(
            "unknown admin state format {:?} version {:?} (this fortress reads `{FORMAT}` \
             version {VERSION}); refusing to start without its revocations",
            format.unwrap_or("-"),
            version
        )));
    }
    let parsed: File = serde_json::from_value(doc).map_err(|e| corrupt(e.to_string()))?;
    let mut revocations = Vec::with_capacity(parsed.revocations.len());
    for r in parsed.revocations {
        let r = r
            .into_revocation()
            .ok_or_else(|| corrupt("a revocation names neither one jti nor a subject".into()))?;
        if now < r.expires_at().saturating_mul(1000) {
            revocations.push(r);
        }
    }
    Ok(AdminState {
        toggles: parsed.toggles.into_iter().collect(),
        revocations,
    })
}

/// Writes `state` atomically.
pub fn save(dir: &Path, now: Millis, state: &AdminState) -> Result<(), PersistError> {
    let file = dir.join(FILE);
    let doc = File {
        format: FORMAT.into(),
        version: VERSION,
        saved_at_ms: now,
        toggles: state.toggles.iter().cloned().collect(),
        revocations: state
            .revocations
            .iter()
            .map(StoredRevocation::from)
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| PersistError {
        path: file.clone(),
        message: e.to_string(),
    })?;
    write_atomic(dir, FILE, &bytes).map_err(|e| PersistError {
        path: file,
        message: format!("cannot write the admin state: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_prunes_expired_and_refuses_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path(), 0).expect("empty"), AdminState::default());
        let state = AdminState {
            toggles: vec![("a".into(), true), ("b".into(), false)],
            revocations: vec![
                Revocation::Token {
                    jti: "j1".into(),
                    expires_at: 100,
                    reason: "leak".into(),
                },
                Revocation::Subject {
                    subject: "alice".into(),
                    before: 50,
                    expires_at: 200,
                    reason: "logout".into(),
                },
            ],
        };
        save(dir.path(), 1, &state).expect("save");
        assert!(!dir.path().join(".admin-state.json.tmp").exists());
        assert_eq!(load(dir.path(), 99_999).expect("load"), state);
        // At 100 s the token revocation has expired; the subject one has not.
        let later = load(dir.path(), 100_000).expect("load");
        assert_eq!(later.revocations, state.revocations[1..].to_vec());
        assert_eq!(later.toggles, state.toggles);

        std::fs::write(dir.path().join(FILE), b"{").expect("write");
        let err = load(dir.path(), 0).expect_err("corrupt").to_string();
        assert!(err.contains("corrupt") && err.contains(FILE), "{err}");
        std::fs::write(
            dir.path().join(FILE),
            br#"{"format":"fortress-admin-state","version":2,"saved_at_ms":0,"toggles":{},"revocations":[]}"#,
        )
        .expect("write");
        let err = load(dir.path(), 0).expect_err("version").to_string();
        assert!(err.contains("unknown admin state format"), "{err}");
        std::fs::write(
            dir.path().join(FILE),
            br#"{"format":"fortress-admin-state","version":1,"saved_at_ms":0,"toggles":{},"revocations":[{"expires_at":1,"reason":"x"}]}"#,
        )
        .expect("write");
        assert!(load(dir.path(), 0).is_err());
    }
}
