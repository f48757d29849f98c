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
use crate::state::AppState;

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
            path: path.into(),
            authn: None,
            upstream_start: None,
        })));
    }
}

/// The completion: the request's spans go to the export queue (or are dropped and counted
/// when it is full). Called once, from the context's completion record.
pub fn finish(ctx: &mut RequestContext) {
    let Some(rec) = ctx.trace.0.take() else {
        return;
    };
    let end = Instant::now();
    let start = ctx.timings.start;
    let at = |i: Instant| unix_nanos(rec.wall_start, i.saturating_duration_since(start));
    let route = ctx.route();
    let method = ctx.method.as_str();
    let name = match route {
        Some(r) => format!("{method} {}", r.pattern),
        None => method.to_owned(),
    };
    let path = match &ctx.canonical {
        Canonical::Rewritten(p) => Some(p.as_str()),
        Canonical::AsSent => Some(&*rec.path),
        Canonical::Unknown => None,
    };
    let rejection = ctx.outcome.rejection();
    let server_span = export::hex8(ctx.ids.span_id());
    let mut spans = Vec::with_capacity(3);
    let mut attrs = vec![
        export::Attr::str("http.request.method", method),
        export::Attr::str("fortress.decision", ctx.outcome.decision()),
        export::Attr::str("fortress.request_id", ctx.ids.request_id()),
        export::Attr::str(
            "fortress.route",
            ctx.snapshot.route_metrics(ctx.route).name(),
        ),
    ];
    if let Some(p) = path {
        attrs.push(export::Attr::str("url.path", p));
    }
    if let Some(r) = route {
        attrs.push(export::Attr::str("http.route", &r.pattern));
    }
    if let Some(s) = ctx.status {
        attrs.push(export::Attr::int("http.response.status_code", i64::from(s)));
    }
    if let Some(r) = rejection {
        attrs.push(export::Attr::str("fortress.reason", r.reason()));
    }
    // Server spans: 5xx (and no response at all) are errors; 4xx are the client's.
    let error = ctx.status.is_none_or(|s| s >= 500);
    spans.push(export::Span {
        span_id: server_span,
        parent_span_id: ctx.ids.parent_span_id().map(export::hex8),
        name,
        kind: export::Kind::Server,
        start: at(start),
        end: at(end),
        attrs,
        error,
    });
    if let Some((s, e)) = rec.authn {
        let failed = matches!(rejection, Some(crate::error::Rejection::Unauthenticated(_)));
        spans.push(export::Span {
            span_id: export::random_span_id(),
            parent_span_id: Some(server_span),
            name: "authenticate".to_owned(),
            kind: export::Kind::Internal,
            start: at(s),
            end: at(e),
            attrs: Vec::new(),
            error: failed,
        });
    }
    if let Some(s) = rec.upstream_start {
        let (e, error) = match ctx.timings.upstream {
            Some(took) => (s + took, false),
            None => (end, true),
        };
        let mut attrs = vec![export::Attr::str("http.request.method", method)];
        if let Some(p) = path {
            attrs.push(export::Attr::str("url.path", p));
        }
        spans.push(export::Span {
            span_id: export::random_span_id(),
            parent_span_id: Some(server_span),
            name: format!("{method} upstream"),
            kind: export::Kind::Client,
            start: at(s),
            end: at(e),
            attrs,
            error,
        });
    }
    rec.exporter.submit(export::Trace {
        trace_id: export::hex16(ctx.ids.trace_id()),
        spans,
    });
}

fn unix_nanos(wall_start: SystemTime, offset: std::time::Duration) -> u64 {
    (wall_start + offset)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// How long shutdown waits for the last spans to be exported.
pub const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);
