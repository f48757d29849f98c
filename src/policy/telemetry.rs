//! Trace sampling and OTLP export settings (`telemetry:` and the standard `OTEL_*` variables),
//! compiled. The exporter itself lives in `crate::telemetry`.

use std::time::Duration;

/// Which traces are sampled (recorded, exported, and `-01` upstream).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// A fraction of traces, decided from the trace id (so every hop that uses the same
    /// ratio agrees).
    TraceIdRatio(f64),
    /// A trusted peer's `sampled` flag decides; a new trace goes to the inner sampler.
    ParentBased(Root),
}

/// The sampler of a new trace under [`Sampler::ParentBased`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    /// Every new trace.
    AlwaysOn,
    /// No new trace.
    AlwaysOff,
    /// A fraction of new traces.
    TraceIdRatio(f64),
}

impl Default for Sampler {
    /// OpenTelemetry's default: `parentbased_always_on`.
    fn default() -> Self {
        Sampler::ParentBased(Root::AlwaysOn)
    }
}

impl Sampler {
    /// The decision for a trace (`trace_id`: 32 lower-case hex digits) whose trusted parent
    /// said `parent` (`None`: no trusted parent).
    pub fn sample(self, trace_id: &str, parent: Option<bool>) -> bool {
        match self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::TraceIdRatio(r) => ratio(trace_id, r),
            Sampler::ParentBased(root) => match (parent, root) {
                (Some(p), _) => p,
                (None, Root::AlwaysOn) => true,
                (None, Root::AlwaysOff) => false,
                (None, Root::TraceIdRatio(r)) => ratio(trace_id, r),
            },
        }
    }

    /// The `OTEL_TRACES_SAMPLER` name.
    pub fn name(self) -> &'static str {
        match self {
            Sampler::AlwaysOn => "always_on",
            Sampler::AlwaysOff => "always_off",
            Sampler::TraceIdRatio(_) => "traceidratio",
            Sampler::ParentBased(Root::AlwaysOn) => "parentbased_always_on",
            Sampler::ParentBased(Root::AlwaysOff) => "parentbased_always_off",
            Sampler::ParentBased(Root::TraceIdRatio(_)) => "parentbased_traceidratio",
        }
    }
}

/// The trace id's last 16 hex digits (its random part) as a 63-bit number, compared with
/// `ratio · 2⁶³`, as the OpenTelemetry SDKs do.
fn ratio(trace_id: &str, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    let low = trace_id
        .get(16..32)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
        >> 1;
    // 2^63 as f64 is exact; the product is below it.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bound = (ratio * 9_223_372_036_854_775_808.0) as u64;
    low < bound
}

/// Trace settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TelemetrySettings {
    /// Which traces are sampled.
    pub sampler: Sampler,
    /// OTLP export, when on.
    pub otlp: Option<OtlpSettings>,
}

/// Where and how spans are exported (OTLP/HTTP, JSON encoding).
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The full traces URL (`http://HOST:PORT/v1/traces`).
    pub endpoint: http::Uri,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Finished requests waiting for export at most; beyond, their spans are dropped (and
    /// counted).
    pub queue: usize,
    /// Requests per export call at most.
    pub batch: usize,
    /// How long a batch waits to fill before it is sent.
    pub delay: Duration,
    /// Bound of one export call (connect, send, answer).
    pub timeout: Duration,
}
