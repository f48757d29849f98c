//! Wall-clock time for everything time-based on the request path: token time checks, rate
//! limits, budgets (UTC day and month windows), failed-authentication windows. One [`Clock`]
//! per process, shared by every policy version.
//!
//! Tests control it: with `FORTRESS_TEST_CLOCK=/path/to/file` in the environment, "now" is the
//! number of milliseconds since the Unix epoch written in that file (re-read on every call, so
//! a test moves time by rewriting the file; write it atomically, with a rename). This is a test
//! hook: fortress refuses to start with it outside `environment: local`, and says so loudly
//! when it is on. An unreadable or malformed file falls back to the system clock for that call.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (the same unit as `store::Millis`).
pub type Millis = u64;

/// The environment variable that switches the test clock on.
pub const TEST_CLOCK_ENV: &str = crate::env::FORTRESS_TEST_CLOCK;

/// Where "now" comes from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// Milliseconds since the epoch, read from this file on every call (tests only).
    File(PathBuf),
    /// Milliseconds since the epoch, set by its holder (`fortress test` and `fortress replay`
    /// judge each request at its own time; never built from the environment).
    Manual(std::sync::Arc<std::sync::atomic::AtomicU64>),
}

impl Clock {
    /// The clock `FORTRESS_TEST_CLOCK` asks for, else the system clock.
    pub fn from_env() -> Self {
        match crate::env::var_os(TEST_CLOCK_ENV) {
            Some(path) if !path.is_empty() => Clock::File(PathBuf::from(path)),
            _ => Clock::System,
        }
    }

    /// Whether this is the test clock.
    pub fn is_test(&self) -> bool {
        matches!(self, Clock::File(_) | Clock::Manual(_))
    }

    /// Now, in milliseconds since the Unix epoch (UTC).
    pub fn now_ms(&self) -> Millis {
        match self {
            Clock::System => system_ms(),
            Clock::File(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<Millis>().ok())
                .unwrap_or_else(system_ms),
            Clock::Manual(ms) => ms.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Now, in whole seconds since the Unix epoch (JWT claim times).
    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

fn system_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_clock_reads_the_file_each_time_and_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("now");
        let clock = Clock::File(path.clone());
        std::fs::write(&path, "86400000\n").unwrap();
        assert_eq!(clock.now_ms(), 86_400_000);
        assert_eq!(clock.now_secs(), 86_400);
        std::fs::write(&path, "90000000").unwrap();
        assert_eq!(clock.now_ms(), 90_000_000);
        std::fs::write(&path, "not a number").unwrap();
        assert!(clock.now_ms() > 1_700_000_000_000);
        assert!(Clock::System.now_ms() > 1_700_000_000_000);
        assert!(!Clock::System.is_test() && clock.is_test());
    }
}
