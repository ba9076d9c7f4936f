//! PostgreSQL store: `FOR UPDATE SKIP LOCKED` claims, batched completions by primary key,
//! LISTEN/NOTIFY wake-ups.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    AssertSqlSafe, PgPool, Row,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow, PgSslMode},
};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{CancelRefused, OrphanedJob, QueueCounts, ReplayRefused, Result, Store, StoreConfig, Wakeups};
use crate::{
    error::StoreError,
    idempotency::{IdempotencyKey, Idempotent, StoredResponse},
    job::{
        AttemptRecord, ClaimedJob, Completion, DeadLetterFilter, JobFilter, JobId, JobRecord, JobState, NewJob,
        Outcome, Page, PageRequest,
    },
    keys::{ApiKeyRecord, NewApiKey, Scope},
};

const NOTIFY_CHANNEL: &str = "wharf_jobs";
const JOB_COLUMNS: &str = "id, tenant_id, kind, queue, state, payload, attempt, max_attempts, run_at, created_at, \
     started_at, finished_at, last_error, result, replay_of, replayed_by, traceparent";
/// Rows per statement for bulk inserts and bulk replays.
const BATCH: usize = 1000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
    wakeups: OnceCell<Arc<Wakeups>>,
}

impl PostgresStore {
    pub async fn connect(cfg: &StoreConfig) -> Result<Self> {
        let mut opts = PgConnectOptions::from_str(&cfg.url)?;
        // sqlx 0.9.0 leaves TCP_NODELAY off under TLS, stalling acks ~45 ms; on loopback TLS
        // buys nothing, so unless the URL asks for a mode, don't negotiate it there.
        if !cfg.url.contains("sslmode=") && is_loopback(opts.get_host()) {
            opts = opts.ssl_mode(PgSslMode::Disable);
        }
        let pool = PgPoolOptions::new()
            .min_connections(cfg.pool_min)
            .max_connections(cfg.pool_max.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        Ok(PostgresStore { pool, wakeups: OnceCell::new() })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.starts_with('/') || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `%`, `_` and `\` in a user's search text match themselves.
pub fn like_pattern(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

fn state_of(s: &str) -> Result<JobState> {
    JobState::parse(s).ok_or_else(|| StoreError::corrupt(format!("unknown job state `{s}`")))
}

fn job_from_row(row: &PgRow) -> Result<JobRecord> {
    Ok(JobRecord {
        id: JobId(row.try_get("id")?),
        tenant: row.try_get("tenant_id")?,
        kind: row.try_get("kind")?,
        queue: row.try_get("queue")?,
        state: state_of(row.try_get("state")?)?,
        payload: row.try_get("payload")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        run_at: row.try_get("run_at")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        last_error: row.try_get("last_error")?,
        result: row.try_get("result")?,
        replay_of: row.try_get::<Option<Uuid>, _>("replay_of")?.map(JobId),
        replayed_by: row.try_get::<Option<Uuid>, _>("replayed_by")?.map(JobId),
        traceparent: row.try_get("traceparent")?,
        attempts: Vec::new(),
    })
}

async fn insert_job(conn: &mut sqlx::PgConnection, job: &NewJob) -> Result<()> {
    sqlx::query(
        "INSERT INTO wharf_jobs (id, tenant_id, kind, queue, state, payload, run_at, traceparent, replay_of)
         VALUES ($1, $2, $3, $4,
                 CASE WHEN $5::timestamptz IS NULL OR $5 <= now() THEN 'queued' ELSE 'scheduled' END,
                 $6, COALESCE($5, now()), $7, $8)",
    )
    .bind(job.id.0)
    .bind(&job.tenant)
    .bind(&job.kind)
    .bind(&job.queue)
    .bind(job.run_at)
    .bind(&job.payload)
    .bind(&job.traceparent)
    .bind(job.replay_of.map(|j| j.0))
    .execute(&mut *conn)
    .await?;
    if job.run_at.is_none_or(|t| t <= Utc::now()) {
        notify(conn, &job.queue).await?;
    }
    Ok(())
}

async fn notify(conn: &mut sqlx::PgConnection, queue: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(NOTIFY_CHANNEL).bind(queue).execute(conn).await?;
    Ok(())
}

/// The dead-letter filter as SQL over parameters `$first` to `$first + 3`.
fn dead_filter_sql(first: usize) -> String {
    let [k, e, s, u] = [first, first + 1, first + 2, first + 3];
    format!(
        "(${k}::text IS NULL OR kind = ${k}) AND (${e}::text IS NULL OR last_error ILIKE ${e}) \
         AND (${s}::timestamptz IS NULL OR finished_at >= ${s}) AND (${u}::timestamptz IS NULL OR finished_at < ${u})"
    )
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn db(&self) -> super::Db {
        super::Db::Postgres(self.pool.clone())
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<()> {
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(ref d) if d.code().as_deref() == Some("42P01") => StoreError::NotMigrated,
                e => e.into(),
            })?;
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
        let mut tx = self.pool.begin().await?;
        if let Some((key, response)) = &idempotency {
            // A concurrent request with the same key blocks here until the first commits.
            // An expired key (older than 24 h) is taken over; a live one conflicts.
            let inserted = sqlx::query(
                "INSERT INTO wharf_idempotency_keys (tenant_id, key, fingerprint, response)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                     response = EXCLUDED.response, created_at = now()
                 WHERE wharf_idempotency_keys.created_at <= now() - interval '24 hours'",
            )
            .bind(&job.tenant)
            .bind(&key.key)
            .bind(&key.fingerprint)
            .bind(sqlx::types::Json(response))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                drop(tx);
                let (fingerprint, stored) = self
                    .idempotency_lookup(&job.tenant, &key.key)
                    .await?
                    .ok_or_else(|| StoreError::corrupt("idempotency key vanished while it was being read"))?;
                return Ok(if fingerprint == key.fingerprint {
                    Idempotent::Repeat(stored)
                } else {
                    Idempotent::Mismatch
                });
            }
        }
        insert_job(&mut tx, &job).await?;
        tx.commit().await?;
        Ok(Idempotent::Fresh(()))
    }

    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<u64> {
        let mut total = 0;
        let mut tx = self.pool.begin().await?;
        let mut queues: Vec<String> = Vec::new();
        for chunk in jobs.chunks(BATCH) {
            let ids: Vec<Uuid> = chunk.iter().map(|j| j.id.0).collect();
            let tenants: Vec<&str> = chunk.iter().map(|j| j.tenant.as_str()).collect();
            let kinds: Vec<&str> = chunk.iter().map(|j| j.kind.as_str()).collect();
            let qs: Vec<&str> = chunk.iter().map(|j| j.queue.as_str()).collect();
            let payloads: Vec<String> = chunk.iter().map(|j| j.payload.to_string()).collect();
            let run_ats: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|j| j.run_at).collect();
            let tps: Vec<Option<&str>> = chunk.iter().map(|j| j.traceparent.as_deref()).collect();
            total += sqlx::query(
                "INSERT INTO wharf_jobs (id, tenant_id, kind, queue, state, payload, run_at, traceparent)
                 SELECT id, t, k, q, CASE WHEN r IS NULL OR r <= now() THEN 'queued' ELSE 'scheduled' END,
                        p::jsonb, COALESCE(r, now()), tp
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])
                      AS x(id, t, k, q, p, r, tp)",
            )
            .bind(&ids)
            .bind(&tenants)
            .bind(&kinds)
            .bind(&qs)
            .bind(&payloads)
            .bind(&run_ats)
            .bind(&tps)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            for q in qs {
                if !queues.iter().any(|x| x == q) {
                    queues.push(q.to_string());
                }
            }
        }
        for q in &queues {
            notify(&mut tx, q).await?;
        }
        tx.commit().await?;
        Ok(total)
    }

    async fn job(&self, tenant: &str, id: JobId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM wharf_jobs WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut job = job_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT attempt, worker, started_at, finished_at, error FROM wharf_job_attempts
             WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            job.attempts.push(AttemptRecord {
                attempt: r.try_get("attempt")?,
                worker: r.try_get("worker")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                error: r.try_get("error")?,
            });
        }
        Ok(Some(job))
    }

    async fn jobs(&self, tenant: &str, filter: &JobFilter, page: &PageRequest) -> Result<Page<JobRecord>> {
        let limit = page.limit.clamp(1, 1000) as i64;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM wharf_jobs
             WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) AND ($3::text IS NULL OR kind = $3)
               AND ($4::text IS NULL OR queue = $4)
               AND ($5::text IS NULL OR $5 = CASE WHEN state IN ('scheduled', 'retrying') AND run_at <= now()
                                                 THEN 'queued' ELSE state END)
             ORDER BY id DESC LIMIT $6"
        )))
        .bind(tenant)
        .bind(page.after.map(|j| j.0))
        .bind(&filter.kind)
        .bind(&filter.queue)
        .bind(filter.state.map(JobState::as_str))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetched(items, limit as usize))
    }

    async fn cancel(&self, tenant: &str, id: JobId) -> Result<std::result::Result<JobRecord, CancelRefused>> {
        let cancelled = sqlx::query(
            "UPDATE wharf_jobs SET state = 'cancelled', finished_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND id = $2 AND state IN ('scheduled', 'queued', 'retrying')",
        )
        .bind(tenant)
        .bind(id.0)
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
             WHERE tenant_id = $1 AND state = 'dead' AND ($2::uuid IS NULL OR id < $2) AND {}
             ORDER BY id DESC LIMIT $7",
            dead_filter_sql(3)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(page.after.map(|j| j.0))
            .bind(&filter.kind)
            .bind(filter.error.as_deref().map(like_pattern))
            .bind(filter.since)
            .bind(filter.until)
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM wharf_jobs WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
        )))
        .bind(tenant)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(Err(ReplayRefused::NotFound)) };
        let old = job_from_row(&row)?;
        if old.state != JobState::Dead {
            return Ok(Err(ReplayRefused::NotDead(old.state.to_string())));
        }
        let job = NewJob {
            id: new_id,
            tenant: old.tenant,
            kind: old.kind,
            queue: old.queue,
            payload: payload.unwrap_or(old.payload),
            run_at: None,
            traceparent: old.traceparent,
            replay_of: Some(id),
        };
        insert_job(&mut tx, &job).await?;
        sqlx::query("UPDATE wharf_jobs SET state = 'replayed', replayed_by = $2, updated_at = now() WHERE id = $1")
            .bind(id.0)
            .bind(new_id.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn replay_matching(&self, tenant: &str, filter: &DeadLetterFilter) -> Result<u64> {
        // Only letters dead before the call: jobs dying meanwhile (replays included) are not swept up.
        let cutoff = Utc::now();
        let mut total = 0u64;
        let select = format!(
            "SELECT id FROM wharf_jobs
             WHERE tenant_id = $1 AND state = 'dead' AND finished_at <= $2 AND {}
             ORDER BY id LIMIT $7 FOR UPDATE SKIP LOCKED",
            dead_filter_sql(3)
        );
        loop {
            let mut tx = self.pool.begin().await?;
            let old: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(select.clone()))
                .bind(tenant)
                .bind(cutoff)
                .bind(&filter.kind)
                .bind(filter.error.as_deref().map(like_pattern))
                .bind(filter.since)
                .bind(filter.until)
                .bind(BATCH as i64)
                .fetch_all(&mut *tx)
                .await?;
            if old.is_empty() {
                break;
            }
            let new: Vec<Uuid> = old.iter().map(|_| JobId::new().0).collect();
            let queues: Vec<String> = sqlx::query_scalar(
                "INSERT INTO wharf_jobs (id, tenant_id, kind, queue, state, payload, run_at, traceparent, replay_of)
                 SELECT x.new_id, j.tenant_id, j.kind, j.queue, 'queued', j.payload, now(), j.traceparent, j.id
                 FROM UNNEST($1::uuid[], $2::uuid[]) AS x(old_id, new_id) JOIN wharf_jobs j ON j.id = x.old_id
                 RETURNING queue",
            )
            .bind(&old)
            .bind(&new)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE wharf_jobs j SET state = 'replayed', replayed_by = x.new_id, updated_at = now()
                 FROM UNNEST($1::uuid[], $2::uuid[]) AS x(old_id, new_id) WHERE j.id = x.old_id",
            )
            .bind(&old)
            .bind(&new)
            .execute(&mut *tx)
            .await?;
            let mut seen: Vec<&str> = Vec::new();
            for q in &queues {
                if !seen.contains(&q.as_str()) {
                    notify(&mut tx, q).await?;
                    seen.push(q);
                }
            }
            tx.commit().await?;
            total += old.len() as u64;
            if old.len() < BATCH {
                break;
            }
        }
        Ok(total)
    }

    async fn discard(&self, tenant: &str, id: JobId) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE wharf_jobs SET state = 'discarded', updated_at = now()
             WHERE tenant_id = $1 AND id = $2 AND state = 'dead'",
        )
        .bind(tenant)
        .bind(id.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn queue_counts(&self, tenant: Option<&str>) -> Result<Vec<QueueCounts>> {
        // One branch per partial index (due, running, dead, finished) so each is read through it.
        let rows = sqlx::query(
            "SELECT queue, state, run_at > now() AS future, count(*) AS n FROM wharf_jobs
             WHERE state IN ('scheduled', 'queued', 'retrying') AND ($1::text IS NULL OR tenant_id = $1) GROUP BY 1, 2, 3
             UNION ALL
             SELECT queue, state, false, count(*) FROM wharf_jobs
             WHERE state = 'running' AND ($1::text IS NULL OR tenant_id = $1) GROUP BY 1, 2
             UNION ALL
             SELECT queue, state, false, count(*) FROM wharf_jobs
             WHERE state = 'dead' AND ($1::text IS NULL OR tenant_id = $1) GROUP BY 1, 2
             UNION ALL
             SELECT queue, 'done', false, count(*) FROM wharf_jobs
             WHERE state = 'succeeded' AND finished_at > now() - interval '1 minute'
               AND ($1::text IS NULL OR tenant_id = $1) GROUP BY 1
             ORDER BY 1",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get("queue")?, r.try_get("state")?, r.try_get("future")?, r.try_get("n")?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(super::fold_queue_counts(rows))
    }

    async fn idempotency_lookup(&self, tenant: &str, key: &str) -> Result<Option<(String, StoredResponse)>> {
        let row = sqlx::query(
            "SELECT fingerprint, response FROM wharf_idempotency_keys
             WHERE tenant_id = $1 AND key = $2 AND created_at > now() - interval '24 hours'",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let sqlx::types::Json(resp): sqlx::types::Json<StoredResponse> = r.try_get("response")?;
            Ok((r.try_get("fingerprint")?, resp))
        })
        .transpose()
    }

    async fn idempotency_save(&self, tenant: &str, key: &IdempotencyKey, response: &StoredResponse) -> Result<()> {
        sqlx::query(
            "INSERT INTO wharf_idempotency_keys (tenant_id, key, fingerprint, response) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                 response = EXCLUDED.response, created_at = now()
             WHERE wharf_idempotency_keys.created_at <= now() - interval '24 hours'",
        )
        .bind(tenant)
        .bind(&key.key)
        .bind(&key.fingerprint)
        .bind(sqlx::types::Json(response))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn register_worker(&self, worker: &str, queues: &[String]) -> Result<()> {
        sqlx::query("INSERT INTO wharf_workers (id, queues) VALUES ($1, $2)")
            .bind(worker)
            .bind(queues.join(","))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn heartbeat(&self, worker: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO wharf_workers (id, queues) VALUES ($1, '') ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn deregister_worker(&self, worker: &str) -> Result<()> {
        sqlx::query("DELETE FROM wharf_workers WHERE id = $1").bind(worker).execute(&self.pool).await?;
        Ok(())
    }

    async fn claim(&self, queue: &str, worker: &str, limit: u32, max_attempts: i32) -> Result<Vec<ClaimedJob>> {
        let rows = sqlx::query(
            "WITH due AS (
                SELECT id FROM wharf_jobs
                WHERE queue = $1 AND state IN ('scheduled', 'queued', 'retrying') AND run_at <= now()
                ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED
             )
             UPDATE wharf_jobs j SET state = 'running', attempt = j.attempt + 1, max_attempts = $4,
                    lease_owner = $2, started_at = now(), updated_at = now()
             FROM due WHERE j.id = due.id
             RETURNING j.id, j.tenant_id, j.kind, j.queue, j.payload::text AS payload, j.attempt,
                       j.run_at, j.created_at, j.traceparent",
        )
        .bind(queue)
        .bind(worker)
        .bind(limit as i64)
        .bind(max_attempts)
        .fetch_all(&self.pool)
        .await?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                Ok(ClaimedJob {
                    id: JobId(r.try_get("id")?),
                    tenant: r.try_get("tenant_id")?,
                    kind: r.try_get("kind")?,
                    queue: r.try_get("queue")?,
                    payload: r.try_get("payload")?,
                    attempt: r.try_get("attempt")?,
                    max_attempts,
                    run_at: r.try_get("run_at")?,
                    created_at: r.try_get("created_at")?,
                    traceparent: r.try_get("traceparent")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.run_at, j.id));
        Ok(jobs)
    }

    async fn complete(&self, worker: &str, completions: &[Completion]) -> Result<u64> {
        let mut ok = (Vec::new(), Vec::new(), Vec::new());
        let mut failed: [(Vec<Uuid>, Vec<i32>, Vec<String>, Vec<Option<DateTime<Utc>>>, Vec<DateTime<Utc>>); 2] =
            Default::default();
        let mut returned = (Vec::new(), Vec::new());
        for c in completions {
            match &c.outcome {
                Outcome::Succeeded { result } => {
                    ok.0.push(c.id.0);
                    ok.1.push(c.attempt);
                    ok.2.push(result.as_ref().map(|r| r.to_string()));
                }
                Outcome::Retry { error, run_at } => {
                    let f = &mut failed[0];
                    f.0.push(c.id.0);
                    f.1.push(c.attempt);
                    f.2.push(error.clone());
                    f.3.push(Some(*run_at));
                    f.4.push(c.started_at);
                }
                Outcome::Dead { error } => {
                    let f = &mut failed[1];
                    f.0.push(c.id.0);
                    f.1.push(c.attempt);
                    f.2.push(error.clone());
                    f.3.push(None);
                    f.4.push(c.started_at);
                }
                Outcome::Returned => {
                    returned.0.push(c.id.0);
                    returned.1.push(c.attempt);
                }
            }
        }
        // Guards compare the lease holder with IS NOT DISTINCT FROM: an `=` lets the planner pick
        // the partial lease_owner index, which after a drain is full of dead entries of this
        // worker's finished jobs (the apalis ack problem); by primary key each row costs the same.
        let mut tx = self.pool.begin().await?;
        let mut applied = 0;
        if !ok.0.is_empty() {
            applied += sqlx::query(
                "UPDATE wharf_jobs j SET state = 'succeeded', finished_at = now(), updated_at = now(),
                        lease_owner = NULL, result = x.r::jsonb
                 FROM UNNEST($1::uuid[], $2::int[], $3::text[]) AS x(id, attempt, r)
                 WHERE j.id = x.id AND j.state = 'running' AND j.lease_owner IS NOT DISTINCT FROM $4 AND j.attempt = x.attempt",
            )
            .bind(&ok.0)
            .bind(&ok.1)
            .bind(&ok.2)
            .bind(worker)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        for (i, f) in failed.iter().enumerate() {
            if f.0.is_empty() {
                continue;
            }
            let (state, finished) = if i == 0 { ("retrying", "NULL") } else { ("dead", "now()") };
            applied += sqlx::query(AssertSqlSafe(format!(
                "WITH upd AS (
                    UPDATE wharf_jobs j SET state = '{state}', run_at = COALESCE(x.run_at, j.run_at),
                           last_error = x.err, lease_owner = NULL, finished_at = {finished}, updated_at = now()
                    FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::timestamptz[])
                         AS x(id, attempt, err, run_at, started)
                    WHERE j.id = x.id AND j.state = 'running' AND j.lease_owner IS NOT DISTINCT FROM $6 AND j.attempt = x.attempt
                    RETURNING j.id, j.attempt, x.err, x.started
                 )
                 INSERT INTO wharf_job_attempts (job_id, attempt, worker, started_at, finished_at, error)
                 SELECT id, attempt, $6, started, now(), err FROM upd ON CONFLICT DO NOTHING"
            )))
            .bind(&f.0)
            .bind(&f.1)
            .bind(&f.2)
            .bind(&f.3)
            .bind(&f.4)
            .bind(worker)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if !returned.0.is_empty() {
            applied += sqlx::query(
                "UPDATE wharf_jobs j SET state = 'queued', attempt = j.attempt - 1, lease_owner = NULL,
                        started_at = NULL, updated_at = now()
                 FROM UNNEST($1::uuid[], $2::int[]) AS x(id, attempt)
                 WHERE j.id = x.id AND j.state = 'running' AND j.lease_owner IS NOT DISTINCT FROM $3 AND j.attempt = x.attempt",
            )
            .bind(&returned.0)
            .bind(&returned.1)
            .bind(worker)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let queues: Vec<String> = sqlx::query_scalar("SELECT DISTINCT queue FROM wharf_jobs WHERE id = ANY($1)")
                .bind(&returned.0)
                .fetch_all(&mut *tx)
                .await?;
            for q in &queues {
                notify(&mut tx, q).await?;
            }
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn orphaned(&self, lease: Duration, limit: u32) -> Result<Vec<OrphanedJob>> {
        let rows = sqlx::query(
            "SELECT j.id, j.queue, j.kind, j.attempt, COALESCE(j.max_attempts, 1) AS max_attempts,
                    j.lease_owner, COALESCE(j.started_at, j.updated_at) AS started_at
             FROM wharf_jobs j
             WHERE j.state = 'running' AND NOT EXISTS (
                 SELECT 1 FROM wharf_workers w
                 WHERE w.id = j.lease_owner AND w.heartbeat_at > now() - make_interval(secs => $1))
             LIMIT $2",
        )
        .bind(lease.as_secs_f64())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OrphanedJob {
                    id: JobId(r.try_get("id")?),
                    queue: r.try_get("queue")?,
                    kind: r.try_get("kind")?,
                    attempt: r.try_get("attempt")?,
                    max_attempts: r.try_get("max_attempts")?,
                    worker: r.try_get::<Option<String>, _>("lease_owner")?.unwrap_or_default(),
                    started_at: r.try_get("started_at")?,
                })
            })
            .collect()
    }

    async fn prune_workers(&self, older_than: Duration) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM wharf_workers w WHERE heartbeat_at < now() - make_interval(secs => $1)
             AND NOT EXISTS (SELECT 1 FROM wharf_jobs j WHERE j.state = 'running' AND j.lease_owner = w.id)",
        )
        .bind(older_than.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn wakeups(&self) -> Result<Arc<Wakeups>> {
        let pool = self.pool.clone();
        self.wakeups
            .get_or_try_init(|| async move {
                let wakeups = Arc::new(Wakeups::default());
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(NOTIFY_CHANNEL).await?;
                let w = Arc::downgrade(&wakeups);
                // Ends when the pool is closed (its connection would otherwise keep
                // `PgPool::close` waiting forever) or the store is gone.
                let closed = pool.close_event();
                tokio::spawn(async move {
                    tokio::pin!(closed);
                    loop {
                        // `recv` reconnects by itself after a lost connection.
                        let received = tokio::select! {
                            r = listener.recv() => r,
                            _ = &mut closed => return,
                        };
                        match received {
                            Ok(n) => match w.upgrade() {
                                Some(w) => w.notify(n.payload()),
                                None => return,
                            },
                            Err(sqlx::Error::PoolClosed) => return,
                            Err(_) if w.strong_count() == 0 => return,
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection failed; polling covers the gap");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                });
                Ok::<_, StoreError>(wakeups)
            })
            .await
            .cloned()
    }

    async fn create_api_key(&self, tenant: &str, scopes: &[Scope], key: &NewApiKey) -> Result<()> {
        let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        sqlx::query("INSERT INTO wharf_api_keys (id, key_hash, tenant_id, scopes) VALUES ($1, $2, $3, $4)")
            .bind(&key.id)
            .bind(&key.hash)
            .bind(tenant)
            .bind(scopes.join(","))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row =
            sqlx::query("SELECT id, tenant_id, scopes FROM wharf_api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
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
