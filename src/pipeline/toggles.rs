//! Toggle stage: a route with `requires_toggle: NAME` answers 503 `feature_disabled` while the
//! toggle is off. The value is the state store's override (set through the admin API) over
//! the policy default; one lock-free read per request.

use http::request::Parts;

use super::context::RequestContext;
use super::decide::Step;
use crate::error::Rejection;

/// The toggle stage, right after routing.
pub fn check(ctx: &mut RequestContext, _req: &Parts) -> Result<Step, Rejection> {
    let Some(index) = ctx.route().and_then(|r| r.access.requires_toggle) else {
        return Ok(Step::Skip("no toggle"));
    };
    // Compile resolves every name; an index without a toggle fails closed.
    let Some(toggle) = ctx.snapshot.policy.toggles.list.get(index) else {
        return Err(Rejection::FeatureDisabled);
    };
    // An override flipped on another instance may not have reached this one.
    if ctx.snapshot.store.is_stale() {
        return Err(Rejection::StateUnavailable);
    }
    let on = ctx
        .snapshot
        .store
        .toggle(&toggle.name)
        .unwrap_or(toggle.default);
    if on {
        Ok(Step::Pass)
    } else {
        Err(Rejection::FeatureDisabled)
    }
}
