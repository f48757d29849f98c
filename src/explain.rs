//! `fortress explain`: runs the proxy's own decision function on a described request and
//! prints every stage's outcome, then the final decision.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use serde_json::{Value, json};

use crate::config;
use crate::error::Rejection;
use crate::metrics::Metrics;
use crate::pipeline::authz::requirement;
use crate::pipeline::conn::ConnInfo;
use crate::pipeline::context::RequestContext;
use crate::pipeline::decide::{self, Observer, Stage, Step};
use crate::state::Snapshot;
use crate::store::live::Live;
use crate::store::{MemoryStore, StateStore};

/// What to explain (the `fortress explain` arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainRequest {
    /// The config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Path (and query) as the client sends it.
    #[arg(long)]
    pub path: String,
    /// A bearer token.
    #[arg(long, conflicts_with = "claims")]
    pub token: Option<String>,
    /// Claims as JSON, used instead of a verified token (signature and time not checked).
    #[arg(long)]
    pub claims: Option<String>,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Client address (decides whether it is a trusted proxy).
    #[arg(long, default_value = "127.0.0.1")]
    pub peer: IpAddr,
    /// The request arrives over plain HTTP (default: over TLS).
    #[arg(long)]
    pub plain: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs explain; exit 0 for allow (including dry-run), 1 for deny, 2 for bad input.
pub fn run(req: &ExplainRequest) -> ExitCode {
    match explain(req) {
        Ok((report, allowed)) => {
            println!("{report}");
            if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("fortress explain: {e}");
            ExitCode::from(2)
        }
    }
}

/// Returns the printed report and whether the request would be forwarded.
pub fn explain(req: &ExplainRequest) -> Result<(String, bool), String> {
    let config = config::load_file(&req.config).map_err(|e| e.to_string())?;
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| format!("`{}` is not a method", req.method))?;
    let uri: Uri = req
        .path
        .parse()
        .map_err(|_| format!("`{}` is not a request target", req.path))?;
    let mut headers = HeaderMap::new();
    for h in &req.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("`{h}`: expected `Name: value`"))?;
        let name = HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| format!("`{k}` is not a header name"))?;
        let value =
            HeaderValue::from_str(v.trim()).map_err(|_| format!("`{v}` is not a header value"))?;
        headers.append(name, value);
    }
    // `localhost` unless the caller names the host (`-H 'Host: api.example.com'`).
    if !headers.contains_key(http::header::HOST) {
        headers.insert(http::header::HOST, HeaderValue::from_static("localhost"));
    }
    if let Some(t) = &req.token {
        let value = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| "the token is not a valid header value".to_string())?;
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let claims: Option<Value> = req
        .claims
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| format!("--claims is not JSON: {e}"))?;
    let peer = SocketAddr::new(req.peer, 40000);
    let mut parts = http::Request::builder()
        .method(method)
        .uri(uri)
        .version(Version::HTTP_11)
        .body(())
        .map_err(|e| format!("request: {e}"))?
        .into_parts()
        .0;
    parts.headers = headers;
    // The same decision the proxy runs, on a snapshot bound to empty live state (no
    // revocations, no fetched keys), recorded nowhere.
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new(1024));
    let live = Live::new(store);
    let metrics = Metrics::new().map_err(|e| format!("metrics: {e}"))?;
    let snapshot = Arc::new(Snapshot::bind(config, &live, &metrics));
    let conn = Arc::new(ConnInfo::new(peer, !req.plain));
    let mut ctx = RequestContext::new(snapshot, conn, None, parts.method.clone(), &parts.headers);
    ctx.claims_override = claims;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let mut obs = Recorder::default();
    // No background task outside the proxy: the key set is fetched once, here.
    runtime.block_on(live.fetch_once());
    let result = runtime.block_on(decide::decide(&mut ctx, &parts, &mut obs));
    let (decision, status, reason, allowed) = match result {
        Ok(()) if crate::pipeline::cors::is_preflight(&ctx) => ("preflight", Some(204), None, true),
        Ok(()) => match ctx.dry_run_denial() {
            Some(r) => ("dry_run_deny", None, Some(r.reason()), true),
            None => ("allow", None, None, true),
        },
        Err(r) => {
            let (status, _, _) = r.status();
            ("deny", Some(status.as_u16()), Some(r.reason()), false)
        }
    };
    let report = if req.json {
        let stages: Vec<Value> = obs
            .lines
            .iter()
            .map(|l| json!({"stage": l.stage, "outcome": l.outcome, "detail": l.detail}))
            .collect();
        json!({
            "method": req.method, "path": req.path, "decision": decision,
            "status": status, "reason": reason, "stages": stages,
        })
        .to_string()
    } else {
        let mut out = String::new();
        for l in &obs.lines {
            out.push_str(&format!("{:<10} {:<8} {}\n", l.stage, l.outcome, l.detail));
        }
        let tail = match (status, reason) {
            (Some(s), Some(r)) => format!("{s} {r}"),
            (None, Some(r)) => format!("forwarded; enforce mode would refuse: {r}"),
            (Some(s), None) => format!("{s} answered by fortress (CORS preflight)"),
            _ => "forwarded".to_string(),
        };
        out.push_str(&format!("{:<10} {:<8} {}", "decision", decision, tail));
        out
    };
    Ok((report, allowed))
}

struct Line {
    stage: &'static str,
    outcome: &'static str,
    detail: String,
}

#[derive(Default)]
struct Recorder {
    lines: Vec<Line>,
}

impl Recorder {
    fn push(&mut self, stage: &'static str, outcome: &'static str, detail: String) {
        self.lines.push(Line {
            stage,
            outcome,
            detail,
        });
    }
}

impl Observer for Recorder {
    /// Explain consumes nothing: no permit, no failure counted.
    fn live(&self) -> bool {
        false
    }

    fn passed(&mut self, stage: Stage, ctx: &RequestContext, req: &Parts, step: Step) {
        match step {
            Step::Skip(why) => self.push(stage.name(), "skip", why.to_string()),
            Step::Pass => self.push(stage.name(), "pass", passed(stage, ctx, req)),
        }
    }

    fn refused(
        &mut self,
        stage: Stage,
        ctx: &RequestContext,
        req: &Parts,
        r: Rejection,
        dry_run: bool,
    ) {
        let detail = refused(stage, ctx, req, r);
        if dry_run {
            let line = format!("would deny: {} ({detail})", r.reason());
            self.push(stage.name(), "dry-run", line);
        } else {
            self.push(stage.name(), "deny", format!("{} ({detail})", r.reason()));
        }
    }
}

/// What a passed stage found, from the context it left.
fn passed(stage: Stage, ctx: &RequestContext, req: &Parts) -> String {
    match stage {
        Stage::Framing => "one unambiguous framing".into(),
        Stage::Transport => format!(
            "{} from {}{}",
            if ctx.https { "https" } else { "plain http" },
            ctx.conn.peer.ip(),
            if ctx.trusted { " (trusted proxy)" } else { "" }
        ),
        Stage::Host => match req.headers.get(http::header::HOST) {
            Some(h) => format!(
                "{}{}",
                h.to_str().unwrap_or("?"),
                if ctx.snapshot.server.hosts.is_some() {
                    " (in server.hosts)"
                } else {
                    ""
                }
            ),
            None => "no host (HTTP/1.0)".into(),
        },
        // The canonical path is what is matched and forwarded; say so when it differs.
        Stage::Normalize => {
            let canonical = ctx.canonical_path(req.uri.path());
            if canonical == req.uri.path() {
                canonical.into_owned()
            } else {
                format!("{canonical} (sent as {})", req.uri.path())
            }
        }
        Stage::Ambiguity => "headers and query unambiguous".into(),
        Stage::Readiness => "the route's readiness guard is open".into(),
        Stage::Route => ctx
            .route()
            .map(|r| format!("{} ({})", r.name, r.pattern))
            .unwrap_or_default(),
        Stage::Toggle => toggle_detail(ctx),
        Stage::Cors => match &ctx.cors {
            crate::pipeline::cors::CorsMatch::Preflight(o) => format!(
                "preflight from {} for {}: answered 204",
                o.to_str().unwrap_or("?"),
                req.headers
                    .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
                    .and_then(|m| m.to_str().ok())
                    .unwrap_or("?")
            ),
            crate::pipeline::cors::CorsMatch::Allowed(o) => {
                format!("origin {} allowed", o.to_str().unwrap_or("?"))
            }
            _ => String::new(),
        },
        Stage::RequestLimits => {
            let rules = crate::pipeline::limits::rules(ctx);
            format!(
                "max_body {} bytes{}",
                rules.max_body,
                match &rules.content_types {
                    Some(_) => format!(
                        "; Content-Type {}",
                        req.headers
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                    ),
                    None => String::new(),
                }
            )
        }
        Stage::Authn => ctx.principal.as_ref().map_or_else(String::new, |p| {
            format!(
                "sub={} roles=[{}] tenant={}{}",
                p.subject,
                p.roles.join(","),
                p.tenant.as_deref().unwrap_or("-"),
                if ctx.claims_override.is_some() {
                    " (claims given; signature and time checks skipped)"
                } else {
                    ""
                }
            )
        }),
        Stage::Authz => ctx
            .route()
            .map(|r| requirement(&r.access))
            .unwrap_or_default(),
        Stage::Tenant => {
            let own = ctx.principal.as_ref().and_then(|p| p.tenant.as_deref());
            match ctx.privileged {
                Some(_) => format!(
                    "token tenant {} crosses to {} with {} (privileged)",
                    own.unwrap_or("-"),
                    ctx.requested_tenant.as_str(own).unwrap_or("-"),
                    ctx.route()
                        .and_then(|r| r.access.tenant.as_ref())
                        .and_then(|t| t.cross_tenant_permission.as_deref())
                        .unwrap_or("-")
                ),
                None => format!("{} matches the token", own.unwrap_or("-")),
            }
        }
        // The limits that apply and the keys they count under (explain's store is empty
        // and its own: no real counter is read or spent).
        Stage::Admission => admission_keys(ctx, req),
        Stage::IpAllow => {
            let lists = match (
                ctx.snapshot.policy.allow_ips.is_some(),
                ctx.route().is_some_and(|r| r.access.allow_ips.is_some()),
            ) {
                (true, true) => "the policy's and the route's allow_ips",
                (true, false) => "the policy's allow_ips",
                _ => "the route's allow_ips",
            };
            format!("client {} is in {lists}", ctx.client_ip.to_canonical())
        }
        Stage::AuthThrottle => match ctx.snapshot.policy.failed_auth {
            Some(l) => format!(
                "at most {} failed authentications per {}s per client IP \
                 (explain reads no live counters)",
                l.max,
                l.per.as_secs_f64()
            ),
            None => String::new(),
        },
        Stage::Concurrency => ctx
            .route()
            .and_then(|r| r.access.class)
            .and_then(|i| ctx.snapshot.policy.classes.list.get(i))
            .map(|c| {
                format!(
                    "class {} (max_in_flight {}, queue {}, queue_timeout {}ms{}); \
                     explain takes no permit",
                    c.name,
                    c.max_in_flight,
                    c.queue,
                    c.queue_timeout.as_millis(),
                    c.per_tenant_max_in_flight
                        .map(|n| format!(", per tenant {n}"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default(),
    }
}

/// Why a stage refused, from the context it left.
fn refused(stage: Stage, ctx: &RequestContext, req: &Parts, r: Rejection) -> String {
    match (stage, r) {
        (Stage::Normalize, Rejection::RejectTargetForm) => {
            format!("{} is not an origin-form target", req.uri)
        }
        (Stage::Normalize, Rejection::RejectPath(e)) => format!(
            "{}: {e}{}",
            req.uri.path(),
            if ctx.snapshot.policy.paths.matrix_parameters == crate::policy::MatrixParameters::Strip
            {
                "; paths.matrix_parameters: strip"
            } else {
                ""
            }
        ),
        (Stage::Host, Rejection::MisdirectedHost) => format!(
            "host {} is not in server.hosts",
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("<none>")
        ),
        (Stage::Host, _) => {
            let hosts: Vec<&str> = req
                .headers
                .get_all(http::header::HOST)
                .iter()
                .map(|h| h.to_str().unwrap_or("<not visible ASCII>"))
                .collect();
            if hosts.is_empty() {
                "no Host header".into()
            } else {
                format!("Host: {}", hosts.join(" | "))
            }
        }
        (Stage::Route, Rejection::DenyMethod(_)) => {
            format!("no route accepts {} here", req.method)
        }
        (Stage::Route, Rejection::UnknownMethod(a)) => format!(
            "{} is not a method routes can list; this path accepts: {}",
            req.method,
            if a.is_empty() {
                "nothing".to_string()
            } else {
                a.to_header_value()
            }
        ),
        (Stage::Route, Rejection::RejectMethod(_)) => format!(
            "method {} is not upper-case (frameworks would upper-case it)",
            req.method
        ),
        (Stage::Route, Rejection::RejectAmbiguous(_)) => format!(
            "{}; a case or trailing-slash spelling of this path goes to another route \
             (paths.route_variants: refuse)",
            ctx.route()
                .map(|r| format!("matched {} ({})", r.name, r.pattern))
                .unwrap_or_else(|| "no route matches".into())
        ),
        (Stage::Route, _) => "no route matches; default: deny".into(),
        (Stage::RequestLimits, Rejection::PayloadTooLarge(_)) => format!(
            "Content-Length {} over max_body {}",
            req.headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            crate::pipeline::limits::rules(ctx).max_body
        ),
        (Stage::RequestLimits, Rejection::UnsupportedMediaType(e)) => format!(
            "{}: Content-Type {}",
            e.code(),
            req.headers
                .get_all(http::header::CONTENT_TYPE)
                .iter()
                .map(|v| v.to_str().unwrap_or("<not visible ASCII>"))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        (Stage::Cors, Rejection::CorsRefused(e)) => format!(
            "{}: Origin {}",
            e.code(),
            req.headers
                .get(http::header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        ),
        (Stage::Authz, _) => ctx
            .route()
            .map(|r| requirement(&r.access))
            .unwrap_or_default(),
        (Stage::Admission, Rejection::MissingTenant) => {
            "a budget route, but the token names no tenant".into()
        }
        (Stage::Admission, _) => format!("{}; {}", r.reason(), admission_keys(ctx, req)),
        (Stage::Tenant, _) if ctx.principal.is_none() => "no principal".into(),
        (Stage::Tenant, _) => format!(
            "token tenant {} vs requested {}",
            ctx.principal
                .as_ref()
                .and_then(|p| p.tenant.as_deref())
                .unwrap_or("<none>"),
            ctx.requested_tenant
                .as_str(ctx.principal.as_ref().and_then(|p| p.tenant.as_deref()))
                .unwrap_or("<none>")
        ),
        (Stage::IpAllow, _) => {
            let ip = ctx.client_ip.to_canonical();
            let global = ctx.snapshot.policy.allow_ips.as_deref();
            if global.is_some_and(|l| !l.allows(ip)) {
                format!("client {ip} is not in the policy's allow_ips")
            } else {
                format!("client {ip} is not in the route's allow_ips")
            }
        }
        _ => r.reason().to_string(),
    }
}

/// The limits of a request and their keys, for explain.
fn admission_keys(ctx: &RequestContext, req: &Parts) -> String {
    match crate::pipeline::admission::keys(ctx, req) {
        Ok(keys) => keys
            .iter()
            .map(|(what, key)| format!("{what} key {key}"))
            .collect::<Vec<_>>()
            .join("; "),
        Err(r) => r.reason().to_string(),
    }
}

/// The route's toggle and its effective value (`name: on (override)`).
fn toggle_detail(ctx: &RequestContext) -> String {
    let Some(t) = ctx
        .route()
        .and_then(|r| r.access.requires_toggle)
        .and_then(|i| ctx.snapshot.policy.toggles.list.get(i))
    else {
        return String::new();
    };
    let (on, source) = match ctx.snapshot.store.toggle(&t.name) {
        Some(v) => (v, "override"),
        None => (t.default, "default"),
    };
    format!("{}: {} ({source})", t.name, if on { "on" } else { "off" })
}
