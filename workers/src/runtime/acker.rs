//! Settles attempts: completions from every job of the process are written in batches (one
//! transaction per batch, by primary key), so a drain does not pay one round trip per job.
//! Each completion carries its job's "unsettled" permit, released once the outcome is
//! committed: jobs done but not yet recorded count against what a pool may hold under its
//! lease (see `pool::fetch_loop`), so slow settles slow claims instead of piling up jobs that a
//! crash would run again.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{OwnedSemaphorePermit, mpsc},
    task::JoinHandle,
};
use wharf_jobs::{Completion, Store};

pub(crate) const MAX_BATCH: usize = 512;
/// How long to keep retrying one batch before giving up on it. Its jobs stay `running` under
/// this worker's lease and are rescued (and re-run) once the lease expires: at-least-once.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// A job's outcome and the permit it holds until the outcome is committed.
pub(crate) struct Ack {
    pub completion: Completion,
    pub unsettled: OwnedSemaphorePermit,
}

pub(crate) type Acks = mpsc::UnboundedSender<Ack>;

pub(crate) fn spawn(store: Arc<dyn Store>, worker: String) -> (Acks, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Ack>();
    let handle = tokio::spawn(async move {
        let mut acks = Vec::with_capacity(MAX_BATCH);
        // Natural batching: take whatever has queued up while the previous write ran.
        while rx.recv_many(&mut acks, MAX_BATCH).await > 0 {
            let (batch, permits): (Vec<Completion>, Vec<OwnedSemaphorePermit>) =
                acks.drain(..).map(|a| (a.completion, a.unsettled)).unzip();
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
            drop(permits);
        }
    });
    (tx, handle)
}
