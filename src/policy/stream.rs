//! Rules for one kind of NDJSON stream (SPEC §2): [`StreamRules`] — type order, repeatable,
//! required and terminal types, field names, line length — with their load-time sanity
//! check ([`StreamRules::problems`]), and the data of the optional [`SqlGuard`] policy.
//!
//! Plain data only, depending on nothing but `std`: the stream machinery that enforces it
//! (`stream/`) depends on this file, never the other way round.

/// The type of an upstream error line: always allowed, always terminal.
pub const ERROR_TYPE: &str = "error";

/// Rules for one kind of NDJSON stream, compiled from config. Cheap to share: the caller
/// keeps it in an `Arc` and hands that to every `Validator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRules {
    /// Allowed line types in stream order; a stream may skip types but never go back.
    pub order: Vec<String>,
    /// Types that may appear on several consecutive lines (e.g. `data`). A type can only
    /// repeat while it is the current one: going back to it later is out of order.
    pub repeatable: Vec<String>,
    /// Types that must have appeared before EOF (a stream ended by an upstream `error` line
    /// needs none of them). Default `[end]`: a stream cut short is a violation.
    pub required: Vec<String>,
    /// Types after which nothing (but empty lines) may follow. `error` is always terminal.
    pub terminal: Vec<String>,
    /// Name of the type field (default `type`).
    pub type_field: String,
    /// Name of the trace id field (default `trace_id`).
    pub trace_field: String,
    /// Every line's trace id must equal the request's trace id (when one is known).
    pub trace_must_match_request: bool,
    /// Longest allowed line in bytes, not counting its `\n` or `\r\n`.
    pub max_line_bytes: usize,
    /// Optional SQL guard for `technical_view` lines.
    pub sql_guard: Option<SqlGuard>,
}

impl Default for StreamRules {
    /// `thinking → technical_view → data → business_view → end`, `data` repeatable, `end`
    /// required and terminal, fields `type` / `trace_id`, trace bound to the request, 1 MiB
    /// lines, no SQL guard.
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
        Self {
            order: s(&["thinking", "technical_view", "data", "business_view", "end"]),
            repeatable: s(&["data"]),
            required: s(&["end"]),
            terminal: s(&["end"]),
            type_field: "type".to_owned(),
            trace_field: "trace_id".to_owned(),
            trace_must_match_request: true,
            max_line_bytes: 1024 * 1024,
            sql_guard: None,
        }
    }
}

impl StreamRules {
    /// Configuration mistakes that make these rules unusable or surprising, for the config
    /// compiler to refuse at load time (fail closed). Empty when the rules are sound.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.order.is_empty() {
            out.push("order is empty".to_owned());
        }
        for (i, t) in self.order.iter().enumerate() {
            if t == ERROR_TYPE {
                out.push("order must not list `error` (it is always allowed)".to_owned());
            }
            if self.order.iter().take(i).any(|u| u == t) {
                out.push(format!("order lists `{t}` twice"));
            }
        }
        for (list, name) in [
            (&self.repeatable, "repeatable"),
            (&self.required, "required"),
            (&self.terminal, "terminal"),
        ] {
            for t in list {
                if !self.order.contains(t) {
                    out.push(format!("{name} lists `{t}`, which is not in order"));
                }
            }
        }
        if self.type_field.is_empty() || self.trace_field.is_empty() {
            out.push("type_field and trace_field must not be empty".to_owned());
        }
        if self.type_field == self.trace_field {
            out.push("type_field and trace_field must differ".to_owned());
        }
        if self.max_line_bytes == 0 {
            out.push("max_line_bytes must be positive".to_owned());
        }
        if let Some(guard) = &self.sql_guard
            && (guard.field == self.type_field || guard.field == self.trace_field)
        {
            out.push("sql_guard.field must differ from type_field and trace_field".to_owned());
        }
        out
    }
}

/// Schema access policy for SQL carried by `technical_view` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlGuard {
    /// Top-level string field of the line holding the SQL (e.g. `"sql"`).
    pub field: String,
    /// Also refuse `SELECT … INTO` and locking clauses (`FOR UPDATE`, `FOR SHARE`, …).
    pub read_only: bool,
    /// Tables the query may read, compared part by part as PostgreSQL resolves names (see
    /// [`SqlName`]): `orders` allows the unqualified `orders`, `ORDERS` and `"orders"`;
    /// `public.orders` allows only that qualified form. List both forms if queries use both.
    pub allowed_tables: Vec<SqlName>,
    /// Functions the query may call, compared like tables: an unqualified entry allows only
    /// unqualified calls, `pg_catalog.lower` only that qualified call.
    pub allowed_functions: Vec<SqlName>,
}

/// Functions a guard allows when its config names none: pure functions that read nothing
/// but their arguments (no table, file, setting, sequence or other session state) and
/// change nothing.
pub const DEFAULT_ALLOWED_FUNCTIONS: &[&str] = &[
    // aggregates
    "count",
    "sum",
    "avg",
    "min",
    "max",
    // window functions (over the query's own rows)
    "row_number",
    "rank",
    "dense_rank",
    // strings
    "lower",
    "upper",
    "length",
    "char_length",
    "character_length",
    "substring",
    "substr",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "concat",
    "concat_ws",
    "replace",
    "position",
    "strpos",
    "left",
    "right",
    "lpad",
    "rpad",
    "split_part",
    "initcap",
    "overlay",
    // NULL handling and comparison
    "coalesce",
    "nullif",
    "greatest",
    "least",
    // numbers
    "round",
    "abs",
    "floor",
    "ceil",
    "ceiling",
    "trunc",
    "mod",
    "sign",
    // dates and times
    "date_trunc",
    "date_part",
    "extract",
    "now",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    // formatting and conversion (cast-like)
    "to_char",
    "to_date",
    "to_number",
    "to_timestamp",
];

impl SqlGuard {
    /// A guard over `tables` with the default function allowlist; the names are parsed
    /// with [`SqlName::parse`].
    pub fn new(field: &str, read_only: bool, tables: &[&str]) -> Result<Self, String> {
        Ok(Self {
            field: field.to_owned(),
            read_only,
            allowed_tables: tables
                .iter()
                .map(|t| SqlName::parse(t))
                .collect::<Result<_, _>>()?,
            allowed_functions: default_allowed_functions(),
        })
    }
}

/// [`DEFAULT_ALLOWED_FUNCTIONS`] as names.
pub fn default_allowed_functions() -> Vec<SqlName> {
    DEFAULT_ALLOWED_FUNCTIONS
        .iter()
        .map(|f| SqlName(vec![(*f).to_owned()]))
        .collect()
}

/// PostgreSQL's longest identifier in bytes (`NAMEDATALEN - 1`); longer ones are truncated.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// A possibly qualified SQL name as PostgreSQL resolves it: one string per part, unquoted
/// parts folded to lower case (ASCII only, as PostgreSQL does under UTF-8), quoted parts
/// kept as written, each cut to [`MAX_IDENTIFIER_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlName(pub Vec<String>);

impl SqlName {
    /// Parses a name written in SQL syntax, as config entries are: parts separated by `.`,
    /// each an unquoted identifier (letters, digits, `_`, `$`, not starting with a digit or
    /// `$`; folded to lower case) or a double-quoted one (kept as written, `""` for a `"`).
    /// Whitespace, empty parts and anything else are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            let mut part = String::new();
            match chars.next() {
                Some('"') => loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return Err(format!("`{text}`: unterminated quoted name")),
                    }
                },
                Some(c) if c.is_alphabetic() || c == '_' => {
                    part.push(c.to_ascii_lowercase());
                    while let Some(&c) = chars.peek() {
                        if c.is_alphanumeric() || c == '_' || c == '$' {
                            part.push(c.to_ascii_lowercase());
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                _ => {
                    return Err(format!(
                        "`{text}` is not a SQL name: write `name`, `schema.name` or \"Quoted\" parts"
                    ));
                }
            }
            if part.is_empty() {
                return Err(format!("`{text}`: empty quoted name"));
            }
            parts.push(truncate_identifier(part));
            match chars.next() {
                None => return Ok(Self(parts)),
                Some('.') => {}
                Some(_) => {
                    return Err(format!(
                        "`{text}` is not a SQL name: write `name`, `schema.name` or \"Quoted\" parts"
                    ));
                }
            }
        }
    }
}

/// Cuts an identifier to [`MAX_IDENTIFIER_BYTES`] at a character boundary, as PostgreSQL
/// does.
pub fn truncate_identifier(mut ident: String) -> String {
    if ident.len() > MAX_IDENTIFIER_BYTES {
        let mut cut = MAX_IDENTIFIER_BYTES;
        while !ident.is_char_boundary(cut) {
            cut = cut.saturating_sub(1);
        }
        ident.truncate(cut);
    }
    ident
}

impl std::fmt::Display for SqlName {
    /// Parts joined by `.`, quoted when they would not read back the same unquoted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            let plain = part
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| {
                    (c.is_alphanumeric() || c == '_' || c == '$') && !c.is_ascii_uppercase()
                });
            if plain {
                f.write_str(part)?;
            } else {
                write!(f, "\"{}\"", part.replace('"', "\"\""))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded_rules() -> StreamRules {
        StreamRules {
            sql_guard: SqlGuard::new("sql", true, &["orders", "customers"]).ok(),
            ..StreamRules::default()
        }
    }

    #[test]
    fn default_rules_are_sound_and_bad_ones_are_reported() {
        assert!(StreamRules::default().problems().is_empty());
        assert!(guarded_rules().problems().is_empty());
        let bad = StreamRules {
            order: vec!["a".to_owned(), "a".to_owned(), "error".to_owned()],
            required: vec!["end".to_owned()],
            trace_field: "type".to_owned(),
            max_line_bytes: 0,
            ..StreamRules::default()
        };
        assert_eq!(bad.problems().len(), 7, "{:?}", bad.problems());
    }

    fn name(parts: &[&str]) -> Result<SqlName, String> {
        Ok(SqlName(parts.iter().map(|p| (*p).to_owned()).collect()))
    }

    #[test]
    fn sql_names_fold_unquoted_parts_and_keep_quoted_ones() {
        assert_eq!(SqlName::parse("orders"), name(&["orders"]));
        assert_eq!(SqlName::parse("ORDERS"), name(&["orders"]));
        assert_eq!(SqlName::parse("Orders"), name(&["orders"]));
        assert_eq!(SqlName::parse("\"orders\""), name(&["orders"]));
        assert_eq!(SqlName::parse("\"Orders\""), name(&["Orders"]));
        assert_eq!(SqlName::parse("public.orders"), name(&["public", "orders"]));
        assert_eq!(SqlName::parse("PUBLIC.Orders"), name(&["public", "orders"]));
        assert_eq!(
            SqlName::parse("\"Public\".\"Orders\""),
            name(&["Public", "Orders"])
        );
        assert_eq!(SqlName::parse("\"a.b\""), name(&["a.b"]));
        assert_eq!(SqlName::parse("\"say \"\"hi\"\"\""), name(&["say \"hi\""]));
        assert_eq!(SqlName::parse("_t$1"), name(&["_t$1"]));
        assert_eq!(SqlName::parse("ÉTé"), name(&["Été"]));
        assert_eq!(
            SqlName::parse("db.public.orders"),
            name(&["db", "public", "orders"])
        );
        let long = "x".repeat(70);
        assert_eq!(SqlName::parse(&long), name(&[&"x".repeat(63)]));
        for bad in [
            "",
            ".",
            "orders.",
            ".orders",
            "a..b",
            "1orders",
            "$x",
            "or ders",
            " orders",
            "orders ",
            "\"\"",
            "\"open",
            "\"a\"b",
            "a-b",
            "a;b",
            "a(b)",
            "public.\"\"",
        ] {
            assert!(SqlName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sql_names_display_as_they_parse_back() {
        for text in [
            "orders",
            "public.orders",
            "\"Orders\"",
            "\"a.b\"",
            "\"x\"\"y\"",
            "\"1a\"",
        ] {
            let parsed = SqlName::parse(text);
            assert_eq!(
                parsed.as_ref().map(ToString::to_string).as_deref(),
                Ok(text)
            );
        }
        assert_eq!(
            SqlName::parse("ORDERS").map(|n| n.to_string()),
            Ok("orders".to_owned())
        );
        assert_eq!(
            default_allowed_functions().len(),
            DEFAULT_ALLOWED_FUNCTIONS.len()
        );
        for f in DEFAULT_ALLOWED_FUNCTIONS {
            assert_eq!(SqlName::parse(f), name(&[f]));
        }
    }
}
