//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `POST /admin/reload`.
//! Bound to 127.0.0.1 by default; bodies carry no internals except reload errors, which are
//! for the operator who asked for the reload.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use crate::error::json_error;
use crate::proxy::body::ProxyBody;
use crate::state::{AppState, Outcome};

/// Serves one admin request.
pub async fn handle(
    state: AppState,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => {
            json(StatusCode::OK, r#"{"status":"ok"}"#.into())
        }
        (&Method::GET | &Method::HEAD, "/readyz") => readyz(&state).await,
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let mut r = Response::new(ProxyBody::full(Bytes::from(state.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::POST, "/admin/reload") => reload(&state).await,
        (_, path @ ("/healthz" | "/readyz" | "/metrics" | "/admin/reload")) => {
            let mut r = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method_not_allowed",
                "-",
            )
            .map(ProxyBody::full);
            // RFC 9110 §15.5.6: a 405 lists the methods the target accepts.
            let allow = if path == "/admin/reload" {
                "POST"
            } else {
                "GET, HEAD"
            };
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no_route", "-").map(ProxyBody::full),
    };
    Ok(resp)
}

/// Ready when a config is active (always, once started) and the upstream accepts TCP.
async fn readyz(state: &AppState) -> Response<ProxyBody> {
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

async fn reload(state: &AppState) -> Response<ProxyBody> {
    match state.reload.reload_now().await {
        Outcome::Applied { hash } => json(
            StatusCode::OK,
            serde_json::json!({"result": "applied", "policy_hash": hash}).to_string(),
        ),
        Outcome::Refused { errors } => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"result": "refused", "errors": errors}).to_string(),
        ),
        Outcome::Unavailable => json(
            StatusCode::CONFLICT,
            r#"{"result":"unavailable","reason":"no_config_file"}"#.into(),
        ),
    }
}

fn json(status: StatusCode, body: String) -> Response<ProxyBody> {
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

const READY_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
