//! Settles attempts: completions from every job of the process are written in batches (one
//! transaction per batch, by primary key), so a drain does not pay one round trip per job.

use std::{sync::Arc, time::Duration};

use tokio::{sync::mpsc, task::JoinHandle};
use wharf_jobs::{Completion, Store};

const MAX_BATCH: usize = 512;
/// How long to keep retrying one batch before giving up on it. Its jobs stay `running` under
/// this worker's lease and are rescued (and re-run) once the lease expires: at-least-once.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

pub(crate) type Acks = mpsc::UnboundedSender<Completion>;

pub(crate) fn spawn(store: Arc<dyn Store>, worker: String) -> (Acks, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
    let handle = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Natural batching: take whatever has queued up while the previous write ran.
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let mut delay = Duration::from_millis(100);
            let first_try = tokio::time::Instant::now();
            loop {
                match store.complete(&worker, &batch).await {
                    Ok(_) => break,
                    Err(e) if first_try.elapsed() > GIVE_UP_AFTER => {
                        tracing::error!(error = %e, jobs = batch.len(), "giving up recording job outcomes; their leases will expire and they will run again");
                        break;
                    }
                    Err(e) => {
                        // Keep the batch: the outcome of work already done must not be lost to
                        // a database blip. Unacked jobs are rescued if this process dies.
                        tracing::warn!(error = %e, jobs = batch.len(), "could not record job outcomes; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            batch.clear();
        }
    });
    (tx, handle)
}
