//! Message framing (RFC 9112 §6–7, RFC 9113 §8.2.2): the request's length must mean one
//! thing to fortress, to hyper and to the app. hyper's parser already refuses most broken
//! framing before fortress sees the request (see docs/forwarding-and-streams.md, "Request framing"); this stage
//! checks what reaches it on the parsed head: exactly one `Transfer-Encoding` field whose
//! value is exactly `chunked` (fortress strips `Transfer-Encoding` as hop-by-hop and re-frames
//! the body, so any other coding would reach the app undeclared), never on HTTP/1.0 or
//! HTTP/2, never beside `Content-Length`; at most one `Content-Length`, plain digits.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, Version};

use super::context::RequestContext;
use super::decide::Step;
pub use crate::error::FramingError;
use crate::error::Rejection;

/// The framing stage.
pub fn check(_ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    check_head(req.version, &req.headers).map_err(Rejection::RejectFraming)?;
    Ok(Step::Pass)
}

/// Longest `Content-Length` value accepted (`u64::MAX` has 20 digits; leading zeros beyond
/// this are refused rather than parsed).
pub const MAX_CONTENT_LENGTH_DIGITS: usize = 19;

/// Checks the framing headers of a parsed request head. Pure; never panics on any input
/// (the `http_head` fuzz target and a property test drive it).
pub fn check_head(version: Version, headers: &HeaderMap) -> Result<(), FramingError> {
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    let mut cl = headers.get_all(CONTENT_LENGTH).iter();
    let (te_first, te_second) = (te.next(), te.next());
    let (cl_first, cl_second) = (cl.next(), cl.next());
    if let Some(value) = te_first {
        if version != Version::HTTP_11 {
            return Err(FramingError::TransferEncodingNotAllowed);
        }
        if te_second.is_some() {
            return Err(FramingError::RepeatedTransferEncoding);
        }
        if value.as_bytes() != b"chunked" {
            return Err(FramingError::UnsupportedTransferCoding);
        }
        if cl_first.is_some() {
            return Err(FramingError::ContentLengthWithTransferEncoding);
        }
    }
    if let Some(value) = cl_first {
        if cl_second.is_some() {
            return Err(FramingError::RepeatedContentLength);
        }
        let v = value.as_bytes();
        if v.is_empty() || v.len() > MAX_CONTENT_LENGTH_DIGITS || !v.iter().all(u8::is_ascii_digit)
        {
            return Err(FramingError::InvalidContentLength);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;
    use http::{HeaderName, HeaderValue};

    fn head(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_bytes(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn framing_variants() {
        use FramingError as F;
        let h11 = Version::HTTP_11;
        type Case<'a> = (Version, &'a [(&'a str, &'a [u8])], Result<(), F>);
        let cases: &[Case<'_>] = &[
            (h11, &[], Ok(())),
            (h11, &[("transfer-encoding", b"chunked")], Ok(())),
            (h11, &[("content-length", b"0")], Ok(())),
            (h11, &[("content-length", b"1234")], Ok(())),
            (
                h11,
                &[("transfer-encoding", b"Chunked")],
                Err(F::UnsupportedTransferCoding),
            ),
            (
                h11,
                &[("transfer-encoding", b"chunked ")],
                Err(F::UnsupportedTransferCoding),
            ),
            (
                h11,
                &[("transfer-encoding", b"gzip, chunked")],
                Err(F::UnsupportedTransferCoding),
            ),
            (
                h11,
                &[("transfer-encoding", b"chunked, chunked")],
                Err(F::UnsupportedTransferCoding),
            ),
            (
                h11,
                &[("transfer-encoding", b"identity")],
                Err(F::UnsupportedTransferCoding),
            ),
            (
                h11,
                &[("transfer-encoding", b"xchunked")],
                Err(F::UnsupportedTransferCoding),
            ),
            (
                h11,
                &[("transfer-encoding", b"\tchunked")],
                Err(F::UnsupportedTransferCoding),
            ),
            (
                h11,
                &[
                    ("transfer-encoding", b"gzip"),
                    ("transfer-encoding", b"chunked"),
                ],
                Err(F::RepeatedTransferEncoding),
            ),
            (
                h11,
                &[("transfer-encoding", b"chunked"), ("content-length", b"5")],
                Err(F::ContentLengthWithTransferEncoding),
            ),
            (
                Version::HTTP_10,
                &[("transfer-encoding", b"chunked")],
                Err(F::TransferEncodingNotAllowed),
            ),
            (
                Version::HTTP_2,
                &[("transfer-encoding", b"chunked")],
                Err(F::TransferEncodingNotAllowed),
            ),
            (
                h11,
                &[("content-length", b"5"), ("content-length", b"5")],
                Err(F::RepeatedContentLength),
            ),
            (
                h11,
                &[("content-length", b"5, 5")],
                Err(F::InvalidContentLength),
            ),
            (
                h11,
                &[("content-length", b"+5")],
                Err(F::InvalidContentLength),
            ),
            (
                h11,
                &[("content-length", b"-1")],
                Err(F::InvalidContentLength),
            ),
            (
                h11,
                &[("content-length", b"0x10")],
                Err(F::InvalidContentLength),
            ),
            (
                h11,
                &[("content-length", b"")],
                Err(F::InvalidContentLength),
            ),
            (
                h11,
                &[("content-length", b"00000000000000000005")],
                Err(F::InvalidContentLength),
            ),
            (
                h11,
                &[("content-length", b"99999999999999999999")],
                Err(F::InvalidContentLength),
            ),
        ];
        for (version, pairs, want) in cases {
            assert_eq!(
                check_head(*version, &head(pairs)),
                *want,
                "{version:?} {pairs:?}"
            );
        }
    }

    /// Random heads built from framing-relevant pieces: never a panic, and whatever passes
    /// has at most one framing header, which is exactly `chunked` or plain digits.
    #[test]
    fn random_heads_never_panic_and_only_clean_framing_passes() {
        const NAMES: [&str; 5] = ["transfer-encoding", "content-length", "host", "te", "x-a"];
        const PIECES: [&[u8]; 14] = [
            b"chunked",
            b"Chunked",
            b"gzip",
            b",",
            b" ",
            b"\t",
            b"5",
            b"0",
            b"+",
            b"-",
            b"x",
            b";",
            b"identity",
            b"\x80",
        ];
        let mut rng = Rng(0x5eed_f00d_cafe_0001);
        let versions = [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2];
        for _ in 0..20_000 {
            let mut h = HeaderMap::new();
            for _ in 0..rng.below(4) {
                let name = NAMES[rng.below(NAMES.len())];
                let mut value = Vec::new();
                for _ in 0..rng.below(5) {
                    value.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                }
                if let Ok(v) = HeaderValue::from_bytes(&value) {
                    h.append(HeaderName::from_static(name), v);
                }
            }
            let version = versions[rng.below(versions.len())];
            if check_head(version, &h).is_ok() {
                let te: Vec<_> = h.get_all(TRANSFER_ENCODING).iter().collect();
                let cl: Vec<_> = h.get_all(CONTENT_LENGTH).iter().collect();
                assert!(te.len() + cl.len() <= 1, "{h:?}");
                assert!(te.iter().all(|v| v.as_bytes() == b"chunked"), "{h:?}");
                assert!(te.is_empty() || version == Version::HTTP_11, "{h:?}");
                assert!(
                    cl.iter()
                        .all(|v| !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit)),
                    "{h:?}"
                );
            }
        }
    }
}
