//! One [`RequestContext`] per request: everything fortress learns about a request on its way
//! through the checks and the proxy, and — when the response body ends, or the request is
//! dropped before that — the completion record that metrics and the access log line read
//! (and the audit record will).
//!
//! Nothing defaults to "allow": a context starts [`Outcome::Pending`], and a context dropped
//! before any response existed (the client reset the stream while fortress waited for the
//! upstream) is recorded as [`Outcome::Aborted`], with no status, even if the checks had
//! already allowed it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use serde_json::Value;

use super::conn::ConnInfo;
use super::ids::Ids;
use crate::auth::SharedPrincipal;
use crate::error::{Kind, Rejection};
use crate::metrics::Metrics;
use crate::policy::route::Route;
use crate::proxy::body::BodyEvents;
use crate::state::Snapshot;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided yet (the checks or the upstream are still running).
    Pending,
    /// Every check passed; forwarded.
    Allowed,
    /// A check would have refused, but the route runs in dry-run mode; forwarded.
    DryRunDenied(Rejection),
    /// Refused by the policy.
    Denied(Rejection),
    /// Fortress or the upstream failed (502/504).
    Failed(Rejection),
    /// The client went away before a response existed.
    Aborted,
}

impl Outcome {
    /// The `decision` label and log field.
    pub fn decision(self) -> &'static str {
        match self {
            Outcome::Allowed => "allow",
            Outcome::DryRunDenied(_) => "dry_run_deny",
            Outcome::Denied(_) => "deny",
            Outcome::Failed(_) => "error",
            Outcome::Pending | Outcome::Aborted => "aborted",
        }
    }

    /// The rejection behind a refusal, a failure or a dry-run denial.
    pub fn rejection(self) -> Option<Rejection> {
        match self {
            Outcome::DryRunDenied(r) | Outcome::Denied(r) | Outcome::Failed(r) => Some(r),
            Outcome::Pending | Outcome::Allowed | Outcome::Aborted => None,
        }
    }
}

/// The canonical path of a request, once normalized.
#[derive(Debug, Clone, Default)]
pub enum Canonical {
    /// Not normalized yet.
    #[default]
    Unknown,
    /// The request's own path already is canonical (the common case: no copy).
    AsSent,
    /// The canonical form differs from what was sent.
    Rewritten(String),
}

/// When things happened.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// The request arrived (its head was parsed).
    pub start: Instant,
    /// Time to the upstream's response head, once known.
    pub upstream: Option<Duration>,
}

pub use crate::policy::route::MAX_PARAMS_USED;

/// The tenant a request named, as the tenant check found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RequestedTenant {
    /// No tenant rule ran, or the request named none (missing, duplicated, undecodable).
    #[default]
    Unknown,
    /// The token's own tenant (the common case: nothing is copied).
    SameAsToken,
    /// Another tenant.
    Other(String),
}

impl RequestedTenant {
    /// The tenant, given the principal's.
    pub fn as_str<'a>(&'a self, token_tenant: Option<&'a str>) -> Option<&'a str> {
        match self {
            RequestedTenant::Unknown => None,
            RequestedTenant::SameAsToken => token_tenant,
            RequestedTenant::Other(t) => Some(t),
        }
    }
}

/// A concurrency-class permit held until the response body ends, or until the context is
/// dropped (the client went away): the context owns it, so both free it.
pub type Permit = crate::store::classes::ClassPermit;

/// Budget units charged to a key for this request (slot for traffic control).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The budget key (limit id and tenant).
    pub key: String,
    /// Units charged.
    pub units: u64,
}

/// Everything known about one request.
pub struct RequestContext {
    /// Request, trace and span ids.
    pub ids: Ids,
    /// The policy version this request is judged by, from start to end.
    pub snapshot: Arc<Snapshot>,
    /// The client connection.
    pub conn: Arc<ConnInfo>,
    /// The request method.
    pub method: Method,
    /// Whether the TCP peer is a trusted proxy.
    pub trusted: bool,
    /// The client's IP: the TCP peer, or behind a trusted proxy the right-most untrusted
    /// `X-Forwarded-For` address (IP allowlists, limits keyed by `ip`).
    pub client_ip: IpAddr,
    /// Whether the request counts as HTTPS (TLS, or vouched for by a trusted proxy).
    pub https: bool,
    /// The canonical path (matched and forwarded).
    pub canonical: Canonical,
    /// Index of the matched route in the snapshot's route table.
    pub route: Option<usize>,
    /// Where the path parameters a check reads (`Route::params_used`, same order) are in the
    /// canonical path: byte ranges, so routing copies nothing.
    pub params: [Option<(usize, usize)>; MAX_PARAMS_USED],
    /// The verified principal.
    pub principal: Option<SharedPrincipal>,
    /// The tenant the request named, when the route has a tenant rule.
    pub requested_tenant: RequestedTenant,
    /// A privilege that let the request through (e.g. `cross_tenant`).
    pub privileged: Option<&'static str>,
    /// Whether the route runs in dry-run mode.
    pub dry_run: bool,
    /// The decision so far.
    pub outcome: Outcome,
    /// The response status, once a response exists.
    pub status: Option<u16>,
    /// Timings.
    pub timings: Timings,
    /// Concurrency permits held until the response ends.
    pub permits: Vec<Permit>,
    /// A per-tenant concurrency lease taken in a shared store by admission, until the
    /// concurrency stage holds it with the class permit (dropped, it is given back).
    pub lease: Option<crate::store::classes::SharedLease>,
    /// Budget charges made for this request.
    pub charges: Vec<Charge>,
    /// What the admission stage decided (rate-limit states, a metered charge to make).
    pub admission: Option<Box<super::admission::Admitted>>,
    /// Now, in seconds since the epoch (token time checks).
    pub now: u64,
    /// Explain only: claims used instead of verifying a token.
    pub claims_override: Option<Value>,
    /// The request has no body (known from its framing when its head arrived).
    pub body_empty: bool,
    /// What the CORS stage found (`pipeline/cors.rs`).
    pub cors: super::cors::CorsMatch,
    /// The audit trail, when it is on (`pipeline/audit.rs`).
    pub audit: Option<Arc<crate::audit::Trail>>,
    /// The request target as sent (kept only when the audit trail is on).
    pub target: Option<http::uri::PathAndQuery>,
    /// The headers the decision reads (kept only when the audit trail is on; see
    /// `pipeline/audit.rs` `decision_headers`): shared handles on the request's own bytes,
    /// copied into the record only when one is written.
    pub audit_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Span timing of a sampled request when OTLP export is on (`pipeline/trace.rs`).
    pub trace: super::trace::Recorder,
    first_dry_run_denial: Option<Rejection>,
    stream_violation: Option<&'static str>,
    upstream_body_error: bool,
    metrics: Option<Arc<Metrics>>,
}

impl RequestContext {
    /// A new context for a request from `conn`; `metrics` is where it is recorded (`None`:
    /// not recorded, for `fortress explain` and benchmarks).
    pub fn new(
        snapshot: Arc<Snapshot>,
        conn: Arc<ConnInfo>,
        metrics: Option<Arc<Metrics>>,
        method: Method,
        headers: &HeaderMap,
    ) -> Self {
        conn.activity.request_started();
        let trusted = snapshot.server.is_trusted(conn.peer.ip());
        let client_ip = crate::proxy::headers::client_ip(
            headers,
            conn.peer.ip(),
            trusted,
            &snapshot.server.trusted_proxies,
        );
        let now = snapshot.clock.now_secs();
        Self {
            ids: Ids::for_request(headers, trusted),
            snapshot,
            conn,
            method,
            trusted,
            client_ip,
            https: false,
            canonical: Canonical::Unknown,
            route: None,
            params: [None; MAX_PARAMS_USED],
            principal: None,
            requested_tenant: RequestedTenant::Unknown,
            privileged: None,
            dry_run: false,
            outcome: Outcome::Pending,
            status: None,
            timings: Timings {
                start: Instant::now(),
                upstream: None,
            },
            permits: Vec::new(),
            lease: None,
            charges: Vec::new(),
            admission: None,
            now,
            claims_override: None,
            body_empty: super::limits::no_body_framing(headers),
            cors: super::cors::CorsMatch::None,
            audit: None,
            target: None,
            audit_headers: Vec::new(),
            trace: super::trace::Recorder::default(),
            first_dry_run_denial: None,
            stream_violation: None,
            upstream_body_error: false,
            metrics,
        }
    }

    /// The matched route.
    pub fn route(&self) -> Option<&Route> {
        self.route
            .and_then(|i| self.snapshot.router.routes().get(i))
    }

    /// The canonical path (`path` is the request's own path).
    pub fn canonical_path<'a>(&'a self, path: &'a str) -> Cow<'a, str> {
        match &self.canonical {
            Canonical::Rewritten(p) => Cow::Borrowed(p.as_str()),
            Canonical::AsSent | Canonical::Unknown => Cow::Borrowed(path),
        }
    }

    /// A path parameter the route declared it reads (`path` is the request's own path).
    pub fn param<'a>(&'a self, name: &str, path: &'a str) -> Option<&'a str> {
        let i = self.route()?.params_used.iter().position(|n| n == name)?;
        let (start, end) = (*self.params.get(i)?)?;
        match &self.canonical {
            Canonical::Rewritten(p) => p.get(start..end),
            Canonical::AsSent | Canonical::Unknown => path.get(start..end),
        }
    }

    /// Upstream response timeout: the route's, else the server default.
    pub fn upstream_timeout(&self) -> Duration {
        self.route()
            .map_or(self.snapshot.server.timeouts.upstream_response, |r| {
                r.upstream_timeout
            })
    }

    /// A check refused the request in dry-run mode: the first such refusal is the one
    /// recorded; the request goes on.
    pub fn dry_run_refusal(&mut self, r: Rejection) {
        self.count_refusal(r);
        self.first_dry_run_denial.get_or_insert(r);
    }

    /// The first dry-run refusal, if any.
    pub fn dry_run_denial(&self) -> Option<Rejection> {
        self.first_dry_run_denial
    }

    /// Every check passed (or, in dry-run mode, was recorded): the request is forwarded.
    pub fn allow(&mut self) {
        self.outcome = match self.first_dry_run_denial {
            Some(r) => Outcome::DryRunDenied(r),
            None => Outcome::Allowed,
        };
    }

    /// The request is refused or failed with `r` (deny or error, by the status table).
    pub fn refuse(&mut self, r: Rejection) {
        // Counted once: before forwarding every refusal; after it (the request was allowed,
        // then its body broke a limit) only policy refusals, not upstream failures.
        let counted = match self.outcome {
            Outcome::Pending => true,
            Outcome::Allowed | Outcome::DryRunDenied(_) => r.kind() == Kind::Deny,
            Outcome::Denied(_) | Outcome::Failed(_) | Outcome::Aborted => false,
        };
        if counted {
            self.count_refusal(r);
        }
        self.outcome = match r.kind() {
            Kind::Deny => Outcome::Denied(r),
            Kind::Error => Outcome::Failed(r),
        };
    }

    /// The response's audit record could not be written: the response becomes 503
    /// `audit_unavailable` (counted whatever was decided before).
    pub fn audit_failed(&mut self) {
        self.count_refusal(Rejection::AuditUnavailable);
        self.outcome = Outcome::Failed(Rejection::AuditUnavailable);
    }

    /// Counts a refusal by its detailed reason, now (not at completion), so a client that
    /// reads the refusal already sees it counted.
    fn count_refusal(&self, r: Rejection) {
        let Some(m) = &self.metrics else { return };
        m.refusal(self.route_name(), r.reason());
        match r {
            Rejection::Unauthenticated(e) => m.auth_failure(e),
            Rejection::RejectTransport(e) => m.transport_refusal(e),
            _ => {}
        }
    }

    /// Where this request is recorded (`None` for explain and benchmarks).
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Records the upstream's time to response head.
    pub fn upstream_answered(&mut self, took: Duration) {
        self.timings.upstream = Some(took);
    }

    fn route_name(&self) -> &str {
        self.snapshot.route_metrics(self.route).name()
    }
}

impl BodyEvents for RequestContext {
    fn stream_violation(&mut self, reason: &'static str) {
        self.stream_violation = Some(reason);
        super::audit::event(self, crate::audit::Event::StreamViolation, Some(reason));
        if let Some(m) = &self.metrics {
            m.stream_violation(self.route_name(), reason);
        }
        if self.dry_run {
            tracing::warn!(
                request.id = %self.ids.request_id(),
                trace.id = %self.ids.trace_id(),
                route.name = self.route_name(),
                reason,
                mode = "dry_run",
                "stream integrity violation; dry-run: the stream was forwarded unchanged"
            );
        } else {
            tracing::warn!(
                request.id = %self.ids.request_id(),
                trace.id = %self.ids.trace_id(),
                route.name = self.route_name(),
                reason,
                mode = "enforce",
                "stream integrity violation; stream ended with an error line"
            );
        }
    }

    fn upstream_body_error(&mut self) {
        self.upstream_body_error = true;
    }

    fn trailers(&mut self, trailers: &mut HeaderMap) {
        // A metered budget route whose app reports its cost at the end of a streamed response.
        let Some(m) = self.admission.as_mut().and_then(|a| a.metered.as_mut()) else {
            return;
        };
        let now = self.snapshot.clock.now_ms();
        let route = self.snapshot.route_metrics(self.route).name().clone();
        let mut crossed = Vec::new();
        let warning = super::admission::charge_metered(
            &self.snapshot.store,
            self.metrics.as_ref(),
            &route,
            now,
            m,
            trailers,
            &mut crossed,
        );
        super::admission::audit_crossings(self, &crossed);
        if let Some(v) = warning.and_then(|w| http::HeaderValue::from_str(&w).ok()) {
            trailers.insert(super::admission::X_BUDGET_WARNING, v);
        }
    }
}

impl Drop for RequestContext {
    /// The completion record: metrics and the access log line, once.
    fn drop(&mut self) {
        // No response was ever sent (the handler was dropped: the client reset the stream or
        // closed the connection while the checks or the upstream were still running): the
        // request was aborted, whatever the checks had decided so far.
        if self.status.is_none() {
            self.outcome = Outcome::Aborted;
            // `include: [all]`: an aborted request is recorded too (nobody waits for it; a
            // request with a status had its record submitted at its response head).
            super::audit::event(self, crate::audit::Event::Request, None);
        }
        self.conn.activity.request_finished();
        super::trace::finish(self);
        let Some(metrics) = self.metrics.take() else {
            return;
        };
        let elapsed = self.timings.start.elapsed();
        let route_metrics = self.snapshot.route_metrics(self.route);
        let decision = self.outcome.decision();
        route_metrics.observe(
            &self.method,
            self.status,
            decision,
            self.dry_run,
            elapsed.as_secs_f64(),
        );
        if self.upstream_body_error {
            metrics.upstream_error("protocol");
        }
        let reason = self.outcome.rejection().map_or("", Rejection::reason);
        let mode = if self.dry_run { "dry_run" } else { "enforce" };
        // Allowed requests log at debug (a line per request costs throughput); refusals,
        // dry-run denials, errors, aborts and privileged passes log at info.
        let notable = self.outcome != Outcome::Allowed
            || self.privileged.is_some()
            || self.upstream_body_error
            || self.stream_violation.is_some();
        // Who asked, on every line (refusals included): the subject and tenant of a verified
        // token, and the tenant the request named (tenant refusals say whose data was asked for).
        let own_tenant = self.principal.as_ref().and_then(|p| p.tenant.as_deref());
        macro_rules! access_log {
            ($level:ident) => {
                tracing::$level!(
                    request.id = %self.ids.request_id(),
                    trace.id = %self.ids.trace_id(),
                    route.name = &**route_metrics.name(),
                    http.method = %self.method,
                    http.status = self.status.unwrap_or(0),
                    decision,
                    reason,
                    mode,
                    subject = self.principal.as_ref().map_or("", |p| p.subject.as_str()),
                    tenant = own_tenant.unwrap_or(""),
                    requested_tenant = self.requested_tenant.as_str(own_tenant).unwrap_or(""),
                    privileged = self.privileged.unwrap_or(""),
                    client.ip = %self.conn.peer.ip(),
                    latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                    upstream_ms = self.timings.upstream.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    upstream_body_error = self.upstream_body_error,
                    stream_violation = self.stream_violation.unwrap_or(""),
                    "request finished"
                )
            };
        }
        if notable {
            access_log!(info);
        } else {
            access_log!(debug);
        }
    }
}
