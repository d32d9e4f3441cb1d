use std::{fmt, sync::Arc};

/// The tenant used when a request names none.
pub const DEFAULT_TENANT: &str = "default";

/// The longest tenant id accepted, in bytes (the Loki, Mimir and Tempo rule).
pub const MAX_TENANT_BYTES: usize = 150;

/// A validated tenant id.
///
/// The rules are those of Loki, Mimir and Tempo: 1 to 150 bytes of ASCII letters, digits and
/// `! - _ . * ' ( )`, and never `.` or `..`. That excludes `/`, `:`, `|`, `%` and every other byte,
/// so a tenant id is always safe as a single path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("tenant id is empty")]
    Empty,
    #[error("tenant id is {len} bytes long, over the limit of {MAX_TENANT_BYTES}")]
    TooLong { len: usize },
    #[error("tenant id {0:?} is not allowed")]
    Reserved(String),
    #[error("tenant id contains {found:?} at byte {at}; allowed are letters, digits and ! - _ . * ' ( )")]
    InvalidCharacter { found: char, at: usize },
}

impl Tenant {
    pub fn parse(id: &str) -> Result<Tenant, TenantError> {
        if id.is_empty() {
            return Err(TenantError::Empty);
        }
        if id.len() > MAX_TENANT_BYTES {
            return Err(TenantError::TooLong { len: id.len() });
        }
        if id == "." || id == ".." {
            return Err(TenantError::Reserved(id.to_string()));
        }
        if let Some((at, found)) = id.char_indices().find(|&(_, c)| !is_tenant_char(c)) {
            return Err(TenantError::InvalidCharacter { found, at });
        }
        Ok(Tenant(Arc::from(id)))
    }

    pub fn default_tenant() -> Tenant {
        Tenant(Arc::from(DEFAULT_TENANT))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_tenant_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')
}

impl Default for Tenant {
    fn default() -> Self {
        Tenant::default_tenant()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenant({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_with_allowed_characters_is_accepted() {
        for id in ["default", "team-a", "A_b.c", "x!*'()", "0", &"a".repeat(150)] {
            assert_eq!(Tenant::parse(id).map(|t| t.to_string()), Ok(id.to_string()));
        }
    }

    #[test]
    fn tenant_path_tricks_are_refused() {
        assert_eq!(Tenant::parse(".."), Err(TenantError::Reserved("..".into())));
        assert_eq!(Tenant::parse("."), Err(TenantError::Reserved(".".into())));
        assert_eq!(Tenant::parse(""), Err(TenantError::Empty));
        for bad in ["../etc", "a/b", "a:b", "%2e%2e", "a|b", "a b", "é", "a\0", "a\\b"] {
            assert!(
                matches!(Tenant::parse(bad), Err(TenantError::InvalidCharacter { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn tenant_over_150_bytes_is_refused_with_its_length() {
        let err = Tenant::parse(&"a".repeat(151)).unwrap_err();
        assert_eq!(err, TenantError::TooLong { len: 151 });
        assert!(err.to_string().contains("151") && err.to_string().contains("150"));
    }
}
