//! Compiles `streams:` into validator rules shared by every response of a stream route.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::raw::RawStream;
use super::yaml::{ConfigError, Located};
use crate::policy::stream::{SqlName, StreamRules, default_allowed_functions};
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
            sql_guard: match &s.sql_guard {
                None => None,
                Some(g) => {
                    let before = errors.len();
                    let allowed_tables = sql_names(&g.allowed_tables, 3, "table", errors);
                    let allowed_functions = match &g.allowed_functions {
                        None => default_allowed_functions(),
                        Some(list) => sql_names(list, 2, "function", errors),
                    };
                    if errors.len() > before {
                        continue;
                    }
                    Some(SqlGuard {
                        field: g.field.clone().unwrap_or_else(|| "sql".into()),
                        read_only: g.read_only.unwrap_or(true),
                        allowed_tables,
                        allowed_functions,
                    })
                }
            },
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

/// Parses `sql_guard` names (tables: at most `catalog.schema.table`, functions:
/// `schema.function`); errors are appended.
fn sql_names(
    list: &[Located<String>],
    max_parts: usize,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<SqlName> {
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        match SqlName::parse(&entry.value) {
            Ok(name) if name.0.len() <= max_parts => out.push(name),
            Ok(_) => errors.push(ConfigError::at(
                entry.pos,
                format!(
                    "sql_guard: `{}` has too many parts for a {what} name",
                    entry.value
                ),
            )),
            Err(e) => errors.push(ConfigError::at(entry.pos, format!("sql_guard: {e}"))),
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

    fn load(guard: &str) -> Result<crate::policy::Policy, String> {
        let text = format!(
            "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n\
             streams:\n  chat:\n    order: [technical_view, end]\n    sql_guard: {guard}\n\
             routes:\n  - name: all\n    match: {{ path: \"/**\" }}\n    public: true\n    \
             stream: chat\n"
        );
        crate::config::load_str(&text, std::path::Path::new("/nowhere/fortress.yaml"))
            .map_err(|e| e.to_string())
    }

    fn guard_of(policy: &crate::policy::Policy) -> Option<SqlGuard> {
        policy
            .router
            .routes()
            .first()
            .and_then(|r| r.stream.as_ref())
            .and_then(|s| s.sql_guard.clone())
    }

    fn names(list: &[&str]) -> Vec<SqlName> {
        list.iter().filter_map(|n| SqlName::parse(n).ok()).collect()
    }

    #[test]
    fn sql_guard_names_are_parsed_at_load() {
        let p = load(r#"{ allowed_tables: [orders, "\"Orders\"", PUBLIC.Sales, '"S"."T"'] }"#);
        let g = p.as_ref().ok().and_then(guard_of);
        assert_eq!(
            g.as_ref().map(|g| &g.allowed_tables),
            Some(&vec![
                SqlName(vec!["orders".into()]),
                SqlName(vec!["Orders".into()]),
                SqlName(vec!["public".into(), "sales".into()]),
                SqlName(vec!["S".into(), "T".into()]),
            ]),
            "{p:?}"
        );
        // No `allowed_functions`: the default allowlist.
        assert_eq!(
            g.map(|g| g.allowed_functions),
            Some(default_allowed_functions())
        );

        let p = load(
            "{ allowed_tables: [orders], allowed_functions: [lower, pg_catalog.Upper, '\"F\"'] }",
        );
        assert_eq!(
            p.as_ref()
                .ok()
                .and_then(guard_of)
                .map(|g| g.allowed_functions),
            Some(names(&["lower", "pg_catalog.upper", "\"F\""])),
            "{p:?}"
        );
        let p = load("{ allowed_tables: [orders], allowed_functions: [] }");
        assert_eq!(
            p.as_ref()
                .ok()
                .and_then(guard_of)
                .map(|g| g.allowed_functions),
            Some(Vec::new()),
            "{p:?}"
        );
    }

    #[test]
    fn bad_sql_guard_names_are_refused_at_load() {
        for (guard, message) in [
            (
                "{ allowed_tables: [\"or ders\"] }",
                "`or ders` is not a SQL name",
            ),
            ("{ allowed_tables: [\"\"] }", "`` is not a SQL name"),
            ("{ allowed_tables: [\"a..b\"] }", "`a..b` is not a SQL name"),
            ("{ allowed_tables: [\"1t\"] }", "`1t` is not a SQL name"),
            (
                "{ allowed_tables: ['\"open'] }",
                "`\"open`: unterminated quoted name",
            ),
            ("{ allowed_tables: ['\"\"'] }", "`\"\"`: empty quoted name"),
            (
                "{ allowed_tables: [a.b.c.d] }",
                "`a.b.c.d` has too many parts for a table name",
            ),
            (
                "{ allowed_tables: [t], allowed_functions: [\"lower()\"] }",
                "`lower()` is not a SQL name",
            ),
            (
                "{ allowed_tables: [t], allowed_functions: [a.b.c] }",
                "`a.b.c` has too many parts for a function name",
            ),
            (
                "{ allowed_tables: [t], allowed_functions: [\"pg_catalog.*\"] }",
                "`pg_catalog.*` is not a SQL name",
            ),
        ] {
            let e = load(guard).map(|_| ()).err().unwrap_or_default();
            assert!(e.contains(message), "{guard}: {e}");
            assert!(e.contains("sql_guard: "), "{guard}: {e}");
        }
        let e = load("{ allowed_tables: [\"x y\", \"1\"], allowed_functions: [\"f g\"] }")
            .map(|_| ())
            .err()
            .unwrap_or_default();
        assert_eq!(e.matches("is not a SQL name").count(), 3, "{e}");
    }
}
