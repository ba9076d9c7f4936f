//! `Idempotency-Key` support: the same key with the same request returns the first response;
//! the same key with another request is refused. Stored per tenant for 24 h.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A client's idempotency key together with the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// SHA-256 over the operation name and the canonical request body.
    pub fingerprint: String,
}

impl IdempotencyKey {
    pub fn new(key: impl Into<String>, operation: &str, body: &serde_json::Value) -> Self {
        let mut h = Sha256::new();
        h.update(operation.as_bytes());
        h.update([0]);
        // serde_json's Value orders object keys (no preserve_order), so this is canonical.
        h.update(body.to_string().as_bytes());
        Self { key: key.into(), fingerprint: hex::encode(h.finalize()) }
    }
}

/// The response stored with a key, replayed verbatim on a repeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

/// What happened to an idempotent operation.
#[derive(Debug, Clone)]
pub enum Idempotent<T> {
    /// The operation ran now.
    Fresh(T),
    /// The key was seen before with the same request: here is the first response.
    Repeat(StoredResponse),
    /// The key was seen before with a different request.
    Mismatch,
}
