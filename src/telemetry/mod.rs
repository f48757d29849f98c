//! OTLP trace export: one server span per sampled request with child spans for
//! authentication and the upstream call, built from a [`Finished`] request (handed over by
//! `pipeline/trace.rs` at completion) and exported as OTLP/HTTP JSON by a background task
//! (`export.rs`). A leaf module: it knows nothing of the pipeline or the state.
//!
//! Span ids: the server span's id is the span id fortress already forwards upstream as the
//! parent in `traceparent` and returns in `traceresponse`, so the app's spans hang under
//! fortress's server span. Its parent is the trusted peer's `traceparent` parent id, if any.

mod export;

use std::sync::Arc;

pub use export::{Exporter, ExporterStats, hex8, hex16};

/// A finished, sampled request: what its spans are built from (on the export task). Plain
/// data: ids as lower-case hex, times as Unix nanoseconds.
pub struct Finished {
    /// Trace id.
    pub trace_id: [u8; 32],
    /// Fortress's span id (the server span).
    pub span_id: [u8; 16],
    /// The trusted peer's parent id.
    pub parent_span_id: Option<[u8; 16]>,
    /// The request id.
    pub request_id: Box<str>,
    /// The route name (metrics label).
    pub route_name: Arc<str>,
    /// The matched route's pattern.
    pub route_pattern: Option<Box<str>>,
    /// The method.
    pub method: http::Method,
    /// The canonical path (bounded), when known.
    pub path: Option<Box<str>>,
    /// The response status, when a response was sent.
    pub status: Option<u16>,
    /// `allow`, `deny`, …
    pub decision: &'static str,
    /// The detailed reason of a refusal or dry-run denial.
    pub reason: Option<&'static str>,
    /// Server span start.
    pub start: u64,
    /// Server span end.
    pub end: u64,
    /// Authentication: start, end, failed.
    pub authn: Option<(u64, u64, bool)>,
    /// The upstream call: start, end (the response head, or the completion when none came),
    /// failed.
    pub upstream: Option<(u64, u64, bool)>,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finished")
            .field("trace_id", &String::from_utf8_lossy(&self.trace_id))
            .field("span_id", &String::from_utf8_lossy(&self.span_id))
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
        let method = self.method.as_str();
        let name = match &self.route_pattern {
            Some(p) => format!("{method} {p}"),
            None => method.to_owned(),
        };
        let server_span = self.span_id;
        let mut attrs = vec![
            export::Attr::str("http.request.method", method),
            export::Attr::str("fortress.decision", self.decision),
            export::Attr::str("fortress.request_id", &self.request_id),
            export::Attr::str("fortress.route", &self.route_name),
        ];
        if let Some(p) = &self.path {
            attrs.push(export::Attr::str("url.path", p));
        }
        if let Some(p) = &self.route_pattern {
            attrs.push(export::Attr::str("http.route", p));
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
            parent_span_id: self.parent_span_id,
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
            trace_id: self.trace_id,
            spans,
        }
    }
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
