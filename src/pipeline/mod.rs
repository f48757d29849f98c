//! The request path, in order. Each step can end the request with a [`Rejection`]; only
//! `error.rs` turns that into a response.
//!
//! 1. snapshot the config and assign the request id;
//! 2. check the request-target form (origin-form only);
//! 3. canonicalize the path (the same string is matched *and* forwarded);
//! 4. match the route (or apply `default`);
//! 5. forward: strip hop-by-hop headers, set forwarding headers, stream the body;
//! 6. clean the response headers and attach the completion record.

pub mod authn;
pub mod complete;
pub mod ids;
pub mod normalize;
pub mod route;
pub mod transport;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Method, Request, Response, Version, header};
use hyper::body::Incoming;

use crate::auth::{AuthError, Principal};
use crate::config::auth::AuthSettings;
use crate::config::{Config, DefaultAction};
use crate::error::Rejection;
use crate::proxy::body::ProxyBody;
use crate::proxy::headers::{ClientSide, set_forwarding, strip_hop_by_hop};
use crate::proxy::identity::{IdentityHeaders, inject};
use crate::server::conn::ConnInfo;
use crate::state::AppState;
use complete::Completion;
use normalize::normalize_path;
use route::Lookup;

/// Handles one client request end to end. Never fails: every error becomes a response.
pub async fn handle(
    state: AppState,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // One snapshot per request: a reload mid-request does not change what this request sees.
    let config = state.config.snapshot();
    let trusted = config.server.is_trusted(conn.peer.ip());
    let request_id = ids::request_id(req.headers(), trusted, &state.ids);
    let mut done = Completion::start(
        state.clone(),
        conn.clone(),
        req.method().clone(),
        request_id.clone(),
    );
    let result =
        decide_and_forward(&state, &config, &conn, trusted, &request_id, req, &mut done).await;
    let mut resp = match result {
        Ok(resp) => {
            done.set_outcome(resp.status().as_u16(), "allow", "");
            resp
        }
        Err(rejection) => {
            let (status, _, reason) = rejection.status();
            let decision = if status.is_server_error() {
                "error"
            } else {
                "deny"
            };
            done.set_outcome(status.as_u16(), decision, reason);
            rejection.into_response(&request_id)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(ids::X_REQUEST_ID, v);
    }
    Ok(resp.map(|b| b.with_completion(done)))
}

async fn decide_and_forward(
    state: &AppState,
    config: &Config,
    conn: &ConnInfo,
    trusted: bool,
    request_id: &str,
    req: Request<Incoming>,
    done: &mut Completion,
) -> Result<Response<ProxyBody>, Rejection> {
    // Transport first: a request that must not travel over this connection (plain HTTP where
    // HTTPS is required, credentials over plain HTTP, `Connection` naming protected headers)
    // is refused whatever it asks for, before its path or token is looked at.
    if let Err(e) = transport::check(
        conn,
        trusted,
        req.headers(),
        &config.server,
        config.auth.as_deref(),
    ) {
        state.metrics.transport_refusal(e);
        return Err(Rejection::RejectTransport(e));
    }
    // Target form: absolute-form (`GET http://x/ HTTP/1.1`), authority-form (CONNECT) and `*`
    // would otherwise bypass path matching. HTTP/2 always carries scheme and authority as
    // pseudo-headers, so only HTTP/1.x is checked for them.
    // A cheap (reference-counted) clone, so the canonical path can borrow from it.
    let uri = req.uri().clone();
    let absolute =
        req.version() < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some());
    if absolute || req.method() == Method::CONNECT || uri.path() == "*" {
        return Err(Rejection::RejectTargetForm);
    }
    // The canonical path is computed once and used for matching *and* forwarding, so the
    // upstream sees exactly the path the policy judged.
    let canonical = normalize_path(uri.path()).map_err(Rejection::RejectPath)?;
    let (timeout, public) = match config.router.lookup(req.method(), &canonical) {
        Lookup::Found { route, .. } => {
            done.set_route(route.name.clone());
            (route.upstream_timeout, route.public)
        }
        Lookup::MethodNotAllowed if config.default == DefaultAction::Deny => {
            return Err(Rejection::DenyMethod);
        }
        Lookup::NotFound if config.default == DefaultAction::Deny => {
            return Err(Rejection::DenyUnmatched);
        }
        // `default: allow` forwards unmatched requests, authenticated when authentication is
        // configured (they are not `public`).
        Lookup::MethodNotAllowed | Lookup::NotFound => (
            config.server.timeouts.upstream_response,
            config.auth.is_none(),
        ),
    };
    // Authentication after routing: only the route knows whether it is public. A route that
    // is not public is never forwarded without a verified principal.
    let principal = if public {
        None
    } else {
        let Some(auth) = config.auth.as_deref() else {
            // Compile refuses non-public routes without authentication; fail closed anyway.
            return Err(Rejection::Unauthenticated(AuthError::KeysUnavailable));
        };
        let now = jsonwebtoken::get_current_timestamp();
        match authn::authenticate(req.headers(), auth, &*state.revocations, now).await {
            Ok(p) => Some(p),
            Err(e) => {
                state.metrics.auth_failure(e);
                return Err(Rejection::Unauthenticated(e));
            }
        }
    };
    let identity = Identity {
        principal: principal.as_deref(),
        auth: config.auth.as_deref(),
    };
    let upstream_req = prepare(
        req, config, conn, trusted, request_id, &canonical, &identity,
    )?;
    let resp = state
        .forwarder
        .send(upstream_req, timeout, &state.metrics, request_id)
        .await?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, ProxyBody::upstream(body)))
}

/// Rewrites a client request for the upstream: canonical path, absolute URI for the pool,
/// HTTP/1.1, hop-by-hop headers removed, forwarding headers set.
fn prepare(
    req: Request<Incoming>,
    config: &Config,
    conn: &ConnInfo,
    trusted: bool,
    request_id: &str,
    canonical: &str,
    identity: &Identity<'_>,
) -> Result<Request<Incoming>, Rejection> {
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let path_and_query = match parts.uri.query() {
        Some(q) => {
            let mut s = String::with_capacity(canonical.len() + 1 + q.len());
            s.push_str(canonical);
            s.push('?');
            s.push_str(q);
            PathAndQuery::from_maybe_shared(Bytes::from(s))
        }
        None => PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(canonical.as_bytes())),
    }
    .map_err(|_| Rejection::RejectTargetForm)?;
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(config.server.upstream.clone());
    uri.path_and_query = Some(path_and_query);
    parts.uri = Uri::from_parts(uri).map_err(|_| Rejection::RejectTargetForm)?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    set_forwarding(
        &mut parts.headers,
        &ClientSide {
            peer: conn.peer,
            trusted,
            tls: conn.tls,
            host: host.as_ref(),
            request_id,
        },
    );
    // Only fortress says who the caller is: client copies of identity headers go, in every
    // spelling, then the verified principal's values are set.
    match identity.auth {
        Some(a) => a.identity_headers.strip(&mut parts.headers),
        None => IdentityHeaders::default().strip(&mut parts.headers),
    }
    if let Some(p) = identity.principal {
        inject(&mut parts.headers, p);
    }
    if identity.auth.is_some_and(|a| !a.forward_token) {
        parts.headers.remove(header::AUTHORIZATION);
    }
    // The app sees the host the client asked for (HTTP/2 clients send `:authority` only).
    if let Some(h) = host {
        parts.headers.insert(header::HOST, h);
    }
    Ok(Request::from_parts(parts, body))
}

/// Who the request is from, for the identity headers sent upstream.
struct Identity<'a> {
    principal: Option<&'a Principal>,
    auth: Option<&'a AuthSettings>,
}
