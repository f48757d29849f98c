//! Compiled rate limits and budgets (data only; the admission stage in
//! `pipeline/admission.rs` applies them through the state store).
//!
//! Keys in the store (see `store/mod.rs`, "Keys"):
//! * a rate limit: `rl|{scope}|{fingerprint}|{value}`, where `scope` is `default` for the
//!   policy-wide limits (one counter per keyed value across every route) or the route's name,
//!   and `fingerprint` hashes the limit's specification (key, limit, period, burst, scope,
//!   position). A reload that keeps a limit keeps its counters; a changed one starts fresh.
//! * a budget: `budget|{day|month}|{tenant}`: no fingerprint on purpose, so changing the
//!   amount of a budget keeps what tenants already used in the period (and the persisted
//!   counters stay valid across restarts and reloads).

use std::sync::Arc;

use http::HeaderName;

/// What a rate limit counts by. Values never collide across kinds: each is prefixed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// The client IP (the TCP peer, or the right-most untrusted `X-Forwarded-For` address
    /// behind a trusted proxy).
    Ip,
    /// The verified token's subject. Without a principal (public route under the policy-wide
    /// default, a dry-run refusal): the client IP.
    Subject,
    /// The verified token's tenant; a token without a tenant: its subject; without a
    /// principal: the client IP.
    Tenant,
    /// The matched route (one counter per route).
    Route,
    /// A path parameter of the route (declared in its pattern).
    Param(String),
    /// A request header's value (trusted headers only: a client rotating values evades it).
    /// Missing: one shared bucket for every request without it; repeated: 400.
    Header(HeaderName),
}

impl KeyPart {
    /// How it is written in the config.
    pub fn spec(&self) -> String {
        match self {
            KeyPart::Ip => "ip".into(),
            KeyPart::Subject => "subject".into(),
            KeyPart::Tenant => "tenant".into(),
            KeyPart::Route => "route".into(),
            KeyPart::Param(p) => format!("param:{p}"),
            KeyPart::Header(h) => format!("header:{h}"),
        }
    }
}

/// One rate limit (GCRA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The policy name in the `RateLimit-Policy` / `RateLimit` headers (an sf-string).
    pub name: String,
    /// The keyed value: one part, or several joined (e.g. `[subject, route]`).
    pub key: Vec<KeyPart>,
    /// Requests per period.
    pub limit: u64,
    /// The period in milliseconds (1 s to 1 d).
    pub period_ms: u64,
    /// Requests allowed at once (default: `limit`).
    pub burst: u64,
    /// `rl|{scope}|{fingerprint}|`: everything before the keyed value.
    pub prefix: String,
    /// This limit's `RateLimit-Policy` item (`"name";q=60;w=60`), built once.
    pub policy_item: String,
    /// The same as a header value (a response with this one limit shares it, no formatting).
    pub policy_header: Option<http::HeaderValue>,
}

impl RateLimit {
    /// `[subject, route]`-style description.
    pub fn key_spec(&self) -> String {
        match self.key.as_slice() {
            [one] => one.spec(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(KeyPart::spec)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The per-tenant budget (`budgets.per_tenant`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantBudget {
    /// Units per UTC day.
    pub daily: Option<u64>,
    /// Units per UTC month.
    pub monthly: Option<u64>,
    /// Fraction of a period's budget at which responses carry `X-Budget-Warning`.
    pub warn_at: f64,
}

/// What a budget route costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cost {
    /// A fixed number of units, charged at admission.
    Fixed(u64),
    /// Metered: admitted while the budget is below 100 %; the app reports the units in this
    /// response header or trailer, charged when the response ends.
    Header(HeaderName),
}

/// Rate limits and budget of one route (the policy-wide default limits apply too).
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    /// The route's own rate limits (in addition to the policy-wide ones).
    pub rate: Vec<Arc<RateLimit>>,
    /// The route's budget cost, when it draws on the tenant budget.
    pub budget: Option<Cost>,
}

/// The policy-wide limits.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Top-level `rate_limit:`: applied to every request (also unmatched ones forwarded by
    /// `default: allow`), one counter per keyed value across routes.
    pub default_rate: Vec<Arc<RateLimit>>,
    /// Top-level `budgets.per_tenant`.
    pub tenant_budget: Option<TenantBudget>,
}

impl Limits {
    /// Whether any limit or budget is configured (fast path: no store call at all otherwise).
    pub fn any(&self, route: Option<&RouteLimits>) -> bool {
        !self.default_rate.is_empty()
            || route.is_some_and(|r| !r.rate.is_empty() || r.budget.is_some())
    }
}
