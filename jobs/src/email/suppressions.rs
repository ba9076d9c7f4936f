//! The suppression list: addresses of a tenant that no email is sent to (hard bounces,
//! complaints, manual entries, and recipients a provider refused as inactive). Addresses are
//! kept lower-cased.

use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::from_ms;
use crate::{StoreError, kinds::email::split_mailbox, store::Db};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionReason {
    Manual,
    HardBounce,
    Complaint,
    /// A provider refused the recipient (Postmark "inactive recipient", SES suppression).
    Provider,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Manual => "manual",
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "manual" => SuppressionReason::Manual,
            "hard_bounce" => SuppressionReason::HardBounce,
            "complaint" => SuppressionReason::Complaint,
            "provider" => SuppressionReason::Provider,
            _ => return None,
        })
    }
}

impl fmt::Display for SuppressionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// Lower-cased bare address.
    pub address: String,
    pub reason: SuppressionReason,
    /// Free text: the provider's message, an operator's note.
    pub detail: Option<String>,
    /// `api` or the provider that reported it (`postmark`, `ses`).
    pub source: String,
    pub created_at: DateTime<Utc>,
}

/// The form an address is kept in: the bare address of a mailbox, lower-cased.
pub fn normalize(address: &str) -> String {
    split_mailbox(address).1.trim().to_ascii_lowercase()
}

#[derive(Clone, Debug)]
pub struct SuppressionList {
    db: Db,
}

impl SuppressionList {
    pub fn new(db: Db) -> Self {
        SuppressionList { db }
    }

    /// Adds (or updates) an address; true if it was new.
    pub async fn add(
        &self,
        tenant: &str,
        address: &str,
        reason: SuppressionReason,
        detail: Option<&str>,
        source: &str,
    ) -> Result<(Suppression, bool), StoreError> {
        let address = normalize(address);
        let existed = self.get(tenant, &address).await?.is_some();
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO wharf_email_suppressions (tenant_id, address, reason, detail, source)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant_id, address) DO UPDATE SET reason = EXCLUDED.reason,
                        detail = EXCLUDED.detail, source = EXCLUDED.source",
                )
                .bind(tenant)
                .bind(&address)
                .bind(reason.as_str())
                .bind(detail)
                .bind(source)
                .execute(pool)
                .await?;
            }
            Db::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO wharf_email_suppressions (tenant_id, address, reason, detail, source, created_at)
                     VALUES (?, ?, ?, ?, ?, ?)
                     ON CONFLICT (tenant_id, address) DO UPDATE SET reason = excluded.reason,
                        detail = excluded.detail, source = excluded.source",
                )
                .bind(tenant)
                .bind(&address)
                .bind(reason.as_str())
                .bind(detail)
                .bind(source)
                .bind(Utc::now().timestamp_millis())
                .execute(pool)
                .await?;
            }
        }
        let stored = self
            .get(tenant, &address)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("suppression of `{address}` vanished after it was written")))?;
        Ok((stored, !existed))
    }

    /// True if it was there.
    pub async fn remove(&self, tenant: &str, address: &str) -> Result<bool, StoreError> {
        let address = normalize(address);
        let n = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query("DELETE FROM wharf_email_suppressions WHERE tenant_id = $1 AND address = $2")
                    .bind(tenant)
                    .bind(&address)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
            Db::Sqlite(pool) => sqlx::query("DELETE FROM wharf_email_suppressions WHERE tenant_id = ? AND address = ?")
                .bind(tenant)
                .bind(&address)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(n > 0)
    }

    pub async fn get(&self, tenant: &str, address: &str) -> Result<Option<Suppression>, StoreError> {
        Ok(self.matching(tenant, &[normalize(address)]).await?.pop())
    }

    /// The suppressed ones among `addresses` (any form: `Name <a@b>` works).
    pub async fn matching(&self, tenant: &str, addresses: &[String]) -> Result<Vec<Suppression>, StoreError> {
        let mut wanted: Vec<String> = addresses.iter().map(|a| normalize(a)).collect();
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT address, reason, detail, source, created_at FROM wharf_email_suppressions
                     WHERE tenant_id = $1 AND address = ANY($2) ORDER BY address",
                )
                .bind(tenant)
                .bind(&wanted)
                .fetch_all(pool)
                .await?;
                rows.iter().map(pg_row).collect()
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT address, reason, detail, source, created_at FROM wharf_email_suppressions
                     WHERE tenant_id = ? AND address IN (SELECT value FROM json_each(?)) ORDER BY address",
                )
                .bind(tenant)
                .bind(serde_json::to_string(&wanted).expect("strings serialize"))
                .fetch_all(pool)
                .await?;
                rows.iter().map(sqlite_row).collect()
            }
        }
    }

    /// One page of the tenant's list, by address, after `after`; the next cursor is the last
    /// address when the page is full.
    pub async fn list(
        &self,
        tenant: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<(Vec<Suppression>, Option<String>), StoreError> {
        let limit = limit.clamp(1, 1000);
        let items: Vec<Suppression> = match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT address, reason, detail, source, created_at FROM wharf_email_suppressions
                     WHERE tenant_id = $1 AND ($2::text IS NULL OR address > $2) ORDER BY address LIMIT $3",
                )
                .bind(tenant)
                .bind(after)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
                rows.iter().map(pg_row).collect::<Result<_, _>>()?
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT address, reason, detail, source, created_at FROM wharf_email_suppressions
                     WHERE tenant_id = ?1 AND (?2 IS NULL OR address > ?2) ORDER BY address LIMIT ?3",
                )
                .bind(tenant)
                .bind(after)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
                rows.iter().map(sqlite_row).collect::<Result<_, _>>()?
            }
        };
        let next = (items.len() == limit as usize).then(|| items.last().map(|s| s.address.clone())).flatten();
        Ok((items, next))
    }
}

fn reason(s: String) -> Result<SuppressionReason, StoreError> {
    SuppressionReason::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("suppression reason `{s}`")))
}

fn pg_row(r: &sqlx::postgres::PgRow) -> Result<Suppression, StoreError> {
    Ok(Suppression {
        address: r.try_get("address")?,
        reason: reason(r.try_get("reason")?)?,
        detail: r.try_get("detail")?,
        source: r.try_get("source")?,
        created_at: r.try_get("created_at")?,
    })
}

fn sqlite_row(r: &sqlx::sqlite::SqliteRow) -> Result<Suppression, StoreError> {
    Ok(Suppression {
        address: r.try_get("address")?,
        reason: reason(r.try_get("reason")?)?,
        detail: r.try_get("detail")?,
        source: r.try_get("source")?,
        created_at: from_ms(r.try_get("created_at")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized() {
        assert_eq!(normalize("Ann Example <Ann@Example.COM>"), "ann@example.com");
        assert_eq!(normalize(" bob@x.io "), "bob@x.io");
        for r in ["manual", "hard_bounce", "complaint", "provider"] {
            assert_eq!(SuppressionReason::parse(r).unwrap().as_str(), r);
        }
        assert_eq!(SuppressionReason::parse("other"), None);
    }
}
