//! Identity headers on the way to the app: client-supplied copies are removed in every
//! spelling (see [`IdentityHeaders`]), then fortress's own values are set.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::{AuthError, Principal};
pub use crate::policy::identity::{IdentityHeaders, X_AUTH_ROLES, X_AUTH_SUBJECT, X_TENANT_ID};

/// Removes every client-supplied identity header.
pub fn strip(identity: &IdentityHeaders, headers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| identity.contains(k.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Sets fortress's identity headers for a verified principal. The values were checked when
/// the principal was built (`auth::identity`); one that still cannot be a header value
/// refuses the request: the app never gets a request with an identity header left out.
pub fn inject(headers: &mut HeaderMap, principal: &Principal) -> Result<(), AuthError> {
    set(headers, X_AUTH_SUBJECT, &principal.subject)?;
    set(headers, X_AUTH_ROLES, &principal.roles.join(","))?;
    if let Some(t) = &principal.tenant {
        set(headers, X_TENANT_ID, t)?;
    }
    Ok(())
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), AuthError> {
    let v = HeaderValue::from_str(value).map_err(|_| AuthError::InvalidIdentity)?;
    headers.insert(HeaderName::from_static(name), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_every_spelling() {
        let ids = IdentityHeaders::default();
        let mut h = HeaderMap::new();
        h.insert("x-auth-subject", HeaderValue::from_static("admin"));
        h.insert(
            HeaderName::from_bytes(b"X_Auth_Roles").expect("name"),
            HeaderValue::from_static("admin"),
        );
        h.insert(
            HeaderName::from_bytes(b"x-tenant_id").expect("name"),
            HeaderValue::from_static("t"),
        );
        h.insert("x-other", HeaderValue::from_static("1"));
        strip(&ids, &mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-other"));
    }

    #[test]
    fn a_value_that_is_not_a_header_value_refuses() {
        let p = |subject: &str, tenant: Option<&str>| Principal {
            subject: subject.into(),
            roles: vec!["r".into()],
            tenant: tenant.map(Into::into),
            jti: None,
            expires_at: 0,
            issued_at: None,
        };
        let mut h = HeaderMap::new();
        assert_eq!(inject(&mut h, &p("alice", Some("t1"))), Ok(()));
        assert_eq!(h["x-auth-subject"], "alice");
        assert_eq!(h["x-auth-roles"], "r");
        assert_eq!(h["x-tenant-id"], "t1");
        for (s, t) in [("a\r\nb", None), ("alice", Some("t\n1")), ("a\0", None)] {
            let mut h = HeaderMap::new();
            assert_eq!(
                inject(&mut h, &p(s, t)),
                Err(AuthError::InvalidIdentity),
                "{s:?} {t:?}"
            );
        }
    }
}
