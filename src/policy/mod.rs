//! The compiled policy: immutable, validated, and nothing else.
//!
//! `config/` turns the YAML text into a [`Policy`]; a reload compiles a new one and swaps it
//! whole. This module holds data and pure lookups only: no caches, no counters, no key sets
//! (those are live state in `store/`, kept across reloads), and it imports nothing from the
//! request pipeline, the proxy, metrics or the live state.

pub mod assertion;
pub mod audit;
pub mod auth;
pub mod auth_throttle;
pub mod classes;
pub mod edge;
pub mod headers;
pub mod host;
pub mod identity;
pub mod ip_allow;
pub mod limits;
pub mod rbac;
pub mod readiness;
pub mod route;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod toggles;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use http::uri::Authority;
use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;

/// A validated, compiled policy (with the process settings of the same file). Immutable;
/// replaced whole on reload.
#[derive(Debug)]
pub struct Policy {
    /// Process settings.
    pub server: ServerSettings,
    /// What unmatched requests get.
    pub default: DefaultAction,
    /// Global dry-run mode (routes may override).
    pub dry_run: bool,
    /// Route table and matchers.
    pub router: route::Router,
    /// Roles → permissions, expanded.
    pub rbac: rbac::Rbac,
    /// JWT authentication, if configured.
    pub auth: Option<auth::AuthSettings>,
    /// Request header rules (spellings refused, client headers dropped, `_` names).
    pub headers: headers::HeaderRules,
    /// Short SHA-256 of the file's bytes; identifies the active policy.
    pub hash: String,
    /// Files the policy read besides itself (secret files, PEM keys): watched like the config
    /// file, so replacing one reloads the policy without SIGHUP.
    pub input_files: Vec<std::path::PathBuf>,
    /// How request paths are canonicalized (`paths:`).
    pub paths: PathSettings,
    /// The audit trail (`audit:`), if configured.
    pub audit: Option<audit::AuditSettings>,
    /// The identity assertion added to forwarded requests (`identity_assertion:`).
    pub assertion: Option<assertion::AssertionSettings>,
    /// Lint findings that do not refuse the policy (`fortress check` prints them, startup
    /// and reload log them), each `FILE:LINE:COL: message`.
    pub warnings: Vec<String>,
    /// Policy-wide edge rules (unmatched requests, refusals before routing, admin listener).
    pub edge: edge::EdgeRules,
    /// Policy-wide rate limits and the per-tenant budget.
    pub limits: limits::Limits,
    /// Concurrency classes (`classes:`); routes refer to them by index.
    pub classes: classes::Classes,
    /// Policy-wide IP allowlist (`allow_ips:`); every request must pass it.
    pub allow_ips: Option<std::sync::Arc<ip_allow::IpAllowList>>,
    /// Failed-authentication throttling (`failed_auth_limit:`); `None` when off.
    pub failed_auth: Option<auth_throttle::FailedAuthLimit>,
    /// Trace sampling and OTLP export (`telemetry:` and the `OTEL_*` variables).
    pub telemetry: telemetry::TelemetrySettings,
    /// Readiness guards (`readiness:`) and the route each guards.
    pub readiness: readiness::Readiness,
    /// Feature toggles (`toggles:`); routes refer to them by index (`requires_toggle`).
    pub toggles: toggles::Toggles,
    /// The admin API's permissions (`admin.permissions`).
    pub admin: toggles::AdminPermissions,
    /// Where live state is kept (`store:`); read at startup only.
    pub store: store::StoreSettings,
}

/// `paths:` settings, compiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathSettings {
    /// What a `;` path parameter in a segment gets.
    pub matrix_parameters: MatrixParameters,
    /// Lower-case paths (ASCII letters outside `%XX`) before matching and forwarding.
    pub case_insensitive: bool,
    /// What a path gets whose case or trailing-slash spelling fortress routes differently.
    pub route_variants: RouteVariants,
}

/// What a request gets when its path, read the way a case- or trailing-slash-insensitive app
/// reads it (`/Admin/x` as `/admin/x`, `/api/admin/` as `/api/admin`), is routed by fortress
/// to a different route than the spelling sent (`paths.route_variants`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteVariants {
    /// 400 `ambiguous_path`, in every mode (default).
    #[default]
    Refuse,
    /// Routed as sent. Only for apps that route strictly case- and slash-sensitively.
    Ignore,
}

/// What a path parameter (`;…` in a segment, raw or `%3B`) gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatrixParameters {
    /// 400 `path_parameter` (default).
    #[default]
    Reject,
    /// `;…` is removed from each segment before matching, and the app gets the stripped
    /// path that was matched.
    Strip,
}

impl Policy {
    /// The identity headers only fortress may set (the configured set, or the built-in one).
    pub fn identity_headers(&self) -> &identity::IdentityHeaders {
        match &self.auth {
            Some(a) => &a.identity_headers,
            None => identity::IdentityHeaders::builtin(),
        }
    }
}

/// `server:` settings, compiled.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Client listener address.
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin: SocketAddr,
    /// Probe listener address (`/livez`, `/healthz`, `/readyz`, `/metrics` only), if any.
    pub probes: Option<SocketAddr>,
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
    /// HTTP/1.1 client connections keep an upstream connection of their own
    /// (`proxy/affinity.rs`); false: the shared pool only.
    pub upstream_affinity: bool,
    /// Extra host names the admin listener answers to (lower case).
    pub admin_hosts: Vec<String>,
    /// `server.hosts`: the hosts this listener serves (others get 421); `None`: any host.
    pub hosts: Option<Vec<host::HostPattern>>,
    /// Where budget counters are persisted (`server.state_dir`); `None`: in memory only.
    pub state_dir: Option<PathBuf>,
    /// `server.max_header_bytes`: largest request head (431 beyond).
    pub max_header_bytes: usize,
    /// `server.max_headers`: most header fields in a request head (431 beyond).
    pub max_headers: usize,
}

impl ServerSettings {
    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
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
    /// After SIGTERM: serve on with `/readyz` at 503 this long before the drain.
    pub shutdown_delay: Duration,
    /// A WebSocket tunnel with no bytes either way for this long is closed (both sides).
    pub websocket_idle: Duration,
    /// The longest wait for the next chunk of a request body (408 past it).
    pub body_read: Duration,
}

/// Enforcement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Denials are enforced.
    Enforce,
    /// Denials are recorded as `dry_run_deny` and the request is forwarded.
    DryRun,
}

/// What requests that match no route get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// 404 JSON error, no upstream call.
    Deny,
    /// Forwarded upstream (not recommended).
    Allow,
}

/// Deployment environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer machine: relaxations may be configured explicitly.
    Local,
    /// Everything else: fail-closed rules apply.
    Production,
}
