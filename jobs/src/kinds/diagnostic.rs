//! Diagnostic jobs for benchmarks and failure tests: they exercise the runtime without any
//! provider. Enqueued only by `wharf-bench` and the test-suite, never through the API.

use serde::{Deserialize, Serialize};

use super::JobKind;
use crate::queue;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DiagnosticJob {
    /// Succeeds at once.
    Noop,
    /// Sleeps, then succeeds.
    Sleep { ms: u64 },
    /// Aborts the worker process: a job that kills its worker.
    Crash,
    /// Fails; `permanent` decides between retrying and the dead-letter queue.
    Fail { message: String, permanent: bool },
}

impl JobKind for DiagnosticJob {
    const KIND: &'static str = "diagnostic";
    const QUEUE: &'static str = queue::DIAGNOSTIC;
}
