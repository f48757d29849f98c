//! Failed-authentication throttling, compiled (top-level `failed_auth_limit:`).

use std::time::Duration;

/// Default `max` when `failed_auth_limit:` is absent.
pub const DEFAULT_MAX: u64 = 50;
/// Default window when `failed_auth_limit:` is absent.
pub const DEFAULT_PER: Duration = Duration::from_secs(60);

/// More than `max` failed authentications from one client in one window of `per` → the
/// client is refused (429) until the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedAuthLimit {
    /// Failures tolerated per window.
    pub max: u64,
    /// The window (fixed windows aligned to the Unix epoch).
    pub per: Duration,
}

impl FailedAuthLimit {
    /// The built-in default (on).
    pub const DEFAULT: Self = Self {
        max: DEFAULT_MAX,
        per: DEFAULT_PER,
    };

    /// The window in milliseconds (at least 1).
    pub fn per_ms(&self) -> u64 {
        u64::try_from(self.per.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}
