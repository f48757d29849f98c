//! The end of a request: metrics and the access log line, once, when the response body ends
//! or is dropped (a client that goes away mid-stream still gets its request recorded).

use std::sync::Arc;
use std::time::Instant;

use http::Method;
use tracing::info;

use crate::server::conn::ConnInfo;
use crate::state::AppState;

/// Records a request when dropped.
pub struct Completion {
    state: AppState,
    conn: Arc<ConnInfo>,
    route: Option<Arc<str>>,
    method: Method,
    status: u16,
    decision: &'static str,
    reason: &'static str,
    request_id: Arc<str>,
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
            request_id,
            start: Instant::now(),
            upstream_body_error: false,
        }
    }

    /// Sets the matched route.
    pub fn set_route(&mut self, route: Arc<str>) {
        self.route = Some(route);
    }

    /// Sets the final status and decision.
    pub fn set_outcome(&mut self, status: u16, decision: &'static str, reason: &'static str) {
        self.status = status;
        self.decision = decision;
        self.reason = reason;
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
        let route = self.route.as_deref().unwrap_or(UNMATCHED);
        metrics.observe_request(
            route,
            &self.method,
            self.status,
            self.decision,
            elapsed.as_secs_f64(),
        );
        if self.upstream_body_error {
            metrics.upstream_error("protocol");
        }
        self.conn.activity.request_finished();
        info!(
            request.id = %self.request_id,
            route.name = route,
            http.method = %self.method,
            http.status = self.status,
            decision = self.decision,
            reason = self.reason,
            client.ip = %self.conn.peer.ip(),
            latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            upstream_body_error = self.upstream_body_error,
            "request finished"
        );
    }
}

/// Route label for requests that matched no route.
pub const UNMATCHED: &str = "-";
