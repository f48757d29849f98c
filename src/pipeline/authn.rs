//! Authentication stage: extract the bearer token (one `Authorization` header, scheme
//! case-insensitive; or the configured cookie), verify it, then check revocation (by token
//! id, or by subject for tokens issued before a time).

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;

use super::context::RequestContext;
use super::decide::Step;
use crate::auth::jwt::principal_from_claims;
use crate::auth::{AuthError, SharedPrincipal};
use crate::error::Rejection;
use crate::proxy::credentials::{cookie_name_matches, cookie_pair_name};

/// The authentication stage, after routing: only the route knows whether it is public.
/// Unmatched requests let through by `default: allow` are authenticated when authentication
/// is configured.
pub async fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let public = match ctx.route() {
        Some(r) => r.public,
        None => ctx.snapshot.policy.auth.is_none(),
    };
    if public {
        return Ok(Step::Skip("public route"));
    }
    // A shared store's copy of the revocations that has not synced for `max_staleness` could
    // honour a revoked token: refuse rather than judge with it.
    if ctx.snapshot.store.is_stale() {
        return Err(Rejection::StateUnavailable);
    }
    let principal = authenticate(ctx, &req.headers)
        .await
        .map_err(Rejection::Unauthenticated)?;
    ctx.principal = Some(principal);
    Ok(Step::Pass)
}

async fn authenticate(
    ctx: &RequestContext,
    headers: &HeaderMap,
) -> Result<SharedPrincipal, AuthError> {
    let snapshot = &ctx.snapshot;
    // Compile refuses non-public routes without authentication; fail closed anyway.
    let (Some(auth), Some(verifier)) = (&snapshot.policy.auth, snapshot.verifier()) else {
        return Err(AuthError::KeysUnavailable);
    };
    let principal = match &ctx.claims_override {
        Some(claims) => principal_from_claims(&auth.jwt.claims, claims)?,
        None => {
            let token = extract(headers, auth.cookie.as_deref())?;
            verifier.verify(token, ctx.now).await?
        }
    };
    // Checked on every request, cached or not: revocation takes effect at once.
    let now_ms = ctx.now.saturating_mul(1000);
    if snapshot.store.is_revoked(
        now_ms,
        principal.jti.as_deref(),
        &principal.subject,
        principal.issued_at,
    ) {
        return Err(AuthError::TokenRevoked);
    }
    Ok(principal)
}

/// The token from `Authorization: Bearer …` (exactly one header) or the named cookie.
pub fn extract<'h>(headers: &'h HeaderMap, cookie: Option<&str>) -> Result<&'h str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(AuthError::MalformedToken),
        (Some(v), None) => {
            let v = v.to_str().map_err(|_| AuthError::MalformedToken)?;
            let (scheme, token) = v.trim().split_once(' ').ok_or(AuthError::MalformedToken)?;
            let token = token.trim();
            if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
                return Err(AuthError::MalformedToken);
            }
            Ok(token)
        }
        (None, _) => match cookie {
            Some(name) => find_cookie(headers, name)?.ok_or(AuthError::MissingToken),
            None => Err(AuthError::MissingToken),
        },
    }
}

/// The token cookie's value. Every cookie an app might read as the token cookie counts
/// (`cookie_name_matches`: case, percent-encoding, PHP's name mangling); more than one is
/// ambiguous (an app that keeps the last would read a token fortress never verified) and
/// refuses the request as a malformed token.
fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, AuthError> {
    let mut found = None;
    for v in headers.get_all(COOKIE) {
        let v = v.to_str().map_err(|_| AuthError::MalformedToken)?;
        for pair in v.split(';') {
            let pair = pair.trim();
            if !cookie_name_matches(cookie_pair_name(pair.as_bytes()), name) {
                continue;
            }
            if found.is_some() {
                return Err(AuthError::MalformedToken);
            }
            found = Some(pair.split_once('=').map_or("", |(_, v)| v.trim()));
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn extraction() {
        assert_eq!(
            extract(&h(&[("authorization", "Bearer abc")]), None),
            Ok("abc")
        );
        assert_eq!(
            extract(&h(&[("authorization", "bearer abc")]), None),
            Ok("abc")
        );
        assert_eq!(
            extract(&h(&[("authorization", "BEARER  abc ")]), None),
            Ok("abc")
        );
        assert_eq!(
            extract(&h(&[("authorization", "Basic abc")]), None),
            Err(AuthError::MalformedToken)
        );
        assert_eq!(
            extract(&h(&[("authorization", "Bearer")]), None),
            Err(AuthError::MalformedToken)
        );
        assert_eq!(
            extract(
                &h(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
                None
            ),
            Err(AuthError::MalformedToken)
        );
        assert_eq!(extract(&h(&[]), None), Err(AuthError::MissingToken));
        assert_eq!(
            extract(&h(&[("cookie", "a=1; session=tok; b=2")]), Some("session")),
            Ok("tok")
        );
        assert_eq!(
            extract(&h(&[("cookie", "a=1")]), Some("session")),
            Err(AuthError::MissingToken)
        );
        // Two token cookies, in any spelling an app might read as the token cookie, are
        // ambiguous.
        for cookies in [
            &[("cookie", "session=a; session=b")][..],
            &[("cookie", "session=a"), ("cookie", "session=b")],
            &[("cookie", "session=a; Session=b")],
            &[("cookie", "session=a; sess%69on=b")],
            &[("cookie", "session=a; \"session\"=b")],
        ] {
            assert_eq!(
                extract(&h(cookies), Some("session")),
                Err(AuthError::MalformedToken),
                "{cookies:?}"
            );
        }
        assert_eq!(
            extract(&h(&[("cookie", "sess_id=a; sess.id=b")]), Some("sess_id")),
            Err(AuthError::MalformedToken)
        );
        assert_eq!(
            extract(
                &h(&[("cookie", "session2=a; session=tok; xsession=b")]),
                Some("session")
            ),
            Ok("tok")
        );
    }
}
