//! The identity strings fortress sends upstream (`X-Auth-Subject`, `X-Auth-Roles`,
//! `X-Tenant-Id`), checked when the principal is built, so that a token whose values cannot
//! travel as a header unambiguously is refused instead of forwarded mangled or without them.
//!
//! The rules: visible ASCII only (`0x21`–`0x7E`; the subject may also hold inner spaces, and
//! `,` and `;`: it is one value that no app splits). Non-ASCII is refused: a header value can only carry it as opaque bytes that apps
//! decode differently (Latin-1, UTF-8), so the app could see another name than the token's.
//! Roles and the tenant may not contain `,` or `;`, the separators an app splits on (roles go
//! upstream comma-joined). Bounded lengths and role count.

use super::AuthError;

/// Longest subject, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;
/// Longest role, in bytes.
pub const MAX_ROLE_BYTES: usize = 128;
/// Most roles in one token.
pub const MAX_ROLES: usize = 64;
/// Longest tenant, in bytes.
pub const MAX_TENANT_BYTES: usize = 128;

fn visible(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// A subject: 1..=256 bytes of visible ASCII, with spaces only between visible characters
/// (a header value's edges are trimmed by every parser, so edge spaces would be lost).
pub fn subject(s: &str) -> Result<(), AuthError> {
    let b = s.as_bytes();
    let inner_ok = b.iter().all(|&c| visible(c) || c == b' ');
    let edges_ok = b.first().is_some_and(|&c| visible(c)) && b.last().is_some_and(|&c| visible(c));
    if b.len() <= MAX_SUBJECT_BYTES && inner_ok && edges_ok {
        Ok(())
    } else {
        Err(AuthError::InvalidIdentity)
    }
}

/// A separated value (role, tenant): 1..=`max` bytes of visible ASCII without `,` or `;`.
fn token(s: &str, max: usize) -> Result<(), AuthError> {
    let b = s.as_bytes();
    if !b.is_empty() && b.len() <= max && b.iter().all(|&c| visible(c) && c != b',' && c != b';') {
        Ok(())
    } else {
        Err(AuthError::InvalidIdentity)
    }
}

/// One role: 1..=128 bytes of visible ASCII without `,` or `;`.
pub fn role(s: &str) -> Result<(), AuthError> {
    token(s, MAX_ROLE_BYTES)
}

/// The whole role list: at most 64 roles, each valid.
pub fn roles(list: &[String]) -> Result<(), AuthError> {
    if list.len() > MAX_ROLES {
        return Err(AuthError::InvalidIdentity);
    }
    list.iter().try_for_each(|r| role(r))
}

/// A tenant: 1..=128 bytes of visible ASCII without `,` or `;`.
pub fn tenant(s: &str) -> Result<(), AuthError> {
    token(s, MAX_TENANT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: AuthError = AuthError::InvalidIdentity;

    #[test]
    fn subjects() {
        for ok in [
            "alice",
            "alice@example.com",
            "0b6c-uuid",
            "CN=alice,O=acme",
            "John Doe",
            "a;b",
        ] {
            assert_eq!(subject(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(subject(&"a".repeat(MAX_SUBJECT_BYTES)), Ok(()));
        for bad in [
            "",
            " alice",
            "alice ",
            "alice\r\nX-Auth-Roles: admin",
            "alice\n",
            "al\tice",
            "al\0ice",
            "al\u{7f}ice",
            "alicé",
            "al\u{2028}ice",
            "\u{feff}alice",
        ] {
            assert_eq!(subject(bad), Err(BAD), "{bad:?}");
        }
        assert_eq!(subject(&"a".repeat(MAX_SUBJECT_BYTES + 1)), Err(BAD));
    }

    #[test]
    fn roles_and_tenants() {
        for ok in ["reader", "admin:*", "reports:read", "@x", "a-b_c.d"] {
            assert_eq!(role(ok), Ok(()), "{ok:?}");
            assert_eq!(tenant(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "", "a,b", "a;b", "a b", "a\tb", "a\r\nb", "\u{85}", "ünï", "a\u{0}",
        ] {
            assert_eq!(role(bad), Err(BAD), "{bad:?}");
            assert_eq!(tenant(bad), Err(BAD), "{bad:?}");
        }
        assert_eq!(role(&"r".repeat(MAX_ROLE_BYTES)), Ok(()));
        assert_eq!(role(&"r".repeat(MAX_ROLE_BYTES + 1)), Err(BAD));
        assert_eq!(tenant(&"t".repeat(MAX_TENANT_BYTES)), Ok(()));
        assert_eq!(tenant(&"t".repeat(MAX_TENANT_BYTES + 1)), Err(BAD));
        let many: Vec<String> = (0..MAX_ROLES).map(|i| format!("r{i}")).collect();
        assert_eq!(roles(&many), Ok(()));
        let too_many: Vec<String> = (0..=MAX_ROLES).map(|i| format!("r{i}")).collect();
        assert_eq!(roles(&too_many), Err(BAD));
        assert_eq!(roles(&["ok".into(), "no,pe".into()]), Err(BAD));
        assert_eq!(roles(&[]), Ok(()));
    }
}
