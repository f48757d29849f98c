//! Roles → permissions, expanded once at compile time (includes resolved, cycles refused by
//! `config/rbac.rs`), so a request check is a few set lookups.

use std::collections::{HashMap, HashSet};

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

    /// Adds one permission (`*`, `resource:*` or `resource:action`).
    pub fn add(&mut self, perm: &str) {
        if perm == "*" {
            self.all = true;
        } else if let Some(resource) = perm.strip_suffix(":*") {
            self.resources.insert(resource.to_owned());
        } else {
            self.exact.insert(perm.to_owned());
        }
    }

    /// Adds everything `other` grants.
    pub fn merge(&mut self, other: &Grants) {
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

    /// A table of expanded roles.
    pub fn new(roles: HashMap<String, Grants>) -> Self {
        Self { roles }
    }

    /// The expanded grants of a role.
    pub fn role(&self, name: &str) -> Option<&Grants> {
        self.roles.get(name)
    }
}
