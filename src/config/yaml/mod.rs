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
//!
//! This file owns the entry points and the budgets; the tree is in `node.rs`, the
//! `Deserializer` over it in `de.rs`. The diagnostic types live in [`crate::config::diag`]
//! and are re-exported here.

mod de;
mod node;

use std::collections::HashSet;

use serde::de::DeserializeOwned;

use node::{Kind, Node};

pub use crate::config::diag::{ConfigError, Located, Pos, sort};

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

#[cfg(test)]
mod tests {
    use serde::Deserialize;

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
