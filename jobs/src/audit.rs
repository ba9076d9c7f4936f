//! The audit log: every operator action (replay, bulk replay, discard, …) with the acting key,
//! kept per tenant.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use crate::{StoreError, store::Db};

#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub tenant: String,
    /// The API key id (never the key) or `cli:<user>`.
    pub actor: String,
    /// `dlq.replay`, `dlq.replay_matching`, `dlq.discard`, …
    pub action: String,
    /// The job (or other object) acted on, when there is one.
    pub target: Option<String>,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRecord {
    pub id: Uuid,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct AuditLog {
    db: Db,
}

impl AuditLog {
    pub fn new(db: Db) -> Self {
        AuditLog { db }
    }

    pub async fn record(&self, e: &AuditEntry) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO wharf_audit_log (id, tenant_id, actor, action, target, details)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(&e.tenant)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(&e.details)
                .execute(pool)
                .await?;
            }
            Db::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO wharf_audit_log (id, tenant_id, actor, action, target, details, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(id.to_string())
                .bind(&e.tenant)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(e.details.to_string())
                .bind(Utc::now().timestamp_millis())
                .execute(pool)
                .await?;
            }
        }
        Ok(id)
    }

    /// The tenant's entries, newest first.
    pub async fn list(&self, tenant: &str, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = limit.clamp(1, 1000) as i64;
        match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT id, actor, action, target, details, created_at FROM wharf_audit_log
                     WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(tenant)
                .bind(limit)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(AuditRecord {
                            id: r.try_get("id")?,
                            actor: r.try_get("actor")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            details: r.try_get("details")?,
                            created_at: r.try_get("created_at")?,
                        })
                    })
                    .collect()
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT id, actor, action, target, details, created_at FROM wharf_audit_log
                     WHERE tenant_id = ? ORDER BY id DESC LIMIT ?",
                )
                .bind(tenant)
                .bind(limit)
                .fetch_all(pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let id: String = r.try_get("id")?;
                        let details: String = r.try_get("details")?;
                        Ok(AuditRecord {
                            id: id.parse().map_err(|_| StoreError::corrupt(format!("audit id `{id}`")))?,
                            actor: r.try_get("actor")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
                            created_at: Utc.timestamp_millis_opt(r.try_get("created_at")?).single().unwrap_or_default(),
                        })
                    })
                    .collect()
            }
        }
    }
}
