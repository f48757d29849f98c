//! The client's request body on its way upstream. hyper decodes the client's framing while
//! the body is forwarded; when that fails (a bad chunk size or line ending, chunk data that
//! does not match its size, a body cut short), the upstream request fails too. The wrapper
//! remembers that the failure was the client's, so the forwarder answers 400 and does not
//! count an upstream error.
//!
//! It also counts the bytes against the route's `max_body`: the frame that would pass the
//! limit is not forwarded, the body ends with an error instead, so the upstream request is
//! aborted (the app sees a body cut short, never a complete request), and the forwarder
//! answers 413 `body_too_large` when no response has started.
//!
//! The same way (the offending frame is never forwarded, the upstream request is aborted):
//! - a form body naming `_method` (scanned as it streams by `form_scan.rs`) is answered 400
//!   `method_override`;
//! - a body whose next chunk does not arrive within `server.timeouts.body_read` (counted only
//!   while fortress is waiting for the client, not while the upstream is slow to read) is
//!   answered 408 `body_timeout`, connection closed.
//!
//! It tells the forwarder when the whole body has been handed to the upstream connection, so
//! the `upstream_response` timer starts then, not while a slow upload is still arriving.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::form_scan::FormScan;

pin_project_lite::pin_project! {
    /// The client's body, streamed as it arrives; marks [`BodyFailure`] on a read error.
    pub struct ClientBody {
        #[pin]
        inner: Incoming,
        shared: Arc<Shared>,
        seen: u64,
        limit: u64,
        scan: Option<FormScan>,
        read_timeout: Option<Duration>,
        // Allocated on the first wait for the client, re-armed for each later wait.
        idle: Option<Pin<Box<Sleep>>>,
        armed: bool,
    }
}

const FAILED: u8 = 1;
const TOO_LARGE: u8 = 2;
const METHOD_OVERRIDE: u8 = 3;
const TIMED_OUT: u8 = 4;

/// What the forwarder and the body share: how the body failed, whether it was all handed to
/// the upstream connection (and a wake-up when it was), and its progress.
#[derive(Debug, Default)]
struct Shared {
    failed: AtomicU8,
    sent: AtomicBool,
    sent_signal: Notify,
    frames: AtomicU64,
    waiting_on_client: AtomicBool,
}

/// Whether reading the client's body failed, and how (shared with the [`ClientBody`]); and
/// whether it has been sent whole.
#[derive(Debug, Clone, Default)]
pub struct BodyFailure(Arc<Shared>);

impl BodyFailure {
    /// Whether the client's body failed (failed to decode, passed `max_body`, named
    /// `_method`, stalled).
    pub fn failed(&self) -> bool {
        self.0.failed.load(Ordering::Acquire) != 0
    }

    /// Whether the client's body passed `max_body`.
    pub fn too_large(&self) -> bool {
        self.0.failed.load(Ordering::Acquire) == TOO_LARGE
    }

    /// Whether the client's form body named `_method` (see `form_scan.rs`).
    pub fn method_override(&self) -> bool {
        self.0.failed.load(Ordering::Acquire) == METHOD_OVERRIDE
    }

    /// Whether the client's body stalled past `body_read`.
    pub fn timed_out(&self) -> bool {
        self.0.failed.load(Ordering::Acquire) == TIMED_OUT
    }

    /// Whether the whole body was handed to the upstream connection (at once for a request
    /// without a body).
    pub fn sent(&self) -> bool {
        self.0.sent.load(Ordering::Acquire)
    }

    /// Resolves once the body was sent whole (see [`BodyFailure::sent`]); for one waiter.
    pub async fn wait_sent(&self) {
        while !self.sent() {
            self.0.sent_signal.notified().await;
        }
    }

    /// Body frames handed on so far (progress while the body is being sent).
    pub fn frames(&self) -> u64 {
        self.0.frames.load(Ordering::Acquire)
    }

    /// Whether the body is waiting for the client's next bytes (so the upstream is keeping
    /// up, and `body_read` bounds the wait).
    pub fn waiting_on_client(&self) -> bool {
        self.0.waiting_on_client.load(Ordering::Acquire)
    }
}

impl Shared {
    fn fail(&self, how: u8) {
        // The first cause stays (an error that ends the body may be followed by others).
        let _first = self
            .failed
            .compare_exchange(0, how, Ordering::AcqRel, Ordering::Acquire);
    }

    fn mark_sent(&self) {
        if !self.sent.swap(true, Ordering::AcqRel) {
            self.sent_signal.notify_one();
        }
    }
}

/// The error that ends a body over its limit.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body over max_body")
    }
}

impl std::error::Error for BodyTooLarge {}

/// The error that ends a form body naming `_method`.
#[derive(Debug)]
pub struct BodyMethodOverride;

impl std::fmt::Display for BodyMethodOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request form body names _method")
    }
}

impl std::error::Error for BodyMethodOverride {}

/// The error that ends a body whose next chunk did not come within `body_read`.
#[derive(Debug)]
pub struct BodyReadTimeout;

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body stalled past body_read")
    }
}

impl std::error::Error for BodyReadTimeout {}

impl ClientBody {
    /// Wraps the client's body, at most `limit` bytes; the handle tells afterwards whether it
    /// failed.
    pub fn new(inner: Incoming, limit: u64) -> (Self, BodyFailure) {
        let failure = BodyFailure::default();
        if inner.is_end_stream() {
            failure.0.mark_sent();
        }
        (
            Self {
                inner,
                shared: failure.0.clone(),
                seen: 0,
                limit,
                scan: None,
                read_timeout: None,
                idle: None,
                armed: false,
            },
            failure,
        )
    }

    /// Scans the body for `_method` as it streams (form bodies; see `form_scan.rs`).
    pub fn scan_forms(mut self, scan: Option<FormScan>) -> Self {
        self.scan = scan;
        self
    }

    /// Waits at most `timeout` for each next chunk from the client.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.armed = false;
                this.shared
                    .waiting_on_client
                    .store(false, Ordering::Release);
                let end = this.inner.is_end_stream();
                if let Some(data) = frame.data_ref() {
                    *this.seen = this.seen.saturating_add(data.len() as u64);
                    if *this.seen > *this.limit {
                        this.shared.fail(TOO_LARGE);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    if let Some(scan) = this.scan.as_mut()
                        && (scan.feed(data) || (end && scan.finish()))
                    {
                        this.shared.fail(METHOD_OVERRIDE);
                        return Poll::Ready(Some(Err(Box::new(BodyMethodOverride))));
                    }
                }
                this.shared.frames.fetch_add(1, Ordering::AcqRel);
                if end {
                    this.shared.mark_sent();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // A too-large body stays too large (its error already ended it).
                this.shared.fail(FAILED);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.shared
                    .waiting_on_client
                    .store(false, Ordering::Release);
                if let Some(scan) = this.scan.as_mut()
                    && scan.finish()
                {
                    this.shared.fail(METHOD_OVERRIDE);
                    return Poll::Ready(Some(Err(Box::new(BodyMethodOverride))));
                }
                this.shared.mark_sent();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(timeout) = *this.read_timeout {
                    let idle = this
                        .idle
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if !*this.armed {
                        idle.as_mut().reset(Instant::now() + timeout);
                        *this.armed = true;
                    }
                    if idle.as_mut().poll(cx).is_ready() {
                        this.shared.fail(TIMED_OUT);
                        return Poll::Ready(Some(Err(Box::new(BodyReadTimeout))));
                    }
                }
                this.shared.waiting_on_client.store(true, Ordering::Release);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
