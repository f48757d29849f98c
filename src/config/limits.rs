//! `rate_limit:` (top level and per route), `budgets:` (top level) and `budget:` (per route):
//! the raw YAML types and their compilation into [`crate::policy::limits`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer, de::value::SeqAccessDeserializer};

use super::raw::RawRoute;
use super::yaml::{ConfigError, Located, Pos};
use crate::policy::limits::{Cost, KeyPart, RateLimit, RouteLimits, TenantBudget};

/// One value or a list of them (`rate_limit: {…}` or `rate_limit: [{…}, {…}]`,
/// `key: ip` or `key: [subject, route]`).
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values, in order.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(OneOrMany::One)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(v)).map(OneOrMany::One)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A rate limit (GCRA): `{ key: ip, limit: 60, per: 1m, burst: 10 }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// What is counted: `ip`, `subject`, `tenant`, `route`, `param:NAME` (a `{NAME}` of the
    /// route's pattern), `header:NAME` (trusted headers only), or a list such as
    /// `[subject, route]`.
    pub key: Located<OneOrMany<String>>,
    /// Requests per `per`.
    pub limit: Located<u64>,
    /// The period: `1s` to `1d` (`s`, `m`, `h`, `d`).
    pub per: Located<String>,
    /// Requests allowed at once from a rested state (default: `limit`).
    #[serde(default)]
    pub burst: Option<Located<u64>>,
    /// Name in the `RateLimit-Policy` / `RateLimit` headers (default: `default` for the
    /// policy-wide limits, the route's name for a route's; `-2`, `-3` … for further ones).
    #[serde(default)]
    pub name: Option<Located<String>>,
}

/// `budgets:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBudgets {
    /// A budget per tenant (the verified token's tenant claim), drawn on by routes with
    /// `budget:`.
    pub per_tenant: RawTenantBudget,
}

/// `budgets.per_tenant:`; at least one of `daily`, `monthly`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTenantBudget {
    /// Units per UTC day.
    #[serde(default)]
    pub daily: Option<Located<u64>>,
    /// Units per UTC calendar month.
    #[serde(default)]
    pub monthly: Option<Located<u64>>,
    /// Fraction (0 < x <= 1) of a period's budget from which responses carry
    /// `X-Budget-Warning` (default 0.9).
    #[serde(default)]
    pub warn_at: Option<Located<f64>>,
}

/// `budget:` of a route: `{}` (cost 1), `{ cost: 10 }` or `{ cost_header: X-Usage-Units }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Units each request costs, charged at admission (default 1).
    #[serde(default)]
    pub cost: Option<Located<u64>>,
    /// Metered: the app reports the units used in this response header or trailer; admitted
    /// while the budget is below 100 %, charged when the response ends.
    #[serde(default)]
    pub cost_header: Option<Located<String>>,
}

/// Where a list of rate limits is written.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Top-level `rate_limit:`.
    Default,
    /// A route's own `rate_limit:`.
    Route(&'a RawRoute),
}

/// Parses a rate-limit period: `1s` to `1d`.
pub fn parse_period(s: &str) -> Option<u64> {
    let s = s.trim();
    let ms = match s.strip_suffix('d') {
        Some(n) => n.parse::<u64>().ok()?.checked_mul(86_400_000)?,
        None => u64::try_from(super::compile::parse_duration(s)?.as_millis()).ok()?,
    };
    (1_000..=86_400_000).contains(&ms).then_some(ms)
}

/// Compiles a `rate_limit:` value.
pub fn rate_limits(
    raw: Option<&OneOrMany<RawRateLimit>>,
    scope: Scope<'_>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Arc<RateLimit>> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    let (scope_name, base_name) = match scope {
        Scope::Default => ("default".to_owned(), "default".to_owned()),
        Scope::Route(r) => (r.name.value.clone(), r.name.value.clone()),
    };
    let mut out = Vec::new();
    for (i, r) in raw.as_slice().iter().enumerate() {
        let before = errors.len();
        let key = key_parts(&r.key, scope, errors);
        if r.limit.value == 0 {
            errors.push(ConfigError::at(r.limit.pos, "`limit` must be at least 1"));
        }
        let period_ms = parse_period(&r.per.value).unwrap_or_else(|| {
            errors.push(ConfigError::at(
                r.per.pos,
                format!(
                    "`{}` is not a rate-limit period: expected 1s to 1d, e.g. 10s, 1m, 1h, 1d",
                    r.per.value
                ),
            ));
            1_000
        });
        let burst = match &r.burst {
            Some(b) if b.value == 0 => {
                errors.push(ConfigError::at(b.pos, "`burst` must be at least 1"));
                1
            }
            Some(b) => b.value,
            None => r.limit.value,
        };
        let name = match &r.name {
            Some(n) => {
                if !valid_name(&n.value) {
                    errors.push(ConfigError::at(
                        n.pos,
                        format!(
                            "rate limit name `{}`: expected letters, digits, `-`, `_` or `.`",
                            n.value
                        ),
                    ));
                }
                n.value.clone()
            }
            None if i == 0 => base_name.clone(),
            None => format!("{base_name}-{}", i + 1),
        };
        if errors.len() > before {
            continue;
        }
        let spec = format!(
            "v1|{scope_name}|{i}|{}|{}|{period_ms}|{burst}",
            key.iter().map(KeyPart::spec).collect::<Vec<_>>().join(","),
            r.limit.value,
        );
        let fingerprint = super::short_hash(spec.as_bytes());
        let policy_item = format!("\"{name}\";q={};w={}", r.limit.value, period_ms / 1_000);
        out.push(Arc::new(RateLimit {
            policy_header: http::HeaderValue::from_str(&policy_item).ok(),
            policy_item,
            name,
            prefix: format!("rl|{scope_name}|{fingerprint}|"),
            key,
            limit: r.limit.value,
            period_ms,
            burst,
        }));
    }
    out
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn key_parts(
    raw: &Located<OneOrMany<String>>,
    scope: Scope<'_>,
    errors: &mut Vec<ConfigError>,
) -> Vec<KeyPart> {
    let list = raw.value.as_slice();
    let pos = raw.pos;
    if list.is_empty() {
        errors.push(ConfigError::at(
            pos,
            "a rate limit `key` list is empty: name at least one of ip, subject, tenant, route, \
             param:NAME, header:NAME",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for k in list {
        let part = match k.as_str() {
            "ip" => Some(KeyPart::Ip),
            "subject" => Some(KeyPart::Subject),
            "tenant" => Some(KeyPart::Tenant),
            "route" => Some(KeyPart::Route),
            other => {
                if let Some(p) = other.strip_prefix("param:") {
                    param_part(p, pos, scope, errors)
                } else if let Some(h) = other.strip_prefix("header:") {
                    header_part(h, pos, errors)
                } else {
                    errors.push(ConfigError::at(
                        pos,
                        format!(
                            "unknown rate limit key `{other}`: expected ip, subject, tenant, \
                             route, param:NAME or header:NAME"
                        ),
                    ));
                    None
                }
            }
        };
        if let Some(part) = part {
            // Fail closed: a route's own limit by subject or tenant on a public route would
            // have no principal to count.
            if let (KeyPart::Subject | KeyPart::Tenant, Scope::Route(r)) = (&part, scope)
                && r.public == Some(true)
            {
                errors.push(ConfigError::at(
                    pos,
                    format!(
                        "route `{}` is public: a rate limit keyed by `{}` has no verified \
                         token to count; key it by ip",
                        r.name.value, k
                    ),
                ));
            }
            if !out.contains(&part) {
                out.push(part);
            }
        }
    }
    out
}

fn param_part(
    p: &str,
    pos: Pos,
    scope: Scope<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<KeyPart> {
    match scope {
        Scope::Default => {
            errors.push(ConfigError::at(
                pos,
                "`param:` keys are for a route's own rate limit (the policy-wide one has no \
                 path pattern)",
            ));
            None
        }
        Scope::Route(r) => {
            let wanted = format!("{{{p}}}");
            if p.is_empty() || !r.matcher.path.value.split('/').any(|seg| seg == wanted) {
                errors.push(ConfigError::at(
                    pos,
                    format!(
                        "`{p}` is not a parameter of the path pattern `{}`",
                        r.matcher.path.value
                    ),
                ));
                return None;
            }
            Some(KeyPart::Param(p.to_owned()))
        }
    }
}

fn header_part(h: &str, pos: Pos, errors: &mut Vec<ConfigError>) -> Option<KeyPart> {
    if h.contains('_') {
        errors.push(ConfigError::at(
            pos,
            format!(
                "rate limit header `{h}` contains `_`: apps read it as the `-` spelling; use `-`"
            ),
        ));
        return None;
    }
    match http::HeaderName::from_bytes(h.as_bytes()) {
        Ok(name) => Some(KeyPart::Header(name)),
        Err(_) => {
            errors.push(ConfigError::at(pos, format!("`{h}` is not a header name")));
            None
        }
    }
}

/// Compiles `budgets:`. `state_dir` and `local` decide whether in-memory budgets are allowed.
pub fn budgets(
    raw: Option<&RawBudgets>,
    state_dir: bool,
    local: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<TenantBudget> {
    let b = &raw?.per_tenant;
    let positive = |v: &Option<Located<u64>>, name: &str, errors: &mut Vec<ConfigError>| {
        v.as_ref().map(|v| {
            if v.value == 0 {
                errors.push(ConfigError::at(
                    v.pos,
                    format!("`{name}` must be at least 1"),
                ));
            }
            v.value
        })
    };
    let daily = positive(&b.daily, "daily", errors);
    let monthly = positive(&b.monthly, "monthly", errors);
    if daily.is_none() && monthly.is_none() {
        errors.push(ConfigError::whole(
            "`budgets.per_tenant` needs `daily`, `monthly` or both",
        ));
    }
    let warn_at = match &b.warn_at {
        Some(w) if !(w.value > 0.0 && w.value <= 1.0) => {
            errors.push(ConfigError::at(
                w.pos,
                "`warn_at` must be a fraction above 0 and at most 1, e.g. 0.9",
            ));
            0.9
        }
        Some(w) => w.value,
        None => 0.9,
    };
    if !state_dir && !local {
        let pos = b.daily.as_ref().or(b.monthly.as_ref()).map(|v| v.pos);
        let msg = "budgets need `server.state_dir` outside `environment: local`: without it \
                   budget counters live in memory and a restart would reset every tenant's usage";
        errors.push(match pos {
            Some(p) => ConfigError::at(p, msg),
            None => ConfigError::whole(msg),
        });
    }
    Some(TenantBudget {
        daily,
        monthly,
        warn_at,
    })
}

/// Compiles a route's `rate_limit:` and `budget:`.
pub fn route_limits(
    r: &RawRoute,
    tenant_budget: Option<&TenantBudget>,
    errors: &mut Vec<ConfigError>,
) -> RouteLimits {
    let rate = rate_limits(r.rate_limit.as_ref(), Scope::Route(r), errors);
    let budget = r.budget.as_ref().and_then(|b| {
        let pos = b
            .cost
            .as_ref()
            .map(|c| c.pos)
            .or(b.cost_header.as_ref().map(|c| c.pos))
            .unwrap_or(r.name.pos);
        if tenant_budget.is_none() {
            errors.push(ConfigError::at(
                pos,
                format!(
                    "route `{}` has a `budget` but no `budgets.per_tenant` is configured",
                    r.name.value
                ),
            ));
            return None;
        }
        if r.public == Some(true) {
            errors.push(ConfigError::at(
                pos,
                format!(
                    "route `{}` is public: a budget is charged to the verified token's tenant",
                    r.name.value
                ),
            ));
            return None;
        }
        match (&b.cost, &b.cost_header) {
            (Some(_), Some(h)) => {
                errors.push(ConfigError::at(
                    h.pos,
                    "`cost` and `cost_header` exclude each other",
                ));
                None
            }
            (Some(c), None) if c.value == 0 => {
                errors.push(ConfigError::at(c.pos, "`cost` must be at least 1"));
                None
            }
            (Some(c), None) => Some(Cost::Fixed(c.value)),
            (None, Some(h)) => match http::HeaderName::from_bytes(h.value.as_bytes()) {
                Ok(name) if !h.value.contains('_') => Some(Cost::Header(name)),
                _ => {
                    errors.push(ConfigError::at(
                        h.pos,
                        format!("`{}` is not a header name (without `_`)", h.value),
                    ));
                    None
                }
            },
            (None, None) => Some(Cost::Fixed(1)),
        }
    });
    RouteLimits { rate, budget }
}

/// The path parameters a route's rate limits read.
pub fn params_used(limits: &RouteLimits) -> impl Iterator<Item = &str> {
    limits
        .rate
        .iter()
        .flat_map(|l| l.key.iter())
        .filter_map(|k| match k {
            KeyPart::Param(p) => Some(p.as_str()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(parse_period("1s"), Some(1_000));
        assert_eq!(parse_period("10s"), Some(10_000));
        assert_eq!(parse_period("1m"), Some(60_000));
        assert_eq!(parse_period("1h"), Some(3_600_000));
        assert_eq!(parse_period("1d"), Some(86_400_000));
        assert_eq!(parse_period("24h"), Some(86_400_000));
        for bad in ["", "500ms", "0s", "2d", "25h", "1w", "x", "1.5s"] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
    }
}
