//! The decision-table file (`*.tests.yaml`): loaded strictly with the config loader
//! (`config/yaml`), so an unknown key or a wrong type is an error at `FILE:LINE:COL` and each
//! case knows the line it starts on. Reference: docs/policy-testing.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::yaml::{self, ConfigError, Located, Pos};

/// A tests file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    /// The policy these cases test, relative to this file (a policy named on the command
    /// line takes its place).
    #[serde(default)]
    pub policy: Option<Located<String>>,
    /// Named claim sets; a case's `as: NAME` sends a token with these claims, minted at run
    /// time with the test key. `iss`, `aud`, `iat` and `exp` are added unless given.
    #[serde(default)]
    pub identities: BTreeMap<String, Located<BTreeMap<String, Value>>>,
    /// Values every case starts from.
    #[serde(default)]
    pub defaults: Option<RawDefaults>,
    /// The cases, in order.
    pub cases: Vec<Located<RawCase>>,
}

/// `defaults:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Headers every request carries (a case's own headers win).
    #[serde(default)]
    pub headers: BTreeMap<String, Located<String>>,
    /// The transport of every request (a case's own fields win).
    #[serde(default)]
    pub transport: Option<RawTransport>,
    /// The time of every request (RFC 3339).
    #[serde(default)]
    pub time: Option<Located<String>>,
    /// Toggle overrides of every case (a case's own win).
    #[serde(default)]
    pub toggles: BTreeMap<String, Located<bool>>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCase {
    /// What the case shows (printed on failure).
    pub name: Located<String>,
    /// The request.
    pub request: RawRequest,
    /// The expected outcome.
    pub expect: RawExpect,
}

/// `request:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    /// Method (default GET).
    #[serde(default)]
    pub method: Option<Located<String>>,
    /// Path as the client sends it (it may carry a query).
    pub path: Located<String>,
    /// Query parameters, appended to the path's query (`key=value`, as written).
    #[serde(default)]
    pub query: BTreeMap<String, Located<String>>,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Located<String>>,
    /// The identity whose token the request carries (`Authorization: Bearer`).
    #[serde(default, rename = "as")]
    pub identity: Option<Located<String>>,
    /// Something wrong with the token.
    #[serde(default)]
    pub token: Option<Located<TokenProblem>>,
    /// How the request arrives.
    #[serde(default)]
    pub transport: Option<RawTransport>,
    /// When it is sent (RFC 3339, e.g. `2026-01-01T09:00:00Z`; default: now).
    #[serde(default)]
    pub time: Option<Located<String>>,
    /// Send the request this many times (rate limits, budgets); the last one is judged.
    #[serde(default)]
    pub repeat: Option<Located<u32>>,
    /// Toggle overrides in force (as the admin API sets them): `{ NAME: true | false }`.
    #[serde(default)]
    pub toggles: BTreeMap<String, Located<bool>>,
}

/// `transport:`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransport {
    /// Over TLS (default true).
    #[serde(default)]
    pub tls: Option<bool>,
    /// The TCP peer's address (default: `client_ip`, else 127.0.0.1).
    #[serde(default)]
    pub peer: Option<Located<String>>,
    /// The client's address: the peer itself, or, when the peer is a trusted proxy, sent as
    /// `X-Forwarded-For`.
    #[serde(default)]
    pub client_ip: Option<Located<String>>,
}

/// What is wrong with the token a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenProblem {
    /// `exp` in the past (beyond the leeway).
    Expired,
    /// `nbf` in the future (beyond the leeway).
    NotYetValid,
    /// An `aud` the policy does not accept.
    WrongAudience,
    /// An `iss` other than the policy's.
    WrongIssuer,
    /// `alg: none`, no signature.
    Unsigned,
    /// Signed with another key.
    BadSignature,
    /// Not a JWT.
    Malformed,
    /// No token at all (even with `as`).
    Missing,
    /// A valid token whose subject has been revoked (as `POST /admin/revocations` does).
    Revoked,
}

/// `expect:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    /// `allow`, `deny`, `dry_run_deny` or `preflight`.
    pub decision: Located<ExpectDecision>,
    /// The status fortress answers with (refusals and preflights).
    #[serde(default)]
    pub status: Option<Located<u16>>,
    /// The detailed reason code (`missing_permission`, `tenant_mismatch`, …).
    #[serde(default)]
    pub reason: Option<Located<String>>,
    /// The matched route's name.
    #[serde(default)]
    pub route: Option<Located<String>>,
    /// Headers of the refusal (`WWW-Authenticate`, `Allow`, `Retry-After`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The expected decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectDecision {
    /// Forwarded.
    Allow,
    /// Refused.
    Deny,
    /// Forwarded by a dry-run route that recorded a refusal.
    DryRunDeny,
    /// A CORS preflight answered 204.
    Preflight,
}

/// Most times one case may send its request.
pub const MAX_REPEAT: u32 = 10_000;

/// A loaded tests file.
#[derive(Debug)]
pub struct Table {
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub raw: RawTable,
}

/// An error in a tests file, `FILE:LINE:COL: message`.
pub fn located(path: &Path, pos: Option<Pos>, message: &str) -> String {
    match pos {
        Some(p) => format!("{}:{}:{}: {message}", path.display(), p.line, p.col),
        None => format!("{}: {message}", path.display()),
    }
}

impl Table {
    /// Reads a tests file; every error is returned, each as `FILE:LINE:COL: message`.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![located(path, None, &format!("cannot read file: {e}"))])?;
        let raw: RawTable = yaml::from_str(&text).map_err(|errors| render(path, &errors))?;
        let mut errors = Vec::new();
        let mut names = std::collections::HashSet::new();
        for case in &raw.cases {
            let name = &case.value.name;
            if !names.insert(name.value.as_str()) {
                errors.push(located(
                    path,
                    Some(name.pos),
                    &format!("case name `{}` is used twice", name.value),
                ));
            }
            let r = &case.value.request;
            if let Some(n) = &r.repeat
                && !(1..=MAX_REPEAT).contains(&n.value)
            {
                errors.push(located(
                    path,
                    Some(n.pos),
                    &format!("`repeat` must be between 1 and {MAX_REPEAT}"),
                ));
            }
            if let Some(id) = &r.identity
                && !raw.identities.contains_key(&id.value)
            {
                errors.push(located(
                    path,
                    Some(id.pos),
                    &format!("unknown identity `{}`", id.value),
                ));
            }
            if let Some(t) = &r.token
                && r.identity.is_none()
                && !matches!(t.value, TokenProblem::Missing | TokenProblem::Malformed)
            {
                errors.push(located(
                    path,
                    Some(t.pos),
                    "a token problem needs an identity (`as: NAME`) to spoil",
                ));
            }
        }
        if raw.cases.is_empty() {
            errors.push(located(path, None, "no cases"));
        }
        if errors.is_empty() {
            Ok(Self {
                path: path.to_path_buf(),
                raw,
            })
        } else {
            Err(errors)
        }
    }

    /// The policy the file names, resolved against the file's directory.
    pub fn policy_path(&self) -> Option<PathBuf> {
        let p = self.raw.policy.as_ref()?;
        let base = self.path.parent().unwrap_or_else(|| Path::new("."));
        Some(crate::config::compile::resolve(base, &p.value))
    }
}

fn render(path: &Path, errors: &[ConfigError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| located(path, e.pos, &e.message))
        .collect()
}
