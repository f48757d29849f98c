//! Compiles `streams:` into validator rules shared by every response of a stream route.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::raw::RawStream;
use super::yaml::{ConfigError, Located};
use crate::policy::stream::StreamRules;
use crate::stream::sql_guard::SqlGuard;

/// Compiles every stream definition; errors are appended.
pub fn compile(
    raw: &BTreeMap<String, RawStream>,
    errors: &mut Vec<ConfigError>,
) -> HashMap<String, Arc<StreamRules>> {
    let mut out = HashMap::new();
    for (name, s) in raw {
        let pos = s.order.first().map(|o| o.pos).unwrap_or_default();
        let list = |l: &[Located<String>]| l.iter().map(|t| t.value.clone()).collect::<Vec<_>>();
        let order = list(&s.order);
        let has_end = order.iter().any(|t| t == "end");
        let default_end = || {
            if has_end {
                vec!["end".to_string()]
            } else {
                Vec::new()
            }
        };
        let max_line_bytes = match &s.max_line_bytes {
            None => 1024 * 1024,
            Some(v) => match parse_size(&v.value) {
                Some(n) if n > 0 => n,
                _ => {
                    errors.push(ConfigError::at(
                        v.pos,
                        format!(
                            "`{}` is not a size: expected e.g. 4096, 64KiB or 1MiB",
                            v.value
                        ),
                    ));
                    continue;
                }
            },
        };
        let rules = StreamRules {
            order,
            repeatable: list(&s.repeatable),
            required: s.required.as_deref().map_or_else(default_end, list),
            terminal: s
                .terminal
                .as_deref()
                .map(|l| list(l).into_iter().filter(|t| t != "error").collect())
                .unwrap_or_else(default_end),
            type_field: s.type_field.clone().unwrap_or_else(|| "type".into()),
            trace_field: s.trace_field.clone().unwrap_or_else(|| "trace_id".into()),
            trace_must_match_request: s.trace_must_match_request.unwrap_or(false),
            max_line_bytes,
            sql_guard: s.sql_guard.as_ref().map(|g| SqlGuard {
                field: g.field.clone().unwrap_or_else(|| "sql".into()),
                read_only: g.read_only.unwrap_or(true),
                allowed_tables: g.allowed_tables.clone(),
            }),
        };
        let problems = rules.problems();
        if problems.is_empty() {
            out.insert(name.clone(), Arc::new(rules));
        } else {
            for p in problems {
                errors.push(ConfigError::at(pos, format!("stream `{name}`: {p}")));
            }
        }
    }
    out
}

/// `4096`, `64KiB`, `1MiB`, `1KB`/`1MB` (as powers of 1024 too: sizes of lines, not disks).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1024,
        "MiB" | "MB" | "M" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("1GiB"), None);
        assert_eq!(parse_size("lots"), None);
    }
}
