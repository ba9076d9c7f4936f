//! `POST /v1/emails`: validate and enqueue an email. Besides the fields' own checks (see
//! [`EmailJob::validate`]), a wharf template must exist and get every variable it uses, inline
//! attachments must stay within `EMAIL_ATTACHMENTS_MAX_BYTES`, and object-key attachments must
//! be under the tenant's prefix. The request body may be as large as the attachment limit
//! needs (base64 plus the text and html bodies).

use std::{collections::BTreeMap, sync::Arc, sync::OnceLock};

use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Header};
use wharf_jobs::{
    config::Env,
    email::{TemplateStore, render},
    idempotency::{IdempotencyKey, Idempotent},
    keys::Scope,
    kinds::{FieldError, JobKind, email::EmailJob, email::MAX_BODY_BYTES as EMAIL_BODY_BYTES},
    objects::{is_tenant_key, tenant_prefix},
};

use crate::{
    Shared, Tag,
    auth::ApiKey,
    body, idempotency, payloads,
    problem::Problem,
    trace::TraceParent,
    views::{Accepted, JobStateView, Stored},
};

pub const OPERATION: &str = "POST /v1/emails";

/// An email to send. Unknown fields are refused.
#[derive(Debug, Clone, Object)]
#[oai(rename = "SendEmail", deny_unknown_fields)]
pub struct SendEmailRequest {
    /// `addr@example.com` or `Name <addr@example.com>`.
    pub from: String,
    /// At least one recipient; at most 50 across to, cc and bcc.
    pub to: Vec<String>,
    pub cc: Option<Vec<String>>,
    pub bcc: Option<Vec<String>>,
    pub reply_to: Option<String>,
    /// One line, at most 998 characters. Required unless `template` is given.
    pub subject: Option<String>,
    /// Plain-text body; give `text`, `html` or both (or a `template`).
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Subject and bodies from a template instead of `subject`/`text`/`html`.
    pub template: Option<TemplateRefDoc>,
    /// Files to attach: inline base64, or an object key under `tenants/{tenant}/`. Inline
    /// content may total `EMAIL_ATTACHMENTS_MAX_BYTES` (10 MiB) decoded.
    pub attachments: Option<Vec<AttachmentDoc>>,
    /// At most 10 tags, name (1–20) and value (1–80) of letters, digits, `_`, `-`. Resend
    /// tags, SES message tags, Postmark metadata, an `X-Wharf-Tags` header over SMTP.
    pub tags: Option<BTreeMap<String, String>>,
}

/// Which template gives the subject and bodies. `name`: a wharf template of the tenant
/// (`PUT /v1/email-templates/{name}`), rendered by wharf for any provider; a variable it uses
/// that `variables` lacks is a 422. `postmark_alias` / `ses_template`: templates stored at
/// Postmark / SES, passed through to that provider (other providers use `name`).
#[derive(Debug, Clone, Object)]
#[oai(rename = "EmailTemplateRef", deny_unknown_fields)]
pub struct TemplateRefDoc {
    pub name: Option<String>,
    pub postmark_alias: Option<String>,
    pub ses_template: Option<String>,
    /// Name → any JSON value.
    pub variables: Option<std::collections::HashMap<String, serde_json::Value>>,
}

/// One attachment: give `content` or `key`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "EmailAttachment", deny_unknown_fields)]
pub struct AttachmentDoc {
    pub filename: String,
    /// `type/subtype`; guessed from the file name when absent.
    pub content_type: Option<String>,
    /// Standard base64.
    pub content: Option<String>,
    /// An object key under `tenants/{tenant}/`, fetched when the email is sent.
    pub key: Option<String>,
}

/// Configured limits of `POST /v1/emails`.
fn attachments_max_bytes() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        wharf_jobs::email::attachments_max_bytes(&Env::from_process()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "using the default attachment limit");
            wharf_jobs::kinds::email::DEFAULT_ATTACHMENTS_MAX_BYTES
        })
    })
}

/// The largest body `POST /v1/emails` reads: the attachments in base64, both bodies, slack.
pub fn max_request_bytes() -> usize {
    (attachments_max_bytes().div_ceil(3) * 4 + 2 * EMAIL_BODY_BYTES + 1024 * 1024).max(body::MAX_BODY_BYTES)
}

/// The limit of `POST /v1/emails`, above the standard one: attachments travel inline.
pub struct EmailLimit;

impl body::BodyLimit for EmailLimit {
    fn max_bytes() -> usize {
        max_request_bytes()
    }
}

/// The checks that need the tenant, the configuration or the store: attachment size and
/// keys, `force_resend` (replays only), a wharf template's existence and variables.
pub(crate) async fn check_email(shared: &Shared, tenant: &str, email: &EmailJob, prefix: &str) -> Result<(), Problem> {
    let at = |f: &str| if prefix.is_empty() { f.to_string() } else { format!("{prefix}.{f}") };
    let mut errs: Vec<FieldError> = Vec::new();
    if email.force_resend {
        errs.push(FieldError::new(at("force_resend"), "only in the edited payload of a dead-letter replay"));
    }
    if let Some(e) = email.check_attachment_size(attachments_max_bytes()) {
        errs.push(FieldError::new(at(&e.field), e.message));
    }
    for (i, a) in email.attachments.iter().enumerate() {
        if let Some(k) = &a.key
            && !is_tenant_key(tenant, k)
        {
            errs.push(FieldError::new(
                at(&format!("attachments[{i}].key")),
                format!("`{k}` is not a key under the tenant's prefix `{}`", tenant_prefix(tenant)),
            ));
        }
    }
    if let Some(t) = &email.template
        && let Some(name) = &t.name
    {
        match TemplateStore::new(shared.store.db()).get(tenant, name).await? {
            None => errs.push(FieldError::new(
                at("template.name"),
                format!("no email template `{name}` (create it with PUT /v1/email-templates/{name})"),
            )),
            Some(tpl) => {
                if let Err(e) = render(name, &tpl.content, &t.variables) {
                    let fe = e.field_error();
                    errs.push(FieldError::new(at(&fe.field), fe.message));
                }
            }
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(Problem::validation(errs)) }
}

pub struct EmailsApi(pub(crate) Arc<Shared>);

#[OpenApi(tag = "Tag::Jobs")]
impl EmailsApi {
    /// Send an email
    ///
    /// Validates the email and enqueues it; answers at once with the job's id and status URL.
    /// The job's `result` names the provider that accepted it and its message id
    /// (`provider`, `message_id`), or `status: "suppressed"` with the reason when every
    /// recipient is on the suppression list. Needs the scope `jobs:write`.
    #[oai(path = "/v1/emails", method = "post", operation_id = "sendEmail")]
    async fn send(
        &self,
        auth: ApiKey,
        /// Makes the request safe to retry: the same key with the same body answers the first
        /// response again (24 h); with another body, 422. 1–255 visible ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        trace: Data<&TraceParent>,
        body: body::JsonBody<SendEmailRequest, EmailLimit>,
    ) -> Result<Stored<Accepted, 202>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsWrite).await?;
        let idem_key = idempotency::parse_header(idempotency_key.0.as_deref())?;
        let Some(value) = body.value()? else {
            return Err(Problem::bad_request("a JSON request body is required"));
        };
        if !value.is_object() {
            return Err(Problem::bad_request("the request body must be a JSON object"));
        }
        let email = payloads::email(value, "")?;
        check_email(&self.0, &key.tenant, &email, "").await?;

        let mut job = email.into_job(&key.tenant);
        job.traceparent = Some(trace.as_str().to_string());
        let id = job.id;
        let response = Stored::<Accepted, 202>::new(&Accepted {
            id: id.0,
            status: JobStateView::Queued,
            status_url: self.0.status_url(id),
        });
        let idempotency = idem_key
            .as_ref()
            .map(|k| (IdempotencyKey::new(k.clone(), OPERATION, &job.payload), response.stored().clone()));

        match self.0.store.enqueue(job, idempotency).await? {
            Idempotent::Fresh(()) => {
                tracing::Span::current().record("job_id", tracing::field::display(id));
                metrics::counter!("wharf_jobs_enqueued_total", "kind" => EmailJob::KIND).increment(1);
                Ok(response)
            }
            Idempotent::Repeat(first) => {
                if let Some(first_id) = first.body.get("id").and_then(|v| v.as_str()) {
                    tracing::Span::current().record("job_id", first_id);
                }
                Ok(Stored::replay(first))
            }
            Idempotent::Mismatch => Err(Problem::idempotency_mismatch(idem_key.as_deref().unwrap_or_default())),
        }
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::{registry::Registry, types::Type};

    use super::*;

    /// The documented request and the payload type accept the same fields.
    #[test]
    fn documented_fields_match_the_email_job() {
        let mut registry = Registry::new();
        SendEmailRequest::register(&mut registry);
        let schema = registry.schemas.get("SendEmail").expect("schema registered");
        let mut documented: Vec<&str> = schema.properties.iter().map(|(name, _)| *name).collect();
        documented.sort();

        let full = EmailJob {
            from: "a@example.com".into(),
            to: vec!["b@example.com".into()],
            cc: vec!["c@example.com".into()],
            bcc: vec!["d@example.com".into()],
            reply_to: Some("e@example.com".into()),
            subject: "s".into(),
            text: Some("t".into()),
            html: Some("<p>h</p>".into()),
            template: Some(Default::default()),
            attachments: vec![Default::default()],
            tags: [("k".to_string(), "v".to_string())].into(),
            force_resend: false, // only in a replay's edited payload: not documented here
        };
        let value = serde_json::to_value(full).unwrap();
        let mut actual: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        actual.sort();
        assert_eq!(documented, actual);
    }
}
