//! Forwarding to the upstream over pooled HTTP/1.1 keep-alive connections: the request and
//! response rewriting (`request.rs`, `response.rs`, `headers.rs`, `identity.rs`), the body
//! type (`body.rs`) and the pooled client. Bodies stream both ways; nothing is buffered whole.
//! This module knows nothing of the pipeline: it is told what was decided.

pub mod body;
pub mod client_body;
pub mod credentials;
pub mod form_scan;
pub mod headers;
pub mod identity;
pub mod request;
pub mod response;
pub mod security;
pub mod tunnel;

use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;

use client_body::{BodyFailure, ClientBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::warn;

use crate::error::Rejection;
use crate::metrics::Metrics;

/// The upstream client, shared by all requests (and kept across reloads, so is its pool).
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, ClientBody>,
}

impl Forwarder {
    /// Builds the pooled client.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(true);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // Cap each pooled connection's read buffer (hyper grows it up to ~400 KiB while
            // streaming large bodies): bodies stream through in chunks either way, and this
            // bounds memory per upstream connection. It also caps upstream response headers.
            .http1_max_buf_size(UPSTREAM_MAX_BUF)
            .build(http);
        Self { client }
    }

    /// Sends a prepared request (absolute URI, cleaned headers) and waits for the response
    /// headers up to `timeout`, counted from when the client's body was sent whole (at once
    /// for a bodiless request): a slow upload is bounded by `body_read` per chunk, not by
    /// `timeout`. While the body is being sent, an upstream that takes none of it for
    /// `timeout` (and has not answered) times out. The response body streams afterwards. A
    /// failure while the client's body was being read (`body` says so) is the client's: 400
    /// `malformed_body` (413, 400 `method_override`, 408 for the body's own limits), counted in
    /// `fortress_client_body_errors_total` when malformed, never as an upstream error.
    pub async fn send(
        &self,
        req: Request<ClientBody>,
        body: &BodyFailure,
        timeout: Duration,
        metrics: &Metrics,
        request_id: &str,
    ) -> Result<Response<Incoming>, Rejection> {
        let started = Instant::now();
        let response = self.client.request(req);
        tokio::pin!(response);
        let mut frames = body.frames();
        let outcome = loop {
            if body.sent() {
                break tokio::time::timeout(timeout, &mut response)
                    .await
                    .map_err(|_| ());
            }
            tokio::select! {
                r = &mut response => break Ok(r),
                () = body.wait_sent() => {}
                () = tokio::time::sleep(timeout) => {
                    // Still sending the body: waiting on the client is `body_read`'s to
                    // bound; an upstream that took nothing for `timeout` is not answering.
                    let now = body.frames();
                    if !body.waiting_on_client() && now == frames {
                        break Err(());
                    }
                    frames = now;
                }
            }
        };
        match outcome {
            Ok(Ok(resp)) => {
                metrics.observe_upstream(started.elapsed().as_secs_f64());
                Ok(resp)
            }
            Ok(Err(e)) if body.too_large() => {
                warn!(request.id = %request_id, error = %error_chain(&e), "client body over max_body; upstream request aborted");
                Err(Rejection::PayloadTooLarge(
                    crate::error::LimitError::BodyTooLarge,
                ))
            }
            Ok(Err(e)) if body.method_override() => {
                warn!(request.id = %request_id, error = %error_chain(&e), "client form body names _method; upstream request aborted");
                Err(Rejection::RejectAmbiguous(
                    crate::error::AmbiguityError::MethodOverride,
                ))
            }
            Ok(Err(e)) if body.timed_out() => {
                warn!(request.id = %request_id, error = %error_chain(&e), "client body stalled past body_read; upstream request aborted");
                Err(Rejection::BodyTimeout)
            }
            Ok(Err(e)) if body.failed() => {
                metrics.client_body_errors.inc();
                warn!(request.id = %request_id, error = %error_chain(&e), "client body malformed");
                Err(Rejection::MalformedBody)
            }
            Ok(Err(e)) if e.is_connect() => {
                metrics.upstream_error("connect");
                warn!(request.id = %request_id, error = %error_chain(&e), "upstream connect failed");
                Err(Rejection::UpstreamUnavailable)
            }
            Ok(Err(e)) => {
                metrics.upstream_error("protocol");
                warn!(request.id = %request_id, error = %error_chain(&e), "upstream request failed");
                Err(Rejection::UpstreamFailed)
            }
            Err(_) => {
                metrics.upstream_error("timeout");
                warn!(request.id = %request_id, timeout_ms = timeout.as_millis() as u64, "upstream timed out");
                Err(Rejection::UpstreamTimeout)
            }
        }
    }
}

/// Largest read buffer per upstream connection (and so largest upstream response head).
const UPSTREAM_MAX_BUF: usize = 32 * 1024;

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
