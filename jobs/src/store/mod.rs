//! The store: one trait, one file per backend. PostgreSQL is the production store; a SQLite
//! file is the embedded default of `wharf serve`. The SQL is wharf's own (see README,
//! "Why not apalis' storage").

mod postgres;
mod sqlite;
mod wakeups;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use self::{postgres::PostgresStore, sqlite::SqliteStore, wakeups::Wakeups};
use crate::{
    error::StoreError,
    idempotency::{IdempotencyKey, Idempotent, StoredResponse},
    job::{ClaimedJob, Completion, DeadLetterFilter, JobFilter, JobId, JobRecord, JobState, NewJob, Page, PageRequest},
    keys::{ApiKeyRecord, NewApiKey, Scope},
};
pub use postgres::like_pattern;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://…` or `sqlite://path` (`sqlite::memory:` is refused: jobs must survive).
    pub url: String,
    pub pool_min: u32,
    pub pool_max: u32,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig { url: url.into(), pool_min: 2, pool_max: 10 }
    }
}

/// The database behind a store, for feature modules (webhooks, schedules, …) that keep their
/// own tables: each matches on the backend in its own file instead of growing [`Store`].
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// A running job whose worker stopped heart-beating.
#[derive(Debug, Clone)]
pub struct OrphanedJob {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
}

/// Counts per state for one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub queue: String,
    pub scheduled: i64,
    /// Due now: queued, plus scheduled and retrying jobs whose time has come.
    pub queued: i64,
    pub running: i64,
    /// Waiting out a backoff.
    pub retrying: i64,
    /// In the dead-letter queue (not yet replayed or discarded).
    pub dead: i64,
    /// Succeeded within the last minute.
    pub done_last_minute: i64,
}

/// Folds `(queue, state, run_at in the future, count)` rows, sorted by queue, into per-queue
/// counts: a scheduled or retrying job whose time has come counts as queued; the pseudo-state
/// `done` carries the jobs that succeeded within the last minute.
pub(crate) fn fold_queue_counts(rows: Vec<(String, String, bool, i64)>) -> Vec<QueueCounts> {
    let mut out: Vec<QueueCounts> = Vec::new();
    for (queue, state, future, n) in rows {
        if out.last().is_none_or(|c| c.queue != queue) {
            out.push(QueueCounts { queue: queue.clone(), ..Default::default() });
        }
        let c = out.last_mut().expect("pushed above");
        match (state.as_str(), future) {
            ("scheduled", true) => c.scheduled += n,
            ("retrying", true) => c.retrying += n,
            ("scheduled" | "retrying" | "queued", _) => c.queued += n,
            ("running", _) => c.running += n,
            ("dead", _) => c.dead += n,
            ("done", _) => c.done_last_minute += n,
            _ => {}
        }
    }
    out
}

/// Why a job could not be cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelRefused {
    /// No job with that id for this tenant.
    NotFound,
    /// The job is not waiting (scheduled, queued or retrying); carries its state.
    NotWaiting(JobState),
}

/// Why a dead letter could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayRefused {
    /// No job with that id for this tenant.
    NotFound,
    /// The job exists but is not (or no longer) dead; carries its state.
    NotDead(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// The database, for feature modules with their own tables.
    fn db(&self) -> Db;

    /// The wake-up signals of this process: feature modules that insert jobs themselves call
    /// `notify(queue)` after committing (PostgreSQL also gets a `pg_notify`).
    fn local_wakeups(&self) -> Option<Arc<Wakeups>> {
        None
    }

    // --- schema -------------------------------------------------------------------------
    /// Applies wharf's migrations (idempotent).
    async fn migrate(&self) -> Result<()>;
    /// The store answers and every migration is applied. Never depends on queue sizes.
    async fn ready(&self) -> Result<()>;

    // --- enqueue (API) --------------------------------------------------------------------
    /// Inserts a job. With an idempotency key, the key and its response are stored in the same
    /// transaction: a repeat returns the first response, another body under the key a mismatch.
    async fn enqueue(
        &self,
        job: NewJob,
        idempotency: Option<(IdempotencyKey, StoredResponse)>,
    ) -> Result<Idempotent<()>>;
    /// Inserts many jobs in one round trip (bulk producers, benchmarks).
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<u64>;

    // --- reads and operator actions (tenant-scoped) ----------------------------------------
    /// The job with its failed attempts; `None` if it does not exist for this tenant.
    async fn job(&self, tenant: &str, id: JobId) -> Result<Option<JobRecord>>;
    /// Jobs of the tenant, newest first, filtered (attempts not loaded).
    async fn jobs(&self, tenant: &str, filter: &JobFilter, page: &PageRequest) -> Result<Page<JobRecord>>;
    /// Cancels a waiting job (scheduled, queued or retrying): it will not run. A running job
    /// finishes its attempt (refused with its state), as does any settled job.
    async fn cancel(&self, tenant: &str, id: JobId) -> Result<std::result::Result<JobRecord, CancelRefused>>;
    /// Dead letters, newest first (attempts not loaded).
    async fn dead_letters(
        &self,
        tenant: &str,
        filter: &DeadLetterFilter,
        page: &PageRequest,
    ) -> Result<Page<JobRecord>>;
    /// Replays one dead letter as a new job `new_id` linked to it (optionally with an edited
    /// payload); the original becomes `replayed`.
    async fn replay(
        &self,
        tenant: &str,
        id: JobId,
        new_id: JobId,
        payload: Option<serde_json::Value>,
    ) -> Result<std::result::Result<(), ReplayRefused>>;
    /// Replays every dead letter matching the filter; returns how many.
    async fn replay_matching(&self, tenant: &str, filter: &DeadLetterFilter) -> Result<u64>;
    /// Discards a dead letter; false if there was no such dead letter.
    async fn discard(&self, tenant: &str, id: JobId) -> Result<bool>;
    /// Per-queue counts of one tenant, or of all tenants (`None`: the metrics exporter).
    /// Each count reads a partial index; `done_last_minute` reads the finished-jobs index.
    async fn queue_counts(&self, tenant: Option<&str>) -> Result<Vec<QueueCounts>>;

    // --- idempotency for operations other than enqueue --------------------------------------
    async fn idempotency_lookup(&self, tenant: &str, key: &str) -> Result<Option<(String, StoredResponse)>>;
    async fn idempotency_save(&self, tenant: &str, key: &IdempotencyKey, response: &StoredResponse) -> Result<()>;

    // --- workers ----------------------------------------------------------------------------
    async fn register_worker(&self, worker: &str, queues: &[String]) -> Result<()>;
    async fn heartbeat(&self, worker: &str) -> Result<()>;
    async fn deregister_worker(&self, worker: &str) -> Result<()>;
    /// Claims up to `limit` due jobs of `queue` for `worker`, charging each an attempt.
    async fn claim(&self, queue: &str, worker: &str, limit: u32, max_attempts: i32) -> Result<Vec<ClaimedJob>>;
    /// Applies outcomes reported by `worker`; a completion whose lease `worker` no longer holds
    /// (rescued and claimed again) is ignored. Returns how many applied.
    async fn complete(&self, worker: &str, completions: &[Completion]) -> Result<u64>;
    /// Running jobs whose worker has not heart-beaten within `lease`.
    async fn orphaned(&self, lease: Duration, limit: u32) -> Result<Vec<OrphanedJob>>;
    /// Forgets workers silent for longer than `older_than` that hold no job.
    async fn prune_workers(&self, older_than: Duration) -> Result<u64>;

    /// Wake-ups for a queue: notified when a job may have become available (LISTEN/NOTIFY on
    /// PostgreSQL, in-process on SQLite). Workers still poll: delayed and retried jobs notify no one.
    async fn wakeups(&self) -> Result<Arc<Wakeups>>;

    // --- API keys ---------------------------------------------------------------------------
    async fn create_api_key(&self, tenant: &str, scopes: &[Scope], key: &NewApiKey) -> Result<()>;
    /// Looks a key up by its hash.
    async fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;
    async fn count_api_keys(&self) -> Result<i64>;
}

/// Opens the store a `DATABASE_URL` names.
pub async fn open_store(cfg: &StoreConfig) -> Result<Arc<dyn Store>> {
    if cfg.url.starts_with("postgres://") || cfg.url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(cfg).await?))
    } else if cfg.url.starts_with("sqlite:") && !cfg.url.contains(":memory:") {
        Ok(Arc::new(SqliteStore::connect(cfg).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact(&cfg.url)))
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_scheduled_and_retrying_jobs_count_as_queued() {
        let row = |q: &str, s: &str, f: bool, n: i64| (q.to_string(), s.to_string(), f, n);
        let counts = fold_queue_counts(vec![
            row("email", "queued", false, 3),
            row("email", "retrying", false, 2),
            row("email", "retrying", true, 4),
            row("email", "scheduled", true, 1),
            row("email", "dead", false, 5),
            row("email", "done", false, 9),
            row("webhooks", "running", false, 7),
        ]);
        assert_eq!(counts.len(), 2);
        let e = &counts[0];
        assert_eq!((e.queued, e.retrying, e.scheduled, e.dead, e.running, e.done_last_minute), (5, 4, 1, 5, 0, 9));
        assert_eq!((counts[1].queue.as_str(), counts[1].running), ("webhooks", 7));
    }
}
