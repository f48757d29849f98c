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
            remove_cookie(headers, name.as_bytes());
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
        remove_cookie(headers, name.as_bytes());
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

/// Rewrites the `Cookie` headers without the cookie `name` (compared after trimming, on the
/// raw bytes, so no spelling an app might read as that cookie survives). The other cookies
/// stay, in order; a header left empty goes.
fn remove_cookie(headers: &mut HeaderMap, name: &[u8]) {
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
        let is_token = |p: &&[u8]| {
            let n = p.split(|&c| c == b'=').next().unwrap_or(p);
            n.trim_ascii() == name
        };
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
