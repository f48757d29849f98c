//! Config diagnostics, used by every config check: a position in the file ([`Pos`]), one
//! error found ([`ConfigError`]), a value with the position it was written at
//! ([`Located`]), and the order errors are shown in ([`sort`]).

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

/// A position in the config file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

/// One error found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the error is (absent when the whole file is at fault, e.g. it cannot be read).
    pub pos: Option<Pos>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl ConfigError {
    /// An error at a position.
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            pos: Some(pos),
            message: message.into(),
        }
    }

    /// An error about the file as a whole.
    pub fn whole(message: impl Into<String>) -> Self {
        Self {
            pos: None,
            message: message.into(),
        }
    }
}

/// A value with the position it was written at, for errors found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub pos: Pos,
}

impl<T> Located<T> {
    /// Wraps a value with a position (used for defaults and tests).
    pub fn new(value: T, pos: Pos) -> Self {
        Self { value, pos }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LocatedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for LocatedVisitor<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a located value")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Located<T>, A::Error> {
                let line: u32 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("located: missing line"))?;
                let col: u32 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("located: missing column"))?;
                let value: T = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("located: missing value"))?;
                Ok(Located {
                    value,
                    pos: Pos { line, col },
                })
            }
        }
        deserializer.deserialize_newtype_struct(LOCATED, LocatedVisitor(std::marker::PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// Sorts errors by position and removes repeats.
pub fn sort(errors: &mut Vec<ConfigError>) {
    errors.sort_by_key(|e| e.pos.map(|p| (p.line, p.col)));
    errors.dedup();
}

/// The newtype-struct name by which [`Located`]'s `Deserialize` asks the config loader
/// (`yaml/de.rs`) for the value's position: the loader answers with `[line, col, value]`.
pub(crate) const LOCATED: &str = "__fortress_located";
