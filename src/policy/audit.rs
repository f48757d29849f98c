//! `audit:` settings, compiled. The writer settings (directory, stdout, fsync, queue,
//! retention, HMAC key) take effect at startup; `include`, `durability` and `redact` are read
//! per request from the active policy, so a reload changes them.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

/// What gets a record, beyond what always does (admin changes, reloads, startup, shutdown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Include {
    /// Every refusal at any stage, and every dry-run denial.
    Denied,
    /// Requests to `privileged: true` routes, and requests let through by a cross-tenant
    /// permission.
    Privileged,
    /// NDJSON stream violations.
    Violations,
    /// Budget warnings and exhaustion.
    Budget,
    /// Admin API changes (always recorded; accepted for clarity).
    Admin,
    /// Every request.
    All,
}

/// When a response that needs a record is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The response waits until its record is written (and fsynced with `fsync: true`): a
    /// crash never leaves a served response without its record. Default outside `local`.
    Strict,
    /// Records are written within `flush_interval`; responses do not wait. Default in `local`.
    Batched,
}

/// A field `redact` can hide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Redact {
    /// The client IP.
    ClientIp,
    /// The token's subject.
    Subject,
    /// The token's tenant and the requested tenant.
    Tenant,
}

/// Compiled `audit:`.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Daily files here (`None`: stdout only).
    pub dir: Option<PathBuf>,
    /// Also write records to stdout (JSON lines with `"type":"audit"`).
    pub stdout: bool,
    /// What gets a record.
    pub include: IncludeSet,
    /// Strict or batched.
    pub durability: Durability,
    /// `fsync` each batch.
    pub fsync: bool,
    /// Batched mode: records are written at least this often.
    pub flush_interval: Duration,
    /// Records waiting for the writer at most; beyond, requests that need a record get 503.
    pub queue: usize,
    /// Delete files of days older than this.
    pub retention_days: Option<u32>,
    /// Delete the oldest files while the directory is larger than this (bytes).
    pub max_total_size: Option<u64>,
    /// HMAC key of the chain (from the environment).
    pub hmac_key: Option<String>,
    /// Fields replaced by a keyed hash.
    pub redact: Vec<Redact>,
    /// The key of that hash.
    pub redact_key: Option<String>,
}

/// A set of [`Include`] values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncludeSet(u8);

impl IncludeSet {
    /// The set with `i` added.
    pub fn with(self, i: Include) -> Self {
        Self(self.0 | 1 << i as u8)
    }

    /// Whether `i` is in the set (`all` includes everything).
    pub fn has(self, i: Include) -> bool {
        self.0 & (1 << Include::All as u8) != 0 || self.0 & (1 << i as u8) != 0
    }
}
