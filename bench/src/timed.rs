//! A `Store` that times the calls the runtime makes, so a report can say where a drain's time
//! goes (`pg_stat_statements` is not loaded on these machines). Everything else is delegated.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use wharf_jobs::{
    ClaimedJob, Completion, DeadLetterFilter, JobFilter, JobId, JobRecord, NewJob, Page, PageRequest, Store,
    idempotency::{IdempotencyKey, Idempotent, StoredResponse},
    keys::{ApiKeyRecord, NewApiKey, Scope},
    store::{CancelRefused, Db, OrphanedJob, QueueCounts, ReplayRefused, Result, Wakeups},
};

/// Calls of one method: how many, how long in all, how many jobs they moved.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    pub calls: u64,
    pub jobs: u64,
    pub total: Duration,
    pub max: Duration,
    /// Calls that returned fewer jobs than asked for (claims only).
    pub short: u64,
}

impl CallStats {
    fn add(&mut self, took: Duration, jobs: u64, short: bool) {
        self.calls += 1;
        self.jobs += jobs;
        self.total += took;
        self.max = self.max.max(took);
        self.short += short as u64;
    }

    pub fn describe(&self, name: &str) -> String {
        if self.calls == 0 {
            return format!("{name}: no calls");
        }
        let mean_ms = self.total.as_secs_f64() * 1e3 / self.calls as f64;
        let mut s = format!(
            "{name}: {} calls, {:.1} jobs/call, mean {:.2} ms, max {:.1} ms, {:.2} s in all",
            self.calls,
            self.jobs as f64 / self.calls as f64,
            mean_ms,
            self.max.as_secs_f64() * 1e3,
            self.total.as_secs_f64()
        );
        if self.short > 0 {
            s.push_str(&format!(", {} came back short", self.short));
        }
        s
    }
}

#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub claim: CallStats,
    /// Jobs asked for per claim, summed (to compare with what came back).
    pub claim_asked: u64,
    pub complete: CallStats,
    pub enqueue: CallStats,
    pub enqueue_many: CallStats,
}

pub struct TimedStore {
    inner: Arc<dyn Store>,
    timings: Mutex<Timings>,
    /// Completions the store reported as applied, and when their total first reached `target`:
    /// the moment the last job of a drain was durably settled.
    applied: AtomicU64,
    target: AtomicU64,
    target_reached: OnceLock<Instant>,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        TimedStore {
            inner,
            timings: Mutex::new(Timings::default()),
            applied: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            target_reached: OnceLock::new(),
        }
    }

    /// Remember when `n` completions in all have been applied.
    pub fn watch_applied(&self, n: u64) {
        self.target.store(n, Ordering::SeqCst);
    }

    /// Waits (polling) until the watched number of completions was applied; returns when the
    /// `complete` call that reached it returned, or `None` after `limit`.
    pub async fn wait_applied(&self, limit: Duration) -> Option<Instant> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(at) = self.target_reached.get() {
                return Some(*at);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    pub fn take(&self) -> Timings {
        std::mem::take(&mut *self.timings.lock().expect("timings lock"))
    }

    fn note(&self, f: impl FnOnce(&mut Timings)) {
        f(&mut self.timings.lock().expect("timings lock"));
    }
}

#[async_trait]
impl Store for TimedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn db(&self) -> Db {
        self.inner.db()
    }
    fn local_wakeups(&self) -> Option<Arc<Wakeups>> {
        self.inner.local_wakeups()
    }
    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }
    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }
    async fn enqueue(
        &self,
        job: NewJob,
        idempotency: Option<(IdempotencyKey, StoredResponse)>,
    ) -> Result<Idempotent<()>> {
        let t = Instant::now();
        let r = self.inner.enqueue(job, idempotency).await;
        let took = t.elapsed();
        self.note(|s| s.enqueue.add(took, 1, false));
        r
    }
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<u64> {
        let t = Instant::now();
        let r = self.inner.enqueue_many(jobs).await;
        let took = t.elapsed();
        let n = *r.as_ref().unwrap_or(&0);
        self.note(|s| s.enqueue_many.add(took, n, false));
        r
    }
    async fn job(&self, tenant: &str, id: JobId) -> Result<Option<JobRecord>> {
        self.inner.job(tenant, id).await
    }
    async fn jobs(&self, tenant: &str, filter: &JobFilter, page: &PageRequest) -> Result<Page<JobRecord>> {
        self.inner.jobs(tenant, filter, page).await
    }
    async fn cancel(&self, tenant: &str, id: JobId) -> Result<std::result::Result<JobRecord, CancelRefused>> {
        self.inner.cancel(tenant, id).await
    }
    async fn dead_letters(
        &self,
        tenant: &str,
        filter: &DeadLetterFilter,
        page: &PageRequest,
    ) -> Result<Page<JobRecord>> {
        self.inner.dead_letters(tenant, filter, page).await
    }
    async fn replay(
        &self,
        tenant: &str,
        id: JobId,
        new_id: JobId,
        payload: Option<serde_json::Value>,
    ) -> Result<std::result::Result<(), ReplayRefused>> {
        self.inner.replay(tenant, id, new_id, payload).await
    }
    async fn replay_matching(&self, tenant: &str, filter: &DeadLetterFilter) -> Result<u64> {
        self.inner.replay_matching(tenant, filter).await
    }
    async fn discard(&self, tenant: &str, id: JobId) -> Result<bool> {
        self.inner.discard(tenant, id).await
    }
    async fn queue_counts(&self, tenant: Option<&str>) -> Result<Vec<QueueCounts>> {
        self.inner.queue_counts(tenant).await
    }
    async fn idempotency_lookup(&self, tenant: &str, key: &str) -> Result<Option<(String, StoredResponse)>> {
        self.inner.idempotency_lookup(tenant, key).await
    }
    async fn idempotency_save(&self, tenant: &str, key: &IdempotencyKey, response: &StoredResponse) -> Result<()> {
        self.inner.idempotency_save(tenant, key, response).await
    }
    async fn register_worker(&self, worker: &str, queues: &[String]) -> Result<()> {
        self.inner.register_worker(worker, queues).await
    }
    async fn heartbeat(&self, worker: &str) -> Result<()> {
        self.inner.heartbeat(worker).await
    }
    async fn deregister_worker(&self, worker: &str) -> Result<()> {
        self.inner.deregister_worker(worker).await
    }
    async fn claim(&self, queue: &str, worker: &str, limit: u32, max_attempts: i32) -> Result<Vec<ClaimedJob>> {
        let t = Instant::now();
        let r = self.inner.claim(queue, worker, limit, max_attempts).await;
        let took = t.elapsed();
        let n = r.as_ref().map(|v| v.len() as u64).unwrap_or(0);
        self.note(|s| {
            s.claim.add(took, n, n < limit as u64);
            s.claim_asked += limit as u64;
        });
        r
    }
    async fn complete(&self, worker: &str, completions: &[Completion]) -> Result<u64> {
        let t = Instant::now();
        let r = self.inner.complete(worker, completions).await;
        let took = t.elapsed();
        if let Ok(n) = &r {
            let total = self.applied.fetch_add(*n, Ordering::SeqCst) + n;
            if total >= self.target.load(Ordering::SeqCst) {
                let _ = self.target_reached.set(Instant::now());
            }
        }
        self.note(|s| s.complete.add(took, completions.len() as u64, false));
        r
    }
    async fn orphaned(&self, lease: Duration, limit: u32) -> Result<Vec<OrphanedJob>> {
        self.inner.orphaned(lease, limit).await
    }
    async fn prune_workers(&self, older_than: Duration) -> Result<u64> {
        self.inner.prune_workers(older_than).await
    }
    async fn wakeups(&self) -> Result<Arc<Wakeups>> {
        self.inner.wakeups().await
    }
    async fn create_api_key(&self, tenant: &str, scopes: &[Scope], key: &NewApiKey) -> Result<()> {
        self.inner.create_api_key(tenant, scopes, key).await
    }
    async fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        self.inner.api_key(hash).await
    }
    async fn count_api_keys(&self) -> Result<i64> {
        self.inner.count_api_keys().await
    }
}
