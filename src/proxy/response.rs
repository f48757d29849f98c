//! The response on its way back: hop-by-hop headers removed, an upstream 5xx scrubbed when
//! `scrub_errors` is on (its body replaced by fortress's JSON error, the original logged,
//! bounded), and on stream routes a successful NDJSON response checked line by line
//! ([`crate::stream::NdjsonGuard`]). Security and CORS headers are added by the pipeline on
//! every response, forwarded or not (`proxy/security.rs`, `pipeline/cors.rs`).
//!
//! Scrubbing is decided on the response head: a 5xx status is known before any byte of its
//! body, so a 5xx on a stream route is scrubbed too. What is never touched is a stream that
//! started with a success status and fails later (the status was sent; the NDJSON guard ends
//! it with an error line).

use std::sync::Arc;

use http::{Response, header};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::headers::strip_hop_by_hop;
use crate::metrics::Metrics;
use crate::policy::stream::StreamRules;
use crate::stream::violation::Violation;
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
    pub connection: Option<crate::stream::PoisonConnection>,
}

/// `scrub_errors` is on for this request.
#[derive(Debug, Clone, Copy)]
pub struct Scrub<'a> {
    /// The request id the JSON error carries.
    pub request_id: &'a str,
    /// The route's name (metric label).
    pub route: &'a str,
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
    scrub: Option<Scrub<'_>>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    if let Some(s) = scrub
        && parts.status.is_server_error()
    {
        metrics.scrubbed_error(s.route);
        return scrubbed(parts, body, s.request_id, trace_id);
    }
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
                let encoded = parts
                    .headers
                    .get_all(header::CONTENT_ENCODING)
                    .iter()
                    .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
                if encoded && check.mode == Mode::Enforce {
                    // Only fortress's plain error line goes out: readable, not "gzip".
                    parts.headers.remove(header::CONTENT_ENCODING);
                }
                let mut guard = NdjsonGuard::new(
                    body,
                    check.rules,
                    Arc::from(trace_id),
                    check.mode,
                    check.connection,
                );
                if encoded {
                    guard.refuse_from_start(Violation::ContentEncoded);
                }
                ProxyBody::guarded(guard)
            }
        }
        None => ProxyBody::upstream(body),
    };
    Response::from_parts(parts, body)
}

/// How much of a scrubbed body is logged.
const SCRUB_LOG_BYTES: usize = 2048;
/// How long the logging task waits for that much of it.
const SCRUB_LOG_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// An upstream 5xx, scrubbed: fortress's JSON error with the same status and the request id;
/// of the app's headers only `Retry-After` is kept (no `Set-Cookie`, no `Content-Encoding`,
/// no debug headers). The first 2 KiB of the original body are logged at warn, by a task that
/// waits at most 5 s for them, so the client's answer never waits on a slow error body.
fn scrubbed(
    parts: http::response::Parts,
    body: Incoming,
    request_id: &str,
    trace_id: &str,
) -> Response<ProxyBody> {
    let status = parts.status;
    let mut resp =
        crate::error::scrubbed_upstream_error(status, request_id, trace_id).map(ProxyBody::full);
    if let Some(v) = parts.headers.get(header::RETRY_AFTER) {
        resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
    }
    let request_id = request_id.to_owned();
    let trace_id = trace_id.to_owned();
    tokio::spawn(async move {
        use http_body_util::BodyExt;
        let mut body = body;
        let mut kept = Vec::new();
        let mut truncated = false;
        let read = async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let room = SCRUB_LOG_BYTES - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                    if data.len() > room {
                        truncated = true;
                        break;
                    }
                }
            }
        };
        if tokio::time::timeout(SCRUB_LOG_WAIT, read).await.is_err() {
            truncated = true;
        }
        tracing::warn!(
            request.id = %request_id,
            trace.id = %trace_id,
            http.status = status.as_u16(),
            upstream_body = %String::from_utf8_lossy(&kept).escape_debug(),
            truncated,
            "upstream error body scrubbed"
        );
    });
    resp
}
