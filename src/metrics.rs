//! Prometheus metrics owned by one fortress instance (no global registry, so tests can run
//! several fortresses in one process). Every name is prefixed `fortress_`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use http::Method;
use strum::IntoEnumIterator;

use crate::error::{AuthError, TransportError};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics of one instance, with fixed-label handles resolved up front.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    upstream_latency: Histogram,
    upstream_errors: IntCounterVec,
    /// `fortress_policy_reload_total{result="ok"}`.
    pub reload_ok: IntCounter,
    /// `fortress_policy_reload_total{result="error"}`.
    pub reload_error: IntCounter,
    policy_info: IntGaugeVec,
    /// `fortress_open_connections`.
    pub open_connections: IntGauge,
    /// `fortress_connections_rejected_total` (connection cap reached).
    pub connections_rejected: IntCounter,
    /// `fortress_tls_handshake_errors_total` (failures and timeouts).
    pub tls_handshake_errors: IntCounter,
    /// `fortress_client_body_errors_total`: client request bodies whose framing broke while
    /// they were forwarded (answered 400 `malformed_body`; not upstream errors).
    pub client_body_errors: IntCounter,
    /// `fortress_tls_cert_reload_total{result="ok"}`.
    pub cert_reload_ok: IntCounter,
    /// `fortress_tls_cert_reload_total{result="error"}`.
    pub cert_reload_error: IntCounter,
    auth_failures: Vec<IntCounter>,
    transport_refusals: Vec<IntCounter>,
    stream_violations: IntCounterVec,
    stream_unchecked: IntCounterVec,
    scrubbed_errors: IntCounterVec,
    budget_warnings: IntCounterVec,
    unmatched: Arc<RouteMetrics>,
    class_in_flight: IntGaugeVec,
    class_queued: IntGaugeVec,
    refusals: IntCounterVec,
    /// Route handles by name, so a reload that keeps a route keeps its handles.
    routes: Arc<Mutex<HashMap<Arc<str>, Arc<RouteMetrics>>>>,
}

/// The request metrics of one route, resolved on first use: a request costs an index and an
/// atomic add, not a label hash and a lock.
pub struct RouteMetrics {
    name: Arc<str>,
    latency: Histogram,
    requests: IntCounterVec,
    counters: Vec<OnceLock<IntCounter>>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("name", &self.name)
            .finish()
    }
}

impl RouteMetrics {
    fn new(name: Arc<str>, requests: &IntCounterVec, latency: &HistogramVec) -> Self {
        let slots = METHOD_LABELS.len() * STATUS_LABELS.len() * DECISIONS.len() * MODES.len();
        Self {
            latency: latency.with_label_values(&[&name]),
            requests: requests.clone(),
            counters: (0..slots).map(|_| OnceLock::new()).collect(),
            name,
        }
    }

    /// The route's name (the metrics label).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Records a finished request (`status` is `None` when no response was sent).
    pub fn observe(
        &self,
        method: &Method,
        status: Option<u16>,
        decision: &str,
        dry_run: bool,
        seconds: f64,
    ) {
        let m = method_index(method);
        let s = status_index(status);
        let d = DECISIONS
            .iter()
            .position(|x| *x == decision)
            .unwrap_or(DECISIONS.len() - 1);
        let md = usize::from(dry_run);
        let idx = ((m * STATUS_LABELS.len() + s) * DECISIONS.len() + d) * MODES.len() + md;
        if let Some(slot) = self.counters.get(idx) {
            slot.get_or_init(|| {
                let label =
                    |list: &[&'static str], i: usize| list.get(i).copied().unwrap_or("other");
                self.requests.with_label_values(&[
                    &*self.name,
                    label(&METHOD_LABELS, m),
                    label(&STATUS_LABELS, s),
                    label(&DECISIONS, d),
                    label(&MODES, md),
                ])
            })
            .inc();
        }
        self.latency.observe(seconds);
    }
}

impl Metrics {
    /// Builds the registry and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("fortress".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests by route, method, status class, decision and mode.",
            ),
            &["route", "method", "status", "decision", "mode"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request received to response body finished, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_latency = Histogram::with_opts(
            HistogramOpts::new(
                "upstream_response_seconds",
                "Time from forwarding a request to the upstream's response headers.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("upstream_errors_total", "Upstream failures by kind."),
            &["kind"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new("policy_reload_total", "Config/policy reloads by result."),
            &["result"],
        )?;
        let policy_info = IntGaugeVec::new(
            Opts::new("policy_info", "The active policy; value 1, `hash` label."),
            &["hash"],
        )?;
        let open_connections =
            IntGauge::new("open_connections", "Client connections currently open.")?;
        let connections_rejected = IntCounter::new(
            "connections_rejected_total",
            "Client connections closed at once because max_connections was reached.",
        )?;
        let tls_handshake_errors = IntCounter::new(
            "tls_handshake_errors_total",
            "TLS handshakes that failed or timed out.",
        )?;
        let client_body_errors = IntCounter::new(
            "client_body_errors_total",
            "Client request bodies with broken framing (bad chunk, cut short) while forwarded.",
        )?;
        let cert_reloads = IntCounterVec::new(
            Opts::new("tls_cert_reload_total", "Certificate reloads by result."),
            &["result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(upstream_latency.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(policy_info.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        registry.register(Box::new(connections_rejected.clone()))?;
        registry.register(Box::new(tls_handshake_errors.clone()))?;
        registry.register(Box::new(client_body_errors.clone()))?;
        registry.register(Box::new(cert_reloads.clone()))?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "Requests refused by authentication, by reason.",
            ),
            &["reason"],
        )?;
        let transport_refusals = IntCounterVec::new(
            Opts::new(
                "transport_refusals_total",
                "Requests refused by the transport rules (HTTPS, forwarded proto), by reason.",
            ),
            &["reason"],
        )?;
        let stream_violations = IntCounterVec::new(
            Opts::new(
                "stream_violations_total",
                "NDJSON responses ended by a stream integrity violation, by route and reason.",
            ),
            &["route", "reason"],
        )?;
        let stream_unchecked = IntCounterVec::new(
            Opts::new(
                "stream_unchecked_total",
                "Responses on stream routes passed through unchecked (non-2xx or not NDJSON).",
            ),
            &["route", "reason"],
        )?;
        let class_in_flight = IntGaugeVec::new(
            Opts::new(
                "class_in_flight",
                "Requests holding a permit of a concurrency class, by class.",
            ),
            &["class"],
        )?;
        let class_queued = IntGaugeVec::new(
            Opts::new(
                "class_queued",
                "Requests waiting in a concurrency class's queue, by class.",
            ),
            &["class"],
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "refusals_total",
                "Requests refused (or, on dry-run routes, recorded as refused), by route and \
                 detailed reason.",
            ),
            &["route", "reason"],
        )?;
        registry.register(Box::new(class_in_flight.clone()))?;
        registry.register(Box::new(class_queued.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(stream_violations.clone()))?;
        registry.register(Box::new(stream_unchecked.clone()))?;
        let scrubbed_errors = IntCounterVec::new(
            Opts::new(
                "scrubbed_errors_total",
                "Upstream 5xx responses whose body was replaced (scrub_errors), by route.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(scrubbed_errors.clone()))?;
        let budget_warnings = IntCounterVec::new(
            Opts::new(
                "budget_warnings_total",
                "Tenant budgets that crossed their warn_at threshold, by period (once per tenant and period).",
            ),
            &["period"],
        )?;
        registry.register(Box::new(budget_warnings.clone()))?;
        for p in ["daily", "monthly"] {
            budget_warnings.with_label_values(&[p]);
        }
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(transport_refusals.clone()))?;
        // Every reason is registered up front (series at 0), indexed by the variant.
        let auth_failures = AuthError::iter()
            .map(|e| auth_failures.with_label_values(&[e.code()]))
            .collect();
        let transport_refusals = TransportError::iter()
            .map(|e| transport_refusals.with_label_values(&[e.code()]))
            .collect();
        for kind in UPSTREAM_ERROR_KINDS {
            upstream_errors.with_label_values(&[kind]);
        }
        let unmatched = Arc::new(RouteMetrics::new(Arc::from(UNMATCHED), &requests, &latency));
        Ok(Self {
            unmatched,
            class_in_flight,
            class_queued,
            refusals,
            routes: Arc::default(),
            reload_ok: reloads.with_label_values(&["ok"]),
            reload_error: reloads.with_label_values(&["error"]),
            cert_reload_ok: cert_reloads.with_label_values(&["ok"]),
            cert_reload_error: cert_reloads.with_label_values(&["error"]),
            registry,
            requests,
            latency,
            upstream_latency,
            upstream_errors,
            policy_info,
            open_connections,
            connections_rejected,
            tls_handshake_errors,
            client_body_errors,
            auth_failures,
            transport_refusals,
            stream_violations,
            stream_unchecked,
            scrubbed_errors,
            budget_warnings,
        })
    }

    /// Counts an upstream 5xx whose body was scrubbed.
    pub fn scrubbed_error(&self, route: &str) {
        self.scrubbed_errors.with_label_values(&[route]).inc();
    }

    /// Counts a tenant budget crossing its warning threshold.
    pub fn budget_warning(&self, period: &str) {
        self.budget_warnings.with_label_values(&[period]).inc();
    }

    /// Counts a stream integrity violation.
    pub fn stream_violation(&self, route: &str, reason: &str) {
        self.stream_violations
            .with_label_values(&[route, reason])
            .inc();
    }

    /// Counts a response on a stream route passed through unchecked (`status`, `content_type`).
    pub fn stream_unchecked(&self, route: &str, reason: &str) {
        self.stream_unchecked
            .with_label_values(&[route, reason])
            .inc();
    }

    /// Counts an authentication failure by its detailed reason.
    pub fn auth_failure(&self, e: AuthError) {
        if let Some(c) = self.auth_failures.get(e as usize) {
            c.inc();
        }
    }

    /// The in-flight and queued gauges of a concurrency class (the same handles for the same
    /// name; class names come from the config, so the label set is bounded).
    pub fn class_gauges(&self, class: &str) -> crate::store::classes::ClassGauges {
        crate::store::classes::ClassGauges {
            in_flight: self.class_in_flight.with_label_values(&[class]),
            queued: self.class_queued.with_label_values(&[class]),
        }
    }

    /// Counts a refusal by route and detailed reason (both bounded: route names come from the
    /// config, reasons are fixed codes).
    pub fn refusal(&self, route: &str, reason: &str) {
        self.refusals.with_label_values(&[route, reason]).inc();
    }

    /// Counts a transport refusal.
    pub fn transport_refusal(&self, e: TransportError) {
        if let Some(c) = self.transport_refusals.get(e as usize) {
            c.inc();
        }
    }

    /// The request metrics of a route, resolved when a policy is installed (the same handles
    /// for the same route name across reloads).
    pub fn route(&self, name: Arc<str>) -> Arc<RouteMetrics> {
        // A poisoned lock only means an install panicked; the map is still valid.
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(name.clone())
            .or_insert_with(|| Arc::new(RouteMetrics::new(name, &self.requests, &self.latency)))
            .clone()
    }

    /// The request metrics of requests that matched no route (route label `-`).
    pub fn unmatched(&self) -> &Arc<RouteMetrics> {
        &self.unmatched
    }

    /// Records the upstream's time to response headers.
    pub fn observe_upstream(&self, seconds: f64) {
        self.upstream_latency.observe(seconds);
    }

    /// Counts an upstream failure (`connect`, `timeout`, `protocol`).
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.with_label_values(&[kind]).inc();
    }

    /// Marks `hash` as the active policy.
    pub fn set_policy(&self, hash: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[hash]).set(1);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec only fails on metric families that break the format, which the
        // types above cannot produce; an empty answer would be visible to the scraper.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }
}

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

fn status_index(s: Option<u16>) -> usize {
    match s {
        Some(100..=199) => 0,
        Some(200..=299) => 1,
        Some(300..=399) => 2,
        Some(400..=499) => 3,
        Some(_) => 4,
        None => 5,
    }
}

/// Route label for requests that matched no route.
pub const UNMATCHED: &str = "-";
const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "OTHER",
];
/// Status classes; `none` for requests that ended before a response was sent (aborted).
const STATUS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];
const DECISIONS: [&str; 5] = ["allow", "deny", "dry_run_deny", "error", "aborted"];
const MODES: [&str; 2] = ["enforce", "dry_run"];
const UPSTREAM_ERROR_KINDS: [&str; 3] = ["connect", "timeout", "protocol"];
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
