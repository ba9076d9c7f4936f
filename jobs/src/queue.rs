//! Queue names, shared by the API (which enqueues) and the worker pools (which claim).
//! Explicit constants: a queue's name is part of the stored data and must never follow a
//! Rust type path.

pub const EMAIL: &str = "email";
/// Embedding generation and refreshes (`embeddings.embed`, `embeddings.refresh`).
pub const EMBEDDINGS: &str = "embeddings";
/// Webhook deliveries (`webhook`).
pub const WEBHOOKS: &str = "webhooks";
/// Retention purges, enqueued by the scheduler (`purge`).
pub const PURGE: &str = "purge";
/// No-op, sleep, crash and fail jobs for benchmarks and failure tests. Never exposed by the API.
pub const DIAGNOSTIC: &str = "diagnostic";

/// Pools `wharf serve` and `wharf worker` run when none are named.
pub const PRODUCTION_POOLS: &[&str] = &[PURGE, EMAIL, EMBEDDINGS, WEBHOOKS];
/// Every queue a worker may be asked to run.
pub const ALL: &[&str] = &[PURGE, EMAIL, EMBEDDINGS, WEBHOOKS, DIAGNOSTIC];
