//! The authenticated admin API (`/admin/*` on the admin listener); see `docs/admin-api.md`.
//!
//! Every endpoint: loopback peer, valid unrevoked bearer token, the endpoint group's
//! permission (`admin.permissions`). Refused attempts on mutating endpoints and every change
//! are audited whatever `audit.include` says. A change is written to `server.state_dir`
//! first, then audited (the response waits for the record), then applied: an answered change
//! is durable and recorded; a change that cannot be recorded is not made (503).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::control::{Denied, authenticate, permitted};
use super::json;
use crate::audit::record::{parse_ts, rfc3339_ms};
use crate::audit::{Event, Record};
use crate::auth::SharedPrincipal;
use crate::error::{Rejection, json_error};
use crate::pipeline::ids::Ids;
use crate::proxy::body::ProxyBody;
use crate::state::reload::Caller;
use crate::state::{AppState, Snapshot};
use crate::store::persist_admin::{self, AdminState};
use crate::store::{LimitCheck, LimitKind, Revocation, Window};

/// Largest admin request body.
pub const MAX_BODY: usize = 4096;
/// Longest `reason`, in bytes.
pub const MAX_REASON: usize = 512;
/// Longest `jti` or `subject`, in bytes.
pub const MAX_ID: usize = 256;
/// How long a subject revocation is kept when the request gives no `expires_at`: after
/// `before` plus this, tokens issued before `before` are accepted again if they have not
/// expired, so set `expires_at` when tokens live longer.
pub const DEFAULT_SUBJECT_TTL_SECS: u64 = 7 * 86_400;

/// Longest path written to an audit record (refused attempts from anyone are recorded: a
/// long path must not make a large record).
pub const MAX_AUDIT_PATH: usize = 512;

/// `s` cut to at most `max` bytes (on a character boundary), marked when cut.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated]", &s[..end])
}

/// One admin request's facts.
struct Cx {
    ids: Ids,
    peer: SocketAddr,
    method: Method,
    path: String,
    snapshot: std::sync::Arc<Snapshot>,
    now_ms: u64,
}

impl Cx {
    fn rid(&self) -> &str {
        self.ids.request_id()
    }

    fn error(&self, status: StatusCode, error: &str, reason: &str) -> Response<ProxyBody> {
        json_error(status, error, reason, self.rid()).map(ProxyBody::full)
    }

    /// An audit record of `event` with the request's facts and the caller.
    fn record(&self, event: Event, who: Option<&SharedPrincipal>) -> Record {
        let mut r = Record::new(event, self.now_ms);
        r.trace_id = Some(self.ids.trace_id().to_owned());
        r.request_id = Some(self.rid().to_owned());
        r.method = Some(self.method.as_str().to_owned());
        r.path = Some(truncated(&self.path, MAX_AUDIT_PATH));
        r.client_ip = Some(self.peer.ip().to_canonical().to_string());
        r.transport = Some("plain".into());
        r.policy_version = Some(self.snapshot.policy.hash.clone());
        if let Some(p) = who {
            r.subject = Some(p.subject.clone());
            r.tenant = p.tenant.clone();
            r.roles = Some(p.roles.clone());
        }
        r
    }
}

/// Answers an `/admin/*` request (the listener's Host and cross-site checks have passed).
pub async fn serve(
    state: &AppState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let snapshot = state.config.snapshot();
    let cx = Cx {
        ids: Ids::for_request(req.headers(), false),
        peer,
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        now_ms: snapshot.clock.now_ms(),
        snapshot,
    };
    let path = cx.path.clone();
    let read = cx.method == Method::GET || cx.method == Method::HEAD;
    let perms = cx.snapshot.policy.admin.clone();
    let mut resp = match (path.as_str(), &cx.method) {
        ("/admin/reload", &Method::POST) => reload(state, &cx, req.headers()).await,
        ("/admin/reload", _) => not_allowed(&cx, "POST"),
        ("/admin/toggles", _) if read => {
            match guard(state, &cx, req.headers(), &perms.toggles, None).await {
                Ok(_) => list_toggles(&cx).await,
                Err(r) => r,
            }
        }
        ("/admin/toggles", _) => not_allowed(&cx, "GET, HEAD"),
        (p, &Method::PUT) if p.starts_with("/admin/toggles/") => {
            let name = &p["/admin/toggles/".len()..];
            let event = Some(Event::ToggleChange);
            match guard(state, &cx, req.headers(), &perms.toggles, event).await {
                Ok(who) => set_toggle(state, &cx, &who, name, req).await,
                Err(r) => r,
            }
        }
        (p, _) if p.starts_with("/admin/toggles/") => not_allowed(&cx, "PUT"),
        ("/admin/revocations", &Method::POST) => {
            let event = Some(Event::Revocation);
            match guard(state, &cx, req.headers(), &perms.revocations, event).await {
                Ok(who) => revoke(state, &cx, &who, req).await,
                Err(r) => r,
            }
        }
        ("/admin/revocations", _) if read => {
            match guard(state, &cx, req.headers(), &perms.revocations, None).await {
                Ok(_) => list_revocations(&cx).await,
                Err(r) => r,
            }
        }
        ("/admin/revocations", _) => not_allowed(&cx, "GET, HEAD, POST"),
        ("/admin/policy", _) if read => {
            match guard(state, &cx, req.headers(), &perms.read, None).await {
                Ok(_) => policy_info(state, &cx),
                Err(r) => r,
            }
        }
        ("/admin/policy", _) => not_allowed(&cx, "GET, HEAD"),
        (p, _) if p.starts_with("/admin/budgets/") && read => {
            match guard(state, &cx, req.headers(), &perms.read, None).await {
                Ok(_) => budgets(&cx, &p["/admin/budgets/".len()..]).await,
                Err(r) => r,
            }
        }
        (p, _) if p.starts_with("/admin/budgets/") => not_allowed(&cx, "GET, HEAD"),
        _ => cx.error(StatusCode::NOT_FOUND, "not_found", "no_route"),
    };
    if let Ok(v) = HeaderValue::from_str(cx.rid()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn not_allowed(cx: &Cx, allow: &'static str) -> Response<ProxyBody> {
    let mut r = cx.error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method_not_allowed",
    );
    // RFC 9110 §15.5.6: a 405 lists the methods the target accepts.
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The caller, when it may use an endpoint requiring `permission`; otherwise the refusal,
/// audited when `event` is given (mutating endpoints).
async fn guard(
    state: &AppState,
    cx: &Cx,
    headers: &http::HeaderMap,
    permission: &str,
    event: Option<Event>,
) -> Result<SharedPrincipal, Response<ProxyBody>> {
    let (denied, who) = match authenticate(&cx.snapshot, cx.peer, headers).await {
        Ok(p) if permitted(&cx.snapshot, &p, permission) => return Ok(p),
        Ok(p) => (Denied::Forbidden, Some(p)),
        Err(d) => (d, None),
    };
    Err(refuse(state, cx, denied, who.as_ref(), event))
}

/// The refusal's response; audited when `event` is given.
fn refuse(
    state: &AppState,
    cx: &Cx,
    denied: Denied,
    who: Option<&SharedPrincipal>,
    event: Option<Event>,
) -> Response<ProxyBody> {
    let resp = match denied {
        Denied::NotLoopback => cx.error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin_requires_loopback",
        ),
        Denied::NoAuthentication => cx.error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin_requires_authentication",
        ),
        Denied::Unauthenticated(e) => Rejection::Unauthenticated(e)
            .to_response(cx.rid())
            .map(ProxyBody::full),
        Denied::Forbidden => Rejection::DenyPermission
            .to_response(cx.rid())
            .map(ProxyBody::full),
        Denied::StateUnavailable => Rejection::StateUnavailable
            .to_response(cx.rid())
            .map(ProxyBody::full),
    };
    tracing::warn!(
        request.id = cx.rid(),
        client.ip = %cx.peer.ip(),
        method = %cx.method,
        path = %cx.path,
        reason = denied.reason(),
        subject = who.map(|p| p.subject.as_str()),
        "admin request refused"
    );
    if let (Some(event), Some(trail)) = (event, &state.audit) {
        let mut r = cx.record(event, who);
        r.decision = Some("deny".into());
        r.reason = Some(denied.reason().into());
        r.status = Some(resp.status().as_u16());
        trail.event(r, cx.snapshot.policy.audit.as_ref());
    }
    resp
}

async fn reload(state: &AppState, cx: &Cx, headers: &http::HeaderMap) -> Response<ProxyBody> {
    let permission = cx.snapshot.policy.admin.reload.clone();
    let event = Some(Event::PolicyReload);
    let caller = match authenticate(&cx.snapshot, cx.peer, headers).await {
        Ok(p) if permitted(&cx.snapshot, &p, &permission) => Some(Caller {
            subject: p.subject.clone(),
            roles: p.roles.clone(),
            request_id: cx.rid().to_owned(),
            trace_id: cx.ids.trace_id().to_owned(),
            client_ip: cx.peer.ip().to_canonical().to_string(),
        }),
        Ok(p) => return refuse(state, cx, Denied::Forbidden, Some(&p), event),
        // A policy without `authentication` cannot authenticate anyone: reload stays open to
        // loopback peers, as SIGHUP is to whoever shares the host (docs/admin-api.md).
        Err(Denied::NoAuthentication) => None,
        Err(d) => return refuse(state, cx, d, None, event),
    };
    super::reload(state, caller).await
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes: 415 unless `application/json`, 413 when
/// larger, 400 when not the expected document.
async fn read_json<T: serde::de::DeserializeOwned>(
    cx: &Cx,
    req: Request<Incoming>,
) -> Result<T, Response<ProxyBody>> {
    let mut types = req.headers().get_all(header::CONTENT_TYPE).iter();
    let json_type = match (types.next(), types.next()) {
        (Some(v), None) => v.to_str().is_ok_and(|s| {
            s.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        }),
        _ => false,
    };
    if !json_type {
        return Err(cx.error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "json_required",
        ));
    }
    let too_large = || {
        cx.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "body_too_large",
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let bytes: Bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(_) => {
            return Err(cx.error(StatusCode::BAD_REQUEST, "bad_request", "malformed_body"));
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|_| cx.error(StatusCode::BAD_REQUEST, "bad_request", "invalid_body"))
}

/// A `reason`: required, non-blank, at most [`MAX_REASON`] bytes, no control characters.
/// `Err` is the 400's reason code.
fn check_reason(reason: Option<&str>) -> Result<String, &'static str> {
    let reason = reason.map(str::trim).unwrap_or_default();
    if reason.is_empty() {
        return Err("reason_required");
    }
    if reason.len() > MAX_REASON {
        return Err("reason_too_long");
    }
    if reason.chars().any(char::is_control) {
        return Err("invalid_reason");
    }
    Ok(reason.to_owned())
}

/// The admin state as it will be once `change` is applied to the store's current one.
async fn current_state(cx: &Cx) -> AdminState {
    let store = &cx.snapshot.store;
    AdminState {
        toggles: store.toggles().await.unwrap_or_default(),
        revocations: store.revocations(cx.now_ms).await.unwrap_or_default(),
    }
}

/// Writes `next` to the state directory (when there is one).
async fn persist(state: &AppState, cx: &Cx, next: AdminState) -> Result<(), String> {
    // A shared store (Redis) is the record of overrides and revocations: no local file.
    let Some(dir) = state
        .admin
        .state_dir
        .clone()
        .filter(|_| !cx.snapshot.store.is_shared())
    else {
        return Ok(());
    };
    let now = cx.now_ms;
    match tokio::task::spawn_blocking(move || persist_admin::save(&dir, now, &next)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Persists `next`, then records `record` (waiting for it): `Err` is the response when either
/// failed (the state file is put back when the record failed), and nothing may change.
async fn commit(
    state: &AppState,
    cx: &Cx,
    previous: AdminState,
    next: AdminState,
    mut record: Record,
) -> Result<(), Response<ProxyBody>> {
    if let Err(e) = persist(state, cx, next).await {
        tracing::error!(error = %e, "admin change not persisted; not applied");
        return Err(cx.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "state_unavailable",
        ));
    }
    let Some(trail) = &state.audit else {
        return Ok(());
    };
    if let Some(settings) = &cx.snapshot.policy.audit {
        crate::audit::trail::redact(&mut record, settings);
    }
    if let Err(e) = trail.event_acked(record).await {
        tracing::error!(error = %e, "admin change not recorded; not applied");
        if let Err(e) = persist(state, cx, previous).await {
            tracing::error!(error = %e, "admin state file not restored");
        }
        return Err(cx.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "audit_unavailable",
        ));
    }
    Ok(())
}

/// Records that a change recorded as applied did not reach the store after all (a shared
/// store that failed after the record was written): the trail says so.
fn not_applied(state: &AppState, cx: &Cx, event: Event, who: &SharedPrincipal, detail: Value) {
    if let Some(trail) = &state.audit {
        let mut r = cx.record(event, Some(who));
        r.decision = Some("not_applied".into());
        r.status = Some(503);
        r.reason = Some("state_unavailable".into());
        r.detail = Some(detail);
        trail.event(r, cx.snapshot.policy.audit.as_ref());
    }
}

/// One toggle as the API shows it.
fn toggle_json(name: &str, default: bool, over: Option<bool>) -> Value {
    json!({
        "name": name,
        "default": default,
        "override": over,
        "effective": over.unwrap_or(default),
    })
}

async fn list_toggles(cx: &Cx) -> Response<ProxyBody> {
    let list: Vec<Value> = cx
        .snapshot
        .policy
        .toggles
        .list
        .iter()
        .map(|t| toggle_json(&t.name, t.default, cx.snapshot.store.toggle(&t.name)))
        .collect();
    json(StatusCode::OK, json!({ "toggles": list }).to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToggleBody {
    enabled: bool,
    #[serde(default)]
    reason: Option<String>,
}

async fn set_toggle(
    state: &AppState,
    cx: &Cx,
    who: &SharedPrincipal,
    name: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(toggle) = cx.snapshot.policy.toggles.get(name).cloned() else {
        return cx.error(StatusCode::NOT_FOUND, "not_found", "unknown_toggle");
    };
    let body: ToggleBody = match read_json(cx, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reason = match check_reason(body.reason.as_deref()) {
        Ok(r) => r,
        Err(code) => return cx.error(StatusCode::BAD_REQUEST, "bad_request", code),
    };
    let _write = state.admin.writes.lock().await;
    let store = &cx.snapshot.store;
    let old = store.toggle(&toggle.name);
    let previous = current_state(cx).await;
    let mut next = previous.clone();
    next.toggles.retain(|(n, _)| *n != toggle.name);
    next.toggles.push((toggle.name.clone(), body.enabled));
    next.toggles.sort();
    let mut r = cx.record(Event::ToggleChange, Some(who));
    r.decision = Some("applied".into());
    r.status = Some(200);
    r.detail = Some(json!({
        "toggle": toggle.name,
        "default": toggle.default,
        "old": old.unwrap_or(toggle.default),
        "new": body.enabled,
        "old_override": old,
        "reason": reason,
    }));
    if let Err(resp) = commit(state, cx, previous, next, r).await {
        return resp;
    }
    if let Err(e) = store.set_toggle(&toggle.name, Some(body.enabled)).await {
        tracing::error!(error = %e, "toggle override not stored");
        not_applied(
            state,
            cx,
            Event::ToggleChange,
            who,
            json!({ "toggle": toggle.name }),
        );
        return cx.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "state_unavailable",
        );
    }
    tracing::info!(
        toggle = %toggle.name,
        old = old.unwrap_or(toggle.default),
        new = body.enabled,
        subject = %who.subject,
        reason = %reason,
        "toggle changed through the admin API"
    );
    let mut out = toggle_json(&toggle.name, toggle.default, Some(body.enabled));
    out["previous"] = json!(old.unwrap_or(toggle.default));
    json(StatusCode::OK, out.to_string())
}

/// A revocation as the API shows it (times RFC 3339 UTC).
fn revocation_json(r: &Revocation) -> Value {
    let ts = |secs: u64| rfc3339_secs(secs);
    match r {
        Revocation::Token {
            jti,
            expires_at,
            reason,
        } => json!({"jti": jti, "expires_at": ts(*expires_at), "reason": reason}),
        Revocation::Subject {
            subject,
            before,
            expires_at,
            reason,
        } => json!({
            "subject": subject,
            "before": ts(*before),
            "expires_at": ts(*expires_at),
            "reason": reason,
        }),
    }
}

/// `2026-01-01T00:00:00Z`.
fn rfc3339_secs(secs: u64) -> String {
    let ms = rfc3339_ms(secs.saturating_mul(1000));
    // `…:00.000Z` → `…:00Z`: revocation times are whole seconds.
    match ms.rsplit_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => ms,
    }
}

async fn list_revocations(cx: &Cx) -> Response<ProxyBody> {
    let list = match cx.snapshot.store.revocations(cx.now_ms).await {
        Ok(l) => l,
        Err(_) => {
            return cx.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "state_unavailable",
            );
        }
    };
    let list: Vec<Value> = list.iter().map(revocation_json).collect();
    json(StatusCode::OK, json!({ "revocations": list }).to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// An RFC 3339 UTC time (`2026-01-01T00:00:00Z`, optionally with milliseconds) in Unix
/// seconds, rounded up.
fn parse_time(s: &str) -> Option<u64> {
    if !s.contains('T') {
        return None;
    }
    parse_ts(s).map(|ms| ms.div_ceil(1000))
}

/// A `jti` or `subject`: non-empty, at most [`MAX_ID`] bytes, no control characters.
fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID && !s.chars().any(char::is_control)
}

async fn revoke(
    state: &AppState,
    cx: &Cx,
    who: &SharedPrincipal,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let body: RevokeBody = match read_json(cx, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let bad = |code: &str| cx.error(StatusCode::BAD_REQUEST, "bad_request", code);
    let reason = match check_reason(body.reason.as_deref()) {
        Ok(r) => r,
        Err(code) => return bad(code),
    };
    let time = |v: &Option<String>| -> Result<Option<u64>, ()> {
        match v {
            None => Ok(None),
            Some(s) => parse_time(s).map(Some).ok_or(()),
        }
    };
    let (Ok(before), Ok(expires_at)) = (time(&body.before), time(&body.expires_at)) else {
        return bad("invalid_time");
    };
    let now_secs = cx.now_ms / 1000;
    let revocation = match (body.jti, body.subject) {
        (Some(jti), None) => {
            if !valid_id(&jti) {
                return bad("invalid_jti");
            }
            if before.is_some() {
                return bad("before_with_jti");
            }
            let Some(expires_at) = expires_at else {
                return bad("expires_at_required");
            };
            Revocation::Token {
                jti,
                expires_at,
                reason: reason.clone(),
            }
        }
        (None, Some(subject)) => {
            if !valid_id(&subject) {
                return bad("invalid_subject");
            }
            // Default: every token issued up to now (this second included).
            let before = before.unwrap_or(now_secs + 1);
            let expires_at = expires_at.unwrap_or(before.saturating_add(DEFAULT_SUBJECT_TTL_SECS));
            Revocation::Subject {
                subject,
                before,
                expires_at,
                reason: reason.clone(),
            }
        }
        _ => return bad("jti_or_subject_required"),
    };
    if revocation.expires_at() <= now_secs {
        return bad("already_expired");
    }
    let _write = state.admin.writes.lock().await;
    let previous = current_state(cx).await;
    let mut next = previous.clone();
    next.revocations.push(revocation.clone());
    let shown = revocation_json(&revocation);
    let mut r = cx.record(Event::Revocation, Some(who));
    r.decision = Some("applied".into());
    r.status = Some(201);
    r.detail = Some(shown.clone());
    if let Err(resp) = commit(state, cx, previous, next, r).await {
        return resp;
    }
    if let Err(e) = cx.snapshot.store.revoke(cx.now_ms, revocation).await {
        tracing::error!(error = %e, "revocation not stored");
        not_applied(state, cx, Event::Revocation, who, shown);
        return cx.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "state_unavailable",
        );
    }
    tracing::info!(revocation = %shown, subject = %who.subject, "revocation added through the admin API");
    json(
        StatusCode::CREATED,
        json!({ "revocation": shown }).to_string(),
    )
}

fn policy_info(state: &AppState, cx: &Cx) -> Response<ProxyBody> {
    let info = state.admin.reload_info();
    let dir = state
        .config_path
        .as_deref()
        .and_then(std::path::Path::parent);
    let source = state
        .config_path
        .as_deref()
        .and_then(std::path::Path::file_name)
        .map(|f| f.to_string_lossy().into_owned());
    let last_error = info.last_error.map(|(at, errors)| {
        let errors: Vec<String> = errors.iter().map(|e| super::scrub_paths(e, dir)).collect();
        json!({ "at": rfc3339_ms(at), "errors": errors })
    });
    json(
        StatusCode::OK,
        json!({
            "policy_hash": cx.snapshot.policy.hash,
            "loaded_at": rfc3339_ms(info.loaded_at_ms),
            "source": source,
            "last_reload_error": last_error,
            "toggles": cx.snapshot.policy.toggles.list.len(),
            "readiness": crate::pipeline::readiness::states(&cx.snapshot, state.audit.as_deref()),
        })
        .to_string(),
    )
}

async fn budgets(cx: &Cx, tenant: &str) -> Response<ProxyBody> {
    if tenant.is_empty()
        || tenant.len() > MAX_ID
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-@".contains(&b))
    {
        return cx.error(StatusCode::BAD_REQUEST, "bad_request", "invalid_tenant");
    }
    let Some(budget) = cx.snapshot.policy.limits.tenant_budget.as_ref() else {
        return cx.error(StatusCode::NOT_FOUND, "not_found", "no_budgets");
    };
    let mut periods = Vec::new();
    for (period, window, limit) in [
        ("daily", Window::Day, budget.daily),
        ("monthly", Window::Month, budget.monthly),
    ] {
        let Some(limit) = limit else { continue };
        // The same keys admission charges (`pipeline/admission.rs`); a cost-0 check reads
        // the window's usage without consuming anything.
        let key = match window {
            Window::Day => format!("budget|day|{tenant}"),
            _ => format!("budget|month|{tenant}"),
        };
        let check = [LimitCheck {
            key: &key,
            kind: LimitKind::Budget {
                limit,
                window,
                cost: 0,
            },
        }];
        let Ok(admission) = cx.snapshot.store.admit(cx.now_ms, &check).await else {
            return cx.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "state_unavailable",
            );
        };
        let Some(s) = admission.states.first() else {
            continue;
        };
        let (start, end) = window.bounds(cx.now_ms);
        periods.push(json!({
            "period": period,
            "limit": limit,
            "used": s.used,
            "remaining": limit.saturating_sub(s.used),
            "window_start": rfc3339_ms(start),
            "resets_at": rfc3339_ms(end),
        }));
    }
    json(
        StatusCode::OK,
        json!({ "tenant": tenant, "budgets": periods }).to_string(),
    )
}
