//! What the HTTP/1 raw-byte guard (`server::h1_guard`) tells the pipeline: the violations it
//! finds, the per-connection verdict (which request stands in for a refused head), and the
//! pipeline's first step that turns it into the refusal.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{FramingError, HeadLimit, Rejection};

/// What the guard found wrong. The detailed reason (logs); clients see the row of
/// [`Violation::rejection`], or `malformed_body` for body violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A line ending in LF without CR.
    BareLf,
    /// A CR not followed by LF.
    LoneCr,
    /// The request line is not `method SP target SP version`.
    RequestLine,
    /// The method is not a token.
    Method,
    /// The request target holds a control byte, DEL or invalid UTF-8.
    Target,
    /// The version is not exactly `HTTP/1.1` or `HTTP/1.0`.
    Version,
    /// A field line starting with whitespace (obsolete line folding).
    ObsFold,
    /// A field name that is empty, not a token, or followed by whitespace before the colon.
    FieldName,
    /// A control character (NUL, CR, DEL, …) in a field value.
    FieldValue,
    /// The head is larger than `max_head_bytes`.
    HeadTooLarge,
    /// The head has more than `max_headers` field lines.
    TooManyHeaders,
    /// `Content-Length` beside `Transfer-Encoding`.
    ContentLengthWithTransferEncoding,
    /// More than one `Content-Length` (even equal).
    RepeatedContentLength,
    /// A `Content-Length` that is not 1–19 digits.
    InvalidContentLength,
    /// More than one `Transfer-Encoding`.
    RepeatedTransferEncoding,
    /// A `Transfer-Encoding` other than exactly `chunked`.
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` on HTTP/1.0.
    TransferEncodingNotAllowed,
    /// A chunk size that is not plain hex without leading zeros, or overflows 64 bits.
    ChunkSize,
    /// A chunk extension that is not `;name` / `;name=token` / `;name="quoted"`.
    ChunkExtension,
    /// A chunk-size line longer than `server::h1_guard::MAX_CHUNK_LINE`.
    ChunkLineTooLong,
    /// Chunk data not followed by CRLF.
    ChunkDataEnd,
    /// A malformed, folded or oversized trailer section.
    Trailer,
}

impl Violation {
    /// The detailed reason code.
    pub fn code(self) -> &'static str {
        match self {
            Violation::BareLf => "bare_lf",
            Violation::LoneCr => "lone_cr",
            Violation::RequestLine => "request_line",
            Violation::Method => "method_token",
            Violation::Target => "target_bytes",
            Violation::Version => "version",
            Violation::ObsFold => "obs_fold",
            Violation::FieldName => "field_name",
            Violation::FieldValue => "field_value",
            Violation::HeadTooLarge => "head_too_large",
            Violation::TooManyHeaders => "too_many_headers",
            Violation::ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
            Violation::RepeatedContentLength => "repeated_content_length",
            Violation::InvalidContentLength => "invalid_content_length",
            Violation::RepeatedTransferEncoding => "repeated_transfer_encoding",
            Violation::UnsupportedTransferCoding => "unsupported_transfer_coding",
            Violation::TransferEncodingNotAllowed => "transfer_encoding_not_allowed",
            Violation::ChunkSize => "chunk_size",
            Violation::ChunkExtension => "chunk_extension",
            Violation::ChunkLineTooLong => "chunk_line_too_long",
            Violation::ChunkDataEnd => "chunk_data_end",
            Violation::Trailer => "trailer",
        }
    }

    /// What the client gets for a head violation.
    pub fn rejection(self) -> Rejection {
        use FramingError as F;
        match self {
            Violation::HeadTooLarge => Rejection::HeadTooLarge(HeadLimit::HeaderBytes),
            Violation::TooManyHeaders => Rejection::HeadTooLarge(HeadLimit::HeaderCount),
            Violation::ContentLengthWithTransferEncoding => {
                Rejection::RejectFraming(F::ContentLengthWithTransferEncoding)
            }
            Violation::RepeatedContentLength => Rejection::RejectFraming(F::RepeatedContentLength),
            Violation::InvalidContentLength => Rejection::RejectFraming(F::InvalidContentLength),
            Violation::RepeatedTransferEncoding => {
                Rejection::RejectFraming(F::RepeatedTransferEncoding)
            }
            Violation::UnsupportedTransferCoding => {
                Rejection::RejectFraming(F::UnsupportedTransferCoding)
            }
            Violation::TransferEncodingNotAllowed => {
                Rejection::RejectFraming(F::TransferEncodingNotAllowed)
            }
            Violation::ChunkSize
            | Violation::ChunkExtension
            | Violation::ChunkLineTooLong
            | Violation::ChunkDataEnd
            | Violation::Trailer => Rejection::MalformedBody,
            Violation::BareLf
            | Violation::LoneCr
            | Violation::RequestLine
            | Violation::Method
            | Violation::Target
            | Violation::Version
            | Violation::ObsFold
            | Violation::FieldName
            | Violation::FieldValue => Rejection::RejectFraming(F::MalformedHead),
        }
    }
}

/// What the guard tells the pipeline about one connection: the sequence number of the
/// request hyper will see in place of a refused head, and why.
#[derive(Debug, Default)]
pub struct H1Verdict {
    requests: AtomicU64,
    violation: OnceLock<(u64, Violation)>,
}

impl H1Verdict {
    /// Called once per request the pipeline handles on this connection, in order (hyper
    /// serves an HTTP/1 connection's requests one after the other). `Some` for the request
    /// that stands in for a refused head.
    pub fn next_request(&self) -> Option<Violation> {
        let n = self.requests.fetch_add(1, Ordering::AcqRel) + 1;
        match self.violation.get() {
            Some(&(at, v)) if at == n => Some(v),
            _ => None,
        }
    }

    /// Records the guard's first violation: the request with sequence number `at` stands
    /// in for the refused head.
    pub fn record(&self, at: u64, v: Violation) {
        // Set once: the guard stops at its first violation.
        let _already = self.violation.set((at, v));
    }
}

/// The pipeline's first step: the request standing in for a head the guard refused gets
/// the guard's answer; an HTTP/2 request with more fields than `server.max_headers` gets
/// 431 (its byte size is bounded by `SETTINGS_MAX_HEADER_LIST_SIZE`, enforced in `h2`).
pub fn precheck(
    ctx: &super::context::RequestContext,
    req: &http::request::Parts,
) -> Result<(), Rejection> {
    if let Some(v) = ctx.conn.h1.next_request() {
        return Err(v.rejection());
    }
    if req.version == http::Version::HTTP_2 {
        // RFC 9113 §8.2.3 lets a client split `cookie` into crumbs: they count as one field.
        let cookies = req.headers.get_all(http::header::COOKIE).iter().count();
        let fields = req.headers.len() - cookies + usize::from(cookies > 0);
        if fields > ctx.snapshot.server.max_headers {
            return Err(Rejection::HeadTooLarge(HeadLimit::HeaderCount));
        }
    }
    Ok(())
}
