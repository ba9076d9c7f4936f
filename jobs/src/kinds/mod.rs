//! Typed job payloads. Each kind names itself and its queue; the API enqueues them and the
//! matching worker pool decodes them.

pub mod diagnostic;
pub mod email;
pub mod embedding;
pub mod purge;
pub mod webhook;

use serde::{Serialize, de::DeserializeOwned};

use crate::job::NewJob;

/// A typed job payload.
pub trait JobKind: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stored kind name (stable: part of the data).
    const KIND: &'static str;
    /// Queue the kind's pool claims from.
    const QUEUE: &'static str;

    /// Wraps the payload in an envelope for `tenant`.
    #[allow(clippy::wrong_self_convention)] // borrows: callers often keep the payload
    fn into_job(&self, tenant: &str) -> NewJob {
        let payload = serde_json::to_value(self).expect("job payloads serialize to JSON");
        NewJob::new(tenant, Self::KIND, Self::QUEUE, payload)
    }
}

/// A validation failure, naming the field in JSON-pointer-like dotted form (`to[2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}
