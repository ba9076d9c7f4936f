//! SQLite store, the embedded default: one file, WAL, `synchronous=FULL` (an accepted job
//! survives a power cut), writes in `BEGIN IMMEDIATE` transactions, in-process wake-ups.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::{
    AssertSqlSafe, Row, SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
};

use super::{
    CancelRefused, OrphanedJob, QueueCounts, ReplayRefused, Result, Store, StoreConfig, Wakeups, postgres::like_pattern,
};
use crate::{
    error::StoreError,
    idempotency::{IdempotencyKey, Idempotent, StoredResponse},
    job::{
        AttemptRecord, ClaimedJob, Completion, DeadLetterFilter, JobFilter, JobId, JobRecord, JobState, NewJob,
        Outcome, Page, PageRequest,
    },
    keys::{ApiKeyRecord, NewApiKey, Scope},
};

const JOB_COLUMNS: &str = "id, tenant_id, kind, queue, state, payload, attempt, max_attempts, run_at, created_at, \
     started_at, finished_at, last_error, result, replay_of, replayed_by, traceparent";
const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;
const DEAD_FILTER: &str = "(?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR last_error LIKE ?2 ESCAPE '\\') \
     AND (?3 IS NULL OR finished_at >= ?3) AND (?4 IS NULL OR finished_at < ?4)";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    wakeups: Arc<Wakeups>,
}

impl SqliteStore {
    pub async fn connect(cfg: &StoreConfig) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&cfg.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL, not OFF (apalis-sqlite's setting) nor NORMAL: a 202 promises durability.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        if let Some(dir) = opts.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Database(sqlx::Error::Configuration(
                    format!("cannot create the directory {} for the SQLite file: {e}", dir.display()).into(),
                ))
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(cfg.pool_max.clamp(1, 8))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(SqliteStore { pool, wakeups: Arc::new(Wakeups::default()) })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        // IMMEDIATE takes the write lock up front: a deferred transaction that reads first and
        // writes later can fail with SQLITE_BUSY instead of waiting.
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

fn opt_ms(row: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(row.try_get::<Option<i64>, _>(col)?.map(from_ms))
}

fn parse_id(s: &str) -> Result<JobId> {
    s.parse().map_err(|_| StoreError::corrupt(format!("bad job id `{s}`")))
}

fn opt_id(row: &SqliteRow, col: &str) -> Result<Option<JobId>> {
    row.try_get::<Option<String>, _>(col)?.as_deref().map(parse_id).transpose()
}

fn json_col(row: &SqliteRow, col: &str) -> Result<Option<serde_json::Value>> {
    row.try_get::<Option<String>, _>(col)?
        .map(|s| serde_json::from_str(&s).map_err(|e| StoreError::corrupt(format!("{col} is not JSON: {e}"))))
        .transpose()
}

fn job_from_row(row: &SqliteRow) -> Result<JobRecord> {
    let state: String = row.try_get("state")?;
    let payload: String = row.try_get("payload")?;
    Ok(JobRecord {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        tenant: row.try_get("tenant_id")?,
        kind: row.try_get("kind")?,
        queue: row.try_get("queue")?,
        state: JobState::parse(&state).ok_or_else(|| StoreError::corrupt(format!("unknown job state `{state}`")))?,
        // A payload that is not even JSON is shown as a string rather than hidden.
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        run_at: from_ms(row.try_get("run_at")?),
        created_at: from_ms(row.try_get("created_at")?),
        started_at: opt_ms(row, "started_at")?,
        finished_at: opt_ms(row, "finished_at")?,
        last_error: row.try_get("last_error")?,
        result: json_col(row, "result")?,
        replay_of: opt_id(row, "replay_of")?,
        replayed_by: opt_id(row, "replayed_by")?,
        traceparent: row.try_get("traceparent")?,
        attempts: Vec::new(),
    })
}

async fn insert_job(conn: &mut SqliteConnection, job: &NewJob, now: DateTime<Utc>) -> Result<()> {
    let run_at = job.run_at.unwrap_or(now);
    let state = if run_at <= now { "queued" } else { "scheduled" };
    sqlx::query(
        "INSERT INTO wharf_jobs (id, tenant_id, kind, queue, state, payload, run_at, created_at, updated_at,
                                 traceparent, replay_of)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job.id.to_string())
    .bind(&job.tenant)
    .bind(&job.kind)
    .bind(&job.queue)
    .bind(state)
    .bind(job.payload.to_string())
    .bind(ms(run_at))
    .bind(ms(now))
    .bind(ms(now))
    .bind(&job.traceparent)
    .bind(job.replay_of.map(|j| j.to_string()))
    .execute(conn)
    .await?;
    Ok(())
}

async fn idempotency_row(
    conn: &mut SqliteConnection,
    tenant: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<(String, StoredResponse)>> {
    let row = sqlx::query(
        "SELECT fingerprint, response FROM wharf_idempotency_keys WHERE tenant_id = ? AND key = ? AND created_at > ?",
    )
    .bind(tenant)
    .bind(key)
    .bind(ms(now) - IDEMPOTENCY_TTL_MS)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        let resp: String = r.try_get("response")?;
        let resp =
            serde_json::from_str(&resp).map_err(|e| StoreError::corrupt(format!("idempotency response: {e}")))?;
        Ok((r.try_get("fingerprint")?, resp))
    })
    .transpose()
}

async fn save_idempotency(
    conn: &mut SqliteConnection,
    tenant: &str,
    key: &IdempotencyKey,
    response: &StoredResponse,
    now: DateTime<Utc>,
) -> Result<()> {
    let body = serde_json::to_string(response).map_err(|e| StoreError::corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO wharf_idempotency_keys (tenant_id, key, fingerprint, response, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (tenant_id, key) DO UPDATE SET fingerprint = excluded.fingerprint,
             response = excluded.response, created_at = excluded.created_at
         WHERE wharf_idempotency_keys.created_at <= ?",
    )
    .bind(tenant)
    .bind(&key.key)
    .bind(&key.fingerprint)
    .bind(body)
    .bind(ms(now))
    .bind(ms(now) - IDEMPOTENCY_TTL_MS)
    .execute(conn)
    .await?;
    Ok(())
}

fn bind_dead_filter<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    f: &'q DeadLetterFilter,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(f.kind.as_deref()).bind(f.error.as_deref().map(like_pattern)).bind(f.since.map(ms)).bind(f.until.map(ms))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn db(&self) -> super::Db {
        super::Db::Sqlite(self.pool.clone())
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<()> {
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| if e.to_string().contains("no such table") { StoreError::NotMigrated } else { e.into() })?;
        if MIGRATOR.iter().any(|m| !applied.contains(&m.version)) {
            return Err(StoreError::NotMigrated);
        }
        Ok(())
    }

    async fn enqueue(
        &self,
        job: NewJob,
        idempotency: Option<(IdempotencyKey, StoredResponse)>,
    ) -> Result<Idempotent<()>> {
        let now = Utc::now();
        let mut tx = self.write_tx().await?;
        if let Some((key, response)) = &idempotency {
            if let Some((fingerprint, stored)) = idempotency_row(&mut tx, &job.tenant, &key.key, now).await? {
                return Ok(if fingerprint == key.fingerprint {
                    Idempotent::Repeat(stored)
                } else {
                    Idempotent::Mismatch
                });
            }
            save_idempotency(&mut tx, &job.tenant, key, response, now).await?;
        }
        insert_job(&mut tx, &job, now).await?;
        tx.commit().await?;
        if job.run_at.is_none_or(|t| t <= now) {
            self.wakeups.notify(&job.queue);
        }
        Ok(Idempotent::Fresh(()))
    }

    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<u64> {
        let now = Utc::now();
        let mut tx = self.write_tx().await?;
        for job in &jobs {
            insert_job(&mut tx, job, now).await?;
        }
        tx.commit().await?;
        let mut queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        for q in queues {
            self.wakeups.notify(q);
        }
        Ok(jobs.len() as u64)
    }

    async fn job(&self, tenant: &str, id: JobId) -> Result<Option<JobRecord>> {
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM wharf_jobs WHERE tenant_id = ? AND id = ?")))
                .bind(tenant)
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let mut job = job_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT attempt, worker, started_at, finished_at, error FROM wharf_job_attempts
             WHERE job_id = ? ORDER BY attempt",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            job.attempts.push(AttemptRecord {
                attempt: r.try_get("attempt")?,
                worker: r.try_get("worker")?,
                started_at: opt_ms(&r, "started_at")?,
                finished_at: from_ms(r.try_get("finished_at")?),
                error: r.try_get("error")?,
            });
        }
        Ok(Some(job))
    }

    async fn jobs(&self, tenant: &str, filter: &JobFilter, page: &PageRequest) -> Result<Page<JobRecord>> {
        let limit = page.limit.clamp(1, 1000) as i64;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM wharf_jobs
             WHERE tenant_id = ?1 AND (?2 IS NULL OR id < ?2) AND (?3 IS NULL OR kind = ?3)
               AND (?4 IS NULL OR queue = ?4)
               AND (?5 IS NULL OR ?5 = CASE WHEN state IN ('scheduled', 'retrying') AND run_at <= ?7
                                           THEN 'queued' ELSE state END)
             ORDER BY id DESC LIMIT ?6"
        )))
        .bind(tenant)
        .bind(page.after.map(|j| j.to_string()))
        .bind(filter.kind.as_deref())
        .bind(filter.queue.as_deref())
        .bind(filter.state.map(JobState::as_str))
        .bind(limit + 1)
        .bind(ms(Utc::now()))
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetched(items, limit as usize))
    }

    async fn cancel(&self, tenant: &str, id: JobId) -> Result<std::result::Result<JobRecord, CancelRefused>> {
        let now = ms(Utc::now());
        let cancelled = sqlx::query(
            "UPDATE wharf_jobs SET state = 'cancelled', finished_at = ?1, updated_at = ?1
             WHERE tenant_id = ?2 AND id = ?3 AND state IN ('scheduled', 'queued', 'retrying')",
        )
        .bind(now)
        .bind(tenant)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        match self.job(tenant, id).await? {
            Some(job) if cancelled == 1 => Ok(Ok(job)),
            Some(job) => Ok(Err(CancelRefused::NotWaiting(job.state))),
            None => Ok(Err(CancelRefused::NotFound)),
        }
    }

    async fn dead_letters(
        &self,
        tenant: &str,
        filter: &DeadLetterFilter,
        page: &PageRequest,
    ) -> Result<Page<JobRecord>> {
        let limit = page.limit.clamp(1, 1000) as i64;
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM wharf_jobs
             WHERE {DEAD_FILTER} AND tenant_id = ?5 AND state = 'dead' AND (?6 IS NULL OR id < ?6)
             ORDER BY id DESC LIMIT ?7"
        );
        let rows = bind_dead_filter(sqlx::query(AssertSqlSafe(sql)), filter)
            .bind(tenant)
            .bind(page.after.map(|j| j.to_string()))
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let items = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetched(items, limit as usize))
    }

    async fn replay(
        &self,
        tenant: &str,
        id: JobId,
        new_id: JobId,
        payload: Option<serde_json::Value>,
    ) -> Result<std::result::Result<(), ReplayRefused>> {
        let now = Utc::now();
        let mut tx = self.write_tx().await?;
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM wharf_jobs WHERE tenant_id = ? AND id = ?")))
                .bind(tenant)
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else { return Ok(Err(ReplayRefused::NotFound)) };
        let old = job_from_row(&row)?;
        if old.state != JobState::Dead {
            return Ok(Err(ReplayRefused::NotDead(old.state.to_string())));
        }
        // Keep the stored payload text verbatim unless an edited one is given.
        let raw: String = row.try_get("payload")?;
        let job = NewJob {
            id: new_id,
            tenant: old.tenant,
            kind: old.kind,
            queue: old.queue.clone(),
            payload: payload.unwrap_or(old.payload),
            run_at: None,
            traceparent: old.traceparent,
            replay_of: Some(id),
        };
        insert_job(&mut tx, &job, now).await?;
        if job.payload == serde_json::Value::String(raw.clone()) {
            sqlx::query("UPDATE wharf_jobs SET payload = ? WHERE id = ?")
                .bind(raw)
                .bind(new_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE wharf_jobs SET state = 'replayed', replayed_by = ?, updated_at = ? WHERE id = ?")
            .bind(new_id.to_string())
            .bind(ms(now))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.wakeups.notify(&old.queue);
        Ok(Ok(()))
    }

    async fn replay_matching(&self, tenant: &str, filter: &DeadLetterFilter) -> Result<u64> {
        let cutoff = ms(Utc::now());
        let select = format!(
            "SELECT id, queue FROM wharf_jobs WHERE {DEAD_FILTER} AND tenant_id = ?5 AND state = 'dead'
             AND finished_at <= ?6 ORDER BY id LIMIT 500"
        );
        let mut total = 0u64;
        loop {
            let now = Utc::now();
            let mut tx = self.write_tx().await?;
            let rows = bind_dead_filter(sqlx::query(AssertSqlSafe(select.clone())), filter)
                .bind(tenant)
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await?;
            if rows.is_empty() {
                break;
            }
            let mut queues = Vec::new();
            for r in &rows {
                let old: String = r.try_get("id")?;
                let new_id = JobId::new().to_string();
                sqlx::query(
                    "INSERT INTO wharf_jobs (id, tenant_id, kind, queue, state, payload, run_at, created_at, updated_at,
                                             traceparent, replay_of)
                     SELECT ?, tenant_id, kind, queue, 'queued', payload, ?, ?, ?, traceparent, id
                     FROM wharf_jobs WHERE id = ?",
                )
                .bind(&new_id)
                .bind(ms(now))
                .bind(ms(now))
                .bind(ms(now))
                .bind(&old)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE wharf_jobs SET state = 'replayed', replayed_by = ?, updated_at = ? WHERE id = ?")
                    .bind(&new_id)
                    .bind(ms(now))
                    .bind(&old)
                    .execute(&mut *tx)
                    .await?;
                queues.push(r.try_get::<String, _>("queue")?);
            }
            tx.commit().await?;
            queues.sort_unstable();
            queues.dedup();
            for q in &queues {
                self.wakeups.notify(q);
            }
            total += rows.len() as u64;
        }
        Ok(total)
    }

    async fn discard(&self, tenant: &str, id: JobId) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE wharf_jobs SET state = 'discarded', updated_at = ? WHERE tenant_id = ? AND id = ? AND state = 'dead'",
        )
        .bind(ms(Utc::now()))
        .bind(tenant)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn queue_counts(&self, tenant: Option<&str>) -> Result<Vec<QueueCounts>> {
        let now = Utc::now();
        let rows = sqlx::query(
            "SELECT queue, state, run_at > ?1 AS future, count(*) AS n FROM wharf_jobs
             WHERE state IN ('scheduled', 'queued', 'retrying', 'running', 'dead') AND (?2 IS NULL OR tenant_id = ?2)
             GROUP BY 1, 2, 3
             UNION ALL
             SELECT queue, 'done', 0, count(*) FROM wharf_jobs
             WHERE state = 'succeeded' AND finished_at > ?3 AND (?2 IS NULL OR tenant_id = ?2) GROUP BY 1
             ORDER BY 1",
        )
        .bind(ms(now))
        .bind(tenant)
        .bind(ms(now - chrono::Duration::minutes(1)))
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get("queue")?, r.try_get("state")?, r.try_get("future")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(super::fold_queue_counts(rows))
    }

    async fn idempotency_lookup(&self, tenant: &str, key: &str) -> Result<Option<(String, StoredResponse)>> {
        let mut conn = self.pool.acquire().await?;
        idempotency_row(&mut conn, tenant, key, Utc::now()).await
    }

    async fn idempotency_save(&self, tenant: &str, key: &IdempotencyKey, response: &StoredResponse) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        save_idempotency(&mut conn, tenant, key, response, Utc::now()).await
    }

    async fn register_worker(&self, worker: &str, queues: &[String]) -> Result<()> {
        let now = ms(Utc::now());
        sqlx::query("INSERT INTO wharf_workers (id, queues, started_at, heartbeat_at) VALUES (?, ?, ?, ?)")
            .bind(worker)
            .bind(queues.join(","))
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn heartbeat(&self, worker: &str) -> Result<()> {
        let now = ms(Utc::now());
        sqlx::query(
            "INSERT INTO wharf_workers (id, queues, started_at, heartbeat_at) VALUES (?, '', ?, ?)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(worker)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn deregister_worker(&self, worker: &str) -> Result<()> {
        sqlx::query("DELETE FROM wharf_workers WHERE id = ?").bind(worker).execute(&self.pool).await?;
        Ok(())
    }

    async fn claim(&self, queue: &str, worker: &str, limit: u32, max_attempts: i32) -> Result<Vec<ClaimedJob>> {
        let now = ms(Utc::now());
        let rows = sqlx::query(
            "UPDATE wharf_jobs SET state = 'running', attempt = attempt + 1, max_attempts = ?4,
                    lease_owner = ?2, started_at = ?5, updated_at = ?5
             WHERE id IN (
                SELECT id FROM wharf_jobs
                WHERE queue = ?1 AND state IN ('scheduled', 'queued', 'retrying') AND run_at <= ?5
                ORDER BY run_at, id LIMIT ?3)
             RETURNING id, tenant_id, kind, queue, payload, attempt, run_at, created_at, traceparent",
        )
        .bind(queue)
        .bind(worker)
        .bind(limit as i64)
        .bind(max_attempts)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                Ok(ClaimedJob {
                    id: parse_id(&r.try_get::<String, _>("id")?)?,
                    tenant: r.try_get("tenant_id")?,
                    kind: r.try_get("kind")?,
                    queue: r.try_get("queue")?,
                    payload: r.try_get("payload")?,
                    attempt: r.try_get("attempt")?,
                    max_attempts,
                    run_at: from_ms(r.try_get("run_at")?),
                    created_at: from_ms(r.try_get("created_at")?),
                    traceparent: r.try_get("traceparent")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.run_at, j.id));
        Ok(jobs)
    }

    async fn complete(&self, worker: &str, completions: &[Completion]) -> Result<u64> {
        if completions.is_empty() {
            return Ok(0);
        }
        let now = ms(Utc::now());
        let mut tx = self.write_tx().await?;
        let mut applied = 0;
        let mut returned_queues = Vec::new();
        for c in completions {
            let id = c.id.to_string();
            let guard = "id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?";
            let n = match &c.outcome {
                Outcome::Succeeded { result } => sqlx::query(AssertSqlSafe(format!(
                    "UPDATE wharf_jobs SET state = 'succeeded', finished_at = ?, updated_at = ?, lease_owner = NULL,
                                result = ? WHERE {guard}"
                )))
                .bind(now)
                .bind(now)
                .bind(result.as_ref().map(|r| r.to_string()))
                .bind(&id)
                .bind(worker)
                .bind(c.attempt)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                Outcome::Retry { error, run_at: _ } | Outcome::Dead { error } => {
                    let (state, run_at, finished) = match &c.outcome {
                        Outcome::Retry { run_at, .. } => ("retrying", Some(ms(*run_at)), None),
                        _ => ("dead", None, Some(now)),
                    };
                    let n = sqlx::query(AssertSqlSafe(format!(
                        "UPDATE wharf_jobs SET state = ?, run_at = COALESCE(?, run_at), last_error = ?,
                                lease_owner = NULL, finished_at = ?, updated_at = ? WHERE {guard}"
                    )))
                    .bind(state)
                    .bind(run_at)
                    .bind(error)
                    .bind(finished)
                    .bind(now)
                    .bind(&id)
                    .bind(worker)
                    .bind(c.attempt)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n == 1 {
                        sqlx::query(
                            "INSERT OR IGNORE INTO wharf_job_attempts (job_id, attempt, worker, started_at, finished_at, error)
                             VALUES (?, ?, ?, ?, ?, ?)",
                        )
                        .bind(&id)
                        .bind(c.attempt)
                        .bind(worker)
                        .bind(ms(c.started_at))
                        .bind(now)
                        .bind(error)
                        .execute(&mut *tx)
                        .await?;
                    }
                    n
                }
                Outcome::Returned => {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "UPDATE wharf_jobs SET state = 'queued', attempt = attempt - 1, lease_owner = NULL,
                                started_at = NULL, updated_at = ? WHERE {guard} RETURNING queue"
                    )))
                    .bind(now)
                    .bind(&id)
                    .bind(worker)
                    .bind(c.attempt)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(r) = row {
                        returned_queues.push(r.try_get::<String, _>("queue")?);
                        1
                    } else {
                        0
                    }
                }
            };
            applied += n;
        }
        tx.commit().await?;
        returned_queues.sort_unstable();
        returned_queues.dedup();
        for q in &returned_queues {
            self.wakeups.notify(q);
        }
        Ok(applied)
    }

    async fn orphaned(&self, lease: Duration, limit: u32) -> Result<Vec<OrphanedJob>> {
        let alive_after = ms(Utc::now()) - lease.as_millis() as i64;
        let rows = sqlx::query(
            "SELECT j.id, j.queue, j.kind, j.attempt, COALESCE(j.max_attempts, 1) AS max_attempts,
                    j.lease_owner, COALESCE(j.started_at, j.updated_at) AS started_at
             FROM wharf_jobs j
             WHERE j.state = 'running' AND NOT EXISTS (
                 SELECT 1 FROM wharf_workers w WHERE w.id = j.lease_owner AND w.heartbeat_at > ?)
             LIMIT ?",
        )
        .bind(alive_after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OrphanedJob {
                    id: parse_id(&r.try_get::<String, _>("id")?)?,
                    queue: r.try_get("queue")?,
                    kind: r.try_get("kind")?,
                    attempt: r.try_get("attempt")?,
                    max_attempts: r.try_get("max_attempts")?,
                    worker: r.try_get::<Option<String>, _>("lease_owner")?.unwrap_or_default(),
                    started_at: from_ms(r.try_get("started_at")?),
                })
            })
            .collect()
    }

    async fn prune_workers(&self, older_than: Duration) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM wharf_workers WHERE heartbeat_at < ?
             AND NOT EXISTS (SELECT 1 FROM wharf_jobs j WHERE j.state = 'running' AND j.lease_owner = wharf_workers.id)",
        )
        .bind(ms(Utc::now()) - older_than.as_millis() as i64)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn wakeups(&self) -> Result<Arc<Wakeups>> {
        Ok(self.wakeups.clone())
    }

    fn local_wakeups(&self) -> Option<Arc<Wakeups>> {
        Some(self.wakeups.clone())
    }

    async fn create_api_key(&self, tenant: &str, scopes: &[Scope], key: &NewApiKey) -> Result<()> {
        let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        sqlx::query("INSERT INTO wharf_api_keys (id, key_hash, tenant_id, scopes, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&key.id)
            .bind(&key.hash)
            .bind(tenant)
            .bind(scopes.join(","))
            .bind(ms(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row =
            sqlx::query("SELECT id, tenant_id, scopes FROM wharf_api_keys WHERE key_hash = ? AND revoked_at IS NULL")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            let scopes: String = r.try_get("scopes")?;
            Ok(ApiKeyRecord {
                id: r.try_get("id")?,
                tenant: r.try_get("tenant_id")?,
                scopes: scopes.split(',').filter_map(Scope::parse).collect(),
            })
        })
        .transpose()
    }

    async fn count_api_keys(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM wharf_api_keys WHERE revoked_at IS NULL")
            .fetch_one(&self.pool)
            .await?)
    }
}
