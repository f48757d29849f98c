//! Running a decision table: each case built into a request (its token minted with the test
//! key), decided by the real `decide()` on a fresh in-memory state, and compared with what
//! the case expects.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use super::judge::{Bound, Decision, Input, TestPolicy, Verdict};
use super::table::{ExpectDecision, RawCase, RawTransport, Table, TokenProblem, located};
use crate::config::yaml::Pos;

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Where the case starts.
    pub line: u32,
    /// `None`: passed; else why it failed (one line).
    pub failure: Option<String>,
    /// The route the request reached.
    pub route: Option<String>,
}

/// One tests file's results.
#[derive(Debug, Clone)]
pub struct TableResult {
    /// The tests file.
    pub path: PathBuf,
    /// The policy it ran against.
    pub policy: PathBuf,
    /// The policy's hash.
    pub policy_hash: String,
    /// The cases, in file order.
    pub cases: Vec<CaseResult>,
    /// Routes of the policy no case reached, in policy order.
    pub uncovered: Vec<String>,
    /// Routes of the policy.
    pub routes: usize,
}

impl TableResult {
    /// The failed cases.
    pub fn failures(&self) -> impl Iterator<Item = &CaseResult> {
        self.cases.iter().filter(|c| c.failure.is_some())
    }

    /// The failure lines, `FILE:LINE: case "NAME": why`.
    pub fn failure_lines(&self) -> Vec<String> {
        self.failures()
            .map(|c| {
                format!(
                    "{}:{}: case \"{}\": {}",
                    self.path.display(),
                    c.line,
                    c.name,
                    c.failure.as_deref().unwrap_or_default()
                )
            })
            .collect()
    }
}

/// Runs every case of `table` against `policy`.
pub fn run_table(
    table: &Table,
    policy: &TestPolicy,
    rt: &tokio::runtime::Runtime,
) -> Result<TableResult, String> {
    let mut cases = Vec::new();
    let mut reached = BTreeSet::new();
    let mut all_routes = Vec::new();
    for case in &table.raw.cases {
        let (result, routes) = run_case(table, &case.value, case.pos, policy, rt)?;
        if all_routes.is_empty() {
            all_routes = routes;
        }
        if let Some(r) = &result.route {
            reached.insert(r.clone());
        }
        cases.push(result);
    }
    if all_routes.is_empty() {
        let bound = Bound::new(policy.compile().map_err(|e| e.to_string())?)?;
        all_routes = route_names(&bound);
    }
    let uncovered = all_routes
        .iter()
        .filter(|r| !reached.contains(*r))
        .cloned()
        .collect();
    Ok(TableResult {
        path: table.path.clone(),
        policy: policy.path.clone(),
        policy_hash: policy.hash.clone(),
        cases,
        uncovered,
        routes: all_routes.len(),
    })
}

fn route_names(bound: &Bound) -> Vec<String> {
    bound
        .policy()
        .router
        .routes()
        .iter()
        .map(|r| r.name.to_string())
        .collect()
}

/// One case on fresh state: its own compiled policy, store and clock.
fn run_case(
    table: &Table,
    case: &RawCase,
    pos: Pos,
    policy: &TestPolicy,
    rt: &tokio::runtime::Runtime,
) -> Result<(CaseResult, Vec<String>), String> {
    let bound = Bound::new(policy.compile().map_err(|e| e.to_string())?)?;
    let routes = route_names(&bound);
    let mut result = CaseResult {
        name: case.name.value.clone(),
        line: pos.line,
        failure: None,
        route: None,
    };
    let input = match build(table, case, policy, &bound) {
        Ok(i) => i,
        Err(e) => {
            result.failure = Some(e);
            return Ok((result, routes));
        }
    };
    if let Err(e) = prepare(table, case, &bound, &input, rt) {
        result.failure = Some(e);
        return Ok((result, routes));
    }
    let times = case.request.repeat.as_ref().map_or(1, |r| r.value.max(1));
    let mut verdict = None;
    for _ in 0..times {
        verdict = Some(rt.block_on(bound.decide(&input)));
    }
    let verdict = match verdict {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            result.failure = Some(e);
            return Ok((result, routes));
        }
        None => return Err("no request was sent".into()),
    };
    result.route = verdict.route.clone();
    result.failure = compare(case, &verdict);
    Ok((result, routes))
}

/// The state a case asks for: toggle overrides, a revoked subject.
fn prepare(
    table: &Table,
    case: &RawCase,
    bound: &Bound,
    input: &Input,
    rt: &tokio::runtime::Runtime,
) -> Result<(), String> {
    let r = &case.request;
    let defaults = table.raw.defaults.as_ref().map(|d| &d.toggles);
    let toggles = defaults
        .into_iter()
        .flatten()
        .filter(|(k, _)| !r.toggles.contains_key(*k))
        .chain(&r.toggles);
    for (name, on) in toggles {
        if !bound.policy().toggles.list.iter().any(|t| t.name == *name) {
            return Err(located(
                &table.path,
                Some(on.pos),
                &format!("the policy has no toggle `{name}`"),
            ));
        }
        rt.block_on(bound.store().set_toggle(name, Some(on.value)))
            .map_err(|e| format!("toggle `{name}`: {e:?}"))?;
    }
    if r.token.as_ref().map(|t| t.value) == Some(TokenProblem::Revoked) {
        let subject = r
            .identity
            .as_ref()
            .and_then(|id| table.raw.identities.get(&id.value))
            .and_then(|claims| {
                let path = bound
                    .policy()
                    .auth
                    .as_ref()
                    .map_or("sub", |a| a.jwt.claims.subject.as_str());
                let mut parts = path.split('.');
                let first = claims.value.get(parts.next()?)?;
                parts
                    .try_fold(first, |v, p| v.get(p))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| "`token: revoked` needs an identity with a subject".to_string())?;
        let now = input.now_ms / 1000;
        let revocation = crate::store::Revocation::Subject {
            subject,
            before: now + 1,
            expires_at: now + 86_400,
            reason: "fortress test".into(),
        };
        rt.block_on(bound.store().revoke(input.now_ms, revocation))
            .map_err(|e| format!("revocation: {e:?}"))?;
    }
    Ok(())
}

/// What a verdict looks like in a failure line.
pub fn describe(v: &Verdict) -> String {
    let mut out = v.decision.name().to_string();
    if let Some(s) = v.status {
        out.push_str(&format!(" {s}"));
    }
    if let Some(r) = v.reason() {
        out.push_str(&format!(" {r}"));
    }
    match &v.route {
        Some(r) => out.push_str(&format!(" (route {r}")),
        None => out.push_str(" (no route"),
    }
    if let Some(s) = v.stage {
        out.push_str(&format!(", stage {}", s.name()));
    }
    out.push(')');
    out
}

fn compare(case: &RawCase, v: &Verdict) -> Option<String> {
    let e = &case.expect;
    let want = match e.decision.value {
        ExpectDecision::Allow => Decision::Allow,
        ExpectDecision::Deny => Decision::Deny,
        ExpectDecision::DryRunDeny => Decision::DryRunDeny,
        ExpectDecision::Preflight => Decision::Preflight,
    };
    let mut wrong = Vec::new();
    if want != v.decision {
        wrong.push(format!("decision {}", want.name()));
    }
    if let Some(s) = &e.status
        && v.status != Some(s.value)
    {
        wrong.push(format!("status {}", s.value));
    }
    if let Some(r) = &e.reason
        && v.reason() != Some(r.value.as_str())
    {
        wrong.push(format!("reason {}", r.value));
    }
    if let Some(r) = &e.route
        && v.route.as_deref() != Some(r.value.as_str())
    {
        wrong.push(format!("route {}", r.value));
    }
    if !e.headers.is_empty() {
        match v.rejection.filter(|_| v.decision == Decision::Deny) {
            None => wrong.push("refusal headers (the request was not refused)".into()),
            Some(r) => {
                let resp = r.to_response("fortress-test");
                for (name, value) in &e.headers {
                    let got = resp
                        .headers()
                        .get_all(name.as_str())
                        .iter()
                        .map(|v| v.to_str().unwrap_or("<not visible ASCII>"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if got != *value {
                        wrong.push(format!(
                            "header {name}: {value} (got {})",
                            if got.is_empty() { "none" } else { &got }
                        ));
                    }
                }
            }
        }
    }
    if wrong.is_empty() {
        None
    } else {
        Some(format!(
            "expected {}; got {}",
            wrong.join(", "),
            describe(v)
        ))
    }
}

/// The request a case describes.
fn build(
    table: &Table,
    case: &RawCase,
    policy: &TestPolicy,
    bound: &Bound,
) -> Result<Input, String> {
    let r = &case.request;
    let here = |pos: Pos, m: &str| located(&table.path, Some(pos), m);
    let defaults = table.raw.defaults.as_ref();
    let method = match &r.method {
        Some(m) => Method::from_bytes(m.value.as_bytes())
            .map_err(|_| here(m.pos, &format!("`{}` is not a method", m.value)))?,
        None => Method::GET,
    };
    let mut target = r.path.value.clone();
    if !r.query.is_empty() {
        let q: Vec<String> = r
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", v.value))
            .collect();
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(&q.join("&"));
    }
    let mut headers = HeaderMap::new();
    let default_headers = defaults.map(|d| &d.headers);
    for (k, v) in default_headers
        .into_iter()
        .flatten()
        .filter(|(k, _)| !r.headers.keys().any(|own| own.eq_ignore_ascii_case(k)))
        .chain(&r.headers)
    {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| here(v.pos, &format!("`{k}` is not a header name")))?;
        let value = HeaderValue::from_str(&v.value)
            .map_err(|_| here(v.pos, &format!("`{}` is not a header value", v.value)))?;
        headers.append(name, value);
    }
    let time = r
        .time
        .as_ref()
        .or_else(|| defaults.and_then(|d| d.time.as_ref()));
    let now_ms = match time {
        Some(t) => crate::audit::record::parse_ts(&t.value).ok_or_else(|| {
            here(
                t.pos,
                &format!(
                    "`{}` is not an RFC 3339 UTC time (2026-01-01T09:00:00Z)",
                    t.value
                ),
            )
        })?,
        None => crate::clock::Clock::System.now_ms(),
    };
    let transport = merge(
        r.transport.as_ref(),
        defaults.and_then(|d| d.transport.as_ref()),
    );
    let ip = |l: &crate::config::yaml::Located<String>| -> Result<IpAddr, String> {
        l.value
            .parse()
            .map_err(|_| here(l.pos, &format!("`{}` is not an IP address", l.value)))
    };
    let client = transport.client_ip.as_ref().map(ip).transpose()?;
    let peer = match (&transport.peer, client) {
        (Some(p), _) => ip(p)?,
        (None, Some(c)) => c,
        (None, None) => IpAddr::from([127, 0, 0, 1]),
    };
    if let Some(c) = client
        && c != peer
    {
        if !bound.policy().server.is_trusted(peer) {
            let at = transport.client_ip.as_ref().map_or(r.path.pos, |l| l.pos);
            return Err(here(
                at,
                &format!(
                    "client_ip {c} differs from the peer {peer}, which is not a trusted proxy \
                     (server.trusted_proxies): fortress would not read X-Forwarded-For from it"
                ),
            ));
        }
        let forwarded = HeaderValue::from_str(&c.to_string()).map_err(|e| e.to_string())?;
        headers.append(HeaderName::from_static("x-forwarded-for"), forwarded);
    }
    let now = now_ms / 1000;
    let token = match (&r.identity, r.token.as_ref().map(|t| t.value)) {
        (_, Some(TokenProblem::Missing)) => None,
        (_, Some(TokenProblem::Malformed)) => Some("not-a-jwt".to_owned()),
        (Some(id), problem) => {
            let claims = table
                .raw
                .identities
                .get(&id.value)
                .map(|c| &c.value)
                .ok_or_else(|| here(id.pos, &format!("unknown identity `{}`", id.value)))?;
            Some(mint(claims, problem, policy, bound, now)?)
        }
        (None, _) => None,
    };
    if let Some(t) = token {
        let value = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?;
        headers.insert(http::header::AUTHORIZATION, value);
    }
    Ok(Input {
        method,
        target,
        headers,
        peer,
        tls: transport.tls.unwrap_or(true),
        now_ms,
        claims: None,
    })
}

fn merge(own: Option<&RawTransport>, default: Option<&RawTransport>) -> RawTransport {
    let own = own.cloned().unwrap_or_default();
    let default = default.cloned().unwrap_or_default();
    // A case that names its client but not its peer is that client, whatever the default
    // peer is.
    let default_peer = if own.client_ip.is_some() {
        None
    } else {
        default.peer
    };
    RawTransport {
        tls: own.tls.or(default.tls),
        peer: own.peer.or(default_peer),
        client_ip: own.client_ip.or(default.client_ip),
    }
}

/// A token with `claims` (plus `iss`, `aud`, `iat`, `exp` unless given), spoiled as asked,
/// signed with the test key.
fn mint(
    claims: &std::collections::BTreeMap<String, Value>,
    problem: Option<TokenProblem>,
    policy: &TestPolicy,
    bound: &Bound,
    now: u64,
) -> Result<String, String> {
    let jwt = bound.policy().auth.as_ref().map(|a| &a.jwt);
    let leeway = jwt.map_or(0, |j| j.leeway.as_secs());
    let mut c: Map<String, Value> = claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let issuer = jwt.map_or("fortress-test", |j| j.issuer.as_str());
    let audience = jwt
        .and_then(|j| j.audiences.first())
        .map_or("fortress-test", String::as_str);
    c.entry("iss").or_insert_with(|| issuer.into());
    c.entry("aud").or_insert_with(|| audience.into());
    c.entry("iat").or_insert_with(|| now.into());
    c.entry("exp").or_insert_with(|| (now + 3600).into());
    let mut key = policy.key.clone();
    match problem {
        Some(TokenProblem::Expired) => {
            let exp = now.saturating_sub(leeway + 3600);
            c.insert("exp".into(), exp.into());
            c.insert("iat".into(), exp.saturating_sub(3600).into());
        }
        Some(TokenProblem::NotYetValid) => {
            c.insert("nbf".into(), (now + leeway + 3600).into());
        }
        Some(TokenProblem::WrongAudience) => {
            c.insert("aud".into(), "fortress-test-other-audience".into());
        }
        Some(TokenProblem::WrongIssuer) => {
            c.insert("iss".into(), "fortress-test-other-issuer".into());
        }
        Some(TokenProblem::BadSignature) => key = format!("not-{key}"),
        Some(TokenProblem::Unsigned) => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(Value::Object(c).to_string());
            return Ok(format!("{header}.{payload}."));
        }
        Some(TokenProblem::Missing | TokenProblem::Malformed | TokenProblem::Revoked) | None => {}
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Value::Object(c),
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .map_err(|e| format!("cannot sign the test token: {e}"))
}
