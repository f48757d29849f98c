//! Authorization (RBAC): the route's required permissions against the principal's roles,
//! expanded at compile time.

use crate::auth::Principal;
use crate::config::rbac::Rbac;
use crate::pipeline::route::Access;

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
