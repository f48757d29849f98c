//! Tenant isolation: the token's tenant must equal the tenant the request names, exactly.

use std::borrow::Cow;

use http::header::{CONNECTION, HeaderMap, HeaderName};
use http::request::Parts;

use super::ambiguity::{key_matches, query_key};
use super::context::{RequestContext, RequestedTenant};
use super::decide::Step;
use crate::auth::Principal;
use crate::error::{AmbiguityError, Rejection};
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

/// The tenant stage: needs the principal. Records the tenant the request named. A request
/// that names its tenant ambiguously (twice, as a list, in `Connection`, in another spelling
/// of the query key) is refused with 400 `ambiguous_tenant`, in every mode: the app could
/// read another tenant than the one judged. (`_` spellings of a tenant header are refused
/// earlier, by the ambiguity stage.)
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let Some(rule) = ctx.route().and_then(|r| r.access.tenant.as_ref()) else {
        return Ok(Step::Skip("no tenant rule"));
    };
    let requested = requested(rule, ctx, req)
        .map_err(|Ambiguous| Rejection::RejectAmbiguous(AmbiguityError::AmbiguousTenant))?;
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

/// The request names its tenant in more than one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ambiguous;

/// The tenant named by the request; `Ok(None)` when missing or undecodable.
fn requested<'a>(
    rule: &TenantRule,
    ctx: &'a RequestContext,
    req: &'a Parts,
) -> Result<Option<Cow<'a, str>>, Ambiguous> {
    match &rule.source {
        // The canonical path keeps reserved characters percent-encoded; compare decoded.
        TenantSource::PathParam(name) => {
            Ok(ctx.param(name, req.uri.path()).and_then(percent_decode))
        }
        TenantSource::Header(name) => header_value(&req.headers, name),
        TenantSource::Query(name) => match req.uri.query() {
            Some(q) => query_value(q, name).map(|v| v.and_then(form_decode)),
            None => Ok(None),
        },
    }
}

/// The value of the tenant header. Ambiguous when it is sent twice, holds a list (`,`), or
/// `Connection` names it (the next hop would drop it, or not).
fn header_value<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<Cow<'h, str>>, Ambiguous> {
    let listed = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| crate::policy::identity::same_name(name.as_str(), n.trim()));
    if listed {
        return Err(Ambiguous);
    }
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) if v.as_bytes().contains(&b',') => Err(Ambiguous),
        (Some(v), None) => Ok(v.to_str().ok().map(Cow::Borrowed)),
        (Some(_), Some(_)) => Err(Ambiguous),
    }
}

/// The raw value of query key `name`; `Ok(None)` when missing. Ambiguous when the key is
/// given twice, in another spelling a framework reads as the same key (`ORG`, `Org`,
/// `%4Frg`, `org[]`), or next to a `;` (`a=1;org=x`, `org=x;y`: frameworks that split on `;`
/// read another value).
fn query_value<'a>(query: &'a str, name: &str) -> Result<Option<&'a str>, Ambiguous> {
    let mut found = None;
    for pair in query.split('&') {
        if pair.contains(';') {
            if pair.split(';').any(|p| key_matches(query_key(p), name)) {
                return Err(Ambiguous);
            }
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !key_matches(k, name) {
            continue;
        }
        if form_decode(k).as_deref() != Some(name) || found.is_some() {
            return Err(Ambiguous);
        }
        found = Some(v);
    }
    Ok(found)
}

/// A query value as `application/x-www-form-urlencoded` reads it, the way Flask, Starlette,
/// Express (`qs`), Rails and `URLSearchParams` all do: `+` is a space, then strict
/// percent-decoding (`%2B` is a `+`). `None` on a bad escape.
fn form_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('+') {
        return percent_decode(s);
    }
    percent_decode(&s.replace('+', " ")).map(|c| Cow::Owned(c.into_owned()))
}

/// Strict percent-decoding to UTF-8 (`+` is not a space: paths and headers). `None` on a bad
/// escape.
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
        assert_eq!(form_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(form_decode("a%2Bb").as_deref(), Some("a+b"));
        assert_eq!(form_decode("a+%2B+b").as_deref(), Some("a + b"));
        assert_eq!(form_decode("acme").as_deref(), Some("acme"));
        assert_eq!(form_decode("a+%2").as_deref(), None);
    }

    #[test]
    fn query_source() {
        assert_eq!(query_value("a=1&org=acme", "org"), Ok(Some("acme")));
        assert_eq!(query_value("orgx=a", "org"), Ok(None));
        assert_eq!(query_value("o%72g=acme", "org"), Ok(Some("acme")));
        assert_eq!(query_value("", "org"), Ok(None));
        for q in [
            "org=a&org=b",
            "org=a&org=a",
            "org=a&ORG=b",
            "Org=a",
            "org=a&%4Frg=b",
            "org[]=a",
            "org=a&org[x]=b",
            "a=1;org=x",
            "org=a;b",
            "org=a&x=1;org=b",
        ] {
            assert_eq!(query_value(q, "org"), Err(Ambiguous), "{q}");
        }
    }

    #[test]
    fn header_source() {
        let name = HeaderName::from_static("x-org-id");
        let mut h = HeaderMap::new();
        assert_eq!(header_value(&h, &name), Ok(None));
        h.insert("x-org-id", http::HeaderValue::from_static("acme"));
        assert_eq!(header_value(&h, &name), Ok(Some(Cow::Borrowed("acme"))));
        h.insert(
            CONNECTION,
            http::HeaderValue::from_static("close, X_Org_Id"),
        );
        assert_eq!(header_value(&h, &name), Err(Ambiguous));
        h.remove(CONNECTION);
        h.append("x-org-id", http::HeaderValue::from_static("acme"));
        assert_eq!(header_value(&h, &name), Err(Ambiguous));
        h.insert("x-org-id", http::HeaderValue::from_static("acme, globex"));
        assert_eq!(header_value(&h, &name), Err(Ambiguous));
    }
}
