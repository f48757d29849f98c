//! CORS (the Fetch standard's CORS protocol): fortress answers preflights itself and adds the
//! CORS response headers to the responses of allowed origins.
//!
//! A *preflight* is `OPTIONS` with exactly one `Origin` and one `Access-Control-Request-Method`
//! on a path where CORS is configured. Routes are per method, so the route stage matches a
//! preflight as the method it announces ([`preflight_method`]): the preflight is judged by the
//! route that would serve the actual request (its `cors` block, its 404/405). It runs before
//! authentication (browsers send no credentials on a preflight) and is never forwarded:
//! allowed → 204 with the CORS headers; an origin, method or header not allowed → 403
//! `cors_*_not_allowed` without CORS headers (the browser fails the actual request either way;
//! the 403 says why in logs and metrics). A path without CORS configured keeps its plain
//! `OPTIONS` handling (routed as `OPTIONS`, forwarded if a route accepts it).
//!
//! An actual request from an allowed origin gets `Access-Control-Allow-Origin` (the origin
//! echoed; `*` only for `origins: ["*"]` without credentials), `Vary: Origin`, and the
//! credentials and expose headers; any `Access-Control-*` header the app set is removed where
//! fortress manages CORS. A request from another origin is not refused (CORS protects
//! responses from being read, not the server from requests): it gets no CORS headers.

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, header};

use super::context::RequestContext;
use super::decide::Step;
use crate::error::{CorsError, Rejection};
use crate::policy::Policy;
use crate::policy::edge::{Cors, OriginRule};
use crate::policy::route::Lookup;

/// What the CORS stage found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsMatch {
    /// No `Origin`, no CORS configured, or an origin not allowed: no CORS headers.
    #[default]
    None,
    /// The route stage took the request for a preflight (not judged yet).
    PreflightPending,
    /// An allowed preflight: fortress answers it with 204.
    Preflight(HeaderValue),
    /// An actual request from this allowed origin.
    Allowed(HeaderValue),
}

/// The method a preflight announces, when the request is a preflight fortress answers:
/// `OPTIONS`, one `Origin`, one `Access-Control-Request-Method` naming a method, and CORS
/// configured for the policy or for the route that method reaches on `path`.
pub fn preflight_method(policy: &Policy, req: &Parts, path: &str) -> Option<Method> {
    if req.method != Method::OPTIONS {
        return None;
    }
    one(&req.headers, header::ORIGIN)?;
    let acrm = one(&req.headers, header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let method = Method::from_bytes(acrm.as_bytes()).ok()?;
    if policy.edge.cors.is_some() {
        return Some(method);
    }
    match policy.router.lookup(&method, path) {
        Lookup::Found { route, .. } if route.edge.cors.is_some() => Some(method),
        _ => None,
    }
}

fn one(headers: &HeaderMap, name: header::HeaderName) -> Option<&HeaderValue> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

/// The CORS stage.
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let preflight = ctx.cors == CorsMatch::PreflightPending;
    ctx.cors = CorsMatch::None;
    let Some(cors) = &super::limits::rules(ctx).cors else {
        if preflight {
            // Routed as the announced method for a CORS preflight that no block now covers:
            // never let it go on as that route's `OPTIONS`.
            return Err(Rejection::CorsRefused(CorsError::CorsOriginNotAllowed));
        }
        return Ok(Step::Skip("no cors configured"));
    };
    let mut origins = req.headers.get_all(header::ORIGIN).iter();
    let origin = match (origins.next(), origins.next()) {
        (None, _) => return Ok(Step::Skip("no Origin")),
        (Some(o), None) if cors.allows_origin(o.as_bytes()) => o.clone(),
        _ if preflight => return Err(Rejection::CorsRefused(CorsError::CorsOriginNotAllowed)),
        _ => return Ok(Step::Skip("origin not allowed: no CORS headers")),
    };
    if !preflight {
        ctx.cors = CorsMatch::Allowed(origin);
        return Ok(Step::Pass);
    }
    // `preflight_method` checked there is exactly one, naming a method.
    let method = req
        .headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(Rejection::CorsRefused(CorsError::CorsMethodNotAllowed))?;
    if !cors.allows_method(&method) {
        return Err(Rejection::CorsRefused(CorsError::CorsMethodNotAllowed));
    }
    if !headers_allowed(cors, &req.headers) {
        return Err(Rejection::CorsRefused(CorsError::CorsHeaderNotAllowed));
    }
    ctx.cors = CorsMatch::Preflight(origin);
    Ok(Step::Pass)
}

/// Every name in `Access-Control-Request-Headers` (all fields, comma-separated) is a header
/// name the policy allows. A malformed list is not allowed.
fn headers_allowed(cors: &Cors, headers: &HeaderMap) -> bool {
    for field in headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        let Ok(list) = field.to_str() else {
            return false;
        };
        for name in list.split(',') {
            let name = name.trim_matches([' ', '\t']);
            if name.is_empty() {
                continue;
            }
            let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) else {
                return false;
            };
            match &cors.headers {
                None => {}
                Some(allowed) if allowed.contains(&name) => {}
                Some(_) => return false,
            }
        }
    }
    true
}

/// Whether the request was an allowed preflight that fortress answers.
pub fn is_preflight(ctx: &RequestContext) -> bool {
    matches!(ctx.cors, CorsMatch::Preflight(_))
}

fn allow_origin(cors: &Cors, origin: &HeaderValue) -> HeaderValue {
    if !cors.credentials && cors.origins.contains(&OriginRule::Any) {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

const VARY_PREFLIGHT: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// The CORS headers of a response, set after the app's are removed. On a preflight: the
/// allow-* headers. On any response whose route has CORS: `Vary: Origin` (so a cache never
/// serves one origin's answer to another), and for an allowed origin the allow-origin,
/// credentials and expose headers.
pub fn decorate(ctx: &RequestContext, headers: &mut HeaderMap) {
    let Some(cors) = &super::limits::rules(ctx).cors else {
        return;
    };
    const APP_CORS: [header::HeaderName; 6] = [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header::ACCESS_CONTROL_MAX_AGE,
    ];
    for name in APP_CORS {
        headers.remove(name);
    }
    match &ctx.cors {
        CorsMatch::Preflight(origin) => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                allow_origin(cors, origin),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                cors.methods_value.clone(),
            );
            if let Some(v) = &cors.headers_value {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            if let Some(v) = &cors.max_age {
                headers.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
            }
            if cors.credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            headers.append(header::VARY, HeaderValue::from_static(VARY_PREFLIGHT));
        }
        CorsMatch::Allowed(origin) => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                allow_origin(cors, origin),
            );
            if cors.credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(v) = &cors.expose_headers {
                headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        CorsMatch::None | CorsMatch::PreflightPending => {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}
