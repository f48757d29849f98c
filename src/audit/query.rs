//! `fortress audit query DIR [filters]`: the records that match, oldest first, reading only
//! the files of the time range; `--follow` keeps reading as records are appended (and moves to
//! the next day's file when it appears).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::record::parse_ts;
use super::writer::list;
use crate::store::DAY_MS;

/// What to look for. Every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `trace_id` equals.
    pub trace_id: Option<String>,
    /// `request_id` equals.
    pub request_id: Option<String>,
    /// `subject` equals.
    pub subject: Option<String>,
    /// `tenant` or `requested_tenant` equals.
    pub tenant: Option<String>,
    /// `decision` equals.
    pub decision: Option<String>,
    /// `event` equals.
    pub event: Option<String>,
    /// `route` equals.
    pub route: Option<String>,
    /// `ts` at or after (ms).
    pub since: Option<u64>,
    /// `ts` before (ms).
    pub until: Option<u64>,
}

impl Filter {
    /// Whether a record matches.
    pub fn matches(&self, v: &Value) -> bool {
        let eq = |field: &str, want: &Option<String>| {
            want.as_deref()
                .is_none_or(|w| v.get(field).and_then(Value::as_str) == Some(w))
        };
        let tenant_ok = self.tenant.as_deref().is_none_or(|t| {
            v.get("tenant").and_then(Value::as_str) == Some(t)
                || v.get("requested_tenant").and_then(Value::as_str) == Some(t)
        });
        let ts = v.get("ts").and_then(Value::as_str).and_then(parse_ts);
        let time_ok = match (self.since, self.until, ts) {
            (None, None, _) => true,
            (_, _, None) => false,
            (since, until, Some(t)) => since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u),
        };
        eq("trace_id", &self.trace_id)
            && eq("request_id", &self.request_id)
            && eq("subject", &self.subject)
            && eq("decision", &self.decision)
            && eq("event", &self.event)
            && eq("route", &self.route)
            && tenant_ok
            && time_ok
    }
}

/// How matches are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The records as written (JSON lines).
    Json,
    /// One aligned line per record.
    Table,
}

/// Columns of `--table`.
const COLUMNS: [&str; 10] = [
    "ts",
    "event",
    "decision",
    "status",
    "reason",
    "method",
    "path",
    "subject",
    "tenant",
    "request_id",
];

/// Prints the matching records; returns how many. With `follow`, never returns unless the
/// output fails.
pub fn run(
    dir: &Path,
    filter: &Filter,
    limit: Option<usize>,
    format: Format,
    follow: bool,
    out: &mut dyn Write,
) -> std::io::Result<usize> {
    if format == Format::Table {
        writeln!(out, "{}", COLUMNS.join("\t"))?;
    }
    let mut printed = 0usize;
    // (With `follow`, matches after the initial pass are printed, not counted: it never returns.)
    let since_day = filter.since.map(|s| s / DAY_MS);
    // A record near midnight may sit in the next day's file (files follow the writer's day).
    let until_day = filter.until.map(|u| u / DAY_MS + 1);
    let mut position: Option<(std::path::PathBuf, usize)> = None;
    for (day, path, _) in list(dir)? {
        if since_day.is_some_and(|s| day + 1 < s) || until_day.is_some_and(|u| day > u) {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        for line in text[..complete].lines() {
            if limit.is_some_and(|l| printed >= l) {
                return Ok(printed);
            }
            if print_if(line, filter, format, out)? {
                printed += 1;
            }
        }
        position = Some((path, complete));
    }
    if !follow {
        return Ok(printed);
    }
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let files = list(dir)?;
        // Keep reading the current file; move on once a newer one exists and this one is done.
        let (path, offset) = match &position {
            Some(p) => p.clone(),
            None => match files.first() {
                Some((_, p, _)) => (p.clone(), 0),
                None => continue,
            },
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete > offset {
            for line in text[offset..complete].lines() {
                print_if(line, filter, format, out)?;
            }
            out.flush()?;
        }
        position = Some((path.clone(), complete.max(offset)));
        if let Some((_, next, _)) = files.iter().find(|(_, p, _)| *p > path) {
            position = Some((next.clone(), 0));
        }
    }
}

fn print_if(
    line: &str,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Ok(false);
    };
    if !filter.matches(&v) {
        return Ok(false);
    }
    match format {
        Format::Json => writeln!(out, "{line}")?,
        Format::Table => {
            let cells: Vec<String> = COLUMNS
                .iter()
                .map(|c| match v.get(*c) {
                    None | Some(Value::Null) => "-".to_owned(),
                    // A value never breaks the table: tabs, newlines and other control
                    // characters are printed escaped.
                    Some(Value::String(s)) => s
                        .chars()
                        .map(|c| {
                            if c.is_control() {
                                c.escape_default().to_string()
                            } else {
                                c.to_string()
                            }
                        })
                        .collect(),
                    Some(other) => other.to_string(),
                })
                .collect();
            writeln!(out, "{}", cells.join("\t"))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_never_break_the_table() {
        let line = r#"{"event":"request","subject":"a\tb\nc","path":"/x"}"#;
        let mut out = Vec::new();
        assert!(print_if(line, &Filter::default(), Format::Table, &mut out).expect("write"));
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(text.matches('\t').count(), COLUMNS.len() - 1, "{text}");
        assert!(text.contains(r"a\tb\nc"), "{text}");
    }
}
