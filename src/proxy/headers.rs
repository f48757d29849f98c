//! Header hygiene both ways: hop-by-hop headers (including those a `Connection` header names)
//! are removed, and fortress sets the forwarding headers itself.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// The request id header.
const X_REQUEST_ID: &str = "x-request-id";

/// Removes hop-by-hop headers: the fixed list (RFC 9110 §7.6.1 plus common legacy ones) and
/// every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a handful, most often none of these) instead of a
    // hashed removal per hop-by-hop name; `Connection` is one of them, so a message without
    // any has nothing it could name either.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(&name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What fortress knows about the client side of a request, for the forwarding headers.
pub struct ClientSide<'a> {
    /// TCP peer.
    pub peer: SocketAddr,
    /// Whether the peer is a trusted proxy (its forwarding headers are kept and extended).
    pub trusted: bool,
    /// The trusted proxies (skipped, right to left, in `X-Forwarded-For`).
    pub trusted_proxies: &'a [IpNet],
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The host the client asked for (Host header or HTTP/2 `:authority`).
    pub host: Option<&'a HeaderValue>,
    /// The request id.
    pub request_id: &'a str,
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host`, `X-Real-IP` and `X-Request-ID` on a request
/// going upstream. Values from untrusted peers are replaced, never extended.
pub fn set_forwarding(headers: &mut HeaderMap, client: &ClientSide<'_>) {
    let client_ip = client_ip(
        headers,
        client.peer.ip(),
        client.trusted,
        client.trusted_proxies,
    );
    let peer_ip = client.peer.ip().to_string();
    let xff = match (client.trusted, joined(headers, &X_FORWARDED_FOR)) {
        (true, Some(prior)) => format!("{prior}, {peer_ip}"),
        _ => peer_ip,
    };
    set(headers, X_FORWARDED_FOR, xff);
    // The client IP fortress determined; from an untrusted peer it is the `X-Forwarded-For`
    // value just set (shared, not copied).
    let real_ip = match headers.get(X_FORWARDED_FOR) {
        Some(v) if !client.trusted => Some(v.clone()),
        _ => HeaderValue::try_from(client_ip.to_string()).ok(),
    };
    match real_ip {
        Some(v) => {
            headers.insert(X_REAL_IP, v);
        }
        None => {
            headers.remove(X_REAL_IP);
        }
    }

    let proto = if client.tls {
        "https"
    } else {
        match (client.trusted, single(headers, &X_FORWARDED_PROTO)) {
            (true, Some("https")) => "https",
            _ => "http",
        }
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));

    let trusted_host = if client.trusted {
        single(headers, &X_FORWARDED_HOST).map(str::to_owned)
    } else {
        None
    };
    match (trusted_host, client.host) {
        (Some(h), _) => set(headers, X_FORWARDED_HOST, h),
        (None, Some(h)) => {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        (None, None) => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    if !client.trusted {
        headers.remove(FORWARDED);
    }
    set(
        headers,
        HeaderName::from_static(X_REQUEST_ID),
        client.request_id.to_owned(),
    );
}

/// The client's IP: the TCP peer; behind a trusted proxy, the right-most `X-Forwarded-For`
/// address that is not a trusted proxy (if every address is trusted, or an entry cannot be
/// read, the last trusted address reached: never one left of an unreadable entry).
/// The pipeline computes it once per request (`RequestContext::client_ip`: IP allowlists, rate
/// limits keyed by `ip`); forwarding computes the same value for `X-Real-IP`.
pub fn client_ip(
    headers: &HeaderMap,
    peer: IpAddr,
    trusted: bool,
    trusted_proxies: &[IpNet],
) -> IpAddr {
    let mut ip = peer;
    if !trusted {
        return ip;
    }
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(value) = value.to_str() else {
            return ip;
        };
        for entry in value.rsplit(',') {
            let Some(addr) = parse_ip(entry.trim()) else {
                return ip;
            };
            ip = addr;
            if !trusted_proxies.iter().any(|n| n.contains(&addr)) {
                return ip;
            }
        }
    }
    ip
}

/// An address as proxies write it: `IP`, `IPv4:port`, `[IPv6]:port` or `[IPv6]`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse().ok())
        })
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v.to_str().ok().map(str::trim),
        _ => None,
    }
}

/// Sets a header from an owned string (no second copy); an invalid value removes the header.
fn set(headers: &mut HeaderMap, name: HeaderName, value: String) {
    match HeaderValue::try_from(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

#[cfg(test)]
mod tests {
    use super::*;

    fn client(trusted: bool) -> ClientSide<'static> {
        static TRUSTED: std::sync::LazyLock<Vec<IpNet>> =
            std::sync::LazyLock::new(|| vec!["10.0.0.0/8".parse().expect("net")]);
        ClientSide {
            peer: "10.1.2.3:5555".parse().expect("addr"),
            trusted,
            trusted_proxies: &TRUSTED,
            tls: false,
            host: None,
            request_id: "rid",
        }
    }

    #[test]
    fn strips_fixed_and_connection_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret , keep-alive"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep"]);
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        set_forwarding(&mut h, &client(false));
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get("x-forwarded-host").is_none());
        assert!(h.get("forwarded").is_none());
        assert_eq!(h["x-request-id"], "rid");
    }

    #[test]
    fn trusted_forwarding_headers_are_extended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("app.example"));
        set_forwarding(&mut h, &client(true));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["x-real-ip"], "1.1.1.1");
    }

    #[test]
    fn real_ip_is_the_rightmost_untrusted_address() {
        let cases: [(&[&str], &str); 8] = [
            (&[], "10.1.2.3"),
            (&["203.0.113.9"], "203.0.113.9"),
            (&["6.6.6.6, 203.0.113.9"], "203.0.113.9"),
            (&["6.6.6.6", "203.0.113.9, 10.0.0.7"], "203.0.113.9"),
            (&["10.0.0.9, 10.0.0.8"], "10.0.0.9"),
            (&["6.6.6.6, garbage, 10.0.0.8"], "10.0.0.8"),
            (&["[2001:db8::1]:443"], "2001:db8::1"),
            (&["198.51.100.1:8080"], "198.51.100.1"),
        ];
        for (xff, want) in cases {
            let mut h = HeaderMap::new();
            for v in xff {
                h.append("x-forwarded-for", HeaderValue::from_static(v));
            }
            h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
            set_forwarding(&mut h, &client(true));
            assert_eq!(h["x-real-ip"], want, "{xff:?}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        set_forwarding(&mut h, &client(false));
        assert_eq!(h["x-real-ip"], "10.1.2.3");
    }
}
