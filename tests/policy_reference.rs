//! `docs/policy-reference.md` is generated from the config's JSON Schema (`fortress schema`,
//! built from the raw config types and their doc comments). This test regenerates it and fails
//! when the committed file is stale; `UPDATE_DOCS=1 cargo test --test policy_reference`
//! rewrites it.

use std::path::Path;

use serde_json::Value;

const HEADER: &str = "# Policy reference: every key

<!-- Generated from `fortress schema` by tests/policy_reference.rs: do not edit by hand.
     Regenerate with `UPDATE_DOCS=1 cargo test --test policy_reference`. -->

Every key of the config file, with its type and the description the schema gives it (the
doc comments of the config types: `fortress schema` prints the same as JSON Schema). Keys
are written as paths: `server.timeouts.idle`; `routes[].match.path` is a key of each item of
the `routes` list; `classes.NAME.max_in_flight` is a key of each entry of the `classes` map.
Unknown keys are errors (`FILE:LINE:COL`). Sizes are written `10MiB`, `512KiB` or plain bytes;
durations `30s`, `5m`, `2h`, `1d`. How the pieces work together is in
[configuration.md](configuration.md); every page is listed in the [README](../README.md#documentation).
";

/// Follows a `$ref` into `$defs`.
fn resolve<'a>(defs: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or(r);
            resolve(defs, &defs[name])
        }
        None => node,
    }
}

/// The alternatives a node allows (`anyOf` / `oneOf` flattened, `null` left out).
fn variants<'a>(defs: &'a Value, node: &'a Value) -> Vec<&'a Value> {
    let node = resolve(defs, node);
    for key in ["anyOf", "oneOf"] {
        if let Some(list) = node.get(key).and_then(Value::as_array) {
            return list
                .iter()
                .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
                .flat_map(|v| variants(defs, v))
                .collect();
        }
    }
    vec![node]
}

fn single(defs: &Value, v: &Value) -> String {
    if let Some(c) = v.get("const") {
        return format!(
            "`{}`",
            c.as_str().map_or_else(|| c.to_string(), str::to_owned)
        );
    }
    if let Some(values) = v.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|e| {
                format!(
                    "`{}`",
                    e.as_str().map_or_else(|| e.to_string(), str::to_owned)
                )
            })
            .collect::<Vec<_>>()
            .join(" or ");
    }
    let ty = match v.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("any")
            .to_owned(),
        _ => "any".to_owned(),
    };
    match ty.as_str() {
        "array" => match v.get("items") {
            Some(items) => format!("list of {}", type_name(defs, items)),
            None => "list".to_owned(),
        },
        "object" if v.get("properties").is_some() => "mapping".to_owned(),
        "object" => match v.get("additionalProperties") {
            Some(ap) if ap.is_object() => format!("map of name → {}", type_name(defs, ap)),
            _ => "mapping".to_owned(),
        },
        other => other.to_owned(),
    }
}

fn type_name(defs: &Value, node: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    for v in variants(defs, node) {
        let s = single(defs, v);
        if !parts.contains(&s) {
            parts.push(s);
        }
    }
    parts.join(" or ")
}

fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The key's own description, else its type's, plus the meaning of each allowed value.
fn description(defs: &Value, node: &Value) -> String {
    let own = node
        .get("description")
        .or_else(|| resolve(defs, node).get("description"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let values: Vec<String> = variants(defs, node)
        .iter()
        .filter_map(|v| {
            let c = v.get("const")?.as_str()?;
            let d = v.get("description")?.as_str()?;
            Some(format!("`{c}`: {}", d.trim_end_matches('.')))
        })
        .collect();
    let mut out = own;
    if !values.is_empty() {
        out.push_str(" Values: ");
        out.push_str(&values.join("; "));
    }
    cell(&out)
}

/// Rows `(path, type, description)` for every key under `node`, depth first, keys sorted.
fn walk(defs: &Value, node: &Value, path: &str, rows: &mut Vec<(String, String, String)>) {
    let mut walked: Vec<*const Value> = Vec::new();
    let vs = variants(defs, node);
    // Objects first, so a `one mapping or a list of them` key is described once, as the
    // mapping (its list items are the same keys).
    for v in vs.iter().filter(|v| v.get("properties").is_some()) {
        walked.push(*v as *const Value);
        if let Some(props) = v["properties"].as_object() {
            let mut keys: Vec<&String> = props.keys().collect();
            keys.sort();
            for k in keys {
                let child = &props[k];
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                rows.push((
                    p.clone(),
                    cell(&type_name(defs, child)),
                    description(defs, child),
                ));
                walk(defs, child, &p, rows);
            }
        }
    }
    for v in &vs {
        if let Some(items) = v.get("items") {
            let target = resolve(defs, items);
            if walked.contains(&(target as *const Value)) {
                continue;
            }
            walk(defs, items, &format!("{path}[]"), rows);
        }
        if let Some(ap) = v.get("additionalProperties").filter(|ap| ap.is_object()) {
            walk(defs, ap, &format!("{path}.NAME"), rows);
        }
    }
}

fn table(rows: &[(String, String, String)]) -> String {
    let mut out = String::from("| key | type | description |\n|---|---|---|\n");
    for (k, t, d) in rows {
        out.push_str(&format!("| `{k}` | {t} | {d} |\n"));
    }
    out
}

fn generate() -> String {
    let schema: Value =
        serde_json::from_str(&fortress::config::json_schema()).expect("the schema is JSON");
    let defs = &schema["$defs"];
    let mut rows = Vec::new();
    walk(defs, &schema, "", &mut rows);
    let top: Vec<_> = rows
        .iter()
        .filter(|r| !r.0.contains(['.', '[']))
        .cloned()
        .collect();
    let mut out = String::from(HEADER);
    out.push_str("\n## Top level\n\n");
    out.push_str(&table(&top));
    for (key, _, _) in &top {
        let nested: Vec<_> = rows
            .iter()
            .filter(|r| {
                r.0.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .cloned()
            .collect();
        if nested.is_empty() {
            continue;
        }
        out.push_str(&format!("\n## `{key}`\n\n"));
        out.push_str(&table(&nested));
    }
    out
}

#[test]
fn policy_reference_is_generated_from_the_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/policy-reference.md");
    let fresh = generate();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == fresh {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &fresh).expect("write docs/policy-reference.md");
        return;
    }
    panic!(
        "docs/policy-reference.md is stale (a config key or its doc comment changed): \
         run `UPDATE_DOCS=1 cargo test --test policy_reference` and commit the result"
    );
}

#[test]
fn the_reference_names_every_key_of_every_type() {
    let text = generate();
    // A key from each corner of the schema: top level, nested, list items, named maps,
    // one-or-many, and a value list.
    for key in [
        "| `version` |",
        "| `server.timeouts.shutdown_grace` |",
        "| `routes[].tenant.path_param` |",
        "| `routes[].rate_limit.key` |",
        "| `classes.NAME.max_in_flight` |",
        "| `streams.NAME.sql_guard.allowed_tables` |",
        "| `authentication.jwt.secrets[].env` |",
        "| `readiness.NAME.toggle` |",
    ] {
        assert!(text.contains(key), "{key} missing");
    }
    assert!(text.contains("| `default` | `deny` or `allow` |"), "{text}");
    // The list form of a one-or-many key is not described twice.
    assert!(!text.contains("`routes[].rate_limit[].key`"));
    // Every row is a full table row (no description broke the table).
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells = line.replace("\\|", "").matches('|').count();
        assert_eq!(cells, 4, "{line}");
    }
}
