//! What a request records for its trace: the sampling decision (the policy's sampler over a
//! trusted parent's flag, which sets the `traceparent` flag sent upstream) and — when the
//! request is sampled and OTLP export is on — the instants of its authentication and upstream
//! call. At completion that becomes a [`Finished`] handed to the exporter's bounded queue
//! (`crate::telemetry`), which builds and sends the spans on its own task.
//!
//! The request path only ever does cheap, non-blocking work here: a request that is not
//! recorded reads no clock and allocates nothing; a recorded one boxes its recording once and
//! copies a few short strings (the path bounded); the hand-off is a `try_send` (a full queue
//! drops and counts).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::context::{Canonical, RequestContext};
use crate::state::AppState;
use crate::telemetry::{Exporter, Finished};

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
        result: &Result<super::decide::Step, crate::error::Rejection>,
    ) {
        if matches!(result, Ok(super::decide::Step::Skip(_))) {
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
/// here (the request id, the route pattern, a rewritten path: small and bounded); the spans
/// are built by the export task.
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
        Some(took) => (at(s), at(s.checked_add(took).unwrap_or(end)), false),
        None => (at(s), at(end), true),
    });
    let route = ctx.route();
    rec.exporter.submit(Finished {
        trace_id: crate::telemetry::hex16(ctx.ids.trace_id()),
        span_id: crate::telemetry::hex8(ctx.ids.span_id()),
        parent_span_id: ctx.ids.parent_span_id().map(crate::telemetry::hex8),
        request_id: ctx.ids.request_id().into(),
        route_name: ctx.snapshot.route_metrics(ctx.route).name().clone(),
        route_pattern: route.map(|r| r.pattern.as_str().into()),
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
    wall_start
        .checked_add(offset)
        .unwrap_or(wall_start)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

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
