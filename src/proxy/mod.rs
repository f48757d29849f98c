//! Forwarding to the upstream over pooled HTTP/1.1 keep-alive connections: the request and
//! response rewriting (`request.rs`, `response.rs`, `headers.rs`, `identity.rs`), the body
//! type (`body.rs`) and the pooled client. Bodies stream both ways; nothing is buffered whole.
//! This module knows nothing of the pipeline: it is told what was decided.

pub mod affinity;
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
use hyper_util::client::legacy::connect::{CaptureConnection, HttpConnector, capture_connection};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::warn;

use crate::error::Rejection;
use crate::metrics::Metrics;

/// The upstream client, shared by all requests (and kept across reloads, so is its pool):
/// HTTP/1.1 client connections send on their own upstream connection (`affinity.rs`), the
/// rest through the pool.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, ClientBody>,
    owner: affinity::Owner,
}

/// Which upstream connection a request goes out on.
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    /// The client connection's own upstream connection (HTTP/1.1 clients, not for a
    /// WebSocket handshake); `None`: the pool.
    pub slot: Option<&'a affinity::Slot>,
    /// On the pool, keep a handle on the connection (stream routes, to poison it on a
    /// violation).
    pub capture: bool,
}

/// Where a request went out.
pub enum Sent {
    /// On the pool; the handle poisons the connection it used (stream routes only).
    Pooled(Option<CaptureConnection>),
    /// On the client connection's own upstream connection.
    Owned(affinity::Poison),
}

impl Sent {
    /// What poisons the connection the response came on (a stream violation).
    pub fn into_poison(self) -> Option<crate::stream::PoisonConnection> {
        match self {
            Self::Pooled(None) => None,
            Self::Pooled(Some(captured)) => Some(Box::new(move || {
                if let Some(connected) = captured.connection_metadata().as_ref() {
                    connected.poison();
                }
            })),
            Self::Owned(poison) => Some(Box::new(move || poison.poison())),
        }
    }
}

/// Why sending failed (before the response head).
enum SendError {
    Pool(hyper_util::client::legacy::Error),
    Owned(affinity::Failure),
}

impl SendError {
    fn is_connect(&self) -> bool {
        match self {
            Self::Pool(e) => e.is_connect(),
            Self::Owned(f) => matches!(f, affinity::Failure::Connect(_)),
        }
    }

    fn chain(&self) -> String {
        match self {
            Self::Pool(e) => error_chain(e),
            Self::Owned(affinity::Failure::Connect(e)) => error_chain(e.as_ref()),
            Self::Owned(affinity::Failure::Protocol(e)) => error_chain(e),
        }
    }
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
            .build(http.clone());
        Self {
            client,
            owner: affinity::Owner::new(http, UPSTREAM_MAX_BUF),
        }
    }

    /// The number of upstream connections owned by client connections and the number of
    /// those parked between client connections (for the metrics).
    pub fn owned_connections(&self) -> (affinity::Counter, affinity::Counter) {
        self.owner.counters()
    }

    /// Sends on the slot's own connection when there is one to use, else on the pool.
    async fn dispatch(
        &self,
        mut req: Request<ClientBody>,
        slot: Option<&affinity::Slot>,
        capture: bool,
    ) -> Result<(Response<Incoming>, Sent), SendError> {
        if let Some(slot) = slot {
            match self.owner.send(slot, req).await {
                Ok(affinity::Sent::Response(resp, poison)) => {
                    return Ok((resp, Sent::Owned(poison)));
                }
                Ok(affinity::Sent::Full(unsent)) => req = *unsent,
                Err(f) => return Err(SendError::Owned(f)),
            }
        }
        let connection = capture.then(|| capture_connection(&mut req));
        let resp = self.client.request(req).await.map_err(SendError::Pool)?;
        Ok((resp, Sent::Pooled(connection)))
    }

    /// Sends a prepared request (absolute URI, cleaned headers) and waits for the response
    /// headers up to `timeout`, counted from when the client's body was sent whole (at once
    /// for a bodiless request): a slow upload is bounded by `body_read` per chunk, not by
    /// `timeout`. While the body is being sent, an upstream that takes none of it for
    /// `timeout` (and has not answered) times out. The response body streams afterwards. A
    /// failure while the client's body was being read (`body` says so) is the client's: 400
    /// `malformed_body` (413, 400 `method_override`, 408 for the body's own limits), counted in
    /// `fortress_client_body_errors_total` when malformed, never as an upstream error.
    ///
    /// `via`: which upstream connection to use.
    pub async fn send(
        &self,
        req: Request<ClientBody>,
        via: Via<'_>,
        body: &BodyFailure,
        timeout: Duration,
        metrics: &Metrics,
        request_id: &str,
    ) -> Result<(Response<Incoming>, Sent), Rejection> {
        let started = Instant::now();
        let response = self.dispatch(req, via.slot, via.capture);
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
                warn!(request.id = %request_id, error = %e.chain(), "client body over max_body; upstream request aborted");
                Err(Rejection::PayloadTooLarge(
                    crate::error::LimitError::BodyTooLarge,
                ))
            }
            Ok(Err(e)) if body.method_override() => {
                warn!(request.id = %request_id, error = %e.chain(), "client form body names _method; upstream request aborted");
                Err(Rejection::RejectAmbiguous(
                    crate::error::AmbiguityError::MethodOverride,
                ))
            }
            Ok(Err(e)) if body.timed_out() => {
                warn!(request.id = %request_id, error = %e.chain(), "client body stalled past body_read; upstream request aborted");
                Err(Rejection::BodyTimeout)
            }
            Ok(Err(e)) if body.failed() => {
                metrics.client_body_errors.inc();
                warn!(request.id = %request_id, error = %e.chain(), "client body malformed");
                Err(Rejection::MalformedBody)
            }
            Ok(Err(e)) if e.is_connect() => {
                metrics.upstream_error("connect");
                warn!(request.id = %request_id, error = %e.chain(), "upstream connect failed");
                Err(Rejection::UpstreamUnavailable)
            }
            Ok(Err(e)) => {
                metrics.upstream_error("protocol");
                warn!(request.id = %request_id, error = %e.chain(), "upstream request failed");
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
