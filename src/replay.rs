//! `fortress replay --audit DIR --policy NEW.yaml`: the requests an audit trail recorded,
//! re-decided under a new policy by the proxy's own `decide()` (offline, through
//! `policytest::judge`), and the ones whose decision would change, grouped by old → new
//! decision and by route.
//!
//! Tokens are never recorded: a request whose record names a subject is re-decided with the
//! recorded subject, roles and tenant as verified claims (placed where the new policy's claim
//! mapping reads them); one without is re-decided without credentials, and a request refused
//! for its token stays refused for it while the new policy still asks for a token. Records
//! are replayed in trail order against one in-memory state store, each at its recorded time,
//! so rate limits and budgets count as they would have. Reference: docs/policy-testing.md.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Value, json};

use crate::audit::record::{Record, parse_ts};
use crate::policy::route::TenantSource;
use crate::policytest::judge::{self, Bound, Decision, Input, TestPolicy, Verdict};

/// `fortress replay` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The audit directory (`audit.dir`).
    #[arg(long)]
    pub audit: PathBuf,
    /// The policy to judge the recorded requests by.
    #[arg(long)]
    pub policy: PathBuf,
    /// Records from this time on (`2026-01-01`, `2026-01-01T10:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Records before this time.
    #[arg(long)]
    pub until: Option<String>,
    /// Examples printed per group (every change is in `--json`).
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Reasons that come from the running instance (its state, the app, the client's connection),
/// not from the policy: such records are not replayed.
const RUNTIME_REASONS: &[&str] = &[
    "overloaded",
    "limits_unavailable",
    "audit_unavailable",
    "not_ready",
    "keys_unavailable",
    "body_timeout",
    "malformed_body",
];

/// The upstream's failures: the policy had let the request through.
const UPSTREAM_REASONS: &[&str] = &[
    "upstream_unavailable",
    "upstream_failed",
    "upstream_timeout",
];

/// Refusals of a request's credentials (or of the client for failed credentials).
fn credential_refusal(reason: &str) -> bool {
    reason == "too_many_failed_authentications"
        || reason == "credentials_over_http"
        || <crate::error::AuthError as strum::IntoEnumIterator>::iter().any(|e| e.code() == reason)
}

/// The old decision as replay compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    decision: &'static str,
    status: Option<u16>,
    reason: Option<String>,
    route: Option<String>,
}

impl Outcome {
    fn text(&self) -> String {
        let mut s = self.decision.to_string();
        if self.decision == "deny"
            && let Some(st) = self.status
        {
            s.push_str(&format!(" {st}"));
        }
        if let Some(r) = &self.reason {
            s.push_str(&format!(" {r}"));
        }
        s
    }

    fn json(&self) -> Value {
        json!({"decision": self.decision, "status": self.status, "reason": self.reason, "route": self.route})
    }
}

struct Change {
    seq: Option<u64>,
    ts: String,
    record: Record,
    old: Outcome,
    new: Outcome,
}

impl Change {
    fn kind(&self) -> String {
        if self.old.decision == self.new.decision {
            format!("{}: reason changed", self.old.decision)
        } else {
            format!("{} → {}", self.old.decision, self.new.decision)
        }
    }

    fn route(&self) -> String {
        self.old
            .route
            .clone()
            .or_else(|| self.new.route.clone())
            .unwrap_or_else(|| "(no route)".into())
    }

    fn target(&self) -> String {
        let path = self.record.path.as_deref().unwrap_or("?");
        match &self.record.query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        }
    }

    fn who(&self) -> String {
        match &self.record.subject {
            Some(s) => format!(
                "sub={s} roles=[{}] tenant={}",
                self.record.roles.as_deref().unwrap_or_default().join(","),
                self.record.tenant.as_deref().unwrap_or("-")
            ),
            None => "no token".into(),
        }
    }

    fn json(&self) -> Value {
        let r = &self.record;
        json!({
            "seq": self.seq, "ts": self.ts, "request_id": r.request_id, "trace_id": r.trace_id,
            "method": r.method, "path": r.path, "query": r.query, "subject": r.subject,
            "roles": r.roles, "tenant": r.tenant, "requested_tenant": r.requested_tenant,
            "change": self.kind(), "route": self.route(),
            "old": self.old.json(), "new": self.new.json(),
        })
    }
}

/// What a replay found.
#[derive(Default)]
struct Report {
    records: usize,
    replayed: usize,
    allowed_recorded: usize,
    toggles: usize,
    skipped: BTreeMap<&'static str, usize>,
    first: Option<String>,
    last: Option<String>,
    changes: Vec<Change>,
}

/// Runs `fortress replay`: 0 no decision changes, 1 some do, 2 bad input.
pub fn run(args: &ReplayArgs) -> ExitCode {
    match replay(args) {
        Ok((out, changed)) => {
            print!("{out}");
            if changed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("fortress replay: {e}");
            ExitCode::from(2)
        }
    }
}

fn time_arg(flag: &str, v: Option<&String>) -> Result<Option<u64>, String> {
    v.map(|s| {
        parse_ts(s).ok_or_else(|| {
            format!("--{flag} `{s}` is not a time (2026-01-01, 2026-01-01T10:00:00Z)")
        })
    })
    .transpose()
}

/// The report text (or JSON) and whether any decision changes.
pub fn replay(args: &ReplayArgs) -> Result<(String, bool), String> {
    let since = time_arg("since", args.since.as_ref())?;
    let until = time_arg("until", args.until.as_ref())?;
    let policy = TestPolicy::load(&args.policy).map_err(|e| e.to_string())?;
    let bound = Bound::new(policy.compile().map_err(|e| e.to_string())?)?;
    let rt = judge::runtime()?;
    let files = crate::audit::writer::list(&args.audit)
        .map_err(|e| format!("{}: {e}", args.audit.display()))?;
    if files.is_empty() {
        return Err(format!("{}: no audit files", args.audit.display()));
    }
    let tenant_headers = tenant_headers(&bound);
    let mut report = Report::default();
    for (_, path, _) in files {
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Streamed: a day's file can be large.
        let mut reader = std::io::BufReader::new(file);
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            // A partial last line (a crash mid-write) was never acknowledged: not a record.
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            line_no += 1;
            let i = line_no - 1;
            let v: Value = serde_json::from_slice(&buf)
                .map_err(|e| format!("{}:{}: not a record: {e}", path.display(), i + 1))?;
            let Some(ts_ms) = v.get("ts").and_then(Value::as_str).and_then(parse_ts) else {
                continue;
            };
            if until.is_some_and(|u| ts_ms >= u) {
                continue;
            }
            match v.get("event").and_then(Value::as_str) {
                Some("request") => {}
                // The admin API's toggle overrides, applied when they were (before the
                // window too: they were in force during it).
                Some("toggle_change") => {
                    toggle_change(&bound, &rt, &v, &mut report)?;
                    continue;
                }
                _ => continue,
            }
            if since.is_some_and(|s| ts_ms < s) {
                continue;
            }
            let record: Record = serde_json::from_value(v.clone())
                .map_err(|e| format!("{}:{}: not a request record: {e}", path.display(), i + 1))?;
            report.records += 1;
            let ts = v
                .get("ts")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            report.first.get_or_insert_with(|| ts.clone());
            report.last = Some(ts.clone());
            let seq = v.get("seq").and_then(Value::as_u64);
            replay_one(
                &bound,
                &rt,
                &tenant_headers,
                record,
                seq,
                ts,
                ts_ms,
                &mut report,
            )?;
        }
    }
    let changed = !report.changes.is_empty();
    let out = if args.json {
        json_report(&report, &args.audit, &policy, args.examples)
    } else {
        text_report(&report, &args.audit, &policy, args.examples)
    };
    Ok((out, changed))
}

/// An applied `toggle_change` record: the override set in the replay's store, when the new
/// policy has that toggle.
fn toggle_change(
    bound: &Bound,
    rt: &tokio::runtime::Runtime,
    v: &Value,
    report: &mut Report,
) -> Result<(), String> {
    if v.get("decision").and_then(Value::as_str) != Some("applied") {
        return Ok(());
    }
    let detail = v.get("detail");
    let (Some(name), Some(on)) = (
        detail.and_then(|d| d.get("toggle")).and_then(Value::as_str),
        detail.and_then(|d| d.get("new")).and_then(Value::as_bool),
    ) else {
        return Ok(());
    };
    if bound.policy().toggles.list.iter().any(|t| t.name == name) {
        rt.block_on(bound.store().set_toggle(name, Some(on)))
            .map_err(|e| format!("toggle `{name}`: {e:?}"))?;
        report.toggles += 1;
    }
    Ok(())
}

/// Every header the new policy reads a tenant from.
fn tenant_headers(bound: &Bound) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::new();
    for r in bound.policy().router.routes() {
        if let Some(TenantSource::Header(h)) = r.access.tenant.as_ref().map(|t| &t.source)
            && !out.contains(h)
        {
            out.push(h.clone());
        }
    }
    out
}

fn redacted(v: Option<&String>) -> bool {
    v.is_some_and(|s| s.starts_with("hmac-sha256:"))
}

#[allow(clippy::too_many_arguments)]
fn replay_one(
    bound: &Bound,
    rt: &tokio::runtime::Runtime,
    tenant_headers: &[HeaderName],
    record: Record,
    seq: Option<u64>,
    ts: String,
    ts_ms: u64,
    report: &mut Report,
) -> Result<(), String> {
    let reason = record.reason.clone();
    let old_decision = match (record.decision.as_deref(), reason.as_deref()) {
        (Some("allow"), _) => "allow",
        (Some("error"), Some(r)) if UPSTREAM_REASONS.contains(&r) => "allow",
        (Some("deny"), Some(r)) if RUNTIME_REASONS.contains(&r) => {
            *report.skipped.entry("runtime refusal").or_default() += 1;
            return Ok(());
        }
        (Some("deny"), _) => "deny",
        (Some("dry_run_deny"), _) => "dry_run_deny",
        (Some("aborted"), _) => {
            *report.skipped.entry("aborted").or_default() += 1;
            return Ok(());
        }
        _ => {
            *report.skipped.entry("runtime refusal").or_default() += 1;
            return Ok(());
        }
    };
    let (Some(method), Some(path)) = (record.method.as_deref(), record.path.as_deref()) else {
        *report.skipped.entry("no method or path").or_default() += 1;
        return Ok(());
    };
    if path.ends_with("…[truncated]")
        || record
            .query
            .as_ref()
            .is_some_and(|q| q.ends_with("…[truncated]"))
    {
        *report.skipped.entry("truncated target").or_default() += 1;
        return Ok(());
    }
    if redacted(record.tenant.as_ref())
        || redacted(record.requested_tenant.as_ref())
        || redacted(record.client_ip.as_ref())
    {
        *report
            .skipped
            .entry("redacted tenant or client IP")
            .or_default() += 1;
        return Ok(());
    }
    if old_decision == "allow" {
        report.allowed_recorded += 1;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        *report.skipped.entry("no method or path").or_default() += 1;
        return Ok(());
    };
    let mut headers = HeaderMap::new();
    // A header sent more than once was recorded joined with `, `: sent again as it came.
    for (k, v) in record.request_headers.iter().flatten() {
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
            continue;
        };
        for part in v.split(", ") {
            if let Ok(value) = HeaderValue::from_str(part) {
                headers.append(name.clone(), value);
            }
        }
    }
    // A record from before `request_headers` was recorded: the tenant it named, in every header the
    // new policy reads a tenant from.
    if let Some(t) = record
        .requested_tenant
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        for h in tenant_headers {
            if !headers.contains_key(h) {
                headers.insert(h.clone(), t.clone());
            }
        }
    }
    // A recorded subject means the request carried a verified token: the transport rules see
    // credentials (a stand-in: authentication reads the recorded claims, not this header).
    let claims = record.subject.as_ref().map(|s| claims(bound, s, &record));
    if claims.is_some() {
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer fortress-replay-token-not-recorded"),
        );
    }
    let target = match &record.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let peer: IpAddr = record
        .client_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let input = Input {
        method,
        target,
        headers,
        peer,
        tls: record.transport.as_deref() != Some("plain"),
        now_ms: ts_ms,
        claims,
    };
    let verdict = match rt.block_on(bound.decide(&input)) {
        Ok(v) => v,
        Err(_) => {
            *report.skipped.entry("no method or path").or_default() += 1;
            return Ok(());
        }
    };
    report.replayed += 1;
    let old = Outcome {
        decision: old_decision,
        status: record.status,
        reason: if old_decision == "allow" {
            None
        } else {
            reason.clone()
        },
        route: record.route.clone(),
    };
    let mut new = outcome(&verdict);
    // The token is not in the record: a request refused for its credentials, still asked for
    // credentials by the new policy, stays refused for the same reason.
    // (A dry-run refusal for its token becomes the same enforced refusal.)
    if record.subject.is_none()
        && old.decision != "allow"
        && old.reason.as_deref().is_some_and(credential_refusal)
        && new.decision != "allow"
        && new.reason.as_deref().is_some_and(credential_refusal)
    {
        new.reason = old.reason.clone();
        if new.decision == old.decision {
            new.status = old.status;
        }
    }
    let same = old.decision == new.decision
        && (old.decision == "allow" || (old.reason == new.reason && old.status == new.status));
    if !same {
        report.changes.push(Change {
            seq,
            ts,
            record,
            old,
            new,
        });
    }
    Ok(())
}

fn outcome(v: &Verdict) -> Outcome {
    let decision = match v.decision {
        Decision::Allow | Decision::Preflight => "allow",
        Decision::Deny => "deny",
        Decision::DryRunDeny => "dry_run_deny",
    };
    Outcome {
        decision,
        status: v.status.filter(|_| decision == "deny"),
        reason: v.reason().map(str::to_owned),
        route: v.route.clone(),
    }
}

/// The recorded identity as claims where the new policy reads them.
fn claims(bound: &Bound, subject: &str, r: &Record) -> Value {
    let mut out = Value::Object(Default::default());
    let Some(auth) = bound.policy().auth.as_ref() else {
        return out;
    };
    let map = &auth.jwt.claims;
    set(&mut out, &map.subject, Value::from(subject));
    set(
        &mut out,
        &map.roles,
        Value::from(r.roles.clone().unwrap_or_default()),
    );
    if let Some(t) = &r.tenant {
        set(&mut out, &map.tenant, Value::from(t.clone()));
    }
    out
}

/// Sets a dotted path (`realm_access.roles`) in a JSON object.
fn set(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        if parts.peek().is_none() {
            obj.insert(p.to_owned(), value);
            return;
        }
        cur = obj
            .entry(p.to_owned())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

const NOTE: &str = "tokens are never recorded: each request is re-decided with its recorded \
subject, roles and tenant as verified claims (signature, expiry, audience and issuer are not \
judged again); a request refused for its token stays refused for it while the new policy \
asks for one";

/// Groups in print order: (kind, route) → changes.
fn groups(report: &Report) -> Vec<((String, String), Vec<&Change>)> {
    let rank = |k: &str| match k {
        "allow → deny" => 0,
        "deny → allow" => 1,
        _ => 2,
    };
    let mut map: BTreeMap<(u8, String, String), Vec<&Change>> = BTreeMap::new();
    for c in &report.changes {
        let kind = c.kind();
        map.entry((rank(&kind), kind, c.route()))
            .or_default()
            .push(c);
    }
    map.into_iter().map(|((_, k, r), v)| ((k, r), v)).collect()
}

fn text_report(report: &Report, dir: &Path, policy: &TestPolicy, examples: usize) -> String {
    let mut out = format!(
        "fortress replay: {} request records in {} ({} to {}), re-decided under {} (policy hash {})\n",
        report.records,
        dir.display(),
        report.first.as_deref().unwrap_or("-"),
        report.last.as_deref().unwrap_or("-"),
        policy.path.display(),
        policy.hash
    );
    out.push_str(&format!("note: {NOTE}\n"));
    if report.allowed_recorded == 0 {
        out.push_str(
            "note: the trail records no allowed request (audit.include has no `all`): only \
             refusals can be re-judged, so changes to allow → deny cannot show\n",
        );
    }
    if report.toggles > 0 {
        out.push_str(&format!(
            "note: {} toggle change{} from the trail applied when made\n",
            report.toggles,
            if report.toggles == 1 { "" } else { "s" }
        ));
    }
    if !report.skipped.is_empty() {
        let s: Vec<String> = report
            .skipped
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        out.push_str(&format!("skipped: {}\n", s.join(", ")));
    }
    out.push_str(&format!(
        "{} of {} replayed requests change decision\n",
        report.changes.len(),
        report.replayed
    ));
    let mut last_kind = String::new();
    for ((kind, route), changes) in groups(report) {
        if kind != last_kind {
            let n = report.changes.iter().filter(|c| c.kind() == kind).count();
            out.push_str(&format!("\n{kind}: {n}\n"));
            last_kind = kind.clone();
        }
        out.push_str(&format!("  route {route}: {}\n", changes.len()));
        for c in changes.iter().take(examples) {
            let moved = match (&c.old.route, &c.new.route) {
                (a, b) if a == b => String::new(),
                (_, Some(b)) => format!(" (now route {b})"),
                (_, None) => " (now no route)".into(),
            };
            out.push_str(&format!(
                "    {} {} {} {}: {} → {}{moved} [request {}]\n",
                c.ts,
                c.record.method.as_deref().unwrap_or("?"),
                c.target(),
                c.who(),
                c.old.text(),
                c.new.text(),
                c.record.request_id.as_deref().unwrap_or("-"),
            ));
        }
        if changes.len() > examples {
            out.push_str(&format!("    … {} more\n", changes.len() - examples));
        }
    }
    out
}

fn json_report(report: &Report, dir: &Path, policy: &TestPolicy, examples: usize) -> String {
    let groups: Vec<Value> = groups(report)
        .into_iter()
        .map(|((kind, route), changes)| {
            json!({
                "change": kind, "route": route, "count": changes.len(),
                "examples": changes.iter().take(examples).map(|c| c.json()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let v = json!({
        "audit": dir.display().to_string(),
        "policy": policy.path.display().to_string(),
        "policy_version": policy.hash,
        "records": report.records,
        "replayed": report.replayed,
        "allowed_recorded": report.allowed_recorded,
        "toggle_changes": report.toggles,
        "skipped": report.skipped,
        "from": report.first, "to": report.last,
        "note": NOTE,
        "changed": report.changes.len(),
        "groups": groups,
        "changes": report.changes.iter().map(Change::json).collect::<Vec<_>>(),
    });
    format!("{v}\n")
}
