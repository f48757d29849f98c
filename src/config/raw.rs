//! The config file as written: a serde mirror of the YAML, strict (unknown keys are errors).
//!
//! Nothing here is trusted yet; `compile.rs` turns it into the [`crate::policy::Policy`]. The
//! JSON Schema printed by `fortress schema` is generated from these types.

use schemars::JsonSchema;
use serde::Deserialize;

use super::yaml::Located;
pub use crate::policy::RouteVariants;
pub use crate::policy::headers::UnderscoreHeaders;
pub use crate::policy::{DefaultAction, Environment, MatrixParameters, Mode};

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
    /// `enforce` (default) or `dry-run`: decide and record, but forward what would be denied.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Roles and the permissions they grant (`resource:action`, `resource:*`, `*`, and
    /// `@other_role` to include another role's permissions).
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Vec<Located<String>>>,
    /// NDJSON stream definitions, named; routes refer to them with `stream: NAME`.
    #[serde(default)]
    pub streams: std::collections::BTreeMap<String, RawStream>,
    /// Settings of the policy lint applied on every load.
    #[serde(default)]
    pub lint: Option<RawLint>,
    /// JWT authentication for every route that is not `public`.
    #[serde(default)]
    pub authentication: Option<RawAuthentication>,
    /// What requests that match no route get: `deny` (404, default) or `allow` (forwarded).
    #[serde(default)]
    pub default: Option<DefaultAction>,
    /// Routes, matched by method and path pattern; the most specific pattern wins.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// How request paths are canonicalized.
    #[serde(default)]
    pub paths: Option<RawPaths>,
    /// Security headers on every response (routes may override each one).
    #[serde(default)]
    pub security_headers: Option<super::edge::RawSecurityHeaders>,
    /// CORS for every route (a route's own `cors` block replaces it).
    #[serde(default)]
    pub cors: Option<super::edge::RawCors>,
    /// Replace the body of an upstream 5xx with fortress's short JSON error carrying the
    /// request id (default: on, off with `environment: local`).
    #[serde(default)]
    pub scrub_errors: Option<Located<bool>>,
    /// Policy-wide rate limits (one mapping or a list), applied to every request in addition
    /// to a route's own; one counter per keyed value across all routes.
    #[serde(default)]
    pub rate_limit: Option<super::limits::OneOrMany<super::limits::RawRateLimit>>,
    /// Per-tenant budgets, drawn on by routes with `budget:`.
    #[serde(default)]
    pub budgets: Option<super::limits::RawBudgets>,
    /// Concurrency classes, named; routes join one with `class: NAME` (a class named
    /// `default` is joined by routes without `class:`; otherwise those are not limited).
    /// Limits are per fortress instance.
    #[serde(default)]
    pub classes: std::collections::BTreeMap<String, super::traffic_guards::RawClass>,
    /// Client IPs (CIDRs or addresses, v4 or v6) allowed at all; others get 403
    /// `ip_not_allowed`. A route's own `allow_ips` must pass as well.
    #[serde(default)]
    pub allow_ips: Option<Vec<Located<String>>>,
    /// Failed-authentication throttling per client IP (default on: 50 per 1m).
    #[serde(default)]
    pub failed_auth_limit: Option<super::traffic_guards::RawFailedAuthLimit>,
    /// The audit trail: tamper-evident JSON Lines records of decisions and events.
    #[serde(default)]
    pub audit: Option<RawAudit>,
    /// Trace sampling and OTLP/HTTP export of one span per request (off by default; the
    /// standard `OTEL_*` variables fill what is not set here).
    #[serde(default)]
    pub telemetry: Option<super::telemetry::RawTelemetry>,
    /// A short-lived signed JWT on every forwarded request, so the app can refuse requests
    /// that did not come through fortress.
    #[serde(default)]
    pub identity_assertion: Option<super::assertion::RawAssertion>,
    /// Outside `environment: local`, a global `mode: dry-run` stops startup unless this is
    /// `true` (written next to it: forwarding what would be denied is meant).
    #[serde(default)]
    pub allow_dry_run_in_production: Option<Located<bool>>,
    /// Readiness guards, named: conditions fortress checks itself (`audit`, `sql_guard`,
    /// `jwks`); a route with `guard: NAME` answers 503 `not_ready` while one fails.
    #[serde(default)]
    pub readiness: std::collections::BTreeMap<String, super::readiness::RawGuard>,
    /// Feature toggles, named: `{ default: BOOL }`, overridden at run time through the admin
    /// API; routes with `requires_toggle: NAME` answer 503 `feature_disabled` while it is off.
    #[serde(default)]
    pub toggles: std::collections::BTreeMap<String, super::toggles::RawToggle>,
    /// The admin API (on `server.admin`): the permission each endpoint group requires.
    #[serde(default)]
    pub admin: Option<super::toggles::RawAdmin>,
    /// Where live state is kept: `memory` (default, per instance) or `redis` (shared by every
    /// instance: rate limits, budgets, per-tenant concurrency, revocations, toggle overrides).
    /// Restart to change.
    #[serde(default)]
    pub store: Option<super::store::RawStore>,
}

/// `audit:` settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Directory of the daily files `audit-YYYY-MM-DD.jsonl` (UTC); relative to the config
    /// file. Created if missing. Restart to change.
    #[serde(default)]
    pub dir: Option<Located<String>>,
    /// Also write each record to stdout as a JSON line (`"type":"audit"` tells it from logs).
    #[serde(default)]
    pub stdout: Option<bool>,
    /// What gets a record besides admin changes, reloads, startup and shutdown (always):
    /// `denied`, `privileged`, `violations`, `budget`, `admin`, `all`. Default
    /// `[denied, violations]`.
    #[serde(default)]
    pub include: Option<Vec<Located<crate::policy::audit::Include>>>,
    /// `strict` (default outside `local`): a response that needs a record waits until it is
    /// written; `batched` (default in `local`): written within `flush_interval`.
    #[serde(default)]
    pub durability: Option<crate::policy::audit::Durability>,
    /// `fsync` every batch (default true).
    #[serde(default)]
    pub fsync: Option<bool>,
    /// Batched mode: the longest a record waits before it is written (default 1s).
    #[serde(default)]
    pub flush_interval: Option<Located<String>>,
    /// Records waiting for the writer at most (default 10000); beyond, requests that need a
    /// record get 503 `audit_unavailable`.
    #[serde(default)]
    pub queue: Option<Located<u32>>,
    /// Delete files of days older than this many days (default: keep).
    #[serde(default)]
    pub retention_days: Option<Located<u32>>,
    /// Delete the oldest files while the directory holds more than this (`500MiB`, `10GiB`).
    #[serde(default)]
    pub max_total_size: Option<Located<String>>,
    /// HMAC-SHA-256 chain key (`{ env: NAME }` or `{ file: PATH }`): someone who can edit the
    /// files cannot recompute the chain. Records carry the key id.
    #[serde(default)]
    pub hmac_key: Option<RawSecret>,
    /// Fields replaced by a keyed hash: `client_ip`, `subject`, `tenant`. Needs `redact_key`.
    #[serde(default)]
    pub redact: Vec<Located<crate::policy::audit::Redact>>,
    /// Key of the redaction hash (`{ env: NAME }` or `{ file: PATH }`).
    #[serde(default)]
    pub redact_key: Option<RawSecret>,
}

/// `paths:` settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    /// `;` path parameters (`/a;x=1/b`, `%3B`): `reject` (400 `path_parameter`, default) or
    /// `strip` (`;…` removed from each segment before matching and forwarding).
    #[serde(default)]
    pub matrix_parameters: Option<MatrixParameters>,
    /// `true` for apps that route case-insensitively (ASP.NET, Spring with
    /// `setUseCaseSensitiveMatch(false)`, IIS): paths are lower-cased (ASCII letters, not the
    /// `%XX` escapes) before matching *and* forwarding, so `/API/ADMIN` is judged and served
    /// as `/api/admin`. Route patterns must then be lower case. Default `false`.
    #[serde(default)]
    pub case_insensitive: Option<Located<bool>>,
    /// `refuse` (default): 400 `ambiguous_path` for a path that fortress would route to a
    /// different route if it were spelled the way a case- or trailing-slash-insensitive app
    /// (Express, Spring Boot < 3, ASP.NET) reads it: `/Admin/x` → `/admin/x`, `/api/admin/` →
    /// `/api/admin`. `ignore`: route the spelling as sent; only for apps that route strictly
    /// case- and slash-sensitively.
    #[serde(default)]
    pub route_variants: Option<RouteVariants>,
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
    /// Probe listener, `IP:PORT` (optional): serves only `/livez`, `/healthz`, `/readyz` and
    /// `/metrics`, never the admin API or tokens, so it may listen on the pod address in
    /// production (kubelet probes, Prometheus) while `server.admin` stays on loopback.
    /// Changing it needs a restart.
    #[serde(default)]
    pub probes: Option<Located<String>>,
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
    /// Refuse plain-HTTP requests unless a trusted proxy vouches with `X-Forwarded-Proto:
    /// https` (default true).
    #[serde(default)]
    pub require_https: Option<bool>,
    /// `environment: local` only: accept bearer tokens over plain, unvouched HTTP.
    #[serde(default)]
    pub allow_insecure_local: Option<Located<bool>>,
    /// Timeouts for each phase of a connection and request.
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    /// Most client connections open at once on the client listener (default 10000).
    #[serde(default)]
    pub max_connections: Option<Located<u32>>,
    /// Each HTTP/1.1 client connection sends its requests on an upstream connection of its
    /// own, released to a small shared list after 2 s idle (default true); false: every
    /// request goes through the shared pool (fewer upstream connections, for an upstream
    /// that can hold only a few).
    #[serde(default)]
    pub upstream_affinity: Option<bool>,
    /// Largest request head in bytes (request line and header fields; also a chunked body's
    /// trailer section), 1024 to 1048576 (default 98304, 96 KiB: room for a 64 KiB bearer
    /// token, which the token size check refuses with a proper 401). Beyond it: 431. On
    /// HTTP/2 it is `SETTINGS_MAX_HEADER_LIST_SIZE`. Applies to connections opened after a
    /// reload.
    #[serde(default)]
    pub max_header_bytes: Option<Located<u32>>,
    /// Most header fields in a request head, 1 to 10000 (default 100). Beyond it: 431.
    /// Applies to HTTP/1 connections opened after a reload, and to every HTTP/2 request.
    #[serde(default)]
    pub max_headers: Option<Located<u32>>,
    /// Host names `/metrics` and the admin API answer to, besides those no outsider controls
    /// (`localhost`, IP literals, single-label names, names under `.test`, `.local`,
    /// `.internal` and the other special-use TLDs). Any other `Host` gets 421: a
    /// DNS-rebinding page cannot reach them. Probes answer any `Host`.
    #[serde(default)]
    pub admin_hosts: Vec<Located<String>>,
    /// Hosts this listener serves (`api.example.com`, `*.example.com`, `host:port`); a request
    /// for another host gets 421. Absent: any well-formed host.
    #[serde(default)]
    pub hosts: Option<Vec<Located<String>>>,
    /// Request header names containing `_`: `drop` (default, like nginx) or `keep`. An `_`
    /// spelling of a header the policy reads is refused either way.
    #[serde(default)]
    pub underscore_headers: Option<UnderscoreHeaders>,
    /// Client headers removed (in every spelling) when the peer is not a trusted proxy
    /// (default: 20 client-IP, scheme and host headers frameworks trust, e.g. X-Real-IP,
    /// True-Client-IP, Client-IP, X-Cluster-Client-IP, Forwarded; see
    /// docs/forwarding-and-streams.md). Every `X-Forwarded-*` header goes too.
    #[serde(default)]
    pub strip_client_headers: Option<Vec<Located<String>>>,
    /// Largest request body: `10MiB` (default), `512KiB`, `1GiB` or plain bytes; routes may
    /// override. Over it: 413, on `Content-Length` before anything is forwarded, on a streamed
    /// body as soon as it passes the limit (the upstream request is aborted).
    #[serde(default)]
    pub max_body: Option<Located<String>>,
    /// Directory where budget counters are persisted (every 2 s and at shutdown); relative
    /// to the config file. Required with `budgets:` outside `environment: local`. Changing
    /// it needs a restart.
    #[serde(default)]
    pub state_dir: Option<Located<String>>,
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
    /// After SIGTERM, keep accepting and serving for this long while `/readyz` answers 503
    /// (so Kubernetes takes the pod out of its endpoints), then drain (default 0s: drain at
    /// once). A second SIGTERM ends the delay.
    #[serde(default)]
    pub shutdown_delay: Option<Located<String>>,
    /// A WebSocket tunnel idle (no bytes either way) this long is closed (default 60s).
    #[serde(default)]
    pub websocket_idle: Option<Located<String>>,
    /// The longest wait for the next chunk of a request body (default 30s); past it the
    /// upstream request is aborted and the client gets 408 `body_timeout`, connection closed.
    #[serde(default)]
    pub body_read: Option<Located<String>>,
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
    /// Permissions the caller must have, all of them.
    #[serde(default)]
    pub require: Option<Vec<Located<String>>>,
    /// Permissions of which the caller must have at least one.
    #[serde(default)]
    pub require_any: Option<Vec<Located<String>>>,
    /// Tenant isolation: where the request names its tenant.
    #[serde(default)]
    pub tenant: Option<RawTenant>,
    /// `enforce` or `dry-run` for this route (default: the global `mode`).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// A privileged route: with `audit.include: [privileged]` every request to it is audited,
    /// allowed or not (and, being allowed, only forwarded while the audit trail can take its
    /// record).
    #[serde(default)]
    pub privileged: Option<bool>,
    /// Check the response as this NDJSON stream (a name under `streams:`).
    #[serde(default)]
    pub stream: Option<Located<String>>,
    /// Proxy WebSocket handshakes (`Upgrade: websocket`) on this route (default false).
    #[serde(default)]
    pub websocket: Option<Located<bool>>,
    /// Largest request body on this route (overrides `server.max_body`).
    #[serde(default)]
    pub max_body: Option<Located<String>>,
    /// Media types a request body may have (`application/json`, `text/*`); parameters such
    /// as `; charset=` are ignored. A body without `Content-Type`, or with another type, gets
    /// 415. Requests without a body and without `Content-Type` pass.
    #[serde(default)]
    pub content_types: Option<Vec<Located<String>>>,
    /// Security headers for this route, each key over the top-level setting.
    #[serde(default)]
    pub security_headers: Option<super::edge::RawSecurityHeaders>,
    /// CORS for this route (replaces the top-level `cors` block).
    #[serde(default)]
    pub cors: Option<super::edge::RawCors>,
    /// Scrub upstream 5xx bodies on this route (default: the top-level `scrub_errors`).
    #[serde(default)]
    pub scrub_errors: Option<Located<bool>>,
    /// This route's rate limits (one mapping or a list), in addition to the policy-wide
    /// `rate_limit`; all must pass.
    #[serde(default)]
    pub rate_limit: Option<super::limits::OneOrMany<super::limits::RawRateLimit>>,
    /// Charge requests to the tenant budget (`budgets.per_tenant`): `{}` costs 1,
    /// `{ cost: N }`, or `{ cost_header: NAME }` metered by the app.
    #[serde(default)]
    pub budget: Option<super::limits::RawBudget>,
    /// The concurrency class (a name under `classes:`); default: the `default` class if
    /// defined, else not limited.
    #[serde(default)]
    pub class: Option<Located<String>>,
    /// Client IPs allowed on this route (CIDRs or addresses); the policy-wide `allow_ips`
    /// must pass as well.
    #[serde(default)]
    pub allow_ips: Option<Vec<Located<String>>>,
    /// The app's `401` answers on this route count as failed authentications of the client
    /// IP (a login or token endpoint the app authenticates itself), and a throttled client
    /// is refused here too (default false).
    #[serde(default)]
    pub upstream_401_counts: Option<Located<bool>>,
    /// A readiness guard (a name under `readiness:`): while one of its conditions fails,
    /// the route answers 503 `not_ready`.
    #[serde(default)]
    pub guard: Option<Located<String>>,
    /// A toggle (a name under `toggles:`) that must be on; while it is off the route
    /// answers 503 `feature_disabled`.
    #[serde(default)]
    pub requires_toggle: Option<Located<String>>,
}

/// One NDJSON stream definition.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    /// Line types in order; types may be skipped but never go back. `error` is always allowed
    /// and terminal.
    pub order: Vec<Located<String>>,
    /// Types that may repeat on consecutive lines (others at most once).
    #[serde(default)]
    pub repeatable: Vec<Located<String>>,
    /// Types that must appear before the stream ends (default `[end]` when `end` is in
    /// `order`, else none).
    #[serde(default)]
    pub required: Option<Vec<Located<String>>>,
    /// Types after which nothing may follow (default `[end]` when `end` is in `order`).
    #[serde(default)]
    pub terminal: Option<Vec<Located<String>>>,
    /// Name of the type field (default `type`).
    #[serde(default)]
    pub type_field: Option<String>,
    /// Name of the trace id field (default `trace_id`).
    #[serde(default)]
    pub trace_field: Option<String>,
    /// Every line's trace id must equal the request's trace id (default false).
    #[serde(default)]
    pub trace_must_match_request: Option<bool>,
    /// Longest line, e.g. `1MiB`, `64KiB`, `4096` (default 1MiB).
    #[serde(default)]
    pub max_line_bytes: Option<Located<String>>,
    /// Check SQL in `technical_view` lines against a schema access policy.
    #[serde(default)]
    pub sql_guard: Option<RawSqlGuard>,
}

/// `sql_guard:` of a stream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSqlGuard {
    /// Field of the `technical_view` line that holds the SQL (default `sql`).
    #[serde(default)]
    pub field: Option<String>,
    /// Only read-only queries (default true).
    #[serde(default)]
    pub read_only: Option<bool>,
    /// Tables the SQL may read, written as SQL names: unquoted parts fold to lower case,
    /// `"Quoted"` parts keep their case; `schema.table` allowed.
    pub allowed_tables: Vec<Located<String>>,
    /// Functions the SQL may call, written like tables. Replaces the default allowlist (a
    /// set of pure functions) when given; `[]` allows no function at all.
    #[serde(default)]
    pub allowed_functions: Option<Vec<Located<String>>>,
}

/// `tenant:` of a route; exactly one of `path_param`, `header`, `query`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// A `{param}` of the route's path pattern.
    #[serde(default)]
    pub path_param: Option<Located<String>>,
    /// A request header.
    #[serde(default)]
    pub header: Option<Located<String>>,
    /// A query parameter.
    #[serde(default)]
    pub query: Option<Located<String>>,
    /// Holders of this permission may cross tenants (recorded as privileged).
    #[serde(default)]
    pub cross_tenant_permission: Option<Located<String>>,
}

/// `lint:` settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLint {
    /// Path segments that look privileged: a route containing one needs `require`/`require_any`
    /// or `public: true` (default: admin, internal, debug, actuator, metrics).
    #[serde(default)]
    pub privileged_segments: Option<Vec<String>>,
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

/// `authentication:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuthentication {
    /// JWT verification.
    pub jwt: RawJwt,
    /// Which claims hold the subject, roles and tenant (dotted paths allowed).
    #[serde(default)]
    pub claims: Option<RawClaims>,
    /// Forward the verified token to the app, in its `Authorization` header or token cookie
    /// (default true).
    #[serde(default)]
    pub forward_token: Option<bool>,
    /// Forward a bearer `Authorization` header or token cookie that fortress did not verify
    /// (public routes, dry-run refusals) to the app (default false: they are removed).
    #[serde(default)]
    pub forward_unverified_credentials: Option<bool>,
    /// More client headers to strip as identity headers (besides `X-Auth-Subject`,
    /// `X-Auth-Roles`, `X-Tenant-Id`, `X-Auth-Claims`).
    #[serde(default)]
    pub identity_headers: Vec<Located<String>>,
}

/// `authentication.jwt:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// Required `iss`.
    pub issuer: Located<String>,
    /// Accepted `aud` values; a token naming any of them passes.
    pub audiences: Vec<Located<String>>,
    /// Allowed algorithms: HS256/384/512 (need `secret`), RS*/PS* (RSA keys), ES256/384 (EC
    /// keys), EdDSA (Ed25519 keys). `none` can never be allowed.
    pub algorithms: Vec<Located<String>>,
    /// HMAC secret: `{ env: NAME }`, `{ file: PATH }`, or (local only) `{ value: "…" }`.
    #[serde(default)]
    pub secret: Option<RawSecret>,
    /// Several HMAC secrets, for rotation without downtime: a token verifies with any of them,
    /// tried in the order listed (put the new secret first, keep the old one until its tokens
    /// expired). Instead of `secret`.
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
    /// Public keys from PEM files.
    #[serde(default)]
    pub keys: Vec<RawKeyFile>,
    /// A JWKS key set from a file or URL.
    #[serde(default)]
    pub jwks: Option<RawJwks>,
    /// Clock skew allowed for `exp`, `nbf`, `iat` (default 30s).
    #[serde(default)]
    pub leeway: Option<Located<String>>,
    /// Claims that must be present (dotted paths allowed). `exp`, `iss`, `aud` and the subject
    /// claim are always required.
    #[serde(default)]
    pub required_claims: Vec<Located<String>>,
    /// Also read the token from this cookie when there is no `Authorization` header.
    #[serde(default)]
    pub cookie: Option<Located<String>>,
    /// Largest token accepted, in bytes (default 8192).
    #[serde(default)]
    pub max_token_bytes: Option<Located<u32>>,
    /// Verified tokens remembered (default 10000; 0 disables the cache).
    #[serde(default)]
    pub cache_size: Option<u32>,
}

/// An HMAC secret source; exactly one key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// Environment variable holding the secret.
    #[serde(default)]
    pub env: Option<Located<String>>,
    /// File holding the secret (trailing newline ignored).
    #[serde(default)]
    pub file: Option<Located<String>>,
    /// The secret itself (refused outside `environment: local`).
    #[serde(default)]
    pub value: Option<Located<String>>,
}

/// A PEM public key file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawKeyFile {
    /// PEM file with an RSA, EC (P-256/P-384) or Ed25519 public key.
    pub file: Located<String>,
    /// Key id; when set, only tokens with this `kid` (or none) use the key.
    #[serde(default)]
    pub kid: Option<String>,
}

/// `jwks:` key set.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    /// A local JWKS file.
    #[serde(default)]
    pub file: Option<Located<String>>,
    /// An `https://` (or `http://`) URL.
    #[serde(default)]
    pub url: Option<Located<String>>,
    /// How long a fetched set is used (default 5m).
    #[serde(default)]
    pub ttl: Option<Located<String>>,
    /// Least time between fetches caused by unknown `kid`s (default 30s).
    #[serde(default)]
    pub min_refresh_interval: Option<Located<String>>,
    /// Extra CA certificates (PEM) for the URL, besides the system roots.
    #[serde(default)]
    pub ca_file: Option<Located<String>>,
}

/// `claims:` mapping.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClaims {
    /// Subject claim (default `sub`).
    #[serde(default)]
    pub subject: Option<String>,
    /// Roles claim (default `roles`).
    #[serde(default)]
    pub roles: Option<String>,
    /// Tenant claim (default `tenant`).
    #[serde(default)]
    pub tenant: Option<String>,
}
