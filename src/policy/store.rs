//! `store:` compiled: where live state (rate limits, budgets, concurrency leases, revocations,
//! toggle overrides) is kept. Read once at startup; a reload that changes it is refused
//! (restart to change).

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// `store:` compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreSettings {
    /// The backend.
    pub backend: Backend,
    /// What a request gets when the backend cannot answer in time.
    pub on_store_error: OnStoreError,
    /// Replicas sharing the limits: under `allow_local`, each replica enforces its share
    /// (the limit divided by this, at least 1).
    pub expected_replicas: u32,
    /// How old the local copy of revocations and toggle overrides may get before requests that
    /// depend on it are refused with 503 `state_unavailable`.
    pub max_staleness: Duration,
    /// Lease of a per-tenant concurrency slot held in a shared store: a replica that dies
    /// holding it gives it back after this long.
    pub lease: Duration,
}

/// The backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// In process (default): nothing else to run; limits are per instance.
    #[default]
    Memory,
    /// Redis, shared by every instance that names the same server and key prefix.
    Redis(RedisSettings),
}

/// `store.redis` compiled.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` (TLS) URL; may hold a password, so never printed.
    pub url: String,
    /// Prefix of every key; the format version (`v1:`) follows it.
    pub key_prefix: String,
    /// Longest a request waits for Redis.
    pub timeout: Duration,
    /// Connections (each multiplexes many requests).
    pub pool_size: usize,
    /// How often the local copy is compared with Redis (besides the change notifications).
    pub resync: Duration,
    /// A CA file for `rediss://` (else the system roots).
    pub ca_file: Option<std::path::PathBuf>,
}

impl RedisSettings {
    /// The URL with any password replaced by `***` (for logs and `fortress explain`).
    pub fn url_redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url_redacted())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .field("resync", &self.resync)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') || !user.is_empty() {
                if userinfo.contains(':') {
                    format!("{user}:***")
                } else {
                    "***".to_owned()
                }
            } else {
                String::new()
            };
            format!("{}://{masked}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// What a request gets when the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// 503 `state_unavailable` (default outside `environment: local`).
    #[default]
    Deny,
    /// Each replica enforces its share of every limit locally (limit ÷ `expected_replicas`)
    /// until Redis answers again.
    AllowLocal,
}

impl OnStoreError {
    /// The name, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::AllowLocal => "allow_local",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:s3cr@t@redis.svc:6380/1"),
            "rediss://app:***@redis.svc:6380/1"
        );
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://tok@h"), "redis://***@h");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
