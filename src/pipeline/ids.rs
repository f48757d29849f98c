//! Request ids: kept from trusted peers when well-formed, otherwise generated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;

/// Generates unique, unguessable-looking request ids without locks or syscalls per request.
#[derive(Debug)]
pub struct IdGen {
    seed: u64,
    counter: AtomicU64,
}

impl IdGen {
    /// Seeds the generator from the OS random source.
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        // On failure the seed stays zero: ids remain unique (counter), only less opaque.
        if aws_lc_rs::rand::fill(&mut seed).is_err() {
            seed = [0; 8];
        }
        Self {
            seed: u64::from_le_bytes(seed),
            counter: AtomicU64::new(0),
        }
    }

    /// A fresh 64-bit id (for span ids).
    pub fn next_u64(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        splitmix(self.seed ^ n.rotate_left(17))
    }

    /// A fresh 32-hex-digit id.
    pub fn next(&self) -> Arc<str> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let a = splitmix(self.seed ^ n);
        let b = splitmix(a ^ n.rotate_left(32));
        let mut buf = [0u8; 32];
        for (i, slot) in buf.iter_mut().enumerate() {
            let word = if i < 16 { a } else { b };
            let nibble = (word >> (60 - 4 * (i % 16))) & 0xf;
            *slot = HEX[nibble as usize];
        }
        // Hex digits are ASCII, so this never fails; the fallback keeps it panic-free.
        match std::str::from_utf8(&buf) {
            Ok(s) => Arc::from(s),
            Err(_) => Arc::from("0"),
        }
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

/// The request id for a request: a valid `X-Request-ID` from a trusted peer, else a new one.
pub fn request_id(headers: &HeaderMap, trusted: bool, ids: &IdGen) -> Arc<str> {
    if trusted {
        let mut values = headers.get_all(X_REQUEST_ID).iter();
        if let (Some(v), None) = (values.next(), values.next())
            && let Ok(s) = v.to_str()
            && is_valid_id(s)
        {
            return Arc::from(s);
        }
    }
    ids.next()
}

/// The W3C trace id for a request: from a trusted peer's single valid `traceparent`, else new.
pub fn trace_id(headers: &HeaderMap, trusted: bool, ids: &IdGen) -> Arc<str> {
    if trusted {
        let mut values = headers.get_all(TRACEPARENT).iter();
        if let (Some(v), None) = (values.next(), values.next())
            && let Ok(s) = v.to_str()
            && let Some(trace) = parse_traceparent(s)
        {
            return Arc::from(trace);
        }
    }
    ids.next()
}

/// The trace id of a valid `traceparent` (`VV-TTTT…(32)-PPPP…(16)-FF`, lower-case hex, version
/// not `ff`, trace and parent ids not all zeros).
pub fn parse_traceparent(s: &str) -> Option<&str> {
    let mut parts = s.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, n: usize| {
        p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let ok = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    ok.then_some(trace)
}

/// The `traceparent` fortress sends upstream: the request's trace id, a new span id, sampled.
pub fn traceparent(trace_id: &str, ids: &IdGen) -> String {
    let span = ids.next();
    format!(
        "00-{trace_id}-{}-01",
        span.get(..16).unwrap_or("0000000000000001")
    )
}

/// 1–128 characters of `[A-Za-z0-9._:-]`: safe in headers, JSON and logs.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// The request id header.
pub const X_REQUEST_ID: &str = "x-request-id";

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let g = IdGen::new();
        let a = g.next();
        let b = g.next();
        assert_ne!(a, b);
        assert!(is_valid_id(&a) && a.len() == 32);
    }

    #[test]
    fn traceparent_parsing() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(t),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        let g = IdGen::new();
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(t));
        assert_eq!(&*trace_id(&h, true, &g), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            &*trace_id(&h, false, &g),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let tp = traceparent("4bf92f3577b34da6a3ce929d0e0e4736", &g);
        assert!(parse_traceparent(&tp).is_some(), "{tp}");
    }

    #[test]
    fn incoming_id_kept_only_from_trusted_peers() {
        let g = IdGen::new();
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(&*request_id(&h, true, &g), "abc-123");
        assert_ne!(&*request_id(&h, false, &g), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("bad id\"<>"));
        assert_ne!(&*request_id(&h, true, &g), "bad id\"<>");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("a"));
        h.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        assert_eq!(
            request_id(&h, true, &g).len(),
            32,
            "duplicates are not trusted"
        );
    }
}
