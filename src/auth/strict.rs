//! Strict reading of a token's JOSE header and payload: JSON parsed with a check for repeated
//! member names (serde_json silently keeps the last one), the header parameters fortress
//! refuses (`crit`, `b64`), and the JSON types of the registered claims.
//!
//! Every function here reads the decoded bytes of the token's own segments, the same bytes
//! the signature covers, so what is checked is what was verified.

use std::cell::Cell;
use std::fmt;

use base64::Engine;
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::AuthError;

/// Deepest nesting of objects and arrays accepted in a header or payload.
pub const MAX_DEPTH: usize = 32;

/// Parses `bytes` as one JSON value, refusing a member name repeated in any object (compared
/// after unescaping, so `"al\u0067"` repeats `"alg"`) and nesting deeper than [`MAX_DEPTH`].
pub fn parse(bytes: &[u8]) -> Result<Value, AuthError> {
    let duplicate = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Node {
        depth: 0,
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if duplicate.get() => Err(AuthError::DuplicateMember),
        Err(_) => Err(AuthError::MalformedToken),
    }
}

/// Decodes one base64url segment (no padding) and parses it with [`parse`].
pub fn segment(b64: &str) -> Result<Value, AuthError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| AuthError::MalformedToken)?;
    parse(&bytes)
}

/// The JOSE header of `token`, strictly parsed and checked: an object without repeated
/// members, without `crit` (no extension is understood, so any `crit` refuses, RFC 7515
/// §4.1.11) and without `b64` (RFC 7797: only the base64url-encoded payload is verified).
pub fn header(token: &str) -> Result<Map<String, Value>, AuthError> {
    let header_b64 = token.split('.').next().ok_or(AuthError::MalformedToken)?;
    let Value::Object(header) = segment(header_b64)? else {
        return Err(AuthError::MalformedToken);
    };
    if header.contains_key("crit") {
        return Err(AuthError::CriticalHeader);
    }
    if header.contains_key("b64") {
        return Err(AuthError::UnencodedPayload);
    }
    Ok(header)
}

/// The payload of `token`, strictly parsed, with the registered claims' types checked.
pub fn payload(token: &str) -> Result<Value, AuthError> {
    let mut parts = token.split('.');
    let payload_b64 = parts.nth(1).ok_or(AuthError::MalformedToken)?;
    let claims = segment(payload_b64)?;
    registered_claim_types(&claims)?;
    Ok(claims)
}

/// RFC 7519 §4.1: `iss`, `sub`, `jti` are strings; `aud` a string or a list of strings;
/// `exp`, `nbf`, `iat` NumericDates. Fortress takes a NumericDate only as a non-negative JSON
/// integer (no fraction, no exponent): RFC 7519 §2 allows non-integer values, but every
/// issuer writes integers, and a float such as `1e20` would be read differently by different
/// libraries. A claim that is absent is not checked here (presence is a separate rule).
pub fn registered_claim_types(claims: &Value) -> Result<(), AuthError> {
    let Value::Object(map) = claims else {
        return Err(AuthError::MalformedToken);
    };
    for name in ["iss", "sub", "jti"] {
        if map.get(name).is_some_and(|v| !v.is_string()) {
            return Err(AuthError::InvalidClaimType);
        }
    }
    match map.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => return Err(AuthError::InvalidClaimType),
    }
    for name in ["exp", "nbf", "iat"] {
        if map.get(name).is_some_and(|v| !v.is_u64()) {
            return Err(AuthError::InvalidClaimType);
        }
    }
    Ok(())
}

/// One JSON value at `depth`; sets `duplicate` when it fails on a repeated member name.
#[derive(Clone, Copy)]
struct Node<'c> {
    depth: usize,
    duplicate: &'c Cell<bool>,
}

impl Node<'_> {
    fn child<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nested too deep"));
        }
        Ok(Self {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(child)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                self.duplicate.set(true);
                return Err(A::Error::custom("repeated member name"));
            }
            let value = map.next_value_seed(child)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn parses_like_serde_json_without_repeats() {
        for text in [
            r#"{"a":1,"b":[1,2,{"c":null}],"d":{"e":"f"},"g":-3,"h":1.5,"i":true}"#,
            "[]",
            r#""s""#,
            "0",
        ] {
            let want: Value = serde_json::from_str(text).expect("json");
            assert_eq!(parse(text.as_bytes()), Ok(want), "{text}");
        }
    }

    #[test]
    fn repeated_member_names_are_refused_at_any_depth() {
        for text in [
            r#"{"sub":"a","sub":"b"}"#,
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"{"al\u0067":"HS256","alg":"none"}"#,
            r#"{"realm_access":{"roles":["viewer"],"roles":["admin"]}}"#,
            r#"{"a":[{"x":1,"x":1}]}"#,
            r#"{"a":{"b":{"c":{"d":1,"d":2}}}}"#,
        ] {
            assert_eq!(
                parse(text.as_bytes()),
                Err(AuthError::DuplicateMember),
                "{text}"
            );
        }
        // Same name in different objects is fine.
        assert!(parse(br#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
    }

    #[test]
    fn malformed_or_too_deep_is_malformed() {
        for text in ["", "{", r#"{"a":1}x"#, r#"{"a":1,}"#, "not json"] {
            assert_eq!(
                parse(text.as_bytes()),
                Err(AuthError::MalformedToken),
                "{text}"
            );
        }
        let deep = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(deep.as_bytes()).is_ok());
        let deeper = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse(deeper.as_bytes()), Err(AuthError::MalformedToken));
        let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert_eq!(
            parse(deep_objects.as_bytes()),
            Err(AuthError::MalformedToken)
        );
    }

    #[test]
    fn header_parameters() {
        let token = |h: &str| format!("{}.e30.sig", b64(h));
        assert!(header(&token(r#"{"alg":"HS256","typ":"JWT"}"#)).is_ok());
        for (h, want) in [
            (r#"{"alg":"HS256","crit":[]}"#, AuthError::CriticalHeader),
            (
                r#"{"alg":"HS256","crit":["exp"]}"#,
                AuthError::CriticalHeader,
            ),
            (
                r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
                AuthError::CriticalHeader,
            ),
            (
                r#"{"alg":"HS256","b64":false}"#,
                AuthError::UnencodedPayload,
            ),
            (r#"{"alg":"HS256","b64":true}"#, AuthError::UnencodedPayload),
            (
                r#"{"alg":"HS256","alg":"none"}"#,
                AuthError::DuplicateMember,
            ),
            (r#"["alg"]"#, AuthError::MalformedToken),
        ] {
            assert_eq!(header(&token(h)).map(|_| ()), Err(want), "{h}");
        }
    }

    #[test]
    fn registered_claim_json_types() {
        let ok = json!({"iss": "i", "sub": "s", "jti": "j", "aud": ["a", "b"], "exp": 1, "nbf": 0, "iat": 2});
        assert_eq!(registered_claim_types(&ok), Ok(()));
        assert_eq!(registered_claim_types(&json!({"aud": "a"})), Ok(()));
        assert_eq!(registered_claim_types(&json!({})), Ok(()));
        for bad in [
            json!({"iss": 123}),
            json!({"sub": {}}),
            json!({"jti": ["j"]}),
            json!({"sub": null}),
            json!({"aud": [1]}),
            json!({"aud": {}}),
            json!({"aud": ["a", null]}),
            json!({"exp": "9999999999"}),
            json!({"exp": 1e20}),
            json!({"exp": 1.5}),
            json!({"exp": -1}),
            json!({"nbf": true}),
            json!({"iat": null}),
        ] {
            assert_eq!(
                registered_claim_types(&bad),
                Err(AuthError::InvalidClaimType),
                "{bad}"
            );
        }
        assert_eq!(
            registered_claim_types(&json!([1])),
            Err(AuthError::MalformedToken)
        );
    }
}
