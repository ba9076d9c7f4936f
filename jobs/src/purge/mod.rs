//! Retention purges (PRODUCT §4), run by the `purge` pool. Each target deletes only what is
//! strictly older than its retention, in bounded batches (one short transaction per batch, no
//! long locks), and reports what it removed:
//!
//! | target | removes | after |
//! |---|---|---|
//! | `jobs` | `succeeded`/`cancelled` jobs by `finished_at`, their attempts; schedule ticks, DLQ events, and email ledger rows whose jobs are gone | 30 d |
//! | `dead_letters` | `replayed`/`discarded` jobs by `updated_at`, their attempts | 30 d |
//! | `webhook_attempts` | `wharf_webhook_attempts` and `wharf_webhook_events` by `created_at` | 30 d |
//! | `idempotency_keys` | `wharf_idempotency_keys` by `created_at` | 24 h |
//! | `objects` | objects under `tenants/*/` by last modification | `OBJECT_RETENTION_DAYS` (30) |
//! | `payload_blobs` | `system/payloads/*` that no job references, older than an hour | — |
//!
//! Large-payload blobs of purged jobs are removed with them (unless a replay still refers to
//! the blob); `payload_blobs` catches the rest.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Row};

use crate::{
    config::{ConfigError, Env},
    error::StoreError,
    kinds::purge::PurgeTarget,
    objects::{ObjectStore, offload::PAYLOAD_PREFIX},
    store::Db,
};

const DAY: u64 = 24 * 3600;

/// How long each kind of data is kept, and the batch size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub jobs: Duration,
    pub dead_letters: Duration,
    pub webhook_attempts: Duration,
    pub idempotency_keys: Duration,
    pub objects: Duration,
    /// Unreferenced payload blobs younger than this are left alone (their job may be being
    /// inserted right now: the blob is written first).
    pub payload_blob_min_age: Duration,
    /// Rows (or objects) per statement, at most 1000.
    pub batch: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            jobs: Duration::from_secs(30 * DAY),
            dead_letters: Duration::from_secs(30 * DAY),
            webhook_attempts: Duration::from_secs(30 * DAY),
            idempotency_keys: Duration::from_secs(DAY),
            objects: Duration::from_secs(30 * DAY),
            payload_blob_min_age: Duration::from_secs(3600),
            batch: 1000,
        }
    }
}

impl Retention {
    pub fn from_env(env: &Env) -> std::result::Result<Retention, ConfigError> {
        let d = Retention::default();
        let objects_days = env.parse_or::<u64>("OBJECT_RETENTION_DAYS", 30)?;
        if objects_days == 0 {
            return Err(ConfigError::new("OBJECT_RETENTION_DAYS", "must be at least 1"));
        }
        let r = Retention {
            jobs: env.secs_or("PURGE_JOBS_AFTER_SECONDS", d.jobs)?,
            dead_letters: env.secs_or("PURGE_DEAD_LETTERS_AFTER_SECONDS", d.dead_letters)?,
            webhook_attempts: env.secs_or("PURGE_WEBHOOK_ATTEMPTS_AFTER_SECONDS", d.webhook_attempts)?,
            idempotency_keys: env.secs_or("PURGE_IDEMPOTENCY_KEYS_AFTER_SECONDS", d.idempotency_keys)?,
            objects: env.secs_or("PURGE_OBJECTS_AFTER_SECONDS", Duration::from_secs(objects_days * DAY))?,
            payload_blob_min_age: env.secs_or("PURGE_PAYLOAD_BLOBS_MIN_AGE_SECONDS", d.payload_blob_min_age)?,
            batch: env.parse_or("PURGE_BATCH_SIZE", d.batch)?,
        };
        if r.idempotency_keys < d.idempotency_keys {
            return Err(ConfigError::new(
                "PURGE_IDEMPOTENCY_KEYS_AFTER_SECONDS",
                "must be at least 86400: keys are honoured for 24 h",
            ));
        }
        if !(1..=1000).contains(&r.batch) {
            return Err(ConfigError::new("PURGE_BATCH_SIZE", "must be between 1 and 1000"));
        }
        Ok(r)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("object storage: {0}")]
    Objects(#[from] crate::objects::ObjectError),
}

impl From<sqlx::Error> for PurgeError {
    fn from(e: sqlx::Error) -> Self {
        PurgeError::Store(StoreError::Database(e))
    }
}

type Result<T> = std::result::Result<T, PurgeError>;

pub struct Purger {
    db: Db,
    objects: Arc<dyn ObjectStore>,
    retention: Retention,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn cutoff(age: Duration) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
}

/// `state IN (…) AND <age column> < cutoff` for the two job purges.
fn job_condition(target: PurgeTarget) -> (&'static str, &'static str) {
    match target {
        PurgeTarget::DeadLetters => ("state IN ('replayed', 'discarded')", "updated_at"),
        _ => ("state IN ('succeeded', 'cancelled')", "finished_at"),
    }
}

const PG_BLOB_KEY: &str = "payload -> 'wharf_payload_ref' ->> 'key'";
const SQLITE_IS_REF: &str = "payload LIKE '{\"wharf_payload_ref\":%'";
const SQLITE_BLOB_KEY: &str = "json_extract(payload, '$.wharf_payload_ref.key')";

impl Purger {
    pub fn new(db: Db, objects: Arc<dyn ObjectStore>, retention: Retention) -> Self {
        Purger { db, objects, retention }
    }

    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// Runs one target; the report is the job's result.
    pub async fn run(&self, target: PurgeTarget) -> Result<Value> {
        let started = std::time::Instant::now();
        let mut report = match target {
            PurgeTarget::Jobs | PurgeTarget::DeadLetters => self.jobs(target).await?,
            PurgeTarget::WebhookAttempts => self.webhook_attempts().await?,
            PurgeTarget::IdempotencyKeys => {
                let before = cutoff(self.retention.idempotency_keys);
                let n = self.by_age("wharf_idempotency_keys", "created_at", before).await?;
                json!({ "older_than": before, "removed": { "idempotency_keys": n } })
            }
            PurgeTarget::Objects => self.objects().await?,
            PurgeTarget::PayloadBlobs => self.payload_blobs().await?,
        };
        report["target"] = json!(target.as_str());
        report["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
        if let Some(removed) = report["removed"].as_object() {
            for (what, n) in removed {
                metrics::counter!("wharf_purged_total", "what" => what.clone()).increment(n.as_u64().unwrap_or(0));
            }
        }
        tracing::info!(target: "wharf::purge", purge = target.as_str(), report = %report, "purge finished");
        Ok(report)
    }

    /// Finished jobs or settled dead letters, with their attempts, batch by batch.
    async fn jobs(&self, target: PurgeTarget) -> Result<Value> {
        let age = if target == PurgeTarget::DeadLetters { self.retention.dead_letters } else { self.retention.jobs };
        let before = cutoff(age);
        let (states, col) = job_condition(target);
        let limit = self.retention.batch as i64;
        let (mut jobs, mut attempts, mut batches) = (0u64, 0u64, 0u64);
        let mut blobs = BTreeSet::new();
        loop {
            let (n, a, keys) = match &self.db {
                Db::Postgres(pool) => {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "WITH gone AS (
                            DELETE FROM wharf_jobs WHERE id IN (
                                SELECT id FROM wharf_jobs WHERE {states} AND {col} < $1
                                ORDER BY {col} LIMIT $2 FOR UPDATE SKIP LOCKED)
                            RETURNING id, {PG_BLOB_KEY} AS blob
                         ), attempts AS (
                            DELETE FROM wharf_job_attempts a USING gone WHERE a.job_id = gone.id RETURNING 1
                         )
                         SELECT (SELECT count(*) FROM gone) AS jobs, (SELECT count(*) FROM attempts) AS attempts,
                                ARRAY(SELECT blob FROM gone WHERE blob IS NOT NULL) AS blobs"
                    )))
                    .bind(before)
                    .bind(limit)
                    .fetch_one(pool)
                    .await?;
                    (
                        row.try_get::<i64, _>("jobs")?,
                        row.try_get::<i64, _>("attempts")?,
                        row.try_get::<Vec<String>, _>("blobs")?,
                    )
                }
                Db::Sqlite(pool) => {
                    let pick =
                        format!("SELECT id FROM wharf_jobs WHERE {states} AND {col} < ?1 ORDER BY {col} LIMIT ?2");
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    let a =
                        sqlx::query(AssertSqlSafe(format!("DELETE FROM wharf_job_attempts WHERE job_id IN ({pick})")))
                            .bind(ms(before))
                            .bind(limit)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "DELETE FROM wharf_jobs WHERE id IN ({pick})
                         RETURNING CASE WHEN {SQLITE_IS_REF} THEN {SQLITE_BLOB_KEY} END AS blob"
                    )))
                    .bind(ms(before))
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    let keys =
                        rows.iter().filter_map(|r| r.try_get::<Option<String>, _>("blob").ok().flatten()).collect();
                    (rows.len() as i64, a as i64, keys)
                }
            };
            jobs += n as u64;
            attempts += a as u64;
            batches += 1;
            blobs.extend(keys);
            if n < limit {
                break;
            }
        }
        let blobs_removed = self.delete_unreferenced(blobs.into_iter().collect()).await?;
        let mut removed = json!({ "jobs": jobs, "attempts": attempts, "payload_blobs": blobs_removed });
        if target == PurgeTarget::Jobs {
            // wharf's own bookkeeping ages with the jobs.
            removed["schedule_ticks"] = json!(self.by_age("wharf_schedule_ticks", "tick_at", before).await?);
            removed["dlq_events"] = json!(self.by_age("wharf_dlq_events", "created_at", before).await?);
            // A ledger row stops a re-send while its email's job can still run (retry or
            // replay): it goes only once no job of that identity is left.
            removed["email_sends"] = json!(
                self.by_age_if(
                    "wharf_email_sends",
                    "accepted_at",
                    before,
                    "NOT EXISTS (SELECT 1 FROM wharf_jobs j
                                 WHERE j.id IN (wharf_email_sends.identity, wharf_email_sends.job_id))",
                )
                .await?
            );
        }
        Ok(json!({ "older_than": before, "batches": batches, "removed": removed }))
    }

    async fn webhook_attempts(&self) -> Result<Value> {
        let before = cutoff(self.retention.webhook_attempts);
        if !self.table_exists("wharf_webhook_attempts").await? {
            return Ok(
                json!({ "older_than": before, "removed": { "webhook_attempts": 0 }, "note": "no webhook attempt log" }),
            );
        }
        let n = self.by_age("wharf_webhook_attempts", "created_at", before).await?;
        // Events (`GET /v1/events/{id}`, and the per-tenant uniqueness of event ids) age with
        // their attempt logs; a delivery's job carries its own copy of the event.
        let events = self.by_age("wharf_webhook_events", "created_at", before).await?;
        Ok(json!({ "older_than": before, "removed": { "webhook_attempts": n, "webhook_events": events } }))
    }

    async fn table_exists(&self, table: &str) -> Result<bool> {
        Ok(match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(table).fetch_one(pool).await?
            }
            Db::Sqlite(pool) => {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
                    .bind(table)
                    .fetch_one(pool)
                    .await?;
                n > 0
            }
        })
    }

    /// Deletes rows of `table` whose `col` is before `before`, a batch per statement.
    async fn by_age(&self, table: &str, col: &str, before: DateTime<Utc>) -> Result<u64> {
        self.by_age_if(table, col, before, "TRUE").await
    }

    /// [`by_age`](Self::by_age) for the rows that also meet `condition` (SQL valid on both
    /// backends; it may refer to the row as `{table}.column`).
    async fn by_age_if(&self, table: &str, col: &str, before: DateTime<Utc>, condition: &str) -> Result<u64> {
        let limit = self.retention.batch as i64;
        let mut total = 0u64;
        loop {
            let n = match &self.db {
                Db::Postgres(pool) => sqlx::query(AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM {table} WHERE {col} < $1 AND {condition} LIMIT $2))
                     AND {col} < $1"
                )))
                .bind(before)
                .bind(limit)
                .execute(pool)
                .await?
                .rows_affected(),
                Db::Sqlite(pool) => {
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    let n = sqlx::query(AssertSqlSafe(format!(
                        "DELETE FROM {table} WHERE rowid IN (
                             SELECT rowid FROM {table} WHERE {col} < ?1 AND {condition} LIMIT ?2)"
                    )))
                    .bind(ms(before))
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    tx.commit().await?;
                    n
                }
            };
            total += n;
            if (n as i64) < limit {
                return Ok(total);
            }
        }
    }

    /// Objects under `tenants/*/` last modified before the retention.
    async fn objects(&self) -> Result<Value> {
        let before = cutoff(self.retention.objects);
        let (mut scanned, mut removed, mut bytes) = (0u64, 0u64, 0u64);
        let mut token = None;
        loop {
            let page = self.objects.list("tenants/", self.retention.batch, token).await?;
            scanned += page.objects.len() as u64;
            let old: Vec<_> = page
                .objects
                .iter()
                // Only keys inside a tenant's prefix: `tenants/{id}/…`.
                .filter(|o| o.last_modified < before && o.key.splitn(3, '/').nth(2).is_some_and(|r| !r.is_empty()))
                .collect();
            bytes += old.iter().map(|o| o.size).sum::<u64>();
            let keys: Vec<String> = old.into_iter().map(|o| o.key.clone()).collect();
            if !keys.is_empty() {
                removed += self.objects.delete(&keys).await?;
            }
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(json!({ "older_than": before, "scanned": scanned, "removed": { "objects": removed }, "bytes": bytes }))
    }

    /// `system/payloads/*` blobs that no job row references any more.
    async fn payload_blobs(&self) -> Result<Value> {
        let before = cutoff(self.retention.payload_blob_min_age);
        let (mut scanned, mut removed) = (0u64, 0u64);
        let mut token = None;
        loop {
            let page = self.objects.list(PAYLOAD_PREFIX, self.retention.batch, token).await?;
            scanned += page.objects.len() as u64;
            let old: Vec<String> =
                page.objects.iter().filter(|o| o.last_modified < before).map(|o| o.key.clone()).collect();
            removed += self.delete_unreferenced(old).await?;
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(json!({ "not_younger_than": before, "scanned": scanned, "removed": { "payload_blobs": removed } }))
    }

    /// Deletes the blobs among `keys` that no job references; returns how many.
    async fn delete_unreferenced(&self, keys: Vec<String>) -> Result<u64> {
        let mut removed = 0;
        for chunk in keys.chunks(self.retention.batch as usize) {
            let live = self.referenced(chunk).await?;
            let dead: Vec<String> = chunk.iter().filter(|k| !live.contains(*k)).cloned().collect();
            if !dead.is_empty() {
                removed += self.objects.delete(&dead).await?;
            }
        }
        Ok(removed)
    }

    async fn referenced(&self, keys: &[String]) -> Result<BTreeSet<String>> {
        if keys.is_empty() {
            return Ok(BTreeSet::new());
        }
        let found: Vec<String> = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT DISTINCT {PG_BLOB_KEY} FROM wharf_jobs
                     WHERE payload ? 'wharf_payload_ref' AND {PG_BLOB_KEY} = ANY($1)"
                )))
                .bind(keys)
                .fetch_all(pool)
                .await?
            }
            Db::Sqlite(pool) => {
                let marks = vec!["?"; keys.len()].join(", ");
                let mut q = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT DISTINCT {SQLITE_BLOB_KEY} FROM wharf_jobs WHERE {SQLITE_IS_REF} AND {SQLITE_BLOB_KEY} IN ({marks})"
                )));
                for k in keys {
                    q = q.bind(k);
                }
                q.fetch_all(pool).await?
            }
        };
        Ok(found.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_defaults_follow_the_product_and_bad_values_name_their_variable() {
        let r = Retention::from_env(&Env::default()).unwrap();
        assert_eq!(r, Retention::default());
        assert_eq!(r.idempotency_keys, Duration::from_secs(86400));
        assert_eq!(r.objects, Duration::from_secs(30 * 86400));
        let r = Retention::from_env(&Env::from_pairs([("OBJECT_RETENTION_DAYS", "7")])).unwrap();
        assert_eq!(r.objects, Duration::from_secs(7 * 86400));
        for (var, val) in [
            ("OBJECT_RETENTION_DAYS", "0"),
            ("PURGE_BATCH_SIZE", "5000"),
            ("PURGE_IDEMPOTENCY_KEYS_AFTER_SECONDS", "60"),
            ("PURGE_JOBS_AFTER_SECONDS", "soon"),
        ] {
            assert_eq!(Retention::from_env(&Env::from_pairs([(var, val)])).unwrap_err().var, var);
        }
    }
}
