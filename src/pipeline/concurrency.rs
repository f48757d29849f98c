//! Concurrency classes: a request on a route with a class takes one of the class's permits
//! (`store/classes.rs`) and keeps it in its context until the response body ends or the
//! client goes away. When every permit is taken it waits in the class queue (FIFO, bounded by
//! `queue`, up to `queue_timeout`); a full queue, a timeout, or a tenant already at its
//! `per_tenant_max_in_flight` → 503 `overloaded` with `Retry-After`.
//!
//! On a dry-run route the request never waits: it takes a free permit if there is one (so the
//! counts stay true), and otherwise the refusal is recorded and the request forwarded
//! without a permit. `fortress explain` takes no permit (it reports the class).

use http::request::Parts;

use super::context::RequestContext;
use super::decide::Step;
use crate::error::Rejection;

/// The concurrency stage, last: only a request every other check let through takes a permit
/// (or a place in the queue). `live` is false for `fortress explain`.
pub async fn check(ctx: &mut RequestContext, _req: &Parts, live: bool) -> Result<Step, Rejection> {
    let Some(class) = ctx.route().and_then(|r| r.access.class) else {
        return Ok(Step::Skip("no concurrency class"));
    };
    let Some(gate) = ctx.snapshot.classes.get(class).cloned() else {
        // Bound with the policy, so always there; fail closed anyway.
        return Err(Rejection::Overloaded);
    };
    if !live {
        return Ok(Step::Pass);
    }
    let tenant = ctx.principal.as_ref().and_then(|p| p.tenant.as_deref());
    // A shared store counted the tenant's requests already (a lease taken by admission).
    let shared = ctx.snapshot.store.is_shared();
    match gate.acquire_counted(tenant, !ctx.dry_run, !shared).await {
        Ok(mut permit) => {
            if let Some(lease) = ctx.lease.take() {
                permit.hold(lease);
            }
            ctx.permits.push(permit);
            Ok(Step::Pass)
        }
        Err(shed) => {
            tracing::debug!(
                request.id = %ctx.ids.request_id(),
                trace.id = %ctx.ids.trace_id(),
                class = &*gate.spec().name,
                why = shed.as_str(),
                "request shed by its concurrency class"
            );
            Err(Rejection::Overloaded)
        }
    }
}
