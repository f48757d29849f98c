//! Request, trace and span ids: random (CSPRNG), or kept from a trusted peer when well-formed.
//!
//! Ids are not secrets, but a predictable id lets a client guess another request's id (and
//! correlate or spoof log lines), and W3C trace context asks for random trace ids. So every
//! new id is drawn from aws-lc's CSPRNG: one draw of 40 bytes per request gives the request
//! id (16 bytes), the trace id (16 bytes, as W3C asks for a new trace) and the span id of the
//! hop to the upstream (8 bytes). Ids live inline in the request context: no allocation.

use http::HeaderMap;

/// The ids of one request.
#[derive(Debug, Clone)]
pub struct Ids {
    request_id: IdBuf<128>,
    trace_id: [u8; 32],
    span_id: [u8; 16],
    /// The parent id and `sampled` flag of a trusted peer's `traceparent` (`None`: fortress
    /// starts the trace).
    parent: Option<([u8; 16], bool)>,
    /// Whether this request's trace is sampled (recorded and exported; `-01` upstream).
    sampled: bool,
}

impl Ids {
    /// Ids for a request: a valid `X-Request-ID` / `traceparent` from a trusted peer is kept;
    /// everything else is new and random.
    pub fn for_request(headers: &HeaderMap, trusted: bool) -> Self {
        let mut random = [0u8; 40];
        fill_random(&mut random);
        let (req, rest) = random.split_at(16);
        let (trace, span) = rest.split_at(16);
        let request_id = trusted
            .then(|| single(headers, X_REQUEST_ID).filter(|s| is_valid_id(s)))
            .flatten()
            .and_then(IdBuf::from_str)
            .unwrap_or_else(|| IdBuf::hex(req));
        let incoming = trusted
            .then(|| single(headers, TRACEPARENT).and_then(parse_traceparent_parts))
            .flatten()
            .and_then(|(t, p, s)| {
                let t = <[u8; 32]>::try_from(t.as_bytes()).ok()?;
                let p = <[u8; 16]>::try_from(p.as_bytes()).ok()?;
                Some((t, p, s))
            });
        let parent = incoming.map(|(_, p, s)| (p, s));
        let parent_sampled = parent.map(|(_, s)| s);
        let trace_id = incoming.map_or_else(|| hex32(trace), |(t, _, _)| t);
        let mut span_id = [0u8; 16];
        encode_hex(span, &mut span_id);
        Self {
            request_id,
            trace_id,
            span_id,
            parent,
            // A trusted parent's decision is kept until a sampler says otherwise; a new trace
            // is sampled unless a sampler says otherwise.
            sampled: parent_sampled.unwrap_or(true),
        }
    }

    /// The `sampled` flag of the trusted peer's `traceparent`, when there was one.
    pub fn parent_sampled(&self) -> Option<bool> {
        self.parent.map(|(_, s)| s)
    }

    /// The parent id of the trusted peer's `traceparent` (16 hex digits), when there was one.
    pub fn parent_span_id(&self) -> Option<&str> {
        self.parent
            .as_ref()
            .and_then(|(p, _)| std::str::from_utf8(p).ok())
    }

    /// Whether this request's trace is sampled.
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// Sets the sampling decision (the configured sampler's, see `crate::telemetry`).
    pub fn set_sampled(&mut self, sampled: bool) {
        self.sampled = sampled;
    }

    /// The W3C trace flags (`01` sampled, `00` not).
    pub fn flags(&self) -> &'static str {
        if self.sampled { "01" } else { "00" }
    }

    /// The W3C `traceresponse` returned to the client: the trace id, fortress's span id (the
    /// parent of the upstream call), the sampling decision. On the stack: no allocation.
    pub fn traceresponse(&self) -> [u8; 55] {
        let mut out = [0u8; 55];
        let parts: [&[u8]; 6] = [
            b"00-",
            &self.trace_id,
            b"-",
            &self.span_id,
            b"-",
            self.flags().as_bytes(),
        ];
        let mut at = 0;
        for p in parts {
            if let Some(dst) = out.get_mut(at..at + p.len()) {
                dst.copy_from_slice(p);
            }
            at += p.len();
        }
        out
    }

    /// The request id (1–128 characters of `[A-Za-z0-9._:-]`).
    pub fn request_id(&self) -> &str {
        self.request_id.as_str()
    }

    /// The W3C trace id (32 lower-case hex digits).
    pub fn trace_id(&self) -> &str {
        // Hex digits are ASCII; the fallback keeps this panic-free.
        std::str::from_utf8(&self.trace_id).unwrap_or("00000000000000000000000000000000")
    }

    /// The span id of the hop to the upstream (16 lower-case hex digits).
    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or("0000000000000000")
    }

    /// The `traceparent` sent upstream: the request's trace id, this hop's span id, and the
    /// sampling decision (`-01` sampled, `-00` not: a trusted peer's `-00` is kept).
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        s.push_str(self.trace_id());
        s.push('-');
        s.push_str(self.span_id());
        s.push('-');
        s.push_str(self.flags());
        s
    }
}

/// An inline ASCII string of at most `N` bytes.
#[derive(Debug, Clone)]
struct IdBuf<const N: usize> {
    len: u8,
    buf: [u8; N],
}

impl<const N: usize> IdBuf<N> {
    fn from_str(s: &str) -> Option<Self> {
        let len = u8::try_from(s.len())
            .ok()
            .filter(|l| usize::from(*l) <= N)?;
        let mut buf = [0u8; N];
        buf.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(Self { len, buf })
    }

    fn hex(bytes: &[u8]) -> Self {
        let mut buf = [0u8; N];
        let n = (bytes.len() * 2).min(N);
        if let Some(out) = buf.get_mut(..n) {
            encode_hex(bytes, out);
        }
        Self {
            len: u8::try_from(n).unwrap_or(0),
            buf,
        }
    }

    fn as_str(&self) -> &str {
        let bytes = self.buf.get(..usize::from(self.len)).unwrap_or_default();
        // Only valid ids and hex digits are stored: always ASCII.
        std::str::from_utf8(bytes).unwrap_or("-")
    }
}

fn hex32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    encode_hex(bytes, &mut out);
    out
}

fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_mut(2).zip(bytes) {
        if let [hi, lo] = pair {
            *hi = HEX[usize::from(b >> 4)];
            *lo = HEX[usize::from(b & 0xf)];
        }
    }
}

/// Random bytes drawn from aws-lc's CSPRNG per call, per thread: one call serves
/// `RANDOM_BATCH / 40` requests (a call has a fixed cost of about 2,500 instructions, a
/// fortieth of a proxied request).
const RANDOM_BATCH: usize = 1280;

thread_local! {
    static RANDOM: std::cell::RefCell<([u8; RANDOM_BATCH], usize)> =
        const { std::cell::RefCell::new(([0; RANDOM_BATCH], RANDOM_BATCH)) };
}

/// Fills `out` from aws-lc's CSPRNG, through a per-thread batch (each byte is handed out
/// once). Should the RNG ever fail, the bytes come from SHA-256 over a process-wide counter,
/// the time and the address of `out` (unique and hard to guess, and ids stay valid: an id is
/// no reason to refuse a request).
fn fill_random(out: &mut [u8]) {
    let batched = out.len() <= RANDOM_BATCH
        && RANDOM
            .try_with(|cell| {
                let Ok(mut guard) = cell.try_borrow_mut() else {
                    return false;
                };
                let (buf, used) = &mut *guard;
                if RANDOM_BATCH - *used < out.len() {
                    if aws_lc_rs::rand::fill(buf).is_err() {
                        return false;
                    }
                    *used = 0;
                }
                let Some(chunk) = buf.get_mut(*used..*used + out.len()) else {
                    return false;
                };
                out.copy_from_slice(chunk);
                chunk.fill(0);
                *used += out.len();
                true
            })
            .unwrap_or(false);
    if batched || aws_lc_rs::rand::fill(out).is_ok() {
        return;
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut seed = Vec::with_capacity(40);
    seed.extend_from_slice(&n.to_le_bytes());
    seed.extend_from_slice(&t.to_le_bytes());
    seed.extend_from_slice(&(out.as_ptr() as usize).to_le_bytes());
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        seed.push(u8::try_from(i).unwrap_or(u8::MAX));
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &seed);
        chunk.copy_from_slice(d.as_ref().get(..chunk.len()).unwrap_or_default());
    }
}

fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

/// The trace id of a valid `traceparent` (`VV-TTTT…(32)-PPPP…(16)-FF`, lower-case hex, version
/// not `ff`, trace and parent ids not all zeros).
pub fn parse_traceparent(s: &str) -> Option<&str> {
    parse_traceparent_parts(s).map(|(t, _, _)| t)
}

/// The trace id, the parent id and the `sampled` flag (bit 0 of the flags) of a valid
/// `traceparent`.
pub fn parse_traceparent_parts(s: &str) -> Option<(&str, &str, bool)> {
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
    let sampled = u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1);
    ok.then_some((trace, parent, sampled))
}

/// 1–128 characters of `[A-Za-z0-9._:-]`: safe in headers, JSON and logs.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C trace context response header (`00-TRACE-SPAN-FLAGS`), on every response.
pub const TRACERESPONSE: &str = "traceresponse";

/// The request id header.
pub const X_REQUEST_ID: &str = "x-request-id";

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use http::HeaderValue;

    fn fresh() -> Ids {
        Ids::for_request(&HeaderMap::new(), false)
    }

    #[test]
    fn ids_are_well_formed() {
        let ids = fresh();
        assert_eq!(ids.request_id().len(), 32);
        assert!(is_valid_id(ids.request_id()));
        assert!(parse_traceparent(&ids.traceparent()).is_some());
        assert_eq!(parse_traceparent(&ids.traceparent()), Some(ids.trace_id()));
        assert_eq!(ids.span_id().len(), 16);
    }

    #[test]
    fn ids_are_random_and_never_repeat() {
        // 100 000 requests: no request, trace or span id repeats, and none is derivable
        // from the one before (a counter or a bijection of one would show as a constant
        // difference between consecutive ids, or as ids sharing their high half).
        let mut seen = HashSet::new();
        let mut prev: Option<u128> = None;
        let mut diffs = HashSet::new();
        let mut high_halves = HashSet::new();
        for _ in 0..100_000 {
            let ids = fresh();
            assert!(
                seen.insert(ids.request_id().to_owned()),
                "request id repeated"
            );
            assert!(seen.insert(ids.trace_id().to_owned()), "trace id repeated");
            assert!(seen.insert(ids.span_id().to_owned()), "span id repeated");
            let n = u128::from_str_radix(ids.request_id(), 16).expect("hex");
            if let Some(p) = prev {
                diffs.insert(n.wrapping_sub(p));
            }
            high_halves.insert(n >> 64);
            prev = Some(n);
        }
        assert_eq!(seen.len(), 300_000);
        assert!(diffs.len() > 99_990, "consecutive ids differ by a pattern");
        assert!(high_halves.len() > 99_990, "ids share structure");
    }

    #[test]
    fn random_bits_are_balanced() {
        // Every bit of the request id is set in about half of 20 000 ids (a CSPRNG passes
        // this with overwhelming probability; a biased or constant generator does not).
        let mut ones = [0u32; 128];
        for _ in 0..20_000 {
            let n = u128::from_str_radix(fresh().request_id(), 16).expect("hex");
            for (bit, count) in ones.iter_mut().enumerate() {
                *count += u32::from((n >> bit) & 1 == 1);
            }
        }
        for (bit, count) in ones.iter().enumerate() {
            assert!((9_300..=10_700).contains(count), "bit {bit}: {count}");
        }
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
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(t));
        assert_eq!(
            Ids::for_request(&h, true).trace_id(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(
            Ids::for_request(&h, false).trace_id(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn sampled_flag_kept_from_trusted_peers() {
        let mut h = HeaderMap::new();
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        h.insert(TRACEPARENT, HeaderValue::from_static(t));
        let ids = Ids::for_request(&h, true);
        assert_eq!(ids.parent_sampled(), Some(false));
        assert_eq!(ids.parent_span_id(), Some("00f067aa0ba902b7"));
        assert!(!ids.sampled());
        assert_eq!(
            ids.traceparent(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00", ids.span_id())
        );
        assert_eq!(&ids.traceresponse()[..], ids.traceparent().as_bytes());
        // Untrusted: a new trace, sampled by default.
        let ids = Ids::for_request(&h, false);
        assert_eq!(ids.parent_sampled(), None);
        assert!(ids.traceparent().ends_with("-01"));
        // Flags other than 00/01: only bit 0 is the sampled flag.
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"),
        );
        assert_eq!(Ids::for_request(&h, true).parent_sampled(), Some(true));
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02"),
        );
        assert_eq!(Ids::for_request(&h, true).parent_sampled(), Some(false));
    }

    #[test]
    fn incoming_id_kept_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(Ids::for_request(&h, true).request_id(), "abc-123");
        assert_ne!(Ids::for_request(&h, false).request_id(), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("bad id\"<>"));
        assert_ne!(Ids::for_request(&h, true).request_id(), "bad id\"<>");
        let long = "a".repeat(128);
        h.insert(X_REQUEST_ID, HeaderValue::from_str(&long).expect("value"));
        assert_eq!(Ids::for_request(&h, true).request_id(), long);
        h.insert(X_REQUEST_ID, HeaderValue::from_static("a"));
        h.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        assert_eq!(
            Ids::for_request(&h, true).request_id().len(),
            32,
            "duplicates are not trusted"
        );
    }
}
