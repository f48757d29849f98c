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
    /// Tables the query may read, compared case-insensitively (ASCII) part by part:
    /// `"orders"` allows the unqualified `orders`, `"public.orders"` allows
    /// `public.orders`. List both forms if queries use both.
    pub allowed_tables: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded_rules() -> StreamRules {
        StreamRules {
            sql_guard: Some(SqlGuard {
                field: "sql".to_owned(),
                read_only: true,
                allowed_tables: vec!["orders".to_owned(), "customers".to_owned()],
            }),
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
}
