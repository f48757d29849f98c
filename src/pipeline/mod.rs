//! The request path, in order. Each step can end the request with a [`Rejection`]; only
//! `error.rs` turns that into a response.
//!
//! 1. snapshot the config and assign the request id;
//! 2. decide ([`decide::decide`]): transport, target form and canonical path, route,
//!    authentication, authorization, tenant — in that order, dry-run aware;
//! 3. forward: strip hop-by-hop and client identity headers, set forwarding and identity
//!    headers, stream the body;
//! 4. clean the response headers and attach the completion record.

pub mod authn;
pub mod authz;
pub mod complete;
pub mod decide;
pub mod ids;
pub mod normalize;
pub mod route;
pub mod tenant;
pub mod transport;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Request, Response, Version, header};
use hyper::body::Incoming;

use crate::auth::Principal;
use crate::config::Config;
use crate::config::auth::AuthSettings;
use crate::error::Rejection;
use crate::proxy::body::ProxyBody;
use crate::proxy::headers::{ClientSide, set_forwarding, strip_hop_by_hop};
use crate::proxy::identity::{IdentityHeaders, inject};
use crate::server::conn::ConnInfo;
use crate::state::AppState;
use complete::Completion;
use decide::{DecideEnv, RequestView, RouteObserver};

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
    let trace_id = ids::trace_id(req.headers(), trusted, &state.ids);
    let mut done = Completion::start(
        state.clone(),
        conn.clone(),
        req.method().clone(),
        request_id.clone(),
        trace_id.clone(),
    );
    let ids = RequestIds {
        request_id: &request_id,
        trace_id: &trace_id,
        traceparent: "",
    };
    let result = decide_and_forward(&state, &config, &conn, trusted, &ids, req, &mut done).await;
    let mut resp = match result {
        Ok(resp) => {
            done.set_status(resp.status().as_u16());
            resp
        }
        Err(rejection) => {
            let (status, _, reason) = rejection.status();
            let decision = if status.is_server_error() {
                "error"
            } else {
                "deny"
            };
            done.set_status(status.as_u16());
            done.set_decision(decision, reason);
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
    ids: &RequestIds<'_>,
    req: Request<Incoming>,
    done: &mut Completion,
) -> Result<Response<ProxyBody>, Rejection> {
    let request_id = ids.request_id;
    // A cheap (reference-counted) clone, so the canonical path can borrow from it while the
    // request itself moves on to the forwarder.
    let uri = req.uri().clone();
    let view = RequestView {
        method: req.method(),
        uri: &uri,
        version: req.version(),
        headers: req.headers(),
        peer: conn.peer,
        tls: conn.tls,
        trusted,
    };
    let env = DecideEnv {
        revocations: &*state.revocations,
        metrics: Some(&state.metrics),
        now: jsonwebtoken::get_current_timestamp(),
        claims_override: None,
    };
    let mut observer = RouteObserver::new(&state.metrics);
    let decision = decide::decide(config, &view, &uri, &env, &mut observer).await;
    // The route is known even when a later stage refuses.
    if let Some(route) = observer.route {
        done.set_route(route);
    }
    let decision = decision?;
    done.set_mode(decision.dry_run);
    if let Some(r) = decision.dry_run_denial {
        done.set_decision("dry_run_deny", r.reason());
    }
    if let Some(p) = &decision.principal {
        done.set_principal(p.clone());
    }
    done.set_privileged(decision.privileged);
    let identity = Identity {
        principal: decision.principal.as_deref(),
        auth: config.auth.as_deref(),
    };
    let traceparent = ids::traceparent(ids.trace_id, &state.ids);
    let ids = &RequestIds {
        traceparent: &traceparent,
        ..*ids
    };
    let upstream_req = prepare(
        req,
        config,
        conn,
        trusted,
        ids,
        &decision.canonical,
        &identity,
    )?;
    let resp = state
        .forwarder
        .send(upstream_req, decision.timeout, &state.metrics, request_id)
        .await?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // Stream routes: a successful NDJSON response is checked line by line. Anything else is
    // passed through unchecked, and counted.
    let stream = decision
        .route
        .and_then(|r| r.stream.clone().map(|s| (r, s)));
    let body = match stream {
        Some((route, rules)) => {
            if !parts.status.is_success() {
                state.metrics.stream_unchecked(&route.name, "status");
                ProxyBody::upstream(body)
            } else if !crate::stream::is_ndjson(parts.headers.get(header::CONTENT_TYPE)) {
                state.metrics.stream_unchecked(&route.name, "content_type");
                ProxyBody::upstream(body)
            } else {
                // The guard may cut the body short or add a line: the length is unknown.
                parts.headers.remove(header::CONTENT_LENGTH);
                let guard = crate::stream::NdjsonGuard::new(body, rules, Arc::from(ids.trace_id));
                ProxyBody::guarded(guard)
            }
        }
        None => ProxyBody::upstream(body),
    };
    Ok(Response::from_parts(parts, body))
}

/// Rewrites a client request for the upstream: canonical path, absolute URI for the pool,
/// HTTP/1.1, hop-by-hop headers removed, forwarding headers set.
fn prepare(
    req: Request<Incoming>,
    config: &Config,
    conn: &ConnInfo,
    trusted: bool,
    ids: &RequestIds<'_>,
    canonical: &str,
    identity: &Identity<'_>,
) -> Result<Request<Incoming>, Rejection> {
    let request_id = ids.request_id;
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
        None => IdentityHeaders::builtin().strip(&mut parts.headers),
    }
    if let Some(p) = identity.principal {
        inject(&mut parts.headers, p);
    }
    if identity.auth.is_some_and(|a| !a.forward_token) {
        parts.headers.remove(header::AUTHORIZATION);
    }
    // Trace context: the request's trace id with a new span; untrusted tracestate goes.
    if let Ok(v) = HeaderValue::try_from(ids.traceparent.to_owned()) {
        parts.headers.insert(ids::TRACEPARENT, v);
    }
    if !trusted {
        parts.headers.remove("tracestate");
    }
    // The app sees the host the client asked for (HTTP/2 clients send `:authority` only).
    if let Some(h) = host {
        parts.headers.insert(header::HOST, h);
    }
    Ok(Request::from_parts(parts, body))
}

/// The ids of one request.
#[derive(Clone, Copy)]
struct RequestIds<'a> {
    request_id: &'a str,
    trace_id: &'a str,
    /// The `traceparent` sent upstream (set once the request is allowed).
    traceparent: &'a str,
}

/// Who the request is from, for the identity headers sent upstream.
struct Identity<'a> {
    principal: Option<&'a Principal>,
    auth: Option<&'a AuthSettings>,
}
