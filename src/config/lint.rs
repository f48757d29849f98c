//! Policy lint, applied on every load and reload (so a lint error keeps the last good policy)
//! and by `fortress check`. Each rule points at the line and column at fault.

use super::raw::RawConfig;
use super::rbac::{Rbac, check_permission};
use super::yaml::ConfigError;

/// Runs every lint rule.
pub fn lint(raw: &RawConfig, rbac: &Rbac, errors: &mut Vec<ConfigError>) {
    let default_segments: Vec<String> = DEFAULT_PRIVILEGED.iter().map(|s| s.to_string()).collect();
    let privileged = raw
        .lint
        .as_ref()
        .and_then(|l| l.privileged_segments.clone())
        .unwrap_or(default_segments);
    for r in &raw.routes {
        let name = &r.name.value;
        let public = r.public.unwrap_or(false);
        let has_require = r.require.is_some() || r.require_any.is_some();
        if public && has_require {
            errors.push(ConfigError::at(
                r.name.pos,
                format!(
                    "route `{name}` is `public: true` but has `require`/`require_any`: pick one"
                ),
            ));
        }
        if !public && !has_require {
            let path = &r.matcher.path;
            let hit = path
                .value
                .split('/')
                .find(|seg| privileged.iter().any(|p| seg.eq_ignore_ascii_case(p)));
            if let Some(seg) = hit {
                errors.push(ConfigError::at(
                    path.pos,
                    format!(
                        "route `{name}`: path segment `{seg}` looks privileged but the route has no \
                         `require`/`require_any`; add a permission or mark it `public: true`"
                    ),
                ));
            }
        }
        if let Some(p) = r
            .tenant
            .as_ref()
            .and_then(|t| t.cross_tenant_permission.as_ref())
        {
            if let Err(msg) = check_permission(&p.value) {
                errors.push(ConfigError::at(p.pos, msg));
            } else if !rbac.granted_explicitly_by_any(&p.value) {
                errors.push(ConfigError::at(
                    p.pos,
                    format!(
                        "cross-tenant permission `{}` is granted by no role by name (`*` does \
                         not grant crossing tenants)",
                        p.value
                    ),
                ));
            }
        }
        if public && r.tenant.is_some() {
            errors.push(ConfigError::at(
                r.name.pos,
                format!("route `{name}` is public but has a `tenant` rule, which needs a token"),
            ));
        }
        let perms = r
            .require
            .iter()
            .flatten()
            .chain(r.require_any.iter().flatten());
        for p in perms {
            if let Err(msg) = check_permission(&p.value) {
                errors.push(ConfigError::at(p.pos, msg));
            } else if !rbac.granted_by_any(&p.value) {
                errors.push(ConfigError::at(
                    p.pos,
                    format!("permission `{}` is granted by no role", p.value),
                ));
            }
        }
        if r.require_any.as_ref().is_some_and(|l| l.is_empty())
            || r.require.as_ref().is_some_and(|l| l.is_empty())
        {
            errors.push(ConfigError::at(
                r.name.pos,
                format!("route `{name}`: an empty `require`/`require_any` list grants nothing; remove it"),
            ));
        }
    }
}

/// Path segments that look privileged by default.
pub const DEFAULT_PRIVILEGED: [&str; 5] = ["admin", "internal", "debug", "actuator", "metrics"];

/// Warnings (not errors) for protected routes that a broader route would catch under a
/// spelling the app may treat as the same path: upper case (`/API/ADMIN`, for apps that route
/// case-insensitively) or a format suffix (`/api/admin.json`, for frameworks with suffix
/// matching, e.g. Rails, older Spring). Each is `LINE:COL: message` at the protected route.
pub fn shadowed_routes(
    router: &crate::policy::route::Router,
    positions: &[super::yaml::Pos],
    default: crate::policy::DefaultAction,
    case_insensitive: bool,
) -> Vec<String> {
    use crate::policy::route::Lookup;
    let mut out = Vec::new();
    for (route, pos) in router.routes().iter().zip(positions) {
        let protected = !route.public
            && (!route.access.require_all.is_empty() || !route.access.require_any.is_empty());
        if !protected || route.pattern.ends_with("**") {
            continue;
        }
        // A concrete path for the pattern (`{param}` → `x`), then its variants.
        let path: String = route
            .pattern
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let method = route
            .methods
            .as_ref()
            .and_then(|m| m.first().cloned())
            .unwrap_or(http::Method::GET);
        let mut variants = vec![format!("{path}.json")];
        if !case_insensitive && path.bytes().any(|b| b.is_ascii_lowercase()) {
            variants.insert(0, path.to_ascii_uppercase());
        }
        for variant in variants {
            let caught_by = match router.lookup(&method, &variant) {
                Lookup::Found { route: other, .. } if other.index != route.index => {
                    format!("route `{}` ({})", other.name, other.pattern)
                }
                Lookup::NotFound | Lookup::MethodNotAllowed(_)
                    if default == crate::policy::DefaultAction::Allow =>
                {
                    "`default: allow`".to_owned()
                }
                _ => continue,
            };
            out.push(format!(
                "{}:{}: route `{}` is protected, but {method} {variant} is caught by {caught_by} \
                 with weaker checks; an app that treats it as {path} would serve it there \
                 (set `paths.case_insensitive`, or add a route for the variant)",
                pos.line, pos.col, route.name
            ));
        }
    }
    out
}
