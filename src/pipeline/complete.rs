//! The end of a request: metrics and the access log line, once, when the response body ends
//! or is dropped (a client that goes away mid-stream still gets its request recorded).

use std::sync::Arc;
use std::time::Instant;

use http::Method;

use crate::auth::SharedPrincipal;
use crate::metrics::{RouteMetrics, UNMATCHED};
use crate::server::conn::ConnInfo;
use crate::state::AppState;

/// Records a request when dropped.
pub struct Completion {
    state: AppState,
    conn: Arc<ConnInfo>,
    route: Option<Arc<RouteMetrics>>,
    method: Method,
    status: u16,
    decision: &'static str,
    reason: &'static str,
    dry_run: bool,
    principal: Option<SharedPrincipal>,
    privileged: Option<&'static str>,
    stream_violation: Option<&'static str>,
    request_id: Arc<str>,
    trace_id: Arc<str>,
    start: Instant,
    upstream_body_error: bool,
}

impl Completion {
    /// Starts tracking a request (the connection counts it as in flight until drop).
    pub fn start(
        state: AppState,
        conn: Arc<ConnInfo>,
        method: Method,
        request_id: Arc<str>,
        trace_id: Arc<str>,
    ) -> Self {
        conn.activity.request_started();
        Self {
            state,
            conn,
            route: None,
            method,
            status: 0,
            decision: "allow",
            reason: "",
            dry_run: false,
            principal: None,
            privileged: None,
            stream_violation: None,
            request_id,
            trace_id,
            start: Instant::now(),
            upstream_body_error: false,
        }
    }

    /// Sets the matched route.
    pub fn set_route(&mut self, route: Arc<RouteMetrics>) {
        self.route = Some(route);
    }

    /// Sets the response status.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Sets the decision (`allow`, `deny`, `dry_run_deny`, `error`) and its reason code.
    pub fn set_decision(&mut self, decision: &'static str, reason: &'static str) {
        self.decision = decision;
        self.reason = reason;
    }

    /// Records whether the route ran in dry-run mode.
    pub fn set_mode(&mut self, dry_run: bool) {
        self.dry_run = dry_run;
    }

    /// Records the verified principal.
    pub fn set_principal(&mut self, principal: SharedPrincipal) {
        self.principal = Some(principal);
    }

    /// Records a privilege that let the request through (e.g. `cross_tenant`).
    pub fn set_privileged(&mut self, privileged: Option<&'static str>) {
        self.privileged = privileged;
    }

    /// The NDJSON stream check refused a line; counted and logged now, once.
    pub fn mark_stream_violation(&mut self, reason: &'static str) {
        self.stream_violation = Some(reason);
        let route = self.route.as_ref().map_or(UNMATCHED, |r| &**r.name());
        self.state.metrics.stream_violation(route, reason);
        tracing::warn!(
            request.id = %self.request_id,
            trace.id = %self.trace_id,
            route.name = route,
            reason,
            "stream integrity violation; stream ended with an error line"
        );
    }

    /// The upstream body failed mid-stream (the client saw a truncated response).
    pub fn mark_upstream_body_error(&mut self) {
        self.upstream_body_error = true;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let metrics = &self.state.metrics;
        let route_metrics = self.route.as_ref().unwrap_or(metrics.unmatched());
        route_metrics.observe(
            &self.method,
            self.status,
            self.decision,
            self.dry_run,
            elapsed.as_secs_f64(),
        );
        let route = &**route_metrics.name();
        let mode = if self.dry_run { "dry_run" } else { "enforce" };
        if self.upstream_body_error {
            metrics.upstream_error("protocol");
        }
        self.conn.activity.request_finished();
        // Allowed requests log at debug (a line per request costs throughput); refusals,
        // dry-run denials, errors and privileged passes log at info.
        let notable = self.decision != "allow"
            || self.privileged.is_some()
            || self.upstream_body_error
            || self.stream_violation.is_some();
        macro_rules! access_log {
            ($level:ident) => {
                tracing::$level!(
                    request.id = %self.request_id,
                    trace.id = %self.trace_id,
                    route.name = route,
                    http.method = %self.method,
                    http.status = self.status,
                    decision = self.decision,
                    reason = self.reason,
                    mode,
                    subject = self.principal.as_ref().map_or("", |p| p.subject.as_str()),
                    tenant = self.principal.as_ref().and_then(|p| p.tenant.as_deref()).unwrap_or(""),
                    privileged = self.privileged.unwrap_or(""),
                    client.ip = %self.conn.peer.ip(),
                    latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
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
