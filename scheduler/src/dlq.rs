//! The DLQ monitor. Every interval: dead letters per (tenant, kind) are published as the gauge
//! `wharf_dead_letters{tenant,kind}`, and each tenant's total is compared with the warning and
//! critical levels. The last level per tenant lives in `wharf_dlq_alerts`; a level change is a
//! compare-and-set on that row, so across replicas and restarts each upward crossing emits one
//! `dlq.threshold` event (recorded in `wharf_dlq_events`, logged at `warn`/`error`); staying
//! above a level emits nothing, and falling below re-arms it.
//!
//! `wharf_dlq_events` is also an outbox for webhooks: each round, events not yet handed over
//! are published to the tenant's endpoints subscribed to `dlq.threshold`
//! (`wharf_jobs::webhooks::publish`, event id `dlq_<event uuid>`, so a replica racing on the
//! same row is deduplicated there) and marked `delivered_at`.
//!
//! Nothing here feeds `/readyz`: readiness never depends on queue or DLQ size.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use wharf_jobs::{
    Store, StoreError,
    store::Db,
    webhooks::{
        WebhookRepo,
        publish::{NewEvent, publish},
    },
};

use crate::DlqConfig;

pub const EVENT_TYPE: &str = "dlq.threshold";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Level {
        match s {
            "warning" => Level::Warning,
            "critical" => Level::Critical,
            _ => Level::Ok,
        }
    }

    pub fn for_count(n: i64, cfg: &DlqConfig) -> Level {
        if n >= cfg.critical {
            Level::Critical
        } else if n >= cfg.warning {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// One emitted threshold event.
#[derive(Debug, Clone)]
pub struct DlqEvent {
    pub id: uuid::Uuid,
    pub tenant: String,
    pub level: Level,
    pub previous: Level,
    pub dead_letters: i64,
    pub payload: Value,
}

pub struct DlqMonitor {
    store: Arc<dyn Store>,
    db: Db,
    cfg: DlqConfig,
    /// (tenant, kind) gauges published last round, to zero the ones that emptied.
    published: BTreeSet<(String, String)>,
}

type Result<T> = std::result::Result<T, StoreError>;

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

impl DlqMonitor {
    pub fn new(store: Arc<dyn Store>, cfg: DlqConfig) -> Self {
        DlqMonitor { db: store.db(), store, cfg, published: BTreeSet::new() }
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.cfg.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = self.check().await {
                tracing::warn!(error = %e, "DLQ monitor round failed; trying again next round");
            }
            if let Err(e) = self.deliver_pending().await {
                tracing::warn!(error = %e, "handing dlq.threshold events to webhooks failed; retrying next round");
            }
        }
    }

    /// One round: publish the counts, move each tenant's level, emit the crossings.
    pub async fn check(&mut self) -> Result<Vec<DlqEvent>> {
        let counts = self.counts().await?;
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        let mut by_kind: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        let mut now_published = BTreeSet::new();
        for (tenant, kind, n) in counts {
            metrics::gauge!("wharf_dead_letters", "tenant" => tenant.clone(), "kind" => kind.clone()).set(n as f64);
            *totals.entry(tenant.clone()).or_default() += n;
            by_kind.entry(tenant.clone()).or_default().insert(kind.clone(), n);
            now_published.insert((tenant, kind));
        }
        for (tenant, kind) in self.published.difference(&now_published) {
            metrics::gauge!("wharf_dead_letters", "tenant" => tenant.clone(), "kind" => kind.clone()).set(0.0);
        }
        self.published = now_published;

        let levels = self.levels().await?;
        let tenants: BTreeSet<&String> = totals.keys().chain(levels.keys()).collect();
        let mut events = Vec::new();
        for tenant in tenants {
            let total = totals.get(tenant).copied().unwrap_or(0);
            let old = levels.get(tenant).copied().unwrap_or(Level::Ok);
            let new = Level::for_count(total, &self.cfg);
            if new == old {
                continue;
            }
            let event = (new > old).then(|| {
                let threshold = if new == Level::Critical { self.cfg.critical } else { self.cfg.warning };
                let payload = json!({
                    "type": EVENT_TYPE,
                    "tenant": tenant,
                    "level": new.as_str(),
                    "previous_level": old.as_str(),
                    "dead_letters": total,
                    "threshold": threshold,
                    "by_kind": by_kind.get(tenant).cloned().unwrap_or_default(),
                    "at": Utc::now(),
                });
                DlqEvent {
                    id: uuid::Uuid::now_v7(),
                    tenant: tenant.clone(),
                    level: new,
                    previous: old,
                    dead_letters: total,
                    payload,
                }
            });
            if !self.transition(tenant, old, new, total, event.as_ref()).await? {
                continue; // another replica moved this tenant first
            }
            match event {
                Some(e) => {
                    self.emit(&e);
                    events.push(e);
                }
                None => tracing::info!(
                    target: "wharf::dlq", tenant = %tenant, level = new.as_str(), previous_level = old.as_str(),
                    dead_letters = total, "dead-letter queue back below a threshold"
                ),
            }
        }
        Ok(events)
    }

    /// The event is already in `wharf_dlq_events` (same transaction as the level change).
    fn emit(&self, e: &DlqEvent) {
        let threshold = &e.payload["threshold"];
        match e.level {
            Level::Critical => tracing::error!(
                target: "wharf::dlq", event = EVENT_TYPE, event_id = %e.id, tenant = %e.tenant, level = "critical",
                previous_level = e.previous.as_str(), dead_letters = e.dead_letters, %threshold,
                "dlq.threshold: dead-letter queue crossed the critical level"
            ),
            _ => tracing::warn!(
                target: "wharf::dlq", event = EVENT_TYPE, event_id = %e.id, tenant = %e.tenant, level = e.level.as_str(),
                previous_level = e.previous.as_str(), dead_letters = e.dead_letters, %threshold,
                "dlq.threshold: dead-letter queue crossed the warning level"
            ),
        }
        metrics::counter!("wharf_dlq_threshold_events_total", "level" => e.level.as_str()).increment(1);
    }

    /// Publishes recorded events not yet handed to webhooks; returns how many were handed over.
    pub async fn deliver_pending(&self) -> Result<u64> {
        let pending: Vec<(String, String, Value, DateTime<Utc>)> = match &self.db {
            Db::Postgres(pool) => sqlx::query(
                "SELECT id::text AS id, tenant_id, payload, created_at FROM wharf_dlq_events
                 WHERE delivered_at IS NULL ORDER BY created_at LIMIT 100",
            )
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("tenant_id")?, r.try_get("payload")?, r.try_get("created_at")?)))
            .collect::<std::result::Result<_, sqlx::Error>>()?,
            Db::Sqlite(pool) => sqlx::query(
                "SELECT id, tenant_id, payload, created_at FROM wharf_dlq_events
                 WHERE delivered_at IS NULL ORDER BY created_at LIMIT 100",
            )
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                let payload: String = r.try_get("payload")?;
                let at: i64 = r.try_get("created_at")?;
                Ok((
                    r.try_get("id")?,
                    r.try_get("tenant_id")?,
                    serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
                    chrono::TimeZone::timestamp_millis_opt(&Utc, at).single().unwrap_or_default(),
                ))
            })
            .collect::<std::result::Result<_, sqlx::Error>>()?,
        };
        let repo = WebhookRepo::new(self.db.clone());
        let mut handed = 0;
        for (id, tenant, payload, at) in pending {
            let event = NewEvent {
                id: format!("dlq_{}", id.replace('-', "")),
                event_type: EVENT_TYPE.to_string(),
                data: payload,
                timestamp: at,
                traceparent: None,
            };
            publish(self.store.as_ref(), &repo, &tenant, event, None).await?;
            match &self.db {
                Db::Postgres(pool) => {
                    sqlx::query("UPDATE wharf_dlq_events SET delivered_at = now() WHERE id = $1::uuid")
                        .bind(&id)
                        .execute(pool)
                        .await?;
                }
                Db::Sqlite(pool) => {
                    sqlx::query("UPDATE wharf_dlq_events SET delivered_at = ? WHERE id = ?")
                        .bind(ms(Utc::now()))
                        .bind(&id)
                        .execute(pool)
                        .await?;
                }
            }
            handed += 1;
        }
        Ok(handed)
    }

    async fn counts(&self) -> Result<Vec<(String, String, i64)>> {
        const SQL: &str =
            "SELECT tenant_id, kind, count(*) AS n FROM wharf_jobs WHERE state = 'dead' GROUP BY tenant_id, kind";
        let rows = match &self.db {
            Db::Postgres(pool) => sqlx::query(SQL)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("kind")?, r.try_get("n")?)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?,
            Db::Sqlite(pool) => sqlx::query(SQL)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("kind")?, r.try_get("n")?)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?,
        };
        Ok(rows)
    }

    async fn levels(&self) -> Result<BTreeMap<String, Level>> {
        const SQL: &str = "SELECT tenant_id, level FROM wharf_dlq_alerts";
        let pairs: Vec<(String, String)> = match &self.db {
            Db::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
            Db::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
        };
        Ok(pairs.into_iter().map(|(t, l)| (t, Level::parse(&l))).collect())
    }

    /// Moves `tenant` from `old` to `new` if nobody did first; records `event` with it.
    async fn transition(
        &self,
        tenant: &str,
        old: Level,
        new: Level,
        total: i64,
        event: Option<&DlqEvent>,
    ) -> Result<bool> {
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let moved = sqlx::query(
                    "INSERT INTO wharf_dlq_alerts (tenant_id, level, dead_count) VALUES ($1, $2, $3)
                     ON CONFLICT (tenant_id) DO UPDATE SET level = EXCLUDED.level, dead_count = EXCLUDED.dead_count,
                         changed_at = now()
                     WHERE wharf_dlq_alerts.level = $4",
                )
                .bind(tenant)
                .bind(new.as_str())
                .bind(total)
                .bind(old.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if moved && let Some(e) = event {
                    sqlx::query(
                        "INSERT INTO wharf_dlq_events (id, tenant_id, event_type, level, previous_level, dead_count, payload)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(e.id)
                    .bind(&e.tenant)
                    .bind(EVENT_TYPE)
                    .bind(e.level.as_str())
                    .bind(e.previous.as_str())
                    .bind(e.dead_letters)
                    .bind(&e.payload)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(moved)
            }
            Db::Sqlite(pool) => {
                let now = ms(Utc::now());
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let moved = sqlx::query(
                    "INSERT INTO wharf_dlq_alerts (tenant_id, level, dead_count, changed_at) VALUES (?1, ?2, ?3, ?5)
                     ON CONFLICT (tenant_id) DO UPDATE SET level = excluded.level, dead_count = excluded.dead_count,
                         changed_at = excluded.changed_at
                     WHERE wharf_dlq_alerts.level = ?4",
                )
                .bind(tenant)
                .bind(new.as_str())
                .bind(total)
                .bind(old.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if moved && let Some(e) = event {
                    sqlx::query(
                        "INSERT INTO wharf_dlq_events (id, tenant_id, event_type, level, previous_level, dead_count, payload,
                                                       created_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(e.id.to_string())
                    .bind(&e.tenant)
                    .bind(EVENT_TYPE)
                    .bind(e.level.as_str())
                    .bind(e.previous.as_str())
                    .bind(e.dead_letters)
                    .bind(e.payload.to_string())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(moved)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_thresholds() {
        let cfg = DlqConfig::default();
        assert_eq!(Level::for_count(0, &cfg), Level::Ok);
        assert_eq!(Level::for_count(499, &cfg), Level::Ok);
        assert_eq!(Level::for_count(500, &cfg), Level::Warning);
        assert_eq!(Level::for_count(999, &cfg), Level::Warning);
        assert_eq!(Level::for_count(1000, &cfg), Level::Critical);
        assert!(Level::Critical > Level::Warning && Level::Warning > Level::Ok);
    }
}
