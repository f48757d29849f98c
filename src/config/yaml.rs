//! Strict YAML loading that reports *every* error with its line and column.
//!
//! serde stops at the first error, but operators want the whole list at once. So loading runs
//! in two steps:
//! 1. serde-saphyr parses the text (with alias and size budgets against YAML bombs) into a
//!    small [`Node`] tree that remembers where each node was written.
//! 2. The typed config is deserialized from that tree through our own `Deserializer`. When a
//!    node fails (unknown key, wrong type, bad value), the error is recorded with the node's
//!    position, the smallest map entry or list item holding that node is cut out of the tree,
//!    and deserialization is tried again. Each round removes a node, so the loop ends, and
//!    the errors of every broken entry are reported together.
//!
//! Duplicate keys are found in the tree itself (serde-saphyr passes them through to us).

use std::collections::HashSet;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
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

/// Parses `text` into `T`, returning every error found (sorted by position).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Vec<ConfigError>> {
    match from_str_partial(text) {
        (Some(value), errors) if errors.is_empty() => Ok(value),
        (_, errors) => Err(errors),
    }
}

/// Parses `text` into `T` as far as possible: the errors found, and (when the rest of the
/// document still forms a `T`) the value built from what was valid, so that later checks can
/// report their errors in the same run.
pub fn from_str_partial<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<ConfigError>) {
    if text.len() > MAX_CONFIG_BYTES {
        return (
            None,
            vec![ConfigError::whole(format!(
                "file is larger than {MAX_CONFIG_BYTES} bytes"
            ))],
        );
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
        },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    let root: serde_saphyr::Spanned<Kind> = match serde_saphyr::from_str_with_options(text, options)
    {
        Ok(root) => root,
        Err(e) => {
            let pos = e.location().map(|l| Pos {
                line: clamp(l.line()),
                col: clamp(l.column()),
            });
            // The parser's own message, without the source snippet (it may echo secrets).
            let message = parser_message(&e);
            return (None, vec![ConfigError { pos, message }]);
        }
    };
    let mut root = Node::from_spanned(root);
    let mut errors = Vec::new();
    let mut next_id = 0;
    root.assign_ids(&mut next_id);
    root.remove_duplicate_keys(&mut errors);
    let mut removed: HashSet<(u32, String)> = HashSet::new();
    loop {
        match T::deserialize(&root) {
            Ok(value) => {
                sort(&mut errors);
                return (Some(value), errors);
            }
            Err(e) => {
                let spurious = e
                    .missing_field
                    .as_ref()
                    .is_some_and(|f| removed.contains(&(e.node, f.clone())));
                if !spurious {
                    errors.push(ConfigError::at(e.pos, e.message.clone()));
                }
                match root.cut(e.node) {
                    Some((parent, key)) => {
                        if let Some(key) = key {
                            removed.insert((parent, key));
                        }
                    }
                    // The root itself is broken: nothing more can be learned.
                    None => break,
                }
            }
        }
    }
    sort(&mut errors);
    (None, errors)
}

/// Sorts errors by position and removes repeats.
pub fn sort(errors: &mut Vec<ConfigError>) {
    errors.sort_by_key(|e| e.pos.map(|p| (p.line, p.col)));
    errors.dedup();
}

fn clamp(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn parser_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    // serde-saphyr appends " at line X column Y"; we print positions ourselves.
    match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Largest config file accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;
const LOCATED: &str = "__fortress_located";

// === impl Node ===

/// A parsed YAML node with its position.
#[derive(Debug, Clone)]
struct Node {
    id: u32,
    pos: Pos,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
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
    fn from_spanned(s: serde_saphyr::Spanned<Kind>) -> Node {
        Node {
            id: 0,
            pos: Pos {
                line: clamp(s.referenced.line()),
                col: clamp(s.referenced.column()),
            },
            kind: s.value,
        }
    }

    fn assign_ids(&mut self, next: &mut u32) {
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

    fn remove_duplicate_keys(&mut self, errors: &mut Vec<ConfigError>) {
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
    fn cut(&mut self, id: u32) -> Option<(u32, Option<String>)> {
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

    fn unexpected(&self) -> de::Unexpected<'_> {
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

// === impl DeError ===

/// An error raised while deserializing from the tree: where, and what.
#[derive(Debug)]
struct DeError {
    message: String,
    node: u32,
    pos: Pos,
    placed: bool,
    missing_field: Option<String>,
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

/// Feeds `[line, col, value]` to a [`Located`] visitor.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        name: String,
        #[serde(default)]
        port: Option<u16>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        title: Located<String>,
        items: Vec<Inner>,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        Enforce,
        DryRun,
    }

    fn render(errs: &[ConfigError]) -> Vec<String> {
        errs.iter()
            .map(|e| match e.pos {
                Some(p) => format!("{}:{}: {}", p.line, p.col, e.message),
                None => e.message.clone(),
            })
            .collect()
    }

    #[test]
    fn parses_valid_document_with_positions() {
        let text = "title: hello\nitems:\n  - name: a\n    port: 80\nmode: dry-run\n";
        let out: Outer = from_str(text).expect("valid");
        assert_eq!(out.title.value, "hello");
        assert_eq!(out.title.pos, Pos { line: 1, col: 8 });
        assert_eq!(out.items[0].port, Some(80));
        assert_eq!(out.mode, Some(Mode::DryRun));
    }

    #[test]
    fn reports_every_error_at_once() {
        let text = "title: hello\nitems:\n  - name: a\n    colour: red\n  - name: b\n    port: \
                    99999\n  - name: c\n    port: x\nmode: sideways\nextra: 1\ntitle: again\n";
        let errs = from_str::<Outer>(text).expect_err("invalid");
        let lines = render(&errs);
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(
            lines[0].starts_with("4:5: unknown key `colour`"),
            "{lines:#?}"
        );
        assert!(lines[1].starts_with("6:11: invalid value"), "{lines:#?}");
        assert!(lines[2].starts_with("8:11: invalid type"), "{lines:#?}");
        assert!(
            lines[3].starts_with("9:7: unknown value `sideways`"),
            "{lines:#?}"
        );
        assert!(
            lines[4].starts_with("10:1: unknown key `extra`"),
            "{lines:#?}"
        );
        assert_eq!(
            lines[5],
            "11:1: duplicate key `title`: each key may appear only once"
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let text = "title: a\ntitle: b\nitems: []\n";
        let errs = from_str::<Outer>(text).expect_err("dup");
        assert_eq!(
            render(&errs),
            vec!["2:1: duplicate key `title`: each key may appear only once"]
        );
    }

    #[test]
    fn missing_required_key_is_reported_once() {
        let errs = from_str::<Outer>("items:\n  - port: 1\n").expect_err("missing");
        let lines = render(&errs);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("missing required key `title`"))
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("missing required key `name`"))
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let errs = from_str::<Outer>("title: [unclosed\n").expect_err("syntax");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].pos.is_some());
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(from_str::<Outer>(&text).is_err());
    }
}
