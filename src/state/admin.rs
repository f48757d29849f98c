//! The admin API's own state, for the life of the process: where its changes are persisted,
//! the lock that serializes them, and what `GET /admin/policy` reports about reloads. Kept in
//! `state/` (the admin module reads it; `state` must not import `admin`).

use std::path::PathBuf;
use std::sync::Mutex;

/// The admin API's state, for the life of the process.
#[derive(Debug)]
pub struct AdminControl {
    /// `server.state_dir` at startup (toggle overrides and revocations are written there).
    pub state_dir: Option<PathBuf>,
    /// Serializes changes: one read-modify-write of the state file at a time.
    pub writes: tokio::sync::Mutex<()>,
    /// What `GET /admin/policy` reports about loads and reloads.
    reloads: Mutex<ReloadInfo>,
}

/// When the active policy was loaded, and the last refused reload.
#[derive(Debug, Clone, Default)]
pub struct ReloadInfo {
    /// When the active policy was installed (ms since the epoch).
    pub loaded_at_ms: u64,
    /// The last refused reload since then: when, and why.
    pub last_error: Option<(u64, Vec<String>)>,
}

impl AdminControl {
    /// The admin state of a process that started at `now_ms`.
    pub fn new(state_dir: Option<PathBuf>, now_ms: u64) -> Self {
        Self {
            state_dir,
            writes: tokio::sync::Mutex::new(()),
            reloads: Mutex::new(ReloadInfo {
                loaded_at_ms: now_ms,
                last_error: None,
            }),
        }
    }

    /// A policy was installed by a reload (a refused reload before it is forgotten).
    pub fn reloaded(&self, now_ms: u64) {
        if let Ok(mut r) = self.reloads.lock() {
            *r = ReloadInfo {
                loaded_at_ms: now_ms,
                last_error: None,
            };
        }
    }

    /// A reload was refused.
    pub fn reload_refused(&self, now_ms: u64, errors: &[String]) {
        if let Ok(mut r) = self.reloads.lock() {
            r.last_error = Some((now_ms, errors.to_vec()));
        }
    }

    /// What `GET /admin/policy` reports.
    pub fn reload_info(&self) -> ReloadInfo {
        self.reloads.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
