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
//! * a trailing slash is preserved.
//!
//! The function is a single pass over the input and does not allocate when
//! the input already is canonical.

use std::borrow::Cow;

use http::request::Parts;
use http::{Method, Version};

use super::context::{Canonical, RequestContext};
use super::decide::Step;
use crate::error::Rejection;

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
    ctx.canonical = match normalize_path(uri.path()).map_err(Rejection::RejectPath)? {
        Cow::Borrowed(_) => Canonical::AsSent,
        Cow::Owned(p) => Canonical::Rewritten(p),
    };
    Ok(Step::Pass)
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

    // The current segment starts at index 1 and its separator is src[0].
    out.put(0, b'/');
    let mut i = 1;
    // Whether the canonical path ends with '/' (last segment empty, '.' or '..').
    let trailing = loop {
        let Some(&b) = src.get(i) else {
            break finish_segment(&mut out, seg_out, decoded, semi)?;
        };
        match b {
            b'/' => {
                // A '/' later in the input makes `trailing` irrelevant.
                finish_segment(&mut out, seg_out, decoded, semi)?;
                seg_out = out.len();
                decoded = false;
                semi = None;
                out.put(i, b'/');
                i += 1;
            }
            0x80..=0xFF => return Err(PathError::NonAscii),
            0x00..=0x1F | 0x7F => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (Some(&hi), Some(&lo)) = (src.get(i + 1), src.get(i + 2)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let (Some(h), Some(l)) = (hex_val(hi), hex_val(lo)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let v = (h << 4) | l;
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
) -> Result<bool, PathError> {
    let text = out.bytes().get(seg_out + 1..).unwrap_or_default();
    if let Some(k) = semi {
        if is_dots(text.get(..k).unwrap_or_default()) {
            return Err(PathError::DotSemicolon);
        }
        return Ok(false);
    }
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
        ("/a;b", "/a;b"),
        ("/a/b;jsessionid=1", "/a/b;jsessionid=1"),
        ("/a/;x/b", "/a/;x/b"),
        ("/a%3Bb", "/a%3Bb"),
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
    ];

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
            "/a;b=c",
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
        for _ in 0..2000 {
            let mut p = String::new();
            if rng.below(10) != 0 {
                p.push('/');
            }
            for _ in 0..rng.below(12) {
                p.push_str(PIECES[rng.below(PIECES.len())]);
            }
            match normalize_path(&p) {
                Ok(out) => {
                    accepted += 1;
                    assert_canonical(&out);
                    match normalize_path(&out) {
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
}
