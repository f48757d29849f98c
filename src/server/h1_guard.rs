//! The HTTP/1 raw-byte guard: every byte a client sends on an HTTP/1.x connection passes
//! through [`GuardedIo`] before hyper's parser sees it.
//!
//! hyper's parser is lenient in ways an app server or another proxy may read differently
//! (request smuggling / desync): it drops `Content-Length` beside `Transfer-Encoding`, accepts
//! bare-LF line endings, whitespace and leading zeros in chunk sizes. The guard parses the raw
//! bytes strictly (RFC 9112 §2.2, §3, §5, §6, §7.1), follows each message's body to the next
//! request head (keep-alive, pipelining), and refuses anything ambiguous:
//!
//! - **A bad request head** (or one over `server.max_header_bytes` / `server.max_headers`):
//!   the bytes of every earlier request are handed to hyper unchanged, the bad head is
//!   replaced by a fixed, harmless request ([`SYNTHETIC`]) and the violation is recorded on the
//!   connection ([`H1Verdict`]) for that request's sequence number; the pipeline refuses that
//!   request first thing (400 or 431, fortress's JSON, `Connection: close`), so the refusal is
//!   logged and counted like any other and the upstream never sees it. Nothing after the bad
//!   head is ever read.
//! - **A bad body** (chunk syntax, chunk data not ending in CRLF, trailers): the bytes before
//!   the violation are handed over, then reads fail; hyper reports a body error, which the
//!   forwarder turns into 400 `malformed_body` (as for the breakages hyper finds itself).
//! - **Protocol switches**: after a request carrying `Upgrade` (or a `CONNECT`), the guard
//!   reads nothing more until fortress's answer starts (it sees the written bytes): a `101`
//!   (or a 2xx to `CONNECT`) means the bytes are no longer HTTP, and the guard passes them
//!   through uninspected; any other status means hyper goes on reading HTTP requests, and so
//!   does the guard, from the end of that request.
//!
//! One pass over each byte; heads that arrive whole in one read are checked in hyper's own
//! buffer (no copy, no allocation); only a head split across reads is held in a
//! per-connection buffer until it is complete.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::pipeline::conn::ConnInfo;
pub use crate::pipeline::h1_verdict::{H1Verdict, Violation};

/// Limits of one connection's request heads, fixed when the connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes in a request head (request line, fields, the final CRLF), and in a chunked
    /// body's trailer section.
    pub max_head_bytes: usize,
    /// Most field lines in a request head (and in a trailer section).
    pub max_headers: usize,
}

/// Longest chunk-size line (size and extensions) the guard accepts.
pub const MAX_CHUNK_LINE: usize = 4096;

/// The request hyper sees in place of a refused head. Never forwarded: the pipeline refuses
/// it by its sequence number before any check runs.
pub const SYNTHETIC: &[u8] =
    b"GET / HTTP/1.1\r\nhost: fortress.invalid\r\ncontent-length: 0\r\n\r\n";

/// How the current message's body is framed, once its head is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed, accepted head: its framing and whether it may switch protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    framing: Framing,
    /// `Upgrade` present, or `CONNECT`.
    switch: Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    No,
    Upgrade,
    Connect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At the first byte of a chunk-size line.
    SizeStart,
    /// Reading hex digits.
    Size {
        digits: u8,
        value: u64,
        zero: bool,
    },
    /// In an extension name (`any`: at least one byte read).
    ExtName {
        any: bool,
    },
    /// After `=`.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    /// After a closing quote.
    ExtAfterQuoted,
    /// CR seen at the end of the size line.
    SizeLf {
        last: bool,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerName {
        any: bool,
    },
    TrailerValue,
    TrailerLf,
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the end of a request head. Offsets are relative to the head's first byte.
    Head {
        scanned: usize,
        line_start: usize,
        started: bool,
    },
    Length {
        remaining: u64,
    },
    Chunked {
        chunk: Chunk,
        /// Bytes in the current chunk-size line, or in the trailer section.
        line: usize,
        trailers: usize,
    },
    /// The message asked to switch protocols: wait for the response's status.
    AwaitResponse {
        connect: bool,
    },
    /// Not HTTP any more (after a 101): nothing is inspected.
    Passthrough,
    /// A violation was found; nothing more is read.
    Failed,
}

const fn fresh_head() -> State {
    State::Head {
        scanned: 0,
        line_start: 0,
        started: false,
    }
}

/// The outcome of [`Guard::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Bytes from the front of the input that may be handed to hyper.
    pub released: usize,
    /// The violation found, if any (nothing after `released` may be handed over).
    pub violation: Option<Violation>,
    /// Whether the violation is inside a body (its head was already released).
    pub in_body: bool,
}

/// The sans-IO guard: a state machine over the client's bytes.
#[derive(Debug, Clone)]
pub struct Guard {
    limits: Limits,
    state: State,
    switch: Switch,
    heads: u64,
    /// The size of the chunk whose size line is being read.
    pending_size: u64,
}

impl Guard {
    /// A guard at the start of a connection.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: fresh_head(),
            switch: Switch::No,
            heads: 0,
            pending_size: 0,
        }
    }

    /// Heads accepted so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Whether the guard waits for the response to an upgrade request.
    pub fn awaiting_response(&self) -> bool {
        matches!(self.state, State::AwaitResponse { .. })
    }

    /// Whether the guard no longer inspects (after a protocol switch).
    pub fn passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// The status of the response to an upgrade request: a switch passes everything through
    /// from now on, anything else resumes at the next request head.
    pub fn response_status(&mut self, status: u16) {
        if let State::AwaitResponse { connect } = self.state {
            let switched = status == 101 || (connect && (200..300).contains(&status));
            self.state = if switched {
                State::Passthrough
            } else {
                fresh_head()
            };
        }
    }

    /// Consumes `data`: the bytes not yet handed over, starting where the previous call
    /// stopped releasing (the start of a partial head, or the bytes held during an upgrade).
    pub fn scan(&mut self, data: &[u8]) -> Scan {
        let mut pos = 0;
        loop {
            match self.state {
                State::Passthrough => {
                    return Scan {
                        released: data.len(),
                        violation: None,
                        in_body: false,
                    };
                }
                State::Failed | State::AwaitResponse { .. } => {
                    return Scan {
                        released: pos,
                        violation: None,
                        in_body: false,
                    };
                }
                State::Head {
                    scanned,
                    line_start,
                    started,
                } => {
                    let rest = &data[pos..];
                    match find_head_end(rest, scanned, line_start, started, self.limits) {
                        HeadEnd::Incomplete {
                            scanned,
                            line_start,
                            started,
                        } => {
                            self.state = State::Head {
                                scanned,
                                line_start,
                                started,
                            };
                            return Scan {
                                released: pos,
                                violation: None,
                                in_body: false,
                            };
                        }
                        HeadEnd::Bad(v) => return self.fail(pos, v, false),
                        HeadEnd::Complete { start, end } => {
                            match parse_head(&rest[start..end], self.limits) {
                                Ok(head) => {
                                    self.heads += 1;
                                    self.switch = head.switch;
                                    pos += end;
                                    self.state = match head.framing {
                                        Framing::None => self.message_done(),
                                        Framing::Length(0) => self.message_done(),
                                        Framing::Length(n) => State::Length { remaining: n },
                                        Framing::Chunked => State::Chunked {
                                            chunk: Chunk::SizeStart,
                                            line: 0,
                                            trailers: 0,
                                        },
                                    };
                                }
                                Err(v) => return self.fail(pos, v, false),
                            }
                        }
                    }
                }
                State::Length { remaining } => {
                    let avail = (data.len() - pos) as u64;
                    if avail < remaining {
                        self.state = State::Length {
                            remaining: remaining - avail,
                        };
                        return Scan {
                            released: data.len(),
                            violation: None,
                            in_body: false,
                        };
                    }
                    // `remaining <= avail`, so it fits in usize.
                    pos += remaining as usize;
                    self.state = self.message_done();
                }
                State::Chunked {
                    chunk,
                    line,
                    trailers,
                } => match self.chunked(data, pos, chunk, line, trailers) {
                    Ok(Some(next)) => {
                        pos = next;
                        self.state = self.message_done();
                    }
                    Ok(None) => {
                        return Scan {
                            released: data.len(),
                            violation: None,
                            in_body: false,
                        };
                    }
                    Err((at, v)) => return self.fail(at, v, true),
                },
            }
        }
    }

    fn fail(&mut self, at: usize, v: Violation, in_body: bool) -> Scan {
        self.state = State::Failed;
        Scan {
            released: at,
            violation: Some(v),
            in_body,
        }
    }

    fn message_done(&self) -> State {
        match self.switch {
            Switch::No => fresh_head(),
            Switch::Upgrade => State::AwaitResponse { connect: false },
            Switch::Connect => State::AwaitResponse { connect: true },
        }
    }

    /// Follows a chunked body from `data[pos..]`. `Ok(Some(end))`: the message ended at
    /// `end`; `Ok(None)`: all of `data` consumed, state saved; `Err`: violation at an offset.
    fn chunked(
        &mut self,
        data: &[u8],
        mut pos: usize,
        mut chunk: Chunk,
        mut line: usize,
        mut trailers: usize,
    ) -> Result<Option<usize>, (usize, Violation)> {
        while pos < data.len() {
            if let Chunk::Data { remaining } = chunk {
                let avail = (data.len() - pos) as u64;
                if avail < remaining {
                    chunk = Chunk::Data {
                        remaining: remaining - avail,
                    };
                    break;
                }
                pos += remaining as usize;
                chunk = Chunk::DataCr;
                continue;
            }
            let b = data[pos];
            let bad = |v| Err((pos, v));
            chunk = match chunk {
                Chunk::SizeStart | Chunk::Size { .. } => {
                    line += 1;
                    let (digits, value, zero) = match chunk {
                        Chunk::Size {
                            digits,
                            value,
                            zero,
                        } => (digits, value, zero),
                        _ => (0, 0, false),
                    };
                    match hex(b) {
                        Some(d) => {
                            // No leading zeros (`0` alone is the last chunk), at most 16
                            // digits: every parser reads the same number.
                            if zero || digits >= 16 {
                                return bad(Violation::ChunkSize);
                            }
                            Chunk::Size {
                                digits: digits + 1,
                                value: (value << 4) | u64::from(d),
                                zero: digits == 0 && d == 0,
                            }
                        }
                        None if digits == 0 => return bad(Violation::ChunkSize),
                        None => match b {
                            b';' => {
                                // Remember the size while reading extensions.
                                self.pending_size = value;
                                Chunk::ExtName { any: false }
                            }
                            b'\r' => {
                                self.pending_size = value;
                                Chunk::SizeLf { last: value == 0 }
                            }
                            _ => return bad(Violation::ChunkSize),
                        },
                    }
                }
                Chunk::ExtName { any } => {
                    line += 1;
                    match b {
                        _ if is_tchar(b) => Chunk::ExtName { any: true },
                        b'=' if any => Chunk::ExtValueStart,
                        b';' if any => Chunk::ExtName { any: false },
                        b'\r' if any => Chunk::SizeLf {
                            last: self.pending_size == 0,
                        },
                        _ => return bad(Violation::ChunkExtension),
                    }
                }
                Chunk::ExtValueStart => {
                    line += 1;
                    match b {
                        b'"' => Chunk::ExtQuoted,
                        _ if is_tchar(b) => Chunk::ExtToken,
                        _ => return bad(Violation::ChunkExtension),
                    }
                }
                Chunk::ExtToken => {
                    line += 1;
                    match b {
                        _ if is_tchar(b) => Chunk::ExtToken,
                        b';' => Chunk::ExtName { any: false },
                        b'\r' => Chunk::SizeLf {
                            last: self.pending_size == 0,
                        },
                        _ => return bad(Violation::ChunkExtension),
                    }
                }
                Chunk::ExtQuoted => {
                    line += 1;
                    match b {
                        b'"' => Chunk::ExtAfterQuoted,
                        b'\\' => Chunk::ExtQuotedEscape,
                        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => Chunk::ExtQuoted,
                        _ => return bad(Violation::ChunkExtension),
                    }
                }
                Chunk::ExtQuotedEscape => {
                    line += 1;
                    match b {
                        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => Chunk::ExtQuoted,
                        _ => return bad(Violation::ChunkExtension),
                    }
                }
                Chunk::ExtAfterQuoted => {
                    line += 1;
                    match b {
                        b';' => Chunk::ExtName { any: false },
                        b'\r' => Chunk::SizeLf {
                            last: self.pending_size == 0,
                        },
                        _ => return bad(Violation::ChunkExtension),
                    }
                }
                Chunk::SizeLf { last } => {
                    if b != b'\n' {
                        return bad(Violation::LoneCr);
                    }
                    line = 0;
                    if last {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data {
                            remaining: self.pending_size,
                        }
                    }
                }
                Chunk::Data { .. } => unreachable_data(),
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    _ => return bad(Violation::ChunkDataEnd),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::SizeStart,
                    _ => return bad(Violation::ChunkDataEnd),
                },
                Chunk::TrailerStart => {
                    line += 1;
                    match b {
                        b'\r' => Chunk::EndLf,
                        _ if is_tchar(b) => {
                            trailers += 1;
                            if trailers > self.limits.max_headers {
                                return bad(Violation::Trailer);
                            }
                            Chunk::TrailerName { any: true }
                        }
                        _ => return bad(Violation::Trailer),
                    }
                }
                Chunk::TrailerName { any } => {
                    line += 1;
                    match b {
                        _ if is_tchar(b) => Chunk::TrailerName { any: true },
                        b':' if any => Chunk::TrailerValue,
                        _ => return bad(Violation::Trailer),
                    }
                }
                Chunk::TrailerValue => {
                    line += 1;
                    match b {
                        b'\r' => Chunk::TrailerLf,
                        _ if is_field_vchar(b) => Chunk::TrailerValue,
                        _ => return bad(Violation::Trailer),
                    }
                }
                Chunk::TrailerLf => {
                    line += 1;
                    match b {
                        b'\n' => Chunk::TrailerStart,
                        _ => return bad(Violation::LoneCr),
                    }
                }
                Chunk::EndLf => match b {
                    b'\n' => return Ok(Some(pos + 1)),
                    _ => return bad(Violation::LoneCr),
                },
            };
            // `line` counts the size line, or the whole trailer section.
            let in_trailers = matches!(
                chunk,
                Chunk::TrailerStart
                    | Chunk::TrailerName { .. }
                    | Chunk::TrailerValue
                    | Chunk::TrailerLf
                    | Chunk::EndLf
            );
            if in_trailers {
                if line > self.limits.max_head_bytes {
                    return Err((pos, Violation::Trailer));
                }
            } else if line > MAX_CHUNK_LINE {
                return Err((pos, Violation::ChunkLineTooLong));
            }
            pos += 1;
        }
        self.state = State::Chunked {
            chunk,
            line,
            trailers,
        };
        Ok(None)
    }
}

fn unreachable_data() -> Chunk {
    // Handled before the byte match; kept total without a panic.
    Chunk::DataCr
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Byte classes, one table lookup per byte: bit 0 tchar (RFC 9110 §5.6.2), bit 1 field
/// value byte (VCHAR, obs-text, SP, HTAB: RFC 9110 §5.5).
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let tchar = matches!(c,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
            | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z');
        let vchar = matches!(c, b'\t' | b' '..=0x7e | 0x80..=0xff);
        t[b] = (tchar as u8) | ((vchar as u8) << 1);
        b += 1;
    }
    t
};

/// RFC 9110 §5.6.2 tchar.
#[inline]
pub fn is_tchar(b: u8) -> bool {
    CLASS[b as usize] & 1 != 0
}

/// A byte allowed in a field value: VCHAR, obs-text, SP, HTAB (RFC 9110 §5.5).
#[inline]
fn is_field_vchar(b: u8) -> bool {
    CLASS[b as usize] & 2 != 0
}

enum HeadEnd {
    Incomplete {
        scanned: usize,
        line_start: usize,
        started: bool,
    },
    /// The head is `rest[start..end]` (without leading empty lines, with the final CRLF).
    Complete {
        start: usize,
        end: usize,
    },
    Bad(Violation),
}

/// Finds the end of a head in `rest`, resuming at `scanned`. Every LF must follow a CR.
/// Empty lines before the request line are skipped (RFC 9112 §2.2) but count to the size.
fn find_head_end(
    rest: &[u8],
    mut scanned: usize,
    mut line_start: usize,
    mut started: bool,
    limits: Limits,
) -> HeadEnd {
    let window = rest.len().min(limits.max_head_bytes);
    while let Some(off) = rest[scanned..window].iter().position(|&b| b == b'\n') {
        let lf = scanned + off;
        if lf == 0 || rest[lf - 1] != b'\r' {
            return HeadEnd::Bad(Violation::BareLf);
        }
        let empty = lf - 1 == line_start;
        scanned = lf + 1;
        if empty {
            if started {
                return HeadEnd::Complete {
                    start: first_line(rest),
                    end: scanned,
                };
            }
        } else {
            started = true;
        }
        line_start = scanned;
    }
    if rest.len() >= limits.max_head_bytes {
        return HeadEnd::Bad(Violation::HeadTooLarge);
    }
    HeadEnd::Incomplete {
        scanned: window,
        line_start,
        started,
    }
}

/// Offset of the request line: past the leading CRLFs.
fn first_line(rest: &[u8]) -> usize {
    let mut i = 0;
    while rest.len() >= i + 2 && rest[i] == b'\r' && rest[i + 1] == b'\n' {
        i += 2;
    }
    i
}

/// Parses a complete head (request line to the final CRLF; every LF follows a CR) strictly.
pub fn parse_head(head: &[u8], limits: Limits) -> Result<Head, Violation> {
    let mut lines = head.split(|&b| b == b'\n');
    // Every line ends in CR (checked while finding the end); drop it.
    let strip = |l: &[u8]| -> Option<usize> { l.len().checked_sub(1) };
    let request_line = lines.next().ok_or(Violation::RequestLine)?;
    let request_line = &request_line[..strip(request_line).ok_or(Violation::RequestLine)?];
    let (method, version) = request_line_parts(request_line)?;
    let http10 = version == b"HTTP/1.0";
    let mut switch = if method == b"CONNECT" {
        Switch::Connect
    } else {
        Switch::No
    };
    // Counted over the whole head, then judged in `pipeline::framing`'s order, so both
    // give the same reason for the same fields.
    let (mut te_count, mut te_chunked) = (0usize, false);
    let mut cl: (usize, Option<&[u8]>) = (0, None);
    let mut fields = 0usize;
    for line in lines {
        let Some(len) = strip(line) else {
            // The empty remainder after the final LF.
            continue;
        };
        let line = &line[..len];
        if line.is_empty() {
            // The final empty line.
            continue;
        }
        fields += 1;
        if fields > limits.max_headers {
            return Err(Violation::TooManyHeaders);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Violation::ObsFold);
        }
        let colon = line
            .iter()
            .position(|&b| !is_tchar(b))
            .ok_or(Violation::FieldName)?;
        if colon == 0 || line[colon] != b':' {
            return Err(Violation::FieldName);
        }
        let name = &line[..colon];
        let raw_value = &line[colon + 1..];
        if let Some(&b) = raw_value.iter().find(|&&b| !is_field_vchar(b)) {
            return Err(if b == b'\r' {
                Violation::LoneCr
            } else {
                Violation::FieldValue
            });
        }
        let value = trim_ows(raw_value);
        if name.eq_ignore_ascii_case(b"content-length") {
            cl.0 += 1;
            cl.1.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_count += 1;
            te_chunked = te_count == 1 && value == b"chunked";
        } else if name.eq_ignore_ascii_case(b"upgrade") && switch == Switch::No {
            switch = Switch::Upgrade;
        }
    }
    if te_count > 0 {
        if http10 {
            return Err(Violation::TransferEncodingNotAllowed);
        }
        if te_count > 1 {
            return Err(Violation::RepeatedTransferEncoding);
        }
        if !te_chunked {
            return Err(Violation::UnsupportedTransferCoding);
        }
        if cl.0 > 0 {
            return Err(Violation::ContentLengthWithTransferEncoding);
        }
    }
    let framing = match cl {
        (0, _) if te_count > 0 => Framing::Chunked,
        (0, _) | (_, None) => Framing::None,
        (1, Some(v)) => {
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(Violation::InvalidContentLength);
            }
            Framing::Length(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
        }
        _ => return Err(Violation::RepeatedContentLength),
    };
    Ok(Head { framing, switch })
}

/// `method SP request-target SP HTTP-version`, single spaces, strict bytes.
fn request_line_parts(line: &[u8]) -> Result<(&[u8], &[u8]), Violation> {
    let sp1 = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or(Violation::RequestLine)?;
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Violation::Method);
    }
    let rest = &line[sp1 + 1..];
    let sp2 = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or(Violation::RequestLine)?;
    let target = &rest[..sp2];
    if target.is_empty() {
        return Err(Violation::RequestLine);
    }
    // Visible ASCII; valid UTF-8 beyond it is left to the path stage, which refuses it with
    // its own reason (`non_ascii`); invalid UTF-8 is refused here (hyper's parser would).
    let mut high = false;
    for &b in target {
        match b {
            0x21..=0x7e => {}
            0x80..=0xff => high = true,
            b'\r' => return Err(Violation::LoneCr),
            _ => return Err(Violation::Target),
        }
    }
    if high && std::str::from_utf8(target).is_err() {
        return Err(Violation::Target);
    }
    let version = &rest[sp2 + 1..];
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(if version.contains(&b'\r') {
            Violation::LoneCr
        } else {
            Violation::Version
        });
    }
    Ok((method, version))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Largest held buffer kept between heads; a larger one is freed once empty.
const KEEP_HELD: usize = 8 * 1024;
/// How much a read into the held buffer asks for.
const HELD_READ: usize = 8 * 1024;

/// What the connection does once a violation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Hand hyper the rest of [`SYNTHETIC`] from this offset.
    Synthetic(usize),
    /// Hand hyper nothing more (it closes the connection after the 400).
    Parked,
    /// Fail every read (a body violation).
    BodyError(Violation),
}

/// Watches the first bytes fortress writes after an upgrade request for the status code.
#[derive(Debug, Default)]
struct ResponseScan {
    head: [u8; 12],
    len: usize,
    /// Skipping an interim (1xx) response: how much of CRLFCRLF has matched.
    skipping: Option<u8>,
}

impl ResponseScan {
    /// Feeds written bytes; returns the final status once known.
    fn feed(&mut self, mut bytes: &[u8]) -> Option<u16> {
        while !bytes.is_empty() {
            if let Some(matched) = self.skipping {
                let b = bytes[0];
                bytes = &bytes[1..];
                let want = b"\r\n\r\n"[matched as usize];
                let next = if b == want {
                    matched + 1
                } else if b == b'\r' {
                    1
                } else {
                    0
                };
                self.skipping = if next == 4 { None } else { Some(next) };
                continue;
            }
            let take = (self.head.len() - self.len).min(bytes.len());
            self.head[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            self.len += take;
            bytes = &bytes[take..];
            if self.len == self.head.len() {
                self.len = 0;
                let status = parse_status(&self.head);
                match status {
                    // An interim response (100 Continue): the final one follows.
                    Some(s) if (100..200).contains(&s) && s != 101 => self.skipping = Some(0),
                    Some(s) => return Some(s),
                    // Not a status line fortress writes: treat as "no switch".
                    None => return Some(0),
                }
            }
        }
        None
    }
}

fn parse_status(head: &[u8; 12]) -> Option<u16> {
    if &head[..9] != b"HTTP/1.1 " && &head[..9] != b"HTTP/1.0 " {
        return None;
    }
    let mut s = 0u16;
    for &d in &head[9..12] {
        if !d.is_ascii_digit() {
            return None;
        }
        s = s * 10 + u16::from(d - b'0');
    }
    Some(s)
}

/// The client connection's IO with the guard on its read side (see the module docs).
pub struct GuardedIo<I> {
    inner: I,
    guard: Guard,
    conn: Arc<ConnInfo>,
    /// Bytes read and not yet handed over: `held[given..released]` may go to hyper,
    /// `held[released..]` wait (a partial head, or bytes after an upgrade request).
    held: Vec<u8>,
    given: usize,
    released: usize,
    /// The held bytes must be scanned again (the guard's state changed under them).
    rescan: bool,
    end: Option<End>,
    read_waker: Option<Waker>,
    response: ResponseScan,
}

impl<I> GuardedIo<I> {
    /// Wraps a fresh HTTP/1.x connection.
    pub fn new(inner: I, limits: Limits, conn: Arc<ConnInfo>) -> Self {
        Self {
            inner,
            guard: Guard::new(limits),
            conn,
            held: Vec::new(),
            given: 0,
            released: 0,
            rescan: false,
            end: None,
            read_waker: None,
            response: ResponseScan::default(),
        }
    }

    /// Records a violation: a head is replaced by [`SYNTHETIC`], a body fails its reads.
    fn on_violation(&mut self, v: Violation, body: bool) {
        tracing::debug!(
            client.ip = %self.conn.peer.ip(),
            reason = v.code(),
            "HTTP/1 guard refused the client's bytes"
        );
        if body {
            self.end = Some(End::BodyError(v));
        } else {
            self.conn.h1.record(self.guard.heads() + 1, v);
            self.end = Some(End::Synthetic(0));
        }
    }

    fn observe_written(&mut self, bytes: &[u8]) {
        if !self.guard.awaiting_response() {
            return;
        }
        if let Some(status) = self.response.feed(bytes) {
            self.guard.response_status(status);
            self.response = ResponseScan::default();
            self.rescan = true;
            if let Some(w) = self.read_waker.take() {
                w.wake();
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for GuardedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            // 1. Released bytes first.
            if this.given < this.released {
                let n = (this.released - this.given).min(buf.remaining());
                buf.put_slice(&this.held[this.given..this.given + n]);
                this.given += n;
                if this.given == this.released {
                    this.held.drain(..this.released);
                    this.given = 0;
                    this.released = 0;
                    if this.held.is_empty() && this.held.capacity() > KEEP_HELD {
                        this.held = Vec::new();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            // 2. After a violation.
            match this.end {
                Some(End::Synthetic(off)) => {
                    let n = (SYNTHETIC.len() - off).min(buf.remaining());
                    buf.put_slice(&SYNTHETIC[off..off + n]);
                    this.end = Some(if off + n == SYNTHETIC.len() {
                        End::Parked
                    } else {
                        End::Synthetic(off + n)
                    });
                    return Poll::Ready(Ok(()));
                }
                // Never EOF: hyper would take it for a client gone mid-request and drop the
                // 400. hyper ends the connection once the 400 (`Connection: close`) is out.
                Some(End::Parked) => return Poll::Pending,
                Some(End::BodyError(v)) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, v.code())));
                }
                None => {}
            }
            if this.guard.awaiting_response() {
                // Nothing is read until fortress's answer says whether the protocol switched.
                this.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            // 3. Held bytes the guard has not judged under its current state.
            if this.rescan && !this.held.is_empty() {
                this.rescan = false;
                let out = this.guard.scan(&this.held);
                this.released = out.released;
                if let Some(v) = out.violation {
                    this.held.truncate(out.released);
                    this.on_violation(v, out.in_body);
                }
                continue;
            }
            this.rescan = false;
            if this.guard.passthrough() && this.held.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // 4. Read more.
            if this.held.is_empty() {
                // Fast path: straight into hyper's buffer, judged in place.
                let before = buf.filled().len();
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let after = buf.filled().len();
                if after == before {
                    return Poll::Ready(Ok(())); // EOF
                }
                let out = this.guard.scan(&buf.filled()[before..after]);
                let keep = before + out.released;
                if let Some(v) = out.violation {
                    buf.set_filled(keep);
                    this.on_violation(v, out.in_body);
                } else if keep < after {
                    this.held.extend_from_slice(&buf.filled()[keep..after]);
                    buf.set_filled(keep);
                }
                if keep > before {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // Slow path: a head split across reads (or held bytes to pass through).
            let len = this.held.len();
            this.held.resize(len + HELD_READ, 0);
            let mut tmp = ReadBuf::new(&mut this.held[len..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut tmp);
            let n = tmp.filled().len();
            this.held.truncate(len + n);
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if n == 0 => {
                    // EOF inside a head: hyper saw none of it, so it sees a clean EOF.
                    this.held.clear();
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {}
            }
            let out = this.guard.scan(&this.held);
            this.released = out.released;
            if let Some(v) = out.violation {
                this.held.truncate(out.released);
                this.on_violation(v, out.in_body);
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for GuardedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.observe_written(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            this.observe_written(&b[..take]);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head_bytes: 1024,
        max_headers: 8,
    };

    /// Scans `input` in one piece and split at every position: the same verdict, the same
    /// bytes released. Returns (released, violation, heads).
    fn judge(input: &[u8]) -> (usize, Option<Violation>, u64) {
        let whole = {
            let mut g = Guard::new(LIMITS);
            let out = g.scan(input);
            (out.released, out.violation, g.heads())
        };
        for split in 1..input.len() {
            let mut g = Guard::new(LIMITS);
            let first = g.scan(&input[..split]);
            let (released, violation) = if first.violation.is_some() {
                (first.released, first.violation)
            } else {
                // The unreleased tail is scanned again with the rest, like `GuardedIo` does.
                let out = g.scan(&input[first.released..]);
                (first.released + out.released, out.violation)
            };
            assert_eq!(
                (released, violation, g.heads()),
                whole,
                "split at {split}: {:?}",
                String::from_utf8_lossy(input)
            );
        }
        whole
    }

    fn refused(input: &[u8]) -> Violation {
        let (released, v, _) = judge(input);
        assert_eq!(released, 0, "{:?}", String::from_utf8_lossy(input));
        v.unwrap_or_else(|| panic!("accepted {:?}", String::from_utf8_lossy(input)))
    }

    #[test]
    fn valid_heads_and_bodies_are_released_whole() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a?b=c HTTP/1.0\r\nHost: a\r\nX-A:  v v \t\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked \r\n\r\n5;a=b;c;d=\"x\\\"y\"\r\nhello\r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for c in cases {
            let (released, v, heads) = judge(c);
            assert_eq!(
                (released, v),
                (c.len(), None),
                "{:?}",
                String::from_utf8_lossy(c)
            );
            assert!(heads >= 1);
        }
    }

    #[test]
    fn head_violations() {
        use Violation as V;
        let cases: &[(&[u8], Violation)] = &[
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", V::BareLf),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", V::BareLf),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", V::BareLf),
            (b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", V::BareLf),
            (b"GET / HTTP/1.1\rHost: a\r\n\r\n", V::LoneCr),
            (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", V::LoneCr),
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", V::RequestLine),
            (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", V::Version),
            (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", V::Version),
            (b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", V::Method),
            (b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", V::Method),
            (b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", V::Target),
            (b"GET /\xe8u HTTP/1.1\r\nHost: a\r\n\r\n", V::Target),
            (b"GET /\xc3 HTTP/1.1\r\nHost: a\r\n\r\n", V::Target),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", V::Version),
            (b"GET / http/1.1\r\nHost: a\r\n\r\n", V::Version),
            (b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", V::Version),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", V::Version),
            (b"GET /\r\nHost: a\r\n\r\n", V::RequestLine),
            (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", V::ObsFold),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n", V::ObsFold),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", V::FieldName),
            (b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", V::FieldName),
            (b"GET / HTTP/1.1\r\n: a\r\n\r\n", V::FieldName),
            (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", V::FieldName),
            (b"GET / HTTP/1.1\r\nHo\x00st: a\r\n\r\n", V::FieldName),
            (b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", V::FieldValue),
            (b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", V::FieldValue),
            (b"GET / HTTP/1.1\r\nHost: a\x0bb\r\n\r\n", V::FieldValue),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                V::ContentLengthWithTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
                V::RepeatedContentLength,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", V::InvalidContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 3,3\r\n\r\nabc", V::InvalidContentLength),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                V::RepeatedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                V::UnsupportedTransferCoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
                V::UnsupportedTransferCoding,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                V::TransferEncodingNotAllowed,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                refused(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_give_431_violations() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..9 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(refused(&many), Violation::TooManyHeaders);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1024));
        assert_eq!(refused(big.as_bytes()), Violation::HeadTooLarge);
        // Without an end in sight, too.
        let open = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000));
        assert_eq!(refused(open.as_bytes()), Violation::HeadTooLarge);
    }

    #[test]
    fn body_violations_release_the_bytes_before_them() {
        use Violation as V;
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let cases: &[(&[u8], Violation)] = &[
            (b"05\r\nhello\r\n0\r\n\r\n", V::ChunkSize),
            (b"00\r\n\r\n", V::ChunkSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", V::ChunkSize),
            (b"+5\r\nhello\r\n0\r\n\r\n", V::ChunkSize),
            (b"-5\r\nhello\r\n0\r\n\r\n", V::ChunkSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", V::ChunkSize),
            (b"5 \r\nhello\r\n0\r\n\r\n", V::ChunkSize),
            (b"5\t\r\nhello\r\n0\r\n\r\n", V::ChunkSize),
            (b"5\nhello\r\n0\r\n\r\n", V::ChunkSize),
            (b"\r\nhello\r\n0\r\n\r\n", V::ChunkSize),
            (b"10000000000000000\r\n", V::ChunkSize),
            (b"5;\r\nhello\r\n0\r\n\r\n", V::ChunkExtension),
            (b"5; a=b\r\nhello\r\n0\r\n\r\n", V::ChunkExtension),
            (b"5;a =b\r\nhello\r\n0\r\n\r\n", V::ChunkExtension),
            (b"5;a\nhello\r\n0\r\n\r\n", V::ChunkExtension),
            (b"5;a=\"b\nhello\r\n0\r\n\r\n", V::ChunkExtension),
            (b"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", V::ChunkExtension),
            (b"5\rhello\r\n0\r\n\r\n", V::LoneCr),
            (b"5\r\nhelloX\r\n0\r\n\r\n", V::ChunkDataEnd),
            (b"5\r\nhello\n0\r\n\r\n", V::ChunkDataEnd),
            (b"5\r\nhello\r0\r\n\r\n", V::ChunkDataEnd),
            (b"0\r\nT: v\n\r\n", V::Trailer),
            (b"0\r\n folded\r\n\r\n", V::Trailer),
            (b"0\r\nT : v\r\n\r\n", V::Trailer),
            (b"0\r\nT: v\x00\r\n\r\n", V::Trailer),
            (b"0\r\n\n", V::Trailer),
            (b"0\r\n\r\r", V::LoneCr),
        ];
        for (body, want) in cases {
            let mut input = head.to_vec();
            input.extend_from_slice(body);
            let (released, v, heads) = judge(&input);
            assert_eq!(v, Some(*want), "{:?}", String::from_utf8_lossy(body));
            assert_eq!(heads, 1);
            assert!(
                released >= head.len(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // An extension line over the limit.
        let mut input = head.to_vec();
        input.extend_from_slice(
            format!("5;a={}\r\nhello\r\n0\r\n\r\n", "b".repeat(5000)).as_bytes(),
        );
        let mut g = Guard::new(LIMITS);
        assert_eq!(g.scan(&input).violation, Some(Violation::ChunkLineTooLong));
    }

    #[test]
    fn upgrade_waits_for_the_response() {
        let input = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello";
        let mut g = Guard::new(LIMITS);
        let out = g.scan(input);
        let head_len = input.len() - 7;
        assert_eq!((out.released, out.violation), (head_len, None));
        assert!(g.awaiting_response());
        g.response_status(101);
        assert!(g.passthrough());
        assert_eq!(g.scan(&input[head_len..]).released, 7);
        // Refused upgrade: HTTP goes on, and is judged.
        let mut g = Guard::new(LIMITS);
        let out = g.scan(b"GET / HTTP/1.1\r\nUpgrade: x\r\n\r\nGET / HTTP/1.1\nX: y\r\n\r\n");
        assert!(g.awaiting_response());
        g.response_status(400);
        let rest = b"GET / HTTP/1.1\nX: y\r\n\r\n";
        assert_eq!(out.released, 30);
        assert_eq!(g.scan(rest).violation, Some(Violation::BareLf));
    }

    #[test]
    fn byte_classes_match_the_rfc() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "{b:#x}");
            let vchar = b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80;
            assert_eq!(is_field_vchar(b), vchar, "{b:#x}");
        }
    }

    #[test]
    fn response_scan_skips_interim_responses() {
        let mut r = ResponseScan::default();
        assert_eq!(r.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 10"), None);
        assert_eq!(r.feed(b"1 Switching"), Some(101));
        let mut r = ResponseScan::default();
        assert_eq!(r.feed(b"HTTP/1.1 4"), None);
        assert_eq!(r.feed(b"00 Bad"), Some(400));
    }
}
