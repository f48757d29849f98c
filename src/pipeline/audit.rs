//! The request's audit record: whether it needs one (`audit.include` against what became of
//! it), what the record says, and — in `strict` mode — holding the response until the record
//! is written. A record the trail cannot take turns the response into 503
//! `audit_unavailable`: no record, no response.
//!
//! * Before forwarding ([`gate`]): an allowed request that will need a record is refused at
//!   once while the sink is failing, so the upstream never acts on a request that cannot be
//!   recorded.
//! * At the response head ([`commit`]): the record (decision, reason, status, who, what,
//!   latency to the response head) goes to the writer; `strict` waits for it.
//! * Later events of the same request (a stream violation, an abort under `include: [all]`)
//!   are recorded without waiting ([`event`]).

use http::uri::PathAndQuery;

use super::context::{Outcome, RequestContext};
use crate::audit::{Event, Record};
use crate::error::Rejection;
use crate::policy::audit::{AuditSettings, Durability, Include};

/// Longest path or query a record holds; longer ones are cut (at a character boundary) and
/// end in `…[truncated]`. The head limits bound them anyway; this bounds the trail's growth
/// under a flood of refused long requests.
pub const MAX_TARGET: usize = 4096;

/// The active policy's audit settings, when the trail is on.
fn settings(ctx: &RequestContext) -> Option<&AuditSettings> {
    ctx.audit.as_ref()?;
    ctx.snapshot.policy.audit.as_ref()
}

/// Whether what became of the request needs a record.
pub fn needed(ctx: &RequestContext, s: &AuditSettings) -> bool {
    let inc = s.include;
    if inc.has(Include::All) {
        return true;
    }
    if inc.has(Include::Privileged) && privileged(ctx) && ctx.outcome != Outcome::Pending {
        return true;
    }
    match ctx.outcome {
        Outcome::Denied(_) | Outcome::DryRunDenied(_) => inc.has(Include::Denied),
        Outcome::Allowed | Outcome::Failed(_) | Outcome::Pending | Outcome::Aborted => false,
    }
}

/// Whether the request, once allowed (about to be forwarded), will need a record.
fn needed_if_forwarded(ctx: &RequestContext, s: &AuditSettings) -> bool {
    let inc = s.include;
    inc.has(Include::All)
        || (inc.has(Include::Privileged) && privileged(ctx))
        || (inc.has(Include::Denied) && ctx.dry_run_denial().is_some())
}

/// A request to a `privileged: true` route, or one a privilege let through (cross-tenant).
fn privileged(ctx: &RequestContext) -> bool {
    ctx.privileged.is_some() || ctx.route().is_some_and(|r| r.access.privileged)
}

/// Before forwarding a request every check passed: refuses it when it will need a record and
/// the trail cannot take one now.
pub fn gate(ctx: &RequestContext) -> Result<(), Rejection> {
    let (Some(trail), Some(s)) = (ctx.audit.as_ref(), settings(ctx)) else {
        return Ok(());
    };
    if needed_if_forwarded(ctx, s) && !trail.available() {
        return Err(Rejection::AuditUnavailable);
    }
    Ok(())
}

/// At the response head: records the request if it needs a record; `strict` waits until the
/// record is written. An error means the response must not be sent (503).
pub async fn commit(ctx: &RequestContext) -> Result<(), ()> {
    let Some(s) = settings(ctx) else {
        return Ok(());
    };
    if !needed(ctx, s) {
        return Ok(());
    }
    let strict = s.durability == Durability::Strict;
    let record = request_record(ctx, ctx.target.as_ref());
    let Some(trail) = ctx.audit.as_ref() else {
        return Ok(());
    };
    let ack = match trail.submit_request(record, s, strict) {
        Ok(ack) => ack,
        Err(_) => return Err(()),
    };
    match ack {
        None => Ok(()),
        Some(rx) => match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(()),
        },
    }
}

/// A later event of a request (stream violation, abort): queued without waiting.
pub fn event(ctx: &RequestContext, event: Event, reason: Option<&str>) {
    let (Some(trail), Some(s)) = (ctx.audit.as_ref(), settings(ctx)) else {
        return;
    };
    let include = match event {
        Event::StreamViolation => Include::Violations,
        Event::BudgetWarning | Event::BudgetExhausted => Include::Budget,
        _ => Include::All,
    };
    if !s.include.has(include) {
        return;
    }
    let mut r = request_record(ctx, ctx.target.as_ref());
    r.event = Some(event);
    if let Some(reason) = reason {
        r.reason = Some(reason.to_owned());
    }
    trail.event(r, Some(s));
}

/// A budget crossing (warning threshold or exhaustion) of the request's tenant.
pub fn budget_event(ctx: &RequestContext, event: Event, period: &str, used: u64, limit: u64) {
    let (Some(trail), Some(s)) = (ctx.audit.as_ref(), settings(ctx)) else {
        return;
    };
    if !s.include.has(Include::Budget) {
        return;
    }
    let mut r = request_record(ctx, ctx.target.as_ref());
    r.event = Some(event);
    r.decision = None;
    r.reason = Some(event.name().to_owned());
    r.detail = Some(serde_json::json!({ "period": period, "used": used, "limit": limit }));
    trail.event(r, Some(s));
}

/// The record of a request as it stands.
pub fn request_record(ctx: &RequestContext, target: Option<&PathAndQuery>) -> Record {
    let mut r = Record::new(Event::Request, ctx.snapshot.clock.now_ms());
    r.trace_id = Some(ctx.ids.trace_id().to_owned());
    r.request_id = Some(ctx.ids.request_id().to_owned());
    r.decision = Some(ctx.outcome.decision().to_owned());
    r.reason = ctx.outcome.rejection().map(|x| x.reason().to_owned());
    r.status = ctx.status;
    r.route = ctx.route().map(|x| x.name.to_string());
    r.method = Some(ctx.method.as_str().to_owned());
    if let Some(t) = target {
        r.path = Some(bounded(&ctx.canonical_path(t.path())));
        r.query = t.query().map(bounded);
    }
    r.request_headers = recorded_headers(&ctx.audit_headers);
    let principal = ctx.principal.as_deref();
    let own = principal.and_then(|p| p.tenant.as_deref());
    r.subject = principal.map(|p| p.subject.clone());
    r.tenant = own.map(str::to_owned);
    r.requested_tenant = ctx.requested_tenant.as_str(own).map(str::to_owned);
    r.roles = principal.map(|p| p.roles.clone());
    r.client_ip = Some(ctx.client_ip.to_string());
    r.transport = Some(
        if ctx.conn.tls {
            "tls"
        } else if ctx.https {
            "vouched"
        } else {
            "plain"
        }
        .to_owned(),
    );
    let ms = ctx.timings.start.elapsed().as_secs_f64() * 1000.0;
    r.latency_ms = Some((ms * 1000.0).round() / 1000.0);
    r.policy_version = Some(ctx.snapshot.policy.hash.clone());
    let mut detail = serde_json::Map::new();
    if ctx.dry_run {
        detail.insert("mode".into(), "dry_run".into());
    }
    if let Some(p) = ctx.privileged {
        detail.insert("privileged".into(), p.into());
    } else if ctx.route().is_some_and(|x| x.access.privileged) {
        detail.insert("privileged".into(), "route".into());
    }
    if !detail.is_empty() {
        r.detail = Some(serde_json::Value::Object(detail));
    }
    r
}

/// The values of the headers the decision reads ([`crate::audit::record::DECISION_HEADERS`]
/// and the policy's tenant headers), for the record (`fortress replay` sends them again).
/// Repeated headers are joined with `, `; values that are not visible ASCII are left out.
/// Kept per request as shared handles (no copy of a name or value); the record's map is built
/// by [`recorded_headers`] only when a record is written.
pub fn decision_headers(
    policy: &crate::policy::Policy,
    headers: &http::HeaderMap,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            crate::audit::record::DECISION_HEADERS.contains(&n)
                || policy.headers.tenant_headers.contains(n)
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// The record's `request_headers`: lower-case name → value, repeated headers joined with
/// `, `, values that are not visible ASCII left out, each cut at [`MAX_HEADER`] bytes.
fn recorded_headers(
    kept: &[(http::HeaderName, http::HeaderValue)],
) -> Option<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::<String, String>::new();
    for (name, value) in kept {
        let Ok(v) = value.to_str() else { continue };
        let v = bounded_to(v, MAX_HEADER);
        out.entry(name.as_str().to_owned())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    (!out.is_empty()).then_some(out)
}

/// Longest header value a record keeps.
const MAX_HEADER: usize = 512;

/// `s`, cut to [`MAX_TARGET`] bytes at a character boundary.
fn bounded(s: &str) -> String {
    bounded_to(s, MAX_TARGET)
}

fn bounded_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated]", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn long_targets_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("/a"), "/a");
        let long = "é".repeat(3000);
        let cut = bounded(&long);
        assert!(cut.ends_with("…[truncated]"));
        assert!(cut.len() <= super::MAX_TARGET + "…[truncated]".len());
    }
}
