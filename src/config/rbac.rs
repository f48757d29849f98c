//! Compiles `roles:` into the expanded [`Rbac`] table: includes resolved, cycles and unknown
//! roles refused, every permission checked.

use std::collections::{BTreeMap, HashMap};

use super::yaml::{ConfigError, Located};
pub use crate::policy::rbac::{Grants, Rbac};

/// Compiles `roles:`; errors are appended.
pub fn compile(
    raw: &BTreeMap<String, Vec<Located<String>>>,
    errors: &mut Vec<ConfigError>,
) -> Rbac {
    let mut roles = HashMap::new();
    for name in raw.keys() {
        let mut grants = Grants::default();
        let mut path = Vec::new();
        expand(name, raw, &mut grants, &mut path, errors);
        roles.insert(name.clone(), grants);
    }
    Rbac::new(roles)
}

fn expand(
    name: &str,
    raw: &BTreeMap<String, Vec<Located<String>>>,
    grants: &mut Grants,
    path: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) {
    let Some(perms) = raw.get(name) else { return };
    path.push(name.to_owned());
    for p in perms {
        if let Some(included) = p.value.strip_prefix('@') {
            if !raw.contains_key(included) {
                errors.push(ConfigError::at(
                    p.pos,
                    format!("role `{name}` includes unknown role `{included}`"),
                ));
            } else if path.iter().any(|r| r == included) {
                // Reported once: while expanding the cycle's alphabetically first role.
                let smallest = path.iter().min().is_some_and(|m| m == included);
                if path.first().is_some_and(|first| first == included) && smallest {
                    errors.push(ConfigError::at(
                        p.pos,
                        format!("role include cycle: {} -> {included}", path.join(" -> ")),
                    ));
                }
            } else {
                let mut inner = Grants::default();
                expand(included, raw, &mut inner, path, errors);
                grants.merge(&inner);
            }
        } else if let Err(msg) = check_permission(&p.value) {
            errors.push(ConfigError::at(p.pos, msg));
        } else {
            grants.add(&p.value);
        }
    }
    path.pop();
}

/// A permission is `*`, `resource:*` or `resource:action` (letters, digits, `_`, `-`, `.`).
pub fn check_permission(p: &str) -> Result<(), String> {
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let ok = p == "*"
        || match p.split_once(':') {
            Some((r, a)) => word(r) && (a == "*" || word(a)),
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{p}` is not a permission: expected `resource:action`, `resource:*` or `*`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::Pos;

    fn roles(spec: &[(&str, &[&str])]) -> BTreeMap<String, Vec<Located<String>>> {
        spec.iter()
            .map(|(r, ps)| {
                (
                    r.to_string(),
                    ps.iter()
                        .map(|p| Located::new(p.to_string(), Pos::default()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn wildcards_and_inheritance() {
        let mut errs = Vec::new();
        let rbac = compile(
            &roles(&[
                ("admin", &["*"]),
                ("analyst", &["reports:read", "ask:use"]),
                ("ml", &["@analyst", "training:run"]),
                ("ops", &["admin:*"]),
            ]),
            &mut errs,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert!(rbac.allows(&["ml"], "reports:read"));
        assert!(rbac.allows(&["ml"], "training:run"));
        assert!(!rbac.allows(&["analyst"], "training:run"));
        assert!(rbac.allows(&["ops"], "admin:delete"));
        assert!(rbac.allows(&["ops"], "admin:*"));
        assert!(!rbac.allows(&["analyst"], "admin:*"));
        assert!(!rbac.allows(&["ops"], "reports:read"));
        assert!(rbac.allows(&["admin"], "anything:at_all"));
        assert!(!rbac.allows(&["nobody"], "reports:read"));
        assert!(rbac.allows(&["nobody", "analyst"], "reports:read"));
    }

    #[test]
    fn cycles_and_unknown_includes_are_errors() {
        let mut errs = Vec::new();
        compile(
            &roles(&[("a", &["@b"]), ("b", &["@a"]), ("c", &["@ghost", "x"])]),
            &mut errs,
        );
        let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("role include cycle: a -> b -> a")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("includes unknown role `ghost`")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("`x` is not a permission")),
            "{msgs:?}"
        );
    }
}
