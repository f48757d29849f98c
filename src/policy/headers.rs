//! Request header rules compiled from the policy: which header names fortress reads or sets
//! (their `_` spellings are refused), which client headers are dropped, and what happens to
//! header names with `_`.
//!
//! Names are compared in every spelling an app framework may fold onto the same name: case,
//! and `_` vs `-` (CGI/WSGI/Rack turn `X-Org-Id` and `X_Org_Id` into the same
//! `HTTP_X_ORG_ID`).

use schemars::JsonSchema;
use serde::Deserialize;

use super::identity::{normalize, same_name};

/// What to do with request header names that contain `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnderscoreHeaders {
    /// Dropped before the request is forwarded (nginx's `underscores_in_headers off`).
    #[default]
    Drop,
    /// Forwarded (an `_` spelling of a header the policy reads is still refused).
    Keep,
}

/// A set of header names, compared in every spelling (no allocation per comparison).
#[derive(Debug, Clone, Default)]
pub struct NameSet {
    names: Vec<String>,
}

impl NameSet {
    /// A set from names (invalid names are the caller's to refuse).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = Self::default();
        for n in names {
            set.add(n);
        }
        set
    }

    /// Adds a name.
    pub fn add(&mut self, name: &str) {
        let n = normalize(name);
        if !self.names.contains(&n) {
            self.names.push(n);
        }
    }

    /// Whether `name` is a spelling of a name in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| same_name(n, name))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The compiled header rules.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    /// Header names with `_`: dropped or kept.
    pub underscore: UnderscoreHeaders,
    /// Client headers removed (every spelling) from peers that are not trusted proxies.
    pub strip_untrusted: NameSet,
    /// Headers the policy reads or fortress sets: an `_` spelling of one is refused.
    pub protected: NameSet,
    /// Every route's tenant header (a subset of `protected`; refusals say `ambiguous_tenant`).
    pub tenant_headers: NameSet,
}

/// Default `server.strip_client_headers`: client-IP, scheme and host headers an app or its
/// framework may trust (Rails `remote_ip`, PHP `HTTP_CLIENT_IP`, gunicorn's
/// `secure_scheme_headers`, Java `Proxy-Client-IP` conventions, …). Every `X-Forwarded-*`
/// name is removed from untrusted peers as well, whatever this list says.
pub const DEFAULT_STRIP_CLIENT_HEADERS: [&str; 20] = [
    "X-Real-IP",
    "True-Client-IP",
    "X-Client-IP",
    "Client-IP",
    "X-Cluster-Client-IP",
    "Fastly-Client-IP",
    "CF-Connecting-IP",
    "WL-Proxy-Client-IP",
    "Proxy-Client-IP",
    "X-ProxyUser-Ip",
    "X-Original-Forwarded-For",
    "Forwarded-For",
    "X-Forwarded",
    "Forwarded",
    "X-Url-Scheme",
    "Front-End-Https",
    "X-Original-Host",
    "X-Host",
    "X-Forwarded-Ssl",
    "X-Forwarded-Prefix",
];

/// Method, URL and CGI override headers, removed (every spelling) from every request, trusted
/// proxy or not: an app, framework or app server that obeys them would run another method or
/// path, or see another user or client, than the one judged. The CGI/WSGI meta-variable names
/// matter with `underscore_headers: keep` (gunicorn takes `SCRIPT_NAME` and `PATH_INFO` from
/// the proxy's headers and reroutes the request) and for servers that fold `-` onto `_`.
pub const OVERRIDE_HEADERS: [&str; 27] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-forwarded-method",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-envoy-original-path",
    "script-name",
    "path-info",
    "path-translated",
    "query-string",
    "request-uri",
    "request-method",
    "remote-user",
    "remote-addr",
    "remote-host",
    "remote-ident",
    "auth-type",
    "gateway-interface",
    "server-name",
    "server-port",
    "server-protocol",
    "document-root",
];

/// Headers fortress reads or sets whatever the policy says (besides identity, tenant and
/// cookie headers, which come from the policy). Every `X-Forwarded-*` name is protected too.
pub const ALWAYS_PROTECTED: [&str; 7] = [
    "authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "x-real-ip",
    "x-request-id",
];

impl HeaderRules {
    /// Whether `name` (a name with `_`) folds onto a protected header.
    pub fn is_protected(&self, name: &str) -> bool {
        self.protected.contains(name) || is_forwarded_family(name)
    }

    /// Whether `name` is a spelling of an override header.
    pub fn is_override(name: &str) -> bool {
        OVERRIDE_HEADERS.iter().any(|n| same_name(n, name))
    }
}

/// `X-Forwarded-*` in any spelling.
pub fn is_forwarded_family(name: &str) -> bool {
    const PREFIX: &str = "x-forwarded-";
    name.len() > PREFIX.len()
        && name
            .get(..PREFIX.len())
            .is_some_and(|p| same_name(PREFIX, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let set = NameSet::new(["X-Org-Id"]);
        assert!(set.contains("x_org_id"));
        assert!(set.contains("X_ORG-ID"));
        assert!(!set.contains("x-org"));
        let rules = HeaderRules {
            protected: NameSet::new(ALWAYS_PROTECTED),
            ..HeaderRules::default()
        };
        assert!(rules.is_protected("content_length"));
        assert!(rules.is_protected("x_forwarded_anything"));
        assert!(!rules.is_protected("x_forwarded_"));
        assert!(!rules.is_protected("x_custom"));
        assert!(HeaderRules::is_override("X_HTTP_Method_Override"));
        assert!(HeaderRules::is_override("SCRIPT_NAME"));
        assert!(HeaderRules::is_override("Path-Info"));
        assert!(HeaderRules::is_override("x-original-uri"));
        assert!(!HeaderRules::is_override("x-http"));
    }
}
