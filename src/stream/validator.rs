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
//! // at upstream EOF: validator.finish(): Ok(last line, if it had no newline) to send,
//! // and on Err the same error line.
//! ```
//!
//! This file owns the [`Validator`] and its checks. The rules it enforces live in
//! `policy/stream.rs`, the violation codes and the error line in `violation.rs`, the JSON parsing
//! of a line's head in `line.rs`; their public items are re-exported here.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::line::{Field, Names, parse_head, required_str};
use super::sql_guard::{SQL_LINE_TYPE, SqlRejection};

pub use super::violation::{VIOLATION_ERROR, Violation, error_line};
pub use crate::policy::stream::{ERROR_TYPE, StreamRules};

/// A partial-line buffer that grew past this capacity is released once its line is done,
/// so one long line does not pin up to `max_line_bytes` for the rest of the stream.
const KEEP_BUFFER_CAPACITY: usize = 64 * 1024;

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

    /// End of stream. A last line without a trailing newline is a complete line: it is
    /// checked like any other and returned (as received, without a newline) to forward.
    /// `Ok` if the stream ended cleanly: every `required` type seen — unless an upstream
    /// `error` line ended the stream, which is a clean, terminal end by itself. Otherwise the
    /// last line's violation or [`Violation::MissingRequired`] (or the earlier violation).
    pub fn finish(&mut self) -> Result<Bytes, Violation> {
        self.before_violation = Bytes::new();
        if let Some(v) = self.failed {
            return Err(v);
        }
        if self.finished {
            return Ok(Bytes::new());
        }
        let last = std::mem::take(&mut self.partial);
        let tail = match self.check_line(&last) {
            Ok(true) => Bytes::from(last),
            Ok(false) => Bytes::new(),
            Err(v) => {
                self.failed = Some(v);
                return Err(v);
            }
        };
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
        Ok(tail)
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
        // Valid JSON may still carry `\u` escapes that are no Unicode text (a lone
        // surrogate): parsers disagree on them (RFC 8259 §8.2), so they are refused.
        if !escapes_are_unicode(content) {
            return Err(Violation::InvalidEscape);
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
mod tests;

/// Whether every `\uXXXX` escape in `line` (a line that parsed as JSON, so every `\` starts
/// an escape inside a string) forms Unicode text: high surrogates followed by a low one, no
/// lone low surrogate.
fn escapes_are_unicode(line: &[u8]) -> bool {
    let hex = |at: usize| -> Option<u32> {
        let digits = line.get(at..at.checked_add(4)?)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut i = 0;
    while let Some(off) = line.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let at = i + off;
        match line.get(at + 1) {
            Some(b'u') => {
                let Some(unit) = hex(at + 2) else {
                    return false;
                };
                match unit {
                    0xD800..=0xDBFF => {
                        let low = (line.get(at + 6) == Some(&b'\\')
                            && line.get(at + 7) == Some(&b'u'))
                        .then(|| hex(at + 8))
                        .flatten();
                        if !matches!(low, Some(0xDC00..=0xDFFF)) {
                            return false;
                        }
                        i = at + 12;
                    }
                    0xDC00..=0xDFFF => return false,
                    _ => i = at + 6,
                }
            }
            // Any other escape is two bytes (`\\` included, so its second `\` is skipped).
            Some(_) => i = at + 2,
            None => return true,
        }
    }
    true
}
