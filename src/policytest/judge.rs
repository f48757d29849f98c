//! The decision, offline: a policy loaded with its key material replaced by a generated test
//! key, bound to in-memory live state, and one request at a time run through the proxy's own
//! [`decide`](crate::pipeline::decide::decide) (as `fortress explain` does: no network, no
//! permit taken, no failure counted). `fortress test`, `fortress replay` and `fortress diff`
//! load policies through here.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::request::Parts;
use http::{HeaderMap, Method, Version};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::raw::{RawConfig, RawSecret};
use crate::config::yaml::{self, ConfigError, Located};
use crate::config::{Env, LoadError, Policy, compile, short_hash};
use crate::error::Rejection;
use crate::metrics::Metrics;
use crate::pipeline::conn::ConnInfo;
use crate::pipeline::context::RequestContext;
use crate::pipeline::decide::{self, Observer, Stage, Step};
use crate::state::Snapshot;
use crate::store::live::Live;
use crate::store::{MemoryStore, StateStore};

/// The name the test key is given to the compiler under. It is never read from the process
/// environment: [`TestEnv`] answers it, and nothing else.
const TEST_KEY_VAR: &str = "fortress test key (not an environment variable)";

/// The environment a policy is compiled in for tests: the test key and nothing else (so a
/// result never depends on the machine's environment, and no secret is needed).
struct TestEnv<'a> {
    key: &'a str,
}

impl Env for TestEnv<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (name == TEST_KEY_VAR).then(|| self.key.to_owned())
    }
}

/// A policy file as tests, replay and diff load it.
#[derive(Debug, Clone)]
pub struct TestPolicy {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The HMAC key test tokens are signed with (generated per run).
    pub key: String,
    /// The policy hash (the same `fortress check` prints).
    pub hash: String,
}

impl TestPolicy {
    /// Reads and compiles `path` once (so every error is reported now, as `FILE:LINE:COL`).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let fail = |e: ConfigError| LoadError {
            file: path.to_path_buf(),
            errors: vec![e],
        };
        let bytes = std::fs::read(path)
            .map_err(|e| fail(ConfigError::whole(format!("cannot read file: {e}"))))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| fail(ConfigError::whole("file is not valid UTF-8")))?;
        let policy = Self {
            path: path.to_path_buf(),
            hash: short_hash(text.as_bytes()),
            text,
            key: test_key(),
        };
        policy.compile()?;
        Ok(policy)
    }

    /// Compiles the policy with its key material replaced: the JWT secret(s), PEM keys and
    /// JWKS by the test key (HS256), the audit keys by the test key, and the identity
    /// assertion (which signs after the decision and decides nothing) left out.
    pub fn compile(&self) -> Result<Policy, LoadError> {
        let fail = |errors| LoadError {
            file: self.path.clone(),
            errors,
        };
        let mut raw: RawConfig = yaml::from_str(&self.text).map_err(fail)?;
        neutralize(&mut raw);
        let base = self.path.parent().unwrap_or_else(|| Path::new("."));
        let env = TestEnv { key: &self.key };
        let mut policy =
            compile::compile(raw, base, self.hash.clone(), &env).map_err(|mut e| {
                yaml::sort(&mut e);
                fail(e)
            })?;
        if let Some(auth) = policy.auth.as_mut() {
            auth.jwt.jwks = None;
            auth.jwt.static_keys.clear();
        }
        Ok(policy)
    }
}

/// 32 random bytes, hex.
fn test_key() -> String {
    let mut bytes = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Not a secret anyway: tests only need a key the policy's own material is not.
        bytes = *b"fortress-policy-test-key-0123456";
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn test_secret(pos: crate::config::Pos) -> RawSecret {
    RawSecret {
        env: Some(Located::new(TEST_KEY_VAR.to_owned(), pos)),
        file: None,
        value: None,
    }
}

/// Replaces every key the policy reads from the environment or from files.
fn neutralize(raw: &mut RawConfig) {
    if let Some(a) = raw.authentication.as_mut() {
        let jwt = &mut a.jwt;
        let pos = jwt.issuer.pos;
        jwt.secret = Some(test_secret(pos));
        jwt.secrets.clear();
        jwt.keys.clear();
        jwt.algorithms = vec![Located::new("HS256".to_owned(), pos)];
    }
    if let Some(a) = raw.audit.as_mut() {
        if a.hmac_key.is_some() {
            a.hmac_key = Some(test_secret(Default::default()));
        }
        if a.redact_key.is_some() {
            a.redact_key = Some(test_secret(Default::default()));
        }
    }
    raw.identity_assertion = None;
}

/// How a request was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded.
    Allow,
    /// Refused (by the policy, or because a condition fails: every refusal).
    Deny,
    /// Forwarded, but a dry-run route recorded a refusal.
    DryRunDeny,
    /// A CORS preflight answered by fortress (204).
    Preflight,
}

impl Decision {
    /// The name used in tables, output and audit records.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::DryRunDeny => "dry_run_deny",
            Decision::Preflight => "preflight",
        }
    }
}

/// The outcome of one request.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Allow, deny, dry-run deny or preflight.
    pub decision: Decision,
    /// The status fortress answers with (`None` when the request is forwarded).
    pub status: Option<u16>,
    /// The refusal (or the dry-run refusal).
    pub rejection: Option<Rejection>,
    /// The stage that refused.
    pub stage: Option<Stage>,
    /// The matched route's name.
    pub route: Option<String>,
}

impl Verdict {
    /// The detailed reason code, if refused.
    pub fn reason(&self) -> Option<&'static str> {
        self.rejection.map(Rejection::reason)
    }
}

/// A request to decide.
#[derive(Debug, Clone)]
pub struct Input {
    /// Method.
    pub method: Method,
    /// Path and query, as sent.
    pub target: String,
    /// Headers (a `Host` is added when missing).
    pub headers: HeaderMap,
    /// The TCP peer.
    pub peer: IpAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Now, in ms since the epoch.
    pub now_ms: u64,
    /// Claims taken as verified (replay); `None`: the token in the headers is verified.
    pub claims: Option<Value>,
}

/// A compiled policy bound to its own in-memory live state and clock.
pub struct Bound {
    snapshot: Arc<Snapshot>,
    now: Arc<AtomicU64>,
    // Keeps the metric registry the snapshot's handles point into alive.
    _metrics: Metrics,
}

impl Bound {
    /// Binds `policy` to fresh, empty live state (no revocations, no counters).
    pub fn new(policy: Policy) -> Result<Self, String> {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new(1 << 16));
        let now = Arc::new(AtomicU64::new(0));
        let live = Live::new(store).with_clock(Clock::Manual(now.clone()));
        let metrics = Metrics::new().map_err(|e| format!("metrics: {e}"))?;
        let snapshot = Arc::new(Snapshot::bind(policy, &live, &metrics));
        Ok(Self {
            snapshot,
            now,
            _metrics: metrics,
        })
    }

    /// The bound policy.
    pub fn policy(&self) -> &Policy {
        &self.snapshot.policy
    }

    /// The bound state store (toggle overrides, revocations).
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.snapshot.store
    }

    /// Runs the proxy's decision on `input`.
    pub async fn decide(&self, input: &Input) -> Result<Verdict, String> {
        self.now.store(input.now_ms, Ordering::Relaxed);
        let mut headers = input.headers.clone();
        if !headers.contains_key(http::header::HOST) {
            headers.insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        let uri: http::Uri = input
            .target
            .parse()
            .map_err(|_| format!("`{}` is not a request target", input.target))?;
        let mut parts: Parts = http::Request::builder()
            .method(input.method.clone())
            .uri(uri)
            .version(Version::HTTP_11)
            .body(())
            .map_err(|e| format!("request: {e}"))?
            .into_parts()
            .0;
        parts.headers = headers;
        let conn = Arc::new(ConnInfo::new(SocketAddr::new(input.peer, 40000), input.tls));
        let mut ctx = RequestContext::new(
            self.snapshot.clone(),
            conn,
            None,
            parts.method.clone(),
            &parts.headers,
        );
        ctx.claims_override = input.claims.clone();
        let mut obs = Refusal::default();
        let result = decide::decide(&mut ctx, &parts, &mut obs).await;
        let route = ctx.route().map(|r| r.name.to_string());
        let verdict = match result {
            Ok(()) if crate::pipeline::cors::is_preflight(&ctx) => Verdict {
                decision: Decision::Preflight,
                status: Some(204),
                rejection: None,
                stage: None,
                route,
            },
            Ok(()) => match ctx.dry_run_denial() {
                Some(r) => Verdict {
                    decision: Decision::DryRunDeny,
                    status: None,
                    rejection: Some(r),
                    stage: obs.stage,
                    route,
                },
                None => Verdict {
                    decision: Decision::Allow,
                    status: None,
                    rejection: None,
                    stage: None,
                    route,
                },
            },
            Err(r) => Verdict {
                decision: Decision::Deny,
                status: Some(r.status().0.as_u16()),
                rejection: Some(r),
                stage: obs.stage,
                route,
            },
        };
        Ok(verdict)
    }
}

/// Remembers the first stage that refused; consumes nothing (like explain).
#[derive(Default)]
struct Refusal {
    stage: Option<Stage>,
}

impl Observer for Refusal {
    fn passed(&mut self, _: Stage, _: &RequestContext, _: &Parts, _: Step) {}

    fn refused(&mut self, stage: Stage, _: &RequestContext, _: &Parts, _: Rejection, _: bool) {
        self.stage.get_or_insert(stage);
    }

    fn live(&self) -> bool {
        false
    }
}

/// A single-threaded runtime for the offline decisions.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}
