//! Tenant isolation: the token's tenant must equal the tenant the request names, exactly.

use std::borrow::Cow;

use http::HeaderMap;

use crate::auth::Principal;
use crate::config::rbac::Rbac;
use crate::pipeline::route::{TenantRule, TenantSource};

/// How the tenant check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantPass {
    /// Same tenant.
    Matched,
    /// Another tenant, allowed by the route's cross-tenant permission (privileged).
    Crossed,
}

/// Checks the rule; `None` means the tenants do not match (or one is missing). `params` are
/// the route's path parameters (from the canonical path).
pub fn check(
    rule: &TenantRule,
    principal: &Principal,
    rbac: &Rbac,
    params: &matchit::Params<'_, '_>,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<TenantPass> {
    let requested = requested(rule, params, headers, query).filter(|t| !t.is_empty())?;
    let own = principal.tenant.as_deref().filter(|t| !t.is_empty())?;
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
pub fn requested<'a>(
    rule: &TenantRule,
    params: &'a matchit::Params<'_, '_>,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    match &rule.source {
        // The canonical path keeps reserved characters percent-encoded; compare decoded.
        TenantSource::PathParam(name) => params.get(name.as_str()).and_then(percent_decode),
        TenantSource::Header(name) => {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => v.to_str().ok().map(Cow::Borrowed),
                _ => None,
            }
        }
        TenantSource::Query(name) => {
            let mut found = None;
            for pair in query?.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if percent_decode(k).as_deref() == Some(name.as_str()) {
                    if found.is_some() {
                        return None; // duplicated: ambiguous, deny
                    }
                    found = Some(v);
                }
            }
            found.and_then(percent_decode)
        }
    }
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
        let rule = TenantRule {
            source: TenantSource::Query("org".into()),
            cross_tenant_permission: None,
        };
        let h = HeaderMap::new();
        let router = {
            let mut r = matchit::Router::new();
            r.insert("/x", ()).expect("insert");
            r
        };
        let m = router.at("/x").expect("match");
        assert_eq!(
            requested(&rule, &m.params, &h, Some("a=1&org=acme")).as_deref(),
            Some("acme")
        );
        assert_eq!(requested(&rule, &m.params, &h, Some("org=a&org=b")), None);
        assert_eq!(requested(&rule, &m.params, &h, Some("orgx=a")), None);
        assert_eq!(requested(&rule, &m.params, &h, None), None);
    }
}
