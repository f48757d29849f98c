//! Authorization (RBAC): the route's required permissions against the principal's roles,
//! expanded at compile time.

use http::request::Parts;

use super::context::RequestContext;
use super::decide::Step;
use crate::auth::Principal;
use crate::error::Rejection;
use crate::policy::rbac::Rbac;
use crate::policy::route::Access;

/// The authorization stage: needs the principal (without one, a route that requires a
/// permission refuses).
pub fn check(ctx: &mut RequestContext, _req: &Parts) -> Result<Step, Rejection> {
    let Some(route) = ctx.route() else {
        return Ok(Step::Skip("no route"));
    };
    let access = &route.access;
    if access.require_all.is_empty() && access.require_any.is_empty() {
        return Ok(Step::Skip("no permission required"));
    }
    match &ctx.principal {
        Some(p) if allows(access, p, &ctx.snapshot.rbac) => Ok(Step::Pass),
        _ => Err(Rejection::DenyPermission),
    }
}

/// Whether `principal` has every permission in `require_all` and, when `require_any` is set,
/// at least one of those.
pub fn allows(access: &Access, principal: &Principal, rbac: &Rbac) -> bool {
    let all = access
        .require_all
        .iter()
        .all(|p| rbac.allows(&principal.roles, p));
    let any = access.require_any.is_empty()
        || access
            .require_any
            .iter()
            .any(|p| rbac.allows(&principal.roles, p));
    all && any
}

/// `needs all of [...] and any of [...]` (for explain).
pub fn requirement(a: &Access) -> String {
    let mut parts = Vec::new();
    if !a.require_all.is_empty() {
        parts.push(format!("all of [{}]", a.require_all.join(", ")));
    }
    if !a.require_any.is_empty() {
        parts.push(format!("any of [{}]", a.require_any.join(", ")));
    }
    format!("needs {}", parts.join(" and "))
}
