//! Diagnostic jobs: a no-op for benchmarks, and sleeps, crashes and failures for the tests of
//! the runtime's guarantees.

use std::time::Duration;

use async_trait::async_trait;
use wharf_jobs::kinds::diagnostic::DiagnosticJob;

use crate::handler::{Handler, JobContext, JobError, JobResult};

pub struct DiagnosticHandler;

#[async_trait]
impl Handler<DiagnosticJob> for DiagnosticHandler {
    async fn handle(&self, _ctx: &JobContext, job: DiagnosticJob) -> JobResult {
        match job {
            DiagnosticJob::Noop => Ok(None),
            DiagnosticJob::Sleep { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Some(serde_json::json!({ "slept_ms": ms })))
            }
            DiagnosticJob::Crash => {
                tracing::error!("diagnostic crash job: aborting the worker process");
                std::process::abort()
            }
            DiagnosticJob::Fail { message, permanent: true } => Err(JobError::permanent(message)),
            DiagnosticJob::Fail { message, permanent: false } => Err(JobError::transient(message)),
        }
    }
}
