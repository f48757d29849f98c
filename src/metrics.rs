//! Prometheus metrics owned by one fortress instance (no global registry, so tests can run
//! several fortresses in one process). Every name is prefixed `fortress_`, except the
//! standard `process_*` metrics (`metrics/process.rs`).
//!
//! Two kinds: request-path metrics are prometheus handles resolved up front (an atomic add
//! per request); the state of other parts (the audit writer, JWKS, the serving certificate,
//! the process) is read at scrape time from what they publish ([`Metrics::attach_audit`],
//! [`Metrics::attach_jwks`], [`Metrics::attach_cert_expiry`]) and rendered by
//! `metrics/scrape.rs`: nothing on the hot path. `docs/observability.md` lists every metric.

mod process;
mod scrape;

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::Method;
use strum::IntoEnumIterator;

use crate::error::{AuthError, TransportError};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
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
    /// `fortress_policy_reload_total{result="ok"}` (also marks the reload successful, now).
    pub reload_ok: ReloadResult,
    /// `fortress_policy_reload_total{result="error"}` (also marks the last reload failed).
    pub reload_error: ReloadResult,
    reload_state: Arc<ReloadState>,
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
    ttfb: HistogramVec,
    /// What other parts publish, read at scrape time (set once, at startup).
    attached: Arc<scrape::Attached>,
    /// Route handles by name, so a reload that keeps a route keeps its handles.
    routes: Arc<Mutex<HashMap<Arc<str>, Arc<RouteMetrics>>>>,
}

/// The request metrics of one route, resolved on first use: a request costs an index and an
/// atomic add, not a label hash and a lock.
pub struct RouteMetrics {
    name: Arc<str>,
    latency: Histogram,
    ttfb: Histogram,
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
    fn new(
        name: Arc<str>,
        requests: &IntCounterVec,
        latency: &HistogramVec,
        ttfb: &HistogramVec,
    ) -> Self {
        let slots = METHOD_LABELS.len() * STATUS_LABELS.len() * DECISIONS.len() * MODES.len();
        Self {
            latency: latency.with_label_values(&[&name]),
            ttfb: ttfb.with_label_values(&[&name]),
            requests: requests.clone(),
            counters: (0..slots).map(|_| OnceLock::new()).collect(),
            name,
        }
    }

    /// The route's name (the metrics label).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Records the time to first byte: from the request head to the response head being
    /// ready (`fortress_request_ttfb_seconds`; a stream's duration does not count).
    pub fn response_head(&self, since_request: Duration) {
        self.ttfb.observe(since_request.as_secs_f64());
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
        let ttfb = HistogramVec::new(
            HistogramOpts::new(
                "request_ttfb_seconds",
                "Time from request received to response head ready (time to first byte), by route.",
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
        registry.register(Box::new(ttfb.clone()))?;
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
        let reload_state = Arc::new(ReloadState::register(&registry)?);
        let build_info = IntGaugeVec::new(
            Opts::new(
                "build_info",
                "Build information; value 1, labels `version` and `profile`.",
            ),
            &["version", "profile"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), profile])
            .set(1);
        let unmatched = Arc::new(RouteMetrics::new(
            Arc::from(UNMATCHED),
            &requests,
            &latency,
            &ttfb,
        ));
        Ok(Self {
            ttfb,
            attached: Arc::default(),
            unmatched,
            class_in_flight,
            class_queued,
            refusals,
            routes: Arc::default(),
            reload_ok: ReloadResult {
                counter: reloads.with_label_values(&["ok"]),
                ok: true,
                state: reload_state.clone(),
            },
            reload_error: ReloadResult {
                counter: reloads.with_label_values(&["error"]),
                ok: false,
                state: reload_state.clone(),
            },
            reload_state,
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
            .or_insert_with(|| {
                Arc::new(RouteMetrics::new(
                    name,
                    &self.requests,
                    &self.latency,
                    &self.ttfb,
                ))
            })
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

    /// Marks `hash` as the active policy (at startup and at every install): the last
    /// successful load is now.
    pub fn set_policy(&self, hash: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[hash]).set(1);
        self.reload_state.succeeded();
    }

    /// A reload found the file identical to the active config (a refused edit was
    /// reverted): the config on disk is enforced again, so the last reload counts as
    /// successful (not counted in `fortress_policy_reload_total`, no new success time).
    pub fn reload_matches_active(&self) {
        self.reload_state.successful.set(1);
    }

    /// Publishes the audit writer's counters (read at scrape time: queue depth, records
    /// written and refused, write errors, sink state, chain head). Once; later calls are
    /// ignored.
    pub fn attach_audit(&self, stats: Arc<crate::audit::AuditStats>) {
        let _already_attached = self.attached.audit.set(stats);
    }

    /// Publishes the shared state store's health (read at scrape time). Once.
    pub fn attach_store(&self, health: Arc<crate::store::redis::StoreHealth>) {
        let _already_attached = self.attached.store.set(health);
    }

    /// Publishes the number of upstream connections owned by client connections and of those
    /// parked (read at scrape time). Once.
    pub fn attach_upstream_owned(&self, counts: scrape::UpstreamCounts) {
        let _already_attached = self.attached.upstream_owned.set(counts);
    }

    /// Publishes the JWKS fetch counters and key-set age (read at scrape time). Once.
    pub fn attach_jwks(&self, stats: Arc<crate::auth::jwks::JwksStats>) {
        let _already_attached = self.attached.jwks.set(stats);
    }

    /// Publishes the serving certificate's `notAfter` (Unix seconds, 0 unknown), which the
    /// certificate store updates at every load and reload (read at scrape time). Once.
    pub fn attach_cert_expiry(&self, not_after: Arc<AtomicI64>) {
        let _already_attached = self.attached.cert_expiry.set(not_after);
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
            return out;
        }
        self.attached.render(&mut out);
        process::render(&mut out);
        out
    }
}

/// Records a request's time to first byte on its route: from `request_start` (the request
/// head) to now (its response head is ready). Called once per response by
/// `pipeline::handle`.
pub fn observe_ttfb(route: &RouteMetrics, request_start: std::time::Instant) {
    route.response_head(request_start.elapsed());
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
/// Request, TTFB and upstream latency buckets: 100 µs to 60 s.
const LATENCY_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The reload gauges: whether the last reload succeeded, and when one last did.
#[derive(Debug)]
struct ReloadState {
    successful: IntGauge,
    success_time: Gauge,
}

impl ReloadState {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let successful = IntGauge::new(
            "policy_last_reload_successful",
            "1 when the last config reload (or the startup load) succeeded, 0 when it was refused.",
        )?;
        let success_time = Gauge::new(
            "policy_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (startup or reload).",
        )?;
        registry.register(Box::new(successful.clone()))?;
        registry.register(Box::new(success_time.clone()))?;
        Ok(Self {
            successful,
            success_time,
        })
    }

    fn succeeded(&self) {
        self.successful.set(1);
        self.success_time.set(scrape::unix_now());
    }
}

/// One result of `fortress_policy_reload_total`: counting it also sets
/// `fortress_policy_last_reload_successful` (and, for `ok`, the success time).
#[derive(Debug, Clone)]
pub struct ReloadResult {
    counter: IntCounter,
    ok: bool,
    state: Arc<ReloadState>,
}

impl ReloadResult {
    /// Counts one reload with this result.
    pub fn inc(&self) {
        self.counter.inc();
        if self.ok {
            self.state.succeeded();
        } else {
            self.state.successful.set(0);
        }
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.counter.get()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::audit::AuditStats;
    use crate::auth::jwks::JwksStats;

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The value of the sample line `series` (name and labels exactly as rendered).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    /// The `# TYPE` of `name`.
    fn kind<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find_map(|l| {
            l.strip_prefix("# TYPE ")?
                .strip_prefix(name)?
                .strip_prefix(' ')
        })
    }

    fn metrics() -> Metrics {
        Metrics::new().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn audit_stats_are_rendered_at_scrape_time() {
        let m = metrics();
        let before = text(&m);
        assert_eq!(sample(&before, "fortress_audit_enabled"), Some(0.0));
        assert_eq!(sample(&before, "fortress_audit_queue_depth"), None);

        let stats = Arc::new(AuditStats::default());
        m.attach_audit(stats.clone());
        let t = text(&m);
        assert_eq!(sample(&t, "fortress_audit_enabled"), Some(1.0));
        assert_eq!(sample(&t, "fortress_audit_queue_depth"), Some(0.0));
        assert_eq!(
            sample(&t, "fortress_audit_records_written_total"),
            Some(0.0)
        );
        assert_eq!(sample(&t, "fortress_audit_write_errors_total"), Some(0.0));
        assert_eq!(
            sample(&t, "fortress_audit_records_refused_total"),
            Some(0.0)
        );
        assert_eq!(sample(&t, "fortress_audit_sink_up"), Some(1.0));
        assert_eq!(
            kind(&t, "fortress_audit_records_written_total"),
            Some("counter")
        );
        assert_eq!(kind(&t, "fortress_audit_queue_depth"), Some("gauge"));
        assert_eq!(
            sample(&t, "fortress_audit_chain_head_seq"),
            None,
            "no record yet: no anchor"
        );

        // What the writer publishes, read at the next scrape.
        stats.queued.store(7, Ordering::Relaxed);
        stats.written.store(41, Ordering::Relaxed);
        stats.write_errors.store(2, Ordering::Relaxed);
        stats.refused.store(3, Ordering::Relaxed);
        stats.failing.store(true, Ordering::Relaxed);
        let hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        *stats.head.lock().unwrap_or_else(|e| e.into_inner()) = (42, hash.into());
        let t = text(&m);
        assert_eq!(sample(&t, "fortress_audit_queue_depth"), Some(7.0));
        assert_eq!(
            sample(&t, "fortress_audit_records_written_total"),
            Some(41.0)
        );
        assert_eq!(sample(&t, "fortress_audit_write_errors_total"), Some(2.0));
        assert_eq!(
            sample(&t, "fortress_audit_records_refused_total"),
            Some(3.0)
        );
        assert_eq!(sample(&t, "fortress_audit_sink_up"), Some(0.0));
        assert_eq!(sample(&t, "fortress_audit_chain_head_seq"), Some(41.0));
        let prefix = sample(&t, "fortress_audit_chain_head_hash_prefix").expect("anchor");
        assert_eq!(prefix, 0x0000_1234_5678_9abc_u64 as f64);
        // Exact: the integer printed is the integer of the 13 hex digits.
        assert_eq!(format!("{:013x}", prefix as u64), &hash[..13]);
        // The largest prefix still round-trips through a float64.
        let max = scrape::hash_prefix("fffffffffffff").expect("hex");
        assert_eq!((max as f64) as u64, max);

        // A second attach is ignored (the first writer stays).
        m.attach_audit(Arc::new(AuditStats::default()));
        assert_eq!(
            sample(&text(&m), "fortress_audit_records_written_total"),
            Some(41.0)
        );
    }

    #[test]
    fn jwks_cert_build_and_reload_metrics() {
        let m = metrics();
        let t = text(&m);
        assert_eq!(
            sample(
                &t,
                &format!(
                    "fortress_build_info{{profile=\"{}\",version=\"{}\"}}",
                    if cfg!(debug_assertions) {
                        "debug"
                    } else {
                        "release"
                    },
                    env!("CARGO_PKG_VERSION")
                )
            ),
            Some(1.0),
            "{t}"
        );
        assert_eq!(sample(&t, "fortress_jwks_fetch_total{result=\"ok\"}"), None);
        assert_eq!(
            sample(&t, "fortress_tls_cert_expiry_timestamp_seconds"),
            None
        );

        let jwks = Arc::new(JwksStats::default());
        m.attach_jwks(jwks.clone());
        let t = text(&m);
        assert_eq!(
            sample(&t, "fortress_jwks_fetch_total{result=\"ok\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&t, "fortress_jwks_fetch_total{result=\"error\"}"),
            Some(0.0)
        );
        assert_eq!(sample(&t, "fortress_jwks_age_seconds"), None, "no set yet");
        jwks.fetch_ok.store(3, Ordering::Relaxed);
        jwks.fetch_error.store(1, Ordering::Relaxed);
        let hour_ago = (scrape::unix_now() as u64 - 3600) * 1000;
        jwks.last_ok_unix_ms.store(hour_ago, Ordering::Relaxed);
        let t = text(&m);
        assert_eq!(
            sample(&t, "fortress_jwks_fetch_total{result=\"ok\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(&t, "fortress_jwks_fetch_total{result=\"error\"}"),
            Some(1.0)
        );
        let age = sample(&t, "fortress_jwks_age_seconds").expect("age");
        assert!((3600.0..3700.0).contains(&age), "{age}");

        let expiry = Arc::new(AtomicI64::new(0));
        m.attach_cert_expiry(expiry.clone());
        assert_eq!(
            sample(&text(&m), "fortress_tls_cert_expiry_timestamp_seconds"),
            None,
            "unknown expiry: absent"
        );
        expiry.store(1_767_225_600, Ordering::Relaxed);
        assert_eq!(
            sample(&text(&m), "fortress_tls_cert_expiry_timestamp_seconds"),
            Some(1_767_225_600.0)
        );

        // Reloads: the startup load counts as a success; a refused reload flips the gauge.
        assert_eq!(
            sample(&t, "fortress_policy_last_reload_successful"),
            Some(0.0)
        );
        m.set_policy("abc");
        let t = text(&m);
        assert_eq!(
            sample(&t, "fortress_policy_last_reload_successful"),
            Some(1.0)
        );
        let at =
            sample(&t, "fortress_policy_last_reload_success_timestamp_seconds").expect("timestamp");
        assert!(at > 1.7e9, "{at}");
        m.reload_error.inc();
        let t = text(&m);
        assert_eq!(
            sample(&t, "fortress_policy_last_reload_successful"),
            Some(0.0)
        );
        assert_eq!(
            sample(&t, "fortress_policy_reload_total{result=\"error\"}"),
            Some(1.0)
        );
        m.reload_ok.inc();
        assert_eq!(
            sample(&text(&m), "fortress_policy_last_reload_successful"),
            Some(1.0)
        );
        assert_eq!(m.reload_ok.get(), 1);
    }

    #[test]
    fn latency_buckets_span_100us_to_60s_and_ttfb_is_per_route() {
        let m = metrics();
        let route = m.route(Arc::from("api"));
        route.response_head(Duration::from_micros(50));
        route.observe(&Method::GET, Some(200), "allow", false, 45.0);
        let t = text(&m);
        for name in [
            "fortress_request_duration_seconds",
            "fortress_request_ttfb_seconds",
        ] {
            assert_eq!(
                sample(&t, &format!("{name}_bucket{{route=\"api\",le=\"0.0001\"}}")),
                Some(if name.contains("ttfb") { 1.0 } else { 0.0 }),
                "{name}"
            );
            assert_eq!(
                sample(&t, &format!("{name}_bucket{{route=\"api\",le=\"60\"}}")),
                Some(1.0),
                "{name}"
            );
            assert_eq!(
                sample(&t, &format!("{name}_count{{route=\"api\"}}")),
                Some(1.0)
            );
        }
        assert_eq!(
            sample(
                &t,
                "fortress_request_duration_seconds_bucket{route=\"api\",le=\"30\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(&t, "fortress_upstream_response_seconds_bucket{le=\"60\"}"),
            Some(0.0)
        );
    }
}
