//! Method + canonical path → route, through prebuilt radix-tree matchers (matchit).
//!
//! One matcher per common method (plus one for other methods) holds every route that accepts
//! that method, so a lookup is one tree walk whose cost depends on the path length, not on the
//! number of routes. Precedence between overlapping patterns is matchit's: a literal segment
//! beats a `{param}` segment, which beats a trailing `**`. Patterns that would be equally
//! specific for the same method (e.g. `/a/{x}` and `/a/{y}`, or `/a/{x}` and `/a/**`) are
//! refused when the config is compiled.
//!
//! Methods: only the methods a route can list ([`Methods::LIST`]) are routed; any other method
//! is [`Lookup::UnknownMethod`], and a method token with a lower-case letter is
//! [`Lookup::NotUppercase`] (frameworks upper-case methods, so `get` would be judged as an
//! unknown method and served as `GET`). `HEAD` is routed like `GET` (RFC 9110 §9.3.2): its
//! tree holds the routes that accept `HEAD` *and* those that accept `GET`, so the most
//! specific pattern for the path wins and `HEAD` never falls through to a broader route than
//! the `GET` it mirrors; on the same pattern, a route that accepts `HEAD` itself wins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::error::Methods;

/// The most path parameters a route's checks may read (`Route::params_used`).
pub const MAX_PARAMS_USED: usize = 4;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Unique route name (metrics label, logs, audit).
    pub name: Arc<str>,
    /// The pattern as written in the config.
    pub pattern: String,
    /// Accepted methods; `None` accepts all.
    pub methods: Option<Vec<Method>>,
    /// Reachable without authentication.
    pub public: bool,
    /// Upstream response timeout.
    pub upstream_timeout: Duration,
    /// Authorization, tenant and mode settings.
    pub access: Access,
    /// NDJSON stream rules for the response, if the route declares `stream:`.
    pub stream: Option<Arc<super::stream::StreamRules>>,
    /// WebSocket handshakes (`Upgrade: websocket`) are proxied and the connection spliced.
    pub websocket: bool,
    /// Path parameters a check reads (e.g. the tenant's `path_param`): only these are kept
    /// in the request context, so most requests copy none.
    pub params_used: Vec<String>,
    /// Position in the route table (index of per-route handles kept outside the policy).
    pub index: usize,
    /// Request limits, security headers, CORS, error scrubbing.
    pub edge: super::edge::EdgeRules,
    /// The route's rate limits and budget cost.
    pub limits: super::limits::RouteLimits,
}

/// What a route requires beyond a valid token.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Permissions required, all of them.
    pub require_all: Vec<String>,
    /// Permissions of which one is required (empty: none).
    pub require_any: Vec<String>,
    /// Tenant isolation rule.
    pub tenant: Option<TenantRule>,
    /// `Some(true)` for dry-run, `Some(false)` for enforce, `None` for the global mode.
    pub dry_run: Option<bool>,
    /// `privileged: true`: every request is audited (`audit.include: [privileged]`).
    pub privileged: bool,
    /// The route's concurrency class (index into `Policy::classes`), explicit or `default`.
    pub class: Option<usize>,
    /// The route's own IP allowlist (checked as well as the policy-wide one).
    pub allow_ips: Option<Arc<super::ip_allow::IpAllowList>>,
    /// The app's 401 answers count as failed authentications (`upstream_401_counts`).
    pub upstream_401_counts: bool,
    /// The toggle that must be on (`requires_toggle`; index into `Policy::toggles`).
    pub requires_toggle: Option<usize>,
}

/// Where a request names its tenant, and who may cross tenants.
#[derive(Debug, Clone)]
pub struct TenantRule {
    /// The source.
    pub source: TenantSource,
    /// Holders of this permission may access another tenant (recorded as privileged).
    pub cross_tenant_permission: Option<String>,
}

/// Where the tenant comes from.
#[derive(Debug, Clone)]
pub enum TenantSource {
    /// A `{param}` of the path pattern.
    PathParam(String),
    /// A request header.
    Header(http::HeaderName),
    /// A query parameter.
    Query(String),
}

/// The result of a lookup.
pub enum Lookup<'r, 'p> {
    /// A route accepts this method and path.
    Found {
        /// The route.
        route: &'r Route,
        /// Values of the pattern's `{param}` segments.
        params: matchit::Params<'r, 'p>,
    },
    /// Some route matches the path, but none accepts the method; the methods that would be.
    MethodNotAllowed(Methods),
    /// No route matches the path.
    NotFound,
    /// A method no route can list (not one of [`Methods::LIST`]); the methods the path
    /// accepts (empty when no route matches it).
    UnknownMethod(Methods),
    /// The method token has a lower-case letter.
    NotUppercase,
}

/// Prebuilt matchers over a route table.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    trees: Vec<matchit::Router<usize>>,
}

impl Router {
    /// Builds the matchers. Returns, for each refused route, its index and the reason.
    pub fn build(mut routes: Vec<Route>) -> Result<Self, Vec<(usize, String)>> {
        for (i, r) in routes.iter_mut().enumerate() {
            r.index = i;
        }
        let mut trees: Vec<matchit::Router<usize>> =
            (0..TREES).map(|_| matchit::Router::new()).collect();
        // Which route owns each inserted matchit pattern, per tree (for error messages and
        // so that an exact route beats the bare prefix that a `/prefix/**` route also adds).
        let mut owners: Vec<HashMap<String, usize>> = vec![HashMap::new(); TREES];
        let mut errors = Vec::new();
        // Exact forms first, so `/a` written as a route wins over the `/a` that `/a/**` implies.
        // Within each pass, the routes of a tree come first, then (for the HEAD tree only) the
        // GET routes that HEAD follows: a route that accepts HEAD itself keeps its pattern,
        // and a GET route's equally specific pattern is then left out of the HEAD tree (the
        // GET tree reports real overlaps).
        for pass in [Pass::Primary, Pass::ImpliedPrefix] {
            for (tier, (idx, route)) in [Tier::Own, Tier::HeadFollowsGet]
                .into_iter()
                .flat_map(|t| routes.iter().enumerate().map(move |r| (t, r)))
            {
                let patterns = match to_matchit(&route.pattern) {
                    Ok(p) => p,
                    Err(e) => {
                        if pass == Pass::Primary && tier == Tier::Own {
                            errors.push((idx, e));
                        }
                        continue;
                    }
                };
                let trees_for = match tier {
                    Tier::Own => tree_indexes(route.methods.as_deref()),
                    Tier::HeadFollowsGet => head_follows_get(route.methods.as_deref()),
                };
                for tree in trees_for {
                    // INVARIANT: `to_matchit` returns at least the route's own pattern.
                    let list = match pass {
                        Pass::Primary => &patterns[..1],
                        Pass::ImpliedPrefix => &patterns[1..],
                    };
                    for pattern in list {
                        if let Some(&owner) = owners[tree].get(pattern) {
                            if pass == Pass::Primary && owner != idx && tier == Tier::Own {
                                errors.push((idx, overlap_message(&routes[owner], tree)));
                            }
                            continue;
                        }
                        match trees[tree].insert(pattern.clone(), idx) {
                            Ok(()) => {
                                owners[tree].insert(pattern.clone(), idx);
                            }
                            Err(_) if tier == Tier::HeadFollowsGet => {}
                            Err(e) => {
                                let with = conflicting_owner(&e, &owners[tree]);
                                let msg = match with {
                                    Some(o) => overlap_message(&routes[o], tree),
                                    None => format!("pattern cannot be used: {e}"),
                                };
                                if !errors.iter().any(|(i, _)| *i == idx) {
                                    errors.push((idx, msg));
                                }
                            }
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(Self { routes, trees })
        } else {
            Err(errors)
        }
    }

    /// Finds the route for a method and a canonical path.
    pub fn lookup<'r, 'p>(&'r self, method: &Method, path: &'p str) -> Lookup<'r, 'p> {
        if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
            return Lookup::NotUppercase;
        }
        let tree = tree_index(method);
        if tree >= TREE_METHODS.len() {
            return Lookup::UnknownMethod(self.allowed(path));
        }
        if let Ok(m) = self.trees[tree].at(path) {
            // INVARIANT: values in the trees are indexes into `self.routes`.
            if let Some(route) = self.routes.get(*m.value) {
                return Lookup::Found {
                    route,
                    params: m.params,
                };
            }
        }
        let allowed = self.allowed(path);
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::MethodNotAllowed(allowed)
        }
    }

    /// The methods some route accepts for this path.
    fn allowed(&self, path: &str) -> Methods {
        let mut allowed = Methods::default();
        for (i, t) in self.trees.iter().enumerate() {
            if t.at(path).is_ok() {
                allowed = allowed.with_index(i);
            }
        }
        allowed
    }

    /// All routes, in config order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// Which routes a build step inserts: a tree's own routes, or the GET routes HEAD follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Own,
    HeadFollowsGet,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Primary,
    ImpliedPrefix,
}

/// Converts a fortress pattern to matchit patterns: the first is the route's own pattern; a
/// trailing `**` adds the bare prefix (`/a`) and the prefix with a slash (`/a/`).
fn to_matchit(pattern: &str) -> Result<Vec<String>, String> {
    if !pattern.starts_with('/') {
        return Err("path pattern must start with `/`".into());
    }
    let mut out = String::with_capacity(pattern.len());
    // INVARIANT: starts with `/` (checked above), so `[1..]` is in bounds.
    let segments: Vec<&str> = pattern[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut names = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        if *seg == "**" {
            if i != last {
                return Err("`**` may only be the last segment of a path pattern".into());
            }
            let prefix = out.clone();
            let bare = if prefix.is_empty() {
                "/".to_string()
            } else {
                prefix.clone()
            };
            let mut list = vec![format!("{prefix}/{{*rest}}"), bare];
            if !prefix.is_empty() {
                list.push(format!("{prefix}/"));
            }
            return Ok(list);
        }
        out.push('/');
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && name != "rest";
            if !valid {
                return Err(format!(
                    "`{{{name}}}` is not a valid parameter: use letters, digits and `_` \
                     (and not the reserved name `rest`)"
                ));
            }
            if names.contains(&name) {
                return Err(format!("parameter `{{{name}}}` appears twice"));
            }
            names.push(name);
            out.push_str(seg);
        } else if seg.contains(['{', '}', '*']) {
            return Err(format!(
                "segment `{seg}`: `{{param}}` must be a whole segment and `**` the last one"
            ));
        } else {
            if seg.is_empty() && i != last {
                return Err("empty segment (`//`) in path pattern".into());
            }
            out.push_str(seg);
        }
    }
    Ok(vec![out])
}

fn conflicting_owner(e: &matchit::InsertError, owners: &HashMap<String, usize>) -> Option<usize> {
    match e {
        matchit::InsertError::Conflict { with } => owners.get(with).copied(),
        _ => None,
    }
}

fn overlap_message(other: &Route, tree: usize) -> String {
    format!(
        "overlaps route `{}` ({}) with equal precedence for {}; make one pattern more specific \
         or give them different methods",
        other.name,
        other.pattern,
        TREE_METHODS
            .get(tree)
            .map(|m| m.as_str())
            .unwrap_or("other methods"),
    )
}

fn tree_indexes(methods: Option<&[Method]>) -> Vec<usize> {
    match methods {
        None => (0..TREES).collect(),
        Some(list) => {
            // Config compile refuses methods outside the list; should one get here, it has no
            // tree (such a method is never routed) rather than an index out of range.
            let mut v: Vec<usize> = list.iter().map(tree_index).filter(|&i| i < TREES).collect();
            v.sort_unstable();
            v.dedup();
            v
        }
    }
}

/// The HEAD tree, for a route that lists GET but not HEAD.
fn head_follows_get(methods: Option<&[Method]>) -> Vec<usize> {
    match methods {
        Some(list) if list.contains(&Method::GET) && !list.contains(&Method::HEAD) => {
            vec![tree_index(&Method::HEAD)]
        }
        _ => Vec::new(),
    }
}

fn tree_index(method: &Method) -> usize {
    TREE_METHODS
        .iter()
        .position(|m| m == method)
        .unwrap_or(TREE_METHODS.len())
}

/// One tree per routable method, in the order of [`Methods::LIST`] (so a tree index is a bit
/// of the `Allow` set). Other methods are never routed (`Lookup::UnknownMethod`), so they have
/// no tree.
const TREE_METHODS: [Method; 8] = Methods::LIST;
const TREES: usize = TREE_METHODS.len();

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, pattern: &str, methods: Option<Vec<Method>>) -> Route {
        Route {
            edge: Default::default(),
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
            limits: Default::default(),
        }
    }

    fn name(r: &Router, m: Method, p: &str) -> String {
        match r.lookup(&m, p) {
            Lookup::Found { route, .. } => route.name.to_string(),
            Lookup::MethodNotAllowed(_) => "405".into(),
            Lookup::NotFound => "404".into(),
            Lookup::UnknownMethod(_) => "unknown".into(),
            Lookup::NotUppercase => "lowercase".into(),
        }
    }

    fn m(s: &str) -> Method {
        Method::from_bytes(s.as_bytes()).expect("method")
    }

    #[test]
    fn head_follows_the_get_route_of_the_same_path() {
        let r = Router::build(vec![
            route("api", "/api/**", None),
            route("admin", "/api/admin", Some(vec![Method::GET])),
            route(
                "admin-tree",
                "/api/admin/**",
                Some(vec![Method::GET, Method::POST]),
            ),
            route("users", "/api/users/{id}", Some(vec![Method::GET])),
            route("head-ok", "/pub/**", Some(vec![Method::HEAD])),
            route("pub-get", "/pub/x", Some(vec![Method::GET])),
            route("pub-param", "/pub2/{x}", Some(vec![Method::GET])),
            route("pub-head", "/pub2/**", Some(vec![Method::HEAD])),
            route("both", "/both", Some(vec![Method::GET])),
            route("both-head", "/both", Some(vec![Method::HEAD])),
            route("eq-get", "/eq/{x}", Some(vec![Method::GET])),
            route("eq-head", "/eq/{y}", Some(vec![Method::HEAD])),
            route("only-get", "/only", Some(vec![Method::GET])),
        ])
        .expect("valid");
        // Not the broader any-method route: the GET route's checks.
        assert_eq!(name(&r, Method::HEAD, "/api/admin"), "admin");
        assert_eq!(name(&r, Method::HEAD, "/api/admin/x/y"), "admin-tree");
        assert_eq!(name(&r, Method::HEAD, "/api/admin/"), "admin-tree");
        assert_eq!(name(&r, Method::HEAD, "/api/users/7"), "users");
        assert_eq!(name(&r, Method::HEAD, "/api/other"), "api");
        // A more specific GET route beats a broader route that lists HEAD.
        assert_eq!(name(&r, Method::HEAD, "/pub/x"), "pub-get");
        assert_eq!(name(&r, Method::HEAD, "/pub/x/y"), "head-ok");
        assert_eq!(name(&r, Method::HEAD, "/pub/y"), "head-ok");
        // `{x}` and `**` are equally specific: the route that lists HEAD itself.
        assert_eq!(name(&r, Method::HEAD, "/pub2/x"), "pub-head");
        assert_eq!(name(&r, Method::GET, "/pub2/x"), "pub-param");
        // Same pattern: the route that lists HEAD itself.
        assert_eq!(name(&r, Method::HEAD, "/both"), "both-head");
        assert_eq!(name(&r, Method::GET, "/both"), "both");
        assert_eq!(name(&r, Method::HEAD, "/eq/1"), "eq-head");
        assert_eq!(name(&r, Method::GET, "/eq/1"), "eq-get");
        assert_eq!(name(&r, Method::HEAD, "/only"), "only-get");
        // GET does not follow HEAD, and POST does not follow anything.
        assert_eq!(name(&r, Method::POST, "/only"), "405");
        match r.lookup(&Method::POST, "/only") {
            Lookup::MethodNotAllowed(a) => assert_eq!(a.to_header_value(), "GET, HEAD"),
            _ => panic!("405 expected"),
        }
    }

    #[test]
    fn unknown_and_lowercase_methods_are_never_routed() {
        let r = Router::build(vec![
            route("api", "/api/**", None),
            route("admin", "/api/admin", Some(vec![Method::GET])),
        ])
        .expect("valid");
        for bad in [
            "get", "Get", "gET", "head", "post", "dElEtE", "propfind", "m-search",
        ] {
            assert_eq!(name(&r, m(bad), "/api/admin"), "lowercase", "{bad}");
        }
        for unknown in [
            "PROPFIND", "FOO", "GETS", "M-SEARCH", "CONNECT", "G.ET", "ACL",
        ] {
            assert_eq!(name(&r, m(unknown), "/api/admin"), "unknown", "{unknown}");
            match r.lookup(&m(unknown), "/nowhere") {
                Lookup::UnknownMethod(a) => assert!(a.is_empty()),
                _ => panic!("unknown expected"),
            }
        }
        match r.lookup(&m("PROPFIND"), "/api/admin") {
            Lookup::UnknownMethod(a) => assert_eq!(
                a.to_header_value(),
                "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE"
            ),
            _ => panic!("unknown expected"),
        }
    }

    #[test]
    fn most_specific_pattern_wins() {
        let r = Router::build(vec![
            route("all-api", "/api/**", None),
            route(
                "reports",
                "/api/orgs/{org_id}/reports/**",
                Some(vec![Method::GET]),
            ),
            route("exact", "/api/orgs/acme/reports/summary", None),
            route("health", "/health", None),
            route("api-root", "/api", None),
        ])
        .expect("valid");
        assert_eq!(name(&r, Method::GET, "/api/orgs/7/reports/x/y"), "reports");
        assert_eq!(name(&r, Method::GET, "/api/orgs/7/reports"), "reports");
        assert_eq!(name(&r, Method::POST, "/api/orgs/7/reports/x"), "all-api");
        assert_eq!(
            name(&r, Method::GET, "/api/orgs/acme/reports/summary"),
            "exact"
        );
        assert_eq!(name(&r, Method::GET, "/api"), "api-root");
        assert_eq!(name(&r, Method::GET, "/api/"), "all-api");
        assert_eq!(name(&r, Method::GET, "/health"), "health");
        assert_eq!(name(&r, Method::GET, "/health/"), "404");
        assert_eq!(name(&r, Method::GET, "/other"), "404");
    }

    #[test]
    fn params_are_captured() {
        let r = Router::build(vec![route("r", "/orgs/{org_id}/x", None)]).expect("valid");
        match r.lookup(&Method::GET, "/orgs/acme/x") {
            Lookup::Found { params, .. } => assert_eq!(params.get("org_id"), Some("acme")),
            _ => panic!("expected a match"),
        }
    }

    #[test]
    fn method_not_allowed_is_distinguished() {
        let r = Router::build(vec![
            route("r", "/x", Some(vec![Method::GET])),
            route("w", "/x", Some(vec![Method::PUT, Method::POST])),
        ])
        .expect("valid");
        assert_eq!(name(&r, Method::DELETE, "/x"), "405");
        match r.lookup(&Method::DELETE, "/x") {
            // HEAD follows GET, so the path accepts it too.
            Lookup::MethodNotAllowed(m) => {
                assert_eq!(m.to_header_value(), "GET, HEAD, POST, PUT")
            }
            _ => panic!("expected 405"),
        }
        assert_eq!(
            name(&r, Method::from_bytes(b"PURGE").expect("m"), "/x"),
            "unknown"
        );
    }

    #[test]
    fn equal_precedence_is_refused() {
        let errs = Router::build(vec![
            route("a", "/x/{a}", None),
            route("b", "/x/{b}", Some(vec![Method::GET])),
        ])
        .expect_err("ambiguous");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, 1);
        assert!(errs[0].1.contains("overlaps route `a`"), "{}", errs[0].1);

        let errs = Router::build(vec![route("a", "/x", None), route("b", "/x", None)])
            .expect_err("duplicate");
        assert!(errs[0].1.contains("overlaps route `a`"));
    }

    #[test]
    fn same_pattern_different_methods_is_fine() {
        let r = Router::build(vec![
            route("read", "/x", Some(vec![Method::GET])),
            route("write", "/x", Some(vec![Method::POST])),
        ])
        .expect("valid");
        assert_eq!(name(&r, Method::GET, "/x"), "read");
        assert_eq!(name(&r, Method::POST, "/x"), "write");
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in [
            "x",
            "/a/**/b",
            "/a/{}",
            "/a/{b-c}",
            "/a/x{y}",
            "/a//b",
            "/a/{x}/{x}",
        ] {
            assert!(
                Router::build(vec![route("r", p, None)]).is_err(),
                "{p} should be refused"
            );
            // Once, even for a GET route that the HEAD tree also holds.
            match Router::build(vec![route("r", p, Some(vec![Method::GET]))]) {
                Err(errors) => assert_eq!(errors.len(), 1, "{p}: {errors:?}"),
                Ok(_) => panic!("{p} should be refused"),
            }
        }
    }

    #[test]
    fn lookup_cost_does_not_depend_on_route_count() {
        let routes: Vec<Route> = (0..10_000)
            .map(|i| route(&format!("r{i}"), &format!("/svc{i}/items/{{id}}"), None))
            .collect();
        let r = Router::build(routes).expect("valid");
        assert_eq!(name(&r, Method::GET, "/svc9999/items/5"), "r9999");
    }
}
