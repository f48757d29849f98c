//! Client credentials on the way to the app.
//!
//! - `forward_token: false`: the `Authorization` header and the token cookie never reach the
//!   app, on any request (the other cookies of the `Cookie` header stay).
//! - Otherwise the verified carrier goes on, and a bearer token or token cookie that fortress
//!   did not verify (public route, dry-run refusal, a cookie beside a verified header) is
//!   removed unless the policy says `forward_unverified_credentials: true`, so an app that
//!   reads the token itself never takes an unchecked one for a checked one.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderValue};

/// What the policy says about the client's credentials (present when `authentication` is
/// configured; without it fortress handles no credentials and forwards them as they are).
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The token cookie's name, if tokens are also read from a cookie.
    pub cookie: Option<&'a str>,
    /// Forward the verified token (`forward_token`).
    pub forward_token: bool,
    /// Forward a bearer token or token cookie fortress did not verify
    /// (`forward_unverified_credentials`).
    pub forward_unverified: bool,
}

/// Removes the credentials the app must not see. `verified` says whether fortress verified
/// the request's token; which carrier held it follows from the extraction rule (the
/// `Authorization` header when present, else the cookie).
pub fn apply(c: &Credentials<'_>, headers: &mut HeaderMap, verified: bool) {
    if !c.forward_token {
        headers.remove(AUTHORIZATION);
        if let Some(name) = c.cookie {
            remove_cookie(headers, name);
        }
        return;
    }
    if c.forward_unverified {
        return;
    }
    let from_header = verified && headers.contains_key(AUTHORIZATION);
    if !verified {
        remove_bearer(headers);
    }
    if let Some(name) = c.cookie
        && (!verified || from_header)
    {
        remove_cookie(headers, name);
    }
}

/// Removes every `Authorization` value that is (or might be) a bearer token; other schemes
/// (`Basic` for an app's own login) were never fortress's business and stay.
fn remove_bearer(headers: &mut HeaderMap) {
    let values: Vec<HeaderValue> = headers.get_all(AUTHORIZATION).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    let kept: Vec<HeaderValue> = values.into_iter().filter(|v| !is_bearer(v)).collect();
    headers.remove(AUTHORIZATION);
    for v in kept {
        headers.append(AUTHORIZATION, v);
    }
}

/// A value whose scheme is `Bearer` in any case, or one that cannot be read as a scheme at
/// all (fail closed: an unreadable value might be read as a bearer token by the app).
fn is_bearer(v: &HeaderValue) -> bool {
    let b = v.as_bytes().trim_ascii_start();
    let scheme = b.split(|c| c.is_ascii_whitespace()).next().unwrap_or(b);
    scheme.eq_ignore_ascii_case(b"bearer") || !scheme.iter().all(u8::is_ascii_graphic)
}

/// Whether a cookie name as sent (`raw`, before `=`) could be read by some app as the cookie
/// `name`: compared after trimming white space and quotes, percent-decoding (PHP decodes
/// names), ASCII case folding (ASP.NET Core's cookie collection ignores case) and mapping `.`,
/// space and `[` to `_` (PHP's variable-name mangling). Matching more spellings than a given
/// app reads only ever strips or refuses more, never less.
pub fn cookie_name_matches(raw: &[u8], name: &str) -> bool {
    let raw = raw.trim_ascii();
    let raw = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .unwrap_or(raw);
    let fold = |b: u8| match b {
        b'.' | b' ' | b'[' => b'_',
        other => other.to_ascii_lowercase(),
    };
    let mut want = name.bytes().map(fold);
    let mut i = 0;
    while i < raw.len() {
        let mut b = raw[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (
                raw.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                raw.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            )
        {
            // INVARIANT: two hex digits make a value below 256.
            b = u8::try_from(h * 16 + l).unwrap_or(b'%');
            i += 2;
        }
        if want.next() != Some(fold(b)) {
            return false;
        }
        i += 1;
    }
    want.next().is_none()
}

/// The name part of a `name=value` cookie pair.
pub fn cookie_pair_name(pair: &[u8]) -> &[u8] {
    pair.split(|&c| c == b'=').next().unwrap_or(pair)
}

/// Rewrites the `Cookie` headers without the cookie `name` in any spelling an app might read
/// as it ([`cookie_name_matches`]). The other cookies stay, in order; a header left empty goes.
fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    if !headers.contains_key(COOKIE) {
        return;
    }
    let values: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let pairs: Vec<&[u8]> = v
            .as_bytes()
            .split(|&c| c == b';')
            .map(<[u8]>::trim_ascii)
            .filter(|p| !p.is_empty())
            .collect();
        let is_token = |p: &&[u8]| cookie_name_matches(cookie_pair_name(p), name);
        if !pairs.iter().any(is_token) {
            out.push(v);
            continue;
        }
        let rest: Vec<&[u8]> = pairs.into_iter().filter(|p| !is_token(p)).collect();
        if rest.is_empty() {
            continue;
        }
        if let Ok(joined) = HeaderValue::from_bytes(&rest.join(&b"; "[..])) {
            out.push(joined);
        }
    }
    headers.remove(COOKIE);
    for v in out {
        headers.append(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    fn all(m: &HeaderMap, name: &str) -> Vec<String> {
        m.get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    const STRIP: Credentials<'static> = Credentials {
        cookie: Some("session"),
        forward_token: true,
        forward_unverified: false,
    };

    #[test]
    fn cookie_spellings_an_app_might_read_as_the_token_cookie() {
        for raw in [
            "session",
            " session ",
            "Session",
            "SESSION",
            "sess%69on",
            "%73ession",
            "\"session\"",
        ] {
            assert!(cookie_name_matches(raw.as_bytes(), "session"), "{raw}");
        }
        for raw in ["sessions", "session2", "xsession", "sess", "", "sess%6"] {
            assert!(!cookie_name_matches(raw.as_bytes(), "session"), "{raw}");
        }
        // PHP turns `.`, space and `[` in names into `_`.
        for raw in ["sess_id", "sess.id", "sess id", "sess[id", "SESS%2EID"] {
            assert!(cookie_name_matches(raw.as_bytes(), "sess_id"), "{raw}");
        }
    }

    #[test]
    fn every_spelling_of_the_token_cookie_is_stripped() {
        let mut m = h(&[
            ("cookie", "Session=forged; theme=dark"),
            ("cookie", "sess%69on=forged2; lang=en; session=x"),
        ]);
        apply(&STRIP, &mut m, false);
        assert_eq!(all(&m, "cookie"), vec!["theme=dark", "lang=en"]);
    }

    #[test]
    fn unverified_bearer_and_cookie_go_other_cookies_stay() {
        let mut m = h(&[
            ("authorization", "Bearer abc"),
            ("cookie", "session=tok; theme=dark"),
        ]);
        apply(&STRIP, &mut m, false);
        assert!(all(&m, "authorization").is_empty());
        assert_eq!(all(&m, "cookie"), ["theme=dark"]);

        for (bearer, kept) in [
            ("bearer x", false),
            ("BEARER x", false),
            ("  Bearer x", false),
            ("Bearer", false),
            ("Basic YTpi", true),
            ("Digest username=a", true),
            ("AWS4-HMAC-SHA256 Credential=x", true),
            ("Bearer\tx", false),
        ] {
            let mut m = h(&[("authorization", bearer)]);
            apply(&STRIP, &mut m, false);
            assert_eq!(m.contains_key("authorization"), kept, "{bearer:?}");
        }
        let mut m = HeaderMap::new();
        m.insert(
            "authorization",
            HeaderValue::from_bytes(b"\xffearer x").expect("obs-text"),
        );
        apply(&STRIP, &mut m, false);
        assert!(m.is_empty(), "an unreadable scheme goes");
    }

    #[test]
    fn cookie_rewrite() {
        let cases: [(&[&'static str], &[&str]); 7] = [
            (&["session=tok"], &[]),
            (&["a=1; session=tok; b=2"], &["a=1; b=2"]),
            (&["a=1;session=tok;b=2"], &["a=1; b=2"]),
            (&["session =tok; b=2"], &["b=2"]),
            (&["session=1; session=2; x=y"], &["x=y"]),
            (
                &["sessionid=keep; session2=keep"],
                &["sessionid=keep; session2=keep"],
            ),
            (&["a=1", "session=tok", "b=2; session=x"], &["a=1", "b=2"]),
        ];
        for (input, want) in cases {
            let mut m = HeaderMap::new();
            for v in input {
                m.append("cookie", HeaderValue::from_static(v));
            }
            apply(&STRIP, &mut m, false);
            assert_eq!(all(&m, "cookie"), want, "{input:?}");
        }
    }

    #[test]
    fn switches() {
        let keep = Credentials {
            forward_unverified: true,
            ..STRIP
        };
        let mut m = h(&[
            ("authorization", "Bearer abc"),
            ("cookie", "session=tok; theme=dark"),
        ]);
        apply(&keep, &mut m, false);
        assert_eq!(all(&m, "authorization"), ["Bearer abc"]);
        assert_eq!(all(&m, "cookie"), ["session=tok; theme=dark"]);

        // Verified from the header: the header follows forward_token, the cookie (not the one
        // verified) is unverified.
        let mut m = h(&[
            ("authorization", "Bearer abc"),
            ("cookie", "session=x; a=b"),
        ]);
        apply(&STRIP, &mut m, true);
        assert_eq!(all(&m, "authorization"), ["Bearer abc"]);
        assert_eq!(all(&m, "cookie"), ["a=b"]);

        // Verified from the cookie: kept with forward_token.
        let mut m = h(&[("cookie", "session=tok; a=b")]);
        apply(&STRIP, &mut m, true);
        assert_eq!(all(&m, "cookie"), ["session=tok; a=b"]);

        // forward_token false: neither carrier reaches the app, verified or not, whatever
        // the other switch says.
        let no_token = Credentials {
            forward_token: false,
            forward_unverified: true,
            ..STRIP
        };
        for verified in [false, true] {
            let mut m = h(&[("authorization", "Basic x"), ("cookie", "session=t; a=b")]);
            apply(&no_token, &mut m, verified);
            assert!(!m.contains_key("authorization"));
            assert_eq!(all(&m, "cookie"), ["a=b"]);
        }
        let mut m = h(&[("cookie", "session=tok; a=b")]);
        apply(&no_token, &mut m, true);
        assert_eq!(all(&m, "cookie"), ["a=b"]);
        let mut m = h(&[("authorization", "Bearer abc"), ("cookie", "a=b")]);
        apply(&no_token, &mut m, true);
        assert!(!m.contains_key("authorization"));
        assert_eq!(all(&m, "cookie"), ["a=b"]);
    }
}
