//! The route stage: method + canonical path → route (through the policy's prebuilt
//! matchers, `policy::route`), or the policy default. The router also refuses methods that
//! are not upper-case (400) and methods no route can list (405, whatever the default), and
//! routes HEAD like the GET of the same path.

use http::request::Parts;

use super::context::{Canonical, RequestContext};
use super::decide::Step;
use crate::error::{AmbiguityError, MethodError, Methods, Rejection};
use crate::policy::route::Lookup;
use crate::policy::{DefaultAction, RouteVariants};

/// Finds the route; keeps the path parameters later checks read, and the route's mode.
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    // Direct field borrows: the snapshot and the canonical path are read while the route
    // fields are set.
    let policy = &ctx.snapshot.policy;
    let path = match &ctx.canonical {
        Canonical::Rewritten(p) => p.as_str(),
        Canonical::AsSent | Canonical::Unknown => req.uri.path(),
    };
    // A CORS preflight is matched as the method it announces (`pipeline/cors.rs`).
    let preflight = super::cors::preflight_method(policy, req, path);
    if preflight.is_some() {
        ctx.cors = super::cors::CorsMatch::PreflightPending;
    }
    match policy
        .router
        .lookup(preflight.as_ref().unwrap_or(&req.method), path)
    {
        Lookup::Found { route, params } => {
            ctx.route = Some(route.index);
            for (slot, name) in ctx.params.iter_mut().zip(&route.params_used) {
                *slot = params.get(name.as_str()).and_then(|v| range_in(path, v));
            }
            ctx.dry_run = route.access.dry_run.unwrap_or(policy.dry_run);
            variants(policy, &req.method, path, Some(route.index))?;
            Ok(Step::Pass)
        }
        Lookup::NotUppercase => Err(Rejection::RejectMethod(MethodError::MethodNotUppercase)),
        // Never forwarded, even with `default: allow` (no route can list such a method); the
        // `Allow` header names what the path accepts (any method, for an unmatched path under
        // `default: allow`).
        Lookup::UnknownMethod(allowed) => Err(Rejection::UnknownMethod(
            if allowed.is_empty() && policy.default == DefaultAction::Allow {
                Methods::ALL
            } else {
                allowed
            },
        )),
        Lookup::MethodNotAllowed(allowed) if policy.default == DefaultAction::Deny => {
            Err(Rejection::DenyMethod(allowed))
        }
        Lookup::NotFound if policy.default == DefaultAction::Deny => Err(Rejection::DenyUnmatched),
        Lookup::MethodNotAllowed(_) | Lookup::NotFound => {
            ctx.dry_run = policy.dry_run;
            variants(policy, &req.method, path, None)?;
            Ok(Step::Skip("no route matches; default: allow"))
        }
    }
}

/// `paths.route_variants: refuse`: a spelling of the path that a case- or
/// trailing-slash-insensitive app reads as the same path must not be routed to another route
/// (`route_variants.rs`). Never dry-run: the refusal is not a policy decision to try out.
fn variants(
    policy: &crate::policy::Policy,
    method: &http::Method,
    path: &str,
    matched: Option<usize>,
) -> Result<(), Rejection> {
    let refuse = policy.paths.route_variants == RouteVariants::Refuse
        && super::route_variants::ambiguous(
            &policy.router,
            method,
            path,
            matched,
            policy.paths.case_insensitive,
        );
    if refuse {
        Err(Rejection::RejectAmbiguous(AmbiguityError::AmbiguousPath))
    } else {
        Ok(())
    }
}

/// Where `part` (a slice of `whole`) sits in `whole`, as a byte range.
fn range_in(whole: &str, part: &str) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (whole.get(start..end) == Some(part)).then_some((start, end))
}
