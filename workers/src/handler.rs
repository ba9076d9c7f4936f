//! What a job kind implements to run in a pool.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use wharf_jobs::{JobId, kinds::JobKind};

/// What a handler knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: JobId,
    pub tenant: String,
    pub kind: String,
    /// 1-based.
    pub attempt: i32,
    pub max_attempts: i32,
    /// W3C `traceparent` of the enqueuing request.
    pub traceparent: Option<String>,
    /// Cancelled when the process must stop at the end of its shutdown grace period.
    pub shutdown: CancellationToken,
}

/// How an attempt failed. The runtime turns `Transient` into a retry with backoff (or a dead
/// letter after the last attempt) and `Permanent` into a dead letter at once.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum JobError {
    #[error("{message}")]
    Transient { message: String, retry_after: Option<Duration> },
    #[error("{message}")]
    Permanent { message: String },
}

impl JobError {
    pub fn transient(message: impl Into<String>) -> Self {
        JobError::Transient { message: message.into(), retry_after: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        JobError::Permanent { message: message.into() }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::Permanent { .. })
    }
}

pub type JobResult = Result<Option<serde_json::Value>, JobError>;

/// Runs one kind of job. The payload arrives decoded; one that no longer decodes never
/// reaches the handler (it is a permanent error of that job).
#[async_trait]
pub trait Handler<J: JobKind>: Send + Sync + 'static {
    async fn handle(&self, ctx: &JobContext, job: J) -> JobResult;
}
