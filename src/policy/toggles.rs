//! Feature toggles (`toggles:`) and the admin API's permissions (`admin.permissions`),
//! compiled. A toggle's effective value is the state store's override (set through the admin
//! API) over the policy default; routes with `requires_toggle` refer to a toggle by index.

/// One toggle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toggle {
    /// Its name (the key under `toggles:`; the state store's override key).
    pub name: String,
    /// Its value while no override is set.
    pub default: bool,
}

/// Every toggle of the policy, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Toggles {
    /// The toggles.
    pub list: Vec<Toggle>,
}

impl Toggles {
    /// The index of the toggle named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.list
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
    }

    /// The toggle named `name`.
    pub fn get(&self, name: &str) -> Option<&Toggle> {
        self.index_of(name).and_then(|i| self.list.get(i))
    }
}

/// The permission each admin API endpoint group requires (`admin.permissions`), each
/// `admin:*` unless configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPermissions {
    /// `GET`/`PUT /admin/toggles…`.
    pub toggles: String,
    /// `GET`/`POST /admin/revocations`.
    pub revocations: String,
    /// `POST /admin/reload`.
    pub reload: String,
    /// `GET /admin/policy`, `GET /admin/budgets/{tenant}`.
    pub read: String,
}

/// The permission every admin endpoint requires by default.
pub const DEFAULT_ADMIN_PERMISSION: &str = "admin:*";

impl Default for AdminPermissions {
    fn default() -> Self {
        Self {
            toggles: DEFAULT_ADMIN_PERMISSION.into(),
            revocations: DEFAULT_ADMIN_PERMISSION.into(),
            reload: DEFAULT_ADMIN_PERMISSION.into(),
            read: DEFAULT_ADMIN_PERMISSION.into(),
        }
    }
}
