//! The decision: every check a request goes through before it may be forwarded, in a fixed,
//! visible order. Each check has the same shape,
//! `fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection>`: it reads the
//! request and the context, writes what it learned into the context, and passes, skips or
//! refuses. The proxy and `fortress explain` run this same function; explain passes an
//! [`Observer`] that records each stage, the proxy passes `()`.

use http::request::Parts;
use strum::IntoStaticStr;

use super::context::RequestContext;
use super::{
    admission, ambiguity, auth_throttle, authn, authz, concurrency, cors, framing, host, ip_allow,
    limits, normalize, readiness, route, tenant, toggles, transport,
};
use crate::error::Rejection;

/// The checks, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Stage {
    /// `Transfer-Encoding` / `Content-Length`: one unambiguous framing.
    Framing,
    /// HTTPS, forwarded proto, credentials over plain HTTP, `Connection` tricks.
    Transport,
    /// `Host` / `:authority` well-formed, single, consistent, and allowed.
    Host,
    /// Target form and canonical path.
    Normalize,
    /// `_` spellings of headers the policy reads, method overrides in the query.
    Ambiguity,
    /// Route match or the policy default.
    Route,
    /// The route's `requires_toggle`: off → 503 `feature_disabled`.
    Toggle,
    /// The route's readiness guard (`guard:`): 503 `not_ready` while a condition fails.
    Readiness,
    /// CORS: a preflight answered (or refused) here; an allowed origin remembered.
    Cors,
    /// The client IP against `allow_ips` (policy-wide and the route's).
    IpAllow,
    /// Body size on `Content-Length` (413) and media type (415).
    RequestLimits,
    /// Failed-authentication throttling of the client IP.
    AuthThrottle,
    /// JWT and revocation.
    Authn,
    /// RBAC.
    Authz,
    /// Tenant isolation.
    Tenant,
    /// Rate limits and the tenant budget (one state-store call).
    Admission,
    /// The route's concurrency class: a permit held until the response ends.
    Concurrency,
}

impl Stage {
    /// The stage's name (explain, logs).
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// A check that did not refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It ran and passed.
    Pass,
    /// It did not apply, and why.
    Skip(&'static str),
}

/// Receives each stage's outcome, with the context as the stage left it (explain builds its
/// details from that; the proxy's `()` ignores everything).
pub trait Observer {
    /// A stage passed or was skipped.
    fn passed(&mut self, _stage: Stage, _ctx: &RequestContext, _req: &Parts, _step: Step) {}
    /// A stage refused; `dry_run` means the refusal was recorded and the request goes on.
    fn refused(
        &mut self,
        _stage: Stage,
        _ctx: &RequestContext,
        _req: &Parts,
        _r: Rejection,
        _dry_run: bool,
    ) {
    }
    /// Whether the decision may consume live state (take concurrency permits, count failed
    /// authentications). `fortress explain` says no.
    fn live(&self) -> bool {
        true
    }
}

impl Observer for () {}

/// Runs every check, in order. `Err` means: refuse with this rejection. On `Ok` the request
/// may be forwarded (in dry-run mode possibly with a recorded denial).
pub async fn decide<O: Observer>(
    ctx: &mut RequestContext,
    req: &Parts,
    obs: &mut O,
) -> Result<(), Rejection> {
    macro_rules! stage {
        ($stage:expr, $result:expr) => {{
            let result = $result;
            gate(ctx, req, obs, $stage, result)?;
        }};
    }
    // Framing before anything: a request whose length could be read two ways (a smuggling
    // attempt) is refused, and its connection closed, before any other header is judged.
    stage!(Stage::Framing, framing::check(ctx, req));
    // Transport next: a request that must not travel over this connection (plain HTTP where
    // HTTPS is required, credentials over plain HTTP, `Connection` naming protected headers)
    // is refused whatever it asks for, before its path or token is looked at.
    stage!(Stage::Transport, transport::check(ctx, req));
    // The host right after: a request whose host is missing, ambiguous (two `Host`s, or an
    // `:authority` that disagrees with `host`) or not served here (421) is refused before its
    // path is read, so no check below ever judges a request meant for another virtual host.
    stage!(Stage::Host, host::check(ctx, req));
    // The canonical path before routing: it is what is matched *and* what is forwarded.
    stage!(Stage::Normalize, normalize::check(ctx, req));
    // Ambiguity before routing, so no route's mode can let it through: a request whose
    // headers or query the app could read differently (an `_` spelling of a header the policy
    // reads, a `_method` override) is refused before any stage reads them.
    stage!(Stage::Ambiguity, ambiguity::check(ctx, req));
    // The route (or the default) decides what follows, including the route's dry-run mode.
    // 404/405 are never dry-run: there is no route whose mode could apply.
    stage!(Stage::Route, route::check(ctx, req));
    // The route's toggle right after routing: a switched-off feature answers the same 503
    // to everyone (preflights included), before any credential is read or state consumed.
    stage!(Stage::Toggle, toggles::check(ctx, req));
    stage!(Stage::Readiness, readiness::check(ctx, req, obs.live()));
    // CORS right after routing and before authentication: browsers send no credentials on a
    // preflight, and the route that would serve the announced method decides its CORS. An
    // allowed preflight is answered here (204) and goes through no later stage.
    stage!(Stage::Cors, cors::check(ctx, req));
    if cors::is_preflight(ctx) {
        return Ok(());
    }
    // The IP allowlist right after routing (the route's own list is known now): the cheapest
    // refusal of a client that may not be here at all, before any credential is read or any
    // state is touched.
    stage!(Stage::IpAllow, ip_allow::check(ctx, req));
    // Request limits before anything that consumes state (rate limits, budgets, concurrency)
    // or costs (token verification): a body too large on `Content-Length`, or of a media type
    // the route does not take, is refused from the head alone.
    stage!(Stage::RequestLimits, limits::check(ctx, req));
    // The failed-authentication throttle just before authentication: a throttled client's
    // request costs no verification (and its guesses are never judged).
    stage!(Stage::AuthThrottle, auth_throttle::check(ctx, req).await);
    // Authentication after routing: only the route knows whether it is public. Failures that
    // look like guesses are counted against the client IP (not by explain).
    let live = obs.live();
    let authn_started = ctx.trace.now();
    let authn = authn::check(ctx, req).await;
    ctx.trace.authn(authn_started, &authn);
    stage!(Stage::Authn, auth_throttle::count(ctx, authn, live).await);
    // Authorization, then tenant isolation: both judge the principal authentication set.
    stage!(Stage::Authz, authz::check(ctx, req));
    stage!(Stage::Tenant, tenant::check(ctx, req));
    // Admission after every check that refuses without consuming state (and after the
    // principal and tenant are known, which limits are keyed by): a request another stage
    // refuses never spends a rate-limit token or budget unit. One store call for all limits.
    stage!(Stage::Admission, admission::check(ctx, req).await);
    // The concurrency class last: only a request every other check let through takes a
    // permit or waits in the queue, and the tenant it is counted under is the verified one.
    stage!(Stage::Concurrency, concurrency::check(ctx, req, live).await);
    Ok(())
}

/// Reports a stage's result, and applies dry-run: after routing, a policy refusal (token,
/// permission, tenant) on a dry-run route is recorded (the first one wins) and the request
/// goes on. An ambiguous request is refused in every mode.
fn gate<O: Observer>(
    ctx: &mut RequestContext,
    req: &Parts,
    obs: &mut O,
    stage: Stage,
    result: Result<Step, Rejection>,
) -> Result<(), Rejection> {
    match result {
        Ok(step) => {
            obs.passed(stage, ctx, req, step);
            Ok(())
        }
        Err(r) if stage > Stage::Route && ctx.dry_run && r.dry_run_may_forward() => {
            ctx.dry_run_refusal(r);
            obs.refused(stage, ctx, req, r, true);
            Ok(())
        }
        Err(r) => {
            obs.refused(stage, ctx, req, r, false);
            Err(r)
        }
    }
}
