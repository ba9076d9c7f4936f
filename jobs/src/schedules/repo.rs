//! The scheduler's tables: registered schedules and the (schedule, tick) claims. Firing a tick
//! inserts its claim row and, only if that insert won, the job — in one transaction, so any
//! number of replicas fire each tick exactly once and a crash cannot leave one without the other.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::{Schedule, ScheduleSet};
use crate::{
    error::StoreError,
    job::JobId,
    store::{Db, Result, Store, Wakeups},
};

/// What claiming a tick came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickClaim {
    /// This call fired the tick: the job was enqueued.
    Fired(JobId),
    /// This call recorded the tick as skipped (too late).
    Skipped,
    /// The tick was already claimed (another replica, or before a restart).
    Taken,
}

/// A registered schedule with what it last did.
#[derive(Debug, Clone)]
pub struct ScheduleStatus {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub kind: String,
    pub queue: String,
    pub tenant: String,
    pub enabled: bool,
    pub updated_at: DateTime<Utc>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_job_id: Option<JobId>,
    pub skipped_ticks: i64,
    pub last_skipped_at: Option<DateTime<Utc>>,
}

/// One claimed tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickRow {
    pub tick_at: DateTime<Utc>,
    pub status: String,
    pub job_id: Option<JobId>,
    pub claimed_by: String,
}

pub struct ScheduleRepo {
    db: Db,
    wakeups: Option<Arc<Wakeups>>,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

fn parse_id(s: Option<String>) -> Result<Option<JobId>> {
    s.map(|s| s.parse().map_err(|_| StoreError::Corrupt(format!("bad job id `{s}`")))).transpose()
}

/// The job of a fired tick, inserted with the columns `store::*::insert_job` sets for a job due
/// now (`queued`, `run_at` = now).
const PG_INSERT_JOB: &str = "INSERT INTO wharf_jobs (id, tenant_id, kind, queue, state, payload, run_at)
     VALUES ($1, $2, $3, $4, 'queued', $5, now())";
const SQLITE_INSERT_JOB: &str =
    "INSERT INTO wharf_jobs (id, tenant_id, kind, queue, state, payload, run_at, created_at, updated_at)
     VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)";
/// The channel `PostgresStore` listens on for new jobs.
const NOTIFY_CHANNEL: &str = "wharf_jobs";

impl ScheduleRepo {
    pub fn new(store: &dyn Store) -> Self {
        ScheduleRepo { db: store.db(), wakeups: store.local_wakeups() }
    }

    /// Records the set this scheduler runs (what `GET /v1/schedules` lists); schedules no longer
    /// configured are dropped. Fire history columns are kept.
    pub async fn register(&self, set: &ScheduleSet) -> Result<()> {
        let names: Vec<String> = set.schedules.iter().map(|s| s.name.clone()).collect();
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for s in &set.schedules {
                    sqlx::query(
                        "INSERT INTO wharf_schedules (name, cron, timezone, kind, queue, tenant_id, payload, enabled)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
                             kind = EXCLUDED.kind, queue = EXCLUDED.queue, tenant_id = EXCLUDED.tenant_id,
                             payload = EXCLUDED.payload, enabled = EXCLUDED.enabled, updated_at = now()",
                    )
                    .bind(&s.name)
                    .bind(&s.cron)
                    .bind(s.timezone.name())
                    .bind(&s.kind)
                    .bind(&s.queue)
                    .bind(&s.tenant)
                    .bind(&s.payload)
                    .bind(s.enabled)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query("DELETE FROM wharf_schedules WHERE name <> ALL($1)").bind(&names).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Db::Sqlite(pool) => {
                let now = ms(Utc::now());
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                for s in &set.schedules {
                    sqlx::query(
                        "INSERT INTO wharf_schedules (name, cron, timezone, kind, queue, tenant_id, payload, enabled,
                                                      updated_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
                             kind = excluded.kind, queue = excluded.queue, tenant_id = excluded.tenant_id,
                             payload = excluded.payload, enabled = excluded.enabled, updated_at = excluded.updated_at",
                    )
                    .bind(&s.name)
                    .bind(&s.cron)
                    .bind(s.timezone.name())
                    .bind(&s.kind)
                    .bind(&s.queue)
                    .bind(&s.tenant)
                    .bind(s.payload.to_string())
                    .bind(s.enabled)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                let marks = vec!["?"; names.len().max(1)].join(", ");
                let mut q =
                    sqlx::query(AssertSqlSafe(format!("DELETE FROM wharf_schedules WHERE name NOT IN ({marks})")));
                if names.is_empty() {
                    q = q.bind("");
                }
                for n in &names {
                    q = q.bind(n);
                }
                q.execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// The latest claimed tick of `schedule` (fired or skipped).
    pub async fn last_tick(&self, schedule: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT max(tick_at) FROM wharf_schedule_ticks WHERE schedule = $1")
                    .bind(schedule)
                    .fetch_one(pool)
                    .await?
            }
            Db::Sqlite(pool) => {
                let v: Option<i64> =
                    sqlx::query_scalar("SELECT max(tick_at) FROM wharf_schedule_ticks WHERE schedule = ?")
                        .bind(schedule)
                        .fetch_one(pool)
                        .await?;
                v.map(from_ms)
            }
        })
    }

    /// Claims `tick` of `s` and enqueues its job, atomically; `Taken` if the tick was claimed before.
    pub async fn fire(&self, s: &Schedule, tick: DateTime<Utc>, replica: &str) -> Result<TickClaim> {
        let id = JobId::new();
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let won = sqlx::query(
                    "INSERT INTO wharf_schedule_ticks (schedule, tick_at, status, job_id, claimed_by)
                     VALUES ($1, $2, 'fired', $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(&s.name)
                .bind(tick)
                .bind(id.0)
                .bind(replica)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !won {
                    return Ok(TickClaim::Taken);
                }
                sqlx::query(PG_INSERT_JOB)
                    .bind(id.0)
                    .bind(&s.tenant)
                    .bind(&s.kind)
                    .bind(&s.queue)
                    .bind(&s.payload)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE wharf_schedules SET last_fired_at = $2, last_job_id = $3
                     WHERE name = $1 AND (last_fired_at IS NULL OR last_fired_at < $2)",
                )
                .bind(&s.name)
                .bind(tick)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
                sqlx::query("SELECT pg_notify($1, $2)").bind(NOTIFY_CHANNEL).bind(&s.queue).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Db::Sqlite(pool) => {
                let now = ms(Utc::now());
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let won = sqlx::query(
                    "INSERT INTO wharf_schedule_ticks (schedule, tick_at, status, job_id, claimed_by, claimed_at)
                     VALUES (?, ?, 'fired', ?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(&s.name)
                .bind(ms(tick))
                .bind(id.to_string())
                .bind(replica)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !won {
                    return Ok(TickClaim::Taken);
                }
                sqlx::query(SQLITE_INSERT_JOB)
                    .bind(id.to_string())
                    .bind(&s.tenant)
                    .bind(&s.kind)
                    .bind(&s.queue)
                    .bind(s.payload.to_string())
                    .bind(now)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE wharf_schedules SET last_fired_at = ?2, last_job_id = ?3
                     WHERE name = ?1 AND (last_fired_at IS NULL OR last_fired_at < ?2)",
                )
                .bind(&s.name)
                .bind(ms(tick))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                if let Some(w) = &self.wakeups {
                    w.notify(&s.queue);
                }
            }
        }
        Ok(TickClaim::Fired(id))
    }

    /// Claims `tick` of `s` as skipped (found too late); `Taken` if it was claimed before.
    pub async fn skip(&self, s: &Schedule, tick: DateTime<Utc>, replica: &str) -> Result<TickClaim> {
        let won = match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let won = sqlx::query(
                    "INSERT INTO wharf_schedule_ticks (schedule, tick_at, status, claimed_by)
                     VALUES ($1, $2, 'skipped', $3) ON CONFLICT DO NOTHING",
                )
                .bind(&s.name)
                .bind(tick)
                .bind(replica)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if won {
                    sqlx::query(
                        "UPDATE wharf_schedules SET skipped_ticks = skipped_ticks + 1,
                             last_skipped_at = GREATEST(last_skipped_at, $2) WHERE name = $1",
                    )
                    .bind(&s.name)
                    .bind(tick)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                }
                won
            }
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let won = sqlx::query(
                    "INSERT INTO wharf_schedule_ticks (schedule, tick_at, status, claimed_by, claimed_at)
                     VALUES (?, ?, 'skipped', ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(&s.name)
                .bind(ms(tick))
                .bind(replica)
                .bind(ms(Utc::now()))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if won {
                    sqlx::query(
                        "UPDATE wharf_schedules SET skipped_ticks = skipped_ticks + 1,
                             last_skipped_at = max(COALESCE(last_skipped_at, 0), ?2) WHERE name = ?1",
                    )
                    .bind(&s.name)
                    .bind(ms(tick))
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                }
                won
            }
        };
        Ok(if won { TickClaim::Skipped } else { TickClaim::Taken })
    }

    /// Every registered schedule, by name.
    pub async fn list(&self) -> Result<Vec<ScheduleStatus>> {
        const COLS: &str = "name, cron, timezone, kind, queue, tenant_id, enabled, updated_at, last_fired_at, \
                            last_job_id, skipped_ticks, last_skipped_at";
        let sql = format!("SELECT {COLS} FROM wharf_schedules ORDER BY name");
        match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?;
                rows.iter()
                    .map(|r| {
                        Ok(ScheduleStatus {
                            name: r.try_get("name")?,
                            cron: r.try_get("cron")?,
                            timezone: r.try_get("timezone")?,
                            kind: r.try_get("kind")?,
                            queue: r.try_get("queue")?,
                            tenant: r.try_get("tenant_id")?,
                            enabled: r.try_get("enabled")?,
                            updated_at: r.try_get("updated_at")?,
                            last_fired_at: r.try_get("last_fired_at")?,
                            last_job_id: r.try_get::<Option<Uuid>, _>("last_job_id")?.map(JobId),
                            skipped_ticks: r.try_get("skipped_ticks")?,
                            last_skipped_at: r.try_get("last_skipped_at")?,
                        })
                    })
                    .collect()
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?;
                rows.iter()
                    .map(|r| {
                        Ok(ScheduleStatus {
                            name: r.try_get("name")?,
                            cron: r.try_get("cron")?,
                            timezone: r.try_get("timezone")?,
                            kind: r.try_get("kind")?,
                            queue: r.try_get("queue")?,
                            tenant: r.try_get("tenant_id")?,
                            enabled: r.try_get("enabled")?,
                            updated_at: from_ms(r.try_get("updated_at")?),
                            last_fired_at: r.try_get::<Option<i64>, _>("last_fired_at")?.map(from_ms),
                            last_job_id: parse_id(r.try_get("last_job_id")?)?,
                            skipped_ticks: r.try_get("skipped_ticks")?,
                            last_skipped_at: r.try_get::<Option<i64>, _>("last_skipped_at")?.map(from_ms),
                        })
                    })
                    .collect()
            }
        }
    }

    /// Claimed ticks of `schedule`, oldest first (operators and tests).
    pub async fn ticks(&self, schedule: &str) -> Result<Vec<TickRow>> {
        match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT tick_at, status, job_id, claimed_by FROM wharf_schedule_ticks
                     WHERE schedule = $1 ORDER BY tick_at",
                )
                .bind(schedule)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(TickRow {
                            tick_at: r.try_get("tick_at")?,
                            status: r.try_get("status")?,
                            job_id: r.try_get::<Option<Uuid>, _>("job_id")?.map(JobId),
                            claimed_by: r.try_get("claimed_by")?,
                        })
                    })
                    .collect()
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT tick_at, status, job_id, claimed_by FROM wharf_schedule_ticks
                     WHERE schedule = ? ORDER BY tick_at",
                )
                .bind(schedule)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(TickRow {
                            tick_at: from_ms(r.try_get("tick_at")?),
                            status: r.try_get("status")?,
                            job_id: parse_id(r.try_get("job_id")?)?,
                            claimed_by: r.try_get("claimed_by")?,
                        })
                    })
                    .collect()
            }
        }
    }
}
