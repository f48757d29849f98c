//! The client's request body on its way upstream. hyper decodes the client's framing while
//! the body is forwarded; when that fails (a bad chunk size or line ending, chunk data that
//! does not match its size, a body cut short), the upstream request fails too. The wrapper
//! remembers that the failure was the client's, so the forwarder answers 400 and does not
//! count an upstream error.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pin_project_lite::pin_project! {
    /// The client's body, streamed as it arrives; marks [`BodyFailure`] on a read error.
    pub struct ClientBody {
        #[pin]
        inner: Incoming,
        failed: Arc<AtomicBool>,
    }
}

/// Whether reading the client's body failed (shared with the [`ClientBody`]).
#[derive(Debug, Clone, Default)]
pub struct BodyFailure(Arc<AtomicBool>);

impl BodyFailure {
    /// Whether the client's body failed to decode.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl ClientBody {
    /// Wraps the client's body; the handle tells afterwards whether it failed.
    pub fn new(inner: Incoming) -> (Self, BodyFailure) {
        let failure = BodyFailure::default();
        (
            Self {
                inner,
                failed: failure.0.clone(),
            },
            failure,
        )
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.failed.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
