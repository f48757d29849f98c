//! The one response body type: a fortress-made body or the upstream's body streamed through,
//! carrying the request's context ([`BodyEvents`]), which records the request when the body
//! ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::stream::NdjsonGuard;

/// What the body tells the request's context while it streams. The context records the
/// request when it is dropped, which happens when the body ends, fails or is dropped.
pub trait BodyEvents: Send {
    /// The NDJSON guard cut the stream for `reason` (called once).
    fn stream_violation(&mut self, reason: &'static str);
    /// The upstream body failed mid-stream (the client saw a truncated response).
    fn upstream_body_error(&mut self);
    /// The upstream's trailers, before they are passed on (metered budget costs).
    fn trailers(&mut self, _trailers: &mut http::HeaderMap) {}
}

/// Error type of [`ProxyBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// Response body sent to the client.
    pub struct ProxyBody {
        #[pin]
        kind: Kind,
        done: Option<Box<dyn BodyEvents>>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind {
        Full { data: Option<Bytes> },
        Upstream { #[pin] inner: Incoming },
        Guarded { guard: NdjsonGuard },
    }
}

impl ProxyBody {
    /// A complete body made by fortress (error JSON, admin answers).
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
            done: None,
        }
    }

    /// The upstream's body, streamed frame by frame.
    pub fn upstream(inner: Incoming) -> Self {
        Self {
            kind: Kind::Upstream { inner },
            done: None,
        }
    }

    /// The upstream's body, checked line by line as an NDJSON stream.
    pub fn guarded(guard: NdjsonGuard) -> Self {
        Self {
            kind: Kind::Guarded { guard },
            done: None,
        }
    }

    /// Attaches the request's context, recorded when the body ends or is dropped.
    pub fn with_events(mut self, done: Box<dyn BodyEvents>) -> Self {
        self.done = Some(done);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = match this.kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Upstream { inner } => match inner.poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Ok(mut frame))) => {
                    if let (Some(t), Some(done)) = (frame.trailers_mut(), this.done.as_mut()) {
                        done.trailers(t);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(done) = this.done.as_mut() {
                        done.upstream_body_error();
                    }
                    Poll::Ready(Some(Err(Box::new(e) as BoxError)))
                }
            },
            KindProj::Guarded { guard } => {
                let polled = Pin::new(&mut *guard).poll_frame(cx);
                if let Some(v) = guard.take_new_violation()
                    && let Some(done) = this.done.as_mut()
                {
                    done.stream_violation(v.code());
                }
                polled.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
            }
        };
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            // Dropping the completion records the request now rather than at connection end.
            this.done.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Upstream { inner } => inner.is_end_stream(),
            Kind::Guarded { guard } => guard.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Upstream { inner } => inner.size_hint(),
            Kind::Guarded { guard } => guard.size_hint(),
        }
    }
}
