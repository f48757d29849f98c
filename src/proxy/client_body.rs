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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pin_project_lite::pin_project! {
    /// The client's body, streamed as it arrives; marks [`BodyFailure`] on a read error.
    pub struct ClientBody {
        #[pin]
        inner: Incoming,
        failed: Arc<AtomicU8>,
        seen: u64,
        limit: u64,
    }
}

const FAILED: u8 = 1;
const TOO_LARGE: u8 = 2;

/// Whether reading the client's body failed, and how (shared with the [`ClientBody`]).
#[derive(Debug, Clone, Default)]
pub struct BodyFailure(Arc<AtomicU8>);

impl BodyFailure {
    /// Whether the client's body failed (failed to decode, or passed `max_body`).
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Acquire) != 0
    }

    /// Whether the client's body passed `max_body`.
    pub fn too_large(&self) -> bool {
        self.0.load(Ordering::Acquire) == TOO_LARGE
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

impl ClientBody {
    /// Wraps the client's body, at most `limit` bytes; the handle tells afterwards whether it
    /// failed.
    pub fn new(inner: Incoming, limit: u64) -> (Self, BodyFailure) {
        let failure = BodyFailure::default();
        (
            Self {
                inner,
                failed: failure.0.clone(),
                seen: 0,
                limit,
            },
            failure,
        )
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen = this.seen.saturating_add(data.len() as u64);
                    if *this.seen > *this.limit {
                        this.failed.store(TOO_LARGE, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // A too-large body stays too large (its error already ended it).
                this.failed.fetch_max(FAILED, Ordering::AcqRel);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
