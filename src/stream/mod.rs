//! NDJSON stream integrity on the response path: [`NdjsonGuard`] forwards each validated line
//! as soon as it is complete and, on the first violation, sends one final error line, ends the
//! response and drops the upstream connection at once — and marks it so the pool never hands
//! it out again, whatever the violation and wherever it happened (even at EOF, after the
//! response was read to its end). On a dry-run route the guard only watches: every byte
//! passes unchanged and the first violation is reported, not enforced.

mod line;
pub mod sql_guard;
pub mod validator;
pub mod violation;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tracing::debug;

use validator::{StreamRules, Validator, Violation, error_line};

/// Wraps an upstream NDJSON body with a [`Validator`].
pub struct NdjsonGuard {
    // Boxed so the guard is `Unpin` and the upstream can be dropped the moment it misbehaves.
    inner: Option<Pin<Box<Incoming>>>,
    validator: Validator,
    request_trace_id: Arc<str>,
    state: State,
    violation: Option<Violation>,
    reported: bool,
    mode: Mode,
    connection: Option<PoisonConnection>,
}

/// Marks the upstream connection a stream came on so it is never used again (the pool's
/// connection, or the client connection's own).
pub type PoisonConnection = Box<dyn Fn() + Send + Sync>;

/// Whether a violation cuts the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Cut the stream: valid lines, then one error line; the upstream connection is dropped.
    Enforce,
    /// Dry-run: forward everything unchanged; only report the first violation.
    Observe,
}

enum State {
    Streaming,
    /// The last frame to send: valid lines before the violation, then the error line.
    Failing(Bytes),
    Done,
}

impl NdjsonGuard {
    /// Guards `inner` with `rules`; `request_trace_id` is the request's trace id;
    /// `connection` is the upstream connection the response came on (to poison it on a
    /// violation).
    pub fn new(
        inner: Incoming,
        rules: Arc<StreamRules>,
        request_trace_id: Arc<str>,
        mode: Mode,
        connection: Option<PoisonConnection>,
    ) -> Self {
        Self {
            inner: Some(Box::pin(inner)),
            validator: Validator::new(rules, Some(request_trace_id.to_string())),
            request_trace_id,
            state: State::Streaming,
            violation: None,
            reported: false,
            mode,
            connection,
        }
    }

    /// A stream that cannot be checked at all (it is compressed): enforcing, only the error
    /// line is sent (and the upstream connection dropped); observing, everything passes and
    /// the violation is recorded.
    pub fn refuse_from_start(&mut self, v: Violation) {
        match self.mode {
            Mode::Enforce => self.fail(v, Bytes::new()),
            Mode::Observe => self.observe(v),
        }
    }

    /// The violation, the first time it is asked for after it happened (so it is recorded
    /// exactly once).
    pub fn take_new_violation(&mut self) -> Option<Violation> {
        match (self.violation, self.reported) {
            (Some(v), false) => {
                self.reported = true;
                Some(v)
            }
            _ => None,
        }
    }

    /// Poisons the upstream connection: it is dropped instead of reused, also when the
    /// response had already been read to its end.
    fn poison(&self) {
        if let Some(poison) = &self.connection {
            poison();
        }
    }

    /// Dry-run: the first violation is recorded; nothing is cut.
    fn observe(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    fn fail(&mut self, v: Violation, before: Bytes) {
        // Drop the upstream body now: hyper then discards the connection instead of pooling
        // a connection whose response was not read to the end; and poison it, for the
        // violations found once the response was complete.
        self.poison();
        self.inner = None;
        self.violation = Some(v);
        let trace = if self.request_trace_id.is_empty() {
            self.validator.trace_id().unwrap_or("").to_owned()
        } else {
            self.request_trace_id.to_string()
        };
        let line = error_line(&trace, v);
        let mut out = BytesMut::with_capacity(before.len() + line.len());
        out.extend_from_slice(&before);
        out.extend_from_slice(&line);
        self.state = State::Failing(out.freeze());
    }

    /// Dry-run: every frame passes unchanged; the validator sees a copy (a reference count,
    /// not the bytes) until the first violation.
    fn observe_frame(
        &mut self,
        polled: Poll<Option<Result<Frame<Bytes>, hyper::Error>>>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if self.violation.is_none()
                    && let Some(data) = frame.data_ref()
                    && let Err(v) = self.validator.push(data.clone())
                {
                    self.observe(v);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.observe(Violation::UpstreamError);
                self.inner = None;
                self.state = State::Done;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if self.violation.is_none()
                    && let Err(v) = self.validator.finish()
                {
                    self.observe(v);
                }
                self.inner = None;
                self.state = State::Done;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Body for NdjsonGuard {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Failing(last) => return Poll::Ready(Some(Ok(Frame::data(last)))),
                State::Streaming => {}
            }
            this.state = State::Streaming;
            let Some(inner) = this.inner.as_mut() else {
                this.state = State::Done;
                continue;
            };
            let polled = inner.as_mut().poll_frame(cx);
            if this.mode == Mode::Observe {
                return this.observe_frame(polled);
            }
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.validator.push(data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(v) => {
                            let before = this.validator.take_before_violation();
                            this.fail(v, before);
                        }
                    },
                    // Trailers pass through unchanged.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => {
                    debug!(error = %e, "upstream body failed mid-stream");
                    this.fail(Violation::UpstreamError, Bytes::new());
                }
                Poll::Ready(None) => match this.validator.finish() {
                    Ok(tail) => {
                        this.inner = None;
                        this.state = State::Done;
                        // A last line without a newline is a complete line.
                        if !tail.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(tail))));
                        }
                    }
                    Err(v) => this.fail(v, Bytes::new()),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        // The guard may cut the body short or add the error line.
        SizeHint::default()
    }
}

/// Whether a response content type is NDJSON (`application/x-ndjson`, `application/ndjson`,
/// `application/jsonl`, with or without parameters).
pub fn is_ndjson(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    [
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
    ]
    .iter()
    .any(|t| essence.eq_ignore_ascii_case(t))
}
