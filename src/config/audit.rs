//! `audit:` → [`AuditSettings`].

use std::path::Path;
use std::time::Duration;

use super::Env;
use super::compile::{duration_or, resolve};
use super::raw::RawAudit;
use super::yaml::ConfigError;
use crate::policy::Environment;
use crate::policy::audit::{AuditSettings, Durability, Include, IncludeSet};

/// Default queue capacity.
const DEFAULT_QUEUE: usize = 10_000;

/// Compiles `audit:`; errors go to `errors`.
pub fn compile(
    raw: &RawAudit,
    base: &Path,
    environment: Environment,
    env: &dyn Env,
    errors: &mut Vec<ConfigError>,
) -> Option<AuditSettings> {
    let before = errors.len();
    let dir = raw.dir.as_ref().map(|d| resolve(base, &d.value));
    let stdout = raw.stdout.unwrap_or(false);
    if dir.is_none() && !stdout {
        errors.push(ConfigError::whole(
            "`audit` needs a `dir`, `stdout: true`, or both: records must go somewhere",
        ));
    }
    let include = match &raw.include {
        None => IncludeSet::default()
            .with(Include::Denied)
            .with(Include::Violations),
        Some(list) => list
            .iter()
            .fold(IncludeSet::default(), |s, i| s.with(i.value)),
    };
    let durability = raw.durability.unwrap_or(match environment {
        Environment::Local => Durability::Batched,
        Environment::Production => Durability::Strict,
    });
    let queue = match &raw.queue {
        None => DEFAULT_QUEUE,
        Some(q) if q.value == 0 => {
            errors.push(ConfigError::at(q.pos, "`queue` must be at least 1"));
            DEFAULT_QUEUE
        }
        Some(q) => q.value as usize,
    };
    let retention_days = match &raw.retention_days {
        Some(d) if d.value == 0 => {
            errors.push(ConfigError::at(
                d.pos,
                "`retention_days` must be at least 1 (today's file is never deleted)",
            ));
            None
        }
        other => other.as_ref().map(|d| d.value),
    };
    let max_total_size =
        raw.max_total_size
            .as_ref()
            .and_then(|s| match super::edge::parse_size(&s.value) {
                Some(n) if n > 0 => Some(n),
                _ => {
                    errors.push(ConfigError::at(
                        s.pos,
                        format!(
                            "`{}` is not a size: expected a positive number of bytes with a unit \
                     (KiB, MiB, GiB) or plain bytes, e.g. 500MiB",
                            s.value
                        ),
                    ));
                    None
                }
            });
    let flush_interval = duration_or(&raw.flush_interval, Duration::from_secs(1), errors);
    let hmac_key = raw
        .hmac_key
        .as_ref()
        .and_then(|k| super::auth::secret(k, base, environment, env, errors));
    let redact: Vec<_> = raw.redact.iter().map(|r| r.value).collect();
    let redact_key = raw
        .redact_key
        .as_ref()
        .and_then(|k| super::auth::secret(k, base, environment, env, errors));
    if let Some(first) = raw.redact.first()
        && raw.redact_key.is_none()
    {
        errors.push(ConfigError::at(
            first.pos,
            "`redact` needs a `redact_key` (`{ env: NAME }`): the fields are replaced by a keyed hash",
        ));
    }
    (errors.len() == before).then_some(AuditSettings {
        dir,
        stdout,
        include,
        durability,
        fsync: raw.fsync.unwrap_or(true),
        flush_interval,
        queue,
        retention_days,
        max_total_size,
        hmac_key,
        redact,
        redact_key,
    })
}
