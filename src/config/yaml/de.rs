//! serde's `Deserializer` over the [`Node`] tree. An error is placed at the innermost node
//! that failed ([`DeError`] keeps its id and position), so that the loader can report it
//! there and cut that node out; a [`Located`](crate::config::diag::Located) value is given
//! its node's position.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, IntoDeserializer, Visitor};

use super::node::{Kind, Node};
use crate::config::diag::{LOCATED, Pos};

// === impl DeError ===

/// An error raised while deserializing from the tree: where, and what.
#[derive(Debug)]
pub(super) struct DeError {
    pub(super) message: String,
    pub(super) node: u32,
    pub(super) pos: Pos,
    placed: bool,
    pub(super) missing_field: Option<String>,
}

impl DeError {
    fn place(mut self, node: &Node) -> Self {
        if !self.placed {
            self.node = node.id;
            self.pos = node.pos;
            self.placed = true;
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            node: 0,
            pos: Pos::default(),
            placed: false,
            missing_field: None,
        }
    }
    fn missing_field(field: &'static str) -> Self {
        let mut e = Self::custom(format_args!("missing required key `{field}`"));
        e.missing_field = Some(field.to_string());
        e
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!(
            "unknown key `{field}`, expected one of: {}",
            expected.join(", ")
        ))
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!(
            "unknown value `{variant}`, expected one of: {}",
            expected.join(", ")
        ))
    }
}

// === impl Deserializer for &Node ===

impl<'de> Deserializer<'de> for &Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Int(i) => visitor.visit_i64(*i),
            Kind::UInt(u) => visitor.visit_u64(*u),
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Str(s) => visitor.visit_str(s),
            Kind::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
            }),
            Kind::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|e| e.place(self))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.kind {
            Kind::Null => visitor.visit_none().map_err(|e: DeError| e.place(self)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == LOCATED {
            return visitor
                .visit_seq(LocatedAccess {
                    node: self,
                    step: 0,
                })
                .map_err(|e| e.place(self));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.kind {
            Kind::Str(s) => {
                let de: de::value::StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(de).map_err(|e| e.place(self))
            }
            _ => Err(
                <DeError as de::Error>::invalid_type(self.unexpected(), &"a string").place(self),
            ),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = DeError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed.deserialize(node).map(Some).map_err(|e| e.place(node)),
            None => Ok(None),
        }
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = DeError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k).map(Some).map_err(|e| e.place(k))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(v) => seed.deserialize(v).map_err(|e| e.place(v)),
            None => Err(de::Error::custom("value without a key")),
        }
    }
}

/// Feeds `[line, col, value]` to a [`Located`](crate::config::diag::Located) visitor.
struct LocatedAccess<'a> {
    node: &'a Node,
    step: u8,
}

impl<'de> de::SeqAccess<'de> for LocatedAccess<'_> {
    type Error = DeError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.step += 1;
        match self.step {
            1 => seed
                .deserialize(self.node.pos.line.into_deserializer())
                .map(Some),
            2 => seed
                .deserialize(self.node.pos.col.into_deserializer())
                .map(Some),
            3 => seed.deserialize(self.node).map(Some),
            _ => Ok(None),
        }
    }
}
