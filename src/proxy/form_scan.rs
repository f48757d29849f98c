//! Method overrides in form bodies (`_method=DELETE`), found while the body streams.
//!
//! Rails (`Rack::MethodOverride` reads only the POST form body), Laravel and Symfony (body and
//! query) and Express `method-override` with a body getter run the method a form body names
//! instead of the one fortress judged. The query is checked by `pipeline/ambiguity.rs`; this
//! scanner covers the body, chunk by chunk, with a few bytes of state carried across chunk
//! boundaries (nothing is buffered whole).
//!
//! Which bodies are scanned (the media type is the part of `Content-Type` before `;`, compared
//! without regard to case; each `,`-separated element counts):
//! - `application/x-www-form-urlencoded`, and a body with no `Content-Type` at all (Rack reads a
//!   POST without a type as a form): every key, percent-decoded (bad escapes kept), `+` as a
//!   space, split on `&` and `;`, is read like the query check reads keys: leading whitespace
//!   dropped, cut at the first `[` (`_method[]`, `_method[x]`), space and `.` as `_`, ASCII case
//!   ignored. A key that reads as `_method` is an override. Case is ignored on purpose (fail
//!   closed): no framework we know lower-cases keys, but nothing legitimate needs `_METHOD`.
//! - `multipart/*` (Rack parses any multipart type): a header section starts after any line
//!   beginning with `--` (whatever the boundary: parsers disagree on boundary quoting and
//!   case, so any delimiter-looking line counts) and ends at the first empty line. In it, a
//!   `Content-Disposition` field (or its continuation lines) whose `name` parameter, quoted or
//!   not, or `name*` / `name*0`, `name*1`… (RFC 2231/5987, percent-decoded, charset ignored,
//!   pieces joined) reads as `_method` (same folding as above) is an override. A header line in
//!   such a section longer than [`MAX_HEADER_LINE`] is refused too: it cannot be judged
//!   without buffering. Part contents are not looked at.
//!
//! - JSON (a media type containing `/json` or `+json`, Laravel's `isJson()` test): Laravel
//!   makes the decoded JSON body the request bag Symfony's `getMethod()` reads, so
//!   `{"_method":"DELETE"}` runs DELETE. Every object key, at any depth, is decoded (JSON
//!   escapes: `"\u005fmethod"` is `_method`) and folded as above; a key that reads as
//!   `_method` is an override. Values (`{"a":"_method"}`) are not keys and pass.
//!
//! Text and every other type are not scanned.

use http::{HeaderMap, header};

/// Longest multipart header line (in a header section) the scanner keeps to judge.
pub const MAX_HEADER_LINE: usize = 4096;

const NAME: &[u8] = b"_method";

/// The scanner for one request body: urlencoded keys, multipart part names, or both (a
/// `Content-Type` list naming both kinds: whichever the app picks is covered).
#[derive(Debug, Default)]
pub struct FormScan {
    urlencoded: Option<Urlencoded>,
    multipart: Option<Multipart>,
    json: Option<Json>,
}

impl FormScan {
    /// The scanner for a request with these headers, if its body is a form.
    pub fn for_request(headers: &HeaderMap) -> Option<Self> {
        let mut scan = Self::default();
        let mut types = headers.get_all(header::CONTENT_TYPE).iter().peekable();
        if types.peek().is_none() {
            scan.urlencoded = Some(Urlencoded::default());
        }
        for v in types {
            for element in v.as_bytes().split(|&b| b == b',') {
                let media = element.split(|&b| b == b';').next().unwrap_or_default();
                let media = media.trim_ascii();
                if media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
                    scan.urlencoded = Some(Urlencoded::default());
                } else if media.len() >= 10 && media[..10].eq_ignore_ascii_case(b"multipart/") {
                    scan.multipart = Some(Multipart::default());
                } else if is_json(media) {
                    scan.json = Some(Json::default());
                }
            }
        }
        (scan.urlencoded.is_some() || scan.multipart.is_some() || scan.json.is_some())
            .then_some(scan)
    }

    /// Feeds the next chunk; `true` when the body so far names `_method`.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        self.urlencoded.as_mut().is_some_and(|u| u.feed(chunk))
            || self.multipart.as_mut().is_some_and(|m| m.feed(chunk))
            || self.json.as_mut().is_some_and(|j| j.feed(chunk))
    }

    /// The body ended; `true` when its last key or line names `_method`.
    pub fn finish(&mut self) -> bool {
        self.urlencoded.as_mut().is_some_and(Urlencoded::end_key)
            || self.multipart.as_mut().is_some_and(Multipart::end_line)
    }
}

/// Folds decoded key bytes against `_method`: leading whitespace dropped, cut at `[`, space
/// and `.` as `_`, ASCII case ignored.
#[derive(Debug, Default, Clone)]
struct KeyMatch {
    started: bool,
    matched: usize,
    dead: bool,
    decided: bool,
}

impl KeyMatch {
    /// Feeds one decoded byte; `true` when the key is decided to be `_method` (at a `[`).
    fn byte(&mut self, b: u8) -> bool {
        if self.dead || self.decided {
            return false;
        }
        if !self.started && b.is_ascii_whitespace() {
            return false;
        }
        self.started = true;
        if b == b'[' {
            self.decided = true;
            return self.matched == NAME.len();
        }
        let b = match b {
            b' ' | b'.' => b'_',
            b => b.to_ascii_lowercase(),
        };
        if self.matched < NAME.len() && NAME[self.matched] == b {
            self.matched += 1;
        } else {
            self.dead = true;
        }
        false
    }

    /// The key ended: whether it was `_method` (and not decided earlier).
    fn end(&mut self) -> bool {
        let hit = !self.dead && !self.decided && self.matched == NAME.len();
        *self = Self::default();
        hit
    }
}

/// Whether a media type is JSON the way Laravel's `isJson()` reads it (`/json` or `+json`).
fn is_json(media: &[u8]) -> bool {
    media
        .windows(5)
        .any(|w| w.eq_ignore_ascii_case(b"/json") || w.eq_ignore_ascii_case(b"+json"))
}

/// Where the JSON key scanner is.
#[derive(Debug, Default, Clone, Copy)]
enum JsonAt {
    /// Between strings.
    #[default]
    Outside,
    /// Inside a string.
    InString,
    /// A string just ended; whether it read as `_method` (a key if a `:` follows).
    AfterString(bool),
}

/// An escape inside a JSON string: after `\`, or in `\uXXXX` with the digits so far.
#[derive(Debug, Default, Clone, Copy)]
enum JsonEsc {
    #[default]
    None,
    Backslash,
    Unicode(u8, u32),
}

/// Object keys of a JSON body, decoded, at any depth (see the module doc). Not a validator:
/// it only needs to find every string followed by `:`.
#[derive(Debug, Default)]
pub struct Json {
    at: JsonAt,
    esc: JsonEsc,
    key: KeyMatch,
    early: bool,
}

impl Json {
    fn feed(&mut self, chunk: &[u8]) -> bool {
        chunk.iter().any(|&b| self.byte(b))
    }

    /// One decoded string byte (non-ASCII as 0xFF: it never matches).
    fn decoded(&mut self, b: u8) {
        if self.key.byte(b) {
            self.early = true;
        }
    }

    fn byte(&mut self, b: u8) -> bool {
        match self.at {
            JsonAt::Outside => {
                if b == b'"' {
                    self.at = JsonAt::InString;
                    self.key = KeyMatch::default();
                    self.early = false;
                }
                false
            }
            JsonAt::InString => {
                match self.esc {
                    JsonEsc::Backslash => {
                        self.esc = JsonEsc::None;
                        let d = match b {
                            b'u' => {
                                self.esc = JsonEsc::Unicode(0, 0);
                                return false;
                            }
                            b'"' | b'\\' | b'/' => b,
                            b'b' => 0x08,
                            b'f' => 0x0c,
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            _ => 0xFF,
                        };
                        self.decoded(d);
                    }
                    JsonEsc::Unicode(n, v) => match hex(b) {
                        Some(d) if n < 3 => {
                            self.esc = JsonEsc::Unicode(n + 1, v * 16 + u32::from(d))
                        }
                        Some(d) => {
                            self.esc = JsonEsc::None;
                            let cp = v * 16 + u32::from(d);
                            self.decoded(
                                u8::try_from(cp).ok().filter(u8::is_ascii).unwrap_or(0xFF),
                            );
                        }
                        None => {
                            self.esc = JsonEsc::None;
                            self.decoded(0xFF);
                        }
                    },
                    JsonEsc::None => match b {
                        b'\\' => self.esc = JsonEsc::Backslash,
                        b'"' => {
                            let hit = self.key.end() || self.early;
                            self.at = JsonAt::AfterString(hit);
                        }
                        _ => self.decoded(b),
                    },
                }
                false
            }
            JsonAt::AfterString(hit) => {
                if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                    return false;
                }
                if b == b':' {
                    self.at = JsonAt::Outside;
                    return hit;
                }
                self.at = JsonAt::Outside;
                self.byte(b)
            }
        }
    }
}

/// Percent-decoding state: `%`, or `%` and one hex digit.
#[derive(Debug, Default, Clone, Copy)]
enum Pct {
    #[default]
    None,
    One,
    Two(u8),
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The urlencoded scanner: in a key or in a value, the key's match state, a pending escape.
#[derive(Debug, Default)]
pub struct Urlencoded {
    in_value: bool,
    pct: Pct,
    key: KeyMatch,
}

impl Urlencoded {
    fn feed(&mut self, mut chunk: &[u8]) -> bool {
        while let Some((&b, rest)) = chunk.split_first() {
            if self.in_value {
                // Values are not looked at: skip to the next separator.
                match rest.iter().position(|&c| c == b'&' || c == b';') {
                    _ if b == b'&' || b == b';' => {}
                    Some(i) => {
                        chunk = &rest[i..];
                        continue;
                    }
                    None => return false,
                }
            } else if self.key.dead || self.key.decided {
                // A key already judged: skip to its end.
                match chunk
                    .iter()
                    .position(|&c| c == b'&' || c == b';' || c == b'=')
                {
                    Some(0) => {}
                    Some(i) => {
                        chunk = &chunk[i..];
                        continue;
                    }
                    None => return false,
                }
            }
            if self.byte(b) {
                return true;
            }
            chunk = rest;
        }
        false
    }

    fn byte(&mut self, b: u8) -> bool {
        if b == b'&' || b == b';' {
            let hit = !self.in_value && self.end_key();
            self.in_value = false;
            self.pct = Pct::None;
            self.key = KeyMatch::default();
            return hit;
        }
        if self.in_value {
            return false;
        }
        if b == b'=' {
            let hit = self.end_key();
            self.in_value = true;
            return hit;
        }
        self.key_byte(b)
    }

    /// A raw key byte through the percent decoder.
    fn key_byte(&mut self, b: u8) -> bool {
        match self.pct {
            Pct::None if b == b'%' => {
                self.pct = Pct::One;
                false
            }
            Pct::None => self.key.byte(if b == b'+' { b' ' } else { b }),
            Pct::One => match hex(b) {
                Some(h) => {
                    self.pct = Pct::Two(h);
                    false
                }
                None => {
                    self.pct = Pct::None;
                    self.key.byte(b'%') | self.key_byte(b)
                }
            },
            Pct::Two(h) => {
                self.pct = Pct::None;
                match hex(b) {
                    Some(l) => self.key.byte(h << 4 | l),
                    None => {
                        let hi = b"0123456789abcdef"[h as usize];
                        self.key.byte(b'%') | self.key.byte(hi) | self.key_byte(b)
                    }
                }
            }
        }
    }

    /// The current key ended (at `=`, `&`, `;` or the body's end).
    fn end_key(&mut self) -> bool {
        if self.in_value {
            return false;
        }
        let pending = std::mem::take(&mut self.pct);
        let flushed = match pending {
            Pct::None => false,
            Pct::One => self.key.byte(b'%'),
            Pct::Two(h) => self.key.byte(b'%') | self.key.byte(b"0123456789abcdef"[h as usize]),
        };
        flushed | self.key.end()
    }
}

/// The multipart scanner: line by line; header lines of a part are kept (bounded) to judge.
#[derive(Debug, Default)]
pub struct Multipart {
    /// In a part's header section (after a `--` line, before the empty line).
    in_headers: bool,
    /// The current line starts with `--` (tracked outside header sections).
    line_len: usize,
    dashes: bool,
    /// The current header line, when in a header section.
    line: Vec<u8>,
    /// The previous header line was `Content-Disposition` (for continuation lines).
    disposition: bool,
}

impl Multipart {
    fn feed(&mut self, mut chunk: &[u8]) -> bool {
        while let Some((&b, rest)) = chunk.split_first() {
            if !self.in_headers && self.line_len >= 2 && b != b'\n' {
                // Past the start of a body line: only its end matters.
                match rest.iter().position(|&c| c == b'\n') {
                    Some(i) => {
                        self.line_len = self.line_len.saturating_add(i + 1);
                        chunk = &rest[i..];
                        continue;
                    }
                    None => {
                        self.line_len = self.line_len.saturating_add(chunk.len());
                        return false;
                    }
                }
            }
            if self.byte(b) {
                return true;
            }
            chunk = rest;
        }
        false
    }

    fn byte(&mut self, b: u8) -> bool {
        if b == b'\n' {
            return self.end_line();
        }
        if self.in_headers {
            if self.line.len() >= MAX_HEADER_LINE {
                return true;
            }
            self.line.push(b);
        } else {
            if self.line_len < 2 {
                self.dashes = b == b'-' && (self.line_len == 0 || self.dashes);
            }
            self.line_len = self.line_len.saturating_add(1);
        }
        false
    }

    fn end_line(&mut self) -> bool {
        if !self.in_headers {
            let delimiter = self.dashes && self.line_len >= 2;
            self.line_len = 0;
            self.dashes = false;
            if delimiter {
                self.in_headers = true;
                self.disposition = false;
            }
            return false;
        }
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let hit = if line.trim_ascii().is_empty() {
            self.in_headers = false;
            self.disposition = false;
            false
        } else if line[0] == b' ' || line[0] == b'\t' {
            self.disposition && names_method(line)
        } else {
            self.disposition = false;
            match line.iter().position(|&b| b == b':') {
                Some(colon)
                    if line[..colon]
                        .trim_ascii()
                        .eq_ignore_ascii_case(b"content-disposition") =>
                {
                    self.disposition = true;
                    names_method(&line[colon + 1..])
                }
                _ => false,
            }
        };
        // Keep the allocation for the next header line.
        self.line.clear();
        hit
    }
}

/// Whether `Content-Disposition` parameters carry a `name` that reads as `_method`.
fn names_method(params: &[u8]) -> bool {
    let mut continued: Vec<u8> = Vec::new();
    for (key, value) in parameters(params) {
        let key = key.trim_ascii();
        if key.eq_ignore_ascii_case(b"name") {
            if folds_to_method(&value) {
                return true;
            }
        } else if key.len() > 4 && key[..5].eq_ignore_ascii_case(b"name*") {
            let extended = key.ends_with(b"*") && key.len() > 5 || key.len() == 5;
            let value = if extended { ext_value(&value) } else { value };
            if folds_to_method(&value) {
                return true;
            }
            continued.extend_from_slice(&value);
        }
    }
    !continued.is_empty() && folds_to_method(&continued)
}

/// RFC 5987 `charset'lang'pct-encoded` → the decoded bytes (charset ignored); a value without
/// the two `'` is percent-decoded as a whole.
fn ext_value(v: &[u8]) -> Vec<u8> {
    let mut quotes = v.iter().enumerate().filter(|(_, b)| **b == b'\'');
    let rest = match (quotes.next(), quotes.next()) {
        (Some(_), Some((i, _))) => &v[i + 1..],
        _ => v,
    };
    let mut out = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == b'%'
            && let (Some(h), Some(l)) = (
                rest.get(i + 1).copied().and_then(hex),
                rest.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(rest[i]);
        i += 1;
    }
    out
}

fn folds_to_method(v: &[u8]) -> bool {
    let mut k = KeyMatch::default();
    v.iter().any(|&b| k.byte(b)) || k.end()
}

/// `; key=value` pairs of a header value: values unquoted (backslash escapes resolved), `;`
/// inside quotes kept; the leading disposition type (no `=`) is skipped.
fn parameters(v: &[u8]) -> Vec<(&[u8], Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        // Key up to `=` or `;`.
        let start = i;
        while i < v.len() && v[i] != b'=' && v[i] != b';' {
            i += 1;
        }
        let key = &v[start..i];
        if i == v.len() || v[i] == b';' {
            i += 1;
            continue;
        }
        i += 1; // `=`
        while i < v.len() && (v[i] == b' ' || v[i] == b'\t') {
            i += 1;
        }
        let mut value = Vec::new();
        if v.get(i) == Some(&b'"') {
            i += 1;
            while i < v.len() && v[i] != b'"' {
                if v[i] == b'\\' && i + 1 < v.len() {
                    i += 1;
                }
                value.push(v[i]);
                i += 1;
            }
            // Past the closing quote, up to the next `;`.
            while i < v.len() && v[i] != b';' {
                i += 1;
            }
        } else {
            while i < v.len() && v[i] != b';' {
                value.push(v[i]);
                i += 1;
            }
            value = value.trim_ascii().to_vec();
        }
        i += 1; // `;`
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(ct: Option<&str>, chunks: &[&[u8]]) -> Option<bool> {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(header::CONTENT_TYPE, ct.parse().expect("ct"));
        }
        let mut s = FormScan::for_request(&h)?;
        Some(chunks.iter().any(|c| s.feed(c)) || s.finish())
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn urlencoded_keys_in_every_spelling() {
        for body in [
            "_method=DELETE",
            "a=1&_method=DELETE&b=2",
            "a=1&_method=DELETE",
            "a=1&_method",
            "%5Fmethod=DELETE",
            "%5fm%45thod=DELETE",
            "_METHOD=put",
            "_method[]=DELETE",
            "_method[x]=DELETE",
            "+_method=DELETE",
            "a=1;_method=DELETE",
            ".method=x",
            "_method%5B%5D=DELETE",
        ] {
            assert_eq!(scan(FORM, &[body.as_bytes()]), Some(true), "{body}");
            // Split at every byte boundary.
            for cut in 0..body.len() {
                let (a, b) = body.as_bytes().split_at(cut);
                assert_eq!(scan(FORM, &[a, b]), Some(true), "{body} cut at {cut}");
            }
            let bytes: Vec<&[u8]> = body.as_bytes().chunks(1).collect();
            assert_eq!(scan(FORM, &bytes), Some(true), "{body} byte by byte");
        }
        // Values are skipped, whatever the cut.
        let long = format!("a={}&b={}&_method=1", "v".repeat(100), "w;".repeat(50));
        for size in 1..16 {
            let chunks: Vec<&[u8]> = long.as_bytes().chunks(size).collect();
            assert_eq!(scan(FORM, &chunks), Some(true), "by {size}");
        }
        for body in [
            "x_method=1",
            "method=1",
            "a=_method",
            "_methods=1",
            "a=1&b=%5Fmethod",
            "_meth%6",
            "%zz_method=1",
            "",
        ] {
            assert_eq!(scan(FORM, &[body.as_bytes()]), Some(false), "{body}");
        }
    }

    #[test]
    fn which_bodies_are_scanned() {
        assert!(scan(None, &[b"_method=PUT"]) == Some(true));
        assert!(
            scan(
                Some("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
                &[b"_method=PUT"]
            ) == Some(true)
        );
        assert!(scan(Some("multipart/form-data; boundary=x"), &[b""]) == Some(false));
        assert_eq!(
            scan(Some("application/json"), &[b"_method=PUT"]),
            Some(false)
        );
        assert_eq!(scan(Some("text/plain"), &[b"_method=PUT"]), None);
    }

    #[test]
    fn json_keys_at_any_depth_in_any_escape() {
        for ct in [
            "application/json",
            "application/vnd.api+json; charset=utf-8",
            "text/JSON",
        ] {
            for body in [
                r#"{"_method":"DELETE"}"#,
                r#"{ "a": 1, "_method" : "DELETE" }"#,
                r#"{"a":{"b":[{"_method":"PUT"}]}}"#,
                r#"{"\u005fmethod":"DELETE"}"#,
                r#"{"_m\u0065thod":"DELETE"}"#,
                r#"{"_METHOD":"DELETE"}"#,
                r#"{"a":"x\"y","_method":1}"#,
                "{\"_method\"\n:\t\"DELETE\"}",
            ] {
                assert_eq!(
                    scan(Some(ct), &[body.as_bytes()]),
                    Some(true),
                    "{ct} {body}"
                );
                for cut in 0..body.len() {
                    let (a, b) = body.as_bytes().split_at(cut);
                    assert_eq!(scan(Some(ct), &[a, b]), Some(true), "{body} cut at {cut}");
                }
            }
        }
        for body in [
            r#"{"a":"_method"}"#,
            r#"["_method", 1]"#,
            r#"{"x_method":1,"_methods":2}"#,
            r#"{"a":"\"_method\":"}"#,
            r#"{"_meth\u00f6d":1}"#,
            r#""_method""#,
        ] {
            assert_eq!(
                scan(Some("application/json"), &[body.as_bytes()]),
                Some(false),
                "{body}"
            );
        }
    }

    fn part(disposition: &str, content: &str) -> String {
        format!(
            "--XyZ\r\n{disposition}\r\nContent-Type: text/plain\r\n\r\n{content}\r\n--XyZ--\r\n"
        )
    }

    const MP: Option<&str> = Some("multipart/form-data; boundary=XyZ");

    #[test]
    fn multipart_part_names() {
        for d in [
            "Content-Disposition: form-data; name=\"_method\"",
            "content-disposition: form-data; name=_method",
            "Content-Disposition: form-data; NAME=\"_METHOD\"",
            "Content-Disposition: form-data; name=\"_method[]\"",
            "Content-Disposition: form-data; name*=UTF-8''%5Fmethod",
            "Content-Disposition: form-data; name*=utf-8'en'_method",
            "Content-Disposition: form-data; name*0=\"_met\"; name*1=\"hod\"",
            "Content-Disposition: form-data; x=\"a;b\"; name=\"_method\"",
            "Content-Disposition : form-data; name=\"_m\\ethod\"",
            "Content-Disposition: form-data;\r\n name=\"_method\"",
            "Content-Disposition: form-data; name=\"_method\"; filename=\"a.txt\"",
        ] {
            let body = part(d, "DELETE");
            assert_eq!(scan(MP, &[body.as_bytes()]), Some(true), "{d}");
            let bytes: Vec<&[u8]> = body.as_bytes().chunks(1).collect();
            assert_eq!(scan(MP, &bytes), Some(true), "{d} byte by byte");
            for cut in 0..body.len() {
                let (a, b) = body.as_bytes().split_at(cut);
                assert_eq!(scan(MP, &[a, b]), Some(true), "{d} cut at {cut}");
            }
        }
        for (d, content) in [
            (
                "Content-Disposition: form-data; name=\"x_method\"",
                "DELETE",
            ),
            ("Content-Disposition: form-data; name=\"method\"", "DELETE"),
            (
                "Content-Disposition: form-data; name=\"file\"; filename=\"_method\"",
                "_method=DELETE\r\nname=\"_method\"",
            ),
            (
                "Content-Disposition: form-data; name=\"f\"",
                "Content-Disposition: form-data; name=\"_method\"",
            ),
        ] {
            let body = part(d, content);
            assert_eq!(scan(MP, &[body.as_bytes()]), Some(false), "{d} / {content}");
            for size in 1..8 {
                let chunks: Vec<&[u8]> = body.as_bytes().chunks(size).collect();
                assert_eq!(scan(MP, &chunks), Some(false), "{d} / {content} by {size}");
            }
        }
        // An endless header line is refused.
        let long = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"{}",
            "a".repeat(5000)
        );
        assert_eq!(scan(MP, &[long.as_bytes()]), Some(true));
    }
}
