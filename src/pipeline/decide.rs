//! The decision: every check a request goes through before it may be forwarded, in a fixed,
//! visible order. The proxy and `fortress explain` run this same function; explain passes an
//! [`Observer`] that records each stage, the proxy passes [`RouteObserver`], which keeps only
//! the matched route's metric handles.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, Method, Uri, Version};
use serde_json::Value;

use super::normalize::normalize_path;
use super::route::{Lookup, Route};
use super::tenant::TenantPass;
use super::{authn, authz, tenant, transport};
use crate::auth::revocation::Revocations;
use crate::auth::{AuthError, SharedPrincipal};
use crate::config::{Config, DefaultAction};
use crate::error::Rejection;
use crate::metrics::Metrics;

/// The parts of a request the decision reads.
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Request target as received.
    pub uri: &'a Uri,
    /// HTTP version.
    pub version: Version,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// TCP peer.
    pub peer: SocketAddr,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
}

/// What the decision needs besides the request and the config.
pub struct DecideEnv<'a> {
    /// Revoked token ids.
    pub revocations: &'a dyn Revocations,
    /// Where refusals are counted (explain counts nothing).
    pub metrics: Option<&'a Metrics>,
    /// Now, in seconds since the epoch.
    pub now: u64,
    /// Explain only: claims to use instead of verifying a token.
    pub claims_override: Option<&'a Value>,
}

/// A request that may be forwarded, and what was decided about it.
pub struct Decision<'c, 'u> {
    /// The canonical path: matched, and forwarded.
    pub canonical: Cow<'u, str>,
    /// The matched route (`None`: unmatched, forwarded by `default: allow`).
    pub route: Option<&'c Route>,
    /// The verified principal, if any.
    pub principal: Option<SharedPrincipal>,
    /// Upstream response timeout.
    pub timeout: Duration,
    /// Whether the route runs in dry-run mode.
    pub dry_run: bool,
    /// In dry-run mode: the first check that would have denied the request.
    pub dry_run_denial: Option<Rejection>,
    /// Set when the request was let through by a privilege (e.g. crossing tenants).
    pub privileged: Option<&'static str>,
}

/// Receives each stage's outcome. Details are built only by observers that use them.
pub trait Observer {
    /// The request matched `route` (called before the checks that may refuse it).
    fn routed(&mut self, _route: &Route) {}
    /// A stage passed.
    fn pass(&mut self, _stage: &'static str, _detail: impl FnOnce() -> String) {}
    /// A stage did not apply.
    fn skip(&mut self, _stage: &'static str, _why: &'static str) {}
    /// A stage refused the request.
    fn fail(&mut self, _stage: &'static str, _r: Rejection, _detail: impl FnOnce() -> String) {}
    /// A stage would have refused the request, but the route is in dry-run mode.
    fn dry_run(&mut self, _stage: &'static str, _r: Rejection, _detail: impl FnOnce() -> String) {}
}

/// The observer of the proxy path: keeps only the matched route's metric handles (so refused
/// requests are counted under their route too).
pub struct RouteObserver<'m> {
    metrics: &'m Metrics,
    /// The matched route's metrics (and name).
    pub route: Option<std::sync::Arc<crate::metrics::RouteMetrics>>,
}

impl<'m> RouteObserver<'m> {
    /// An observer resolving route metrics from `metrics`.
    pub fn new(metrics: &'m Metrics) -> Self {
        Self {
            metrics,
            route: None,
        }
    }
}

impl Observer for RouteObserver<'_> {
    fn routed(&mut self, route: &Route) {
        let m = route
            .metrics
            .get_or_init(|| self.metrics.route(route.name.clone()));
        self.route = Some(m.clone());
    }
}

/// Runs every check, in order. `Err` means: refuse with this rejection.
pub async fn decide<'c, 'u, O: Observer>(
    config: &'c Config,
    req: &RequestView<'_>,
    uri: &'u Uri,
    env: &DecideEnv<'_>,
    obs: &mut O,
) -> Result<Decision<'c, 'u>, Rejection> {
    // 1. Transport first: a request that must not travel over this connection (plain HTTP
    // where HTTPS is required, credentials over plain HTTP, `Connection` naming protected
    // headers) is refused whatever it asks for, before its path or token is looked at.
    match transport::check(
        req.tls,
        req.trusted,
        req.headers,
        &config.server,
        config.auth.as_deref(),
    ) {
        Ok(https) => obs.pass("transport", || {
            format!(
                "{} from {}{}",
                if https { "https" } else { "plain http" },
                req.peer.ip(),
                if req.trusted { " (trusted proxy)" } else { "" }
            )
        }),
        Err(e) => {
            if let Some(m) = env.metrics {
                m.transport_refusal(e);
            }
            let r = Rejection::RejectTransport(e);
            obs.fail("transport", r, || e.code().to_string());
            return Err(r);
        }
    }

    // 2. Target form and canonical path. Absolute-form (`GET http://x/ HTTP/1.1`),
    // authority-form (CONNECT) and `*` would bypass path matching. HTTP/2 always carries
    // scheme and authority as pseudo-headers, so only HTTP/1.x is checked for them. The
    // canonical path is used for matching *and* forwarding: the app sees what was judged.
    let absolute =
        req.version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some());
    if absolute || req.method == Method::CONNECT || uri.path() == "*" {
        let r = Rejection::RejectTargetForm;
        obs.fail("normalize", r, || {
            format!("{uri} is not an origin-form target")
        });
        return Err(r);
    }
    let canonical = match normalize_path(uri.path()) {
        Ok(c) => c,
        Err(e) => {
            let r = Rejection::RejectPath(e);
            obs.fail("normalize", r, || format!("{}: {e}", uri.path()));
            return Err(r);
        }
    };
    obs.pass("normalize", || canonical.to_string());

    // 3. Route, or the default.
    let lookup = config.router.lookup(req.method, &canonical);
    let (route, params) = match lookup {
        Lookup::Found { route, params } => {
            obs.routed(route);
            obs.pass("route", || format!("{} ({})", route.name, route.pattern));
            (Some(route), Some(params))
        }
        Lookup::MethodNotAllowed if config.default == DefaultAction::Deny => {
            let r = Rejection::DenyMethod;
            obs.fail("route", r, || {
                format!("no route accepts {} here", req.method)
            });
            return Err(r);
        }
        Lookup::NotFound if config.default == DefaultAction::Deny => {
            let r = Rejection::DenyUnmatched;
            obs.fail("route", r, || "no route matches; default: deny".into());
            return Err(r);
        }
        Lookup::MethodNotAllowed | Lookup::NotFound => {
            obs.pass("route", || "no route matches; default: allow".into());
            (None, None)
        }
    };
    let dry_run = route
        .and_then(|r| r.access.dry_run)
        .unwrap_or(config.dry_run);
    let mut denial: Option<Rejection> = None;
    // In dry-run mode a refusal is recorded (the first one wins) and the request goes on.
    let mut refuse = |stage: &'static str, r: Rejection, detail: String, obs: &mut O| {
        if dry_run {
            obs.dry_run(stage, r, || detail);
            denial.get_or_insert(r);
            Ok(())
        } else {
            obs.fail(stage, r, || detail);
            Err(r)
        }
    };

    // 4. Authentication, after routing: only the route knows whether it is public.
    // Unmatched requests let through by `default: allow` are authenticated when
    // authentication is configured.
    let public = match route {
        Some(r) => r.public,
        None => config.auth.is_none(),
    };
    let principal = if public {
        obs.skip("authn", "public route");
        None
    } else {
        let result = match (config.auth.as_deref(), env.claims_override) {
            // Compile refuses non-public routes without authentication; fail closed anyway.
            (None, _) => Err(AuthError::KeysUnavailable),
            (Some(a), Some(claims)) => a.authenticator.principal_from_claims(claims),
            (Some(a), None) => authn::authenticate(req.headers, a, env.revocations, env.now).await,
        };
        match result {
            Ok(p) => {
                obs.pass("authn", || {
                    format!(
                        "sub={} roles=[{}] tenant={}{}",
                        p.subject,
                        p.roles.join(","),
                        p.tenant.as_deref().unwrap_or("-"),
                        if env.claims_override.is_some() {
                            " (claims given; signature and time checks skipped)"
                        } else {
                            ""
                        }
                    )
                });
                Some(p)
            }
            Err(e) => {
                if let Some(m) = env.metrics {
                    m.auth_failure(e);
                }
                refuse("authn", Rejection::Unauthenticated(e), e.code().into(), obs)?;
                None
            }
        }
    };

    // 5. Authorization (RBAC), then 6. tenant isolation: both need a principal.
    let access = route.map(|r| &r.access);
    match (access, &principal) {
        (Some(a), _) if a.require_all.is_empty() && a.require_any.is_empty() => {
            obs.skip("authz", "no permission required")
        }
        (None, _) => obs.skip("authz", "no route"),
        (Some(a), Some(p)) => {
            if authz::allows(a, p, &config.rbac) {
                obs.pass("authz", || requirement(a))
            } else {
                refuse("authz", Rejection::DenyPermission, requirement(a), obs)?
            }
        }
        (Some(a), None) => refuse("authz", Rejection::DenyPermission, requirement(a), obs)?,
    }
    let mut privileged = None;
    match (access.and_then(|a| a.tenant.as_ref()), &principal, &params) {
        (None, _, _) => obs.skip("tenant", "no tenant rule"),
        (Some(rule), Some(p), Some(params)) => {
            let query = uri.query();
            match tenant::check(rule, p, &config.rbac, params, req.headers, query) {
                Some(TenantPass::Matched) => obs.pass("tenant", || {
                    format!("{} matches the token", p.tenant.as_deref().unwrap_or("-"))
                }),
                Some(TenantPass::Crossed) => {
                    privileged = Some("cross_tenant");
                    obs.pass("tenant", || {
                        let asked = tenant::requested(rule, params, req.headers, query);
                        format!(
                            "token tenant {} crosses to {} with {} (privileged)",
                            p.tenant.as_deref().unwrap_or("-"),
                            asked.as_deref().unwrap_or("-"),
                            rule.cross_tenant_permission.as_deref().unwrap_or("-")
                        )
                    })
                }
                None => {
                    let asked = tenant::requested(rule, params, req.headers, query);
                    let detail = format!(
                        "token tenant {} vs requested {}",
                        p.tenant.as_deref().unwrap_or("<none>"),
                        asked.as_deref().unwrap_or("<none>")
                    );
                    refuse("tenant", Rejection::DenyTenant, detail, obs)?
                }
            }
        }
        (Some(_), _, _) => refuse("tenant", Rejection::DenyTenant, "no principal".into(), obs)?,
    }

    let timeout = route.map_or(config.server.timeouts.upstream_response, |r| {
        r.upstream_timeout
    });
    Ok(Decision {
        canonical,
        route,
        principal,
        timeout,
        dry_run,
        dry_run_denial: denial,
        privileged,
    })
}

fn requirement(a: &super::route::Access) -> String {
    let mut parts = Vec::new();
    if !a.require_all.is_empty() {
        parts.push(format!("all of [{}]", a.require_all.join(", ")));
    }
    if !a.require_any.is_empty() {
        parts.push(format!("any of [{}]", a.require_any.join(", ")));
    }
    format!("needs {}", parts.join(" and "))
}
