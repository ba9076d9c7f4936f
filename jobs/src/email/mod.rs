//! Email's own tables, over [`Db`](crate::store::Db): the send ledger (which provider accepted
//! each email), wharf's per-tenant templates (rendered with minijinja) and the per-tenant
//! suppression list. The API and the email pool share them.

pub mod ledger;
pub mod suppressions;
pub mod templates;

use chrono::{DateTime, TimeZone, Utc};

pub use ledger::{SendLedger, SendRecord};
pub use suppressions::{Suppression, SuppressionList, SuppressionReason};
pub use templates::{EmailTemplate, RenderError, Rendered, TemplateContent, TemplateStore, render};

use crate::config::{ConfigError, Env};
use crate::kinds::email::DEFAULT_ATTACHMENTS_MAX_BYTES;

/// `EMAIL_ATTACHMENTS_MAX_BYTES`: the largest total (decoded) size of one email's attachments;
/// enforced by the API for inline attachments and by the worker for all of them.
pub fn attachments_max_bytes(env: &Env) -> Result<usize, ConfigError> {
    let v = env.parse_or::<usize>("EMAIL_ATTACHMENTS_MAX_BYTES", DEFAULT_ATTACHMENTS_MAX_BYTES)?;
    if v == 0 {
        return Err(ConfigError::new("EMAIL_ATTACHMENTS_MAX_BYTES", "must be greater than 0"));
    }
    Ok(v)
}

pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}
