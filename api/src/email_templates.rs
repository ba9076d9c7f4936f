//! `PUT/GET/DELETE /v1/email-templates/{name}`, `GET /v1/email-templates`: wharf's own email
//! templates per tenant (minijinja: `{{ variable }}`, filters, loops). A request names one in
//! `template.name`; wharf renders it for every provider, HTML-escaping the html body only.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde::Deserialize;
use wharf_jobs::{
    email::{EmailTemplate, TemplateContent, TemplateStore},
    keys::Scope,
    kinds::email::check_template_name,
};

use crate::{Shared, Tag, auth::ApiKey, body::JsonBody, problem::Problem};

/// A template's parts.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(rename = "EmailTemplateInput", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// The subject (one line once rendered).
    pub subject: String,
    /// Plain-text body; give `text`, `html` or both.
    #[serde(default)]
    pub text: Option<String>,
    /// HTML body; variables in it are HTML-escaped.
    #[serde(default)]
    pub html: Option<String>,
}

/// A stored template.
#[derive(Debug, Clone, Object)]
#[oai(rename = "EmailTemplate")]
pub struct TemplateView {
    pub name: String,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The variables the template uses: a request must give each in `template.variables`.
    pub variables: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&EmailTemplate> for TemplateView {
    fn from(t: &EmailTemplate) -> Self {
        TemplateView {
            name: t.name.clone(),
            subject: t.content.subject.clone(),
            text: t.content.text.clone(),
            html: t.content.html.clone(),
            variables: t.content.variables(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Clone, Object)]
#[oai(rename = "EmailTemplateList")]
pub struct TemplateList {
    pub items: Vec<TemplateView>,
}

#[derive(ApiResponse)]
pub enum PutResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<TemplateView>),
    /// Replaced.
    #[oai(status = 200)]
    Replaced(Json<TemplateView>),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// The template was deleted.
    #[oai(status = 204)]
    NoContent,
}

pub struct EmailTemplatesApi(pub(crate) Arc<Shared>);

fn not_found(name: &str) -> Problem {
    Problem::not_found(format!("no email template `{name}`"))
}

impl EmailTemplatesApi {
    fn templates(&self) -> TemplateStore {
        TemplateStore::new(self.0.store.db())
    }
}

#[OpenApi(tag = "Tag::Email")]
impl EmailTemplatesApi {
    /// Create or replace an email template
    ///
    /// Stores `subject`, `text` and/or `html` under `name` (1–100 letters, digits, `.`, `_`,
    /// `-`). The syntax is checked now; emails naming the template render it when they are
    /// sent. Needs the scope `jobs:write`.
    #[oai(path = "/v1/email-templates/:name", method = "put", operation_id = "putEmailTemplate")]
    async fn put(
        &self,
        auth: ApiKey,
        name: Path<String>,
        body: JsonBody<TemplateInput>,
    ) -> Result<PutResponse, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsWrite).await?;
        check_template_name(&name.0).map_err(|m| Problem::invalid_field("name", m))?;
        let input =
            body.parse::<TemplateInput>()?.ok_or_else(|| Problem::bad_request("a JSON request body is required"))?;
        let content = TemplateContent { subject: input.subject, text: input.text, html: input.html };
        let errors = content.validate();
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        let (stored, created) = self.templates().put(&key.tenant, &name.0, &content).await?;
        let view = Json(TemplateView::from(&stored));
        Ok(if created { PutResponse::Created(view) } else { PutResponse::Replaced(view) })
    }

    /// Get an email template
    ///
    /// Needs the scope `jobs:read`.
    #[oai(path = "/v1/email-templates/:name", method = "get", operation_id = "getEmailTemplate")]
    async fn get(&self, auth: ApiKey, name: Path<String>) -> Result<Json<TemplateView>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsRead).await?;
        let t = self.templates().get(&key.tenant, &name.0).await?.ok_or_else(|| not_found(&name.0))?;
        Ok(Json(TemplateView::from(&t)))
    }

    /// List email templates
    ///
    /// The tenant's templates by name. Needs the scope `jobs:read`.
    #[oai(path = "/v1/email-templates", method = "get", operation_id = "listEmailTemplates")]
    async fn list(&self, auth: ApiKey) -> Result<Json<TemplateList>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsRead).await?;
        let items = self.templates().list(&key.tenant).await?;
        Ok(Json(TemplateList { items: items.iter().map(TemplateView::from).collect() }))
    }

    /// Delete an email template
    ///
    /// Emails already queued with it fail permanently when they are sent. Needs the scope
    /// `jobs:write`.
    #[oai(path = "/v1/email-templates/:name", method = "delete", operation_id = "deleteEmailTemplate")]
    async fn delete(&self, auth: ApiKey, name: Path<String>) -> Result<Deleted, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsWrite).await?;
        if !self.templates().delete(&key.tenant, &name.0).await? {
            return Err(not_found(&name.0));
        }
        Ok(Deleted::NoContent)
    }
}
