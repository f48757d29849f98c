//! Identity headers: only fortress may tell the app who the caller is. Client-supplied copies
//! are removed in every spelling an app framework might fold onto the same name (case, and
//! `_` vs `-`, e.g. `X_Auth_Subject`), then fortress's own values are set.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::Principal;

/// The set of identity header names (normalized: lower case, `_` → `-`).
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    names: Vec<String>,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            names: DEFAULT_IDENTITY_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl IdentityHeaders {
    /// The built-in set, for configs without `authentication` (shared, never reallocated).
    pub fn builtin() -> &'static IdentityHeaders {
        static BUILTIN: std::sync::LazyLock<IdentityHeaders> =
            std::sync::LazyLock::new(IdentityHeaders::default);
        &BUILTIN
    }

    /// Adds an operator-configured header name.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("`{name}` is not a valid header name"));
        }
        let n = normalize(name);
        if !self.names.contains(&n) {
            self.names.push(n);
        }
        Ok(())
    }

    /// Whether `name` is (a spelling of) an identity header. No allocation: this runs for
    /// every header of every request.
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| same_name(n, name))
    }

    /// Removes every client-supplied identity header.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.contains(k.as_str()))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(&name);
        }
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

/// `normalized` (lower case, `-`) equals `name` once folded the same way.
fn same_name(normalized: &str, name: &str) -> bool {
    normalized.len() == name.len()
        && normalized.bytes().zip(name.bytes()).all(|(n, b)| {
            let b = if b == b'_' {
                b'-'
            } else {
                b.to_ascii_lowercase()
            };
            n == b
        })
}

fn normalize(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b == b'_' {
                '-'
            } else {
                b.to_ascii_lowercase() as char
            }
        })
        .collect()
}

/// Subject header set by fortress.
pub const X_AUTH_SUBJECT: &str = "x-auth-subject";
/// Roles header set by fortress (comma-separated).
pub const X_AUTH_ROLES: &str = "x-auth-roles";
/// Tenant header set by fortress.
pub const X_TENANT_ID: &str = "x-tenant-id";
const DEFAULT_IDENTITY_HEADERS: [&str; 4] = [
    "x-auth-subject",
    "x-auth-roles",
    "x-tenant-id",
    "x-auth-claims",
];

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
        ids.strip(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-other"));
    }

    #[test]
    fn configured_extras() {
        let mut ids = IdentityHeaders::default();
        ids.add("X-User-Email").expect("valid");
        assert!(ids.contains("x_user_email"));
        assert!(ids.add("bad header").is_err());
    }
}
