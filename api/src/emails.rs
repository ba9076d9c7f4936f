//! `POST /v1/emails`: validate and enqueue an email.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Header};
use wharf_jobs::{
    idempotency::{IdempotencyKey, Idempotent},
    keys::Scope,
    kinds::{JobKind, email::EmailJob},
};

use crate::{
    Shared, Tag,
    auth::ApiKey,
    body::JsonBody,
    idempotency, payloads,
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
    /// One line, at most 998 characters.
    pub subject: String,
    /// Plain-text body; give `text`, `html` or both.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
}

pub struct EmailsApi(pub(crate) Arc<Shared>);

#[OpenApi(tag = "Tag::Jobs")]
impl EmailsApi {
    /// Send an email
    ///
    /// Validates the email and enqueues it; answers at once with the job's id and status URL.
    /// Needs the scope `jobs:write`.
    #[oai(path = "/v1/emails", method = "post", operation_id = "sendEmail")]
    async fn send(
        &self,
        auth: ApiKey,
        /// Makes the request safe to retry: the same key with the same body answers the first
        /// response again (24 h); with another body, 422. 1–255 visible ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        trace: Data<&TraceParent>,
        body: JsonBody<SendEmailRequest>,
    ) -> Result<Stored<Accepted, 202>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsWrite).await?;
        let idem_key = idempotency::parse_header(idempotency_key.0.as_deref())?;
        let Some(value) = body.value()? else {
            return Err(Problem::bad_request("a JSON request body is required"));
        };
        if !value.is_object() {
            return Err(Problem::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let email = payloads::email(value, "")?;

        let mut job = email.into_job(&key.tenant);
        job.traceparent = Some(trace.as_str().to_string());
        let id = job.id;
        let response = Stored::<Accepted, 202>::new(&Accepted {
            id: id.0,
            status: JobStateView::Queued,
            status_url: self.0.status_url(id),
        });
        let idempotency = idem_key.as_ref().map(|k| {
            (
                IdempotencyKey::new(k.clone(), OPERATION, &job.payload),
                response.stored().clone(),
            )
        });

        match self.0.store.enqueue(job, idempotency).await? {
            Idempotent::Fresh(()) => {
                tracing::Span::current().record("job_id", tracing::field::display(id));
                metrics::counter!("wharf_jobs_enqueued_total", "kind" => EmailJob::KIND)
                    .increment(1);
                Ok(response)
            }
            Idempotent::Repeat(first) => {
                if let Some(first_id) = first.body.get("id").and_then(|v| v.as_str()) {
                    tracing::Span::current().record("job_id", first_id);
                }
                Ok(Stored::replay(first))
            }
            Idempotent::Mismatch => Err(Problem::idempotency_mismatch(
                idem_key.as_deref().unwrap_or_default(),
            )),
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
        let schema = registry
            .schemas
            .get("SendEmail")
            .expect("schema registered");
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
        };
        let value = serde_json::to_value(full).unwrap();
        let mut actual: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        actual.sort();
        assert_eq!(documented, actual);
    }
}
