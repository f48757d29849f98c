//! `fortress diff OLD NEW`: what a policy change changes, as the lines a reviewer reads in a
//! pull request: routes added, removed, re-permissioned or made public; roles gaining or
//! losing permissions (with `@role` includes expanded); every other setting by its path.
//! Both files must compile (with the test key, so no secret is needed). Output is sorted and
//! stable. Exit 0: no change; 1: changes; 2: a file cannot be used. Reference:
//! docs/policy-testing.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value};

use crate::config::yaml;
use crate::policytest::judge::TestPolicy;

/// `fortress diff` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// The policy as it is.
    pub old: PathBuf,
    /// The policy as proposed.
    pub new: PathBuf,
}

/// Runs `fortress diff`.
pub fn run(args: &DiffArgs) -> ExitCode {
    match diff_files(&args.old, &args.new) {
        Ok(lines) if lines.is_empty() => {
            println!("no change");
            ExitCode::SUCCESS
        }
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// The report lines (empty: no change).
pub fn diff_files(old: &Path, new: &Path) -> Result<Vec<String>, String> {
    let a = load(old)?;
    let b = load(new)?;
    Ok(diff(&a, &b))
}

fn load(path: &Path) -> Result<Value, String> {
    // Compiles (every error at FILE:LINE:COL), then reads the document as written.
    let policy = TestPolicy::load(path).map_err(|e| e.to_string())?;
    yaml::from_str::<Value>(&policy.text).map_err(|errors| {
        errors
            .iter()
            .map(|e| match e.pos {
                Some(p) => format!("{}:{}:{}: {}", path.display(), p.line, p.col, e.message),
                None => format!("{}: {}", path.display(), e.message),
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Sections in the order they are printed.
fn diff(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let routes = routes(a, b);
    if !routes.is_empty() {
        out.push("routes:".to_string());
        out.extend(routes);
    }
    let roles = roles(a, b);
    if !roles.is_empty() {
        out.push("roles:".to_string());
        out.extend(roles);
    }
    let mut settings = Vec::new();
    let empty = Map::new();
    let (ao, bo) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let keys: BTreeSet<&String> = ao.keys().chain(bo.keys()).collect();
    for k in keys {
        if k == "routes" || k == "roles" {
            continue;
        }
        leaves(k, ao.get(k), bo.get(k), &mut settings);
    }
    if !settings.is_empty() {
        out.push("settings:".to_string());
        for (path, old, new) in settings {
            let mark = if widens_setting(&path, &old, &new) {
                '!'
            } else {
                '~'
            };
            out.push(format!("  {mark} {path}: {old} → {new}"));
        }
    }
    let changes = out.iter().filter(|l| l.starts_with("  ")).count();
    let widening = out.iter().filter(|l| l.starts_with("  !")).count();
    if changes > 0 {
        out.push(format!(
            "{changes} change{}; {widening} widen{} access (marked !)",
            if changes == 1 { "" } else { "s" },
            if widening == 1 { "s" } else { "" }
        ));
    }
    out
}

/// A setting change that lets more through.
fn widens_setting(path: &str, old: &str, new: &str) -> bool {
    match path {
        "default" => new == "allow",
        "mode" => new == "dry-run",
        "allow_ips" => new == "(none)",
        "server.require_https" => new == "false" && old != "false",
        _ => false,
    }
}

fn by_name(doc: &Value) -> BTreeMap<String, &Map<String, Value>> {
    doc.get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter_map(|r| Some((r.get("name")?.as_str()?.to_string(), r)))
        .collect()
}

fn routes(a: &Value, b: &Value) -> Vec<String> {
    let (old, new) = (by_name(a), by_name(b));
    let mut out = Vec::new();
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        match (old.get(name), new.get(name)) {
            (None, Some(r)) => {
                let mark = if is_public(r) { '!' } else { '+' };
                out.push(format!("  {mark} added {name}: {}", summary(r)));
            }
            (Some(r), None) => out.push(format!("  - removed {name}: {}", summary(r))),
            (Some(o), Some(n)) => out.extend(route_changes(name, o, n)),
            (None, None) => {}
        }
    }
    out
}

fn is_public(r: &Map<String, Value>) -> bool {
    r.get("public").and_then(Value::as_bool).unwrap_or(false)
}

fn list(r: &Map<String, Value>, key: &str) -> BTreeSet<String> {
    r.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(scalar)
        .collect()
}

fn summary(r: &Map<String, Value>) -> String {
    let m = r.get("match");
    let methods = m
        .and_then(|m| m.get("methods"))
        .and_then(Value::as_array)
        .map_or("*".to_string(), |ms| {
            ms.iter().map(scalar).collect::<Vec<_>>().join(",")
        });
    let path = m.and_then(|m| m.get("path")).map_or("?".into(), scalar);
    format!("{methods} {path}, {}", access(r))
}

/// `public`, `authenticated` or the permissions a route requires.
fn access(r: &Map<String, Value>) -> String {
    if is_public(r) {
        "public".to_string()
    } else {
        let mut parts = Vec::new();
        let all = list(r, "require");
        let any = list(r, "require_any");
        if !all.is_empty() {
            parts.push(format!("require {}", set(&all)));
        }
        if !any.is_empty() {
            parts.push(format!("require_any {}", set(&any)));
        }
        if parts.is_empty() {
            "authenticated".into()
        } else {
            parts.join(", ")
        }
    }
}

fn set(s: &BTreeSet<String>) -> String {
    format!("[{}]", s.iter().cloned().collect::<Vec<_>>().join(", "))
}

fn route_changes(name: &str, o: &Map<String, Value>, n: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    match (is_public(o), is_public(n)) {
        (false, true) => out.push(format!("  ! {name}: made public (was {})", access(o))),
        (true, false) => out.push(format!("  ~ {name}: no longer public ({})", access(n))),
        _ => {}
    }
    for key in ["require", "require_any"] {
        let (before, after) = (list(o, key), list(n, key));
        if before == after {
            continue;
        }
        let added: BTreeSet<String> = after.difference(&before).cloned().collect();
        let removed: BTreeSet<String> = before.difference(&after).cloned().collect();
        // Fewer required permissions (or more alternatives) lets more principals through.
        let widens = match key {
            "require" => !removed.is_empty(),
            _ => !added.is_empty() && !before.is_empty(),
        };
        let mut what = Vec::new();
        if !added.is_empty() {
            what.push(format!("+{}", set(&added)));
        }
        if !removed.is_empty() {
            what.push(format!("-{}", set(&removed)));
        }
        out.push(format!(
            "  {} {name}: {key} {} → {} ({})",
            if widens { '!' } else { '~' },
            set(&before),
            set(&after),
            what.join(" ")
        ));
    }
    if !is_public(o) && is_public(n) {
        // "made public" already says what the route required.
        out.truncate(1);
    }
    let mut rest = Vec::new();
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for k in keys {
        if matches!(k.as_str(), "name" | "public" | "require" | "require_any") {
            continue;
        }
        leaves(k, o.get(k), n.get(k), &mut rest);
    }
    for (path, old, new) in rest {
        let widens = (path == "tenant" || path == "allow_ips") && new == "(none)"
            || path == "tenant.cross_tenant_permission" && old == "(none)"
            || path == "mode" && new == "dry-run";
        out.push(format!(
            "  {} {name}: {path}: {old} → {new}",
            if widens { '!' } else { '~' }
        ));
    }
    out
}

/// Every changed leaf under `path`: `(path, old, new)`, sorted by path. Values under a key
/// that holds key material are never printed.
fn leaves(
    path: &str,
    a: Option<&Value>,
    b: Option<&Value>,
    out: &mut Vec<(String, String, String)>,
) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                leaves(&format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (x, y) if x != y => {
            // Where a key may be written inline (`value:`), the value is never printed; the
            // name of a variable or file is.
            let keyish = path
                .split('.')
                .any(|p| matches!(p, "secret" | "secrets" | "hmac_key" | "redact_key" | "key"));
            let secret = keyish
                && (path.ends_with(".value") || [x, y].into_iter().flatten().any(inline_value));
            let show = |v: Option<&Value>| match v {
                None | Some(Value::Null) => "(none)".to_string(),
                Some(_) if secret => "(set)".to_string(),
                Some(v) => compact(v),
            };
            let (old, new) = (show(x), show(y));
            out.push((
                path.to_string(),
                old.clone(),
                if old == new {
                    "(set, changed)".into()
                } else {
                    new
                },
            ));
        }
        _ => {}
    }
}

/// Whether `v` holds a `value:` key at any depth (an inline secret).
fn inline_value(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("value") || m.values().any(inline_value),
        Value::Array(items) => items.iter().any(inline_value),
        _ => false,
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => compact(other),
    }
}

/// One-line YAML-ish rendering: strings bare, lists `[a, b]`, maps `{k: v}`.
fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(compact).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}: {}", compact(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// Each role's effective permissions (`@role` includes expanded; cycles are compile errors).
fn effective(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let roles: BTreeMap<String, Vec<String>> = doc
        .get("roles")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let perms = v.as_array().into_iter().flatten().map(scalar).collect();
            (k.clone(), perms)
        })
        .collect();
    fn expand(
        name: &str,
        roles: &BTreeMap<String, Vec<String>>,
        seen: &mut BTreeSet<String>,
        out: &mut BTreeSet<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        for p in roles.get(name).into_iter().flatten() {
            match p.strip_prefix('@') {
                Some(inner) => expand(inner, roles, seen, out),
                None => {
                    out.insert(p.clone());
                }
            }
        }
    }
    roles
        .keys()
        .map(|name| {
            let mut out = BTreeSet::new();
            expand(name, &roles, &mut BTreeSet::new(), &mut out);
            (name.clone(), out)
        })
        .collect()
}

fn roles(a: &Value, b: &Value) -> Vec<String> {
    let (old, new) = (effective(a), effective(b));
    let mut out = Vec::new();
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        match (old.get(name), new.get(name)) {
            (None, Some(p)) => out.push(format!("  + added {name}: {}", set(p))),
            (Some(p), None) => out.push(format!("  - removed {name}: {}", set(p))),
            (Some(o), Some(n)) if o != n => {
                let gains: BTreeSet<String> = n.difference(o).cloned().collect();
                let loses: BTreeSet<String> = o.difference(n).cloned().collect();
                if !gains.is_empty() {
                    out.push(format!("  ! {name}: gains {}", set(&gains)));
                }
                if !loses.is_empty() {
                    out.push(format!("  ~ {name}: loses {}", set(&loses)));
                }
            }
            _ => {}
        }
    }
    out
}
