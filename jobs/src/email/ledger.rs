//! The send ledger: for every email, the provider that accepted it and its message id,
//! written before the job is acknowledged. A retry (after a crash between the send and the
//! acknowledgement) or a replay of an email already here is not sent again.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::from_ms;
use crate::{StoreError, job::JobId, store::Db};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRecord {
    pub tenant: String,
    /// The email's identity: the original job (the root of a replay chain), or the job of a
    /// forced re-send.
    pub identity: JobId,
    /// The job whose attempt the provider accepted.
    pub job_id: JobId,
    pub provider: String,
    pub provider_message_id: String,
    pub accepted_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct SendLedger {
    db: Db,
}

fn parse_id(s: &str) -> Result<JobId, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt(format!("email send ledger: `{s}` is not a job id")))
}

impl SendLedger {
    pub fn new(db: Db) -> Self {
        SendLedger { db }
    }

    /// The accepted send of `identity`, if there is one.
    pub async fn find(&self, tenant: &str, identity: JobId) -> Result<Option<SendRecord>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                let row = sqlx::query(
                    "SELECT job_id, provider, provider_message_id, accepted_at FROM wharf_email_sends
                     WHERE tenant_id = $1 AND identity = $2",
                )
                .bind(tenant)
                .bind(identity.0)
                .fetch_optional(pool)
                .await?;
                row.map(|r| {
                    Ok(SendRecord {
                        tenant: tenant.to_string(),
                        identity,
                        job_id: JobId(r.try_get("job_id")?),
                        provider: r.try_get("provider")?,
                        provider_message_id: r.try_get("provider_message_id")?,
                        accepted_at: r.try_get("accepted_at")?,
                    })
                })
                .transpose()
            }
            Db::Sqlite(pool) => {
                let row = sqlx::query(
                    "SELECT job_id, provider, provider_message_id, accepted_at FROM wharf_email_sends
                     WHERE tenant_id = ? AND identity = ?",
                )
                .bind(tenant)
                .bind(identity.to_string())
                .fetch_optional(pool)
                .await?;
                row.map(|r| {
                    let job_id: String = r.try_get("job_id")?;
                    Ok(SendRecord {
                        tenant: tenant.to_string(),
                        identity,
                        job_id: parse_id(&job_id)?,
                        provider: r.try_get("provider")?,
                        provider_message_id: r.try_get("provider_message_id")?,
                        accepted_at: from_ms(r.try_get("accepted_at")?),
                    })
                })
                .transpose()
            }
        }
    }

    /// Records an accepted send. If the identity already has one (two workers raced after a
    /// lost lease), the first is kept and returned.
    pub async fn record(&self, rec: &SendRecord) -> Result<SendRecord, StoreError> {
        let inserted = match &self.db {
            Db::Postgres(pool) => sqlx::query(
                "INSERT INTO wharf_email_sends (tenant_id, identity, job_id, provider, provider_message_id, accepted_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, identity) DO NOTHING",
            )
            .bind(&rec.tenant)
            .bind(rec.identity.0)
            .bind(rec.job_id.0)
            .bind(&rec.provider)
            .bind(&rec.provider_message_id)
            .bind(rec.accepted_at)
            .execute(pool)
            .await?
            .rows_affected(),
            Db::Sqlite(pool) => sqlx::query(
                "INSERT INTO wharf_email_sends (tenant_id, identity, job_id, provider, provider_message_id, accepted_at)
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, identity) DO NOTHING",
            )
            .bind(&rec.tenant)
            .bind(rec.identity.to_string())
            .bind(rec.job_id.to_string())
            .bind(&rec.provider)
            .bind(&rec.provider_message_id)
            .bind(rec.accepted_at.timestamp_millis())
            .execute(pool)
            .await?
            .rows_affected(),
        };
        if inserted == 1 {
            return Ok(rec.clone());
        }
        self.find(&rec.tenant, rec.identity)
            .await?
            .ok_or_else(|| StoreError::Corrupt("email send ledger: conflicting row vanished".into()))
    }

    /// Every accepted send of the tenant's job `job_id` (normally zero or one).
    pub async fn for_job(&self, tenant: &str, job_id: JobId) -> Result<Vec<SendRecord>, StoreError> {
        let rows: Vec<(String, String, String, String, DateTime<Utc>)> = match &self.db {
            Db::Postgres(pool) => sqlx::query(
                "SELECT identity, job_id, provider, provider_message_id, accepted_at FROM wharf_email_sends
                 WHERE tenant_id = $1 AND job_id = $2 ORDER BY accepted_at",
            )
            .bind(tenant)
            .bind(job_id.0)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok::<_, StoreError>((
                    r.try_get::<uuid::Uuid, _>("identity")?.to_string(),
                    r.try_get::<uuid::Uuid, _>("job_id")?.to_string(),
                    r.try_get("provider")?,
                    r.try_get("provider_message_id")?,
                    r.try_get("accepted_at")?,
                ))
            })
            .collect::<Result<_, _>>()?,
            Db::Sqlite(pool) => sqlx::query(
                "SELECT identity, job_id, provider, provider_message_id, accepted_at FROM wharf_email_sends
                 WHERE tenant_id = ? AND job_id = ? ORDER BY accepted_at",
            )
            .bind(tenant)
            .bind(job_id.to_string())
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok::<_, StoreError>((
                    r.try_get("identity")?,
                    r.try_get("job_id")?,
                    r.try_get("provider")?,
                    r.try_get("provider_message_id")?,
                    from_ms(r.try_get("accepted_at")?),
                ))
            })
            .collect::<Result<_, _>>()?,
        };
        rows.into_iter()
            .map(|(identity, job, provider, provider_message_id, accepted_at)| {
                Ok(SendRecord {
                    tenant: tenant.to_string(),
                    identity: parse_id(&identity)?,
                    job_id: parse_id(&job)?,
                    provider,
                    provider_message_id,
                    accepted_at,
                })
            })
            .collect()
    }
}
