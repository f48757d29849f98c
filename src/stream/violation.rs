//! Why a stream was cut: [`Violation`] with its snake_case codes, and the one final line
//! fortress sends on a violation ([`error_line`]), with its JSON string escaping.

use std::fmt;

use bytes::Bytes;

/// The `error` value of the final line fortress emits on a violation.
pub const VIOLATION_ERROR: &str = "stream_integrity_violation";

/// Why a stream was cut. [`Violation::code`] is the `reason` of the final error line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Violation {
    /// A line is not valid UTF-8.
    InvalidUtf8,
    /// A line is not valid JSON (including trailing garbage after the value).
    InvalidJson,
    /// A line is valid JSON but not an object.
    NotAnObject,
    /// A line has no type field.
    MissingType,
    /// A line has the type field more than once.
    DuplicateType,
    /// A line's type is not a string.
    TypeNotString,
    /// A line has no trace id field.
    MissingTraceId,
    /// A line has the trace id field more than once.
    DuplicateTraceId,
    /// A line's trace id is not a string.
    TraceIdNotString,
    /// A line's type is neither in the order nor `error`.
    UnknownType,
    /// A line's type comes before the previous line's type in the order.
    OutOfOrder,
    /// A line repeats the previous type, which is not repeatable.
    RepeatedType,
    /// A line's trace id differs from the stream's (the first line's).
    TraceIdChanged,
    /// A line's trace id differs from the request's (when it must match).
    TraceIdMismatch,
    /// A non-empty line after a terminal line.
    AfterTerminal,
    /// A line longer than `max_line_bytes` (reported as soon as the partial line is).
    LineTooLong,
    /// A string escape that is not Unicode text (a lone `\uD800`–`\uDFFF` surrogate).
    InvalidEscape,
    /// The stream ended without a required type (truncated stream).
    MissingRequired,
    /// The upstream failed mid-stream (connection reset, body error). Never returned by
    /// [`Validator`](super::validator::Validator); for the caller's own final error line.
    UpstreamError,
    /// A `technical_view` line's SQL was refused by the SQL guard.
    SqlNotAllowed,
    /// The stream came with a `Content-Encoding` (gzip, br, …): its lines cannot be checked.
    /// Fortress asks stream routes for `Accept-Encoding: identity`; an app that compresses
    /// anyway gets its stream refused.
    ContentEncoded,
}

impl Violation {
    /// Every violation, in declaration order (for metrics pre-registration and tests).
    pub const ALL: [Violation; 21] = [
        Violation::InvalidUtf8,
        Violation::InvalidJson,
        Violation::NotAnObject,
        Violation::MissingType,
        Violation::DuplicateType,
        Violation::TypeNotString,
        Violation::MissingTraceId,
        Violation::DuplicateTraceId,
        Violation::TraceIdNotString,
        Violation::UnknownType,
        Violation::OutOfOrder,
        Violation::RepeatedType,
        Violation::TraceIdChanged,
        Violation::TraceIdMismatch,
        Violation::AfterTerminal,
        Violation::LineTooLong,
        Violation::InvalidEscape,
        Violation::MissingRequired,
        Violation::UpstreamError,
        Violation::SqlNotAllowed,
        Violation::ContentEncoded,
    ];

    /// The snake_case code used as `reason`, in logs, metrics and audit records.
    pub fn code(self) -> &'static str {
        match self {
            Violation::InvalidUtf8 => "invalid_utf8",
            Violation::InvalidJson => "invalid_json",
            Violation::NotAnObject => "not_an_object",
            Violation::MissingType => "missing_type",
            Violation::DuplicateType => "duplicate_type",
            Violation::TypeNotString => "type_not_string",
            Violation::MissingTraceId => "missing_trace_id",
            Violation::DuplicateTraceId => "duplicate_trace_id",
            Violation::TraceIdNotString => "trace_id_not_string",
            Violation::UnknownType => "unknown_type",
            Violation::OutOfOrder => "out_of_order",
            Violation::RepeatedType => "repeated_type",
            Violation::TraceIdChanged => "trace_id_changed",
            Violation::TraceIdMismatch => "trace_id_mismatch",
            Violation::AfterTerminal => "after_terminal",
            Violation::LineTooLong => "line_too_long",
            Violation::InvalidEscape => "invalid_escape",
            Violation::MissingRequired => "missing_required",
            Violation::UpstreamError => "upstream_error",
            Violation::SqlNotAllowed => "sql_not_allowed",
            Violation::ContentEncoded => "content_encoded",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for Violation {}

/// The one final line emitted on a violation:
/// `{"type":"error","trace_id":"…","error":"stream_integrity_violation","reason":"<code>"}\n`
/// with `trace_id` JSON-escaped. Pass the request's trace id when known, else the
/// stream's ([`Validator::trace_id`] does that choice), else `""`.
///
/// [`Validator::trace_id`]: super::validator::Validator::trace_id
pub fn error_line(trace_id: &str, v: Violation) -> Bytes {
    let mut out = Vec::with_capacity(trace_id.len().saturating_add(112));
    out.extend_from_slice(b"{\"type\":\"error\",\"trace_id\":");
    push_json_string(&mut out, trace_id);
    out.extend_from_slice(b",\"error\":\"");
    out.extend_from_slice(VIOLATION_ERROR.as_bytes());
    out.extend_from_slice(b"\",\"reason\":\"");
    out.extend_from_slice(v.code().as_bytes());
    out.extend_from_slice(b"\"}\n");
    Bytes::from(out)
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
                out.push(HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0'));
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_is_one_json_line() {
        let trace = "a\"b\\c\nd\u{1}é";
        let bytes = error_line(trace, Violation::OutOfOrder);
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({"type": "error", "trace_id": trace, "error": "stream_integrity_violation", "reason": "out_of_order"})
        );
        assert!(
            error_line("t", Violation::SqlNotAllowed)
                == b"{\"type\":\"error\",\"trace_id\":\"t\",\"error\":\"stream_integrity_violation\",\"reason\":\"sql_not_allowed\"}\n"[..]
        );
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let codes: Vec<&str> = Violation::ALL.iter().map(|v| v.code()).collect();
        for (i, c) in codes.iter().enumerate() {
            assert!(
                c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{c}"
            );
            assert!(!codes[..i].contains(c), "{c} twice");
            assert_eq!(Violation::ALL[i].to_string(), *c);
        }
        assert_eq!(codes.first(), Some(&"invalid_utf8"));
        assert_eq!(codes.last(), Some(&"content_encoded"));
    }
}
