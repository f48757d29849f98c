//! The config file as written: a serde mirror of the YAML, strict (unknown keys are errors).
//!
//! Nothing here is trusted yet; `compile.rs` turns it into the runtime [`super::Config`]. The
//! JSON Schema printed by `fortress schema` is generated from these types.

use schemars::JsonSchema;
use serde::Deserialize;

use super::yaml::Located;

/// The whole config file: process settings and policy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Fortress config")]
pub struct RawConfig {
    /// Schema version of this file; only `1` exists.
    #[serde(default)]
    pub version: Option<Located<u32>>,
    /// Listeners, upstream, TLS and timeouts.
    pub server: RawServer,
    /// What requests that match no route get: `deny` (404, default) or `allow` (forwarded).
    #[serde(default)]
    pub default: Option<DefaultAction>,
    /// Routes, matched by method and path pattern; the most specific pattern wins.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `server:` settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Client-facing listener, `IP:PORT`. Changing it needs a restart.
    pub listen: Located<String>,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`, `/admin/*`), `IP:PORT`.
    /// Default `127.0.0.1:9901`. Changing it needs a restart.
    #[serde(default)]
    pub admin: Option<Located<String>>,
    /// The application behind fortress, `http://HOST:PORT`.
    pub upstream: Located<String>,
    /// Serve TLS with this certificate chain and key (PEM). Absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// `local` or `production` (default). Production applies the fail-closed startup rules.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// Peers (CIDRs) whose `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Request-ID` are kept.
    #[serde(default)]
    pub trusted_proxies: Vec<Located<String>>,
    /// Timeouts for each phase of a connection and request.
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    /// Most client connections open at once on the client listener (default 10000).
    #[serde(default)]
    pub max_connections: Option<Located<u32>>,
}

/// `server.tls:` certificate and key files, re-read when they change.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain (leaf first); relative to the config file.
    pub cert: Located<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); relative to the config file.
    pub key: Located<String>,
}

/// `server.timeouts:` durations such as `500ms`, `10s`, `2m`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TLS handshake (default 10s).
    #[serde(default)]
    pub handshake: Option<Located<String>>,
    /// Reading a request's headers, against slowloris clients (default 10s).
    #[serde(default)]
    pub header_read: Option<Located<String>>,
    /// A client connection with no request in flight is closed after this (default 60s).
    #[serde(default)]
    pub idle: Option<Located<String>>,
    /// Connecting to the upstream (default 2s).
    #[serde(default)]
    pub upstream_connect: Option<Located<String>>,
    /// Upstream response headers after the request was sent (default 30s; routes may override).
    #[serde(default)]
    pub upstream_response: Option<Located<String>>,
    /// How long shutdown waits for in-flight requests to finish (default 30s).
    #[serde(default)]
    pub shutdown_grace: Option<Located<String>>,
}

/// One route.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name, used in metrics, logs and audit records.
    pub name: Located<String>,
    /// What requests this route matches.
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    /// Reachable without authentication. Must be set explicitly.
    #[serde(default)]
    pub public: Option<bool>,
    /// Upstream response timeout for this route (overrides `server.timeouts.upstream_response`).
    #[serde(default)]
    pub timeout: Option<Located<String>>,
}

/// `match:` of a route.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Path pattern: literal segments, `{param}` segments and an optional trailing `**`.
    pub path: Located<String>,
    /// Methods this route accepts (default: all).
    #[serde(default)]
    pub methods: Option<Vec<Located<String>>>,
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
