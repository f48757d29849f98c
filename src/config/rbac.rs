//! Roles → permissions, expanded once at compile time (includes resolved, cycles refused), so
//! a request check is a few set lookups.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::yaml::{ConfigError, Located};

/// Everything one role grants.
#[derive(Debug, Default, Clone)]
pub struct Grants {
    /// `*`: every permission.
    pub all: bool,
    /// Exact `resource:action` grants.
    pub exact: HashSet<String>,
    /// Resources granted with `resource:*`.
    pub resources: HashSet<String>,
}

impl Grants {
    /// Whether these grants cover `required` (which may itself be `resource:*` or `*`).
    pub fn covers(&self, required: &str) -> bool {
        if self.all || self.exact.contains(required) {
            return true;
        }
        match required.split_once(':') {
            Some((resource, action)) => {
                self.resources.contains(resource) && (action == "*" || !action.is_empty())
            }
            None => false,
        }
    }

    /// Whether these grants cover `required` without the `*` grant.
    pub fn covers_explicitly(&self, required: &str) -> bool {
        Grants {
            all: false,
            ..self.clone()
        }
        .covers(required)
    }

    fn add(&mut self, perm: &str) {
        if perm == "*" {
            self.all = true;
        } else if let Some(resource) = perm.strip_suffix(":*") {
            self.resources.insert(resource.to_owned());
        } else {
            self.exact.insert(perm.to_owned());
        }
    }

    fn merge(&mut self, other: &Grants) {
        self.all |= other.all;
        self.exact.extend(other.exact.iter().cloned());
        self.resources.extend(other.resources.iter().cloned());
    }
}

/// The compiled role table.
#[derive(Debug, Default)]
pub struct Rbac {
    roles: HashMap<String, Grants>,
}

impl Rbac {
    /// Whether any of `roles` covers `required`. Unknown roles grant nothing.
    pub fn allows<S: AsRef<str>>(&self, roles: &[S], required: &str) -> bool {
        roles
            .iter()
            .filter_map(|r| self.roles.get(r.as_ref()))
            .any(|g| g.covers(required))
    }

    /// Like [`Rbac::allows`], but `*` does not count: for privileges that must be granted
    /// by name (crossing tenants), so that an `admin: ["*"]` role does not cross tenants.
    pub fn allows_explicitly<S: AsRef<str>>(&self, roles: &[S], required: &str) -> bool {
        roles
            .iter()
            .filter_map(|r| self.roles.get(r.as_ref()))
            .any(|g| g.covers_explicitly(required))
    }

    /// Whether some role grants `required` by name (for the lint).
    pub fn granted_explicitly_by_any(&self, required: &str) -> bool {
        self.roles.values().any(|g| g.covers_explicitly(required))
    }

    /// Whether some role grants `required` (for the lint).
    pub fn granted_by_any(&self, required: &str) -> bool {
        self.roles.values().any(|g| g.covers(required))
    }

    /// The expanded grants of a role.
    pub fn role(&self, name: &str) -> Option<&Grants> {
        self.roles.get(name)
    }
}

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
    Rbac { roles }
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
