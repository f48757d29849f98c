//! The response on its way back: hop-by-hop headers removed, and on stream routes a
//! successful NDJSON response checked line by line ([`crate::stream::NdjsonGuard`]).

use std::sync::Arc;

use http::{Response, header};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::headers::strip_hop_by_hop;
use crate::metrics::Metrics;
use crate::policy::stream::StreamRules;
use crate::stream::{NdjsonGuard, is_ndjson};

/// Cleans the upstream response; `stream` is the route's name and stream rules, if it has
/// some. Anything not checked on a stream route (non-2xx, not NDJSON) is passed through and
/// counted.
pub fn prepare(
    resp: Response<Incoming>,
    stream: Option<(&str, Arc<StreamRules>)>,
    trace_id: &str,
    metrics: &Metrics,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = match stream {
        Some((route, rules)) => {
            if !parts.status.is_success() {
                metrics.stream_unchecked(route, "status");
                ProxyBody::upstream(body)
            } else if !is_ndjson(parts.headers.get(header::CONTENT_TYPE)) {
                metrics.stream_unchecked(route, "content_type");
                ProxyBody::upstream(body)
            } else {
                // The guard may cut the body short or add a line: the length is unknown.
                parts.headers.remove(header::CONTENT_LENGTH);
                ProxyBody::guarded(NdjsonGuard::new(body, rules, Arc::from(trace_id)))
            }
        }
        None => ProxyBody::upstream(body),
    };
    Response::from_parts(parts, body)
}
