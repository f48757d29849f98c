//! Request-path canonicalization.
//!
//! [`normalize_path`] turns the path of an origin-form request target into
//! the single canonical form that fortress uses both for route matching and
//! for the request it forwards upstream. Anything that could be interpreted
//! differently by a backend (encoded slashes, double encoding, encoded dot
//! segments, Tomcat-style `..;` tricks, control characters, ...) is rejected
//! with a [`PathError`] instead of being "repaired".
//!
//! Canonical form:
//!
//! * starts with `/`, contains only ASCII, no control characters and no `\`;
//! * `%XX` escapes of unreserved characters (`ALPHA / DIGIT / - . _ ~`) are
//!   decoded, every other escape is kept with upper-case hex digits;
//! * runs of `/` are merged into one;
//! * `.` and `..` segments are resolved (RFC 3986 §5.2.4), never above `/`;
//! * a trailing slash is preserved;
//! * only RFC 3986 path characters (`pchar` and `/`): no `"`, `<`, `>`, `^`, `` ` ``, `{`,
//!   `|`, `}`, `[`, `]`, `#`;
//! * percent-encoded bytes `>= 0x80` form valid UTF-8 (no overlong forms, surrogates or
//!   truncated sequences), and no encoded character folds (NFKC or lookalike) to `.`, `/`
//!   or `\`;
//! * no `;` path parameter (raw or `%3B`): refused by default, or, with
//!   [`MatrixParameters::Strip`], removed from each segment (`/a;x=1/b` → `/a/b`).
//!
//! The function is a single pass over the input and does not allocate when
//! the input already is canonical.

use std::borrow::Cow;

use http::request::Parts;
use http::{Method, Version};

use super::context::{Canonical, RequestContext};
use super::decide::Step;
use crate::error::Rejection;
pub use crate::policy::MatrixParameters;

pub use crate::error::PathError;

/// The target-form and canonical-path stage. Absolute-form (`GET http://x/ HTTP/1.1`),
/// authority-form (CONNECT) and `*` would bypass path matching; HTTP/2 always carries scheme
/// and authority as pseudo-headers, so only HTTP/1.x is checked for them. The canonical path
/// is used for matching *and* forwarding: the app sees what was judged.
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let uri = &req.uri;
    let absolute =
        req.version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some());
    if absolute || req.method == Method::CONNECT || uri.path() == "*" {
        return Err(Rejection::RejectTargetForm);
    }
    let settings = ctx.snapshot.policy.paths;
    let canonical = normalize_path_with(uri.path(), settings.matrix_parameters)
        .map_err(Rejection::RejectPath)?;
    // Case-insensitive apps: the lower-cased path is matched and forwarded, so fortress and
    // the app agree on `/API/ADMIN`.
    let lowered = settings
        .case_insensitive
        .then(|| lower_case(&canonical))
        .flatten();
    ctx.canonical = match (lowered, canonical) {
        (Some(p), _) | (None, Cow::Owned(p)) => Canonical::Rewritten(p),
        (None, Cow::Borrowed(_)) => Canonical::AsSent,
    };
    Ok(Step::Pass)
}

/// The canonical `path` with ASCII letters lower-cased, except the hex digits of `%XX`
/// escapes (canonical form keeps them upper case); `None` when nothing changes.
pub(crate) fn lower_case(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut i = 0;
    let mut upper = false;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            i += 3;
            continue;
        }
        upper |= b.is_ascii_uppercase();
        i += 1;
    }
    if !upper {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut escape = 0;
    for &b in bytes {
        if b == b'%' {
            escape = 2;
            out.push(b);
        } else if escape > 0 {
            escape -= 1;
            out.push(b);
        } else {
            out.push(b.to_ascii_lowercase());
        }
    }
    String::from_utf8(out).ok()
}

/// Canonicalizes the path part of an origin-form request target (no query
/// string; the caller splits at `?`).
///
/// Returns [`Cow::Borrowed`] holding the whole input exactly when the input
/// already is canonical (so `Cow::Borrowed` means "unchanged" and the hot path
/// does not allocate), and [`Cow::Owned`] with the canonical path otherwise.
/// The canonical output is a fixed point: normalizing it again returns it
/// unchanged and borrowed.
///
/// # Errors
///
/// Returns a [`PathError`] describing the first problem found (scanning left
/// to right) when the path cannot be canonicalized unambiguously.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_path_with(path, MatrixParameters::Reject)
}

/// [`normalize_path`] with the policy's choice for `;` path parameters. With
/// [`MatrixParameters::Strip`], `;…` is removed from every segment (after the same checks as
/// the rest of the path), so the output never contains `;` or `%3B` either way.
///
/// # Errors
///
/// As [`normalize_path`].
pub fn normalize_path_with(
    path: &str,
    matrix: MatrixParameters,
) -> Result<Cow<'_, str>, PathError> {
    let src = path.as_bytes();
    if src.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }

    let mut out = Out::new(path);
    // Output length before the current segment's '/' separator.
    let mut seg_out = 0;
    // Whether any byte of the current segment was percent-decoded.
    let mut decoded = false;
    // Offset (within the segment's output text) of its first ';' or "%3B".
    let mut semi: Option<usize> = None;
    // Percent-encoded bytes >= 0x80 must form valid UTF-8.
    let mut utf8 = Utf8::default();

    // The current segment starts at index 1 and its separator is src[0].
    out.put(0, b'/');
    let mut i = 1;
    // Whether the canonical path ends with '/' (last segment empty, '.' or '..').
    let trailing = loop {
        let Some(&b) = src.get(i) else {
            utf8.end()?;
            break finish_segment(&mut out, seg_out, decoded, semi, matrix)?;
        };
        if b != b'%' {
            utf8.end()?;
        }
        match b {
            b'/' => {
                // A '/' later in the input makes `trailing` irrelevant.
                finish_segment(&mut out, seg_out, decoded, semi, matrix)?;
                seg_out = out.len();
                decoded = false;
                semi = None;
                out.put(i, b'/');
                i += 1;
            }
            0x80..=0xFF => return Err(PathError::NonAscii),
            0x00..=0x1F | 0x7F => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            _ if !is_path_char(b) => return Err(PathError::DisallowedCharacter),
            b'%' => {
                let (Some(&hi), Some(&lo)) = (src.get(i + 1), src.get(i + 2)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let (Some(h), Some(l)) = (hex_val(hi), hex_val(lo)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let v = (h << 4) | l;
                if v >= 0x80 {
                    utf8.push(v)?;
                } else {
                    utf8.end()?;
                }
                match v {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::EncodedBackslash),
                    0x00..=0x1F | 0x7F => return Err(PathError::Nul),
                    _ if is_unreserved(v) => {
                        decoded = true;
                        out.put(i, v);
                        if out.ends_with_double_encoding() {
                            return Err(PathError::DoubleEncoding);
                        }
                    }
                    _ => {
                        if v == b';' && semi.is_none() {
                            semi = Some(out.len().saturating_sub(seg_out + 1));
                        }
                        out.put(i, b'%');
                        out.put(i + 1, hi.to_ascii_uppercase());
                        out.put(i + 2, lo.to_ascii_uppercase());
                    }
                }
                i += 3;
            }
            _ => {
                if b == b';' && semi.is_none() {
                    semi = Some(out.len().saturating_sub(seg_out + 1));
                }
                out.put(i, b);
                if out.ends_with_double_encoding() {
                    return Err(PathError::DoubleEncoding);
                }
                i += 1;
            }
        }
    };

    Ok(out.finish(trailing))
}

/// Completes the segment whose '/' separator starts at output offset
/// `seg_out`: drops it if empty, resolves raw dot segments and rejects the
/// ambiguous ones. Returns whether the path ends with '/' if this segment is
/// the last one.
fn finish_segment(
    out: &mut Out<'_>,
    seg_out: usize,
    decoded: bool,
    semi: Option<usize>,
    matrix: MatrixParameters,
) -> Result<bool, PathError> {
    if let Some(k) = semi {
        let text = out.bytes().get(seg_out + 1..).unwrap_or_default();
        // `..;x` is `..` to Tomcat and Spring: refused in both modes, never resolved.
        if is_dots(text.get(..k).unwrap_or_default()) {
            return Err(PathError::DotSemicolon);
        }
        match matrix {
            MatrixParameters::Reject => return Err(PathError::PathParameter),
            // What is left is matched and forwarded; an emptied segment is dropped like `//`.
            MatrixParameters::Strip => out.truncate(seg_out + 1 + k),
        }
    }
    let text = out.bytes().get(seg_out + 1..).unwrap_or_default();
    match text {
        b"." | b".." if decoded => Err(PathError::EncodedDotSegment),
        b"" | b"." => {
            out.truncate(seg_out);
            Ok(true)
        }
        b".." => {
            out.truncate(seg_out);
            match out.bytes().iter().rposition(|&c| c == b'/') {
                Some(parent) => {
                    out.truncate(parent);
                    Ok(true)
                }
                None => Err(PathError::EscapesRoot),
            }
        }
        _ => Ok(false),
    }
}

/// RFC 3986 `pchar` minus `%` handling, plus `/`: unreserved, sub-delims, `:`, `@`, `%`.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'%'
                | b'/'
        )
}

/// A strict UTF-8 decoder over the percent-encoded bytes `>= 0x80` of a path (Unicode
/// Table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF).
#[derive(Default)]
struct Utf8 {
    /// Continuation bytes still expected.
    need: u8,
    /// Bounds of the next continuation byte.
    lo: u8,
    hi: u8,
    /// The code point so far.
    cp: u32,
}

impl Utf8 {
    /// Feeds one encoded byte `>= 0x80`; a completed code point is checked for lookalikes.
    fn push(&mut self, b: u8) -> Result<(), PathError> {
        if self.need > 0 {
            if b < self.lo || b > self.hi {
                return Err(PathError::InvalidUtf8);
            }
            self.cp = (self.cp << 6) | u32::from(b & 0x3F);
            self.need -= 1;
            (self.lo, self.hi) = (0x80, 0xBF);
            if self.need == 0 && is_lookalike(self.cp) {
                return Err(PathError::UnicodeLookalike);
            }
            return Ok(());
        }
        let (need, lo, hi, bits) = match b {
            0xC2..=0xDF => (1, 0x80, 0xBF, b & 0x1F),
            0xE0 => (2, 0xA0, 0xBF, b & 0x0F),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF, b & 0x0F),
            0xED => (2, 0x80, 0x9F, b & 0x0F),
            0xF0 => (3, 0x90, 0xBF, b & 0x07),
            0xF1..=0xF3 => (3, 0x80, 0xBF, b & 0x07),
            0xF4 => (3, 0x80, 0x8F, b & 0x07),
            _ => return Err(PathError::InvalidUtf8),
        };
        *self = Self {
            need,
            lo,
            hi,
            cp: u32::from(bits),
        };
        Ok(())
    }

    /// Anything but a continuation byte: no sequence may be left unfinished.
    fn end(&self) -> Result<(), PathError> {
        if self.need == 0 {
            Ok(())
        } else {
            Err(PathError::InvalidUtf8)
        }
    }
}

/// Code points whose NFKC form contains `.`, `/` or `\` (from the Unicode data: one and two
/// dot leaders, ellipses, small and fullwidth full stop, solidus and reverse solidus, `℀`-like
/// and `⒈`-like compatibility characters, squared `a.m.`), plus slash and backslash lookalikes
/// that NFKC keeps but other folding (IDNA, confusable maps) turns into `/` or `\`: fraction
/// slash, division slash, set minus, reverse solidus operator, big solidus, big reverse
/// solidus. Sorted, inclusive ranges.
const LOOKALIKES: [(u32, u32); 18] = [
    (0x2024, 0x2026),   // ․ ‥ …
    (0x2044, 0x2044),   // ⁄ fraction slash
    (0x2100, 0x2101),   // ℀ ℁
    (0x2105, 0x2106),   // ℅ ℆
    (0x2215, 0x2216),   // ∕ division slash, ∖ set minus
    (0x2488, 0x249B),   // ⒈ … ⒛
    (0x29F5, 0x29F5),   // ⧵ reverse solidus operator
    (0x29F8, 0x29F9),   // ⧸ ⧹ big solidus, big reverse solidus
    (0x33C2, 0x33C2),   // ㏂
    (0x33C7, 0x33C7),   // ㏇
    (0x33D8, 0x33D8),   // ㏘
    (0xFE19, 0xFE19),   // ︙
    (0xFE30, 0xFE30),   // ︰
    (0xFE52, 0xFE52),   // ﹒ small full stop
    (0xFE68, 0xFE68),   // ﹨ small reverse solidus
    (0xFF0E, 0xFF0F),   // ． ／ fullwidth full stop and solidus
    (0xFF3C, 0xFF3C),   // ＼ fullwidth reverse solidus
    (0x1F100, 0x1F100), // 🄀
];

/// Whether `cp` is in [`LOOKALIKES`].
fn is_lookalike(cp: u32) -> bool {
    LOOKALIKES.iter().any(|&(lo, hi)| (lo..=hi).contains(&cp))
}

/// Whether `s` is exactly `.` or `..`.
fn is_dots(s: &[u8]) -> bool {
    matches!(s, b"." | b"..")
}

/// RFC 3986 `unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Value of an ASCII hex digit.
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Canonical output under construction.
///
/// Stays a prefix `src[..len]` of the input (no allocation) for as long as
/// the output is byte-for-byte identical to the input so far, and switches
/// to an owned buffer at the first divergence. Only ASCII is ever written.
struct Out<'a> {
    src: &'a str,
    owned: Option<String>,
    len: usize,
}

impl<'a> Out<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            owned: None,
            len: 0,
        }
    }

    /// Current output length.
    fn len(&self) -> usize {
        match &self.owned {
            Some(s) => s.len(),
            None => self.len,
        }
    }

    /// Current output bytes.
    fn bytes(&self) -> &[u8] {
        match &self.owned {
            Some(s) => s.as_bytes(),
            None => self.src.as_bytes().get(..self.len).unwrap_or_default(),
        }
    }

    /// Appends the ASCII byte `b`, which replaces input byte `src[i]`.
    fn put(&mut self, i: usize, b: u8) {
        if self.owned.is_none() && self.len == i && self.src.as_bytes().get(i) == Some(&b) {
            self.len = i + 1;
            return;
        }
        let src = self.src;
        let len = self.len;
        let s = self.owned.get_or_insert_with(|| {
            let mut s = String::with_capacity(src.len());
            s.push_str(src.get(..len).unwrap_or_default());
            s
        });
        s.push(char::from(b));
    }

    /// Shortens the output to `n` bytes.
    fn truncate(&mut self, n: usize) {
        match &mut self.owned {
            Some(s) => s.truncate(n),
            None => self.len = self.len.min(n),
        }
    }

    /// Whether the output ends with `%25` followed by two hex digits.
    ///
    /// Every `%` in the output starts a three-byte escape, so this is exactly
    /// an encoded `%` that a second decoding pass would turn into an escape.
    fn ends_with_double_encoding(&self) -> bool {
        let b = self.bytes();
        match b.len().checked_sub(5).and_then(|start| b.get(start..)) {
            Some(&[b'%', b'2', b'5', h, l]) => h.is_ascii_hexdigit() && l.is_ascii_hexdigit(),
            _ => false,
        }
    }

    /// Produces the final path: `/` if nothing is left, plus the trailing
    /// slash if requested. Borrows the input when it is unchanged.
    fn finish(self, trailing: bool) -> Cow<'a, str> {
        match self.owned {
            Some(mut s) => {
                if s.is_empty() || trailing {
                    s.push('/');
                }
                Cow::Owned(s)
            }
            None => {
                let src = self.src;
                let len = self.len;
                let unchanged = if len == 0 {
                    src == "/"
                } else if trailing {
                    len + 1 == src.len() && src.ends_with('/')
                } else {
                    len == src.len()
                };
                if unchanged {
                    return Cow::Borrowed(src);
                }
                let mut s = String::with_capacity(len + 1);
                s.push_str(src.get(..len).unwrap_or_default());
                if len == 0 || trailing {
                    s.push('/');
                }
                Cow::Owned(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCEPTED: &[(&str, &str)] = &[
        ("/", "/"),
        ("/a", "/a"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("//a///b", "/a/b"),
        ("/a//b/", "/a/b/"),
        ("//", "/"),
        ("///", "/"),
        ("/.", "/"),
        ("/./", "/"),
        ("/a/./b", "/a/b"),
        ("/a/b/.", "/a/b/"),
        ("/a/b/./", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/a/b/../", "/a/"),
        ("/a/b/../c", "/a/c"),
        ("/a/..", "/"),
        ("/a/../", "/"),
        ("/a/b/../../c", "/c"),
        ("/a/./../b", "/b"),
        ("/a/b//../c", "/a/c"),
        ("/a/b/.//", "/a/b/"),
        ("/%41%62c", "/Abc"),
        ("/a%2Db%5F%7E%2e", "/a-b_~."),
        ("/%7euser", "/~user"),
        ("/a%3ab", "/a%3Ab"),
        ("/a%3Ab", "/a%3Ab"),
        ("/A%3a%3A", "/A%3A%3A"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/100%25", "/100%25"),
        ("/%25zz", "/%25zz"),
        ("/a/%252", "/a/%252"),
        ("/%25%47%31", "/%25G1"),
        ("/a/...", "/a/..."),
        ("/a/%2e%2e.", "/a/..."),
        ("/%2e%2ea", "/..a"),
        ("/a%2e%2e/b", "/a../b"),
        ("/a/.b/..c", "/a/.b/..c"),
        (
            "/.well-known/acme-challenge/x",
            "/.well-known/acme-challenge/x",
        ),
        (
            "/caf%C3%A9/%E2%82%AC/%F0%9F%98%80",
            "/caf%C3%A9/%E2%82%AC/%F0%9F%98%80",
        ),
        (
            "/%ef%bf%bd%c2%80%f4%8f%bf%bf",
            "/%EF%BF%BD%C2%80%F4%8F%BF%BF",
        ),
        ("/%E2%80%A3", "/%E2%80%A3"),
        ("/%EF%BC%90", "/%EF%BC%90"),
        (
            "/a%22%3C%3E%5E%60%7B%7C%7D%23",
            "/a%22%3C%3E%5E%60%7B%7C%7D%23",
        ),
        ("/api/v1/users/42", "/api/v1/users/42"),
        ("/a+b=c&d@e:f!$'()*,", "/a+b=c&d@e:f!$'()*,"),
        ("/x/%2e%2e%2e/", "/x/.../"),
    ];

    const REJECTED: &[(&str, PathError)] = &[
        ("/a%2Fb", PathError::EncodedSlash),
        ("/a%2fb", PathError::EncodedSlash),
        ("/..%2Fetc", PathError::EncodedSlash),
        ("/a%5Cb", PathError::EncodedBackslash),
        ("/a%5cb", PathError::EncodedBackslash),
        ("/a\\b", PathError::Backslash),
        ("/a%00b", PathError::Nul),
        ("/a\0b", PathError::Nul),
        ("/a\tb", PathError::Nul),
        ("/a%0d%0aX", PathError::Nul),
        ("/a%1Fb", PathError::Nul),
        ("/a%7Fb", PathError::Nul),
        ("/a\x7fb", PathError::Nul),
        ("/%252e%252e/etc", PathError::DoubleEncoding),
        ("/a%252Fb", PathError::DoubleEncoding),
        ("/a%2525", PathError::DoubleEncoding),
        ("/a%25%32%46b", PathError::DoubleEncoding),
        ("/a%25%61b", PathError::DoubleEncoding),
        ("/%2e%2e/etc", PathError::EncodedDotSegment),
        ("/.%2e/x", PathError::EncodedDotSegment),
        ("/%2E./x", PathError::EncodedDotSegment),
        ("/a/%2E/b", PathError::EncodedDotSegment),
        ("/a/%2e", PathError::EncodedDotSegment),
        ("/../etc", PathError::EscapesRoot),
        ("/..", PathError::EscapesRoot),
        ("/a/../../etc", PathError::EscapesRoot),
        ("/a/b/../../..", PathError::EscapesRoot),
        ("/..;/admin", PathError::DotSemicolon),
        ("/a/..;x/b", PathError::DotSemicolon),
        ("/.;x", PathError::DotSemicolon),
        ("/a/..;", PathError::DotSemicolon),
        ("/a/%2e%2e;x", PathError::DotSemicolon),
        ("/a/..%3Bx/b", PathError::DotSemicolon),
        ("/a/.%3b", PathError::DotSemicolon),
        ("/%G1", PathError::BadPercentEncoding),
        ("/abc%2", PathError::BadPercentEncoding),
        ("/%", PathError::BadPercentEncoding),
        ("/a%/b", PathError::BadPercentEncoding),
        ("/a%%41", PathError::BadPercentEncoding),
        ("", PathError::NotOriginForm),
        ("api/x", PathError::NotOriginForm),
        ("*", PathError::NotOriginForm),
        ("http://host/a", PathError::NotOriginForm),
        ("/caf\u{e9}", PathError::NonAscii),
        ("/\u{2215}etc", PathError::NonAscii),
        // Path parameters (refused by default).
        ("/a;b", PathError::PathParameter),
        ("/api/admin;x=1/users", PathError::PathParameter),
        ("/a/b;jsessionid=1", PathError::PathParameter),
        ("/a/;x/b", PathError::PathParameter),
        ("/a;/b", PathError::PathParameter),
        ("/a;", PathError::PathParameter),
        ("/a%3Bb", PathError::PathParameter),
        ("/a%3bb/c", PathError::PathParameter),
        ("/a;x;y/b", PathError::PathParameter),
        ("/a;x/b;y", PathError::PathParameter),
        // Characters RFC 3986 does not allow in a path.
        ("/a\"b", PathError::DisallowedCharacter),
        ("/a<b", PathError::DisallowedCharacter),
        ("/a>b", PathError::DisallowedCharacter),
        ("/a^b", PathError::DisallowedCharacter),
        ("/a`b", PathError::DisallowedCharacter),
        ("/a{b", PathError::DisallowedCharacter),
        ("/a|b", PathError::DisallowedCharacter),
        ("/a}b", PathError::DisallowedCharacter),
        ("/a[b", PathError::DisallowedCharacter),
        ("/a]b", PathError::DisallowedCharacter),
        ("/a#b", PathError::DisallowedCharacter),
        ("/a b", PathError::DisallowedCharacter),
        ("/a?b", PathError::DisallowedCharacter),
        // Not UTF-8 after decoding.
        ("/%C0%AE", PathError::InvalidUtf8),
        ("/%c0%ae%c0%ae/etc", PathError::InvalidUtf8),
        ("/%C1%BF", PathError::InvalidUtf8),
        ("/%E0%80%AF", PathError::InvalidUtf8),
        ("/%F0%80%80%AF", PathError::InvalidUtf8),
        ("/%80", PathError::InvalidUtf8),
        ("/a%BFb", PathError::InvalidUtf8),
        ("/%ED%A0%80", PathError::InvalidUtf8),
        ("/%ED%BF%BF", PathError::InvalidUtf8),
        ("/%F4%90%80%80", PathError::InvalidUtf8),
        ("/%F5%80%80%80", PathError::InvalidUtf8),
        ("/%FF", PathError::InvalidUtf8),
        ("/%C3", PathError::InvalidUtf8),
        ("/%C3/a", PathError::InvalidUtf8),
        ("/%C3a", PathError::InvalidUtf8),
        ("/%C3%41", PathError::InvalidUtf8),
        ("/%E2%82", PathError::InvalidUtf8),
        ("/%E2%82%AC%AC", PathError::InvalidUtf8),
        // Compatibility forms of `.`, `/`, `\`.
        ("/%EF%BC%8F", PathError::UnicodeLookalike),
        ("/a%ef%bc%8fb", PathError::UnicodeLookalike),
        ("/%EF%BC%8E%EF%BC%8E/etc", PathError::UnicodeLookalike),
        ("/%E2%80%A4", PathError::UnicodeLookalike),
        ("/%E2%80%A5/x", PathError::UnicodeLookalike),
        ("/%EF%B9%92", PathError::UnicodeLookalike),
        ("/%E2%88%95etc", PathError::UnicodeLookalike),
        ("/%E2%81%84etc", PathError::UnicodeLookalike),
        ("/%EF%BC%BC", PathError::UnicodeLookalike),
        ("/%EF%B9%A8", PathError::UnicodeLookalike),
        ("/%E2%84%80", PathError::UnicodeLookalike),
        ("/%F0%9F%84%80", PathError::UnicodeLookalike),
    ];

    /// `paths: { matrix_parameters: strip }`: what is matched and forwarded.
    const STRIPPED: &[(&str, Result<&str, PathError>)] = &[
        ("/api/admin;x=1/users", Ok("/api/admin/users")),
        ("/a;b", Ok("/a")),
        ("/a;", Ok("/a")),
        ("/a;/b", Ok("/a/b")),
        ("/a/b;jsessionid=ABC123", Ok("/a/b")),
        ("/a;x;y=1/b;z", Ok("/a/b")),
        ("/a%3Bx/b", Ok("/a/b")),
        ("/a%3bx=%41/b", Ok("/a/b")),
        ("/a/;x/b", Ok("/a/b")),
        ("/a/;x", Ok("/a/")),
        ("/;x", Ok("/")),
        ("/a;x/../b", Ok("/b")),
        ("/a/b;x/", Ok("/a/b/")),
        ("/%41;x", Ok("/A")),
        ("/plain/path", Ok("/plain/path")),
        ("/..;/admin", Err(PathError::DotSemicolon)),
        ("/a/..;x/b", Err(PathError::DotSemicolon)),
        ("/a/.;x", Err(PathError::DotSemicolon)),
        ("/a/%2e%2e%3Bx/b", Err(PathError::DotSemicolon)),
        ("/a;x=%2F/b", Err(PathError::EncodedSlash)),
        ("/a;x=%C0%AE", Err(PathError::InvalidUtf8)),
        ("/a;x=<", Err(PathError::DisallowedCharacter)),
        ("/a;x=%252e", Err(PathError::DoubleEncoding)),
    ];

    #[test]
    fn stripped_table() {
        for &(input, expected) in STRIPPED {
            let got = normalize_path_with(input, MatrixParameters::Strip);
            assert_eq!(got.as_deref().map_err(|e| *e), expected, "input {input:?}");
            if let Ok(out) = got {
                assert!(!out.contains(';') && !out.contains("%3B"), "{out:?}");
                let again = normalize_path_with(&out, MatrixParameters::Strip);
                assert!(matches!(again, Ok(Cow::Borrowed(_))), "{out:?}");
                assert_eq!(normalize_path(&out).as_deref(), Ok(&*out), "{out:?}");
            }
        }
    }

    #[test]
    fn every_lookalike_is_refused_and_its_neighbours_are_not() {
        for &(lo, hi) in &LOOKALIKES {
            for cp in [lo, hi] {
                let c = char::from_u32(cp).expect("scalar");
                let mut buf = [0u8; 4];
                let enc: String = c
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect();
                assert_eq!(
                    normalize_path(&format!("/x{enc}y")),
                    Err(PathError::UnicodeLookalike),
                    "U+{cp:04X}"
                );
            }
        }
        // U+2023 (triangular bullet) and U+FF10 (fullwidth digit zero) are fine.
        assert!(normalize_path("/%E2%80%A3%EF%BC%90").is_ok());
    }

    #[test]
    fn accepted_table() {
        assert!(ACCEPTED.len() >= 25);
        for &(input, expected) in ACCEPTED {
            assert_eq!(
                normalize_path(input).as_deref(),
                Ok(expected),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn rejected_table() {
        assert!(REJECTED.len() >= 25);
        for &(input, expected) in REJECTED {
            assert_eq!(normalize_path(input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn borrowed_iff_unchanged() {
        for &(input, expected) in ACCEPTED {
            let Ok(out) = normalize_path(input) else {
                panic!("{input:?} rejected");
            };
            assert_eq!(
                matches!(out, Cow::Borrowed(_)),
                input == expected,
                "input {input:?}"
            );
        }
        for input in [
            "/",
            "/a",
            "/a/b/",
            "/api/v1/users/42",
            "/static/app.min.js",
            "/a%3Ab",
            "/caf%C3%A9",
        ] {
            assert!(
                matches!(normalize_path(input), Ok(Cow::Borrowed(s)) if s == input),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn codes_and_display() {
        let all = [
            (PathError::NotOriginForm, "not_origin_form"),
            (PathError::BadPercentEncoding, "bad_percent_encoding"),
            (PathError::EncodedSlash, "encoded_slash"),
            (PathError::EncodedBackslash, "encoded_backslash"),
            (PathError::Backslash, "backslash"),
            (PathError::Nul, "nul"),
            (PathError::DoubleEncoding, "double_encoding"),
            (PathError::EncodedDotSegment, "encoded_dot_segment"),
            (PathError::EscapesRoot, "escapes_root"),
            (PathError::DotSemicolon, "dot_semicolon"),
            (PathError::NonAscii, "non_ascii"),
            (PathError::PathParameter, "path_parameter"),
            (PathError::DisallowedCharacter, "disallowed_character"),
            (PathError::InvalidUtf8, "invalid_utf8"),
            (PathError::UnicodeLookalike, "unicode_lookalike"),
        ];
        for (err, code) in all {
            assert_eq!(err.code(), code);
            assert_eq!(err.to_string(), code);
        }
    }

    use crate::testutil::Rng;

    const PIECES: &[&str] = &[
        "/", "/", "/", "a", "b", "Z", "9", ".", "..", "%2e", "%2E", "%41", "%3a", "%3A", "%25",
        "%2F", "%5c", "%00", "%7f", "%c3%a9", "%252e", "%", "%2", "%g1", ";", "%3b", "~", "-", "_",
        "2", "5", "e", "F", "\\", "\t", "\u{e9}", "?", "//", "/./", "/../", "..;",
    ];

    /// Checks the invariants of a canonical path.
    fn assert_canonical(p: &str) {
        let b = p.as_bytes();
        assert_eq!(b.first(), Some(&b'/'), "{p:?}");
        assert!(!p.contains("//"), "{p:?}");
        assert!(!p.contains(';') && !p.contains("%3B"), "{p:?}");
        assert!(p.bytes().all(is_path_char), "{p:?}");
        let mut utf8 = Utf8::default();
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            if c == b'%' {
                let v = hex_val(b[i + 1]).unwrap_or(0) << 4 | hex_val(b[i + 2]).unwrap_or(0);
                if v >= 0x80 {
                    assert!(utf8.push(v).is_ok(), "{p:?}");
                } else {
                    assert!(utf8.end().is_ok(), "{p:?}");
                }
                i += 3;
            } else {
                assert!(utf8.end().is_ok(), "{p:?}");
                i += 1;
            }
        }
        assert!(utf8.end().is_ok(), "{p:?}");
        for seg in p.split('/').skip(1) {
            assert!(seg != "." && seg != "..", "{p:?}");
            let before_semi = seg.split(';').next().unwrap_or_default();
            assert!(before_semi != "." && before_semi != "..", "{p:?}");
        }
        for (i, &c) in b.iter().enumerate() {
            assert!(c.is_ascii() && !c.is_ascii_control() && c != b'\\', "{p:?}");
            if c == b'%' {
                let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                    panic!("truncated escape in {p:?}");
                };
                let (Some(hv), Some(lv)) = (hex_val(h), hex_val(l)) else {
                    panic!("bad escape in {p:?}");
                };
                assert!(!h.is_ascii_lowercase() && !l.is_ascii_lowercase(), "{p:?}");
                assert!(!is_unreserved((hv << 4) | lv), "{p:?}");
            }
        }
    }

    #[test]
    fn property_idempotent_and_total() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..4000 {
            let mut p = String::new();
            if rng.below(10) != 0 {
                p.push('/');
            }
            for _ in 0..rng.below(12) {
                p.push_str(PIECES[rng.below(PIECES.len())]);
            }
            let matrix = if rng.below(2) == 0 {
                MatrixParameters::Reject
            } else {
                MatrixParameters::Strip
            };
            match normalize_path_with(&p, matrix) {
                Ok(out) => {
                    accepted += 1;
                    assert_canonical(&out);
                    assert!(matches!(normalize_path(&out), Ok(Cow::Borrowed(_))));
                    match normalize_path_with(&out, matrix) {
                        Ok(Cow::Borrowed(again)) => assert_eq!(again, &*out, "input {p:?}"),
                        other => panic!("not idempotent for {p:?}: {out:?} -> {other:?}"),
                    }
                    if let Cow::Borrowed(s) = out {
                        assert_eq!(s, p);
                    }
                }
                Err(e) => assert!(!e.code().is_empty()),
            }
        }
        assert!(accepted >= 300, "only {accepted} generated paths accepted");
    }

    #[test]
    fn lower_casing_keeps_escapes() {
        assert_eq!(lower_case("/api/x"), None);
        assert_eq!(lower_case("/API/Admin").as_deref(), Some("/api/admin"));
        assert_eq!(
            lower_case("/A%2FB/%C3%A9X").as_deref(),
            Some("/a%2Fb/%C3%A9x")
        );
        assert_eq!(lower_case("/%AB"), None);
        assert_eq!(lower_case("/x%"), None);
    }
}
