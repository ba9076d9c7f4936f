//! Fan-out: one delivery job per enabled endpoint of the tenant subscribed to an event's type.
//! The event row is written first (it claims the event id), then the jobs in one
//! `enqueue_many` transaction; if that fails the event row is removed again, so a client's
//! retry with the same id is not refused for an event that was never delivered.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Delivery, EventRecord, WebhookRepo, filter_matches};
use crate::{Store, StoreError, kinds::JobKind, kinds::webhook::WebhookDeliveryJob};

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    pub data: serde_json::Value,
    pub timestamp: DateTime<Utc>,
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The tenant already has an event with this id; nothing was enqueued.
    Duplicate,
    Fresh(Vec<Delivery>),
}

/// A new event id: `msg_` + a UUIDv7 (sorts by time).
pub fn new_event_id() -> String {
    format!("msg_{}", Uuid::now_v7().simple())
}

/// Event ids are sent as the `webhook-id` header: 1–256 of `A-Z a-z 0-9 _ - . :`.
pub fn validate_event_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok { Ok(()) } else { Err("must be 1–256 characters of A–Z, a–z, 0–9, `_`, `-`, `.`, `:`".into()) }
}

/// Records the event and enqueues its deliveries; `exclude` is never delivered to.
pub async fn publish(
    store: &dyn Store,
    repo: &WebhookRepo,
    tenant: &str,
    event: NewEvent,
    exclude: Option<Uuid>,
) -> Result<Published, StoreError> {
    let endpoints = repo.enabled_endpoints(tenant).await?;
    let mut jobs = Vec::new();
    let mut deliveries = Vec::new();
    for e in endpoints.iter().filter(|e| Some(e.id) != exclude && filter_matches(&e.event_types, &event.event_type)) {
        let payload = WebhookDeliveryJob {
            endpoint_id: e.id,
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            timestamp: event.timestamp,
            data: event.data.clone(),
        };
        let mut job = payload.into_job(tenant);
        job.traceparent = event.traceparent.clone();
        deliveries.push(Delivery { endpoint_id: e.id, job_id: job.id });
        jobs.push(job);
    }
    let record = EventRecord {
        tenant: tenant.to_string(),
        id: event.id.clone(),
        event_type: event.event_type.clone(),
        deliveries: deliveries.clone(),
        created_at: Utc::now(),
    };
    if !repo.insert_event(&record).await? {
        return Ok(Published::Duplicate);
    }
    if !jobs.is_empty()
        && let Err(e) = store.enqueue_many(jobs).await
    {
        if let Err(undo) = repo.delete_event(tenant, &event.id).await {
            tracing::error!(error = %undo, event_id = %event.id, "could not remove the event whose deliveries failed");
        }
        return Err(e);
    }
    Ok(Published::Fresh(deliveries))
}
