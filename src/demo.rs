//! `fortress demo`: an embedded example app behind fortress with `policies/demo.yaml`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::{Fortress, StartError, config};

/// The demo policy, embedded so `fortress demo` works from any directory.
pub const DEMO_POLICY: &str = include_str!("../policies/demo.yaml");

/// Where the demo writes its audit trail unless `--audit-dir` says otherwise.
pub fn default_audit_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("fortress-demo-audit")
}

/// Starts the demo app and fortress in front of it, writing the audit trail to `audit_dir`.
pub async fn start(
    listen: SocketAddr,
    admin: SocketAddr,
    audit_dir: &Path,
) -> Result<Fortress, StartError> {
    let app = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| StartError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
    let app_addr = app.local_addr().map_err(|source| StartError::Bind {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        source,
    })?;
    tokio::spawn(serve_app(app));
    let mut config = config::load_str(DEMO_POLICY, Path::new("policies/demo.yaml"))?;
    config.server.upstream = http::uri::Authority::try_from(app_addr.to_string().as_str())
        .map_err(|e| StartError::Load(format!("demo upstream address: {e}")))?;
    config.server.listen = listen;
    config.server.admin = admin;
    if let Some(audit) = config.audit.as_mut() {
        audit.dir = Some(audit_dir.to_path_buf());
    }
    Fortress::start_with(config, None).await
}

/// The demo policy's inline secret (a test checks it matches `policies/demo.yaml`).
pub const DEMO_SECRET: &str = "demo-only-secret-never-use-in-production-0123456789";

/// A demo token for `sub`/`roles`/`tenant`, valid for 12 hours.
pub fn demo_token(sub: &str, roles: &[&str], tenant: &str) -> String {
    let spec = crate::auth::token::TokenSpec {
        subject: sub.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        tenant: Some(tenant.into()),
        issuer: "fortress-demo".into(),
        audience: "fortress-demo-api".into(),
        ttl_secs: 12 * 3600,
        jti: None,
    };
    crate::auth::token::mint(
        &spec,
        DEMO_SECRET.as_bytes(),
        jsonwebtoken::get_current_timestamp(),
    )
    .unwrap_or_else(|e| format!("<{e}>"))
}

/// What the demo prints once it is listening.
pub fn banner(f: &Fortress, audit_dir: &Path) -> String {
    let p = f.client_addr;
    let a = f.admin_addr;
    let d = audit_dir.display();
    // The binary as it was started (`target/release/fortress` after `cargo run`), so the
    // commands below work without `fortress` on the PATH.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "fortress".to_owned());
    let analyst = demo_token("alice", &["analyst"], "acme");
    let admin = demo_token("root", &["admin"], "ops");
    format!(
        "fortress demo is running (Ctrl-C to stop)\n\
         \n  proxy: http://{p}\n  admin: http://{a}\n  audit: {d}\n\n\
         Dev tokens (HS256, 12 h):\n\
         \x20 export TOKEN={analyst}   # sub=alice roles=[analyst] tenant=acme\n\
         \x20 export ADMIN={admin}   # sub=root roles=[admin] tenant=ops\n\n\
         Try:\n\
         \x20 curl -i http://{p}/health                              # public route, forwarded\n\
         \x20 curl -i http://{p}/api/orgs/acme/reports/q3            # 401: no token\n\
         \x20 curl -i -H \"Authorization: Bearer $TOKEN\" http://{p}/api/orgs/acme/reports/q3\n\
         \x20 curl -i -H \"Authorization: Bearer $TOKEN\" http://{p}/api/orgs/globex/reports/q3   # 403 tenant\n\
         \x20 curl -i -H \"Authorization: Bearer $TOKEN\" http://{p}/api/admin/users              # 403 permission\n\
         \x20 curl -i -N -X POST -H \"Authorization: Bearer $TOKEN\" http://{p}/api/ask   # NDJSON stream, checked line by line\n\
         \x20 curl -i --path-as-is http://{p}/api/../../etc/passwd        # 400: escapes the root\n\
         \x20 curl -i http://{p}/api/a%2Fb                           # 400: encoded slash\n\
         \x20 curl -i http://{p}/nope                                # 404: default deny, app never called\n\
         \x20 curl -s http://{a}/metrics | grep fortress_requests_total\n\
         \x20 curl -i http://{a}/readyz\n\n\
         A stream violation, cut: the app sends `data` before `technical_view`; fortress drops that\n\
         line, ends the stream with an error line and closes the upstream:\n\
         \x20 curl -i -N -X POST -H \"Authorization: Bearer $TOKEN\" 'http://{p}/api/ask?broken=1'\n\n\
         A rate limit (3 searches a minute per user; the fourth gets 429 with Retry-After):\n\
         \x20 for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}} ' -H \"Authorization: Bearer $TOKEN\" http://{p}/api/search; done; echo\n\n\
         The audit records of the denials and the violation above (hash-chained JSON lines):\n\
         \x20 {exe} audit query {d} --decision deny --table\n\
         \x20 {exe} audit query {d} --event stream_violation\n\
         \x20 {exe} audit verify {d}   # while the demo runs: exit 3 unsealed (sealed at Ctrl-C)\n\
         \x20 tail -n 1 {d}/audit-*.jsonl\n"
    )
}

async fn serve_app(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn app(req: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let seen = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if req.method() == Method::POST && path == "/api/ask" {
        // Every line carries the request's W3C trace id (the trace-id field of the
        // `traceparent` fortress sends), as the demo policy's stream requires.
        let trace = seen("traceparent")
            .split('-')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        // `?broken=1`: an app bug the stream check catches (`data` before `technical_view`).
        let broken = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "broken=1"));
        let kinds: &'static [&'static str] = if broken {
            &["thinking", "data", "technical_view", "business_view", "end"]
        } else {
            &[
                "thinking",
                "technical_view",
                "data",
                "data",
                "business_view",
                "end",
            ]
        };
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            for kind in kinds {
                let line = format!("{{\"type\":\"{kind}\",\"trace_id\":\"{trace}\"}}\n");
                if tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
        let mut r = Response::new(body);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        );
        return Ok(r);
    }
    let (status, body) = if path == "/health" {
        (StatusCode::OK, r#"{"status":"ok"}"#.to_string())
    } else {
        let json = serde_json::json!({
            "app": "fortress demo upstream",
            "method": req.method().as_str(),
            "path": path,
            "x-forwarded-for": seen("x-forwarded-for"),
            "x-forwarded-proto": seen("x-forwarded-proto"),
            "x-request-id": seen("x-request-id"),
            "x-auth-subject": seen("x-auth-subject"),
            "x-auth-roles": seen("x-auth-roles"),
            "x-tenant-id": seen("x-tenant-id"),
        });
        (StatusCode::OK, json.to_string())
    };
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Minimal `Stream` over an mpsc receiver (for `StreamBody`).
pub struct ReceiverStream<T>(mpsc::Receiver<T>);

impl<T> ReceiverStream<T> {
    /// Wraps a receiver.
    pub fn new(rx: mpsc::Receiver<T>) -> Self {
        Self(rx)
    }
}

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}
