//! Authentication stage: extract the bearer token (one `Authorization` header, scheme
//! case-insensitive; or the configured cookie), verify it, then check revocation.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

use crate::auth::revocation::Revocations;
use crate::auth::{AuthError, SharedPrincipal};
use crate::config::auth::AuthSettings;

/// Authenticates a request.
pub async fn authenticate(
    headers: &HeaderMap,
    auth: &AuthSettings,
    revocations: &dyn Revocations,
    now: u64,
) -> Result<SharedPrincipal, AuthError> {
    let token = extract(headers, auth.cookie.as_deref())?;
    let principal = auth.authenticator.verify(token, now).await?;
    // Checked on every request, cached or not: revocation takes effect at once.
    if let Some(jti) = &principal.jti
        && revocations.is_revoked(jti)
    {
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
        (None, _) => cookie
            .and_then(|name| find_cookie(headers, name))
            .ok_or(AuthError::MissingToken),
    }
}

fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
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
    }
}
