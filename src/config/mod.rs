//! Text → [`Policy`]: the config file (process settings and policy in one YAML document)
//! parsed, checked and compiled, with every error reported at once as `file:line:col`.
//!
//! `raw.rs` mirrors the YAML, `yaml/` loads it strictly with positions, `compile.rs` (with
//! `auth.rs`, `rbac.rs`, `streams.rs`) checks every value and builds the [`Policy`], and
//! `lint.rs` refuses risky but well-formed policies. Nothing here is used per request.

pub mod assertion;
pub mod audit;
pub mod auth;
pub mod compile;
pub mod diag;
pub mod edge;
pub mod lifecycle;
pub mod limits;
pub mod lint;
pub mod production;
pub mod raw;
pub mod rbac;
pub mod readiness;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod toggles;
pub mod traffic_guards;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::policy::{DefaultAction, Environment, Policy, ServerSettings, Timeouts, TlsFiles};
pub use yaml::{ConfigError, Pos};

/// Every error found in one config file.
#[derive(Debug)]
pub struct LoadError {
    /// The file.
    pub file: PathBuf,
    /// The errors, in file order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match e.pos {
                Some(p) => write!(
                    f,
                    "{}:{}:{}: {}",
                    self.file.display(),
                    p.line,
                    p.col,
                    e.message
                )?,
                None => write!(f, "{}: {}", self.file.display(), e.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// All errors on one line (for a single log record).
    pub fn one_line(&self) -> String {
        self.to_string().replace('\n', "; ")
    }
}

/// Where the config reads environment variables from (a trait, so tests never mutate the
/// process environment).
pub trait Env {
    /// The variable's value, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        crate::env::named(name)
    }
}

/// Reads, parses and compiles a config file (blocking file IO: call it off the async runtime,
/// e.g. in `spawn_blocking`).
pub fn load_file(path: &Path) -> Result<Policy, LoadError> {
    let fail = |errors| LoadError {
        file: path.to_path_buf(),
        errors,
    };
    let bytes = std::fs::read(path)
        .map_err(|e| fail(vec![ConfigError::whole(format!("cannot read file: {e}"))]))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| fail(vec![ConfigError::whole("file is not valid UTF-8")]))?;
    load_str(&text, path)
}

/// Parses and compiles config text that was read from `path`.
pub fn load_str(text: &str, path: &Path) -> Result<Policy, LoadError> {
    load_str_with_env(text, path, &ProcessEnv)
}

/// [`load_str`] with an explicit environment.
pub fn load_str_with_env(text: &str, path: &Path, env: &dyn Env) -> Result<Policy, LoadError> {
    load_inner(text, path, env, None).map(|(p, _)| p)
}

/// A config as `fortress run` and `fortress check` load it: compiled, and reviewed by the
/// environment policy of fail-closed startup ([`production`]).
#[derive(Debug)]
pub struct Reviewed {
    /// The compiled policy.
    pub policy: Policy,
    /// With `environment: local`: the relaxations the config states (one warning each).
    pub relaxations: Vec<String>,
}

/// Reads, parses, compiles and reviews a config file: every compile error and every reason
/// not to start (outside `environment: local`) is reported at once.
pub fn load_file_reviewed(
    path: &Path,
    rt: &production::Runtime<'_>,
) -> Result<Reviewed, LoadError> {
    let fail = |errors| LoadError {
        file: path.to_path_buf(),
        errors,
    };
    let bytes = std::fs::read(path)
        .map_err(|e| fail(vec![ConfigError::whole(format!("cannot read file: {e}"))]))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| fail(vec![ConfigError::whole("file is not valid UTF-8")]))?;
    load_str_reviewed(&text, path, rt)
}

/// [`load_file_reviewed`] on text read from `path` (a reload applies the same rules).
pub fn load_str_reviewed(
    text: &str,
    path: &Path,
    rt: &production::Runtime<'_>,
) -> Result<Reviewed, LoadError> {
    let offline = production::OfflineEnv;
    let env: &dyn Env = if rt.offline { &offline } else { rt.env };
    load_inner(text, path, env, Some(rt)).map(|(policy, relaxations)| Reviewed {
        policy,
        relaxations,
    })
}

fn load_inner(
    text: &str,
    path: &Path,
    env: &dyn Env,
    review: Option<&production::Runtime<'_>>,
) -> Result<(Policy, Vec<String>), LoadError> {
    let fail = |errors| LoadError {
        file: path.to_path_buf(),
        errors,
    };
    // Errors from parsing and from compiling what did parse are reported together.
    let (raw, mut errors) = yaml::from_str_partial::<raw::RawConfig>(text);
    let Some(raw) = raw else {
        return Err(fail(errors));
    };
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let mut relaxations = Vec::new();
    if let Some(rt) = review {
        let r = production::review(&raw, base, rt);
        errors.extend(r.errors);
        relaxations = r.relaxations;
    }
    match compile::compile(raw, base, short_hash(text.as_bytes()), env) {
        Ok(mut config) if errors.is_empty() => {
            for w in &mut config.warnings {
                *w = format!("{}:{w}", path.display());
            }
            Ok((config, relaxations))
        }
        Ok(_) => {
            yaml::sort(&mut errors);
            Err(fail(errors))
        }
        Err(more) => {
            errors.extend(more);
            yaml::sort(&mut errors);
            Err(fail(errors))
        }
    }
}

/// The JSON Schema of the config file, generated from the raw types.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(raw::RawConfig);
    serde_json::to_string_pretty(&schema).unwrap_or_else(|_| "{}".into())
}

/// The first 8 bytes of the SHA-256 of `bytes`, in hex: the policy version.
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    // INVARIANT: a SHA-256 digest is 32 bytes.
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
