//! The request as the upstream sees it: the canonical path on an absolute URI for the pool,
//! HTTP/1.1, hop-by-hop headers removed; in one pass over the header names, `_` names (unless
//! kept), client identity headers, method/URL override headers, the client-IP headers of
//! untrusted peers and other spellings of the tenant header removed; forwarding headers and
//! `X-Real-IP` set, fortress's identity headers and the checked tenant set, trace context for
//! this hop.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Request, Version, header};
use ipnet::IpNet;

use super::credentials::{self, Credentials};
use super::headers::{ClientSide, set_forwarding, strip_hop_by_hop};
use super::identity::{IdentityHeaders, inject};
use crate::auth::Principal;
use crate::error::Rejection;
use crate::policy::headers::{HeaderRules, UnderscoreHeaders, is_forwarded_family};
use crate::policy::identity::same_name;

/// Everything the rewrite needs to know about the request's judgement.
pub struct Forwarding<'a> {
    /// Upstream `host:port`.
    pub upstream: &'a Authority,
    /// The TCP peer.
    pub peer: std::net::SocketAddr,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
    /// The request id.
    pub request_id: &'a str,
    /// The `traceparent` for the hop to the upstream.
    pub traceparent: &'a str,
    /// The canonical path, when it differs from the path the client sent.
    pub canonical: Option<&'a str>,
    /// The verified principal.
    pub principal: Option<&'a Principal>,
    /// The identity headers only fortress may set.
    pub identity: &'a IdentityHeaders,
    /// Which client credentials go to the app (`None`: no `authentication` configured,
    /// fortress handles no credentials and forwards them as sent).
    pub credentials: Option<Credentials<'a>>,
    /// The policy's header rules (`_` names, client headers stripped from untrusted peers).
    pub rules: &'a HeaderRules,
    /// The trusted proxies (to find the client IP in a trusted `X-Forwarded-For`).
    pub trusted_proxies: &'a [IpNet],
    /// The route's tenant header and the tenant the tenant check read from it (`None`: none).
    pub tenant_header: Option<(&'a HeaderName, Option<&'a str>)>,
    /// A checked WebSocket handshake on a `websocket: true` route: `Connection: upgrade` and
    /// `Upgrade: websocket` survive the hop-by-hop strip (for this case only).
    pub websocket: bool,
    /// A stream route: the response is checked line by line, so it is asked for uncompressed
    /// (`Accept-Encoding: identity`).
    pub stream: bool,
}

/// Rewrites a client request for the upstream.
pub fn prepare<B>(
    mut parts: http::request::Parts,
    body: B,
    f: &Forwarding<'_>,
) -> Result<Request<B>, Rejection> {
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let path_and_query = match (f.canonical, parts.uri.path_and_query()) {
        // Already canonical: the client's path and query, shared (no copy).
        (None, Some(pq)) => pq.clone(),
        (canonical, _) => {
            let path = canonical.unwrap_or("/");
            let mut s =
                String::with_capacity(path.len() + 1 + parts.uri.query().map_or(0, str::len));
            s.push_str(path);
            if let Some(q) = parts.uri.query() {
                s.push('?');
                s.push_str(q);
            }
            PathAndQuery::from_maybe_shared(Bytes::from(s))
                .map_err(|_| Rejection::RejectTargetForm)?
        }
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(f.upstream.clone());
    uri.path_and_query = Some(path_and_query);
    parts.uri = Uri::from_parts(uri).map_err(|_| Rejection::RejectTargetForm)?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if f.websocket {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    join_cookies(&mut parts.headers);
    if f.stream {
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    // Before the forwarding headers are set, so a configured strip list never removes them.
    strip_client_headers(&mut parts.headers, f);
    set_forwarding(
        &mut parts.headers,
        &ClientSide {
            peer: f.peer,
            trusted: f.trusted,
            trusted_proxies: f.trusted_proxies,
            tls: f.tls,
            host: host.as_ref(),
            request_id: f.request_id,
        },
    );
    // Only fortress says who the caller is: client copies of identity headers went above, in
    // every spelling; the verified principal's values are set.
    if let Some(p) = f.principal {
        inject(&mut parts.headers, p).map_err(Rejection::Unauthenticated)?;
    }
    // The app reads the tenant fortress checked, and only that one.
    if let Some((name, checked)) = f.tenant_header {
        set_tenant(&mut parts.headers, name, checked);
    }
    // A bearer token or token cookie fortress did not verify does not reach the app (unless
    // the policy says so); a verified one only with `forward_token`.
    if let Some(c) = &f.credentials {
        credentials::apply(c, &mut parts.headers, f.principal.is_some());
    }
    // Trace context: the request's trace id with this hop's span; untrusted tracestate goes.
    if let Ok(v) = HeaderValue::from_str(f.traceparent) {
        parts
            .headers
            .insert(HeaderName::from_static(TRACEPARENT), v);
    }
    if !f.trusted {
        parts.headers.remove("tracestate");
    }
    // The app sees the host the client asked for (HTTP/2 clients send `:authority` only).
    if let Some(h) = host {
        parts.headers.insert(header::HOST, h);
    }
    Ok(Request::from_parts(parts, body))
}

/// Removes, in one pass over the names, every header the app must not get from the client:
/// names with `_` (unless `underscore_headers: keep`), identity headers and method/URL
/// override headers (every spelling), the `strip_client_headers` list and every
/// `X-Forwarded-*` name when the peer is not a trusted proxy (every spelling; fortress then
/// sets its own `X-Forwarded-For`, `-Proto` and `-Host`), and spellings of the tenant header other than its own.
/// Allocates only when something is removed.
fn strip_client_headers(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let doomed = |name: &str| {
        (f.rules.underscore == UnderscoreHeaders::Drop && name.contains('_'))
            || f.identity.contains(name)
            || HeaderRules::is_override(name)
            || (!f.trusted && (f.rules.strip_untrusted.contains(name) || is_forwarded_family(name)))
            || f.tenant_header
                .is_some_and(|(t, _)| t.as_str() != name && same_name(t.as_str(), name))
    };
    if !headers.keys().any(|k| doomed(k.as_str())) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| doomed(k.as_str()))
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

/// Joins several `cookie` fields into one with `; ` (RFC 9113 §8.2.3: an HTTP/2 client may
/// send each cookie pair as its own field; an HTTP/1.1 upstream expects one `Cookie` line,
/// RFC 6265 §5.4). One field or none: left alone, no allocation.
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in &headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Valid values joined by `; ` are a valid value; should that ever fail, no cookie goes
    // rather than a half-joined one.
    match HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        Ok(v) => {
            headers.insert(header::COOKIE, v);
        }
        Err(_) => {
            headers.remove(header::COOKIE);
        }
    }
}

/// Sets the tenant header to the checked value (left as is when it already is exactly that),
/// or removes it when the check read none.
fn set_tenant(headers: &mut HeaderMap, name: &HeaderName, checked: Option<&str>) {
    let Some(value) = checked else {
        headers.remove(name);
        return;
    };
    let mut sent = headers.get_all(name).iter();
    if let (Some(v), None) = (sent.next(), sent.next())
        && v.as_bytes() == value.as_bytes()
    {
        return;
    }
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

const TRACEPARENT: &str = "traceparent";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::headers::{DEFAULT_STRIP_CLIENT_HEADERS, NameSet};

    /// A plain, untrusted, unauthenticated request's forwarding settings.
    fn forwarding<'a>(upstream: &'a Authority, rules: &'a HeaderRules) -> Forwarding<'a> {
        Forwarding {
            upstream,
            peer: "10.0.0.1:1".parse().expect("addr"),
            tls: false,
            trusted: false,
            request_id: "rid",
            traceparent: "",
            canonical: None,
            principal: None,
            identity: IdentityHeaders::builtin(),
            credentials: None,
            rules,
            trusted_proxies: &[],
            tenant_header: None,
            websocket: false,
            stream: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn sorted(h: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn one_pass_strips_what_the_app_must_not_get_from_the_client() {
        let upstream = Authority::from_static("127.0.0.1:1");
        let tenant = HeaderName::from_static("x-org-id");
        let mut rules = HeaderRules {
            strip_untrusted: NameSet::new(DEFAULT_STRIP_CLIENT_HEADERS),
            ..HeaderRules::default()
        };
        let sent = [
            ("x-app", "1"),
            ("x_custom", "1"),
            ("x-auth-subject", "admin"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/admin"),
            ("true-client-ip", "6.6.6.6"),
            ("x-org-id", "acme"),
            ("x-org_id", "globex"),
        ];
        for (trusted, keep, want) in [
            (false, false, vec!["x-app", "x-org-id"]),
            (true, false, vec!["true-client-ip", "x-app", "x-org-id"]),
            (false, true, vec!["x-app", "x-org-id", "x_custom"]),
        ] {
            rules.underscore = if keep {
                UnderscoreHeaders::Keep
            } else {
                UnderscoreHeaders::Drop
            };
            let f = Forwarding {
                trusted,
                tenant_header: Some((&tenant, Some("acme"))),
                ..forwarding(&upstream, &rules)
            };
            let mut h = headers(&sent);
            strip_client_headers(&mut h, &f);
            assert_eq!(sorted(&h), want, "trusted={trusted} keep={keep}");
        }
        // Nothing to strip: the map is left alone.
        let mut h = headers(&[("x-app", "1")]);
        let f = forwarding(&upstream, &rules);
        strip_client_headers(&mut h, &f);
        assert_eq!(sorted(&h), vec!["x-app"]);
    }

    #[test]
    fn cookie_fields_are_joined_into_one() {
        let mut h = headers(&[
            ("cookie", "a=1"),
            ("x", "y"),
            ("cookie", "b=2"),
            ("cookie", "c=3"),
        ]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2; c=3");
        let mut h = headers(&[("cookie", "a=1; b=2")]);
        join_cookies(&mut h);
        assert_eq!(h["cookie"], "a=1; b=2");
        let mut h = headers(&[]);
        join_cookies(&mut h);
        assert!(h.get("cookie").is_none());
    }

    #[test]
    fn the_tenant_header_is_the_checked_value() {
        let name = HeaderName::from_static("x-org-id");
        let mut h = headers(&[("x-org-id", "acme")]);
        set_tenant(&mut h, &name, Some("acme"));
        assert_eq!(h["x-org-id"], "acme");
        let mut h = headers(&[("x-org-id", "globex"), ("x-org-id", "acme")]);
        set_tenant(&mut h, &name, Some("acme"));
        assert_eq!(h.get_all("x-org-id").iter().count(), 1);
        assert_eq!(h["x-org-id"], "acme");
        set_tenant(&mut h, &name, None);
        assert!(h.get("x-org-id").is_none());
    }
}
