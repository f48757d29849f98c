//! The head of one NDJSON line: the line is parsed in full as JSON with serde (syntax
//! checked to the end, every value skipped with [`IgnoredAny`] but the top-level type,
//! trace id and SQL fields, so no tree is built) and those three fields are captured,
//! borrowed from the line unless they had escapes. The
//! [`Validator`](super::validator::Validator) judges what they say.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::violation::Violation;

/// Which field a top-level key names.
#[derive(Clone, Copy)]
enum Key {
    Type,
    Trace,
    Sql,
    Other,
}

/// A captured top-level field.
pub(super) enum Field<'de> {
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
pub(super) struct Head<'de> {
    pub(super) object: bool,
    pub(super) ty: Field<'de>,
    pub(super) trace: Field<'de>,
    pub(super) sql: Field<'de>,
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
pub(super) struct Names<'r> {
    pub(super) ty: &'r str,
    pub(super) trace: &'r str,
    pub(super) sql: Option<&'r str>,
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
pub(super) fn parse_head<'a>(line: &'a str, names: Names<'_>) -> Result<Head<'a>, Violation> {
    let mut de = serde_json::Deserializer::from_str(line);
    let head = LineSeed(names)
        .deserialize(&mut de)
        .map_err(|_| Violation::InvalidJson)?;
    de.end().map_err(|_| Violation::InvalidJson)?;
    Ok(head)
}

/// Maps a captured field to its string or the given violations.
pub(super) fn required_str<'h>(
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
