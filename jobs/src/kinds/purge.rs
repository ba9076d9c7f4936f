//! Purge jobs: the scheduler enqueues one per target on its cron; the `purge` pool runs them.
//! What each target removes and after how long: `wharf_jobs::purge`.

use serde::{Deserialize, Serialize};

use super::JobKind;
use crate::queue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeTarget {
    /// Succeeded and cancelled jobs with their attempts; schedule tick rows.
    Jobs,
    /// Dead letters already replayed or discarded, with their attempts.
    DeadLetters,
    /// Webhook delivery attempt logs (when that table exists).
    WebhookAttempts,
    IdempotencyKeys,
    /// Objects under `tenants/*/`.
    Objects,
    /// `system/payloads/*` blobs no job references any more.
    PayloadBlobs,
}

impl PurgeTarget {
    pub const ALL: [PurgeTarget; 6] = [
        PurgeTarget::Jobs,
        PurgeTarget::DeadLetters,
        PurgeTarget::WebhookAttempts,
        PurgeTarget::IdempotencyKeys,
        PurgeTarget::Objects,
        PurgeTarget::PayloadBlobs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PurgeTarget::Jobs => "jobs",
            PurgeTarget::DeadLetters => "dead_letters",
            PurgeTarget::WebhookAttempts => "webhook_attempts",
            PurgeTarget::IdempotencyKeys => "idempotency_keys",
            PurgeTarget::Objects => "objects",
            PurgeTarget::PayloadBlobs => "payload_blobs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeJob {
    pub target: PurgeTarget,
}

impl JobKind for PurgeJob {
    const KIND: &'static str = "purge";
    const QUEUE: &'static str = queue::PURGE;
}
