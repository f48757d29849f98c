//! Admission: the request's rate limits (policy-wide and the route's own) and its budget
//! charge, in ONE [`StateStore::admit`](crate::store::StateStore::admit) call, all or nothing:
//! a refusal by one limit consumes nothing of the others.
//!
//! * Refused by a rate limit: 429 `rate_limited`, `Retry-After` (whole seconds, rounded up),
//!   and the IETF `RateLimit-Policy` / `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers-10
//!   structured fields). Allowed responses carry both headers too, one item per limit.
//! * Refused by the budget: 429 `budget_exhausted`, `Retry-After` to the period's reset. A
//!   budget route whose token names no tenant: 403 `missing_tenant`.
//! * The store could not answer: 503 `state_unavailable` (fail closed; a shared store logs the
//!   outage once and, with `on_store_error: allow_local`, answers from the local share instead).
//!
//! A metered route (`budget: { cost_header: NAME }`) is admitted while the budget is below
//! 100 % (checked as "used + 0 <= limit - 1", which writes nothing); the charge lands when the
//! app's response head carries the header, or when its trailers do (streamed responses).
//! `X-Budget-Warning: daily=92%, monthly=40%` marks a response whose charge left a period's
//! usage at or past `warn_at`; the request that crosses it is logged once per period.

use std::fmt::Write as _;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::RequestContext;
use super::decide::Step;
use crate::error::{AmbiguityError, Rejection};
use crate::metrics::Metrics;
use crate::policy::limits::{Cost, KeyPart, RateLimit, TenantBudget};
use crate::store::{LimitCheck, LimitKind, LimitState, Millis, StateStore, Window};

/// `X-Budget-Warning`.
pub const X_BUDGET_WARNING: HeaderName = HeaderName::from_static("x-budget-warning");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Header values longer than this are keyed by their SHA-256 (bounded key memory).
const MAX_KEY_VALUE: usize = 64;

/// What admission left in the context: the states for the response headers and the budget to
/// charge a metered cost to.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Each rate limit with its state after this request (or, refused, its current state).
    pub rate: Vec<(Arc<RateLimit>, LimitState)>,
    /// The metered budget charge still to make, when the route is metered.
    pub metered: Option<Metered>,
    /// `X-Budget-Warning` value, when a period is at or past `warn_at`.
    pub warning: Option<String>,
}

/// A metered budget charge, made when the response reports its cost.
#[derive(Debug)]
pub struct Metered {
    /// The response header or trailer with the units.
    pub header: HeaderName,
    /// The tenant charged.
    pub tenant: String,
    /// The budget.
    pub budget: TenantBudget,
    /// Whether the charge was made (from the head; trailers then change nothing).
    pub charged: bool,
}

/// One budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// UTC day.
    Daily,
    /// UTC month.
    Monthly,
}

impl Period {
    /// The period's name (header, logs, metrics).
    pub fn name(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
    }
    fn window(self) -> Window {
        match self {
            Period::Daily => Window::Day,
            Period::Monthly => Window::Month,
        }
    }
    fn key(self, tenant: &str) -> String {
        match self {
            Period::Daily => format!("budget|day|{tenant}"),
            Period::Monthly => format!("budget|month|{tenant}"),
        }
    }
}

/// The budget periods configured, with their limits.
fn periods(b: &TenantBudget) -> impl Iterator<Item = (Period, u64)> {
    [(Period::Daily, b.daily), (Period::Monthly, b.monthly)]
        .into_iter()
        .filter_map(|(p, l)| l.map(|l| (p, l)))
}

/// One check to make.
enum What {
    Rate(Arc<RateLimit>),
    Budget(Period, u64),
    /// A shared store: the class's per-tenant cap, as a lease (class name, cap).
    Lease(Arc<str>, u32),
}

/// The route's class with a per-tenant cap, when the store is shared (then the cap is one
/// more check of the same admission, a lease in the store, instead of a per-instance count).
fn shared_tenant_cap(ctx: &RequestContext) -> Option<(Arc<str>, u32)> {
    if !ctx.snapshot.store.is_shared() {
        return None;
    }
    let class = ctx.route()?.access.class?;
    let spec = ctx.snapshot.policy.classes.list.get(class)?;
    Some((spec.name.clone(), spec.per_tenant_max_in_flight?))
}

/// The keys a request is counted under, in check order: `(description, key)`. Also used by
/// `fortress explain` (which never touches real counters).
pub fn keys(ctx: &RequestContext, req: &Parts) -> Result<Vec<(String, String)>, Rejection> {
    let (whats, keys) = build(ctx, req)?;
    Ok(whats
        .iter()
        .zip(keys)
        .map(|(w, k)| {
            let d = match w {
                What::Rate(l) => format!(
                    "rate `{}` {}/{}s burst {} by {}",
                    l.name,
                    l.limit,
                    l.period_ms / 1_000,
                    l.burst,
                    l.key_spec()
                ),
                What::Budget(p, limit) => format!("budget {} {limit}", p.name()),
                What::Lease(class, cap) => {
                    format!("class `{class}` per-tenant {cap} in flight (shared lease)")
                }
            };
            (d, k)
        })
        .collect())
}

fn build(ctx: &RequestContext, req: &Parts) -> Result<(Vec<What>, Vec<String>), Rejection> {
    let limits = &ctx.snapshot.limits;
    let route = ctx.route();
    let own = route.map(|r| r.limits.rate.as_slice()).unwrap_or_default();
    let mut whats = Vec::with_capacity(limits.default_rate.len() + own.len() + 2);
    let mut keys = Vec::with_capacity(whats.capacity());
    for l in limits.default_rate.iter().chain(own) {
        let mut key = l.prefix.clone();
        for (i, part) in l.key.iter().enumerate() {
            if i > 0 {
                key.push('|');
            }
            key_value(ctx, req, part, &mut key)?;
        }
        keys.push(key);
        whats.push(What::Rate(l.clone()));
    }
    if let (Some(_), Some(budget)) = (
        route.and_then(|r| r.limits.budget.as_ref()),
        limits.tenant_budget.as_ref(),
    ) {
        let tenant = ctx
            .principal
            .as_ref()
            .and_then(|p| p.tenant.as_deref())
            .ok_or(Rejection::MissingTenant)?;
        for (p, limit) in periods(budget) {
            keys.push(p.key(tenant));
            whats.push(What::Budget(p, limit));
        }
    }
    if let Some((class, cap)) = shared_tenant_cap(ctx) {
        let tenant = ctx
            .principal
            .as_ref()
            .and_then(|p| p.tenant.as_deref())
            .unwrap_or("");
        let mut key = format!("class|{class}|{cap}|");
        push_value(&mut key, "tenant:", tenant);
        keys.push(key);
        whats.push(What::Lease(class, cap));
    }
    Ok((whats, keys))
}

/// Appends the keyed value of `part` to `key`, prefixed by its kind (values never collide
/// across kinds).
fn key_value(
    ctx: &RequestContext,
    req: &Parts,
    part: &KeyPart,
    key: &mut String,
) -> Result<(), Rejection> {
    let principal = ctx.principal.as_deref();
    match part {
        KeyPart::Ip => {
            let _ = write!(key, "ip:{}", ctx.client_ip);
        }
        // No principal (public route under the policy-wide default, dry-run): by client IP.
        KeyPart::Subject => match principal {
            Some(p) => push_value(key, "sub:", &p.subject),
            None => {
                let _ = write!(key, "ip:{}", ctx.client_ip);
            }
        },
        // A token without a tenant is counted by its subject.
        KeyPart::Tenant => match principal {
            Some(p) => match &p.tenant {
                Some(t) => push_value(key, "tenant:", t),
                None => push_value(key, "sub:", &p.subject),
            },
            None => {
                let _ = write!(key, "ip:{}", ctx.client_ip);
            }
        },
        KeyPart::Route => {
            let name = ctx.route().map_or("-", |r| &r.name);
            push_value(key, "route:", name);
        }
        KeyPart::Param(name) => {
            // The route declares it (config check); a missing value can only be a bug: refuse.
            let v = ctx
                .param(name, req.uri.path())
                .ok_or(Rejection::LimitsUnavailable)?;
            push_value(key, "param:", v);
        }
        KeyPart::Header(name) => {
            let mut values = req.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => key.push_str("header-absent"),
                (Some(v), None) => {
                    push_value(key, "header:", &String::from_utf8_lossy(v.as_bytes()))
                }
                (Some(_), Some(_)) => {
                    return Err(Rejection::RejectAmbiguous(
                        AmbiguityError::AmbiguousLimitKey,
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Appends `prefix` and `value`; long values as their hash, so a key stays small.
fn push_value(key: &mut String, prefix: &str, value: &str) {
    key.push_str(prefix);
    if value.len() <= MAX_KEY_VALUE {
        key.push_str(value);
    } else {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
        key.push_str("sha256:");
        for b in &digest.as_ref()[..16] {
            let _ = write!(key, "{b:02x}");
        }
    }
}

/// Whole seconds, rounded up, at least 1, saturating.
fn secs_up(ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(1_000).max(1)).unwrap_or(u32::MAX)
}

/// The admission check (stage `Admission`).
pub async fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let snap = ctx.snapshot.clone();
    let route_limits = ctx.route().map(|r| &r.limits);
    if !snap.limits.any(route_limits) && shared_tenant_cap(ctx).is_none() {
        return Ok(Step::Skip("no rate limit or budget"));
    }
    let (whats, keys) = build(ctx, req)?;
    let cost = ctx.route().and_then(|r| r.limits.budget.clone());
    let checks: Vec<LimitCheck<'_>> = whats
        .iter()
        .zip(&keys)
        .map(|(w, key)| LimitCheck {
            key,
            kind: match w {
                What::Rate(l) => LimitKind::Rate {
                    limit: l.limit,
                    period_ms: l.period_ms,
                    burst: l.burst,
                },
                What::Budget(p, limit) => match &cost {
                    Some(Cost::Fixed(c)) => LimitKind::Budget {
                        limit: *limit,
                        window: p.window(),
                        cost: *c,
                    },
                    // Metered: admitted while used < limit ("used + 0 <= limit - 1"), nothing
                    // written; the charge comes with the response.
                    _ => LimitKind::Budget {
                        limit: limit.saturating_sub(1),
                        window: p.window(),
                        cost: 0,
                    },
                },
                What::Lease(_, cap) => LimitKind::Concurrency {
                    limit: u64::from(*cap),
                    lease_ms: u64::try_from(snap.policy.store.lease.as_millis())
                        .unwrap_or(u64::MAX),
                },
            },
        })
        .collect();
    let now = snap.clock.now_ms();
    // The store logs its own outage once (not per request); the request fails closed.
    let admission = snap
        .store
        .admit(now, &checks)
        .await
        .map_err(|_| Rejection::StateUnavailable)?;
    let mut admitted = Admitted::default();
    let mut rate_retry: Option<u64> = None;
    let mut budget_retry: Option<u64> = None;
    let mut lease_refused = false;
    let mut warnings = Vec::new();
    for ((w, st), key) in whats.into_iter().zip(admission.states).zip(&keys) {
        match w {
            What::Rate(l) => {
                if !st.allowed {
                    let r = st.retry_after_ms.unwrap_or(1_000);
                    rate_retry = Some(rate_retry.map_or(r, |o| o.max(r)));
                }
                admitted.rate.push((l, st));
            }
            What::Budget(p, limit) => {
                if !st.allowed {
                    let r = st.retry_after_ms.unwrap_or(1_000);
                    budget_retry = Some(budget_retry.map_or(r, |o| o.max(r)));
                } else if let (Some(Cost::Fixed(c)), Some(b)) =
                    (&cost, snap.limits.tenant_budget.as_ref())
                {
                    warnings.push((p, limit, st.used, *c, b.warn_at));
                }
            }
            What::Lease(..) => {
                if !st.allowed {
                    lease_refused = true;
                } else if admission.allowed {
                    ctx.lease = Some(crate::store::classes::SharedLease::new(
                        snap.store.clone(),
                        key.clone(),
                    ));
                }
            }
        }
    }
    let tenant = ctx
        .principal
        .as_ref()
        .and_then(|p| p.tenant.as_deref())
        .unwrap_or_default();
    if admission.allowed {
        let mut crossed = Vec::new();
        admitted.warning = warning_value(
            ctx.metrics(),
            tenant,
            ctx.route().map_or("", |r| &r.name),
            warnings.iter().copied(),
            &mut crossed,
        );
        audit_crossings(ctx, &crossed);
        if let (Some(Cost::Header(h)), Some(b)) = (&cost, snap.limits.tenant_budget.as_ref()) {
            admitted.metered = Some(Metered {
                header: h.clone(),
                tenant: tenant.to_owned(),
                budget: *b,
                charged: false,
            });
        }
    }
    ctx.admission = Some(Box::new(admitted));
    if admission.allowed {
        return Ok(Step::Pass);
    }
    if lease_refused && rate_retry.is_none() && budget_retry.is_none() {
        return Err(Rejection::Overloaded);
    }
    let refusal = match budget_retry {
        Some(ms) => Rejection::BudgetExhausted {
            retry_after_secs: secs_up(ms.max(rate_retry.unwrap_or(0))),
        },
        None => Rejection::RateLimited {
            retry_after_secs: secs_up(rate_retry.unwrap_or(1_000)),
        },
    };
    Err(refusal)
}

/// The `X-Budget-Warning` value for the periods at or past `warn_at` after a charge, logging
/// (and counting) the charge that crossed the threshold: once per period and tenant, since
/// usage only grows within a period and each charge is atomic.
fn warning_value(
    metrics: Option<&Arc<Metrics>>,
    tenant: &str,
    route: &str,
    states: impl Iterator<Item = (Period, u64, u64, u64, f64)>,
    crossed: &mut Vec<Crossing>,
) -> Option<String> {
    let mut out = String::new();
    for (p, limit, used_after, charged, warn_at) in states {
        // The threshold in units, rounded up: 0.9 of 1000 is 900.
        let threshold = ((limit as f64) * warn_at).ceil() as u64;
        if used_after < threshold {
            continue;
        }
        let before = used_after.saturating_sub(charged);
        // The charge that used the last unit: exhausted from now on (once per period).
        if used_after >= limit && before < limit {
            crossed.push(Crossing {
                period: p.name(),
                used: used_after,
                limit,
                exhausted: true,
            });
        }
        if before < threshold {
            crossed.push(Crossing {
                period: p.name(),
                used: used_after,
                limit,
                exhausted: false,
            });
        }
        if before < threshold {
            tracing::warn!(
                tenant,
                period = p.name(),
                route,
                used = used_after,
                limit,
                "tenant budget crossed its warning threshold"
            );
            if let Some(m) = metrics {
                m.budget_warning(p.name());
            }
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        let pct = u128::from(used_after) * 100 / u128::from(limit.max(1));
        let _ = write!(out, "{}={pct}%", p.name());
    }
    (!out.is_empty()).then_some(out)
}

/// A charge that crossed a budget's warning threshold or used its last unit (audited as
/// `budget_warning` / `budget_exhausted`, once per period and tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    /// `daily` or `monthly`.
    pub period: &'static str,
    /// Units used after the charge.
    pub used: u64,
    /// The period's limit.
    pub limit: u64,
    /// Exhausted (else: the warning threshold).
    pub exhausted: bool,
}

/// Audits budget crossings as events of the request that caused them.
pub fn audit_crossings(ctx: &RequestContext, crossed: &[Crossing]) {
    for c in crossed {
        let event = if c.exhausted {
            crate::audit::Event::BudgetExhausted
        } else {
            crate::audit::Event::BudgetWarning
        };
        super::audit::budget_event(ctx, event, c.period, c.used, c.limit);
    }
}

/// Parses the units the app reported (`X-Usage-Units: 42`): plain digits only.
fn units(map: &HeaderMap, name: &HeaderName) -> Option<Result<u64, ()>> {
    let mut all = map.get_all(name).iter();
    let v = all.next()?;
    if all.next().is_some() {
        return Some(Err(()));
    }
    let Ok(s) = v.to_str() else {
        return Some(Err(()));
    };
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(()));
    }
    Some(s.parse::<u64>().map_err(|_| ()))
}

/// Charges a metered cost now; returns the `X-Budget-Warning` value. The store's future is
/// polled once (the in-memory store answers at once); one that is not ready is finished in a
/// task, without a warning.
pub fn charge_metered(
    store: &Arc<dyn StateStore>,
    metrics: Option<&Arc<Metrics>>,
    route: &str,
    now: Millis,
    m: &mut Metered,
    source: &HeaderMap,
    crossed: &mut Vec<Crossing>,
) -> Option<String> {
    if m.charged {
        return None;
    }
    let units = match units(source, &m.header)? {
        Ok(u) => u,
        Err(()) => {
            m.charged = true;
            tracing::warn!(
                tenant = %m.tenant,
                route,
                header = %m.header,
                "metered cost is not one plain number: nothing charged"
            );
            return None;
        }
    };
    m.charged = true;
    let mut states = Vec::new();
    for (p, limit) in periods(&m.budget) {
        let key = p.key(&m.tenant);
        let window = p.window();
        let mut fut = store.charge(now, &key, limit, window, units);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(st)) => {
                states.push((p, limit, st.used, units, m.budget.warn_at))
            }
            std::task::Poll::Ready(Err(e)) => {
                tracing::error!(error = %e, tenant = %m.tenant, "metered budget charge failed");
            }
            std::task::Poll::Pending => {
                drop(fut);
                let store = store.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Err(e) = store.charge(now, &key, limit, window, units).await {
                            tracing::error!(error = %e, "metered budget charge failed");
                        }
                    });
                }
            }
        }
    }
    warning_value(metrics, &m.tenant, route, states.into_iter(), crossed)
}

/// Adds what admission decided to a response: `RateLimit-Policy` and `RateLimit` (every rate
/// limit of the request), `X-Budget-Warning`, and for a metered route whose response head
/// reports the cost, the charge (the warning then reflects it).
pub fn respond(ctx: &mut RequestContext, headers: &mut HeaderMap, forwarded: bool) {
    let Some(mut admitted) = ctx.admission.take() else {
        return;
    };
    if forwarded && let Some(m) = admitted.metered.as_mut() {
        let now = ctx.snapshot.clock.now_ms();
        let route = ctx.route().map_or("", |r| &r.name).to_owned();
        let mut crossed = Vec::new();
        if let Some(w) = charge_metered(
            &ctx.snapshot.store,
            ctx.metrics(),
            &route,
            now,
            m,
            headers,
            &mut crossed,
        ) {
            admitted.warning = Some(w);
        }
        audit_crossings(ctx, &crossed);
    }
    if !admitted.rate.is_empty() {
        // `RateLimit-Policy` is fixed per limit (built at compile time); only `RateLimit`
        // (remaining, reset) is formatted per response.
        let mut policy = String::new();
        let mut state = String::with_capacity(64);
        for (l, st) in &admitted.rate {
            if !state.is_empty() {
                policy.push_str(", ");
                state.push_str(", ");
            }
            let t = match st.retry_after_ms {
                Some(r) if !st.allowed => secs_up(r),
                _ => u32::try_from(st.reset_after_ms.div_ceil(1_000)).unwrap_or(u32::MAX),
            };
            if admitted.rate.len() > 1 {
                policy.push_str(&l.policy_item);
            }
            let _ = write!(state, "\"{}\";r={};t={t}", l.name, st.remaining);
        }
        let policy = match admitted.rate.as_slice() {
            [(one, _)] => one.policy_header.clone(),
            _ => HeaderValue::from_str(&policy).ok(),
        };
        if let (Some(p), Ok(s)) = (policy, HeaderValue::from_str(&state)) {
            headers.insert(RATELIMIT_POLICY, p);
            headers.insert(RATELIMIT, s);
        }
    }
    if let Some(w) = admitted.warning.take()
        && let Ok(v) = HeaderValue::from_str(&w)
    {
        headers.insert(X_BUDGET_WARNING, v);
    }
    ctx.admission = Some(admitted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_seconds_round_up() {
        assert_eq!(secs_up(0), 1);
        assert_eq!(secs_up(1), 1);
        assert_eq!(secs_up(1_000), 1);
        assert_eq!(secs_up(1_001), 2);
        assert_eq!(secs_up(u64::MAX), u32::MAX);
    }

    #[test]
    fn crossings_are_reported_once_per_threshold() {
        let crossed = |states: Vec<(Period, u64, u64, u64, f64)>| {
            let mut c = Vec::new();
            warning_value(None, "t", "r", states.into_iter(), &mut c);
            c
        };
        // Below the threshold, and past it already before the charge: nothing new.
        assert!(crossed(vec![(Period::Daily, 1000, 899, 1, 0.9)]).is_empty());
        assert!(crossed(vec![(Period::Daily, 1000, 950, 1, 0.9)]).is_empty());
        // The charge that crossed 90 %.
        let warn = Crossing {
            period: "daily",
            used: 900,
            limit: 1000,
            exhausted: false,
        };
        assert_eq!(
            crossed(vec![(Period::Daily, 1000, 900, 1, 0.9)]),
            vec![warn]
        );
        // The charge that used the last unit (and crossed the threshold at once).
        let all = crossed(vec![(Period::Monthly, 10, 10, 5, 0.9)]);
        assert_eq!(
            all,
            vec![
                Crossing {
                    period: "monthly",
                    used: 10,
                    limit: 10,
                    exhausted: true
                },
                Crossing {
                    period: "monthly",
                    used: 10,
                    limit: 10,
                    exhausted: false
                }
            ]
        );
    }

    #[test]
    fn warning_lists_periods_at_or_past_the_threshold() {
        let w = |states: Vec<(Period, u64, u64, u64, f64)>| {
            warning_value(None, "t", "r", states.into_iter(), &mut Vec::new())
        };
        assert_eq!(w(vec![(Period::Daily, 1000, 899, 1, 0.9)]), None);
        assert_eq!(
            w(vec![(Period::Daily, 1000, 900, 1, 0.9)]).as_deref(),
            Some("daily=90%")
        );
        assert_eq!(
            w(vec![
                (Period::Daily, 10, 10, 3, 0.9),
                (Period::Monthly, 100, 95, 3, 0.9)
            ])
            .as_deref(),
            Some("daily=100%, monthly=95%")
        );
        assert_eq!(
            w(vec![(Period::Monthly, 100, 105, 10, 0.9)]).as_deref(),
            Some("monthly=105%")
        );
    }

    #[test]
    fn metered_units_are_one_plain_number() {
        let name = HeaderName::from_static("x-usage-units");
        let mut h = HeaderMap::new();
        assert_eq!(units(&h, &name), None);
        h.insert(&name, HeaderValue::from_static("42"));
        assert_eq!(units(&h, &name), Some(Ok(42)));
        for bad in ["", "-1", "1.5", "0x10", "1e3", "99999999999999999999999"] {
            h.insert(&name, HeaderValue::from_static(bad));
            assert_eq!(units(&h, &name), Some(Err(())), "{bad}");
        }
        h.insert(&name, HeaderValue::from_static("1"));
        h.append(&name, HeaderValue::from_static("2"));
        assert_eq!(units(&h, &name), Some(Err(())));
    }

    /// A store that cannot answer admissions (Redis down).
    #[derive(Debug)]
    struct Down(crate::store::MemoryStore);

    impl StateStore for Down {
        fn admit<'a>(
            &'a self,
            _now: Millis,
            _checks: &'a [LimitCheck<'a>],
        ) -> crate::store::StoreFuture<'a, crate::store::Admission> {
            Box::pin(std::future::ready(Err(
                crate::store::StoreError::Unavailable("down".into()),
            )))
        }
        fn release<'a>(
            &'a self,
            now: Millis,
            keys: &'a [&'a str],
        ) -> crate::store::StoreFuture<'a, ()> {
            self.0.release(now, keys)
        }
        fn charge<'a>(
            &'a self,
            now: Millis,
            key: &'a str,
            limit: u64,
            window: Window,
            units: u64,
        ) -> crate::store::StoreFuture<'a, LimitState> {
            self.0.charge(now, key, limit, window, units)
        }
        fn revoke<'a>(
            &'a self,
            now: Millis,
            r: crate::store::Revocation,
        ) -> crate::store::StoreFuture<'a, ()> {
            self.0.revoke(now, r)
        }
        fn revocations<'a>(
            &'a self,
            now: Millis,
        ) -> crate::store::StoreFuture<'a, Vec<crate::store::Revocation>> {
            self.0.revocations(now)
        }
        fn is_revoked(&self, now: Millis, jti: Option<&str>, sub: &str, iat: Option<u64>) -> bool {
            self.0.is_revoked(now, jti, sub, iat)
        }
        fn set_toggle<'a>(
            &'a self,
            name: &'a str,
            v: Option<bool>,
        ) -> crate::store::StoreFuture<'a, ()> {
            self.0.set_toggle(name, v)
        }
        fn toggle(&self, name: &str) -> Option<bool> {
            self.0.toggle(name)
        }
        fn toggles<'a>(&'a self) -> crate::store::StoreFuture<'a, Vec<(String, bool)>> {
            self.0.toggles()
        }
        fn sweep(&self, now: Millis) {
            self.0.sweep(now)
        }
    }

    #[test]
    fn an_unavailable_store_fails_closed_with_503() {
        let text = "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  \
                    environment: local\n  require_https: false\n\
                    rate_limit: { key: ip, limit: 10, per: 1s }\n\
                    routes:\n  - name: all\n    match: { path: \"/**\" }\n    public: true\n";
        let policy = crate::config::load_str(text, std::path::Path::new("/nowhere/f.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let live = crate::store::live::Live::new(Arc::new(Down(crate::store::MemoryStore::new(8))));
        let snapshot = Arc::new(crate::state::Snapshot::bind(policy, &live, &metrics));
        let (parts, ()) = http::Request::get("/x")
            .header("host", "app")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"))
            .into_parts();
        let conn = Arc::new(crate::pipeline::conn::ConnInfo::new(
            "127.0.0.1:4000".parse().unwrap_or_else(|e| panic!("{e}")),
            false,
        ));
        let mut ctx =
            RequestContext::new(snapshot, conn, None, parts.method.clone(), &parts.headers);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = std::pin::pin!(crate::pipeline::decide::decide(&mut ctx, &parts, &mut ()))
            .poll(&mut cx);
        let std::task::Poll::Ready(Err(r)) = polled else {
            panic!("not refused: {polled:?}");
        };
        assert_eq!(r, Rejection::StateUnavailable);
        let resp = r.to_response("rid");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(
            resp.body().as_ref(),
            br#"{"error":"service_unavailable","reason":"state_unavailable","request_id":"rid"}"#
        );
    }

    #[test]
    fn long_key_values_are_hashed() {
        let mut k = String::new();
        push_value(&mut k, "header:", "short");
        assert_eq!(k, "header:short");
        let mut k = String::new();
        push_value(&mut k, "header:", &"x".repeat(65));
        assert!(k.starts_with("header:sha256:") && k.len() == "header:sha256:".len() + 32);
    }
}
