//! One pool's fetcher and its jobs: claim as many due jobs as there are free slots
//! (concurrency + prefetch), run at most `concurrency` at once, report every outcome.

use std::{panic::AssertUnwindSafe, sync::Arc};

use chrono::Utc;
use futures::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use wharf_jobs::{ClaimedJob, Completion, Outcome, Store, retry::RetryPolicy};

use super::{
    RuntimeConfig,
    acker::{self, Ack, Acks},
};
use crate::{
    handler::{JobContext, JobError},
    registry::QueueSpec,
};

pub(crate) struct Pool {
    pub worker: String,
    pub store: Arc<dyn Store>,
    pub spec: QueueSpec,
    pub cfg: RuntimeConfig,
    pub wake: Option<Arc<Notify>>,
    pub acks: Acks,
    /// Stop claiming; prefetched jobs go back uncharged.
    pub stop: CancellationToken,
    /// The grace period is over: interrupt running jobs and return them uncharged.
    pub kill: CancellationToken,
    pub jobs: TaskTracker,
}

pub(crate) async fn fetch_loop(pool: Pool) {
    let concurrency = pool.cfg.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency + pool.cfg.prefetch));
    let running = Arc::new(Semaphore::new(concurrency));
    // Claimed jobs not yet settled in the store: the claim-ahead plus one acker batch in
    // flight. A crash re-runs at most this many jobs of the pool, however slow settles are.
    let unsettled = Arc::new(Semaphore::new(concurrency + pool.cfg.prefetch + acker::MAX_BATCH));
    let queue = pool.spec.queue;
    loop {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            _ = pool.stop.cancelled() => return,
        };
        let mut permits = vec![first];
        while permits.len() < pool.cfg.claim_batch.max(1) {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let wanted = permits.len();
        let mut settle_permits = Vec::with_capacity(wanted);
        for _ in 0..wanted {
            settle_permits.push(tokio::select! {
                p = unsettled.clone().acquire_owned() => p.expect("never closed"),
                _ = pool.stop.cancelled() => return,
            });
        }
        let claimed = match pool.store.claim(queue, &pool.worker, wanted as u32, pool.spec.retry.max_attempts).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(queue, error = %e, "claim failed; retrying after the poll interval");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(pool.cfg.poll_interval) => continue,
                    _ = pool.stop.cancelled() => return,
                }
            }
        };
        let got = claimed.len();
        for ((job, slot), unsettled) in claimed.into_iter().zip(permits.drain(..got)).zip(settle_permits.drain(..got)) {
            let ctx = JobRun {
                worker: pool.worker.clone(),
                spec: pool.spec.clone(),
                acks: pool.acks.clone(),
                stop: pool.stop.clone(),
                kill: pool.kill.clone(),
                running: running.clone(),
            };
            pool.jobs.spawn(async move {
                ctx.run(job, unsettled).await;
                drop(slot);
            });
        }
        drop(permits);
        if got < wanted {
            // Drained: sleep until a wake-up (new job) or the poll interval (delayed jobs).
            let sleep = tokio::time::sleep(pool.cfg.poll_interval);
            match &pool.wake {
                Some(wake) => tokio::select! {
                    _ = wake.notified() => {}
                    _ = sleep => {}
                    _ = pool.stop.cancelled() => return,
                },
                None => tokio::select! {
                    _ = sleep => {}
                    _ = pool.stop.cancelled() => return,
                },
            }
        }
    }
}

struct JobRun {
    worker: String,
    spec: QueueSpec,
    acks: Acks,
    stop: CancellationToken,
    kill: CancellationToken,
    running: Arc<Semaphore>,
}

impl JobRun {
    /// Runs `job`; its outcome goes to the acker with the `unsettled` permit.
    async fn run(self, job: ClaimedJob, unsettled: OwnedSemaphorePermit) {
        let returned = |job: &ClaimedJob| Completion {
            id: job.id,
            attempt: job.attempt,
            started_at: Utc::now(),
            outcome: Outcome::Returned,
        };
        // The acker is gone only when the worker stops after its last job.
        let ack = |completion: Completion, unsettled: OwnedSemaphorePermit| {
            let _ = self.acks.send(Ack { completion, unsettled });
        };
        // Prefetched jobs wait here for an execution slot; on shutdown they go back uncharged.
        let _slot = tokio::select! {
            biased;
            _ = self.stop.cancelled() => {
                ack(returned(&job), unsettled);
                return;
            }
            p = self.running.clone().acquire_owned() => p.expect("never closed"),
        };
        let started_at = Utc::now();
        let wait = (started_at - job.run_at.max(job.created_at)).to_std().unwrap_or_default();
        metrics::histogram!("wharf_job_wait_seconds", "kind" => job.kind.clone()).record(wait.as_secs_f64());

        let span = tracing::info_span!(
            "job",
            otel.kind = "consumer",
            job.id = %job.id,
            job.kind = %job.kind,
            job.queue = %job.queue,
            tenant = %job.tenant,
            attempt = job.attempt,
            traceparent = job.traceparent.as_deref().unwrap_or(""),
            worker = %self.worker,
        );
        if let Some(traceparent) = &job.traceparent {
            use opentelemetry::propagation::TextMapPropagator;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            // The attempt joins the trace of the request that enqueued the job (Err: export is off).
            let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.clone())]);
            let _ = span.set_parent(opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier));
        }
        let ctx = JobContext {
            id: job.id,
            tenant: job.tenant.clone(),
            kind: job.kind.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            traceparent: job.traceparent.clone(),
            shutdown: self.kill.clone(),
        };
        let result = match self.spec.handler(&job.kind) {
            None => Err(JobError::permanent(format!("no handler for kind `{}` on queue `{}`", job.kind, job.queue))),
            Some(handler) => {
                let attempt = AssertUnwindSafe(async { handler.run(&ctx, &job.payload).await }).catch_unwind();
                tokio::select! {
                    r = attempt.instrument(span.clone()) => match r {
                        Ok(r) => r,
                        Err(panic) => Err(JobError::transient(format!("handler panicked: {}", panic_message(&panic)))),
                    },
                    _ = self.kill.cancelled() => {
                        span.in_scope(|| tracing::warn!("interrupted by shutdown; returned to the queue uncharged"));
                        ack(returned(&job), unsettled);
                        return;
                    }
                }
            }
        };
        let elapsed = (Utc::now() - started_at).to_std().unwrap_or_default();
        metrics::histogram!("wharf_job_attempt_duration_seconds", "kind" => job.kind.clone())
            .record(elapsed.as_secs_f64());
        let outcome = settle(result, job.attempt, &self.spec.retry);
        let label = match &outcome {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Retry { .. } => "retried",
            Outcome::Dead { .. } => "dead",
            Outcome::Returned => "returned",
        };
        span.in_scope(|| match &outcome {
            Outcome::Succeeded { .. } => tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "job succeeded"),
            Outcome::Retry { error, run_at } => tracing::warn!(%error, %run_at, "attempt failed; will retry"),
            Outcome::Dead { error } => tracing::error!(%error, "job dead: moved to the dead-letter queue"),
            Outcome::Returned => {}
        });
        metrics::counter!("wharf_jobs_finished_total", "kind" => job.kind.clone(), "outcome" => label).increment(1);
        ack(Completion { id: job.id, attempt: job.attempt, started_at, outcome }, unsettled);
    }
}

/// Turns an attempt's result into what happens next.
pub(crate) fn settle(
    result: Result<Option<serde_json::Value>, JobError>,
    attempt: i32,
    policy: &RetryPolicy,
) -> Outcome {
    match result {
        Ok(result) => Outcome::Succeeded { result },
        Err(JobError::Permanent { message }) => Outcome::Dead { error: format!("permanent error: {message}") },
        Err(JobError::Transient { message, retry_after }) if policy.may_retry(attempt) => {
            Outcome::Retry { error: message, run_at: Utc::now() + policy.delay_honouring(attempt, retry_after) }
        }
        Err(JobError::Transient { message, .. }) => Outcome::Dead {
            error: format!("{message} (attempt {attempt} of {}: no attempts left)", policy.max_attempts),
        },
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn settle_follows_the_policy() {
        let p = RetryPolicy::new(3, Duration::from_secs(10), Duration::from_secs(60));
        assert!(matches!(settle(Ok(None), 1, &p), Outcome::Succeeded { .. }));
        match settle(Err(JobError::transient("boom")), 1, &p) {
            Outcome::Retry { run_at, error } => {
                assert_eq!(error, "boom");
                let d = (run_at - Utc::now()).num_milliseconds();
                assert!((7_000..=12_100).contains(&d), "{d}");
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(settle(Err(JobError::transient("boom")), 3, &p), Outcome::Dead { .. }));
        assert!(matches!(settle(Err(JobError::permanent("no")), 1, &p), Outcome::Dead { .. }));
    }
}
