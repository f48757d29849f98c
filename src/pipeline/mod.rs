//! The request path, in order. Each step can end the request with a [`Rejection`]; only
//! `error.rs` turns that into a response.
//!
//! 1. a [`RequestContext`]: one policy snapshot, ids, the connection, timers;
//! 2. decide ([`decide::decide`]): transport, host, target form and canonical path, route,
//!    authentication, authorization, tenant — in that order, dry-run aware;
//! 3. forward (`proxy::request`): canonical path, hop-by-hop and client identity headers
//!    stripped, forwarding and identity headers set, body streamed;
//! 4. respond (`proxy::response`): response headers cleaned, NDJSON guard on stream routes;
//! 5. complete: the context rides in the response body and becomes the completion record
//!    when the body ends or is dropped (or when the request is dropped before a response).

pub mod admission;
pub mod ambiguity;
pub mod assertion;
pub mod audit;
pub mod auth_throttle;
pub mod authn;
pub mod authz;
pub mod concurrency;
pub mod conn;
pub mod context;
pub mod cors;
pub mod decide;
pub mod framing;
pub mod h1_verdict;
pub mod host;
pub mod ids;
pub mod ip_allow;
pub mod limits;
pub mod normalize;
pub mod readiness;
pub mod route;
pub mod route_variants;
pub mod tenant;
pub mod toggles;
pub mod trace;
pub mod transport;
pub mod upgrade;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::error::Rejection;
use crate::proxy::body::ProxyBody;
use crate::proxy::client_body::ClientBody;
use crate::proxy::credentials::Credentials;
use crate::proxy::{request, response, tunnel};
use crate::state::AppState;
use crate::stream::Mode;
use conn::ConnInfo;
use context::RequestContext;

/// Handles one client request end to end. Never fails: every error becomes a response.
pub async fn handle(
    state: AppState,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // One snapshot per request: a reload mid-request does not change what this request sees.
    // The context is boxed once: it moves into the response body, which records it at the end.
    let mut ctx = Box::new(RequestContext::new(
        state.config.snapshot(),
        conn,
        Some(state.metrics.clone()),
        req.method().clone(),
        req.headers(),
    ));
    trace::begin(&state, &mut ctx, req.uri().path());
    // What the stream itself says (HTTP/2 `END_STREAM` on the headers), over the framing guess.
    ctx.body_empty = http_body::Body::is_end_stream(req.body());
    if let Some(trail) = &state.audit {
        ctx.audit = Some(trail.clone());
        ctx.target = req.uri().path_and_query().cloned();
        ctx.audit_headers = audit::decision_headers(&ctx.snapshot.policy, req.headers());
    }
    let (mut resp, mut tunnel) = match decide_and_forward(&state, &mut ctx, req).await {
        Ok(forwarded) => forwarded,
        Err(rejection) => {
            ctx.refuse(rejection);
            let resp = rejection
                .to_traced_response(ctx.ids.request_id(), Some(ctx.ids.trace_id()))
                .map(ProxyBody::full);
            (resp, None)
        }
    };
    let forwarded = ctx.outcome != context::Outcome::Pending
        && !matches!(
            ctx.outcome,
            context::Outcome::Denied(_) | context::Outcome::Failed(_)
        );
    admission::respond(&mut ctx, resp.headers_mut(), forwarded);
    ctx.status = Some(resp.status().as_u16());
    // No record, no response: a record the trail cannot take (or, `strict`, cannot write)
    // turns the response into 503 `audit_unavailable`.
    if ctx.audit.is_some() && audit::commit(&ctx).await.is_err() {
        ctx.audit_failed();
        resp = Rejection::AuditUnavailable
            .to_traced_response(ctx.ids.request_id(), Some(ctx.ids.trace_id()))
            .map(ProxyBody::full);
        tunnel = None;
        ctx.status = Some(resp.status().as_u16());
    }
    crate::metrics::observe_ttfb(ctx.snapshot.route_metrics(ctx.route), ctx.timings.start);
    if let Ok(v) = HeaderValue::from_str(ctx.ids.request_id()) {
        // A static name: inserting by `&str` copies a custom name into a new allocation.
        resp.headers_mut()
            .insert(http::HeaderName::from_static(ids::X_REQUEST_ID), v);
    }
    if let Ok(v) = HeaderValue::from_bytes(&ctx.ids.traceresponse()) {
        resp.headers_mut()
            .insert(http::HeaderName::from_static(ids::TRACERESPONSE), v);
    }
    // Every response, forwarded or fortress's own: security headers, then CORS.
    crate::proxy::security::apply(resp.headers_mut(), &limits::rules(&ctx).security, ctx.https);
    cors::decorate(&ctx, resp.headers_mut());
    match tunnel {
        // A WebSocket tunnel: the context rides in the tunnel task and is recorded (allowed,
        // 101) when the tunnel ends.
        Some(t) => {
            let request_id = ctx.ids.request_id().to_owned();
            tokio::spawn(tunnel::splice(
                t.client, t.upstream, t.idle, request_id, ctx,
            ));
            Ok(resp)
        }
        None => Ok(resp.map(|b| b.with_events(ctx))),
    }
}

/// Both halves of an accepted WebSocket handshake, to splice once the `101` is sent.
struct Tunnel {
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: std::time::Duration,
}

/// The route's tenant header, with the tenant the tenant check read from it.
fn tenant_header(ctx: &RequestContext) -> Option<(&http::HeaderName, Option<&str>)> {
    let rule = ctx.route()?.access.tenant.as_ref()?;
    let crate::policy::route::TenantSource::Header(name) = &rule.source else {
        return None;
    };
    let own = ctx.principal.as_ref().and_then(|p| p.tenant.as_deref());
    Some((name, ctx.requested_tenant.as_str(own)))
}

async fn decide_and_forward(
    state: &AppState,
    ctx: &mut RequestContext,
    req: Request<Incoming>,
) -> Result<(Response<ProxyBody>, Option<Tunnel>), Rejection> {
    let (mut parts, body) = req.into_parts();
    // First: a request standing in for a head the HTTP/1 guard refused, and head limits.
    h1_verdict::precheck(ctx, &parts)?;
    decide::decide(ctx, &parts, &mut ()).await?;
    if cors::is_preflight(ctx) {
        // Answered here, never forwarded; `cors::decorate` adds the CORS headers.
        ctx.allow();
        let mut resp = Response::new(ProxyBody::full(bytes::Bytes::new()));
        *resp.status_mut() = http::StatusCode::NO_CONTENT;
        return Ok((resp, None));
    }
    // After every request-time check: only an authenticated, authorized handshake on a
    // `websocket: true` route is proxied as one.
    let websocket = upgrade::check(ctx, &parts)?;
    audit::gate(ctx)?;
    let client_upgrade = if websocket {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    ctx.allow();
    let traceparent = ctx.ids.traceparent();
    let canonical = match &ctx.canonical {
        context::Canonical::Rewritten(p) => Some(p.clone()),
        context::Canonical::AsSent | context::Canonical::Unknown => None,
    };
    // Signed before the parts move into the upstream request; replaces a client's own.
    let assertion = assertion::sign(ctx, parts.uri.path())?;
    let (body, body_failure) = ClientBody::new(body, limits::rules(ctx).max_body);
    let body = body
        .scan_forms(crate::proxy::form_scan::FormScan::for_request(
            &parts.headers,
        ))
        .read_timeout(ctx.snapshot.server.timeouts.body_read);
    let upstream_req = request::prepare(
        parts,
        body,
        &request::Forwarding {
            upstream: &ctx.snapshot.server.upstream,
            peer: ctx.conn.peer,
            tls: ctx.conn.tls,
            trusted: ctx.trusted,
            request_id: ctx.ids.request_id(),
            traceparent: &traceparent,
            canonical: canonical.as_deref(),
            principal: ctx.principal.as_deref(),
            identity: ctx.snapshot.identity_headers(),
            credentials: ctx.snapshot.policy.auth.as_ref().map(|a| Credentials {
                cookie: a.cookie.as_deref(),
                forward_token: a.forward_token,
                forward_unverified: a.forward_unverified_credentials,
            }),
            rules: &ctx.snapshot.policy.headers,
            trusted_proxies: &ctx.snapshot.server.trusted_proxies,
            tenant_header: tenant_header(ctx),
            websocket,
            stream: ctx.route().is_some_and(|r| r.stream.is_some()),
        },
    )?;
    let mut upstream_req = upstream_req;
    if let Some((name, value)) = assertion {
        upstream_req.headers_mut().insert(name, value);
    }
    // Stream routes: keep a handle on the upstream connection, so a stream violation can
    // take it out of use.
    let stream_route = ctx.route().is_some_and(|r| r.stream.is_some());
    // HTTP/1.1 clients send on their connection's own upstream connection, except a WebSocket
    // handshake (the upstream connection is upgraded, not kept).
    // `server.upstream_affinity: false` sends everything through the pool.
    let slot = ctx
        .conn
        .upstream
        .as_ref()
        .filter(|_| !websocket && ctx.snapshot.server.upstream_affinity);
    let sent = Instant::now();
    ctx.trace.upstream_started(sent);
    let (mut resp, went) = state
        .forwarder
        .send(
            upstream_req,
            crate::proxy::Via {
                slot,
                capture: stream_route,
            },
            &body_failure,
            ctx.upstream_timeout(),
            &state.metrics,
            ctx.ids.request_id(),
        )
        .await?;
    ctx.upstream_answered(sent.elapsed());
    if resp.status() == http::StatusCode::UNAUTHORIZED {
        auth_throttle::upstream_refused(ctx).await;
    }
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // A 101 only answers a handshake fortress checked and forwarded; anything else is a
        // broken upstream.
        let Some(client) = client_upgrade else {
            return Err(Rejection::UpstreamFailed);
        };
        let upstream = hyper::upgrade::on(&mut resp);
        let tunnel = Tunnel {
            client,
            upstream,
            idle: ctx.snapshot.server.timeouts.websocket_idle,
        };
        return Ok((response::switching(resp), Some(tunnel)));
    }
    // On a dry-run route a stream violation is recorded, not enforced.
    let mode = if ctx.dry_run {
        Mode::Observe
    } else {
        Mode::Enforce
    };
    let stream = ctx.route().and_then(|r| {
        r.stream.as_ref().map(|rules| response::StreamCheck {
            route: &r.name,
            rules: rules.clone(),
            mode,
            connection: went.into_poison(),
        })
    });
    Ok((
        response::prepare(
            resp,
            stream,
            ctx.ids.trace_id(),
            &state.metrics,
            limits::rules(ctx).scrub_errors.then(|| response::Scrub {
                request_id: ctx.ids.request_id(),
                route: ctx.snapshot.route_metrics(ctx.route).name(),
            }),
        ),
        None,
    ))
}
