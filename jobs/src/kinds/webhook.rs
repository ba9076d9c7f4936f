//! The webhook delivery job: one event to one endpoint. It carries the endpoint's id and the
//! event, never the secret (the worker loads and decrypts it at each attempt, so a replay signs
//! with the endpoint's current secret).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::JobKind;
use crate::queue;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeliveryJob {
    pub endpoint_id: Uuid,
    /// `webhook-id`: stable across retries and replays so receivers can deduplicate.
    pub event_id: String,
    pub event_type: String,
    /// The event's time, sent as the envelope's `timestamp`.
    pub timestamp: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl JobKind for WebhookDeliveryJob {
    const KIND: &'static str = "webhook";
    const QUEUE: &'static str = queue::WEBHOOKS;
}

/// The body sent to the receiver: `{type, timestamp, data}`.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub timestamp: DateTime<Utc>,
    pub data: &'a serde_json::Value,
}

impl WebhookDeliveryJob {
    /// The exact bytes that are signed and sent.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Envelope { event_type: &self.event_type, timestamp: self.timestamp, data: &self.data })
            .expect("a JSON value serializes")
    }
}
