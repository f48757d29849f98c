//! IP allowlists: the client IP (`ctx.client_ip`: the TCP peer, or behind a trusted proxy the
//! right-most untrusted `X-Forwarded-For` address) must be in the policy-wide `allow_ips`
//! and in the route's own `allow_ips`, when they are set. IPv4-mapped IPv6 addresses are
//! judged as the IPv4 address they carry (`policy/ip_allow.rs`).

use http::request::Parts;

use super::context::RequestContext;
use super::decide::Step;
use crate::error::Rejection;

/// The allowlist stage, right after routing (the route's list is known), before anything
/// that costs work or reads credentials.
pub fn check(ctx: &mut RequestContext, _req: &Parts) -> Result<Step, Rejection> {
    let global = ctx.snapshot.policy.allow_ips.as_deref();
    let route = ctx.route().and_then(|r| r.access.allow_ips.as_deref());
    if global.is_none() && route.is_none() {
        return Ok(Step::Skip("no allowlist"));
    }
    let ip = ctx.client_ip;
    // Both must pass: a route list narrows the policy-wide one, it never widens it.
    if global.is_some_and(|l| !l.allows(ip)) || route.is_some_and(|l| !l.allows(ip)) {
        return Err(Rejection::IpNotAllowed);
    }
    Ok(Step::Pass)
}
