//! The scheduler: `wharf scheduler`, and inside `wharf serve`. Like River's maintenance
//! services, each duty is a small named service with its own loop:
//!
//! - [`periodic`]: the periodic job enqueuer — fires every schedule's ticks, each exactly once
//!   across any number of replicas (a claim row per (schedule, tick), job inserted in the same
//!   transaction), skipping and counting ticks found more than 5 min late;
//! - [`dlq`]: the DLQ monitor — every minute, dead letters per (tenant, kind) as gauges, and a
//!   `dlq.threshold` event once per crossing of the warning/critical level per tenant (logged,
//!   recorded, and published to the tenant's webhook endpoints subscribed to it).
//!
//! The purges are ordinary schedules (`wharf_jobs::schedules::defaults`) run by the `purge` pool.

mod config;
pub mod dlq;
pub mod periodic;

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use wharf_jobs::{Store, schedules::ScheduleRepo};

pub use config::{DlqConfig, SchedulerConfig};

/// `host-pid-random`, recorded with each tick this replica claims.
pub fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wharf".into());
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &rand[..8])
}

pub struct Scheduler {
    store: Arc<dyn Store>,
    cfg: SchedulerConfig,
    replica: String,
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, cfg: SchedulerConfig) -> Self {
        Scheduler { store, cfg, replica: replica_name() }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Registers the schedules (retrying until the store answers), then runs every service
    /// until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let Scheduler { store, cfg, replica } = self;
        let repo = ScheduleRepo::new(store.as_ref());
        loop {
            match repo.register(&cfg.schedules).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not register the schedules; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
        let enabled: Vec<_> = cfg.schedules.enabled().map(|s| format!("{} ({})", s.name, s.cron)).collect();
        tracing::info!(replica = %replica, schedules = %enabled.join(", "), "scheduler started");
        let periodic = periodic::PeriodicEnqueuer::new(
            ScheduleRepo::new(store.as_ref()),
            cfg.schedules.enabled().cloned().collect(),
            cfg.late_limit,
            cfg.lookback,
            replica.clone(),
        );
        let monitor = dlq::DlqMonitor::new(store.clone(), cfg.dlq.clone());
        let services = [tokio::spawn(periodic.run(stop.clone())), tokio::spawn(monitor.run(stop.clone()))];
        for s in services {
            let _ = s.await;
        }
        tracing::info!(replica = %replica, "scheduler stopped");
    }
}
