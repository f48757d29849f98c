//! The response on its way back: hop-by-hop headers removed, and on stream routes a
//! successful NDJSON response checked line by line ([`crate::stream::NdjsonGuard`]).

use std::sync::Arc;

use http::{Response, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::CaptureConnection;

use super::body::ProxyBody;
use super::headers::strip_hop_by_hop;
use crate::metrics::Metrics;
use crate::policy::stream::StreamRules;
use crate::stream::{Mode, NdjsonGuard, is_ndjson};

/// What the response check of a stream route needs.
pub struct StreamCheck<'a> {
    /// The route's name (metric label).
    pub route: &'a str,
    /// The route's stream rules.
    pub rules: Arc<StreamRules>,
    /// Enforce (cut on a violation) or observe (dry-run).
    pub mode: Mode,
    /// The upstream connection the response came on (poisoned on a violation).
    pub connection: Option<CaptureConnection>,
}

/// The upstream's `101 Switching Protocols` for a WebSocket handshake: hop-by-hop headers
/// removed like on any response, then `Connection: upgrade` and `Upgrade: websocket` set (the
/// `Sec-WebSocket-Accept` and other end-to-end headers stay); no body.
pub fn switching(resp: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, _body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    parts
        .headers
        .insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    Response::from_parts(parts, ProxyBody::full(bytes::Bytes::new()))
}

/// Cleans the upstream response; `stream` is set on stream routes. Anything not checked on a
/// stream route (non-2xx, not NDJSON) is passed through and counted.
pub fn prepare(
    resp: Response<Incoming>,
    stream: Option<StreamCheck<'_>>,
    trace_id: &str,
    metrics: &Metrics,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = match stream {
        Some(check) => {
            if !parts.status.is_success() {
                metrics.stream_unchecked(check.route, "status");
                ProxyBody::upstream(body)
            } else if !is_ndjson(parts.headers.get(header::CONTENT_TYPE)) {
                metrics.stream_unchecked(check.route, "content_type");
                ProxyBody::upstream(body)
            } else {
                // An enforcing guard may cut the body short or add a line: the length is
                // unknown. An observing one forwards every byte, so the length stays.
                if check.mode == Mode::Enforce {
                    parts.headers.remove(header::CONTENT_LENGTH);
                }
                ProxyBody::guarded(NdjsonGuard::new(
                    body,
                    check.rules,
                    Arc::from(trace_id),
                    check.mode,
                    check.connection,
                ))
            }
        }
        None => ProxyBody::upstream(body),
    };
    Response::from_parts(parts, body)
}
