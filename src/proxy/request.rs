//! The request as the upstream sees it: the canonical path on an absolute URI for the pool,
//! HTTP/1.1, hop-by-hop headers removed, forwarding headers set, client identity headers
//! stripped in every spelling and fortress's own set, trace context for this hop.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Request, Version, header};
use hyper::body::Incoming;

use super::credentials::{self, Credentials};
use super::headers::{ClientSide, set_forwarding, strip_hop_by_hop};
use super::identity::{IdentityHeaders, inject, strip};
use crate::auth::Principal;
use crate::error::Rejection;

/// Everything the rewrite needs to know about the request's judgement.
pub struct Forwarding<'a> {
    /// Upstream `host:port`.
    pub upstream: &'a Authority,
    /// The TCP peer.
    pub peer: std::net::SocketAddr,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
    /// The request id.
    pub request_id: &'a str,
    /// The `traceparent` for the hop to the upstream.
    pub traceparent: &'a str,
    /// The canonical path, when it differs from the path the client sent.
    pub canonical: Option<&'a str>,
    /// The verified principal.
    pub principal: Option<&'a Principal>,
    /// The identity headers only fortress may set.
    pub identity: &'a IdentityHeaders,
    /// Which client credentials go to the app (`None`: no `authentication` configured,
    /// fortress handles no credentials and forwards them as sent).
    pub credentials: Option<Credentials<'a>>,
}

/// Rewrites a client request for the upstream.
pub fn prepare(
    mut parts: http::request::Parts,
    body: Incoming,
    f: &Forwarding<'_>,
) -> Result<Request<Incoming>, Rejection> {
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let path_and_query = match (f.canonical, parts.uri.path_and_query()) {
        // Already canonical: the client's path and query, shared (no copy).
        (None, Some(pq)) => pq.clone(),
        (canonical, _) => {
            let path = canonical.unwrap_or("/");
            let mut s =
                String::with_capacity(path.len() + 1 + parts.uri.query().map_or(0, str::len));
            s.push_str(path);
            if let Some(q) = parts.uri.query() {
                s.push('?');
                s.push_str(q);
            }
            PathAndQuery::from_maybe_shared(Bytes::from(s))
                .map_err(|_| Rejection::RejectTargetForm)?
        }
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(f.upstream.clone());
    uri.path_and_query = Some(path_and_query);
    parts.uri = Uri::from_parts(uri).map_err(|_| Rejection::RejectTargetForm)?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    set_forwarding(
        &mut parts.headers,
        &ClientSide {
            peer: f.peer,
            trusted: f.trusted,
            tls: f.tls,
            host: host.as_ref(),
            request_id: f.request_id,
        },
    );
    // Only fortress says who the caller is: client copies of identity headers go, in every
    // spelling, then the verified principal's values are set.
    strip(f.identity, &mut parts.headers);
    if let Some(p) = f.principal {
        inject(&mut parts.headers, p).map_err(Rejection::Unauthenticated)?;
    }
    // A bearer token or token cookie fortress did not verify does not reach the app (unless
    // the policy says so); a verified one only with `forward_token`.
    if let Some(c) = &f.credentials {
        credentials::apply(c, &mut parts.headers, f.principal.is_some());
    }
    // Trace context: the request's trace id with this hop's span; untrusted tracestate goes.
    if let Ok(v) = HeaderValue::from_str(f.traceparent) {
        parts.headers.insert(TRACEPARENT, v);
    }
    if !f.trusted {
        parts.headers.remove("tracestate");
    }
    // The app sees the host the client asked for (HTTP/2 clients send `:authority` only).
    if let Some(h) = host {
        parts.headers.insert(header::HOST, h);
    }
    Ok(Request::from_parts(parts, body))
}

const TRACEPARENT: &str = "traceparent";
