//! The config file: process settings and policy in one YAML document.
//!
//! `raw.rs` mirrors the YAML, `yaml.rs` loads it strictly with positions, `compile.rs` checks
//! every value and builds the runtime [`Config`]. A [`ConfigHandle`] holds the active config
//! behind one `ArcSwap`; requests take one snapshot each and keep it until they finish.

pub mod auth;
pub mod compile;
pub mod lint;
pub mod raw;
pub mod rbac;
pub mod streams;
pub mod yaml;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use ipnet::IpNet;

pub use raw::{DefaultAction, Environment};
pub use yaml::{ConfigError, Pos};

use crate::pipeline::route::Router;

/// A validated, compiled config. Immutable; replaced whole on reload.
#[derive(Debug)]
pub struct Config {
    /// Process settings.
    pub server: ServerSettings,
    /// What unmatched requests get.
    pub default: DefaultAction,
    /// Global dry-run mode (routes may override).
    pub dry_run: bool,
    /// Route table and matchers.
    pub router: Router,
    /// Roles → permissions, expanded.
    pub rbac: rbac::Rbac,
    /// JWT authentication, if configured.
    pub auth: Option<Arc<auth::AuthSettings>>,
    /// Short SHA-256 of the file's bytes; identifies the active policy.
    pub hash: String,
}

/// `server:` settings, compiled.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Client listener address.
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin: SocketAddr,
    /// Upstream `host:port`.
    pub upstream: Authority,
    /// TLS files, if the client listener serves TLS.
    pub tls: Option<TlsFiles>,
    /// Deployment environment.
    pub environment: Environment,
    /// Peers whose forwarding headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Plain-HTTP requests need a trusted proxy vouching `X-Forwarded-Proto: https`.
    pub require_https: bool,
    /// Local only: bearer tokens accepted over plain, unvouched HTTP.
    pub allow_insecure_local: bool,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// Connection cap on the client listener.
    pub max_connections: usize,
}

/// Certificate chain and key files (absolute or relative to the working directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Timeouts for each phase.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TLS handshake.
    pub handshake: Duration,
    /// Request header read.
    pub header_read: Duration,
    /// Idle client connection.
    pub idle: Duration,
    /// Upstream TCP connect.
    pub upstream_connect: Duration,
    /// Upstream response headers (default for routes).
    pub upstream_response: Duration,
    /// Drain deadline at shutdown.
    pub shutdown_grace: Duration,
}

impl ServerSettings {
    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

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
        std::env::var(name).ok()
    }
}

/// Reads, parses and compiles a config file.
pub fn load_file(path: &Path) -> Result<Config, LoadError> {
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
pub fn load_str(text: &str, path: &Path) -> Result<Config, LoadError> {
    load_str_with_env(text, path, &ProcessEnv)
}

/// [`load_str`] with an explicit environment.
pub fn load_str_with_env(text: &str, path: &Path, env: &dyn Env) -> Result<Config, LoadError> {
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
    match compile::compile(raw, base, short_hash(text.as_bytes()), env) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(fail(errors)),
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

pub fn short_hash(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The active config, swapped atomically on reload.
#[derive(Debug)]
pub struct ConfigHandle(ArcSwap<Config>);

impl ConfigHandle {
    /// Wraps the first config.
    pub fn new(config: Config) -> Self {
        Self(ArcSwap::from_pointee(config))
    }

    /// One load per request; the `Arc` keeps this version alive until the response ends.
    pub fn snapshot(&self) -> Arc<Config> {
        self.0.load_full()
    }

    /// Installs a new config, returning the old one.
    pub fn replace(&self, next: Config) -> Arc<Config> {
        self.0.swap(Arc::new(next))
    }
}
