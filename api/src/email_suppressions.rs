//! `GET/POST /v1/email-suppressions`, `GET/DELETE /v1/email-suppressions/{address}`: the
//! tenant's suppression list. No email is sent to a listed address; a job whose every `to`
//! recipient is listed succeeds with `result.status = "suppressed"` and the reason. Providers'
//! refusals (Postmark's inactive recipients, SES suppression) add addresses by themselves.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};
use serde::{Deserialize, Serialize};
use wharf_jobs::{
    email::{Suppression, SuppressionList, SuppressionReason, suppressions::normalize},
    idempotency::{IdempotencyKey, StoredResponse},
    keys::Scope,
    kinds::FieldError,
};

use crate::{
    Shared, Tag,
    auth::ApiKey,
    body::JsonBody,
    idempotency::{self, Prior},
    problem::Problem,
};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 500;

/// Add an address to the suppression list.
#[derive(Debug, Clone, Object, Deserialize, Serialize)]
#[oai(rename = "NewEmailSuppression", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    /// The address (`Name <addr>` is accepted; the bare address is kept, lower-cased).
    pub address: String,
    /// `manual` (default), `hard_bounce` or `complaint`.
    #[serde(default)]
    pub reason: Option<String>,
    /// A note (at most 1000 characters).
    #[serde(default)]
    pub detail: Option<String>,
}

/// A suppressed address.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
#[oai(rename = "EmailSuppression")]
pub struct SuppressionView {
    pub address: String,
    /// `manual`, `hard_bounce`, `complaint` or `provider` (a provider refused the recipient).
    pub reason: String,
    pub detail: Option<String>,
    /// `api`, or the provider that reported it (`postmark`, `ses`).
    pub source: String,
    pub created_at: DateTime<Utc>,
}

impl From<&Suppression> for SuppressionView {
    fn from(s: &Suppression) -> Self {
        SuppressionView {
            address: s.address.clone(),
            reason: s.reason.as_str().into(),
            detail: s.detail.clone(),
            source: s.source.clone(),
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Clone, Object)]
#[oai(rename = "EmailSuppressionPage")]
pub struct SuppressionPage {
    pub items: Vec<SuppressionView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum Added {
    /// Added.
    #[oai(status = 201)]
    Created(Json<SuppressionView>),
    /// Already listed; reason and detail updated.
    #[oai(status = 200)]
    Updated(Json<SuppressionView>),
}

#[derive(ApiResponse)]
pub enum Removed {
    /// Removed: emails to the address are sent again.
    #[oai(status = 204)]
    NoContent,
}

pub struct EmailSuppressionsApi(pub(crate) Arc<Shared>);

fn not_listed(address: &str) -> Problem {
    Problem::not_found(format!("`{address}` is not on the suppression list"))
}

fn replay(stored: StoredResponse) -> Result<Added, Problem> {
    let view: SuppressionView = serde_json::from_value(stored.body).map_err(|e| {
        tracing::error!(error = %e, "a stored idempotent response does not decode");
        Problem::internal()
    })?;
    Ok(if stored.status == 201 { Added::Created(Json(view)) } else { Added::Updated(Json(view)) })
}

impl EmailSuppressionsApi {
    fn list(&self) -> SuppressionList {
        SuppressionList::new(self.0.store.db())
    }
}

#[OpenApi(tag = "Tag::Email")]
impl EmailSuppressionsApi {
    /// List suppressed addresses
    ///
    /// By address, paginated by cursor. Needs the scope `jobs:read`.
    #[oai(path = "/v1/email-suppressions", method = "get", operation_id = "listEmailSuppressions")]
    async fn index(
        &self,
        auth: ApiKey,
        /// Page size (default 100, at most 500).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<SuppressionPage>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsRead).await?;
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let cursor = cursor.0.filter(|c| !c.trim().is_empty());
        let (items, next) = self.list().list(&key.tenant, limit, cursor.as_deref()).await?;
        Ok(Json(SuppressionPage { items: items.iter().map(Into::into).collect(), next_cursor: next }))
    }

    /// Get a suppressed address
    ///
    /// 404 if the address is not listed. Needs the scope `jobs:read`.
    #[oai(path = "/v1/email-suppressions/:address", method = "get", operation_id = "getEmailSuppression")]
    async fn show(&self, auth: ApiKey, address: Path<String>) -> Result<Json<SuppressionView>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsRead).await?;
        let s = self.list().get(&key.tenant, &address.0).await?.ok_or_else(|| not_listed(&address.0))?;
        Ok(Json((&s).into()))
    }

    /// Suppress an address
    ///
    /// No email is sent to it any more. 201 when added, 200 when it was listed already (reason
    /// and detail are updated). Needs the scope `jobs:write`.
    #[oai(path = "/v1/email-suppressions", method = "post", operation_id = "addEmailSuppression")]
    async fn add(
        &self,
        auth: ApiKey,
        /// Makes the request safe to retry (see `POST /v1/emails`).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: JsonBody<NewSuppression>,
    ) -> Result<Added, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsWrite).await?;
        let idem_key = idempotency::parse_header(idempotency_key.0.as_deref())?;
        let req =
            body.parse::<NewSuppression>()?.ok_or_else(|| Problem::bad_request("a JSON request body is required"))?;
        let mut errs = Vec::new();
        let address = normalize(&req.address);
        if !wharf_jobs::kinds::email::is_valid_address(&address) || req.address.contains(['\r', '\n']) {
            errs.push(FieldError::new("address", format!("`{}` is not a valid email address", req.address)));
        }
        let reason = match req.reason.as_deref().unwrap_or("manual") {
            "provider" => None,
            r => SuppressionReason::parse(r),
        };
        if reason.is_none() {
            errs.push(FieldError::new("reason", "one of manual, hard_bounce, complaint"));
        }
        if req.detail.as_ref().is_some_and(|d| d.chars().count() > 1000) {
            errs.push(FieldError::new("detail", "at most 1000 characters"));
        }
        if !errs.is_empty() {
            return Err(Problem::validation(errs));
        }
        let idem_key = idem_key.map(|k| {
            IdempotencyKey::new(k, "POST /v1/email-suppressions", &serde_json::to_value(&req).unwrap_or_default())
        });
        if let Some(k) = &idem_key
            && let Prior::Repeat(first) = idempotency::lookup(self.0.store.as_ref(), &key.tenant, k).await?
        {
            return replay(first);
        }
        let (s, created) =
            self.list().add(&key.tenant, &address, reason.expect("checked"), req.detail.as_deref(), "api").await?;
        let view = SuppressionView::from(&s);
        if let Some(k) = &idem_key {
            let stored = StoredResponse {
                status: if created { 201 } else { 200 },
                body: serde_json::to_value(&view).unwrap_or_default(),
            };
            idempotency::save(self.0.store.as_ref(), &key.tenant, k, &stored).await;
        }
        Ok(if created { Added::Created(Json(view)) } else { Added::Updated(Json(view)) })
    }

    /// Remove a suppressed address
    ///
    /// Emails to it are sent again. 404 if it is not listed. Needs the scope `jobs:write`.
    #[oai(path = "/v1/email-suppressions/:address", method = "delete", operation_id = "removeEmailSuppression")]
    async fn remove(&self, auth: ApiKey, address: Path<String>) -> Result<Removed, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsWrite).await?;
        if !self.list().remove(&key.tenant, &address.0).await? {
            return Err(not_listed(&address.0));
        }
        Ok(Removed::NoContent)
    }
}
