//! The route stage: method + canonical path → route (through the policy's prebuilt
//! matchers, `policy::route`), or the policy default.

use http::request::Parts;

use super::context::{Canonical, RequestContext};
use super::decide::Step;
use crate::error::Rejection;
use crate::policy::DefaultAction;
use crate::policy::route::Lookup;

/// Finds the route; keeps the path parameters later checks read, and the route's mode.
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    // Direct field borrows: the snapshot and the canonical path are read while the route
    // fields are set.
    let policy = &ctx.snapshot.policy;
    let path = match &ctx.canonical {
        Canonical::Rewritten(p) => p.as_str(),
        Canonical::AsSent | Canonical::Unknown => req.uri.path(),
    };
    match policy.router.lookup(&req.method, path) {
        Lookup::Found { route, params } => {
            ctx.route = Some(route.index);
            for name in &route.params_used {
                if let Some(v) = params.get(name.as_str()) {
                    ctx.params.push((name.clone(), v.to_owned()));
                }
            }
            ctx.dry_run = route.access.dry_run.unwrap_or(policy.dry_run);
            Ok(Step::Pass)
        }
        Lookup::MethodNotAllowed(allowed) if policy.default == DefaultAction::Deny => {
            Err(Rejection::DenyMethod(allowed))
        }
        Lookup::NotFound if policy.default == DefaultAction::Deny => Err(Rejection::DenyUnmatched),
        Lookup::MethodNotAllowed(_) | Lookup::NotFound => {
            ctx.dry_run = policy.dry_run;
            Ok(Step::Skip("no route matches; default: allow"))
        }
    }
}
