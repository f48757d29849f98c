//! The route-variant guard (`paths.route_variants`, red-team F1).
//!
//! Many frameworks route without regard to case and treat a trailing `/` as optional
//! (Express by default, Spring Boot before 3, ASP.NET): to them `/Admin/x`, `/admin/x` and
//! `/admin/x/` are one path. Fortress matches case-sensitively and keeps the trailing slash,
//! so a spelling that fortress routes to a broader, weaker route (a public `/**`, the parent
//! `/api/**`, `default: allow`) would be judged by that route and served by the app as the
//! protected path. After routing, the route stage looks up the spellings such an app reads as
//! the same path; if one of them is routed (same method) to a different route, the request is
//! refused (400 `ambiguous_path`, never dry-run).
//!
//! The spellings of a canonical path `P` (normalization already merged `//`, resolved dot
//! segments and decoded `%41`-style escapes, so they need no variant here):
//! - `lower(P)`: ASCII letters lower-cased outside `%XX` (not when `paths.case_insensitive`
//!   is on: then `P` already is lower case);
//! - when `P` ends in `/` (and is not `/`): `P` without it, and `lower(P)` without it;
//! - when `P` has an upper-case letter and no trailing `/`: `P/` and `lower(P)/`, counted
//!   only when the route they reach has a pattern that itself ends in `/` (`/admin/`). A
//!   slash added to a path is routed by a `**` fallback of a more specific route more often
//!   than not (`/files/{id}` next to `/**`: `/files/AbC/` is the fallback's); counting that
//!   would refuse ordinary mixed-case ids. A lower-case path without a trailing `/` is not
//!   looked at (the common case costs nothing): the lint warns about patterns that end in
//!   `/` and whose slash-less form another route takes.
//!
//! A spelling that no route matches is not counted: it would get the default, which is no
//! weaker than the route the request matched unless that default is `allow`, and then the
//! request's own route already applied checks the default would not.
//!
//! Suffix matching (Spring MVC before 5.3 serves `/admin` for `/admin.json`) is not looked at
//! per request: most paths with a `.` are files, and the lint warns about `PATH.json` caught
//! by another route.
//!
//! Cost: one `ends_with` and one scan of the path for upper-case letters (no allocation) on
//! every request; the extra lookups (and the lower-cased copy) only for paths with an
//! upper-case letter or a trailing slash.

use http::Method;

use super::normalize::lower_case;
use crate::policy::route::{Lookup, Route, Router};

/// Whether a spelling of `path` that an app reads as the same path is routed (same `method`)
/// to a route other than `matched` (the route the request matched; `None` when it matched
/// none and the default is `allow`).
pub fn ambiguous(
    router: &Router,
    method: &Method,
    path: &str,
    matched: Option<usize>,
    case_insensitive: bool,
) -> bool {
    let slash = path.len() > 1 && path.ends_with('/');
    let lower = if case_insensitive {
        None
    } else {
        lower_case(path)
    };
    if !slash && lower.is_none() {
        return false;
    }
    let differs = |p: &str, added_slash: bool| match router.lookup(method, p) {
        Lookup::Found { route, .. } => {
            Some(route.index) != matched && (!added_slash || ends_in_slash(route))
        }
        _ => false,
    };
    match (slash, lower.as_deref()) {
        (true, lower) => {
            differs(without_slash(path), false)
                || lower.is_some_and(|l| differs(l, false) || differs(without_slash(l), false))
        }
        (false, Some(l)) => {
            if differs(l, false) {
                return true;
            }
            let mut with_slash = String::with_capacity(path.len() + 1);
            for p in [path, l] {
                with_slash.clear();
                with_slash.push_str(p);
                with_slash.push('/');
                if differs(&with_slash, true) {
                    return true;
                }
            }
            false
        }
        (false, None) => false,
    }
}

/// `p` without its trailing `/`.
fn without_slash(p: &str) -> &str {
    p.strip_suffix('/').unwrap_or(p)
}

/// A pattern that names a trailing slash itself (`/admin/`, `/a/{x}/`), not through `**`.
pub fn ends_in_slash(route: &Route) -> bool {
    route.pattern.len() > 1 && route.pattern.ends_with('/')
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::route::Access;

    fn route(name: &str, pattern: &str, methods: Option<Vec<Method>>) -> Route {
        Route {
            name: name.into(),
            pattern: pattern.into(),
            methods,
            public: false,
            upstream_timeout: Duration::from_secs(1),
            access: Access::default(),
            stream: None,
            websocket: false,
            params_used: Vec::new(),
            index: 0,
            edge: Default::default(),
            limits: Default::default(),
        }
    }

    fn index(r: &Router, m: &Method, p: &str) -> Option<usize> {
        match r.lookup(m, p) {
            Lookup::Found { route, .. } => Some(route.index),
            _ => None,
        }
    }

    /// Whether `path` (as routed) is ambiguous for GET.
    fn amb(r: &Router, path: &str, ci: bool) -> bool {
        let m = Method::GET;
        ambiguous(r, &m, path, index(r, &m, path), ci)
    }

    fn router() -> Router {
        Router::build(vec![
            route("spa", "/**", None),
            route("admin", "/admin/**", None),
            route("orgs", "/orgs/{org_id}/**", None),
            route("api", "/api/**", None),
            route("api-admin", "/api/admin", None),
            route("files", "/files/{id}", None),
            route("slash", "/exact/", None),
            route("post-only", "/write/**", Some(vec![Method::POST])),
        ])
        .expect("valid")
    }

    #[test]
    fn case_and_slash_spellings_of_another_route_are_ambiguous() {
        let r = router();
        for p in [
            "/Admin/x",
            "/ADMIN",
            "/ORGS/globex/x",
            "/Orgs/globex",
            "/api/Admin",
            "/api/ADMIN",
            "/api/admin/",
            "/API/admin/",
            "/api/Admin/",
            "/files/AbC/",
            "/files/x/",
            "/Exact",
            // The app reads it as `/exact`, which the catch-all takes: both spellings must
            // agree (the lint says so); the request with the slash is refused.
            "/exact/",
        ] {
            assert!(amb(&r, p, false), "{p}");
        }
    }

    #[test]
    fn spellings_of_the_same_route_are_not() {
        let r = router();
        for p in [
            "/",
            "/index.html",
            "/Index.html",
            "/some/Deep/PATH/",
            "/admin/x",
            "/admin/X",
            "/admin/x/",
            "/admin/",
            "/admin",
            "/orgs/Globex/x",
            "/orgs/globex/x/",
            "/api/users/",
            "/api/Users",
            "/api/admin",
            "/files/AbC",
            "/files/abc",
            "/exact",
            "/write/x/",
        ] {
            assert!(!amb(&r, p, false), "{p}");
        }
    }

    #[test]
    fn case_insensitive_paths_still_check_the_trailing_slash() {
        let r = router();
        assert!(amb(&r, "/api/admin/", true));
        // The stage sees lower-cased paths only; an upper-case letter is not a variant then.
        assert!(!amb(&r, "/api/Admin", true));
        assert!(!amb(&r, "/api/admin", true));
    }

    #[test]
    fn an_unrouted_request_under_default_allow_is_ambiguous_when_a_spelling_is_routed() {
        let r = Router::build(vec![route("admin", "/admin/**", None)]).expect("valid");
        let m = Method::GET;
        assert!(ambiguous(&r, &m, "/Admin/x", None, false));
        assert!(!ambiguous(&r, &m, "/other/", None, false));
        assert!(!ambiguous(&r, &m, "/Other", None, false));
        // Per method: the POST-only route does not make a GET ambiguous.
        let r =
            Router::build(vec![route("w", "/admin/**", Some(vec![Method::POST]))]).expect("valid");
        assert!(!ambiguous(&r, &m, "/Admin/x", None, false));
        assert!(ambiguous(&r, &Method::POST, "/Admin/x", None, false));
    }

    #[test]
    fn escapes_keep_their_hex_digits() {
        // `%2F`-style escapes are not letters to lower-case: no variant, nothing ambiguous.
        let r = router();
        assert!(!amb(&r, "/files/%C3%A9", false));
    }
}
