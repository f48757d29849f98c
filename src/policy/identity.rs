//! Identity headers: the names only fortress may set towards the app, compared in every
//! spelling an app framework might fold onto the same name (case, and `_` vs `-`).

use http::header::HeaderName;

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

    /// The names (normalized).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// `normalized` (lower case, `-`) equals `name` once folded the same way.
pub(crate) fn same_name(normalized: &str, name: &str) -> bool {
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

/// Lower case, `_` → `-`.
pub(crate) fn normalize(name: &str) -> String {
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
    fn configured_extras() {
        let mut ids = IdentityHeaders::default();
        ids.add("X-User-Email").expect("valid");
        assert!(ids.contains("x_user_email"));
        assert!(ids.contains("X-Auth-Subject"));
        assert!(!ids.contains("x-other"));
        assert!(ids.add("bad header").is_err());
    }
}
