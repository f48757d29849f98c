//! Traces: the sampling decision of each request, and — when OTLP export is on — one server
//! span per sampled request with child spans for authentication and the upstream call,
//! exported as OTLP/HTTP JSON by a background task (`export.rs`).
//!
//! The request path only ever does cheap, non-blocking work here: a sampled request records
//! a few instants in its context, and when the context completes its spans are handed to a
//! bounded queue with `try_send` (a full queue drops them and counts the drop). Nothing on
//! the request path waits on the collector.
//!
//! Span ids: the server span's id is the span id fortress already forwards upstream as the
//! parent in `traceparent` and returns in `traceresponse`, so the app's spans hang under
//! fortress's server span. Its parent is the trusted peer's `traceparent` parent id, if any.

mod export;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use export::{Exporter, ExporterStats};

use crate::pipeline::context::{Canonical, RequestContext};
use crate::pipeline::ids::Ids;
use crate::state::{AppState, Snapshot};

/// What a sampled, exported request records on its way (boxed in the context only then).
#[derive(Debug, Default)]
pub struct Recorder(Option<Box<Recording>>);

#[derive(Debug)]
struct Recording {
    exporter: Arc<Exporter>,
    /// Wall time at the context's `timings.start` (OTLP wants Unix nanoseconds).
    wall_start: SystemTime,
    /// The request's own path (the canonical one when normalization rewrote it is in the
    /// context).
    path: Box<str>,
    authn: Option<(Instant, Instant)>,
    upstream_start: Option<Instant>,
}

impl Recorder {
    /// Now, when this request is being recorded (else `None`: nothing to time).
    pub fn now(&self) -> Option<Instant> {
        self.0.as_ref().map(|_| Instant::now())
    }

    /// Authentication ran from `started` (from [`Recorder::now`]) until now (a check that
    /// skipped, on a public route, is no span).
    pub fn authn(
        &mut self,
        started: Option<Instant>,
        result: &Result<crate::pipeline::decide::Step, crate::error::Rejection>,
    ) {
        if matches!(result, Ok(crate::pipeline::decide::Step::Skip(_))) {
            return;
        }
        if let (Some(r), Some(s)) = (self.0.as_mut(), started) {
            r.authn = Some((s, Instant::now()));
        }
    }

    /// The upstream request was sent at `sent` (its end is the context's upstream timing, or
    /// the completion when the upstream never answered).
    pub fn upstream_started(&mut self, sent: Instant) {
        if let Some(r) = self.0.as_mut() {
            r.upstream_start = Some(sent);
        }
    }
}

/// The sampling decision for a new request (the policy's sampler over the trusted parent's
/// flag), and the start of its recording when it is sampled and export is on.
pub fn begin(state: &AppState, ctx: &mut RequestContext, path: &str) {
    let sampler = ctx.snapshot.policy.telemetry.sampler;
    let sampled = sampler.sample(ctx.ids.trace_id(), ctx.ids.parent_sampled());
    ctx.ids.set_sampled(sampled);
    if let (true, Some(exporter)) = (sampled, &state.telemetry) {
        // The wall clock at the context's start instant (a few nanoseconds off at most).
        let wall_start = SystemTime::now()
            .checked_sub(ctx.timings.start.elapsed())
            .unwrap_or_else(SystemTime::now);
        ctx.trace = Recorder(Some(Box::new(Recording {
            exporter: exporter.clone(),
            wall_start,
            path: bounded(path).into(),
            authn: None,
            upstream_start: None,
        })));
    }
}

/// The completion: what the request's spans need goes to the export queue (or is dropped and
/// counted when it is full). Called once, from the context's completion record. Only copies
/// here (no allocation beyond a rewritten path); the spans are built by the export task.
pub fn finish(ctx: &mut RequestContext) {
    let Some(rec) = ctx.trace.0.take() else {
        return;
    };
    let rec = *rec;
    let end = Instant::now();
    let start = ctx.timings.start;
    let at = |i: Instant| unix_nanos(rec.wall_start, i.saturating_duration_since(start));
    let path = match &ctx.canonical {
        Canonical::Rewritten(p) => Some(bounded(p).into()),
        Canonical::AsSent => Some(rec.path),
        Canonical::Unknown => None,
    };
    let rejection = ctx.outcome.rejection();
    let authn = rec.authn.map(|(s, e)| {
        let failed = matches!(rejection, Some(crate::error::Rejection::Unauthenticated(_)));
        (at(s), at(e), failed)
    });
    let upstream = rec.upstream_start.map(|s| match ctx.timings.upstream {
        Some(took) => (at(s), at(s + took), false),
        None => (at(s), at(end), true),
    });
    rec.exporter.submit(Finished {
        ids: ctx.ids.clone(),
        snapshot: ctx.snapshot.clone(),
        route: ctx.route,
        method: ctx.method.clone(),
        path,
        status: ctx.status,
        decision: ctx.outcome.decision(),
        reason: rejection.map(crate::error::Rejection::reason),
        start: at(start),
        end: at(end),
        authn,
        upstream,
    });
}

/// A finished, sampled request: what its spans are built from (on the export task).
pub struct Finished {
    ids: Ids,
    /// Keeps the route table the request was judged by (names, patterns) until export.
    snapshot: Arc<Snapshot>,
    route: Option<usize>,
    method: http::Method,
    path: Option<Box<str>>,
    status: Option<u16>,
    decision: &'static str,
    reason: Option<&'static str>,
    start: u64,
    end: u64,
    /// Start, end, failed.
    authn: Option<(u64, u64, bool)>,
    /// Start, end (the response head, or the completion when none came), failed.
    upstream: Option<(u64, u64, bool)>,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finished")
            .field("trace_id", &self.ids.trace_id())
            .field("span_id", &self.ids.span_id())
            .finish_non_exhaustive()
    }
}

impl Finished {
    /// How many spans this request makes.
    fn span_count(&self) -> u64 {
        1 + u64::from(self.authn.is_some()) + u64::from(self.upstream.is_some())
    }

    /// The server span and its children.
    fn into_trace(self) -> export::Trace {
        let route = self
            .route
            .and_then(|i| self.snapshot.router.routes().get(i));
        let method = self.method.as_str();
        let name = match route {
            Some(r) => format!("{method} {}", r.pattern),
            None => method.to_owned(),
        };
        let server_span = export::hex8(self.ids.span_id());
        let mut attrs = vec![
            export::Attr::str("http.request.method", method),
            export::Attr::str("fortress.decision", self.decision),
            export::Attr::str("fortress.request_id", self.ids.request_id()),
            export::Attr::str(
                "fortress.route",
                self.snapshot.route_metrics(self.route).name(),
            ),
        ];
        if let Some(p) = &self.path {
            attrs.push(export::Attr::str("url.path", p));
        }
        if let Some(r) = route {
            attrs.push(export::Attr::str("http.route", &r.pattern));
        }
        if let Some(s) = self.status {
            attrs.push(export::Attr::int("http.response.status_code", i64::from(s)));
        }
        if let Some(r) = self.reason {
            attrs.push(export::Attr::str("fortress.reason", r));
        }
        let mut spans = Vec::with_capacity(3);
        // Server spans: 5xx (and no response at all) are errors; 4xx are the client's.
        spans.push(export::Span {
            span_id: server_span,
            parent_span_id: self.ids.parent_span_id().map(export::hex8),
            name,
            kind: export::Kind::Server,
            start: self.start,
            end: self.end,
            attrs,
            error: self.status.is_none_or(|s| s >= 500),
        });
        if let Some((start, end, error)) = self.authn {
            spans.push(export::Span {
                span_id: export::random_span_id(),
                parent_span_id: Some(server_span),
                name: "authenticate".to_owned(),
                kind: export::Kind::Internal,
                start,
                end,
                attrs: Vec::new(),
                error,
            });
        }
        if let Some((start, end, error)) = self.upstream {
            let mut attrs = vec![export::Attr::str("http.request.method", method)];
            if let Some(p) = &self.path {
                attrs.push(export::Attr::str("url.path", p));
            }
            spans.push(export::Span {
                span_id: export::random_span_id(),
                parent_span_id: Some(server_span),
                name: format!("{method} upstream"),
                kind: export::Kind::Client,
                start,
                end,
                attrs,
                error,
            });
        }
        export::Trace {
            trace_id: export::hex16(self.ids.trace_id()),
            spans,
        }
    }
}

/// At most [`MAX_PATH`] bytes of a path (cut at a character boundary): a queue of spans
/// waiting for a slow collector holds no more than that per request.
fn bounded(path: &str) -> &str {
    let mut end = path.len().min(MAX_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path.get(..end).unwrap_or_default()
}

/// The longest `url.path` exported.
pub const MAX_PATH: usize = 1024;

fn unix_nanos(wall_start: SystemTime, offset: std::time::Duration) -> u64 {
    (wall_start + offset)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Appends the export counters to the `/metrics` text (nothing when export is off):
/// `fortress_otlp_spans_total{result="exported"|"dropped"|"failed"}`.
pub fn render_metrics(exporter: Option<&Exporter>, out: &mut Vec<u8>) {
    let Some(e) = exporter else { return };
    let s = e.stats();
    let text = format!(
        "# HELP fortress_otlp_spans_total Spans by OTLP export result: exported, dropped (the \
         export queue was full), failed (the collector refused, was unreachable or timed out).\n\
         # TYPE fortress_otlp_spans_total counter\n\
         fortress_otlp_spans_total{{result=\"exported\"}} {}\n\
         fortress_otlp_spans_total{{result=\"dropped\"}} {}\n\
         fortress_otlp_spans_total{{result=\"failed\"}} {}\n",
        s.exported, s.dropped, s.failed
    );
    out.extend_from_slice(text.as_bytes());
}

/// How long shutdown waits for the last spans to be exported.
pub const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_paths_are_bounded() {
        assert_eq!(bounded("/a/b"), "/a/b");
        let long = "/".repeat(5000);
        assert_eq!(bounded(&long).len(), MAX_PATH);
        // A multi-byte character across the limit is left out whole.
        let mut s = "a".repeat(MAX_PATH - 1);
        s.push('é');
        assert_eq!(bounded(&s), "a".repeat(MAX_PATH - 1));
    }
}
