//! The probe listener (`server.probes`): `/livez` and `/healthz` (the process answers),
//! `/readyz` (ready to serve: the same answer as on the admin listener, without `?verbose`)
//! and `/metrics` — nothing else. No admin API, no JWKS document, no token endpoint: every
//! other path is 404. It may therefore listen on the pod address in production, where the
//! admin listener must stay on loopback (`docs/kubernetes.md`). `/metrics` keeps the admin
//! listener's `Host` rule (IP literals, `localhost`, names no outsider controls, or
//! `server.admin_hosts`; 421 otherwise), so a DNS-rebinding page cannot read it; Prometheus
//! scrapes by pod IP.

use std::convert::Infallible;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::error::json_error;
use crate::proxy::body::ProxyBody;
use crate::state::AppState;

/// Most connections open at once on the probe listener: kubelet and a few scrapers need a
/// handful; the cap keeps a flood on the pod address from holding memory.
pub const MAX_CONNECTIONS: usize = 64;

/// The probe listener's header-read and idle timeouts at most (shorter when
/// `server.timeouts` says so): a slot held by a silent client is freed within this.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves one probe-listener request, with the policy-wide security headers (no HSTS: plain
/// HTTP).
pub async fn handle(
    state: AppState,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let security = state.config.snapshot().edge.security.clone();
    let mut resp = respond(&state, &req).await;
    crate::proxy::security::apply(resp.headers_mut(), &security, false);
    Ok(resp)
}

async fn respond(state: &AppState, req: &Request<Incoming>) -> Response<ProxyBody> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match req.uri().path() {
        "/livez" | "/healthz" if get => super::json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        "/readyz" if get => super::readyz(state).await,
        "/metrics" if get => {
            let snapshot = state.config.snapshot();
            if super::host_allowed(req.headers(), &snapshot.server.admin_hosts) {
                super::metrics(state)
            } else {
                json_error(
                    StatusCode::MISDIRECTED_REQUEST,
                    "misdirected_request",
                    "unexpected_host",
                    "-",
                )
                .map(ProxyBody::full)
            }
        }
        "/livez" | "/healthz" | "/readyz" | "/metrics" => super::method_not_allowed(),
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no_route", "-").map(ProxyBody::full),
    }
}
