//! NDJSON stream integrity check (SPEC §2), sans-io.
//!
//! A [`Validator`] takes the response body of one NDJSON stream chunk by chunk and hands
//! back the complete, valid lines of each chunk, ready to forward, or the first
//! [`Violation`]. It buffers at most the current partial line, never more than
//! `max_line_bytes` (+1 for a `\r`) of it, and forwards every line as soon as its `\n`
//! arrives. Lines entirely inside one chunk are forwarded as zero-copy slices of it.
//!
//! Each line is checked in full: UTF-8, JSON syntax (the whole line, via serde with
//! [`serde::de::IgnoredAny`] for every value but the `type`, trace and SQL fields, so no
//! tree is built), one top-level object with exactly one string `type` and one string
//! trace id, the type order of [`StreamRules`], one trace id per stream, and optionally the
//! SQL guard ([`super::sql_guard`]).
//!
//! The result does not depend on framing: any split of the same bytes into chunks gives
//! the same forwarded bytes and the same first violation (see the tests).
//!
//! Typical use in a body stream:
//!
//! ```text
//! match validator.push(frame) {
//!     Ok(lines) => send(lines),
//!     Err(v) => {
//!         send(validator.take_before_violation());   // valid lines ahead of the bad one
//!         send(error_line(validator.trace_id().unwrap_or(""), v));
//!         close upstream; log, count, audit v.code()
//!     }
//! }
//! // at upstream EOF: validator.finish(), and on Err the same error line.
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::sql_guard::{SQL_LINE_TYPE, SqlGuard, SqlRejection};

/// The type of an upstream error line: always allowed, always terminal.
pub const ERROR_TYPE: &str = "error";

/// The `error` value of the final line fortress emits on a violation.
pub const VIOLATION_ERROR: &str = "stream_integrity_violation";

/// A partial-line buffer that grew past this capacity is released once its line is done,
/// so one long line does not pin up to `max_line_bytes` for the rest of the stream.
const KEEP_BUFFER_CAPACITY: usize = 64 * 1024;

/// Rules for one kind of NDJSON stream, compiled from config. Cheap to share: the caller
/// keeps it in an `Arc` and hands that to every [`Validator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRules {
    /// Allowed line types in stream order; a stream may skip types but never go back.
    pub order: Vec<String>,
    /// Types that may appear on several consecutive lines (e.g. `data`). A type can only
    /// repeat while it is the current one: going back to it later is out of order.
    pub repeatable: Vec<String>,
    /// Types that must have appeared before EOF (a stream ended by an upstream `error` line
    /// needs none of them). Default `[end]`: a stream cut short is a violation.
    pub required: Vec<String>,
    /// Types after which nothing (but empty lines) may follow. `error` is always terminal.
    pub terminal: Vec<String>,
    /// Name of the type field (default `type`).
    pub type_field: String,
    /// Name of the trace id field (default `trace_id`).
    pub trace_field: String,
    /// Every line's trace id must equal the request's trace id (when one is known).
    pub trace_must_match_request: bool,
    /// Longest allowed line in bytes, not counting its `\n` or `\r\n`.
    pub max_line_bytes: usize,
    /// Optional SQL guard for `technical_view` lines.
    pub sql_guard: Option<SqlGuard>,
}

impl Default for StreamRules {
    /// `thinking → technical_view → data → business_view → end`, `data` repeatable, `end`
    /// required and terminal, fields `type` / `trace_id`, trace bound to the request, 1 MiB
    /// lines, no SQL guard.
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
        Self {
            order: s(&["thinking", "technical_view", "data", "business_view", "end"]),
            repeatable: s(&["data"]),
            required: s(&["end"]),
            terminal: s(&["end"]),
            type_field: "type".to_owned(),
            trace_field: "trace_id".to_owned(),
            trace_must_match_request: true,
            max_line_bytes: 1024 * 1024,
            sql_guard: None,
        }
    }
}

impl StreamRules {
    /// Configuration mistakes that make these rules unusable or surprising, for the config
    /// compiler to refuse at load time (fail closed). Empty when the rules are sound.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.order.is_empty() {
            out.push("order is empty".to_owned());
        }
        for (i, t) in self.order.iter().enumerate() {
            if t == ERROR_TYPE {
                out.push("order must not list `error` (it is always allowed)".to_owned());
            }
            if self.order.iter().take(i).any(|u| u == t) {
                out.push(format!("order lists `{t}` twice"));
            }
        }
        for (list, name) in [
            (&self.repeatable, "repeatable"),
            (&self.required, "required"),
            (&self.terminal, "terminal"),
        ] {
            for t in list {
                if !self.order.contains(t) {
                    out.push(format!("{name} lists `{t}`, which is not in order"));
                }
            }
        }
        if self.type_field.is_empty() || self.trace_field.is_empty() {
            out.push("type_field and trace_field must not be empty".to_owned());
        }
        if self.type_field == self.trace_field {
            out.push("type_field and trace_field must differ".to_owned());
        }
        if self.max_line_bytes == 0 {
            out.push("max_line_bytes must be positive".to_owned());
        }
        if let Some(guard) = &self.sql_guard
            && (guard.field == self.type_field || guard.field == self.trace_field)
        {
            out.push("sql_guard.field must differ from type_field and trace_field".to_owned());
        }
        out
    }
}

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
    /// The stream ended inside a line (no final newline).
    PartialLineAtEof,
    /// The stream ended without a required type (truncated stream).
    MissingRequired,
    /// The upstream failed mid-stream (connection reset, body error). Never returned by
    /// [`Validator`]; for the caller's own final error line.
    UpstreamError,
    /// A `technical_view` line's SQL was refused by the SQL guard.
    SqlNotAllowed,
}

impl Violation {
    /// Every violation, in declaration order (for metrics pre-registration and tests).
    pub const ALL: [Violation; 20] = [
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
        Violation::PartialLineAtEof,
        Violation::MissingRequired,
        Violation::UpstreamError,
        Violation::SqlNotAllowed,
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
            Violation::PartialLineAtEof => "partial_line_at_eof",
            Violation::MissingRequired => "missing_required",
            Violation::UpstreamError => "upstream_error",
            Violation::SqlNotAllowed => "sql_not_allowed",
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

/// Checks one NDJSON response stream. See the module docs.
pub struct Validator {
    rules: Arc<StreamRules>,
    request_trace: Option<String>,
    /// The first line's trace id.
    stream_trace: Option<String>,
    /// The current partial line (bytes after the last `\n`), at most `max_line_bytes + 1`.
    partial: Vec<u8>,
    /// Index in `rules.order` of the last line's type.
    last: Option<usize>,
    /// Which types of `rules.order` were seen.
    seen: Vec<bool>,
    /// A terminal line was seen.
    terminated: bool,
    /// The terminal line was an upstream `error` line.
    upstream_error: bool,
    /// The first violation (sticky).
    failed: Option<Violation>,
    /// `finish` was called and returned `Ok`.
    finished: bool,
    /// Valid lines of the failing chunk ahead of the offending line.
    before_violation: Bytes,
    /// Detail of the last SQL guard refusal.
    sql_rejection: Option<SqlRejection>,
    /// Lines forwarded so far.
    lines: u64,
}

impl fmt::Debug for Validator {
    /// State only: the buffered response bytes are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("trace_id", &self.trace_id())
            .field(
                "last_type",
                &self.last.and_then(|i| self.rules.order.get(i)),
            )
            .field("lines", &self.lines)
            .field("buffered", &self.partial.len())
            .field("terminated", &self.terminated)
            .field("upstream_error", &self.upstream_error)
            .field("failed", &self.failed)
            .field("finished", &self.finished)
            .finish()
    }
}

/// Output of one `push`: nothing, one contiguous range of the chunk, or copied bytes.
enum Out {
    Empty,
    Range(usize, usize),
    Owned(BytesMut),
}

impl Out {
    fn push_range(&mut self, chunk: &[u8], start: usize, end: usize) {
        match self {
            Out::Empty => *self = Out::Range(start, end),
            Out::Range(_, b) if *b == start => *b = end,
            Out::Range(a, b) => {
                let mut owned = BytesMut::with_capacity(chunk.len());
                owned.extend_from_slice(chunk.get(*a..*b).unwrap_or_default());
                owned.extend_from_slice(chunk.get(start..end).unwrap_or_default());
                *self = Out::Owned(owned);
            }
            Out::Owned(owned) => owned.extend_from_slice(chunk.get(start..end).unwrap_or_default()),
        }
    }

    /// Appends bytes that are not part of the chunk (the completed partial line). Only
    /// ever the first piece of a `push`'s output.
    fn push_copy(&mut self, bytes: &[u8], capacity: usize) {
        let mut owned = match std::mem::replace(self, Out::Empty) {
            Out::Owned(owned) => owned,
            _ => BytesMut::with_capacity(capacity),
        };
        owned.extend_from_slice(bytes);
        *self = Out::Owned(owned);
    }

    fn into_bytes(self, chunk: &Bytes) -> Bytes {
        match self {
            Out::Empty => Bytes::new(),
            Out::Range(a, b) => chunk
                .get(a..b)
                .map(|_| chunk.slice(a..b))
                .unwrap_or_default(),
            Out::Owned(owned) => owned.freeze(),
        }
    }
}

/// Which field a top-level key names.
#[derive(Clone, Copy)]
enum Key {
    Type,
    Trace,
    Sql,
    Other,
}

/// A captured top-level field.
enum Field<'de> {
    Absent,
    Str(Cow<'de, str>),
    NotStr,
    Duplicate,
}

impl<'de> Field<'de> {
    fn set(&mut self, value: Field<'de>) {
        *self = match self {
            Field::Absent => value,
            _ => Field::Duplicate,
        };
    }
}

/// What one line says about itself.
struct Head<'de> {
    object: bool,
    ty: Field<'de>,
    trace: Field<'de>,
    sql: Field<'de>,
}

impl Head<'_> {
    fn not_object() -> Self {
        Head {
            object: false,
            ty: Field::Absent,
            trace: Field::Absent,
            sql: Field::Absent,
        }
    }
}

/// Field names to capture.
#[derive(Clone, Copy)]
struct Names<'r> {
    ty: &'r str,
    trace: &'r str,
    sql: Option<&'r str>,
}

/// Top level of a line: an object whose interesting fields are captured, anything else
/// consumed (so the syntax is still checked) and reported as not an object.
struct LineSeed<'r>(Names<'r>);

impl<'de> DeserializeSeed<'de> for LineSeed<'_> {
    type Value = Head<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_> {
    type Value = Head<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut head = Head {
            object: true,
            ty: Field::Absent,
            trace: Field::Absent,
            sql: Field::Absent,
        };
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            match key {
                Key::Type => head.ty.set(map.next_value_seed(StrSeed)?),
                Key::Trace => head.trace.set(map.next_value_seed(StrSeed)?),
                Key::Sql => head.sql.set(map.next_value_seed(StrSeed)?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(head)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Head::not_object())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Head::not_object())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Head::not_object())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Head::not_object())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Head::not_object())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Head::not_object())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Head::not_object())
    }
}

/// Classifies a key without allocating (escaped keys are compared after unescaping).
struct KeySeed<'r>(Names<'r>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(if key == self.0.ty {
            Key::Type
        } else if key == self.0.trace {
            Key::Trace
        } else if self.0.sql == Some(key) {
            Key::Sql
        } else {
            Key::Other
        })
    }
}

/// Captures a string value (borrowed unless it had escapes); any other value is consumed
/// and reported as not a string.
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Field<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::NotStr)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::NotStr)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::NotStr)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Field::NotStr)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Field::NotStr)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Field::NotStr)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::NotStr)
    }
}

/// Parses one line's content (no line terminator) fully, capturing only the named fields.
fn parse_head<'a>(line: &'a str, names: Names<'_>) -> Result<Head<'a>, Violation> {
    let mut de = serde_json::Deserializer::from_str(line);
    let head = LineSeed(names)
        .deserialize(&mut de)
        .map_err(|_| Violation::InvalidJson)?;
    de.end().map_err(|_| Violation::InvalidJson)?;
    Ok(head)
}

/// Maps a captured field to its string or the given violations.
fn required_str<'h>(
    field: &'h Field<'_>,
    duplicate: Violation,
    missing: Violation,
    not_string: Violation,
) -> Result<&'h str, Violation> {
    match field {
        Field::Str(s) => Ok(s),
        Field::Duplicate => Err(duplicate),
        Field::Absent => Err(missing),
        Field::NotStr => Err(not_string),
    }
}

impl Validator {
    /// A validator for one response stream. `request_trace_id` is the request's trace id
    /// when known; with `trace_must_match_request` every line must carry it.
    pub fn new(rules: Arc<StreamRules>, request_trace_id: Option<String>) -> Self {
        let seen = vec![false; rules.order.len()];
        Self {
            rules,
            request_trace: request_trace_id,
            stream_trace: None,
            partial: Vec::new(),
            last: None,
            seen,
            terminated: false,
            upstream_error: false,
            failed: None,
            finished: false,
            before_violation: Bytes::new(),
            sql_rejection: None,
            lines: 0,
        }
    }

    /// Feeds a chunk; returns the bytes of all complete, valid lines in it (each with its
    /// `\n` exactly as received, `\r\n` included; empty lines dropped) ready to forward, or
    /// the first violation. Lines entirely inside the chunk are returned as a zero-copy slice
    /// of it when they are contiguous. A line longer than `max_line_bytes` is reported as
    /// soon as its partial is, without waiting for its newline, and a non-empty partial line
    /// after a terminal line as soon as it starts.
    ///
    /// On `Err`, the valid lines of this chunk ahead of the offending one are available from
    /// [`Validator::take_before_violation`]. After a violation every further call returns
    /// the same violation; after a successful [`Validator::finish`], a non-empty chunk is
    /// [`Violation::AfterTerminal`].
    pub fn push(&mut self, chunk: Bytes) -> Result<Bytes, Violation> {
        self.before_violation = Bytes::new();
        if let Some(v) = self.failed {
            return Err(v);
        }
        if chunk.is_empty() {
            return Ok(Bytes::new());
        }
        if self.finished {
            return Err(self.fail(Violation::AfterTerminal, Out::Empty, &chunk));
        }
        let data: &[u8] = &chunk;
        let mut out = Out::Empty;
        let mut pos = 0usize;

        if !self.partial.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', data) else {
                return match self.extend_partial(data) {
                    Ok(()) => Ok(Bytes::new()),
                    Err(v) => Err(self.fail(v, Out::Empty, &chunk)),
                };
            };
            let head = data.get(..nl).unwrap_or_default();
            let last = head.last().or(self.partial.last()).copied();
            if let Some(v) = self.prefix_violation(self.partial.len().saturating_add(nl), last) {
                return Err(self.fail(v, Out::Empty, &chunk));
            }
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(head);
            let verdict = self.check_line(&line);
            if let Ok(true) = verdict {
                line.push(b'\n');
                out.push_copy(&line, line.len().saturating_add(data.len()));
            }
            line.clear();
            if line.capacity() <= KEEP_BUFFER_CAPACITY {
                self.partial = line;
            }
            if let Err(v) = verdict {
                return Err(self.fail(v, out, &chunk));
            }
            pos = nl.saturating_add(1);
        }

        let base = pos;
        let rest = data.get(base..).unwrap_or_default();
        let mut start = 0usize;
        for nl in memchr::memchr_iter(b'\n', rest) {
            let line = rest.get(start..nl).unwrap_or_default();
            let end = nl.saturating_add(1);
            match self.check_line(line) {
                Ok(true) => {
                    out.push_range(data, base.saturating_add(start), base.saturating_add(end))
                }
                Ok(false) => {}
                Err(v) => return Err(self.fail(v, out, &chunk)),
            }
            start = end;
        }
        if let Some(tail) = rest.get(start..)
            && !tail.is_empty()
            && let Err(v) = self.extend_partial(tail)
        {
            return Err(self.fail(v, out, &chunk));
        }
        Ok(out.into_bytes(&chunk))
    }

    /// End of stream. `Ok(())` if it ended cleanly: no partial line, and every `required`
    /// type seen — unless an upstream `error` line ended the stream, which is a clean,
    /// terminal end by itself. Otherwise [`Violation::PartialLineAtEof`] or
    /// [`Violation::MissingRequired`] (or the earlier violation, if any).
    pub fn finish(&mut self) -> Result<(), Violation> {
        self.before_violation = Bytes::new();
        if let Some(v) = self.failed {
            return Err(v);
        }
        if self.finished {
            return Ok(());
        }
        if !matches!(self.partial.as_slice(), [] | [b'\r']) {
            self.failed = Some(Violation::PartialLineAtEof);
            return Err(Violation::PartialLineAtEof);
        }
        if !self.upstream_error {
            let missing = self.rules.required.iter().any(|r| {
                let at = self.rules.order.iter().position(|t| t == r);
                !at.and_then(|i| self.seen.get(i).copied()).unwrap_or(false)
            });
            if missing {
                self.failed = Some(Violation::MissingRequired);
                return Err(Violation::MissingRequired);
            }
        }
        self.finished = true;
        self.partial = Vec::new();
        Ok(())
    }

    /// The trace id for the final error line: the request's when known, else the stream's
    /// (its first line's), else `None`.
    pub fn trace_id(&self) -> Option<&str> {
        self.request_trace
            .as_deref()
            .or(self.stream_trace.as_deref())
    }

    /// After `push` returned `Err`: the complete valid lines of that chunk ahead of the
    /// offending line, not yet returned. Forward them before the error line, so that what
    /// the client receives does not depend on framing. Empty otherwise; taking empties it.
    pub fn take_before_violation(&mut self) -> Bytes {
        std::mem::take(&mut self.before_violation)
    }

    /// Bytes of the current partial line held in memory (never above
    /// `max_line_bytes + 1`).
    pub fn buffered_len(&self) -> usize {
        self.partial.len()
    }

    /// The first violation, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.failed
    }

    /// Whether an upstream `error` line ended the stream (forwarded; a clean end).
    pub fn ended_with_upstream_error(&self) -> bool {
        self.upstream_error
    }

    /// Whether a terminal line (or an upstream `error` line) was seen.
    pub fn terminated(&self) -> bool {
        self.terminated
    }

    /// Number of lines accepted so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Detail of the SQL guard's refusal, after [`Violation::SqlNotAllowed`].
    pub fn sql_rejection(&self) -> Option<&SqlRejection> {
        self.sql_rejection.as_ref()
    }

    /// Records the first violation and the valid output ahead of it.
    fn fail(&mut self, v: Violation, out: Out, chunk: &Bytes) -> Violation {
        self.failed = Some(v);
        self.before_violation = out.into_bytes(chunk);
        self.partial = Vec::new();
        v
    }

    /// The violation a partial line (no `\n` yet) of `len` bytes ending in `last` already
    /// commits its complete line to, whatever follows. Agrees exactly with the
    /// after-terminal and length checks of [`Validator::check_line`].
    fn prefix_violation(&self, len: usize, last: Option<u8>) -> Option<Violation> {
        let only_cr = len == 1 && last == Some(b'\r');
        if self.terminated && len > 0 && !only_cr {
            return Some(Violation::AfterTerminal);
        }
        let max = self.rules.max_line_bytes;
        if len > max.saturating_add(1) || (len == max.saturating_add(1) && last != Some(b'\r')) {
            return Some(Violation::LineTooLong);
        }
        None
    }

    /// Appends bytes without a `\n` to the partial line, within the limits.
    fn extend_partial(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let len = self.partial.len().saturating_add(bytes.len());
        let last = bytes.last().or(self.partial.last()).copied();
        if let Some(v) = self.prefix_violation(len, last) {
            return Err(v);
        }
        if len > self.partial.capacity() {
            // Grow geometrically but never past the largest partial allowed.
            let cap = self
                .partial
                .capacity()
                .saturating_mul(2)
                .max(len)
                .min(self.rules.max_line_bytes.saturating_add(1))
                .max(len);
            self.partial
                .reserve_exact(cap.saturating_sub(self.partial.len()));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// Checks one complete line (without its `\n`); `Ok(true)` to forward it, `Ok(false)` for
    /// an empty line.
    fn check_line(&mut self, raw: &[u8]) -> Result<bool, Violation> {
        let content = raw.strip_suffix(b"\r").unwrap_or(raw);
        if content.is_empty() {
            return Ok(false);
        }
        if self.terminated {
            return Err(Violation::AfterTerminal);
        }
        let rules = &*self.rules;
        if content.len() > rules.max_line_bytes {
            return Err(Violation::LineTooLong);
        }
        let text = std::str::from_utf8(content).map_err(|_| Violation::InvalidUtf8)?;
        let names = Names {
            ty: &rules.type_field,
            trace: &rules.trace_field,
            sql: rules.sql_guard.as_ref().map(|g| g.field.as_str()),
        };
        let head = parse_head(text, names)?;
        if !head.object {
            return Err(Violation::NotAnObject);
        }
        let ty = required_str(
            &head.ty,
            Violation::DuplicateType,
            Violation::MissingType,
            Violation::TypeNotString,
        )?;
        let trace = required_str(
            &head.trace,
            Violation::DuplicateTraceId,
            Violation::MissingTraceId,
            Violation::TraceIdNotString,
        )?;

        // Type order.
        let index = if ty == ERROR_TYPE {
            None
        } else {
            let i = rules
                .order
                .iter()
                .position(|t| t == ty)
                .ok_or(Violation::UnknownType)?;
            if let Some(last) = self.last {
                if i < last {
                    return Err(Violation::OutOfOrder);
                }
                if i == last && !rules.repeatable.iter().any(|t| t == ty) {
                    return Err(Violation::RepeatedType);
                }
            }
            Some(i)
        };

        // Trace id.
        match (&self.request_trace, rules.trace_must_match_request) {
            (Some(request), true) if request != trace => return Err(Violation::TraceIdMismatch),
            _ => {}
        }
        if let Some(stream) = &self.stream_trace
            && stream != trace
        {
            return Err(Violation::TraceIdChanged);
        }

        // SQL guard.
        if ty == SQL_LINE_TYPE
            && let Some(guard) = &rules.sql_guard
        {
            let verdict = match &head.sql {
                Field::Str(sql) => guard.check(sql),
                _ => Err(SqlRejection::MissingField),
            };
            if let Err(rejection) = verdict {
                self.sql_rejection = Some(rejection);
                return Err(Violation::SqlNotAllowed);
            }
        }

        // Accepted: update the state.
        if self.stream_trace.is_none() {
            self.stream_trace = Some(trace.to_owned());
        }
        match index {
            None => {
                self.terminated = true;
                self.upstream_error = true;
            }
            Some(i) => {
                self.last = Some(i);
                if let Some(seen) = self.seen.get_mut(i) {
                    *seen = true;
                }
                if rules.terminal.iter().any(|t| t == ty) {
                    self.terminated = true;
                }
            }
        }
        self.lines = self.lines.saturating_add(1);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    use crate::testutil::Rng;

    fn rules() -> StreamRules {
        StreamRules {
            max_line_bytes: 64 * 1024,
            ..StreamRules::default()
        }
    }

    fn guarded_rules() -> StreamRules {
        StreamRules {
            sql_guard: Some(SqlGuard {
                field: "sql".to_owned(),
                read_only: true,
                allowed_tables: vec!["orders".to_owned(), "customers".to_owned()],
            }),
            ..rules()
        }
    }

    /// One line of the given type with a payload of about `payload` bytes: nested objects,
    /// arrays, numbers, escapes and multi-byte UTF-8 (so splits fall inside characters).
    fn line(ty: &str, trace: &str, payload: usize, seed: u64, eol: &str) -> String {
        let mut rng = Rng(seed | 1);
        let mut rows = String::new();
        let mut i = 0u64;
        while rows.len() < payload {
            if !rows.is_empty() {
                rows.push(',');
            }
            let n = rng.next() % 100_000;
            rows.push_str(&format!(
                r#"{{"id":{i},"name":"caf\u00e9 \"Zoë\" ✓ {n}","amount":-{n}.25e-2,"ok":{},"tags":["a\\b","\t",null],"sub":{{"k":[1,2,{{"x":"y"}}]}}}}"#,
                n.is_multiple_of(2)
            ));
            i += 1;
        }
        format!(r#"{{"type":"{ty}","trace_id":"{trace}","rows":[{rows}],"n":{i}}}{eol}"#)
    }

    fn stream(types: &[&str], payload: usize, eol: &str, empties: bool) -> Vec<u8> {
        let sized: Vec<(&str, usize)> = types.iter().map(|t| (*t, payload)).collect();
        stream_sized(&sized, eol, empties)
    }

    fn stream_sized(types: &[(&str, usize)], eol: &str, empties: bool) -> Vec<u8> {
        let mut out = String::new();
        if empties {
            out.push_str(eol);
        }
        for (i, (ty, payload)) in types.iter().enumerate() {
            out.push_str(&line(ty, TRACE, *payload, i as u64 + 7, eol));
            if empties && i % 3 == 1 {
                out.push_str("\n\r\n");
            }
        }
        if empties {
            out.push_str("\r\n\n");
        }
        out.into_bytes()
    }

    fn full_types(data: usize) -> Vec<&'static str> {
        let mut t = vec!["thinking", "technical_view"];
        t.extend(std::iter::repeat_n("data", data));
        t.extend(["business_view", "end"]);
        t
    }

    /// Runs the chunks through a validator: forwarded bytes (including the valid lines ahead
    /// of a violation) and the first violation, from `push` or `finish`.
    fn run_with(
        rules: &Arc<StreamRules>,
        request: Option<&str>,
        chunks: &[&[u8]],
    ) -> (Vec<u8>, Result<(), Violation>) {
        let mut v = Validator::new(rules.clone(), request.map(str::to_owned));
        let mut out = Vec::new();
        for c in chunks {
            match v.push(Bytes::copy_from_slice(c)) {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => {
                    out.extend_from_slice(&v.take_before_violation());
                    assert_eq!(v.push(Bytes::from_static(b"x")), Err(e), "sticky");
                    assert_eq!(v.finish(), Err(e), "sticky finish");
                    return (out, Err(e));
                }
            }
            assert!(v.buffered_len() <= rules.max_line_bytes + 1);
        }
        let end = v.finish();
        (out, end)
    }

    fn run(data: &[u8]) -> (Vec<u8>, Result<(), Violation>) {
        run_with(&Arc::new(rules()), Some(TRACE), &[data])
    }

    fn first_violation(
        rules: StreamRules,
        request: Option<&str>,
        data: &[u8],
    ) -> Option<Violation> {
        run_with(&Arc::new(rules), request, &[data]).1.err()
    }

    /// Splits at every byte into two chunks, and into random multi-chunk splits, and checks
    /// that output and result never change.
    fn assert_split_invariant(
        rules: &Arc<StreamRules>,
        request: Option<&str>,
        data: &[u8],
        random_splits: usize,
    ) -> (Vec<u8>, Result<(), Violation>) {
        let whole = run_with(rules, request, &[data]);
        for cut in 0..=data.len() {
            let (a, b) = data.split_at(cut);
            let split = run_with(rules, request, &[a, b]);
            assert_eq!(split.1, whole.1, "result differs at cut {cut}");
            assert!(split.0 == whole.0, "output differs at cut {cut}");
        }
        let mut rng = Rng(data.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
        for round in 0..random_splits {
            let pieces = 2 + rng.below(12);
            let mut cuts: Vec<usize> = (0..pieces).map(|_| rng.below(data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts {
                chunks.push(&data[prev..c]);
                prev = c;
            }
            chunks.push(&data[prev..]);
            let split = run_with(rules, request, &chunks);
            assert_eq!(split.1, whole.1, "result differs in random round {round}");
            assert!(split.0 == whole.0, "output differs in random round {round}");
        }
        whole
    }

    // ---- framing ----

    #[test]
    fn valid_streams_are_split_invariant() {
        let rules = Arc::new(rules());
        let cases = [
            stream(&full_types(6), 200, "\n", false),
            stream(&full_types(6), 200, "\r\n", true),
            stream(&["thinking", "data", "data", "end"], 200, "\n", true),
            stream_sized(&[("data", 8 * 1024), ("end", 200)], "\n", false),
            stream_sized(
                &[("thinking", 100), ("data", 8 * 1024), ("end", 100)],
                "\r\n",
                true,
            ),
        ];
        for data in &cases {
            let (out, end) = assert_split_invariant(&rules, Some(TRACE), data, 200);
            assert_eq!(end, Ok(()));
            // Output is the input minus the empty lines.
            let text = std::str::from_utf8(data).unwrap_or_default();
            let expected: String = text
                .split_inclusive('\n')
                .filter(|l| !matches!(*l, "\n" | "\r\n"))
                .collect();
            assert!(out == expected.as_bytes());
        }
    }

    #[test]
    fn byte_at_a_time_equals_one_chunk() {
        let rules = Arc::new(rules());
        let data = stream(&full_types(3), 200, "\r\n", true);
        let chunks: Vec<&[u8]> = data.chunks(1).collect();
        let (out, end) = run_with(&rules, Some(TRACE), &chunks);
        assert_eq!(end, Ok(()));
        assert!(out == run(&data).0);
    }

    #[test]
    fn longer_stream_random_splits() {
        let rules = Arc::new(rules());
        let data = stream(&full_types(40), 8 * 1024, "\n", true);
        let whole = run_with(&rules, Some(TRACE), &[&data]);
        assert_eq!(whole.1, Ok(()));
        let mut rng = Rng(42);
        for _ in 0..100 {
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let n = 1 + rng.below(20_000);
                let end = (at + n).min(data.len());
                chunks.push(&data[at..end]);
                at = end;
            }
            assert!(run_with(&rules, Some(TRACE), &chunks) == whole);
        }
    }

    /// Each invalid stream: a valid prefix, then the offending line, then more lines. The
    /// first violation and the forwarded prefix must not depend on the split.
    #[test]
    fn invalid_streams_are_split_invariant() {
        let ok = |ty: &str| line(ty, TRACE, 150, 3, "\n");
        let cases: Vec<(Vec<u8>, Violation)> = vec![
            (
                [
                    ok("thinking").as_bytes(),
                    b"{\"type\":\"data\",\"trace_id\":\"x\xff\"}\n",
                    ok("end").as_bytes(),
                ]
                .concat(),
                Violation::InvalidUtf8,
            ),
            (
                format!("{}{{\"type\":\"data\"\n{}", ok("thinking"), ok("end")).into_bytes(),
                Violation::InvalidJson,
            ),
            (
                format!("{}[1,2]\r\n{}", ok("thinking"), ok("end")).into_bytes(),
                Violation::NotAnObject,
            ),
            (
                format!(
                    "{}{{\"type\":\"data\",\"trace_id\":\"{TRACE}\",\"type\":\"end\"}}\n",
                    ok("thinking")
                )
                .into_bytes(),
                Violation::DuplicateType,
            ),
            (
                format!("{}{}", ok("data"), ok("thinking")).into_bytes(),
                Violation::OutOfOrder,
            ),
            (
                format!("{}{}", ok("thinking"), ok("thinking")).into_bytes(),
                Violation::RepeatedType,
            ),
            (
                format!("{}{}\n", ok("end"), ok("data")).into_bytes(),
                Violation::AfterTerminal,
            ),
            (
                format!("{}junk", ok("end")).into_bytes(),
                Violation::AfterTerminal,
            ),
            (
                format!("{}{}", ok("data"), line("end", "other", 10, 1, "\n")).into_bytes(),
                Violation::TraceIdMismatch,
            ),
            (
                format!("{}{}", ok("data"), ok("data").trim_end()).into_bytes(),
                Violation::PartialLineAtEof,
            ),
            (
                format!("{}{}", ok("thinking"), ok("data")).into_bytes(),
                Violation::MissingRequired,
            ),
            (
                format!(
                    "{}{}{}",
                    ok("data"),
                    line("data", TRACE, 5000, 9, "\n"),
                    ok("end")
                )
                .into_bytes(),
                Violation::LineTooLong,
            ),
            (
                format!("{}{}", ok("data"), line("data", TRACE, 5000, 9, "")).into_bytes(),
                Violation::LineTooLong,
            ),
        ];
        let small = Arc::new(StreamRules {
            max_line_bytes: 4096,
            ..rules()
        });
        for (data, want) in &cases {
            let (_, got) = assert_split_invariant(&small, Some(TRACE), data, 50);
            assert_eq!(got, Err(*want), "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn valid_lines_ahead_of_a_violation_are_forwarded() {
        let first = line("thinking", TRACE, 50, 1, "\n");
        let data = format!("{first}{{oops}}\n");
        let rules = Arc::new(rules());
        let mut v = Validator::new(rules, Some(TRACE.to_owned()));
        assert_eq!(v.push(Bytes::from(data)), Err(Violation::InvalidJson));
        assert!(v.take_before_violation() == first.as_bytes());
        assert!(v.take_before_violation().is_empty());
        assert_eq!(v.violation(), Some(Violation::InvalidJson));
    }

    #[test]
    fn complete_lines_are_zero_copy_slices() {
        let rules = Arc::new(rules());
        let mut v = Validator::new(rules, Some(TRACE.to_owned()));
        let chunk = Bytes::from(stream(&["thinking", "data", "data"], 200, "\n", false));
        let out = v.push(chunk.clone()).unwrap_or_default();
        assert_eq!(out.len(), chunk.len());
        assert_eq!(
            out.as_ptr(),
            chunk.as_ptr(),
            "returned a slice of the chunk"
        );
    }

    #[test]
    fn empty_lines_are_dropped_even_after_end() {
        let data = format!("\n\r\n{}\r\n\n\r", line("end", TRACE, 10, 1, "\r\n"));
        let (out, end) = run(data.as_bytes());
        assert_eq!(end, Ok(()));
        assert!(out == line("end", TRACE, 10, 1, "\r\n").as_bytes());
    }

    // ---- memory ----

    #[test]
    fn memory_stays_bounded_for_a_huge_line() {
        const MIB: usize = 1024 * 1024;
        let rules = Arc::new(StreamRules {
            max_line_bytes: MIB,
            ..rules()
        });
        // Fed in 64 KiB frames: fails before buffering more than the limit.
        let mut v = Validator::new(rules.clone(), Some(TRACE.to_owned()));
        let frame = Bytes::from(vec![b'a'; 64 * 1024]);
        let mut fed = 0usize;
        let mut result = Ok(Bytes::new());
        while fed < 10 * MIB {
            result = v.push(frame.clone());
            fed += frame.len();
            assert!(v.buffered_len() <= MIB + 1);
            assert!(
                v.partial.capacity() <= MIB + 1,
                "capacity {}",
                v.partial.capacity()
            );
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Violation::LineTooLong));
        assert!(fed <= MIB + 64 * 1024, "fed {fed}");
        // One 10 MiB chunk: refused without copying any of it.
        let mut v = Validator::new(rules.clone(), None);
        assert_eq!(
            v.push(Bytes::from(vec![b'a'; 10 * MIB])),
            Err(Violation::LineTooLong)
        );
        assert_eq!(v.buffered_len(), 0);
        // A valid line ahead of the huge one is still forwarded.
        let mut v = Validator::new(rules, None);
        let head = line("data", TRACE, 10, 1, "\n");
        let mut chunk = head.clone().into_bytes();
        chunk.extend(std::iter::repeat_n(b'a', 2 * MIB));
        assert_eq!(v.push(Bytes::from(chunk)), Err(Violation::LineTooLong));
        assert!(v.take_before_violation() == head.as_bytes());
    }

    #[test]
    fn line_length_limit_excludes_the_terminator() {
        let body = line("end", TRACE, 100, 1, "");
        let exact = StreamRules {
            max_line_bytes: body.len(),
            ..rules()
        };
        for eol in ["\n", "\r\n"] {
            let data = format!("{body}{eol}");
            assert_eq!(
                run_with(&Arc::new(exact.clone()), Some(TRACE), &[data.as_bytes()]).1,
                Ok(())
            );
            let short = StreamRules {
                max_line_bytes: body.len() - 1,
                ..exact.clone()
            };
            let (_, got) =
                assert_split_invariant(&Arc::new(short), Some(TRACE), data.as_bytes(), 0);
            assert_eq!(got, Err(Violation::LineTooLong));
            assert_eq!(
                first_violation(
                    StreamRules {
                        max_line_bytes: body.len() - 1,
                        ..rules()
                    },
                    Some(TRACE),
                    data.as_bytes()
                ),
                Some(Violation::LineTooLong)
            );
        }
        // A line that is one byte over only because of a stray '\r' mid-stream.
        let data = format!("{body}\r\r\n");
        assert_eq!(
            first_violation(exact, Some(TRACE), data.as_bytes()),
            Some(Violation::LineTooLong)
        );
    }

    // ---- one test per violation ----

    fn lines(ls: &[String]) -> Vec<u8> {
        ls.concat().into_bytes()
    }

    fn l(ty: &str) -> String {
        line(ty, TRACE, 20, 5, "\n")
    }

    fn raw(json: &str) -> String {
        format!("{json}\n")
    }

    fn check(ls: &[String]) -> Option<Violation> {
        first_violation(rules(), Some(TRACE), &lines(ls))
    }

    #[test]
    fn invalid_utf8() {
        let mut data = l("thinking").into_bytes();
        data.extend_from_slice(b"{\"type\":\"data\",\"trace_id\":\"a\xc3\x28\"}\n");
        assert_eq!(
            first_violation(rules(), Some(TRACE), &data),
            Some(Violation::InvalidUtf8)
        );
        // Overlong encoding / surrogate half in raw bytes.
        let data = b"{\"type\":\"end\",\"trace_id\":\"\xed\xa0\x80\"}\n";
        assert_eq!(
            first_violation(rules(), None, data),
            Some(Violation::InvalidUtf8)
        );
    }

    #[test]
    fn invalid_json() {
        let t = TRACE;
        for bad in [
            "{",
            "{\"type\":\"end\",\"trace_id\":\"T\"",
            "{\"type\":\"end\",\"trace_id\":\"T\"} x",
            "{\"type\":\"end\",\"trace_id\":\"T\"}{}",
            "{\"type\":\"end\",\"trace_id\":\"T\",}",
            "{'type':'end'}",
            "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":[1,2,}",
            "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":01}",
            "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":\"\\q\"}",
            "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":\"a\tb\"}",
            "{\"type\":\"end\",\"trace_id\":\"T\",\"x\":NaN}",
            "   ",
            "\u{feff}{\"type\":\"end\",\"trace_id\":\"T\"}",
        ] {
            let bad = bad.replace('T', t);
            assert_eq!(check(&[raw(&bad)]), Some(Violation::InvalidJson), "{bad}");
        }
        // Deep nesting is refused, not a stack overflow.
        let deep = format!(
            "{{\"type\":\"end\",\"trace_id\":\"{t}\",\"x\":{}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            first_violation(
                StreamRules {
                    max_line_bytes: 1 << 20,
                    ..rules()
                },
                Some(t),
                raw(&deep).as_bytes()
            ),
            None,
            "ignored values are skipped iteratively"
        );
        let deep = format!(
            "{{\"type\":{}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            first_violation(
                StreamRules {
                    max_line_bytes: 1 << 20,
                    ..rules()
                },
                Some(t),
                raw(&deep).as_bytes()
            ),
            Some(Violation::TypeNotString)
        );
    }

    #[test]
    fn not_an_object() {
        for bad in ["[1,2]", "\"end\"", "42", "null", "true", "[]", "-1.5e3"] {
            assert_eq!(check(&[raw(bad)]), Some(Violation::NotAnObject), "{bad}");
        }
        assert_eq!(check(&[raw("[1,")]), Some(Violation::InvalidJson));
    }

    #[test]
    fn missing_type() {
        assert_eq!(
            check(&[raw(&format!("{{\"trace_id\":\"{TRACE}\"}}"))]),
            Some(Violation::MissingType)
        );
        assert_eq!(check(&[raw("{}")]), Some(Violation::MissingType));
        // Nested `type` does not count.
        assert_eq!(
            check(&[raw(&format!(
                "{{\"x\":{{\"type\":\"end\"}},\"trace_id\":\"{TRACE}\"}}"
            ))]),
            Some(Violation::MissingType)
        );
    }

    #[test]
    fn duplicate_type() {
        let dup = format!("{{\"type\":\"data\",\"trace_id\":\"{TRACE}\",\"type\":\"data\"}}");
        assert_eq!(check(&[raw(&dup)]), Some(Violation::DuplicateType));
        // An escaped spelling of the same key is the same key.
        let dup = format!("{{\"type\":\"data\",\"trace_id\":\"{TRACE}\",\"typ\\u0065\":\"end\"}}");
        assert_eq!(check(&[raw(&dup)]), Some(Violation::DuplicateType));
        // Even when the second one is not a string.
        let dup = format!("{{\"type\":\"data\",\"type\":null,\"trace_id\":\"{TRACE}\"}}");
        assert_eq!(check(&[raw(&dup)]), Some(Violation::DuplicateType));
    }

    #[test]
    fn type_not_string() {
        for v in ["5", "null", "{\"a\":\"end\"}", "[\"end\"]", "true"] {
            let bad = format!("{{\"type\":{v},\"trace_id\":\"{TRACE}\"}}");
            assert_eq!(check(&[raw(&bad)]), Some(Violation::TypeNotString), "{bad}");
        }
    }

    #[test]
    fn missing_trace_id() {
        assert_eq!(
            check(&[raw("{\"type\":\"end\"}")]),
            Some(Violation::MissingTraceId)
        );
        // Also on an upstream error line.
        assert_eq!(
            check(&[raw("{\"type\":\"error\"}")]),
            Some(Violation::MissingTraceId)
        );
    }

    #[test]
    fn duplicate_trace_id() {
        let dup = format!("{{\"type\":\"end\",\"trace_id\":\"{TRACE}\",\"trace_id\":\"{TRACE}\"}}");
        assert_eq!(check(&[raw(&dup)]), Some(Violation::DuplicateTraceId));
    }

    #[test]
    fn trace_id_not_string() {
        assert_eq!(
            check(&[raw("{\"type\":\"end\",\"trace_id\":7}")]),
            Some(Violation::TraceIdNotString)
        );
    }

    #[test]
    fn unknown_type() {
        assert_eq!(
            check(&[l("thinking"), l("debug")]),
            Some(Violation::UnknownType)
        );
        assert_eq!(
            check(&[l("Data")]),
            Some(Violation::UnknownType),
            "case-sensitive"
        );
    }

    #[test]
    fn out_of_order() {
        assert_eq!(
            check(&[l("data"), l("technical_view")]),
            Some(Violation::OutOfOrder)
        );
        assert_eq!(
            check(&[l("thinking"), l("business_view"), l("data")]),
            Some(Violation::OutOfOrder)
        );
        // Skipping ahead is fine.
        assert_eq!(check(&[l("thinking"), l("end")]), None);
    }

    #[test]
    fn repeated_type() {
        assert_eq!(
            check(&[l("thinking"), l("thinking")]),
            Some(Violation::RepeatedType)
        );
        assert_eq!(check(&[l("data"), l("data"), l("data"), l("end")]), None);
        assert_eq!(
            check(&[l("data"), l("business_view"), l("data")]),
            Some(Violation::OutOfOrder)
        );
    }

    #[test]
    fn trace_id_changed() {
        let other = line("end", "other-trace", 10, 1, "\n");
        // Not bound to the request: the first line's trace id is the stream's.
        let free = StreamRules {
            trace_must_match_request: false,
            ..rules()
        };
        let data = lines(&[l("data"), other.clone()]);
        assert_eq!(
            first_violation(free.clone(), Some("request-trace"), &data),
            Some(Violation::TraceIdChanged)
        );
        assert_eq!(
            first_violation(rules(), None, &data),
            Some(Violation::TraceIdChanged)
        );
        let mut v = Validator::new(Arc::new(free), Some("request-trace".to_owned()));
        assert!(v.push(Bytes::from(l("data"))).is_ok());
        assert_eq!(
            v.trace_id(),
            Some("request-trace"),
            "the request's trace id wins"
        );
        let mut v = Validator::new(Arc::new(rules()), None);
        assert_eq!(v.trace_id(), None);
        assert!(v.push(Bytes::from(l("data"))).is_ok());
        assert_eq!(v.trace_id(), Some(TRACE));
    }

    #[test]
    fn trace_id_mismatch() {
        let data = lines(&[l("thinking"), l("end")]);
        assert_eq!(
            first_violation(rules(), Some("request-trace"), &data),
            Some(Violation::TraceIdMismatch)
        );
        // A later line that differs from the (matching) first is a mismatch too.
        let data = lines(&[l("data"), line("end", "zzz", 10, 1, "\n")]);
        assert_eq!(
            first_violation(rules(), Some(TRACE), &data),
            Some(Violation::TraceIdMismatch)
        );
    }

    #[test]
    fn after_terminal() {
        assert_eq!(check(&[l("end"), l("end")]), Some(Violation::AfterTerminal));
        assert_eq!(
            check(&[l("end"), raw("garbage")]),
            Some(Violation::AfterTerminal)
        );
        assert_eq!(
            check(&[l("error"), l("data")]),
            Some(Violation::AfterTerminal)
        );
        assert_eq!(
            check(&[l("end"), l("error")]),
            Some(Violation::AfterTerminal)
        );
        // Reported as soon as the next line starts, not at its newline.
        let mut v = Validator::new(Arc::new(rules()), Some(TRACE.to_owned()));
        assert!(v.push(Bytes::from(l("end"))).is_ok());
        assert!(v.push(Bytes::from_static(b"\r")).is_ok());
        assert_eq!(
            v.push(Bytes::from_static(b"{")),
            Err(Violation::AfterTerminal)
        );
        // Pushing after a successful finish.
        let mut v = Validator::new(Arc::new(rules()), Some(TRACE.to_owned()));
        assert!(v.push(Bytes::from(l("end"))).is_ok());
        assert_eq!(v.finish(), Ok(()));
        assert_eq!(v.finish(), Ok(()));
        assert_eq!(v.push(Bytes::from(l("end"))), Err(Violation::AfterTerminal));
    }

    #[test]
    fn line_too_long() {
        let r = StreamRules {
            max_line_bytes: 100,
            ..rules()
        };
        assert_eq!(
            first_violation(
                r.clone(),
                Some(TRACE),
                line("end", TRACE, 200, 1, "\n").as_bytes()
            ),
            Some(Violation::LineTooLong)
        );
        // Without a newline, as soon as the partial is over the limit.
        let mut v = Validator::new(Arc::new(r), Some(TRACE.to_owned()));
        assert!(v.push(Bytes::from(vec![b' '; 100])).is_ok());
        assert!(
            v.push(Bytes::from_static(b"\r")).is_ok(),
            "could still be a CRLF"
        );
        assert_eq!(
            v.push(Bytes::from_static(b"x")),
            Err(Violation::LineTooLong)
        );
    }

    #[test]
    fn partial_line_at_eof() {
        let data = format!("{}{}", l("data"), l("end").trim_end());
        assert_eq!(check(&[data]), Some(Violation::PartialLineAtEof));
        // A lone trailing '\r' is an empty line, not a partial one.
        assert_eq!(check(&[l("end"), "\r".to_owned()]), None);
    }

    #[test]
    fn missing_required() {
        assert_eq!(
            check(&[l("thinking"), l("data")]),
            Some(Violation::MissingRequired)
        );
        assert_eq!(
            check(&[]),
            Some(Violation::MissingRequired),
            "an empty body is truncated"
        );
        let none = StreamRules {
            required: Vec::new(),
            ..rules()
        };
        assert_eq!(
            first_violation(none, Some(TRACE), &lines(&[l("data")])),
            None
        );
        let two = StreamRules {
            required: vec!["data".to_owned(), "end".to_owned()],
            ..rules()
        };
        assert_eq!(
            first_violation(two, Some(TRACE), &lines(&[l("thinking"), l("end")])),
            Some(Violation::MissingRequired)
        );
    }

    #[test]
    fn upstream_error_line_is_a_clean_terminal_end() {
        let mut v = Validator::new(Arc::new(rules()), Some(TRACE.to_owned()));
        let err = raw(&format!(
            "{{\"type\":\"error\",\"trace_id\":\"{TRACE}\",\"error\":\"boom\"}}"
        ));
        let data = lines(&[l("thinking"), l("data"), err]);
        assert!(v.push(Bytes::from(data.clone())).unwrap_or_default() == data);
        assert!(v.ended_with_upstream_error());
        assert!(v.terminated());
        assert_eq!(v.finish(), Ok(()));
        // `error` as the very first line is fine too.
        assert_eq!(check(&[l("error")]), None);
        // UpstreamError is the caller's reason for a broken upstream.
        assert_eq!(Violation::UpstreamError.code(), "upstream_error");
    }

    #[test]
    fn sql_not_allowed() {
        let tv = |sql: serde_json::Value| {
            let head = serde_json::json!({"type": "technical_view", "trace_id": TRACE, "sql": sql});
            raw(&head.to_string())
        };
        let run_g = |ls: &[String]| first_violation(guarded_rules(), Some(TRACE), &lines(ls));
        assert_eq!(
            run_g(&[
                tv("SELECT o.id FROM orders o JOIN customers c ON c.id = o.cid".into()),
                l("end")
            ]),
            None
        );
        for bad in [
            serde_json::json!("DELETE FROM orders"),
            serde_json::json!("SELECT * FROM secrets"),
            serde_json::json!("SELECT 1; SELECT 2"),
            serde_json::json!("SELEKT"),
            serde_json::json!(42),
            serde_json::json!(null),
        ] {
            assert_eq!(
                run_g(&[tv(bad.clone()), l("end")]),
                Some(Violation::SqlNotAllowed),
                "{bad}"
            );
        }
        let no_field = raw(&format!(
            "{{\"type\":\"technical_view\",\"trace_id\":\"{TRACE}\"}}"
        ));
        assert_eq!(run_g(&[no_field, l("end")]), Some(Violation::SqlNotAllowed));
        let twice = raw(&format!(
            "{{\"type\":\"technical_view\",\"trace_id\":\"{TRACE}\",\"sql\":\"SELECT 1\",\"sql\":\"DROP TABLE orders\"}}"
        ));
        assert_eq!(run_g(&[twice, l("end")]), Some(Violation::SqlNotAllowed));
        // Escaped SQL text is unescaped before parsing.
        let escaped = raw(&format!(
            "{{\"type\":\"technical_view\",\"trace_id\":\"{TRACE}\",\"sql\":\"SELECT \\\"id\\\"\\nFROM orders\"}}"
        ));
        assert_eq!(run_g(&[escaped, l("end")]), None);
        // Other types' SQL is not looked at; without the guard nothing is.
        assert_eq!(
            run_g(&[
                raw(&format!(
                    "{{\"type\":\"data\",\"trace_id\":\"{TRACE}\",\"sql\":\"DROP TABLE x\"}}"
                )),
                l("end")
            ]),
            None
        );
        assert_eq!(check(&[tv("DROP TABLE orders".into()), l("end")]), None);
        // The detail is kept for the audit record.
        let mut v = Validator::new(Arc::new(guarded_rules()), Some(TRACE.to_owned()));
        assert_eq!(
            v.push(Bytes::from(tv("SELECT * FROM secrets".into()))),
            Err(Violation::SqlNotAllowed)
        );
        assert_eq!(
            v.sql_rejection(),
            Some(&SqlRejection::TableNotAllowed("secrets".to_owned()))
        );
    }

    // ---- the rest of the API ----

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
        // The error line passes the validator itself (as a terminal line).
        assert_eq!(
            first_violation(rules(), Some("t"), &error_line("t", Violation::InvalidJson)),
            None
        );
    }

    #[test]
    fn debug_does_not_print_stream_bytes() {
        let mut v = Validator::new(Arc::new(rules()), Some(TRACE.to_owned()));
        assert!(
            v.push(Bytes::from_static(b"{\"type\":\"secret-payload"))
                .is_ok()
        );
        let text = format!("{v:?}");
        assert!(!text.contains("secret-payload"), "{text}");
        assert!(text.contains("buffered: 23"), "{text}");
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
        assert_eq!(codes.last(), Some(&"sql_not_allowed"));
    }

    #[test]
    fn default_rules_are_sound_and_bad_ones_are_reported() {
        assert!(StreamRules::default().problems().is_empty());
        assert!(guarded_rules().problems().is_empty());
        let bad = StreamRules {
            order: vec!["a".to_owned(), "a".to_owned(), "error".to_owned()],
            required: vec!["end".to_owned()],
            trace_field: "type".to_owned(),
            max_line_bytes: 0,
            ..StreamRules::default()
        };
        assert_eq!(bad.problems().len(), 7, "{:?}", bad.problems());
    }

    #[test]
    fn custom_field_names() {
        let r = StreamRules {
            type_field: "kind".to_owned(),
            trace_field: "tid".to_owned(),
            ..rules()
        };
        let ok =
            "{\"kind\":\"data\",\"tid\":\"t1\",\"type\":5}\n{\"tid\":\"t1\",\"kind\":\"end\"}\n";
        assert_eq!(first_violation(r.clone(), None, ok.as_bytes()), None);
        assert_eq!(
            first_violation(r, None, b"{\"type\":\"end\",\"tid\":\"t1\"}\n"),
            Some(Violation::MissingType)
        );
    }
}
