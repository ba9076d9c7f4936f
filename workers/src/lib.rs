//! Worker pools: the runtime that claims, runs and settles jobs, and one module per job kind.

pub mod breaker;
pub mod diagnostic;
pub mod email;
pub mod embeddings;
pub mod handler;
pub mod kinds;
pub mod purge;
pub mod registry;
pub mod runtime;
pub mod webhooks;

pub use handler::{Handler, JobContext, JobError, JobResult};
