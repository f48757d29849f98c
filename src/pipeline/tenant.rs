//! Tenant isolation: the token's tenant must equal the tenant the request names, exactly.

use std::borrow::Cow;

use http::request::Parts;

use super::context::{RequestContext, RequestedTenant};
use super::decide::Step;
use crate::auth::Principal;
use crate::error::Rejection;
use crate::policy::rbac::Rbac;
use crate::policy::route::{TenantRule, TenantSource};

/// How the tenant check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantPass {
    /// Same tenant.
    Matched,
    /// Another tenant, allowed by the route's cross-tenant permission (privileged).
    Crossed,
}

/// The tenant stage: needs the principal. Records the tenant the request named.
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let Some(rule) = ctx.route().and_then(|r| r.access.tenant.as_ref()) else {
        return Ok(Step::Skip("no tenant rule"));
    };
    let requested = requested(rule, ctx, req);
    let pass = match (&ctx.principal, &requested) {
        (Some(p), Some(asked)) => judge(rule, p, &ctx.snapshot.rbac, asked),
        _ => None,
    };
    // Recorded without a copy in the common case (the token's own tenant).
    let own = ctx.principal.as_ref().and_then(|p| p.tenant.as_deref());
    let recorded = match requested {
        None => RequestedTenant::Unknown,
        Some(t) if Some(&*t) == own => RequestedTenant::SameAsToken,
        Some(t) => RequestedTenant::Other(t.into_owned()),
    };
    ctx.requested_tenant = recorded;
    match pass {
        Some(TenantPass::Matched) => Ok(Step::Pass),
        Some(TenantPass::Crossed) => {
            ctx.privileged = Some("cross_tenant");
            Ok(Step::Pass)
        }
        None => Err(Rejection::DenyTenant),
    }
}

/// Judges a named tenant against the principal's; `None` means they do not match (or one is
/// empty).
fn judge(
    rule: &TenantRule,
    principal: &Principal,
    rbac: &Rbac,
    requested: &str,
) -> Option<TenantPass> {
    let own = principal.tenant.as_deref().filter(|t| !t.is_empty())?;
    if requested.is_empty() {
        return None;
    }
    if requested == own {
        return Some(TenantPass::Matched);
    }
    match &rule.cross_tenant_permission {
        // Granted by name only: `*` (admins) does not cross tenants.
        Some(p) if rbac.allows_explicitly(&principal.roles, p) => Some(TenantPass::Crossed),
        _ => None,
    }
}

/// The tenant named by the request; `None` when missing, duplicated or undecodable.
fn requested<'a>(
    rule: &TenantRule,
    ctx: &'a RequestContext,
    req: &'a Parts,
) -> Option<Cow<'a, str>> {
    match &rule.source {
        // The canonical path keeps reserved characters percent-encoded; compare decoded.
        TenantSource::PathParam(name) => ctx.param(name, req.uri.path()).and_then(percent_decode),
        TenantSource::Header(name) => {
            let mut values = req.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => v.to_str().ok().map(Cow::Borrowed),
                _ => None,
            }
        }
        TenantSource::Query(name) => query_value(req.uri.query()?, name),
    }
}

/// The value of query key `name`; `None` when missing or duplicated (ambiguous).
fn query_value<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k).as_deref() == Some(name) {
            if found.is_some() {
                return None; // duplicated: ambiguous, deny
            }
            found = Some(v);
        }
    }
    found.and_then(percent_decode)
}

/// Strict percent-decoding to UTF-8 (`+` is not a space). `None` on a bad escape.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("acme").as_deref(), Some("acme"));
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("a%2").as_deref(), None);
        assert_eq!(percent_decode("%FF").as_deref(), None);
    }

    #[test]
    fn query_source() {
        assert_eq!(query_value("a=1&org=acme", "org").as_deref(), Some("acme"));
        assert_eq!(query_value("org=a&org=b", "org"), None);
        assert_eq!(query_value("orgx=a", "org"), None);
        assert_eq!(query_value("o%72g=acme", "org").as_deref(), Some("acme"));
    }
}
