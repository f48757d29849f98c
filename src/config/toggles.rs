//! `toggles:`, a route's `requires_toggle` and `admin:` (the admin API's permissions): raw
//! types and their compilation into `policy/toggles.rs`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::yaml::{ConfigError, Located};
use crate::policy::toggles::{AdminPermissions, Toggle, Toggles};

/// One feature toggle.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawToggle {
    /// The value while no override is set through the admin API
    /// (`PUT /admin/toggles/{name}`).
    pub default: Located<bool>,
}

/// `admin:` settings of the admin API (served on `server.admin`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// The permission each endpoint group requires of the bearer token's roles (each
    /// `admin:*` unless set).
    #[serde(default)]
    pub permissions: Option<RawAdminPermissions>,
}

/// `admin.permissions`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdminPermissions {
    /// `GET /admin/toggles`, `PUT /admin/toggles/{name}` (e.g. `admin:toggles`).
    #[serde(default)]
    pub toggles: Option<Located<String>>,
    /// `GET`/`POST /admin/revocations` (e.g. `admin:revoke`).
    #[serde(default)]
    pub revocations: Option<Located<String>>,
    /// `POST /admin/reload` (e.g. `admin:reload`).
    #[serde(default)]
    pub reload: Option<Located<String>>,
    /// `GET /admin/policy`, `GET /admin/budgets/{tenant}` (e.g. `admin:read`).
    #[serde(default)]
    pub read: Option<Located<String>>,
}

/// Longest toggle name.
pub const MAX_NAME: usize = 64;

/// Compiles `toggles:`. Names are `[a-z0-9_.-]`, 1 to 64 characters.
pub fn toggles(raw: &BTreeMap<String, RawToggle>, errors: &mut Vec<ConfigError>) -> Toggles {
    let mut list = Vec::with_capacity(raw.len());
    for (name, t) in raw {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !ok {
            errors.push(ConfigError::at(
                t.default.pos,
                format!(
                    "toggle name `{name}`: use 1 to {MAX_NAME} characters of lower-case letters, \
                     digits, `_`, `.` or `-`"
                ),
            ));
            continue;
        }
        list.push(Toggle {
            name: name.clone(),
            default: t.default.value,
        });
    }
    // BTreeMap order: sorted by name, which `Toggles::index_of` relies on.
    Toggles { list }
}

/// A route's `requires_toggle`: the toggle's index, or an error naming the defined ones.
pub fn route_toggle(
    name: Option<&Located<String>>,
    toggles: &Toggles,
    errors: &mut Vec<ConfigError>,
) -> Option<usize> {
    let name = name?;
    let found = toggles.index_of(&name.value);
    if found.is_none() {
        let known: Vec<&str> = toggles.list.iter().map(|t| t.name.as_str()).collect();
        errors.push(ConfigError::at(
            name.pos,
            format!(
                "unknown toggle `{}`: define it under `toggles:` (defined: {})",
                name.value,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    found
}

/// Compiles `admin:`; each permission is `resource:action`, `resource:*` or `*`.
pub fn admin(raw: Option<&RawAdmin>, errors: &mut Vec<ConfigError>) -> AdminPermissions {
    let mut out = AdminPermissions::default();
    let Some(p) = raw.and_then(|a| a.permissions.as_ref()) else {
        return out;
    };
    for (slot, value) in [
        (&mut out.toggles, &p.toggles),
        (&mut out.revocations, &p.revocations),
        (&mut out.reload, &p.reload),
        (&mut out.read, &p.read),
    ] {
        let Some(v) = value else { continue };
        let ok = v.value == "*"
            || v.value.split_once(':').is_some_and(|(r, a)| {
                !r.is_empty()
                    && !a.is_empty()
                    && v.value.bytes().all(|b| b.is_ascii_graphic())
                    && !a.contains(':')
            });
        if ok {
            *slot = v.value.clone();
        } else {
            errors.push(ConfigError::at(
                v.pos,
                format!(
                    "admin permission `{}`: expected `resource:action`, `resource:*` or `*`",
                    v.value
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn load(top: &str, route_extra: &str) -> Result<crate::policy::Policy, String> {
        let text = format!(
            "version: 1\nserver:\n  listen: 127.0.0.1:0\n  upstream: http://127.0.0.1:1\n\
             {top}routes:\n  - name: all\n    match: {{ path: \"/**\" }}\n    \
             public: true\n{route_extra}"
        );
        crate::config::load_str(&text, Path::new("/nowhere/fortress.yaml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn toggles_and_requires_toggle() {
        let p = load(
            "toggles:\n  training_enabled: { default: false }\n  beta: { default: true }\n",
            "    requires_toggle: training_enabled\n",
        )
        .expect("valid");
        let names: Vec<(&str, bool)> = p
            .toggles
            .list
            .iter()
            .map(|t| (t.name.as_str(), t.default))
            .collect();
        assert_eq!(names, [("beta", true), ("training_enabled", false)]);
        assert_eq!(p.router.routes()[0].access.requires_toggle, Some(1));
        assert_eq!(p.admin, crate::policy::toggles::AdminPermissions::default());

        let e = load(
            "toggles:\n  beta: { default: true }\n",
            "    requires_toggle: trainig\n",
        )
        .expect_err("unknown toggle");
        assert!(
            e.contains(
                "fortress.yaml:11:22: unknown toggle `trainig`: define it under `toggles:` (defined: beta)"
            ),
            "{e}"
        );
        let e = load("", "    requires_toggle: x\n").expect_err("no toggles");
        assert!(e.contains("(defined: none)"), "{e}");
        let e = load("toggles:\n  Bad Name: { default: true }\n", "").expect_err("bad name");
        assert!(e.contains("toggle name `Bad Name`"), "{e}");
        let e = load("toggles:\n  a: { default: true, extra: 1 }\n", "").expect_err("unknown key");
        assert!(e.contains("extra"), "{e}");
        let e = load("toggles:\n  a: {}\n", "").expect_err("default required");
        assert!(e.contains("default"), "{e}");
    }

    #[test]
    fn admin_permissions() {
        let p = load(
            "admin:\n  permissions: { toggles: \"admin:toggles\", revocations: \"admin:revoke\", reload: \"admin:reload\", read: \"admin:read\" }\n",
            "",
        )
        .expect("valid");
        assert_eq!(p.admin.toggles, "admin:toggles");
        assert_eq!(p.admin.revocations, "admin:revoke");
        assert_eq!(p.admin.reload, "admin:reload");
        assert_eq!(p.admin.read, "admin:read");
        let p = load("admin:\n  permissions: { reload: \"ops:*\" }\n", "").expect("valid");
        assert_eq!(
            (p.admin.reload.as_str(), p.admin.toggles.as_str()),
            ("ops:*", "admin:*")
        );
        let e = load("admin:\n  permissions: { read: nocolon }\n", "").expect_err("bad");
        assert!(
            e.contains("fortress.yaml:6:24: admin permission `nocolon`"),
            "{e}"
        );
        let e = load("admin:\n  tokens: 1\n", "").expect_err("unknown key");
        assert!(e.contains("tokens"), "{e}");
    }
}
