//! WebSocket handshakes (`Upgrade: websocket`), judged after every other check passed.
//!
//! - On a `websocket: true` route, a request with `Upgrade` must be a valid WebSocket
//!   handshake (RFC 6455 §4.1: HTTP/1.1 `GET`, `Connection: upgrade`, `Upgrade: websocket`,
//!   one `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`, and no body: no `Transfer-Encoding`,
//!   no `Content-Length` other than `0`), else 400 `invalid_upgrade`; a valid
//!   one is forwarded with its `Connection`/`Upgrade` kept and spliced on a `101`.
//! - On any other route `Upgrade` is a hop-by-hop header like any other: stripped, and the
//!   request goes on as plain HTTP (as before websocket routes existed).
//! - HTTP/2 extended CONNECT (RFC 8441) is refused by the transport stage.

use http::header::{CONNECTION, HeaderMap, HeaderName, UPGRADE};
use http::request::Parts;
use http::{Method, Version};

use super::context::RequestContext;
use crate::error::{Rejection, TransportError};

/// Whether the request is a WebSocket handshake to proxy as one.
pub fn check(ctx: &RequestContext, req: &Parts) -> Result<bool, Rejection> {
    if !req.headers.contains_key(UPGRADE) || !ctx.route().is_some_and(|r| r.websocket) {
        return Ok(false);
    }
    // RFC 6455 handshakes have no body; bytes after the head would be read by some servers
    // as a body and by others as the first frames (or the next request).
    if is_websocket_handshake(req) && super::limits::no_body_framing(&req.headers) {
        Ok(true)
    } else {
        Err(Rejection::RejectTransport(TransportError::InvalidUpgrade))
    }
}

fn is_websocket_handshake(req: &Parts) -> bool {
    let h = &req.headers;
    req.method == Method::GET
        && req.version == Version::HTTP_11
        && single(h, &UPGRADE).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && h.get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        && single(h, &SEC_WEBSOCKET_KEY).is_some_and(|k| !k.trim().is_empty())
        && single(h, &SEC_WEBSOCKET_VERSION).is_some_and(|v| v.trim() == "13")
}

fn single<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    let mut all = h.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, version: Version, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder()
            .method(method)
            .uri("/ws")
            .version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];

    #[test]
    fn only_a_complete_rfc_6455_handshake_counts() {
        assert!(is_websocket_handshake(&parts(
            "GET",
            Version::HTTP_11,
            &GOOD
        )));
        let without = |name: &str| -> Vec<(&str, &str)> {
            GOOD.iter().copied().filter(|(k, _)| *k != name).collect()
        };
        let mut cases: Vec<(&str, Parts)> = vec![
            ("POST", parts("POST", Version::HTTP_11, &GOOD)),
            ("HTTP/1.0", parts("GET", Version::HTTP_10, &GOOD)),
            ("HTTP/2", parts("GET", Version::HTTP_2, &GOOD)),
        ];
        for name in [
            "connection",
            "upgrade",
            "sec-websocket-key",
            "sec-websocket-version",
        ] {
            cases.push((name, parts("GET", Version::HTTP_11, &without(name))));
        }
        let mut h = without("sec-websocket-version");
        h.push(("sec-websocket-version", "8"));
        cases.push(("version 8", parts("GET", Version::HTTP_11, &h)));
        let mut h = without("upgrade");
        h.push(("upgrade", "h2c"));
        cases.push(("h2c", parts("GET", Version::HTTP_11, &h)));
        let mut h = GOOD.to_vec();
        h.push(("upgrade", "websocket"));
        cases.push(("two Upgrade headers", parts("GET", Version::HTTP_11, &h)));
        let mut h = without("connection");
        h.push(("connection", "close"));
        cases.push((
            "Connection without upgrade",
            parts("GET", Version::HTTP_11, &h),
        ));
        for (what, p) in cases {
            assert!(!is_websocket_handshake(&p), "{what}");
        }
    }
}
