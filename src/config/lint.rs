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

/// Warnings (not errors) about routes whose paths, spelled the way many apps read them, are
/// routed by fortress to another route with weaker checks (red-team F1 and F7). Each is
/// `LINE:COL: message` at the route, one per route and weaker route:
///
/// - spellings: a sample path of the route (`{param}` → `x`, `**` → `x`) with one segment or
///   all of it upper-cased (unless `paths.case_insensitive`), with the trailing `/` added or
///   removed, and with a `.json` suffix (suffix matching: Rails, Spring MVC before 5.3);
/// - methods: a route limited by `methods:` whose paths, for the methods it does not list
///   (GET, POST, PUT, DELETE, PATCH; HEAD follows GET, OPTIONS and TRACE are not served by
///   handlers), are routed to a weaker route or to `default: allow`.
///
/// Weaker: public while the route is not, or missing one of its `require` permissions, or
/// not as strict for its `require_any`, or without its tenant rule; `default: allow` is weaker
/// than any route that is not public.
pub fn shadowed_routes(
    router: &crate::policy::route::Router,
    positions: &[super::yaml::Pos],
    default: crate::policy::DefaultAction,
    paths: crate::policy::PathSettings,
) -> Vec<String> {
    use crate::policy::route::Lookup;
    let allow = default == crate::policy::DefaultAction::Allow;
    let mut out = Vec::new();
    for (route, pos) in router.routes().iter().zip(positions) {
        if route.public {
            continue;
        }
        let caught_by = |method: &http::Method, path: &str| -> Option<String> {
            match router.lookup(method, path) {
                Lookup::Found { route: other, .. }
                    if other.index != route.index && weaker(other, route) =>
                {
                    Some(format!("route `{}` ({})", other.name, other.pattern))
                }
                Lookup::NotFound | Lookup::MethodNotAllowed(_) if allow => {
                    Some("`default: allow`".to_owned())
                }
                _ => None,
            }
        };
        let sample = sample_path(&route.pattern);
        // Spellings (F1).
        let method = route
            .methods
            .as_ref()
            .and_then(|m| m.first().cloned())
            .unwrap_or(http::Method::GET);
        let refuse = paths.route_variants == crate::policy::RouteVariants::Refuse;
        let mut found: Vec<(String, Vec<String>)> = Vec::new();
        let mut refused: Vec<(String, Vec<String>)> = Vec::new();
        for variant in spellings(&route.pattern, &sample, paths.case_insensitive) {
            let Some(by) = caught_by(&method, &variant) else {
                continue;
            };
            // What the route stage does with this spelling (`pipeline/route_variants.rs`).
            let matched = match router.lookup(&method, &variant) {
                Lookup::Found { route, .. } => Some(route.index),
                _ => None,
            };
            let guarded = refuse
                && crate::pipeline::route_variants::ambiguous(
                    router,
                    &method,
                    &variant,
                    matched,
                    paths.case_insensitive,
                );
            group(if guarded { &mut refused } else { &mut found }, by, variant);
        }
        for (by, variants) in found {
            out.push(format!(
                "{}:{}: route `{}` is protected, but {method} {} {} caught by {by} with weaker \
                 checks, and an app that routes case- or trailing-slash-insensitively (Express, \
                 Spring Boot < 3, ASP.NET) or with suffix matching serves {} as {sample}; make \
                 the patterns agree (a `**` route, `paths.case_insensitive`, no trailing `/` in \
                 patterns) or add a route for the spelling",
                pos.line,
                pos.col,
                route.name,
                examples(&variants),
                if variants.len() == 1 { "is" } else { "are" },
                if variants.len() == 1 { "it" } else { "them" },
            ));
        }
        for (by, variants) in refused {
            out.push(format!(
                "{}:{}: route `{}`: {method} {} {} caught by {by} with weaker checks; \
                 fortress refuses such spellings (400 `ambiguous_path`, \
                 `paths.route_variants`); if clients send them, make the patterns agree (a \
                 `**` route, `paths.case_insensitive`)",
                pos.line,
                pos.col,
                route.name,
                examples(&variants),
                if variants.len() == 1 { "is" } else { "are" },
            ));
        }
        // Methods (F7).
        let Some(listed) = route.methods.as_ref() else {
            continue;
        };
        let mut found: Vec<(String, Vec<String>)> = Vec::new();
        for m in [
            http::Method::GET,
            http::Method::POST,
            http::Method::PUT,
            http::Method::DELETE,
            http::Method::PATCH,
        ] {
            if listed.contains(&m) {
                continue;
            }
            if let Some(by) = caught_by(&m, &sample) {
                group(&mut found, by, m.to_string());
            }
        }
        for (by, methods) in found {
            out.push(format!(
                "{}:{}: route `{}` ({}) accepts only {}, but {} on its paths (e.g. {sample}) \
                 {} routed to {by} with weaker checks; an app that serves several methods on \
                 one handler serves them there. List those methods in the route's \
                 `methods:`, or add a route for them with the same checks",
                pos.line,
                pos.col,
                route.name,
                route.pattern,
                listed
                    .iter()
                    .map(http::Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                methods.join(", "),
                if methods.len() == 1 { "is" } else { "are" },
            ));
        }
    }
    out
}

/// Adds `item` to the list of `key`, in first-seen order.
fn group(groups: &mut Vec<(String, Vec<String>)>, key: String, item: String) {
    match groups.iter_mut().find(|(k, _)| *k == key) {
        Some((_, items)) => {
            if !items.contains(&item) {
                items.push(item);
            }
        }
        None => groups.push((key, vec![item])),
    }
}

/// A concrete path for a pattern: `{param}` → `x`, a trailing `**` → `x`.
fn sample_path(pattern: &str) -> String {
    let path = pattern
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') || seg == "**" {
                "x"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    if path.is_empty() {
        "/".to_owned()
    } else {
        path
    }
}

/// At most three of `items`, then how many more.
fn examples(items: &[String]) -> String {
    let shown = items.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    match items.len().saturating_sub(3) {
        0 => shown,
        more => format!("{shown} (and {more} more)"),
    }
}

/// Spellings an app may read as `path`, the sample of `pattern` (without `path` itself): each
/// literal segment upper-cased alone, all of them upper-cased, and the whole path lower-cased
/// (unless `case_insensitive`), each with the trailing `/` added or removed; and `path.json`.
fn spellings(pattern: &str, path: &str, case_insensitive: bool) -> Vec<String> {
    let mut cases = vec![path.to_owned()];
    if !case_insensitive {
        let segments: Vec<&str> = path.split('/').collect();
        let literal: Vec<bool> = pattern
            .split('/')
            .map(|seg| !seg.starts_with('{') && seg != "**")
            .collect();
        let upper = |which: &dyn Fn(usize) -> bool| -> String {
            segments
                .iter()
                .enumerate()
                .map(|(i, seg)| {
                    if which(i) && literal.get(i) == Some(&true) {
                        seg.to_ascii_uppercase()
                    } else {
                        (*seg).to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        };
        for i in 0..segments.len() {
            cases.push(upper(&|j| j == i));
        }
        cases.push(upper(&|_| true));
        cases.push(path.to_ascii_lowercase());
    }
    let mut out: Vec<String> = Vec::new();
    for c in cases {
        let toggled = if c == "/" {
            None
        } else if let Some(stripped) = c.strip_suffix('/') {
            Some(stripped.to_owned())
        } else {
            Some(format!("{c}/"))
        };
        for v in std::iter::once(c).chain(toggled) {
            if v != path && !out.contains(&v) {
                out.push(v);
            }
        }
    }
    if !path.ends_with('/') {
        out.push(format!("{path}.json"));
    }
    out
}

/// Whether `other` checks less than `than` (see [`shadowed_routes`]).
fn weaker(other: &crate::policy::route::Route, than: &crate::policy::route::Route) -> bool {
    if than.public {
        return false;
    }
    if other.public {
        return true;
    }
    let (a, b) = (&than.access, &other.access);
    if a.require_all.iter().any(|p| !b.require_all.contains(p)) {
        return true;
    }
    let any_kept = a.require_any.is_empty()
        || a.require_any.iter().any(|p| b.require_all.contains(p))
        || (!b.require_any.is_empty() && b.require_any.iter().all(|p| a.require_any.contains(p)));
    if !any_kept {
        return true;
    }
    a.tenant.is_some() && b.tenant.is_none()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Method;

    use super::*;
    use crate::policy::route::{Access, Route, Router, TenantRule, TenantSource};
    use crate::policy::{DefaultAction, PathSettings, RouteVariants};

    fn route(name: &str, pattern: &str, methods: Option<Vec<Method>>, access: Access) -> Route {
        Route {
            name: name.into(),
            pattern: pattern.into(),
            methods,
            public: false,
            upstream_timeout: Duration::from_secs(1),
            access,
            stream: None,
            websocket: false,
            params_used: Vec::new(),
            index: 0,
            edge: Default::default(),
            limits: Default::default(),
        }
    }

    fn public(name: &str, pattern: &str) -> Route {
        Route {
            public: true,
            ..route(name, pattern, None, Access::default())
        }
    }

    fn needs(perms: &[&str]) -> Access {
        Access {
            require_all: perms.iter().map(|p| (*p).to_owned()).collect(),
            ..Access::default()
        }
    }

    fn warnings(routes: Vec<Route>, default: DefaultAction, paths: PathSettings) -> Vec<String> {
        let n = routes.len();
        let router = Router::build(routes).expect("valid");
        let positions: Vec<crate::config::yaml::Pos> = (1..=n)
            .map(|i| crate::config::yaml::Pos {
                line: i as u32,
                col: 1,
            })
            .collect();
        shadowed_routes(&router, &positions, default, paths)
    }

    #[test]
    fn samples_and_spellings() {
        assert_eq!(sample_path("/"), "/");
        assert_eq!(sample_path("/**"), "/x");
        assert_eq!(sample_path("/admin/**"), "/admin/x");
        assert_eq!(sample_path("/orgs/{org_id}/**"), "/orgs/x/x");
        assert_eq!(sample_path("/panel/"), "/panel/");
        assert_eq!(
            spellings("/api/admin", "/api/admin", false),
            [
                "/api/admin/",
                "/API/admin",
                "/API/admin/",
                "/api/ADMIN",
                "/api/ADMIN/",
                "/API/ADMIN",
                "/API/ADMIN/",
                "/api/admin.json",
            ]
        );
        // Placeholders are not upper-cased; case-insensitive paths have only the slash and
        // the suffix.
        assert_eq!(
            spellings("/orgs/{org_id}/**", "/orgs/x/x", false),
            ["/orgs/x/x/", "/ORGS/x/x", "/ORGS/x/x/", "/orgs/x/x.json"]
        );
        assert_eq!(
            spellings("/panel/", "/panel/", true),
            ["/panel"],
            "no suffix after a trailing slash"
        );
        assert_eq!(spellings("/", "/", true), Vec::<String>::new());
    }

    #[test]
    fn weaker_is_public_fewer_permissions_or_no_tenant() {
        let tenant = Access {
            tenant: Some(TenantRule {
                source: TenantSource::PathParam("org".into()),
                cross_tenant_permission: None,
            }),
            ..needs(&["a:read"])
        };
        let any = |p: &[&str]| Access {
            require_any: p.iter().map(|s| (*s).to_owned()).collect(),
            ..Access::default()
        };
        let r = |a: Access| route("r", "/r", None, a);
        let strict = r(needs(&["a:read", "b:read"]));
        assert!(weaker(&public("p", "/p"), &strict));
        assert!(weaker(&r(needs(&["a:read"])), &strict));
        assert!(!weaker(&r(needs(&["b:read", "a:read", "c:read"])), &strict));
        assert!(!weaker(&strict, &public("p", "/p")));
        assert!(weaker(&r(needs(&["a:read"])), &r(tenant.clone())));
        assert!(!weaker(&r(tenant.clone()), &r(tenant)));
        assert!(weaker(&r(Access::default()), &r(any(&["x", "y"]))));
        assert!(weaker(&r(any(&["x", "z"])), &r(any(&["x", "y"]))));
        assert!(!weaker(&r(any(&["y"])), &r(any(&["x", "y"]))));
        assert!(!weaker(&r(needs(&["x"])), &r(any(&["x", "y"]))));
    }

    #[test]
    fn star_star_routes_and_segment_case_are_linted() {
        let paths = PathSettings::default();
        let w = warnings(
            vec![
                public("spa", "/**"),
                route("admin", "/admin/**", None, needs(&["admin:all"])),
                route("api", "/api/**", None, needs(&["api:read"])),
                route("api-admin", "/api/admin", None, needs(&["admin:all"])),
            ],
            DefaultAction::Deny,
            paths,
        );
        let starts = [
            "2:1: route `admin`: GET /ADMIN/x, /ADMIN/x/ are caught by route `spa` (/**)",
            "3:1: route `api`: GET /API/x, /API/x/ are caught by route `spa` (/**)",
            "4:1: route `api-admin` is protected, but GET /api/admin.json is caught by route `api`",
            "4:1: route `api-admin`: GET /api/admin/, /api/ADMIN, /api/ADMIN/ are caught by route `api`",
            "4:1: route `api-admin`: GET /API/admin, /API/admin/, /API/ADMIN (and 1 more) are caught by route `spa`",
        ];
        assert_eq!(w.len(), starts.len(), "{w:#?}");
        for (w, s) in w.iter().zip(starts) {
            assert!(w.starts_with(s), "{w}\n{s}");
        }
        // Same checks everywhere: nothing to say.
        let w = warnings(
            vec![
                route("all", "/**", None, needs(&["api:read"])),
                route("api", "/api/**", None, needs(&["api:read"])),
            ],
            DefaultAction::Deny,
            paths,
        );
        assert!(w.is_empty(), "{w:#?}");
    }

    #[test]
    fn method_shadowing_names_both_routes_and_the_methods() {
        let w = warnings(
            vec![
                public("spa", "/**"),
                route(
                    "admin",
                    "/admin/**",
                    Some(vec![Method::GET, Method::DELETE]),
                    needs(&["admin:all"]),
                ),
            ],
            DefaultAction::Deny,
            PathSettings {
                case_insensitive: true,
                ..PathSettings::default()
            },
        );
        assert_eq!(
            w,
            [
                "2:1: route `admin` (/admin/**) accepts only GET, DELETE, but POST, PUT, PATCH on \
              its paths (e.g. /admin/x) are routed to route `spa` (/**) with weaker checks; an \
              app that serves several methods on one handler serves them there. List those \
              methods in the route's `methods:`, or add a route for them with the same checks"
            ]
        );
        // `route_variants: ignore` changes what the spelling warnings say, not F7.
        let w = warnings(
            vec![
                public("spa", "/**"),
                route(
                    "admin",
                    "/admin/**",
                    Some(vec![Method::GET]),
                    needs(&["admin:all"]),
                ),
            ],
            DefaultAction::Deny,
            PathSettings {
                route_variants: RouteVariants::Ignore,
                ..PathSettings::default()
            },
        );
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(w[0].starts_with(
            "2:1: route `admin` is protected, but GET /ADMIN/x, /ADMIN/x/ are caught by route `spa`"
        ));
        assert!(w[1].contains("accepts only GET, but POST, PUT, DELETE, PATCH"));
    }
}
