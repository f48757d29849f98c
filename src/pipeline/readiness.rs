//! Readiness guards: a route with `guard: NAME` is served only while every condition of the
//! guard holds (`audit`: the trail takes records; `sql_guard`: the route's stream checks SQL;
//! `jwks`: every key set is loaded). Otherwise 503 `not_ready` (`Retry-After`), before any
//! credential is read: the route comes back by itself when the condition does. Each change
//! of a guard's state is logged once (per policy version), with the failing conditions.

use http::request::Parts;
use tracing::{info, warn};

use super::context::RequestContext;
use super::decide::Step;
use crate::audit::Trail;
use crate::error::Rejection;
use crate::policy::readiness::{Condition, Guard};
use crate::state::Snapshot;

/// The readiness stage, right after routing. `live: false` (`fortress explain`, which has no
/// audit trail or key sets): only the conditions known from the policy (`sql_guard`) are
/// judged, and nothing is logged.
pub fn check(ctx: &mut RequestContext, _req: &Parts, live: bool) -> Result<Step, Rejection> {
    let Some(route) = ctx.route() else {
        return Ok(Step::Skip("no route"));
    };
    let index = route.index;
    let Some(guard) = ctx.snapshot.policy.readiness.of_route(index) else {
        return Ok(Step::Skip("no guard"));
    };
    let mut failing = failing(guard, &ctx.snapshot, ctx.audit.as_deref(), Some(index));
    if !live {
        failing.retain(|c| *c == Condition::SqlGuard);
        return if failing.is_empty() {
            Ok(Step::Skip(
                "runtime conditions (audit, jwks) are not judged by explain",
            ))
        } else {
            Err(Rejection::NotReady)
        };
    }
    log_change(guard, &failing);
    if failing.is_empty() {
        Ok(Step::Pass)
    } else {
        Err(Rejection::NotReady)
    }
}

/// The conditions of `guard` that do not hold now. `route`: the route asking (the
/// `sql_guard` condition is the route's); `None` (the admin view) asks it of every route
/// with this guard.
pub fn failing(
    guard: &Guard,
    snapshot: &Snapshot,
    audit: Option<&Trail>,
    route: Option<usize>,
) -> Vec<Condition> {
    let readiness = &snapshot.policy.readiness;
    guard
        .conditions
        .iter()
        .copied()
        .filter(|c| match c {
            Condition::Audit => !audit.is_some_and(Trail::available),
            Condition::SqlGuard => {
                let guarded = |i: usize| readiness.sql_guarded.get(i).copied().unwrap_or(false);
                match route {
                    Some(i) => !guarded(i),
                    None => readiness
                        .by_route
                        .iter()
                        .enumerate()
                        .filter(|(_, g)| {
                            g.and_then(|g| readiness.guards.get(g))
                                .is_some_and(|g| std::ptr::eq(g.as_ref(), guard))
                        })
                        .any(|(i, _)| !guarded(i)),
                }
            }
            Condition::Jwks => !snapshot
                .live_auth
                .as_ref()
                .and_then(|a| a.jwks.as_ref())
                .is_none_or(|j| j.is_loaded()),
            // Off (or an index that resolves to nothing: fail closed) → failing.
            Condition::Toggle(i) => !snapshot
                .policy
                .toggles
                .list
                .get(*i)
                .is_some_and(|t| snapshot.store.toggle(&t.name).unwrap_or(t.default)),
        })
        .collect()
}

/// Logs the guard's new state when it changed.
pub fn log_change(guard: &Guard, failing: &[Condition]) {
    if guard.changed(failing.is_empty()) {
        if failing.is_empty() {
            info!(guard = %guard.name, "readiness guard open: its routes are served");
        } else {
            let names: Vec<&str> = failing.iter().map(|c| c.name()).collect();
            warn!(
                guard = %guard.name,
                failing = %names.join(","),
                "readiness guard closed: its routes answer 503 not_ready"
            );
        }
    }
}

/// Every guard's state, as JSON (`/readyz?verbose`).
pub fn states(snapshot: &Snapshot, audit: Option<&Trail>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for g in &snapshot.policy.readiness.guards {
        let failing = failing(g, snapshot, audit, None);
        out.insert(
            g.name.to_string(),
            serde_json::json!({
                "ready": failing.is_empty(),
                "failing": failing.iter().map(|c| c.name()).collect::<Vec<_>>(),
            }),
        );
    }
    serde_json::Value::Object(out)
}
