//! The SQL of webhooks: endpoints, events and the attempt log, on PostgreSQL and SQLite.
//! Every read and write is tenant-scoped except those the delivery worker makes by endpoint id
//! after loading the endpoint for the job's own tenant.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Row, postgres::PgRow, sqlite::SqliteRow, types::Json};
use uuid::Uuid;

use crate::{JobId, StoreError, store::Db};

type Result<T> = std::result::Result<T, StoreError>;

/// A new endpoint; its secret is already encrypted.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub id: Uuid,
    pub tenant: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub timeout_ms: u32,
    pub max_concurrency: u32,
    pub headers: BTreeMap<String, String>,
    pub secret_enc: String,
}

/// An endpoint as stored. The secrets are ciphertexts.
#[derive(Debug, Clone)]
pub struct EndpointRecord {
    pub id: Uuid,
    pub tenant: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub timeout_ms: u32,
    pub max_concurrency: u32,
    pub headers: BTreeMap<String, String>,
    pub secret_enc: String,
    pub previous_secret_enc: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub first_failure_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub timeout_ms: Option<u32>,
    pub max_concurrency: Option<u32>,
    pub headers: Option<BTreeMap<String, String>>,
}

/// One delivery job made for an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub endpoint_id: Uuid,
    pub job_id: JobId,
}

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub tenant: String,
    pub id: String,
    pub event_type: String,
    pub deliveries: Vec<Delivery>,
    pub created_at: DateTime<Utc>,
}

/// One delivery attempt to log.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub tenant: String,
    pub endpoint_id: Uuid,
    pub job_id: JobId,
    pub event_id: String,
    pub event_type: String,
    pub attempt: i32,
    pub status_code: Option<i32>,
    /// `None` when delivered.
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub tenant: String,
    pub endpoint_id: Uuid,
    pub job_id: JobId,
    pub event_id: String,
    pub event_type: String,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
}

/// Which attempts to list (newest first).
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub endpoint_id: Option<Uuid>,
    pub event_id: Option<String>,
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, event_types, enabled, disabled_reason, timeout_ms, \
     max_concurrency, headers, secret_enc, previous_secret_enc, previous_secret_expires_at, first_failure_at, \
     created_at, updated_at";
const ATTEMPT_COLUMNS: &str = "id, tenant_id, endpoint_id, job_id, event_id, event_type, attempt, created_at, \
     status_code, error_class, error, latency_ms, response_body";

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn uuid_text(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| corrupt("bad uuid", e))
}

fn json_text<T: for<'de> Deserialize<'de>>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

fn pg_endpoint(r: &PgRow) -> Result<EndpointRecord> {
    Ok(EndpointRecord {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant_id")?,
        url: r.try_get("url")?,
        description: r.try_get("description")?,
        event_types: r.try_get::<Json<Vec<String>>, _>("event_types")?.0,
        enabled: r.try_get("enabled")?,
        disabled_reason: r.try_get("disabled_reason")?,
        timeout_ms: r.try_get::<i32, _>("timeout_ms")?.max(0) as u32,
        max_concurrency: r.try_get::<i32, _>("max_concurrency")?.max(1) as u32,
        headers: r.try_get::<Json<BTreeMap<String, String>>, _>("headers")?.0,
        secret_enc: r.try_get("secret_enc")?,
        previous_secret_enc: r.try_get("previous_secret_enc")?,
        previous_secret_expires_at: r.try_get("previous_secret_expires_at")?,
        first_failure_at: r.try_get("first_failure_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn lite_endpoint(r: &SqliteRow) -> Result<EndpointRecord> {
    let opt_time = |col: &str| -> Result<Option<DateTime<Utc>>> { Ok(r.try_get::<Option<i64>, _>(col)?.map(from_ms)) };
    Ok(EndpointRecord {
        id: uuid_text(&r.try_get::<String, _>("id")?)?,
        tenant: r.try_get("tenant_id")?,
        url: r.try_get("url")?,
        description: r.try_get("description")?,
        event_types: json_text(&r.try_get::<String, _>("event_types")?, "event_types")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        disabled_reason: r.try_get("disabled_reason")?,
        timeout_ms: r.try_get::<i64, _>("timeout_ms")?.max(0) as u32,
        max_concurrency: r.try_get::<i64, _>("max_concurrency")?.max(1) as u32,
        headers: json_text(&r.try_get::<String, _>("headers")?, "headers")?,
        secret_enc: r.try_get("secret_enc")?,
        previous_secret_enc: r.try_get("previous_secret_enc")?,
        previous_secret_expires_at: opt_time("previous_secret_expires_at")?,
        first_failure_at: opt_time("first_failure_at")?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

fn pg_attempt(r: &PgRow) -> Result<AttemptRecord> {
    Ok(AttemptRecord {
        id: r.try_get("id")?,
        created_at: r.try_get("created_at")?,
        tenant: r.try_get("tenant_id")?,
        endpoint_id: r.try_get("endpoint_id")?,
        job_id: JobId(r.try_get("job_id")?),
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        attempt: r.try_get("attempt")?,
        status_code: r.try_get("status_code")?,
        error_class: r.try_get("error_class")?,
        error: r.try_get("error")?,
        latency_ms: r.try_get::<i32, _>("latency_ms")? as i64,
        response_body: r.try_get("response_body")?,
    })
}

fn lite_attempt(r: &SqliteRow) -> Result<AttemptRecord> {
    Ok(AttemptRecord {
        id: uuid_text(&r.try_get::<String, _>("id")?)?,
        created_at: from_ms(r.try_get("created_at")?),
        tenant: r.try_get("tenant_id")?,
        endpoint_id: uuid_text(&r.try_get::<String, _>("endpoint_id")?)?,
        job_id: JobId(uuid_text(&r.try_get::<String, _>("job_id")?)?),
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        attempt: r.try_get::<i64, _>("attempt")? as i32,
        status_code: r.try_get::<Option<i64>, _>("status_code")?.map(|s| s as i32),
        error_class: r.try_get("error_class")?,
        error: r.try_get("error")?,
        latency_ms: r.try_get("latency_ms")?,
        response_body: r.try_get("response_body")?,
    })
}

/// Webhook tables on either backend.
#[derive(Clone, Debug)]
pub struct WebhookRepo {
    db: Db,
}

impl WebhookRepo {
    pub fn new(db: Db) -> Self {
        WebhookRepo { db }
    }

    // --- endpoints ------------------------------------------------------------------------

    pub async fn create_endpoint(&self, e: &NewEndpoint) -> Result<EndpointRecord> {
        let sql = format!(
            "INSERT INTO wharf_webhook_endpoints (id, tenant_id, url, description, event_types, enabled, timeout_ms,
                 max_concurrency, headers, secret_enc, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING {ENDPOINT_COLUMNS}"
        );
        let now = Utc::now();
        match &self.db {
            Db::Postgres(pool) => pg_endpoint(
                &sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(e.id)
                    .bind(&e.tenant)
                    .bind(&e.url)
                    .bind(&e.description)
                    .bind(Json(&e.event_types))
                    .bind(e.enabled)
                    .bind(e.timeout_ms as i32)
                    .bind(e.max_concurrency as i32)
                    .bind(Json(&e.headers))
                    .bind(&e.secret_enc)
                    .bind(now)
                    .fetch_one(pool)
                    .await?,
            ),
            Db::Sqlite(pool) => lite_endpoint(
                &sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(e.id.to_string())
                    .bind(&e.tenant)
                    .bind(&e.url)
                    .bind(&e.description)
                    .bind(serde_json::to_string(&e.event_types).map_err(|x| corrupt("event_types", x))?)
                    .bind(e.enabled as i64)
                    .bind(e.timeout_ms as i64)
                    .bind(e.max_concurrency as i64)
                    .bind(serde_json::to_string(&e.headers).map_err(|x| corrupt("headers", x))?)
                    .bind(&e.secret_enc)
                    .bind(ms(now))
                    .fetch_one(pool)
                    .await?,
            ),
        }
    }

    pub async fn endpoint(&self, tenant: &str, id: Uuid) -> Result<Option<EndpointRecord>> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM wharf_webhook_endpoints WHERE tenant_id = $1 AND id = $2");
        match &self.db {
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(id)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(pg_endpoint)
                .transpose(),
            Db::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(lite_endpoint)
                .transpose(),
        }
    }

    /// A page of the tenant's endpoints, newest first; the second value is the next cursor.
    pub async fn list_endpoints(
        &self,
        tenant: &str,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<(Vec<EndpointRecord>, Option<Uuid>)> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM wharf_webhook_endpoints
             WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        );
        let mut items = match &self.db {
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql.replace("$2 IS NULL", "$2::uuid IS NULL")))
                .bind(tenant)
                .bind(after)
                .bind(limit as i64 + 1)
                .fetch_all(pool)
                .await?
                .iter()
                .map(pg_endpoint)
                .collect::<Result<Vec<_>>>()?,
            Db::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(after.map(|a| a.to_string()))
                .bind(limit as i64 + 1)
                .fetch_all(pool)
                .await?
                .iter()
                .map(lite_endpoint)
                .collect::<Result<Vec<_>>>()?,
        };
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok((items, next))
    }

    /// Every enabled endpoint of the tenant.
    pub async fn enabled_endpoints(&self, tenant: &str) -> Result<Vec<EndpointRecord>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM wharf_webhook_endpoints WHERE tenant_id = $1 AND enabled = $2 ORDER BY id"
        );
        match &self.db {
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(true)
                .fetch_all(pool)
                .await?
                .iter()
                .map(pg_endpoint)
                .collect(),
            Db::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(1i64)
                .fetch_all(pool)
                .await?
                .iter()
                .map(lite_endpoint)
                .collect(),
        }
    }

    /// Applies a patch; `None` if there is no such endpoint. Enabling an endpoint clears its
    /// failure streak; disabling it records why.
    pub async fn update_endpoint(&self, tenant: &str, id: Uuid, p: &EndpointPatch) -> Result<Option<EndpointRecord>> {
        let Some(mut e) = self.endpoint(tenant, id).await? else { return Ok(None) };
        if let Some(v) = &p.url {
            e.url = v.clone();
        }
        if let Some(v) = &p.description {
            e.description = v.clone();
        }
        if let Some(v) = &p.event_types {
            e.event_types = v.clone();
        }
        if let Some(v) = p.timeout_ms {
            e.timeout_ms = v;
        }
        if let Some(v) = p.max_concurrency {
            e.max_concurrency = v;
        }
        if let Some(v) = &p.headers {
            e.headers = v.clone();
        }
        match p.enabled {
            Some(true) if !e.enabled => {
                e.enabled = true;
                e.disabled_reason = None;
                e.first_failure_at = None;
            }
            Some(false) if e.enabled => {
                e.enabled = false;
                e.disabled_reason = Some("disabled through the API".into());
            }
            _ => {}
        }
        let sql = format!(
            "UPDATE wharf_webhook_endpoints SET url = $3, description = $4, event_types = $5, enabled = $6,
                 disabled_reason = $7, timeout_ms = $8, max_concurrency = $9, headers = $10, first_failure_at = $11,
                 updated_at = $12
             WHERE tenant_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
        );
        let now = Utc::now();
        match &self.db {
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(id)
                .bind(&e.url)
                .bind(&e.description)
                .bind(Json(&e.event_types))
                .bind(e.enabled)
                .bind(&e.disabled_reason)
                .bind(e.timeout_ms as i32)
                .bind(e.max_concurrency as i32)
                .bind(Json(&e.headers))
                .bind(e.first_failure_at)
                .bind(now)
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(pg_endpoint)
                .transpose(),
            Db::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(id.to_string())
                .bind(&e.url)
                .bind(&e.description)
                .bind(serde_json::to_string(&e.event_types).map_err(|x| corrupt("event_types", x))?)
                .bind(e.enabled as i64)
                .bind(&e.disabled_reason)
                .bind(e.timeout_ms as i64)
                .bind(e.max_concurrency as i64)
                .bind(serde_json::to_string(&e.headers).map_err(|x| corrupt("headers", x))?)
                .bind(e.first_failure_at.map(ms))
                .bind(ms(now))
                .fetch_optional(pool)
                .await?
                .as_ref()
                .map(lite_endpoint)
                .transpose(),
        }
    }

    pub async fn delete_endpoint(&self, tenant: &str, id: Uuid) -> Result<bool> {
        let sql = "DELETE FROM wharf_webhook_endpoints WHERE tenant_id = $1 AND id = $2";
        let n = match &self.db {
            Db::Postgres(pool) => sqlx::query(sql).bind(tenant).bind(id).execute(pool).await?.rows_affected(),
            Db::Sqlite(pool) => sqlx::query(sql).bind(tenant).bind(id.to_string()).execute(pool).await?.rows_affected(),
        };
        Ok(n == 1)
    }

    /// Replaces the secret; the one it replaces keeps signing until `previous_expires_at`.
    /// `false` if there is no such endpoint.
    pub async fn rotate_secret(
        &self,
        tenant: &str,
        id: Uuid,
        secret_enc: &str,
        previous_expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let sql = "UPDATE wharf_webhook_endpoints SET previous_secret_enc = secret_enc, secret_enc = $3,
                       previous_secret_expires_at = $4, updated_at = $5
                   WHERE tenant_id = $1 AND id = $2";
        let now = Utc::now();
        let n = match &self.db {
            Db::Postgres(pool) => sqlx::query(sql)
                .bind(tenant)
                .bind(id)
                .bind(secret_enc)
                .bind(previous_expires_at)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Sqlite(pool) => sqlx::query(sql)
                .bind(tenant)
                .bind(id.to_string())
                .bind(secret_enc)
                .bind(ms(previous_expires_at))
                .bind(ms(now))
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(n == 1)
    }

    /// A delivery succeeded: the failure streak ends.
    pub async fn mark_success(&self, id: Uuid) -> Result<()> {
        let sql =
            "UPDATE wharf_webhook_endpoints SET first_failure_at = NULL WHERE id = $1 AND first_failure_at IS NOT NULL";
        match &self.db {
            Db::Postgres(pool) => sqlx::query(sql).bind(id).execute(pool).await?.rows_affected(),
            Db::Sqlite(pool) => sqlx::query(sql).bind(id.to_string()).execute(pool).await?.rows_affected(),
        };
        Ok(())
    }

    /// A delivery failed at `now`: starts the failure streak if none runs; returns its start.
    pub async fn mark_failure(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let sql = "UPDATE wharf_webhook_endpoints SET first_failure_at = COALESCE(first_failure_at, $2)
                   WHERE id = $1 RETURNING first_failure_at";
        Ok(match &self.db {
            Db::Postgres(pool) => sqlx::query_scalar::<_, Option<DateTime<Utc>>>(sql)
                .bind(id)
                .bind(now)
                .fetch_optional(pool)
                .await?
                .flatten(),
            Db::Sqlite(pool) => sqlx::query_scalar::<_, Option<i64>>(sql)
                .bind(id.to_string())
                .bind(ms(now))
                .fetch_optional(pool)
                .await?
                .flatten()
                .map(from_ms),
        })
    }

    /// Disables an enabled endpoint; `true` only for the caller that disabled it.
    pub async fn disable(&self, tenant: &str, id: Uuid, reason: &str) -> Result<bool> {
        let sql = "UPDATE wharf_webhook_endpoints SET enabled = $4, disabled_reason = $3, updated_at = $5
                   WHERE tenant_id = $1 AND id = $2 AND enabled = $6";
        let now = Utc::now();
        let n = match &self.db {
            Db::Postgres(pool) => sqlx::query(sql)
                .bind(tenant)
                .bind(id)
                .bind(reason)
                .bind(false)
                .bind(now)
                .bind(true)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Sqlite(pool) => sqlx::query(sql)
                .bind(tenant)
                .bind(id.to_string())
                .bind(reason)
                .bind(0i64)
                .bind(ms(now))
                .bind(1i64)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(n == 1)
    }

    // --- events ---------------------------------------------------------------------------

    /// Records an event with its deliveries; `false` if the tenant already has an event with
    /// this id.
    pub async fn insert_event(&self, e: &EventRecord) -> Result<bool> {
        let sql = "INSERT INTO wharf_webhook_events (tenant_id, id, event_type, deliveries, created_at)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, id) DO NOTHING";
        let n = match &self.db {
            Db::Postgres(pool) => sqlx::query(sql)
                .bind(&e.tenant)
                .bind(&e.id)
                .bind(&e.event_type)
                .bind(Json(&e.deliveries))
                .bind(e.created_at)
                .execute(pool)
                .await?
                .rows_affected(),
            Db::Sqlite(pool) => sqlx::query(sql)
                .bind(&e.tenant)
                .bind(&e.id)
                .bind(&e.event_type)
                .bind(serde_json::to_string(&e.deliveries).map_err(|x| corrupt("deliveries", x))?)
                .bind(ms(e.created_at))
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(n == 1)
    }

    /// Undoes [`insert_event`](Self::insert_event) when its delivery jobs could not be enqueued.
    pub async fn delete_event(&self, tenant: &str, id: &str) -> Result<()> {
        let sql = "DELETE FROM wharf_webhook_events WHERE tenant_id = $1 AND id = $2";
        match &self.db {
            Db::Postgres(pool) => sqlx::query(sql).bind(tenant).bind(id).execute(pool).await?.rows_affected(),
            Db::Sqlite(pool) => sqlx::query(sql).bind(tenant).bind(id).execute(pool).await?.rows_affected(),
        };
        Ok(())
    }

    pub async fn event(&self, tenant: &str, id: &str) -> Result<Option<EventRecord>> {
        let sql = "SELECT tenant_id, id, event_type, deliveries, created_at FROM wharf_webhook_events
                   WHERE tenant_id = $1 AND id = $2";
        match &self.db {
            Db::Postgres(pool) => sqlx::query(sql)
                .bind(tenant)
                .bind(id)
                .fetch_optional(pool)
                .await?
                .map(|r| {
                    Ok(EventRecord {
                        tenant: r.try_get("tenant_id")?,
                        id: r.try_get("id")?,
                        event_type: r.try_get("event_type")?,
                        deliveries: r.try_get::<Json<Vec<Delivery>>, _>("deliveries")?.0,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .transpose(),
            Db::Sqlite(pool) => sqlx::query(sql)
                .bind(tenant)
                .bind(id)
                .fetch_optional(pool)
                .await?
                .map(|r| {
                    Ok(EventRecord {
                        tenant: r.try_get("tenant_id")?,
                        id: r.try_get("id")?,
                        event_type: r.try_get("event_type")?,
                        deliveries: json_text(&r.try_get::<String, _>("deliveries")?, "deliveries")?,
                        created_at: from_ms(r.try_get("created_at")?),
                    })
                })
                .transpose(),
        }
    }

    // --- attempt log ----------------------------------------------------------------------

    pub async fn record_attempt(&self, a: &NewAttempt) -> Result<AttemptRecord> {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let sql =
            "INSERT INTO wharf_webhook_attempts (id, tenant_id, endpoint_id, job_id, event_id, event_type, attempt,
                       created_at, status_code, error_class, error, latency_ms, response_body)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
        let latency = a.latency_ms.clamp(0, i32::MAX as i64);
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query(sql)
                    .bind(id)
                    .bind(&a.tenant)
                    .bind(a.endpoint_id)
                    .bind(a.job_id.0)
                    .bind(&a.event_id)
                    .bind(&a.event_type)
                    .bind(a.attempt)
                    .bind(now)
                    .bind(a.status_code)
                    .bind(&a.error_class)
                    .bind(&a.error)
                    .bind(latency as i32)
                    .bind(&a.response_body)
                    .execute(pool)
                    .await?;
            }
            Db::Sqlite(pool) => {
                sqlx::query(sql)
                    .bind(id.to_string())
                    .bind(&a.tenant)
                    .bind(a.endpoint_id.to_string())
                    .bind(a.job_id.to_string())
                    .bind(&a.event_id)
                    .bind(&a.event_type)
                    .bind(a.attempt)
                    .bind(ms(now))
                    .bind(a.status_code)
                    .bind(&a.error_class)
                    .bind(&a.error)
                    .bind(latency)
                    .bind(&a.response_body)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(AttemptRecord {
            id,
            created_at: now,
            tenant: a.tenant.clone(),
            endpoint_id: a.endpoint_id,
            job_id: a.job_id,
            event_id: a.event_id.clone(),
            event_type: a.event_type.clone(),
            attempt: a.attempt,
            status_code: a.status_code,
            error_class: a.error_class.clone(),
            error: a.error.clone(),
            latency_ms: latency,
            response_body: a.response_body.clone(),
        })
    }

    /// Delivery attempts already logged for a job.
    pub async fn count_attempts(&self, job_id: JobId) -> Result<i64> {
        let sql = "SELECT count(*) FROM wharf_webhook_attempts WHERE job_id = $1";
        Ok(match &self.db {
            Db::Postgres(pool) => sqlx::query_scalar(sql).bind(job_id.0).fetch_one(pool).await?,
            Db::Sqlite(pool) => sqlx::query_scalar(sql).bind(job_id.to_string()).fetch_one(pool).await?,
        })
    }

    /// A page of attempts, newest first; the second value is the next cursor.
    pub async fn attempts(
        &self,
        tenant: &str,
        filter: &AttemptFilter,
        limit: u32,
        after: Option<Uuid>,
    ) -> Result<(Vec<AttemptRecord>, Option<Uuid>)> {
        let mut items = match &self.db {
            Db::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ATTEMPT_COLUMNS} FROM wharf_webhook_attempts
                 WHERE tenant_id = $1 AND ($2::uuid IS NULL OR endpoint_id = $2) AND ($3::text IS NULL OR event_id = $3)
                   AND ($4::uuid IS NULL OR id < $4)
                 ORDER BY id DESC LIMIT $5"
            )))
            .bind(tenant)
            .bind(filter.endpoint_id)
            .bind(&filter.event_id)
            .bind(after)
            .bind(limit as i64 + 1)
            .fetch_all(pool)
            .await?
            .iter()
            .map(pg_attempt)
            .collect::<Result<Vec<_>>>()?,
            Db::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ATTEMPT_COLUMNS} FROM wharf_webhook_attempts
                 WHERE tenant_id = $1 AND ($2 IS NULL OR endpoint_id = $2) AND ($3 IS NULL OR event_id = $3)
                   AND ($4 IS NULL OR id < $4)
                 ORDER BY id DESC LIMIT $5"
            )))
            .bind(tenant)
            .bind(filter.endpoint_id.map(|e| e.to_string()))
            .bind(&filter.event_id)
            .bind(after.map(|a| a.to_string()))
            .bind(limit as i64 + 1)
            .fetch_all(pool)
            .await?
            .iter()
            .map(lite_attempt)
            .collect::<Result<Vec<_>>>()?,
        };
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|a| a.id)
        } else {
            None
        };
        Ok((items, next))
    }

    /// Dead delivery jobs (`kind`) of one endpoint that died in `[since, until)`, oldest first.
    pub async fn dead_deliveries(
        &self,
        tenant: &str,
        kind: &str,
        endpoint_id: Uuid,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<JobId>> {
        Ok(match &self.db {
            Db::Postgres(pool) => sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM wharf_jobs
                 WHERE tenant_id = $1 AND state = 'dead' AND kind = $2 AND payload->>'endpoint_id' = $3
                   AND finished_at >= $4 AND ($5::timestamptz IS NULL OR finished_at < $5)
                 ORDER BY id",
            )
            .bind(tenant)
            .bind(kind)
            .bind(endpoint_id.to_string())
            .bind(since)
            .bind(until)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(JobId)
            .collect(),
            Db::Sqlite(pool) => sqlx::query_scalar::<_, String>(
                "SELECT id FROM wharf_jobs
                 WHERE tenant_id = ?1 AND state = 'dead' AND kind = ?2 AND json_extract(payload, '$.endpoint_id') = ?3
                   AND finished_at >= ?4 AND (?5 IS NULL OR finished_at < ?5)
                 ORDER BY id",
            )
            .bind(tenant)
            .bind(kind)
            .bind(endpoint_id.to_string())
            .bind(ms(since))
            .bind(until.map(ms))
            .fetch_all(pool)
            .await?
            .iter()
            .map(|s| uuid_text(s).map(JobId))
            .collect::<Result<Vec<_>>>()?,
        })
    }
}
