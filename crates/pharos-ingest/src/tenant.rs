use pharos_core::{Tenant, TenantError};

/// The header that names the tenant, as in Loki, Mimir and Tempo.
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// The tenant a request names: the default tenant when the header is absent, an error when it is
/// present but not a valid tenant id (including several tenants `a|b`, which writes never accept).
pub fn tenant_from_header(value: Option<&[u8]>) -> Result<Tenant, TenantError> {
    match value {
        None => Ok(Tenant::default_tenant()),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => Tenant::parse(s.trim()),
            Err(e) => {
                Err(TenantError::InvalidCharacter { found: char::REPLACEMENT_CHARACTER, at: e.valid_up_to() })
            }
        },
    }
}
