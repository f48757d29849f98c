//! The YAML tree the loader deserializes from. Each [`Node`] remembers where it was written
//! and gets an id, so that a node that fails can be reported at its position and cut out of
//! the tree ([`Node::cut`]) before the next try. [`Kind`]'s `Deserialize` builds the tree
//! from serde-saphyr's spanned values; duplicate keys are removed (and reported) here.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use super::clamp;
use crate::config::diag::{ConfigError, Pos};

/// A parsed YAML node with its position.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) id: u32,
    pub(super) pos: Pos,
    pub(super) kind: Kind,
}

/// What a node holds.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub(super) fn from_spanned(s: serde_saphyr::Spanned<Kind>) -> Node {
        Node {
            id: 0,
            pos: Pos {
                line: clamp(s.referenced.line()),
                col: clamp(s.referenced.column()),
            },
            kind: s.value,
        }
    }

    pub(super) fn assign_ids(&mut self, next: &mut u32) {
        self.id = *next;
        *next += 1;
        match &mut self.kind {
            Kind::Seq(items) => items.iter_mut().for_each(|n| n.assign_ids(next)),
            Kind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.assign_ids(next);
                v.assign_ids(next);
            }),
            _ => {}
        }
    }

    pub(super) fn remove_duplicate_keys(&mut self, errors: &mut Vec<ConfigError>) {
        match &mut self.kind {
            Kind::Seq(items) => items
                .iter_mut()
                .for_each(|n| n.remove_duplicate_keys(errors)),
            Kind::Map(entries) => {
                let mut seen = HashSet::new();
                entries.retain(|(k, _)| {
                    let name = k.scalar_text();
                    if seen.insert(name.clone()) {
                        true
                    } else {
                        errors.push(ConfigError::at(
                            k.pos,
                            format!("duplicate key `{name}`: each key may appear only once"),
                        ));
                        false
                    }
                });
                entries
                    .iter_mut()
                    .for_each(|(_, v)| v.remove_duplicate_keys(errors));
            }
            _ => {}
        }
    }

    fn scalar_text(&self) -> String {
        match &self.kind {
            Kind::Null => "null".into(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::UInt(u) => u.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Str(s) => s.clone(),
            Kind::Seq(_) => "<list>".into(),
            Kind::Map(_) => "<map>".into(),
        }
    }

    fn contains(&self, id: u32) -> bool {
        if self.id == id {
            return true;
        }
        match &self.kind {
            Kind::Seq(items) => items.iter().any(|n| n.contains(id)),
            Kind::Map(entries) => entries
                .iter()
                .any(|(k, v)| k.contains(id) || v.contains(id)),
            _ => false,
        }
    }

    /// Removes the innermost map entry or list item that contains node `id`. Returns the id of
    /// the map it was removed from and the removed key, or `None` if `id` is this node.
    pub(super) fn cut(&mut self, id: u32) -> Option<(u32, Option<String>)> {
        if self.id == id {
            return None;
        }
        let parent = self.id;
        match &mut self.kind {
            Kind::Seq(items) => {
                let i = items.iter().position(|n| n.contains(id))?;
                if let Some(found) = items[i].cut(id) {
                    return Some(found);
                }
                items.remove(i);
                Some((parent, None))
            }
            Kind::Map(entries) => {
                let i = entries
                    .iter()
                    .position(|(k, v)| k.contains(id) || v.contains(id))?;
                if entries[i].1.contains(id)
                    && let Some(found) = entries[i].1.cut(id)
                {
                    return Some(found);
                }
                let (k, _) = entries.remove(i);
                Some((parent, Some(k.scalar_text())))
            }
            _ => None,
        }
    }

    pub(super) fn unexpected(&self) -> de::Unexpected<'_> {
        match &self.kind {
            Kind::Null => de::Unexpected::Unit,
            Kind::Bool(b) => de::Unexpected::Bool(*b),
            Kind::Int(i) => de::Unexpected::Signed(*i),
            Kind::UInt(u) => de::Unexpected::Unsigned(*u),
            Kind::Float(f) => de::Unexpected::Float(*f),
            Kind::Str(s) => de::Unexpected::Str(s),
            Kind::Seq(_) => de::Unexpected::Seq,
            Kind::Map(_) => de::Unexpected::Map,
        }
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<serde_saphyr::Spanned<Kind>>()? {
            items.push(Node::from_spanned(item));
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<serde_saphyr::Spanned<Kind>>()? {
            let value = map.next_value::<serde_saphyr::Spanned<Kind>>()?;
            entries.push((Node::from_spanned(key), Node::from_spanned(value)));
        }
        Ok(Kind::Map(entries))
    }
}
