//! The audit trail of operator actions: recorded in the store (and logged under the `audit`
//! target), readable by admins at `GET /v1/audit-log`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::{Object, OpenApi, param::Query, payload::Json};
use uuid::Uuid;
use wharf_jobs::{
    audit::{AuditEntry, AuditRecord},
    keys::{ApiKeyRecord, Scope},
};

use crate::{Shared, Tag, auth::ApiKey, problem::Problem};

impl Shared {
    /// Records an operator action. The action already happened: a failure to record it is
    /// logged loudly but not turned into an error for the caller.
    pub(crate) async fn audit(
        &self,
        key: &ApiKeyRecord,
        action: &str,
        target: Option<String>,
        details: serde_json::Value,
    ) {
        tracing::info!(
            target: "audit",
            tenant = %key.tenant, key_id = %key.id, action, target = target.as_deref().unwrap_or(""),
            details = %details, "operator action"
        );
        let entry =
            AuditEntry { tenant: key.tenant.clone(), actor: key.id.clone(), action: action.into(), target, details };
        if let Err(e) = self.audit.record(&entry).await {
            tracing::error!(error = %e, action, tenant = %key.tenant, "could not record an audit entry");
        }
    }
}

/// One recorded operator action.
#[derive(Debug, Object)]
pub struct AuditEntryView {
    pub id: Uuid,
    /// The acting API key's id.
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl From<AuditRecord> for AuditEntryView {
    fn from(r: AuditRecord) -> Self {
        AuditEntryView {
            id: r.id,
            actor: r.actor,
            action: r.action,
            target: r.target,
            details: r.details,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct AuditPage {
    pub items: Vec<AuditEntryView>,
}

pub struct AuditApi(pub(crate) Arc<Shared>);

#[OpenApi(tag = "Tag::DeadLetters")]
impl AuditApi {
    /// List audited operator actions
    ///
    /// The tenant's recorded operator actions (replays, discards, …), newest first.
    /// Needs the scope `admin`.
    #[oai(path = "/v1/audit-log", method = "get", operation_id = "listAuditLog")]
    async fn list(
        &self,
        auth: ApiKey,
        /// At most this many entries (1–500, default 100).
        limit: Query<Option<u32>>,
    ) -> Result<Json<AuditPage>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::Admin).await?;
        let limit = limit.0.unwrap_or(100);
        if !(1..=500).contains(&limit) {
            return Err(Problem::invalid_field("limit", "must be between 1 and 500"));
        }
        let items = self.0.audit.list(&key.tenant, limit).await?;
        Ok(Json(AuditPage { items: items.into_iter().map(Into::into).collect() }))
    }
}
