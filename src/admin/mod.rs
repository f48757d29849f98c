//! The admin listener: `/healthz`, `/readyz`, `/metrics` (unauthenticated), and the admin
//! API under `/admin/` (`api.rs`: bearer token, permissions, loopback peers only; see
//! `docs/admin-api.md`). Bound to 127.0.0.1 by default. `/metrics` and `/admin/*` answer only requests whose `Host`
//! no outside party controls — `localhost`, an IP literal, a single-label name, a name under a
//! special- or private-use TLD (`.test`, `.local`, `.internal`, …) — or a configured
//! `server.admin_hosts` name (421 otherwise), so a page that rebinds its own domain to
//! 127.0.0.1 cannot read metrics or reload, and refuse
//! cross-site `POST`s (`Origin` / `Sec-Fetch-Site`); probes answer any Host. Bodies carry no
//! internals, and the reload errors the operator asked for name files without the config
//! directory.

pub mod api;
pub mod control;
pub mod probes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use crate::error::json_error;
use crate::proxy::body::ProxyBody;
use crate::state::{AppState, Outcome};

/// Serves one admin request; every answer carries the policy-wide security headers (no HSTS:
/// the admin listener is plain HTTP).
pub async fn handle(
    state: AppState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let security = state.config.snapshot().edge.security.clone();
    let Ok(mut resp) = respond(state, peer, req).await;
    crate::proxy::security::apply(resp.headers_mut(), &security, false);
    Ok(resp)
}

async fn respond(
    state: AppState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // Probes (`/healthz`, `/readyz`) answer any Host (kubelet sends the pod IP or a name);
    // metrics and the admin API answer only expected ones.
    let path = req.uri().path();
    let guarded = path == "/metrics" || path.starts_with("/admin/") || path == "/admin";
    let snapshot = state.config.snapshot();
    let admin_hosts = &snapshot.server.admin_hosts;
    if guarded && !host_allowed(req.headers(), admin_hosts) {
        return Ok(json_error(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            "unexpected_host",
            "-",
        )
        .map(ProxyBody::full));
    }
    if guarded
        && req.method() != Method::GET
        && req.method() != Method::HEAD
        && cross_site(req.headers(), admin_hosts)
    {
        return Ok(json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "cross_site_request",
            "-",
        )
        .map(ProxyBody::full));
    }
    if path.starts_with("/admin/") {
        return Ok(api::serve(&state, peer, req).await);
    }
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz" | "/livez") => {
            json(StatusCode::OK, r#"{"status":"ok"}"#.into())
        }
        // `?verbose` adds the readiness guards' states; like /metrics, only for expected hosts.
        (&Method::GET | &Method::HEAD, "/readyz")
            if verbose(req.uri().query()) && host_allowed(req.headers(), admin_hosts) =>
        {
            readyz_verbose(&state).await
        }
        (&Method::GET | &Method::HEAD, "/readyz") => readyz(&state).await,
        // The public key of an EdDSA identity assertion (docs/identity-assertion.md).
        (&Method::GET | &Method::HEAD, "/.well-known/jwks.json") => {
            match snapshot
                .policy
                .assertion
                .as_ref()
                .and_then(|a| a.jwks.as_ref())
            {
                Some((_, doc)) => json(StatusCode::OK, doc.clone()),
                None => json_error(StatusCode::NOT_FOUND, "not_found", "no_route", "-")
                    .map(ProxyBody::full),
            }
        }
        (&Method::GET | &Method::HEAD, "/metrics") => metrics(&state),
        (_, "/healthz" | "/livez" | "/readyz" | "/metrics") => method_not_allowed(),
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no_route", "-").map(ProxyBody::full),
    };
    Ok(resp)
}

/// The Prometheus exposition (fortress's metrics and the span exporter's).
pub(crate) fn metrics(state: &AppState) -> Response<ProxyBody> {
    let mut body = state.metrics.render();
    crate::telemetry::render_metrics(state.telemetry.as_deref(), &mut body);
    let mut r = Response::new(ProxyBody::full(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// 405 for a probe or metrics path asked with another method than GET or HEAD.
pub(crate) fn method_not_allowed() -> Response<ProxyBody> {
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method_not_allowed",
        "-",
    )
    .map(ProxyBody::full);
    // RFC 9110 §15.5.6: a 405 lists the methods the target accepts.
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// Ready when a config is active (always, once started), every bound JWKS source has a key
/// set, a shared state store's local copy is current (not older than `store.max_staleness`),
/// and the upstream accepts TCP.
pub(crate) async fn readyz(state: &AppState) -> Response<ProxyBody> {
    // Shutting down (SIGTERM, during `shutdown_delay`): out of the endpoints, still serving.
    if state
        .shutting_down
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"shutting_down"}"#.into(),
        );
    }
    if !state.live.jwks_ready() || state.store.is_stale() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"not_ready"}"#.into(),
        );
    }
    let upstream = state.config.snapshot().server.upstream.clone();
    let addr = upstream.as_str().to_owned();
    let reachable = matches!(
        tokio::time::timeout(READY_CONNECT_TIMEOUT, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    );
    if reachable {
        json(StatusCode::OK, r#"{"status":"ready"}"#.into())
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"not_ready"}"#.into(),
        )
    }
}

fn verbose(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p == "verbose=1" || p == "verbose=true")
    })
}

/// `/readyz?verbose`: the same status, with each readiness guard's state and failing
/// conditions (`{"status":"ready","guards":{"training":{"ready":false,"failing":["audit"]}}}`).
async fn readyz_verbose(state: &AppState) -> Response<ProxyBody> {
    let plain = readyz(state).await;
    let status = plain.status();
    let snapshot = state.config.snapshot();
    let guards = crate::pipeline::readiness::states(&snapshot, state.audit.as_deref());
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
        "guards": guards,
    });
    json(status, body.to_string())
}

/// Reloads the config file now (the caller has been authorized).
async fn reload(
    state: &AppState,
    caller: Option<crate::state::reload::Caller>,
) -> Response<ProxyBody> {
    match state.reload.reload_now_by(caller).await {
        Outcome::Applied { hash } => json(
            StatusCode::OK,
            serde_json::json!({"result": "applied", "policy_hash": hash}).to_string(),
        ),
        Outcome::Refused { errors } => {
            let dir = state
                .config_path
                .as_deref()
                .and_then(std::path::Path::parent);
            let errors: Vec<String> = errors.iter().map(|e| scrub_paths(e, dir)).collect();
            json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"result": "refused", "errors": errors}).to_string(),
            )
        }
        Outcome::Unavailable => json(
            StatusCode::CONFLICT,
            r#"{"result":"unavailable","reason":"no_config_file"}"#.into(),
        ),
    }
}

pub(crate) fn json(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether the request's `Host` (exactly one) is `localhost`, an IP literal or a configured
/// admin host name; the port is ignored.
pub(crate) fn host_allowed(headers: &HeaderMap, admin_hosts: &[String]) -> bool {
    let mut values = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (values.next(), values.next()) else {
        return false;
    };
    host.to_str().is_ok_and(|h| name_allowed(h, admin_hosts))
}

/// `host[:port]` is `localhost`, an IP literal (v4, or v6 in brackets) or a listed name.
fn name_allowed(authority: &str, admin_hosts: &[String]) -> bool {
    let name = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, rest)) if rest.is_empty() || port_ok(rest) => {
                return ip.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((name, port)) if port_ok(&format!(":{port}")) => name,
            Some(_) => return false,
            None => authority,
        },
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    let lower = lower.trim_end_matches('.');
    lower.parse::<std::net::Ipv4Addr>().is_ok()
        || !lower.contains('.')
        || PRIVATE_SUFFIXES.iter().any(|s| lower.ends_with(s))
        || admin_hosts.iter().any(|h| lower == h)
}

/// Names no outside party can make resolve to this host: special-use and private-use
/// top-level domains (RFC 6761, RFC 6762, RFC 8375, ICANN's `.internal`). Together with
/// single-label names (resolved only through local search domains), `localhost` and IP
/// literals, these are what the admin listener answers to without `server.admin_hosts`.
const PRIVATE_SUFFIXES: [&str; 7] = [
    ".localhost",
    ".test",
    ".invalid",
    ".example",
    ".local",
    ".internal",
    ".home.arpa",
];

fn port_ok(rest: &str) -> bool {
    rest.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A browser's cross-site request: `Sec-Fetch-Site` other than `same-origin`/`none`, or an
/// `Origin` whose host the admin listener would not answer to.
fn cross_site(headers: &HeaderMap, admin_hosts: &[String]) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let ok = site
            .to_str()
            .is_ok_and(|s| s.eq_ignore_ascii_case("same-origin") || s.eq_ignore_ascii_case("none"));
        if !ok {
            return true;
        }
    }
    headers.get_all(header::ORIGIN).iter().any(|origin| {
        let Ok(origin) = origin.to_str() else {
            return true;
        };
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        !authority.is_some_and(|a| name_allowed(a, admin_hosts))
    })
}

/// Removes the config file's directory from `text` (`/etc/fortress/policy.yaml:3:1` →
/// `policy.yaml:3:1`, and the same for key and secret files next to it): error bodies do not
/// reveal where fortress runs from. Paths the policy itself spells out stay as written.
pub(crate) fn scrub_paths(text: &str, config_dir: Option<&std::path::Path>) -> String {
    let Some(dir) = config_dir
        .and_then(|d| d.to_str())
        .filter(|d| !d.is_empty())
    else {
        return text.to_owned();
    };
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    text.replace(&prefix, "")
}

const READY_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let listed = vec!["fortress-admin.svc".to_owned()];
        for ok in [
            "localhost",
            "admin",
            "fortress-admin",
            "app.test",
            "metrics.fortress.svc.cluster.local",
            "sidecar.internal:9901",
            "printer.home.arpa",
            "LOCALHOST:9901",
            "127.0.0.1",
            "127.0.0.1:9901",
            "10.1.2.3:9901",
            "[::1]",
            "[::1]:9901",
            "[fe80::1]:80",
            "fortress-admin.svc",
            "Fortress-Admin.SVC:9901",
        ] {
            assert!(name_allowed(ok, &listed), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "attacker.net",
            "localhost.attacker.net",
            "test.attacker.net",
            "a b",
            "127.0.0.1.nip.io",
            "127.0.0.1:99999x",
            "[::1",
            "::1",
            "",
            "localhost:",
            "fortress-admin.svc.evil",
            "user@localhost",
        ] {
            assert!(!name_allowed(bad, &listed), "{bad}");
        }
    }

    #[test]
    fn paths_are_scrubbed() {
        let dir = Some(std::path::Path::new("/etc/fortress"));
        assert_eq!(
            scrub_paths("/etc/fortress/policy.yaml:3:7: unknown field", dir),
            "policy.yaml:3:7: unknown field"
        );
        assert_eq!(
            scrub_paths(
                "/etc/fortress/policy.yaml:9:5: /etc/fortress/keys/a.pem: cannot read",
                dir
            ),
            "policy.yaml:9:5: keys/a.pem: cannot read"
        );
        assert_eq!(
            scrub_paths("path pattern `/api/**` cannot be used", dir),
            "path pattern `/api/**` cannot be used"
        );
        assert_eq!(scrub_paths("x", None), "x");
    }
}
