//! The request-limits stage: body size on `Content-Length` (413, before anything is
//! forwarded; a streamed body is counted as it arrives by `proxy/client_body.rs`) and the
//! route's `content_types` (415). Stateless and cheap: it runs before anything that consumes
//! state (rate limits, budgets, concurrency).
//!
//! `Content-Type` is read strictly (RFC 9110 §8.3): exactly one field, `type/subtype` tokens,
//! then only well-formed `; name=value` parameters (ignored for the match), compared without
//! regard to case. A list (`application/json, text/html`), a second field, or anything the
//! grammar does not allow is refused: an app could read another type than the one judged.
//! A second `Content-Type` field on a request with a body is refused on every route (415
//! `ambiguous_content_type`), `content_types` or not.

use http::request::Parts;
use http::{HeaderMap, header};

use super::context::RequestContext;
use super::decide::Step;
use crate::error::{LimitError, MediaTypeError, Rejection};
use crate::policy::edge::EdgeRules;

/// The edge rules for this request: its route's, or the policy-wide ones.
pub fn rules(ctx: &RequestContext) -> &EdgeRules {
    match ctx.route() {
        Some(r) => &r.edge,
        None => &ctx.snapshot.policy.edge,
    }
}

/// Whether the framing headers say there is no body (no `Content-Length`, no
/// `Transfer-Encoding`, or `Content-Length: 0`). Over HTTP/2 the proxy replaces this with
/// what the stream says (`END_STREAM` on the headers).
pub fn no_body_framing(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

/// Size on `Content-Length`, then the media type.
pub fn check(ctx: &mut RequestContext, req: &Parts) -> Result<Step, Rejection> {
    let rules = rules(ctx);
    // The framing stage let through at most one `Content-Length` of 1–19 digits.
    let length = match req.headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Rejection::PayloadTooLarge(
                    LimitError::ContentLengthTooLarge,
                ))?,
        ),
        None => None,
    };
    if length.is_some_and(|n| n > rules.max_body) {
        return Err(Rejection::PayloadTooLarge(
            LimitError::ContentLengthTooLarge,
        ));
    }
    let has_body = match length {
        Some(n) => n > 0,
        None => !ctx.body_empty,
    };
    // Two `Content-Type` fields on a body, on every route: app servers disagree on them
    // (gunicorn refuses, Express reads the first), so the form scan could judge another body
    // type than the app parses.
    if has_body
        && req
            .headers
            .get_all(header::CONTENT_TYPE)
            .iter()
            .nth(1)
            .is_some()
    {
        return Err(media(MediaTypeError::AmbiguousContentType));
    }
    let Some(allowed) = &rules.content_types else {
        return Ok(Step::Pass);
    };
    let mut fields = req.headers.get_all(header::CONTENT_TYPE).iter();
    let (first, second) = (fields.next(), fields.next());
    let value = match (first, second) {
        (None, _) if has_body => return Err(media(MediaTypeError::MissingContentType)),
        // No body and no type: a GET, a DELETE, an empty POST. Nothing to judge.
        (None, _) => return Ok(Step::Skip("no body and no Content-Type")),
        (Some(_), Some(_)) => return Err(media(MediaTypeError::AmbiguousContentType)),
        (Some(v), None) => v,
    };
    let (kind, subtype) = parse_media_type(value.as_bytes())?;
    if allowed.iter().any(|r| r.matches(&kind, &subtype)) {
        Ok(Step::Pass)
    } else {
        Err(media(MediaTypeError::ContentTypeNotAllowed))
    }
}

fn media(e: MediaTypeError) -> Rejection {
    Rejection::UnsupportedMediaType(e)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `type/subtype *( OWS ";" OWS [ token "=" ( token / quoted-string ) ] )`, lower-cased type
/// and subtype. A `,` outside a quoted string is a list: ambiguous.
pub fn parse_media_type(v: &[u8]) -> Result<(String, String), Rejection> {
    let malformed = media(MediaTypeError::MalformedContentType);
    // A comma outside a quoted string: two media types in one field.
    let mut quoted = false;
    let mut escaped = false;
    for &b in v {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return Err(media(MediaTypeError::AmbiguousContentType)),
            _ => {}
        }
    }
    let mut i = 0;
    let token = |i: &mut usize| -> Option<(usize, usize)> {
        let start = *i;
        while *i < v.len() && is_tchar(v[*i]) {
            *i += 1;
        }
        (*i > start).then_some((start, *i))
    };
    let (ts, te) = token(&mut i).ok_or(malformed)?;
    if v.get(i) != Some(&b'/') {
        return Err(malformed);
    }
    i += 1;
    let (ss, se) = token(&mut i).ok_or(malformed)?;
    // Parameters.
    loop {
        while i < v.len() && is_ows(v[i]) {
            i += 1;
        }
        if i == v.len() {
            break;
        }
        if v[i] != b';' {
            return Err(malformed);
        }
        i += 1;
        while i < v.len() && is_ows(v[i]) {
            i += 1;
        }
        if i == v.len() || v[i] == b';' {
            // An empty parameter (`application/json;`) is allowed by the grammar.
            continue;
        }
        token(&mut i).ok_or(malformed)?;
        if v.get(i) != Some(&b'=') {
            return Err(malformed);
        }
        i += 1;
        if v.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match v.get(i) {
                    None => return Err(malformed),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        match v.get(i + 1) {
                            Some(&c) if c == b'\t' || (0x20..0x7f).contains(&c) || c >= 0x80 => {}
                            _ => return Err(malformed),
                        }
                        i += 2;
                    }
                    Some(&c) if c == b'\t' || (0x20..0x7f).contains(&c) || c >= 0x80 => i += 1,
                    Some(_) => return Err(malformed),
                }
            }
        } else {
            token(&mut i).ok_or(malformed)?;
        }
    }
    let lower = |s: usize, e: usize| String::from_utf8_lossy(&v[s..e]).to_ascii_lowercase();
    Ok((lower(ts, te), lower(ss, se)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(v: &str) -> Result<(String, String), &'static str> {
        parse_media_type(v.as_bytes()).map_err(|r| r.reason())
    }

    #[test]
    fn media_types() {
        let json = Ok(("application".to_string(), "json".to_string()));
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"utf-8\"",
            "application/json ;\tcharset=UTF-8",
            "application/json;",
            "application/json; ;",
            "application/json; a=\"x,y\"",
            "application/json; a=\"x\\\"y\"",
        ] {
            assert_eq!(parsed(ok), json, "{ok}");
        }
        for (bad, why) in [
            ("application/json, text/html", "ambiguous_content_type"),
            ("application/json,", "ambiguous_content_type"),
            (
                "application/json; a=\"x\",text/html",
                "ambiguous_content_type",
            ),
            ("application /json", "malformed_content_type"),
            ("application/ json", "malformed_content_type"),
            ("application/json text/html", "malformed_content_type"),
            ("application", "malformed_content_type"),
            ("/json", "malformed_content_type"),
            ("application/json; charset", "malformed_content_type"),
            ("application/json; charset=", "malformed_content_type"),
            ("application/json; a=\"open", "malformed_content_type"),
            ("application/json/x", "malformed_content_type"),
            ("application/json\u{0}", "malformed_content_type"),
            ("", "malformed_content_type"),
        ] {
            assert_eq!(parsed(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn framing_says_no_body() {
        let mut h = HeaderMap::new();
        assert!(no_body_framing(&h));
        h.insert(header::CONTENT_LENGTH, "0".parse().expect("v"));
        assert!(no_body_framing(&h));
        h.insert(header::CONTENT_LENGTH, "1".parse().expect("v"));
        assert!(!no_body_framing(&h));
        let mut h = HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().expect("v"));
        assert!(!no_body_framing(&h));
    }
}
