//! Identity headers on the way to the app: client-supplied copies are removed in every
//! spelling (see [`IdentityHeaders`]), then fortress's own values are set.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::Principal;
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

/// Sets fortress's identity headers for a verified principal.
pub fn inject(headers: &mut HeaderMap, principal: &Principal) {
    set(headers, X_AUTH_SUBJECT, &principal.subject);
    set(headers, X_AUTH_ROLES, &principal.roles.join(","));
    if let Some(t) = &principal.tenant {
        set(headers, X_TENANT_ID, t);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // A claim that cannot be a header value (control characters) is left out rather than
    // passed on mangled; the app then sees no value, not a wrong one.
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
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
}
