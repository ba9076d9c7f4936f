//! `POST /v1/events` (scope `jobs:write`): fan an event out to the tenant's endpoints
//! subscribed to its type, one delivery job each. `GET /v1/events/{id}` (scope `jobs:read`):
//! the event's deliveries and every attempt.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::{Object, OpenApi, param::Header, param::Path, payload::Json};
use serde::Deserialize;
use uuid::Uuid;
use wharf_jobs::{
    idempotency::IdempotencyKey,
    keys::Scope,
    kinds::{FieldError, JobKind, webhook::WebhookDeliveryJob},
    webhooks::{
        self, AttemptFilter, NewEvent, Published, WebhookRepo, new_event_id, publish, validate_event_id,
        validate_event_type,
    },
};

use crate::{
    Shared, Tag,
    auth::ApiKey,
    body::JsonBody,
    idempotency::{self, Prior},
    problem::Problem,
    trace::TraceParent,
    views::Stored,
    webhooks::AttemptView,
};

/// Largest event `data`, serialized.
pub const MAX_DATA_BYTES: usize = 256 * 1024;
const MAX_ATTEMPTS_SHOWN: u32 = 500;

/// An event to deliver to subscribed webhook endpoints.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(rename = "SendEvent", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SendEventRequest {
    /// The event type, such as `invoice.paid`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub event_type: String,
    /// Any JSON value, up to 256 KiB.
    pub data: serde_json::Value,
    /// The event id, sent as `webhook-id` (receivers deduplicate by it). Absent: wharf makes
    /// one. A tenant cannot send two events with the same id (409).
    #[serde(default)]
    pub id: Option<String>,
}

/// One delivery job of an event.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookDelivery")]
pub struct DeliveryView {
    pub endpoint_id: Uuid,
    /// Follow it at `GET /v1/jobs/{job_id}`.
    pub job_id: Uuid,
}

/// The event was accepted and its deliveries enqueued.
#[derive(Debug, Clone, Object)]
#[oai(rename = "EventAccepted")]
pub struct EventAccepted {
    pub id: String,
    pub deliveries: Vec<DeliveryView>,
}

/// An event with its deliveries and every attempt, newest first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Event")]
pub struct EventView {
    pub id: String,
    #[oai(rename = "type")]
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub deliveries: Vec<DeliveryView>,
    pub attempts: Vec<AttemptView>,
}

pub struct EventsApi(pub(crate) Arc<Shared>);

#[OpenApi(tag = "Tag::Webhooks")]
impl EventsApi {
    /// Send an event
    ///
    /// Enqueues one delivery per enabled webhook endpoint of the tenant whose `event_types`
    /// match the type, and answers at once. The body each endpoint receives is
    /// `{type, timestamp, data}`, signed per Standard Webhooks. Needs the scope `jobs:write`.
    #[oai(path = "/v1/events", method = "post", operation_id = "sendEvent")]
    async fn send(
        &self,
        auth: ApiKey,
        /// Makes the request safe to retry (see `POST /v1/emails`).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        trace: poem::web::Data<&TraceParent>,
        body: JsonBody<SendEventRequest>,
    ) -> Result<Stored<EventAccepted, 202>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsWrite).await?;
        let idem = idempotency::parse_header(idempotency_key.0.as_deref())?;
        let raw = body.value()?.unwrap_or_default();
        let r: SendEventRequest =
            body.parse()?.ok_or_else(|| Problem::bad_request("a JSON request body is required"))?;
        let mut errs = Vec::new();
        if let Err(m) = validate_event_type(&r.event_type) {
            errs.push(FieldError::new("type", m));
        }
        if let Some(Err(m)) = r.id.as_deref().map(validate_event_id) {
            errs.push(FieldError::new("id", m));
        }
        if r.data.to_string().len() > MAX_DATA_BYTES {
            errs.push(FieldError::new("data", format!("larger than {MAX_DATA_BYTES} bytes")));
        }
        if !errs.is_empty() {
            return Err(Problem::validation(errs));
        }
        let idem = idem.map(|k| IdempotencyKey::new(k, "POST /v1/events", &raw));
        if let Some(k) = &idem
            && let Prior::Repeat(first) = idempotency::lookup(self.0.store.as_ref(), &key.tenant, k).await?
        {
            return Ok(Stored::replay(first));
        }
        let id = r.id.unwrap_or_else(new_event_id);
        let event = NewEvent {
            id: id.clone(),
            event_type: r.event_type,
            data: r.data,
            timestamp: Utc::now(),
            traceparent: Some(trace.as_str().to_string()),
        };
        let repo = WebhookRepo::new(self.0.store.db());
        let deliveries = match publish(self.0.store.as_ref(), &repo, &key.tenant, event, None).await? {
            Published::Fresh(d) => d,
            Published::Duplicate => {
                return Err(Problem::conflict(format!("an event with the id `{id}` was already sent")));
            }
        };
        metrics::counter!("wharf_jobs_enqueued_total", "kind" => WebhookDeliveryJob::KIND)
            .increment(deliveries.len() as u64);
        metrics::counter!("wharf_webhook_events_total").increment(1);
        tracing::info!(event_id = %id, deliveries = deliveries.len(), "event accepted");
        let response = Stored::<EventAccepted, 202>::new(&EventAccepted {
            id,
            deliveries: deliveries
                .iter()
                .map(|d| DeliveryView { endpoint_id: d.endpoint_id, job_id: d.job_id.0 })
                .collect(),
        });
        if let Some(k) = &idem {
            idempotency::save(self.0.store.as_ref(), &key.tenant, k, response.stored()).await;
        }
        Ok(response)
    }

    /// Get an event
    ///
    /// The event's deliveries and every delivery attempt (newest first, at most 500).
    /// Needs the scope `jobs:read`.
    #[oai(path = "/v1/events/:id", method = "get", operation_id = "getEvent")]
    async fn get(&self, auth: ApiKey, id: Path<String>) -> Result<Json<EventView>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsRead).await?;
        let repo = WebhookRepo::new(self.0.store.db());
        let not_found = || Problem::not_found(format!("no event `{}`", id.0));
        if webhooks::validate_event_id(&id.0).is_err() {
            return Err(not_found());
        }
        let event = repo.event(&key.tenant, &id.0).await?.ok_or_else(not_found)?;
        let filter = AttemptFilter { endpoint_id: None, event_id: Some(event.id.clone()) };
        let (attempts, _) = repo.attempts(&key.tenant, &filter, MAX_ATTEMPTS_SHOWN, None).await?;
        Ok(Json(EventView {
            id: event.id,
            event_type: event.event_type,
            created_at: event.created_at,
            deliveries: event
                .deliveries
                .iter()
                .map(|d| DeliveryView { endpoint_id: d.endpoint_id, job_id: d.job_id.0 })
                .collect(),
            attempts: attempts.iter().map(Into::into).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_event_ids_are_header_safe() {
        assert!(validate_event_id("msg_2k3j-4.5:x").is_ok());
        assert!(validate_event_id("").is_err());
        assert!(validate_event_id("has space").is_err());
        assert!(validate_event_id("new\nline").is_err());
        assert!(validate_event_id(&"a".repeat(257)).is_err());
    }
}
