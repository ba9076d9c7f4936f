//! The worker runtime, in one place: a process registers a uniquely named worker, runs one
//! fetcher per pool, settles every attempt through the acker, heart-beats its lease and rescues
//! the jobs of workers that stopped heart-beating. Each duty is a small service in its own file.

mod acker;
mod maintenance;
mod pool;

use std::{sync::Arc, time::Duration};

use thiserror::Error;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use wharf_jobs::{Store, StoreError};

use crate::registry::Registry;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Jobs running at once, per pool.
    pub concurrency: usize,
    /// Jobs claimed ahead of free execution slots, per pool (returned uncharged on shutdown).
    pub prefetch: usize,
    /// Most jobs claimed in one query.
    pub claim_batch: usize,
    /// Pickup latency bound for delayed and retried jobs (new jobs wake workers at once).
    pub poll_interval: Duration,
    /// A worker silent for this long loses its jobs.
    pub lease: Duration,
    /// How often a worker proves it is alive (well inside `lease`).
    pub heartbeat_interval: Duration,
    /// How often to look for jobs of dead workers.
    pub rescue_interval: Duration,
    /// On shutdown, how long running jobs may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            concurrency: 16,
            prefetch: 16,
            claim_batch: 100,
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            rescue_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("no pool named `{0}`: known pools are {1}")]
    UnknownPool(String, String),
    #[error("no pools to run")]
    NoPools,
    #[error("could not register the worker: {0}")]
    Register(#[source] StoreError),
}

pub struct Worker {
    id: String,
    store: Arc<dyn Store>,
    registry: Registry,
    pools: Vec<String>,
    cfg: RuntimeConfig,
}

/// `host-pid-random`: unique per process start, readable in `wharf_workers` and attempt logs.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wharf".into());
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &rand[..8])
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Registry,
        pools: &[String],
        cfg: RuntimeConfig,
    ) -> Result<Self, RuntimeError> {
        if pools.is_empty() {
            return Err(RuntimeError::NoPools);
        }
        for p in pools {
            if registry.queue(p).is_none() {
                let mut known: Vec<_> = registry.queues().collect();
                known.sort_unstable();
                return Err(RuntimeError::UnknownPool(p.clone(), known.join(", ")));
            }
        }
        Ok(Worker { id: worker_name(), store, registry, pools: pools.to_vec(), cfg })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `stop` is cancelled, then shuts down gracefully: no new claims, running jobs
    /// get `shutdown_grace` to finish, everything else goes back to the queue uncharged.
    pub async fn run(self, stop: CancellationToken) -> Result<(), RuntimeError> {
        let Worker { id, store, registry, pools, cfg } = self;
        store.register_worker(&id, &pools).await.map_err(RuntimeError::Register)?;
        tracing::info!(worker = %id, pools = %pools.join(","), concurrency = cfg.concurrency, "worker started");

        let wakeups = match store.wakeups().await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "no wake-up channel; relying on polling");
                None
            }
        };
        let kill = CancellationToken::new();
        let background = CancellationToken::new();
        let (acks, acker) = acker::spawn(store.clone(), id.clone());
        let maintenance = tokio::spawn(maintenance::run(
            store.clone(),
            id.clone(),
            registry.clone(),
            cfg.clone(),
            background.clone(),
        ));

        let jobs = TaskTracker::new();
        let mut fetchers = Vec::new();
        for queue in &pools {
            let spec = registry.queue(queue).expect("checked in Worker::new").clone();
            let wake = wakeups.as_ref().map(|w| w.queue(queue));
            fetchers.push(tokio::spawn(pool::fetch_loop(pool::Pool {
                worker: id.clone(),
                store: store.clone(),
                spec,
                cfg: cfg.clone(),
                wake,
                acks: acks.clone(),
                stop: stop.clone(),
                kill: kill.clone(),
                jobs: jobs.clone(),
            })));
        }

        stop.cancelled().await;
        tracing::info!(worker = %id, grace_s = cfg.shutdown_grace.as_secs(), "stopping: no new claims, letting running jobs finish");
        for f in fetchers {
            let _ = f.await;
        }
        jobs.close();
        if tokio::time::timeout(cfg.shutdown_grace, jobs.wait()).await.is_err() {
            tracing::warn!(worker = %id, "grace period over: returning unfinished jobs to the queue");
            kill.cancel();
            jobs.wait().await;
        }
        drop(acks);
        let _ = acker.await;
        background.cancel();
        let _ = maintenance.await;
        if let Err(e) = store.deregister_worker(&id).await {
            tracing::warn!(worker = %id, error = %e, "could not deregister; its lease simply expires");
        }
        tracing::info!(worker = %id, "worker stopped");
        Ok(())
    }
}
