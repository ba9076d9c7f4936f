//! `GET /v1/schedules`: the cron schedules the running schedulers registered, each with its
//! last and next fire time and how many ticks it skipped (found too late). An operator view
//! across tenants: needs the scope `admin`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::{Object, OpenApi, payload::Json};
use uuid::Uuid;
use wharf_jobs::{
    keys::Scope,
    schedules::{ScheduleRepo, next_fire},
};

use crate::{Shared, Tag, auth::ApiKey, problem::Problem};

/// A schedule and what it last did.
#[derive(Debug, Object)]
pub struct ScheduleView {
    pub name: String,
    /// Cron expression with a seconds field (`sec min hour day month weekday [year]`).
    pub cron: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// Kind of the job each tick enqueues.
    pub kind: String,
    pub queue: String,
    /// Tenant of the enqueued jobs (`wharf:system` for wharf's own purges).
    pub tenant: String,
    pub enabled: bool,
    /// The latest tick that enqueued a job.
    #[oai(nullable)]
    pub last_fired_at: Option<DateTime<Utc>>,
    /// The job the latest fired tick enqueued.
    #[oai(nullable)]
    pub last_job_id: Option<Uuid>,
    /// The next tick (none when disabled).
    #[oai(nullable)]
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Ticks found more than the late limit (5 min) after their time, and skipped.
    pub skipped_ticks: i64,
    #[oai(nullable)]
    pub last_skipped_at: Option<DateTime<Utc>>,
    /// When a scheduler last registered this definition.
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct ScheduleList {
    pub items: Vec<ScheduleView>,
}

pub struct SchedulesApi(pub(crate) Arc<Shared>);

#[OpenApi(tag = "Tag::Schedules")]
impl SchedulesApi {
    /// List schedules
    ///
    /// Every schedule the scheduler runs (built-in purges and configured ones), with the last
    /// and next fire times. Needs the scope `admin`.
    #[oai(path = "/v1/schedules", method = "get", operation_id = "listSchedules")]
    async fn list(&self, auth: ApiKey) -> Result<Json<ScheduleList>, Problem> {
        self.0.auth.authorize(&auth, Scope::Admin).await?;
        let now = Utc::now();
        let rows = ScheduleRepo::new(self.0.store.as_ref()).list().await?;
        let items = rows
            .into_iter()
            .map(|s| ScheduleView {
                next_fire_at: if s.enabled { next_fire(&s.cron, &s.timezone, now) } else { None },
                name: s.name,
                cron: s.cron,
                timezone: s.timezone,
                kind: s.kind,
                queue: s.queue,
                tenant: s.tenant,
                enabled: s.enabled,
                last_fired_at: s.last_fired_at,
                last_job_id: s.last_job_id.map(|j| j.0),
                skipped_ticks: s.skipped_ticks,
                last_skipped_at: s.last_skipped_at,
                registered_at: s.updated_at,
            })
            .collect();
        Ok(Json(ScheduleList { items }))
    }
}
