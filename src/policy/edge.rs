//! Edge rules, compiled: request limits (`max_body`, `content_types`), security response
//! headers, CORS and error scrubbing. Each route carries its resolved [`EdgeRules`] (its own
//! keys over the policy-wide ones), and the policy carries the policy-wide set for requests
//! that match no route and for the admin listener. Header values are built here, at compile
//! time: a request only clones them (a reference count).

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};

/// Default `server.max_body`: 10 MiB.
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;

/// The edge rules that apply to one route (or, policy-wide, to unmatched requests).
#[derive(Debug, Clone)]
pub struct EdgeRules {
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Accepted media types (`type/subtype` or `type/*`, lower case); `None`: any.
    pub content_types: Option<Arc<[MediaRange]>>,
    /// Security headers set on every response.
    pub security: Arc<SecurityHeaders>,
    /// CORS, if configured.
    pub cors: Option<Arc<Cors>>,
    /// Replace the body of an upstream 5xx with fortress's own JSON error.
    pub scrub_errors: bool,
}

impl Default for EdgeRules {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            content_types: None,
            security: Arc::new(SecurityHeaders::default()),
            cors: None,
            scrub_errors: true,
        }
    }
}

/// One accepted media type: `type/subtype`, or `type/*` (`subtype` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    /// Top-level type, lower case.
    pub kind: Box<str>,
    /// Subtype, lower case; `None` for `type/*`.
    pub subtype: Option<Box<str>>,
}

impl MediaRange {
    /// Whether `kind/subtype` (already lower case) is in this range.
    pub fn matches(&self, kind: &str, subtype: &str) -> bool {
        *self.kind == *kind && self.subtype.as_deref().is_none_or(|s| s == subtype)
    }
}

/// What fortress does with one security header on a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderAction {
    /// Set this value; an upstream value is replaced (fortress's policy wins).
    Set(HeaderValue),
    /// Set this value unless the upstream set its own (the app's value wins: `keep`).
    Default(HeaderValue),
    /// Remove the header, also from upstream responses.
    Remove,
}

/// The security response headers, resolved.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    /// Headers set (or removed) on every response.
    pub always: Vec<(HeaderName, HeaderAction)>,
    /// `Strict-Transport-Security`, only on responses to HTTPS requests.
    pub hsts: HeaderAction,
    /// Upstream response headers removed (`Server`, `X-Powered-By`).
    pub strip: Vec<HeaderName>,
}

/// The default `Strict-Transport-Security` value (one year).
pub const DEFAULT_HSTS: &str = "max-age=31536000";

impl Default for SecurityHeaders {
    fn default() -> Self {
        let set = |v: &'static str| HeaderAction::Set(HeaderValue::from_static(v));
        Self {
            always: vec![
                (http::header::X_CONTENT_TYPE_OPTIONS, set("nosniff")),
                (http::header::X_FRAME_OPTIONS, set("DENY")),
                (
                    http::header::REFERRER_POLICY,
                    set("strict-origin-when-cross-origin"),
                ),
            ],
            hsts: set(DEFAULT_HSTS),
            strip: vec![
                http::header::SERVER,
                HeaderName::from_static("x-powered-by"),
            ],
        }
    }
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// Any origin (`*`; never with credentials).
    Any,
    /// Exactly this serialized origin (`https://app.example.com`, `http://localhost:3000`).
    Exact(Box<str>),
    /// `scheme://*.domain[:port]`: one or more DNS labels before `.domain`, same scheme and
    /// port.
    Wildcard {
        /// `http` or `https`.
        scheme: Box<str>,
        /// `.example.com` (with the leading dot).
        suffix: Box<str>,
        /// The port, as written (`None`: the scheme's default, i.e. no port in the origin).
        port: Option<u16>,
    },
}

/// A compiled `cors:` block.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Allowed origins.
    pub origins: Vec<OriginRule>,
    /// Allowed methods (for preflights).
    pub methods: Vec<Method>,
    /// `Access-Control-Allow-Methods`.
    pub methods_value: HeaderValue,
    /// Allowed request headers, lower case; `None`: any (`*`).
    pub headers: Option<Vec<HeaderName>>,
    /// `Access-Control-Allow-Headers`, if any header is allowed.
    pub headers_value: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
    /// `Access-Control-Max-Age`, if set.
    pub max_age: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`, if set.
    pub expose_headers: Option<HeaderValue>,
}

impl Cors {
    /// Whether `origin` (the request's `Origin` value) is allowed.
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        let Some(parsed) = parse_origin(origin) else {
            return false;
        };
        self.origins.iter().any(|rule| match rule {
            OriginRule::Any => true,
            OriginRule::Exact(o) => o.as_bytes() == origin,
            OriginRule::Wildcard {
                scheme,
                suffix,
                port,
            } => {
                *parsed.scheme == **scheme
                    && parsed.port == *port
                    && parsed.host.len() > suffix.len()
                    && parsed.host.ends_with(&**suffix)
            }
        })
    }

    /// Whether a preflight may ask for `method`.
    pub fn allows_method(&self, method: &Method) -> bool {
        self.methods.iter().any(|m| m == method)
    }
}

/// A serialized origin, split (borrowed from the header value).
#[derive(Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host name (lower-case DNS labels) or IPv4 literal.
    pub host: &'a str,
    /// Explicit port.
    pub port: Option<u16>,
}

/// Parses a serialized origin the way browsers send it (RFC 6454 §6.2): `http` or `https`,
/// `://`, a lower-case host of non-empty DNS labels (`a-z`, `0-9`, `-`) or bracketed IPv6
/// literal, an optional `:port` of 1–5 digits, nothing else (no path, user info, query,
/// upper case, trailing dot). `null` and anything else is `None`.
pub fn parse_origin(value: &[u8]) -> Option<Origin<'_>> {
    let s = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = s.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']')?;
        let (h, p) = rest.split_at(end + 1);
        let inner = &h[1..h.len() - 1];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b':' || b == b'.')
        {
            return None;
        }
        (h, p)
    } else {
        match rest.find(':') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        }
    };
    let port = match port {
        "" => None,
        p => {
            let digits = p.strip_prefix(':')?;
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            Some(digits.parse::<u16>().ok()?)
        }
    };
    if !host.starts_with('[') && !valid_dns_name(host) {
        return None;
    }
    Some(Origin { scheme, host, port })
}

/// Non-empty labels of `a-z`, `0-9` and inner `-`, at most 63 bytes each, 253 in all.
pub fn valid_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: Vec<OriginRule>) -> Cors {
        Cors {
            origins,
            methods: vec![Method::GET],
            methods_value: HeaderValue::from_static("GET"),
            headers: Some(Vec::new()),
            headers_value: None,
            credentials: false,
            max_age: None,
            expose_headers: None,
        }
    }

    #[test]
    fn origins_parse_strictly() {
        assert_eq!(
            parse_origin(b"https://a.example.com:8443"),
            Some(Origin {
                scheme: "https",
                host: "a.example.com",
                port: Some(8443)
            })
        );
        assert!(parse_origin(b"http://[::1]:3000").is_some());
        for bad in [
            &b"null"[..],
            b"https://",
            b"https://a.example.com/",
            b"https://evil.com/.example.com",
            b"https://evil.com?.example.com",
            b"https://evil.com#.example.com",
            b"https://user@a.example.com",
            b"https://A.example.com",
            b"https://a..example.com",
            b"https://a.example.com.",
            b"https://a.example.com:",
            b"https://a.example.com:99999",
            b"https://a.example.com:+80",
            b"ftp://a.example.com",
            b"HTTPS://a.example.com",
            b"https://a.example.com, https://b.example.com",
            b"https://a_b.example.com",
            b"https://a.example.com\t",
        ] {
            assert_eq!(parse_origin(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn wildcards_match_labels_not_tricks() {
        let c = cors(vec![OriginRule::Wildcard {
            scheme: "https".into(),
            suffix: ".example.com".into(),
            port: None,
        }]);
        assert!(c.allows_origin(b"https://a.example.com"));
        assert!(c.allows_origin(b"https://a.b.example.com"));
        for bad in [
            &b"https://example.com"[..],
            b"https://.example.com",
            b"http://a.example.com",
            b"https://a.example.com:443",
            b"https://a.example.com:8443",
            b"https://evilexample.com",
            b"https://a.example.com.evil.com",
            b"https://evil.com/.example.com",
            b"https://evil.com%2f.example.com",
            b"null",
        ] {
            assert!(!c.allows_origin(bad), "{}", String::from_utf8_lossy(bad));
        }
        let c = cors(vec![OriginRule::Exact("https://app.example.com".into())]);
        assert!(c.allows_origin(b"https://app.example.com"));
        assert!(!c.allows_origin(b"https://app.example.com:443"));
        assert!(!c.allows_origin(b"https://app.example.co"));
        assert!(!c.allows_origin(b"null"));
        let c = cors(vec![OriginRule::Any]);
        assert!(c.allows_origin(b"https://x.test"));
        assert!(!c.allows_origin(b"null"), "malformed origins never match");
    }

    #[test]
    fn media_ranges() {
        let json = MediaRange {
            kind: "application".into(),
            subtype: Some("json".into()),
        };
        assert!(json.matches("application", "json"));
        assert!(!json.matches("application", "jsonx"));
        let text = MediaRange {
            kind: "text".into(),
            subtype: None,
        };
        assert!(text.matches("text", "csv"));
        assert!(!text.matches("textx", "csv"));
    }
}
