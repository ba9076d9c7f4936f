//! Object storage: S3 (aws-sdk-s3) in production, a local directory for `wharf serve`.
//! Tenants are kept apart by key prefix: `tenants/{tenant}/…` for tenant data, `system/…` for
//! wharf's own (large job payloads). Backends live one per file beside this one; `config`
//! chooses one from the environment, `offload` keeps large job payloads here.

pub mod config;
pub mod local;
pub mod offload;
pub mod s3;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ObjectError {
    #[error("object `{0}` does not exist")]
    NotFound(String),
    #[error("invalid object key `{0}`: {1}")]
    InvalidKey(String, String),
    #[error("object storage failed: {0}")]
    Backend(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct ObjectPage {
    pub objects: Vec<ObjectInfo>,
    /// Pass back to `list` for the next page; `None` on the last page.
    pub next: Option<String>,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: Option<&str>) -> Result<(), ObjectError>;
    async fn get(&self, key: &str) -> Result<Vec<u8>, ObjectError>;
    /// Deletes the keys (missing ones are not an error); returns how many were requested.
    async fn delete(&self, keys: &[String]) -> Result<u64, ObjectError>;
    /// Objects under `prefix`, in pages of at most `limit`.
    async fn list(&self, prefix: &str, limit: u32, continuation: Option<String>) -> Result<ObjectPage, ObjectError>;
}

/// A key every backend accepts: relative, `/`-separated, no empty, `.` or `..` segments.
pub fn check_key(key: &str) -> Result<(), ObjectError> {
    let bad = |why: &str| Err(ObjectError::InvalidKey(key.to_string(), why.to_string()));
    if key.is_empty() || key.len() > 1024 {
        return bad("must be 1 to 1024 bytes");
    }
    if key.contains('\\') || key.contains('\0') {
        return bad("must not contain `\\` or NUL");
    }
    if key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return bad("must be relative with no empty, `.` or `..` segments");
    }
    Ok(())
}

/// The prefix every object of `tenant` lives under.
pub fn tenant_prefix(tenant: &str) -> String {
    format!("tenants/{tenant}/")
}

/// Whether `key` is a well-formed key inside `tenant`'s prefix (no `..`, no empty segments).
pub fn is_tenant_key(tenant: &str, key: &str) -> bool {
    key.strip_prefix(&tenant_prefix(tenant))
        .is_some_and(|rest| !rest.is_empty() && rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_keys_stay_inside_their_prefix() {
        assert!(is_tenant_key("acme", "tenants/acme/files/a.pdf"));
        assert!(!is_tenant_key("acme", "tenants/other/a.pdf"));
        assert!(!is_tenant_key("acme", "tenants/acme/../other/a.pdf"));
        assert!(!is_tenant_key("acme", "tenants/acme/"));
        assert!(!is_tenant_key("acme", "tenants/acmex/a"));
        assert!(!is_tenant_key("acme", "system/x"));
    }
}
