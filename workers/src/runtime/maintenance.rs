//! The worker's background duties: the heartbeat that keeps its lease, and the rescuer that
//! settles jobs held by workers that stopped heart-beating (crashed, killed, partitioned).
//! A rescued attempt counts, so a job that kills its worker every time ends dead.

use std::{collections::BTreeMap, sync::Arc};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use wharf_jobs::{Completion, Outcome, Store, retry::RetryPolicy};

use super::RuntimeConfig;
use crate::registry::Registry;

pub(crate) async fn run(
    store: Arc<dyn Store>,
    worker: String,
    registry: Registry,
    cfg: RuntimeConfig,
    stop: CancellationToken,
) {
    let mut heartbeat = tokio::time::interval(cfg.heartbeat_interval);
    let mut rescue = tokio::time::interval(cfg.rescue_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = heartbeat.tick() => {
                if let Err(e) = store.heartbeat(&worker).await {
                    tracing::warn!(worker = %worker, error = %e, "heartbeat failed");
                }
            }
            _ = rescue.tick() => {
                match rescue_orphans(store.as_ref(), &registry, &cfg).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(jobs = n, "rescued jobs of workers that stopped heart-beating"),
                    Err(e) => tracing::warn!(error = %e, "rescue failed"),
                }
            }
        }
    }
}

/// Settles every orphaned job: retry with backoff, or dead after its last attempt.
pub(crate) async fn rescue_orphans(
    store: &dyn Store,
    registry: &Registry,
    cfg: &RuntimeConfig,
) -> Result<u64, wharf_jobs::StoreError> {
    let orphans = store.orphaned(cfg.lease, 500).await?;
    let mut by_worker: BTreeMap<String, Vec<Completion>> = BTreeMap::new();
    for o in orphans {
        let policy = registry.queue(&o.queue).map(|q| q.retry).unwrap_or(RetryPolicy::new(
            o.max_attempts,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        ));
        let error = format!(
            "worker {} stopped heart-beating during attempt {} (lease {} s expired)",
            o.worker,
            o.attempt,
            cfg.lease.as_secs()
        );
        let outcome = if o.attempt < o.max_attempts {
            Outcome::Retry { error, run_at: Utc::now() + policy.delay(o.attempt) }
        } else {
            Outcome::Dead { error: format!("{error}; no attempts left ({} of {})", o.attempt, o.max_attempts) }
        };
        metrics::counter!("wharf_jobs_rescued_total", "queue" => o.queue.clone()).increment(1);
        by_worker.entry(o.worker).or_default().push(Completion {
            id: o.id,
            attempt: o.attempt,
            started_at: o.started_at,
            outcome,
        });
    }
    let mut n = 0;
    for (worker, completions) in by_worker {
        n += store.complete(&worker, &completions).await?;
    }
    store.prune_workers(cfg.lease * 10).await?;
    Ok(n)
}
