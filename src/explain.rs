//! `fortress explain`: runs the proxy's own decision function on a described request and
//! prints every stage's outcome, then the final decision.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use serde_json::{Value, json};

use crate::auth::revocation::MemoryRevocations;
use crate::config;
use crate::error::Rejection;
use crate::pipeline::decide::{self, DecideEnv, Observer, RequestView};

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
    headers.insert(http::header::HOST, HeaderValue::from_static("localhost"));
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
    let view = RequestView {
        method: &method,
        uri: &uri,
        version: Version::HTTP_11,
        headers: &headers,
        peer,
        tls: !req.plain,
        trusted: config.server.is_trusted(req.peer),
    };
    let revocations = MemoryRevocations::default();
    let env = DecideEnv {
        revocations: &revocations,
        metrics: None,
        now: jsonwebtoken::get_current_timestamp(),
        claims_override: claims.as_ref(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let mut obs = Recorder::default();
    let result = runtime.block_on(decide::decide(&config, &view, &uri, &env, &mut obs));
    let (decision, status, reason, allowed) = match &result {
        Ok(d) => match d.dry_run_denial {
            Some(r) => ("dry_run_deny", None, Some(r.reason()), true),
            None => ("allow", None, None, true),
        },
        Err(r) => {
            let (status, _, reason) = r.status();
            ("deny", Some(status.as_u16()), Some(reason), false)
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
    fn pass(&mut self, stage: &'static str, detail: impl FnOnce() -> String) {
        self.push(stage, "pass", detail());
    }
    fn skip(&mut self, stage: &'static str, why: &'static str) {
        self.push(stage, "skip", why.to_string());
    }
    fn fail(&mut self, stage: &'static str, r: Rejection, detail: impl FnOnce() -> String) {
        self.push(stage, "deny", format!("{} ({})", r.reason(), detail()));
    }
    fn dry_run(&mut self, stage: &'static str, r: Rejection, detail: impl FnOnce() -> String) {
        self.push(
            stage,
            "dry-run",
            format!("would deny: {} ({})", r.reason(), detail()),
        );
    }
}
