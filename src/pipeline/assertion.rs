//! The identity assertion: a short-lived JWT fortress signs for each forwarded request (who,
//! which roles and tenant, which method and canonical path, which request id), so the app —
//! or a ten-line middleware — can refuse requests that did not come through fortress (other
//! containers in the pod share its loopback). See `docs/identity-assertion.md`.

use http::{HeaderName, HeaderValue};
use jsonwebtoken::Header;
use serde::Serialize;

use super::context::RequestContext;
use crate::error::Rejection;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
    sub: Option<&'a str>,
    roles: &'a [String],
    tenant: Option<&'a str>,
    method: &'a str,
    path: &'a str,
}

/// The assertion header for a request about to be forwarded (`None`: not configured). A
/// signing failure refuses the request (fail closed: the app would refuse it anyway).
pub fn sign(
    ctx: &RequestContext,
    path: &str,
) -> Result<Option<(HeaderName, HeaderValue)>, Rejection> {
    let Some(a) = ctx.snapshot.policy.assertion.as_ref() else {
        return Ok(None);
    };
    let principal = ctx.principal.as_deref();
    let now = ctx.now;
    let claims = Claims {
        iss: &a.issuer,
        aud: &a.audience,
        iat: now,
        exp: now.saturating_add(a.ttl.as_secs().max(1)),
        jti: ctx.ids.request_id(),
        sub: principal.map(|p| p.subject.as_str()),
        roles: principal.map_or(&[], |p| p.roles.as_slice()),
        tenant: principal.and_then(|p| p.tenant.as_deref()),
        method: ctx.method.as_str(),
        path: &ctx.canonical_path(path),
    };
    let mut header = Header::new(a.algorithm);
    header.kid = a.jwks.as_ref().map(|(kid, _)| kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &a.encoding).map_err(|e| {
        tracing::error!(error = %e, "identity assertion could not be signed; request refused");
        Rejection::UpstreamFailed
    })?;
    let value = HeaderValue::from_str(&token).map_err(|_| Rejection::UpstreamFailed)?;
    Ok(Some((a.header.clone(), value)))
}
