//! `readiness:` guards and a route's `guard:` → [`Readiness`]; and, for fail-closed startup,
//! the guards the policy itself can never satisfy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;

use schemars::JsonSchema;
use serde::Deserialize;

use super::raw::RawConfig;
use super::yaml::{ConfigError, Located};
use crate::policy::readiness::{Condition, Guard, Readiness};

/// One named guard under `readiness:`: conditions fortress checks itself, all of which must
/// hold for a route with `guard: NAME` to be served (else 503 `not_ready`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    /// The audit trail is configured and its sink takes records.
    #[serde(default)]
    pub audit: Option<Located<bool>>,
    /// The route's stream has a `sql_guard` (known at load time: outside `local`, a guarded
    /// route without one stops startup).
    #[serde(default)]
    pub sql_guard: Option<Located<bool>>,
    /// Every JWKS key set is loaded.
    #[serde(default)]
    pub jwks: Option<Located<bool>>,
    /// A toggle (a name under `toggles:`) is on.
    #[serde(default)]
    pub toggle: Option<Located<String>>,
}

fn conditions(g: &RawGuard, toggles: &crate::policy::toggles::Toggles) -> Vec<Condition> {
    let mut out = Vec::new();
    let on = |c: &Option<Located<bool>>| c.as_ref().is_some_and(|c| c.value);
    if on(&g.audit) {
        out.push(Condition::Audit);
    }
    if on(&g.sql_guard) {
        out.push(Condition::SqlGuard);
    }
    if on(&g.jwks) {
        out.push(Condition::Jwks);
    }
    // An unknown name is reported by `compile`; `usize::MAX` never resolves (fails closed).
    if let Some(t) = &g.toggle {
        out.push(Condition::Toggle(
            toggles.index_of(&t.value).unwrap_or(usize::MAX),
        ));
    }
    out
}

/// Compiles the guards; `route_guards[i]` is route i's `guard:` (in file order, which is
/// `Route::index`), `sql_guarded[i]` whether its stream has a SQL guard.
pub fn compile(
    guards: &BTreeMap<String, RawGuard>,
    route_guards: &[Option<&Located<String>>],
    sql_guarded: Vec<bool>,
    toggles: &crate::policy::toggles::Toggles,
    errors: &mut Vec<ConfigError>,
) -> Readiness {
    let mut out = Readiness::default();
    for (name, g) in guards {
        if let Some(t) = &g.toggle
            && toggles.index_of(&t.value).is_none()
        {
            errors.push(ConfigError::at(
                t.pos,
                format!("`toggle: {}` names no toggle under `toggles:`", t.value),
            ));
        }
        let conds = conditions(g, toggles);
        if conds.is_empty() {
            errors.push(ConfigError::whole(format!(
                "readiness guard `{name}` has no condition: set `audit`, `sql_guard` or `jwks` to true, or name a `toggle`"
            )));
        }
        out.guards.push(Arc::new(Guard {
            name: name.as_str().into(),
            conditions: conds,
            last: AtomicU8::new(0),
        }));
    }
    for g in route_guards {
        let idx = g.and_then(|g| {
            let found = guards.keys().position(|k| *k == g.value);
            if found.is_none() {
                errors.push(ConfigError::at(
                    g.pos,
                    format!("`guard: {}` names no guard under `readiness:`", g.value),
                ));
            }
            found
        });
        out.by_route.push(idx);
    }
    out.sql_guarded = sql_guarded;
    out
}

/// The guards that can never open under this policy (audit disabled; a route's stream
/// without `sql_guard`): startup errors outside `environment: local`.
pub fn unsatisfiable(raw: &RawConfig) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for r in &raw.routes {
        let Some(gname) = &r.guard else { continue };
        let Some(g) = raw.readiness.get(&gname.value) else {
            continue;
        };
        for c in conditions(g, &crate::policy::toggles::Toggles::default()) {
            let never = match c {
                Condition::Audit => raw.audit.is_none(),
                Condition::SqlGuard => r
                    .stream
                    .as_ref()
                    .and_then(|s| raw.streams.get(&s.value))
                    .is_none_or(|s| s.sql_guard.is_none()),
                // Without a key set there is nothing to wait for: always open.
                Condition::Jwks => false,
                // An operator can always switch a toggle on (the admin API).
                Condition::Toggle(_) => false,
            };
            if never {
                out.push(ConfigError::at(
                    gname.pos,
                    format!(
                        "route `{}` has `guard: {}`, whose condition `{}` this policy can never satisfy{}",
                        r.name.value,
                        gname.value,
                        c.name(),
                        match c {
                            Condition::Audit => " (audit is disabled)",
                            Condition::SqlGuard => " (the route's stream has no `sql_guard`)",
                            Condition::Jwks | Condition::Toggle(_) => "",
                        }
                    ),
                ));
            }
        }
    }
    out
}
