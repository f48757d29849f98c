//! Edge keys (`server.max_body`; `content_types`, `security_headers`, `cors`, `scrub_errors`
//! at the top level and on routes): their raw YAML mirror and their compilation into
//! [`crate::policy::edge::EdgeRules`]. A route's keys override the policy-wide ones key by
//! key (`security_headers` header by header; a route's `cors` block replaces the policy's).

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use schemars::JsonSchema;
use serde::Deserialize;

use super::yaml::{ConfigError, Located};
use crate::policy::Environment;
use crate::policy::edge::{
    Cors, DEFAULT_MAX_BODY, EdgeRules, HeaderAction, MediaRange, OriginRule, SecurityHeaders,
    valid_dns_name,
};

/// A security header setting: the value to send, or `false` to send none (and remove the
/// app's).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawHeaderSetting {
    /// `false`: no such header (the app's is removed too).
    Switch(bool),
    /// The header value.
    Value(String),
}

/// `security_headers:` (top level or on a route). Absent keys keep the default (or, on a
/// route, the top-level setting).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecurityHeaders {
    /// `X-Content-Type-Options` (default `nosniff`).
    #[serde(default)]
    pub content_type_options: Option<Located<RawHeaderSetting>>,
    /// `X-Frame-Options` (default `DENY`).
    #[serde(default)]
    pub frame_options: Option<Located<RawHeaderSetting>>,
    /// `Referrer-Policy` (default `strict-origin-when-cross-origin`).
    #[serde(default)]
    pub referrer_policy: Option<Located<RawHeaderSetting>>,
    /// `Strict-Transport-Security`, sent only on responses to HTTPS requests (TLS, or vouched
    /// for by a trusted proxy's `X-Forwarded-Proto: https`); default `max-age=31536000`.
    #[serde(default)]
    pub strict_transport_security: Option<Located<RawHeaderSetting>>,
    /// `Content-Security-Policy` (default: none, fortress cannot know what the app's pages
    /// load; e.g. `default-src 'none'; frame-ancestors 'none'` for a pure JSON API).
    #[serde(default)]
    pub content_security_policy: Option<Located<RawHeaderSetting>>,
    /// `Permissions-Policy` (default: none; e.g. `camera=(), microphone=(), geolocation=()`).
    #[serde(default)]
    pub permissions_policy: Option<Located<RawHeaderSetting>>,
    /// Headers (by the key names above) whose value the app may set itself: fortress's value
    /// is sent only when the app's response has none. Default: none (fortress's policy wins).
    #[serde(default)]
    pub keep: Option<Vec<Located<String>>>,
}

/// `cors:` (top level or on a route; a route's block replaces the top-level one).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Allowed origins: `https://app.example.com`, `http://localhost:3000`,
    /// `https://*.example.com` (one or more labels, same scheme and port), or `*` (any,
    /// without credentials). `null` cannot be allowed.
    pub origins: Vec<Located<String>>,
    /// Methods a preflight may ask for (default GET, HEAD, POST).
    #[serde(default)]
    pub methods: Option<Vec<Located<String>>>,
    /// Request headers a preflight may ask for (default none beyond the CORS-safelisted
    /// ones; `*` for any, without credentials).
    #[serde(default)]
    pub headers: Option<Vec<Located<String>>>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, `Authorization`). Default
    /// false; not allowed with origin `*` or headers `*`.
    #[serde(default)]
    pub credentials: Option<Located<bool>>,
    /// `Access-Control-Max-Age`: how long a browser caches a preflight (`10m`, `2h`; at most
    /// `24h`). Default: not sent (browsers use 5 s).
    #[serde(default)]
    pub max_age: Option<Located<String>>,
    /// Response headers browser scripts may read (`Access-Control-Expose-Headers`).
    #[serde(default)]
    pub expose_headers: Option<Vec<Located<String>>>,
}

/// The top-level edge keys, as read from [`super::raw::RawConfig`].
pub struct TopLevel<'a> {
    /// `server.max_body`.
    pub max_body: Option<&'a Located<String>>,
    /// `security_headers:`.
    pub security_headers: Option<&'a RawSecurityHeaders>,
    /// `cors:`.
    pub cors: Option<&'a RawCors>,
    /// `scrub_errors:`.
    pub scrub_errors: Option<&'a Located<bool>>,
    /// `server.environment`.
    pub environment: Environment,
}

/// A route's edge keys.
pub struct RouteKeys<'a> {
    /// `max_body`.
    pub max_body: Option<&'a Located<String>>,
    /// `content_types`.
    pub content_types: Option<&'a Vec<Located<String>>>,
    /// `security_headers`.
    pub security_headers: Option<&'a RawSecurityHeaders>,
    /// `cors`.
    pub cors: Option<&'a RawCors>,
    /// `scrub_errors`.
    pub scrub_errors: Option<&'a Located<bool>>,
}

/// The policy-wide rules (for unmatched requests, refusals before routing, the admin
/// listener) and what routes inherit.
pub fn compile_top(top: &TopLevel<'_>, errors: &mut Vec<ConfigError>) -> EdgeRules {
    let max_body = match top.max_body {
        Some(v) => size(v, errors).unwrap_or(DEFAULT_MAX_BODY),
        None => DEFAULT_MAX_BODY,
    };
    let security = Arc::new(security(None, top.security_headers, errors));
    let cors = top.cors.and_then(|c| cors(c, errors)).map(Arc::new);
    let scrub_errors = top
        .scrub_errors
        .map_or(top.environment != Environment::Local, |s| s.value);
    EdgeRules {
        max_body,
        content_types: None,
        security,
        cors,
        scrub_errors,
    }
}

/// A route's rules over the policy-wide ones.
pub fn compile_route(
    base: &EdgeRules,
    top_security: Option<&RawSecurityHeaders>,
    route: &RouteKeys<'_>,
    errors: &mut Vec<ConfigError>,
) -> EdgeRules {
    let max_body = match route.max_body {
        Some(v) => size(v, errors).unwrap_or(base.max_body),
        None => base.max_body,
    };
    let content_types = route
        .content_types
        .and_then(|list| media_ranges(list, errors));
    let security = match route.security_headers {
        Some(own) => Arc::new(security(top_security, Some(own), errors)),
        None => base.security.clone(),
    };
    let cors = match route.cors {
        Some(c) => cors(c, errors).map(Arc::new),
        None => base.cors.clone(),
    };
    EdgeRules {
        max_body,
        content_types,
        security,
        cors,
        scrub_errors: route.scrub_errors.map_or(base.scrub_errors, |s| s.value),
    }
}

/// `10MiB`, `512KiB`, `1GiB`, or plain bytes (`1048576`). Binary units only: `MB`/`KB`
/// would leave the reader guessing between 1000 and 1024.
pub fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || (num.len() > 1 && num.starts_with('0')) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Largest `max_body` accepted: 64 GiB.
const MAX_MAX_BODY: u64 = 64 << 30;

fn size(v: &Located<String>, errors: &mut Vec<ConfigError>) -> Option<u64> {
    match parse_size(&v.value) {
        Some(n) if n > 0 && n <= MAX_MAX_BODY => Some(n),
        Some(0) => {
            errors.push(ConfigError::at(
                v.pos,
                "`max_body` must be at least 1 byte (a route that takes no body: leave \
                 `content_types` out and refuse the methods instead)",
            ));
            None
        }
        _ => {
            errors.push(ConfigError::at(
                v.pos,
                format!(
                    "`{}` is not a size: expected a whole number of bytes or of KiB, MiB, GiB \
                     (e.g. 10MiB, 512KiB, 1048576; at most 64GiB)",
                    v.value
                ),
            ));
            None
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn media_ranges(
    list: &[Located<String>],
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<[MediaRange]>> {
    if list.is_empty() {
        errors.push(ConfigError::whole(
            "`content_types` is empty: list at least one media type or leave it out",
        ));
        return None;
    }
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        let lower = t.value.to_ascii_lowercase();
        let parsed = lower.split_once('/').and_then(|(k, s)| {
            (is_token(k) && k != "*" && (s == "*" || (is_token(s) && !s.contains('*')))).then(
                || MediaRange {
                    kind: k.into(),
                    subtype: (s != "*").then(|| s.into()),
                },
            )
        });
        match parsed {
            Some(r) => out.push(r),
            None => errors.push(ConfigError::at(
                t.pos,
                format!(
                    "`{}` is not a media type: expected type/subtype or type/* without \
                     parameters (e.g. application/json, text/*)",
                    t.value
                ),
            )),
        }
    }
    Some(out.into())
}

/// The key names of `security_headers`, their header, and their default.
const SECURITY_KEYS: [(&str, &str, Option<&str>); 6] = [
    (
        "content_type_options",
        "x-content-type-options",
        Some("nosniff"),
    ),
    ("frame_options", "x-frame-options", Some("DENY")),
    (
        "referrer_policy",
        "referrer-policy",
        Some("strict-origin-when-cross-origin"),
    ),
    (
        "strict_transport_security",
        "strict-transport-security",
        Some(crate::policy::edge::DEFAULT_HSTS),
    ),
    ("content_security_policy", "content-security-policy", None),
    ("permissions_policy", "permissions-policy", None),
];

fn setting<'a>(raw: &'a RawSecurityHeaders, key: &str) -> Option<&'a Located<RawHeaderSetting>> {
    match key {
        "content_type_options" => raw.content_type_options.as_ref(),
        "frame_options" => raw.frame_options.as_ref(),
        "referrer_policy" => raw.referrer_policy.as_ref(),
        "strict_transport_security" => raw.strict_transport_security.as_ref(),
        "content_security_policy" => raw.content_security_policy.as_ref(),
        "permissions_policy" => raw.permissions_policy.as_ref(),
        _ => None,
    }
}

/// Resolves the security headers: defaults, then `top`, then `own` (a route's block).
fn security(
    top: Option<&RawSecurityHeaders>,
    own: Option<&RawSecurityHeaders>,
    errors: &mut Vec<ConfigError>,
) -> SecurityHeaders {
    let layers: Vec<&RawSecurityHeaders> = top.into_iter().chain(own).collect();
    // Errors are reported for the innermost block only (a route's block is compiled over the
    // top-level one, which was reported on its own).
    let reported =
        |l: &RawSecurityHeaders| layers.last().is_some_and(|last| std::ptr::eq(*last, l));
    // `keep`: the innermost block that says it.
    let keep_layer = layers.iter().rev().find(|l| l.keep.is_some());
    let keep = keep_layer.and_then(|l| l.keep.as_ref());
    if let (Some(list), Some(layer)) = (keep, keep_layer)
        && reported(layer)
    {
        for k in list {
            if !SECURITY_KEYS.iter().any(|(name, _, _)| *name == k.value) {
                errors.push(ConfigError::at(
                    k.pos,
                    format!(
                        "`{}` is not a security header key: expected one of {}",
                        k.value,
                        SECURITY_KEYS.map(|(n, _, _)| n).join(", ")
                    ),
                ));
            }
        }
    }
    let mut always = Vec::with_capacity(SECURITY_KEYS.len());
    let mut hsts = HeaderAction::Remove;
    for (key, header, default) in SECURITY_KEYS {
        let mut value: Option<HeaderValue> = default.map(HeaderValue::from_static);
        for layer in &layers {
            let Some(s) = setting(layer, key) else {
                continue;
            };
            value = match &s.value {
                RawHeaderSetting::Switch(false) => None,
                RawHeaderSetting::Switch(true) if !reported(layer) => value,
                RawHeaderSetting::Switch(true) => {
                    errors.push(ConfigError::at(
                        s.pos,
                        format!("`{key}: true` is not a value: write the header value, or `false` for none"),
                    ));
                    value
                }
                RawHeaderSetting::Value(v) => match HeaderValue::from_str(v) {
                    Ok(h)
                        if !v.trim().is_empty() && v.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
                    {
                        Some(h)
                    }
                    _ if !reported(layer) => value,
                    _ => {
                        errors.push(ConfigError::at(
                            s.pos,
                            format!("`{key}`: not a header value (printable ASCII, not empty)"),
                        ));
                        value
                    }
                },
            };
        }
        let kept = keep.is_some_and(|l| l.iter().any(|k| k.value == key));
        let action = match value {
            None => HeaderAction::Remove,
            Some(v) if kept => HeaderAction::Default(v),
            Some(v) => HeaderAction::Set(v),
        };
        if key == "strict_transport_security" {
            hsts = action;
        } else {
            always.push((HeaderName::from_static(header), action));
        }
    }
    SecurityHeaders {
        always,
        hsts,
        strip: SecurityHeaders::default().strip,
    }
}

fn cors(raw: &RawCors, errors: &mut Vec<ConfigError>) -> Option<Cors> {
    let before = errors.len();
    let mut origins = Vec::with_capacity(raw.origins.len());
    if raw.origins.is_empty() {
        errors.push(ConfigError::whole(
            "`cors.origins` is empty: list at least one origin or leave `cors` out",
        ));
    }
    for o in &raw.origins {
        match origin_rule(&o.value) {
            Ok(r) => origins.push(r),
            Err(why) => errors.push(ConfigError::at(
                o.pos,
                format!("`{}` is not an allowed origin: {why}", o.value),
            )),
        }
    }
    let credentials = raw.credentials.as_ref().is_some_and(|c| c.value);
    if let Some(c) = &raw.credentials
        && c.value
        && origins.contains(&OriginRule::Any)
    {
        errors.push(ConfigError::at(
            c.pos,
            "`credentials: true` with origin `*` would let every site read responses with the \
             user's cookies: list the origins",
        ));
    }
    let default_methods = [Method::GET, Method::HEAD, Method::POST];
    let methods: Vec<Method> = match &raw.methods {
        None => default_methods.to_vec(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for m in list {
                match super::compile::parse_method(&m.value) {
                    Some(method) => out.push(method),
                    None => errors.push(ConfigError::at(
                        m.pos,
                        format!(
                            "`{}` is not a method: expected GET, HEAD, POST, PUT, DELETE, PATCH, \
                             OPTIONS or TRACE",
                            m.value
                        ),
                    )),
                }
            }
            out
        }
    };
    let methods_value = join_value(methods.iter().map(Method::as_str));
    let (headers, headers_value) = match &raw.headers {
        None => (Some(Vec::new()), None),
        Some(list) if list.iter().any(|h| h.value == "*") => {
            if credentials && let Some(c) = &raw.credentials {
                errors.push(ConfigError::at(
                    c.pos,
                    "`credentials: true` with headers `*`: browsers read `*` literally with \
                     credentials; list the headers",
                ));
            }
            (None, Some(HeaderValue::from_static("*")))
        }
        Some(list) => {
            let names = header_names(list, errors);
            let value =
                (!names.is_empty()).then(|| join_value(names.iter().map(HeaderName::as_str)));
            (Some(names), value)
        }
    };
    let expose_headers = raw.expose_headers.as_ref().and_then(|list| {
        let names = header_names(list, errors);
        (!names.is_empty()).then(|| join_value(names.iter().map(HeaderName::as_str)))
    });
    let max_age =
        raw.max_age
            .as_ref()
            .and_then(|m| match super::compile::parse_duration(&m.value) {
                Some(d) if d.as_secs() >= 1 && d.as_secs() <= 86_400 && d.subsec_nanos() == 0 => {
                    Some(HeaderValue::from(d.as_secs()))
                }
                _ => {
                    errors.push(ConfigError::at(
                    m.pos,
                    format!(
                        "`{}` is not a preflight max age: expected whole seconds from 1s to 24h \
                         (e.g. 600s, 10m, 2h)",
                        m.value
                    ),
                ));
                    None
                }
            });
    (errors.len() == before).then_some(Cors {
        origins,
        methods,
        methods_value,
        headers,
        headers_value,
        credentials,
        max_age,
        expose_headers,
    })
}

fn header_names(list: &[Located<String>], errors: &mut Vec<ConfigError>) -> Vec<HeaderName> {
    let mut out = Vec::with_capacity(list.len());
    for h in list {
        match HeaderName::from_bytes(h.value.as_bytes()) {
            Ok(n) => out.push(n),
            Err(_) => errors.push(ConfigError::at(
                h.pos,
                format!("`{}` is not a header name", h.value),
            )),
        }
    }
    out
}

fn join_value<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    let joined = items.collect::<Vec<_>>().join(", ");
    // INVARIANT: methods and header names are tokens, and ", " is visible ASCII.
    HeaderValue::from_str(&joined).unwrap_or(HeaderValue::from_static(""))
}

/// One configured origin: `*`, `scheme://host[:port]`, or `scheme://*.domain[:port]`.
fn origin_rule(s: &str) -> Result<OriginRule, &'static str> {
    if s == "*" {
        return Ok(OriginRule::Any);
    }
    if s == "null" {
        return Err(
            "the `null` origin is sent by sandboxed frames, file: pages and redirects: \
                    any site can produce it",
        );
    }
    let expected = "expected `*`, scheme://host[:port] or scheme://*.domain[:port] with scheme \
                    http or https, lower case, no path or trailing slash";
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(expected);
    };
    if let Some(domain_port) = rest.strip_prefix("*.") {
        let probe = format!("{scheme}://x.{domain_port}");
        let parsed = crate::policy::edge::parse_origin(probe.as_bytes()).ok_or(expected)?;
        let domain = parsed.host.strip_prefix("x.").ok_or(expected)?;
        if !domain.contains('.') {
            return Err(
                "a wildcard needs a domain of at least two labels (`*.com` would allow \
                        every .com site)",
            );
        }
        if default_port(parsed.scheme, parsed.port) {
            return Err("leave out the scheme's default port (browsers never send it)");
        }
        return Ok(OriginRule::Wildcard {
            scheme: parsed.scheme.into(),
            suffix: format!(".{domain}").into(),
            port: parsed.port,
        });
    }
    let parsed = crate::policy::edge::parse_origin(s.as_bytes()).ok_or(expected)?;
    if default_port(parsed.scheme, parsed.port) {
        return Err("leave out the scheme's default port (browsers never send it)");
    }
    if !parsed.host.starts_with('[') && !valid_dns_name(parsed.host) {
        return Err(expected);
    }
    Ok(OriginRule::Exact(s.into()))
}

fn default_port(scheme: &str, port: Option<u16>) -> bool {
    matches!((scheme, port), ("https", Some(443)) | ("http", Some(80)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        for bad in [
            "",
            "MiB",
            "10MB",
            "10mb",
            "10 MiB",
            "1.5MiB",
            "-1",
            "010",
            "10KB",
            "1e6",
            " 10",
            "99999999999999999999",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(parse_size("18446744073709551615GiB"), None);
    }

    fn load(env: &str, top: &str, route: &str) -> crate::policy::Policy {
        let text = format!(
            "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n  \
             environment: {env}\n{top}routes:\n  - name: r\n    match: {{ path: \"/**\" }}\n    \
             public: true\n{route}"
        );
        crate::config::load_str(&text, std::path::Path::new("/nowhere/f.yaml")).expect("valid")
    }

    #[test]
    fn defaults_and_inheritance() {
        let p = load("production", "", "");
        assert!(p.edge.scrub_errors, "on by default outside local");
        assert_eq!(p.edge.max_body, DEFAULT_MAX_BODY);
        let r = &p.router.routes()[0].edge;
        assert!(r.scrub_errors && r.cors.is_none() && r.content_types.is_none());
        let p = load("local", "", "");
        assert!(!p.edge.scrub_errors, "off by default in local");
        assert!(!p.router.routes()[0].edge.scrub_errors);
        let p = load(
            "local",
            "scrub_errors: true\nsecurity_headers: { frame_options: SAMEORIGIN, permissions_policy: \"camera=()\" }\n\
             cors: { origins: [\"https://a.test\"] }\n",
            "    scrub_errors: false\n    max_body: 512KiB\n    security_headers: { permissions_policy: false, keep: [frame_options] }\n",
        );
        assert!(p.edge.scrub_errors);
        let r = &p.router.routes()[0].edge;
        assert!(!r.scrub_errors);
        assert_eq!(r.max_body, 512 << 10);
        assert!(r.cors.is_some(), "inherited");
        let find = |name: &str| {
            r.security
                .always
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, a)| a.clone())
        };
        assert_eq!(
            find("x-frame-options"),
            Some(HeaderAction::Default(HeaderValue::from_static(
                "SAMEORIGIN"
            )))
        );
        assert_eq!(find("permissions-policy"), Some(HeaderAction::Remove));
        assert_eq!(
            find("x-content-type-options"),
            Some(HeaderAction::Set(HeaderValue::from_static("nosniff")))
        );
        let top = &p.edge.security;
        assert!(
            top.always
                .iter()
                .any(|(n, a)| n.as_str() == "permissions-policy"
                    && *a == HeaderAction::Set(HeaderValue::from_static("camera=()")))
        );
    }

    #[test]
    fn origin_rules() {
        assert_eq!(origin_rule("*"), Ok(OriginRule::Any));
        assert_eq!(
            origin_rule("https://app.example.com"),
            Ok(OriginRule::Exact("https://app.example.com".into()))
        );
        assert!(matches!(
            origin_rule("https://*.example.com:8443"),
            Ok(OriginRule::Wildcard {
                port: Some(8443),
                ..
            })
        ));
        for bad in [
            "null",
            "https://*.com",
            "https://app.example.com/",
            "https://App.example.com",
            "app.example.com",
            "https://*.*.example.com",
            "https://a.*.example.com",
            "*.example.com",
            "https://example.com:443",
            "ftp://example.com",
            "https://*",
        ] {
            assert!(origin_rule(bad).is_err(), "{bad}");
        }
    }
}
