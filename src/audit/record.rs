//! One audit record, its canonical form, and UTC time formatting.
//!
//! Every record has every field (`null` where there is no value), so a reader never has to
//! guess whether a field was forgotten or empty. The canonical form is JSON with object keys
//! sorted (at every depth) and no insignificant white space; a record's line in the file *is*
//! its canonical form, which is what the hash chain covers (see `chain.rs`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{DAY_MS, civil_from_days};

/// Headers whose values a request record keeps (besides the policy's tenant headers) because
/// the decision reads them: `fortress replay` sends them again. Never credentials.
pub const DECISION_HEADERS: [&str; 6] = [
    "host",
    "content-type",
    "content-length",
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
];

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Event {
    /// A request's decision (denied, dry-run denied, privileged, or every request with
    /// `include: [all]`).
    Request,
    /// An NDJSON stream violation.
    StreamViolation,
    /// A tenant's budget crossed its warning threshold (once per period).
    BudgetWarning,
    /// A tenant's budget is exhausted (once per period).
    BudgetExhausted,
    /// A policy reload, applied or refused.
    PolicyReload,
    /// The process started serving.
    Startup,
    /// The process is shutting down (the last record before the final seal).
    Shutdown,
    /// A toggle was changed through the admin API.
    ToggleChange,
    /// A token or subject was revoked through the admin API.
    Revocation,
    /// Retention deleted audit files.
    Retention,
    /// End of a file (rotation) or of a run (shutdown): the count and the chain head.
    Seal,
}

impl Event {
    /// The wire name.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// One audit record, before the writer numbers and chains it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since the Unix epoch (written as RFC 3339 `ts`).
    #[serde(skip)]
    pub at_ms: u64,
    /// The event (`request`, `policy_reload`, …); `None` only in a default value.
    pub event: Option<Event>,
    /// W3C trace id.
    pub trace_id: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// `allow`, `deny`, `dry_run_deny`, `error`.
    pub decision: Option<String>,
    /// The detailed reason (`unknown_kid`, `tenant_mismatch`, …).
    pub reason: Option<String>,
    /// Response status.
    pub status: Option<u16>,
    /// Route name.
    pub route: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// The canonical path (what was matched and forwarded).
    pub path: Option<String>,
    /// The query string as sent (what `fortress replay` needs to re-decide).
    pub query: Option<String>,
    /// The request headers the decision reads, by lower-case name: those in
    /// [`DECISION_HEADERS`] and the policy's tenant headers (never credentials).
    /// (Named so that it does not sort between `hash` and `key_id`: the chain splices `hash`
    /// in right before `key_id`.)
    pub request_headers: Option<std::collections::BTreeMap<String, String>>,
    /// The token's subject.
    pub subject: Option<String>,
    /// The token's tenant claim.
    pub tenant: Option<String>,
    /// The tenant the request named.
    pub requested_tenant: Option<String>,
    /// The token's roles.
    pub roles: Option<Vec<String>>,
    /// The client IP fortress determined.
    pub client_ip: Option<String>,
    /// `tls`, `vouched` (a trusted proxy's `X-Forwarded-Proto: https`) or `plain`.
    pub transport: Option<String>,
    /// Milliseconds from the request head to the response (or to the decision).
    pub latency_ms: Option<f64>,
    /// The policy hash the request was judged by.
    pub policy_version: Option<String>,
    /// Event-specific details (reload errors, seal counts, deleted files, budget figures).
    pub detail: Option<Value>,
}

/// A record as written: the fields above plus its place in the chain.
pub struct Chained {
    /// The line written (canonical JSON, no trailing newline).
    pub line: String,
    /// Its sequence number.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
}

impl Record {
    /// A record of `event` at `at_ms`.
    pub fn new(event: Event, at_ms: u64) -> Self {
        Self {
            at_ms,
            event: Some(event),
            ..Self::default()
        }
    }

    /// The record as a JSON object with `ts`, every field (nulls included) and the chain fields
    /// still to be filled in.
    pub fn to_object(&self) -> serde_json::Map<String, Value> {
        // INVARIANT: a struct of strings, numbers, options and a JSON value serializes to an
        // object; the fallback is never taken.
        let mut map = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        map.insert("ts".into(), Value::String(rfc3339_ms(self.at_ms)));
        // Tells a record from a log line on a shared stdout.
        map.insert("type".into(), Value::String("audit".into()));
        map
    }
}

/// `2026-01-01T00:00:00.000Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let (y, m, d) = civil_from_days(ms / DAY_MS);
    let in_day = ms % DAY_MS;
    let (h, min, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Parses [`rfc3339_ms`]'s output (and the same without milliseconds, or a plain date
/// `2026-01-01`, as `--since`/`--until` accept) back to ms since the epoch.
pub fn parse_ts(s: &str) -> Option<u64> {
    let num = |t: &str| -> Option<u64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let (y, m, d) = (
        num(parts.next()?)?,
        num(parts.next()?)?,
        num(parts.next()?)?,
    );
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let days = crate::store::days_from_civil(y, m, d);
    let mut ms = days.checked_mul(DAY_MS)?;
    if let Some(t) = time {
        let (hms, frac) = match t.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (t, None),
        };
        let mut p = hms.split(':');
        let (h, mi, se) = (num(p.next()?)?, num(p.next()?)?, num(p.next()?)?);
        if p.next().is_some() || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        ms += ((h * 60 + mi) * 60 + se) * 1_000;
        if let Some(f) = frac {
            if f.len() != 3 {
                return None;
            }
            ms += num(f)?;
        }
    }
    Some(ms)
}

/// `audit-YYYY-MM-DD.jsonl` for the UTC day containing `ms`.
pub fn file_name(ms: u64) -> String {
    let (y, m, d) = civil_from_days(ms / DAY_MS);
    format!("audit-{y:04}-{m:02}-{d:02}.jsonl")
}

/// The UTC day (days since the epoch) a file name stands for.
pub fn file_day(name: &str) -> Option<u64> {
    let date = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if date.len() != 10 {
        return None;
    }
    parse_ts(date).map(|ms| ms / DAY_MS)
}

/// Canonical JSON: object keys sorted at every depth, no white space, numbers and strings as
/// `serde_json` writes them. Writer and verifier both use it, so a line is intact exactly when
/// it equals the canonical form of what it parses to.
pub fn canonical(v: &Value) -> String {
    canonical_marking(v, "").0
}

/// [`canonical`], plus where the top-level key `mark` starts in it (the chain splices `hash`
/// in there instead of serializing the record twice).
pub fn canonical_marking(v: &Value, mark: &str) -> (String, Option<usize>) {
    let mut out = Vec::with_capacity(640);
    let mut at = None;
    write_canonical(v, &mut out, Some((mark, &mut at)));
    // INVARIANT: serde_json writes valid UTF-8, and only it writes into `out`.
    (String::from_utf8(out).unwrap_or_default(), at)
}

fn write_canonical(v: &Value, out: &mut Vec<u8>, mut mark: Option<(&str, &mut Option<usize>)>) {
    match v {
        Value::Object(map) => {
            // `serde_json::Map` without `preserve_order` is a BTreeMap: keys come sorted.
            let mut keys: Vec<&String> = map.keys().collect();
            if !keys.is_sorted() {
                keys.sort_unstable();
            }
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if let Some((name, at)) = mark.as_mut()
                    && k == name
                {
                    **at = Some(out.len());
                }
                // Writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                if let Some(inner) = map.get(k) {
                    write_canonical(inner, out, None);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out, None);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_and_file_names() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        let t = 1_767_225_600_000 + 3_723_004; // 2026-01-01T01:02:03.004Z
        assert_eq!(rfc3339_ms(t), "2026-01-01T01:02:03.004Z");
        assert_eq!(parse_ts("2026-01-01T01:02:03.004Z"), Some(t));
        assert_eq!(parse_ts("2026-01-01T01:02:03Z"), Some(t - 4));
        assert_eq!(parse_ts("2026-01-01"), Some(1_767_225_600_000));
        for bad in [
            "2026-13-01",
            "2026-01-01T25:00:00Z",
            "x",
            "2026-01-01T01:02:03.4Z",
            "+2026-01-01",
        ] {
            assert_eq!(parse_ts(bad), None, "{bad}");
        }
        assert_eq!(file_name(t), "audit-2026-01-01.jsonl");
        assert_eq!(file_day("audit-2026-01-01.jsonl"), Some(t / DAY_MS));
        assert_eq!(file_day("audit-2026-1-01.jsonl"), None);
        assert_eq!(file_day("other.jsonl"), None);
    }

    #[test]
    fn canonical_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"z": [1, {"y": null, "x": "é\n"}], "c": 1.5}});
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":1.5,"z":[1,{"x":"é\n","y":null}]},"b":1}"#
        );
    }

    #[test]
    fn every_field_is_present() {
        let r = Record::new(Event::Request, 0);
        let obj = r.to_object();
        for f in [
            "ts",
            "event",
            "trace_id",
            "request_id",
            "decision",
            "reason",
            "status",
            "route",
            "method",
            "path",
            "query",
            "request_headers",
            "subject",
            "tenant",
            "requested_tenant",
            "roles",
            "client_ip",
            "transport",
            "latency_ms",
            "policy_version",
            "detail",
        ] {
            assert!(obj.contains_key(f), "{f}");
        }
        assert_eq!(obj["event"], "request");
        assert!(obj["subject"].is_null());
    }
}
