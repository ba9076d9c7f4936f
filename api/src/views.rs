//! Response objects, and [`Stored`]: a JSON response that may be replayed verbatim for a
//! repeated `Idempotency-Key`.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{
    ApiResponse, Enum, Object,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::{ToJSON, Type},
};
use uuid::Uuid;
use wharf_jobs::{AttemptRecord, JobRecord, JobState, idempotency::StoredResponse};

/// A job's state as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case", rename = "JobState")]
pub enum JobStateView {
    Scheduled,
    Queued,
    Running,
    Retrying,
    Succeeded,
    Dead,
    Cancelled,
    Replayed,
    Discarded,
}

impl From<JobState> for JobStateView {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Scheduled => JobStateView::Scheduled,
            JobState::Queued => JobStateView::Queued,
            JobState::Running => JobStateView::Running,
            JobState::Retrying => JobStateView::Retrying,
            JobState::Succeeded => JobStateView::Succeeded,
            JobState::Dead => JobStateView::Dead,
            JobState::Cancelled => JobStateView::Cancelled,
            JobState::Replayed => JobStateView::Replayed,
            JobState::Discarded => JobStateView::Discarded,
        }
    }
}

/// A job was accepted.
#[derive(Debug, Clone, Object)]
pub struct Accepted {
    /// The job's id.
    pub id: Uuid,
    /// Always `queued`.
    pub status: JobStateView,
    /// Where to follow the job (`GET /v1/jobs/{id}`).
    pub status_url: String,
}

/// A dead letter was replayed as a new job.
#[derive(Debug, Clone, Object)]
pub struct ReplayAccepted {
    /// The new job's id.
    pub id: Uuid,
    /// Always `queued`.
    pub status: JobStateView,
    /// Where to follow the new job.
    pub status_url: String,
    /// The dead letter it replays.
    pub replay_of: Uuid,
}

/// How many dead letters a bulk replay re-queued.
#[derive(Debug, Clone, Object)]
pub struct ReplayCount {
    pub replayed: u64,
}

/// A job, without its attempts' errors.
#[derive(Debug, Clone, Object)]
pub struct JobView {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub state: JobStateView,
    /// Attempts made so far.
    pub attempts: i32,
    #[oai(nullable)]
    pub max_attempts: Option<i32>,
    pub created_at: DateTime<Utc>,
    /// When the job is (or was) due.
    pub run_at: DateTime<Utc>,
    /// When the latest attempt started.
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub last_error: Option<String>,
    #[oai(nullable)]
    pub result: Option<serde_json::Value>,
    /// The dead letter this job replays.
    #[oai(nullable)]
    pub replay_of: Option<Uuid>,
    /// The job that replays this dead letter.
    #[oai(nullable)]
    pub replayed_by: Option<Uuid>,
}

impl JobView {
    pub fn new(job: &JobRecord, now: DateTime<Utc>) -> Self {
        JobView {
            id: job.id.0,
            kind: job.kind.clone(),
            queue: job.queue.clone(),
            state: job.display_state(now).into(),
            attempts: job.attempt,
            max_attempts: job.max_attempts,
            created_at: job.created_at,
            run_at: job.run_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            last_error: job.last_error.clone(),
            result: job.result.clone(),
            replay_of: job.replay_of.map(|j| j.0),
            replayed_by: job.replayed_by.map(|j| j.0),
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone, Object)]
pub struct AttemptView {
    pub attempt: i32,
    #[oai(nullable)]
    pub worker: Option<String>,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub error: String,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        AttemptView {
            attempt: a.attempt,
            worker: a.worker.clone(),
            started_at: a.started_at,
            finished_at: a.finished_at,
            error: a.error.clone(),
        }
    }
}

/// A job with every failed attempt's error.
#[derive(Debug, Clone, Object)]
pub struct JobDetail {
    #[oai(flatten)]
    pub job: JobView,
    pub errors: Vec<AttemptView>,
}

impl JobDetail {
    pub fn new(job: &JobRecord, now: DateTime<Utc>) -> Self {
        JobDetail { job: JobView::new(job, now), errors: job.attempts.iter().map(Into::into).collect() }
    }
}

/// A dead letter: the job, its errors, and the payload (to edit before a replay).
#[derive(Debug, Clone, Object)]
pub struct DeadLetterDetail {
    #[oai(flatten)]
    pub job: JobDetail,
    pub payload: serde_json::Value,
}

/// A page of dead letters, newest first.
#[derive(Debug, Clone, Object)]
pub struct DeadLetterPage {
    pub items: Vec<JobView>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<Uuid>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Object)]
pub struct JobPage {
    pub items: Vec<JobView>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<Uuid>,
}

/// One queue's jobs by state.
#[derive(Debug, Clone, Object)]
pub struct QueueView {
    /// The queue's name (`email`, `webhooks`, `embeddings`, `purge`, ...).
    pub name: String,
    /// Due now and waiting for a worker.
    pub queued: i64,
    /// Waiting for their `run_at`.
    pub scheduled: i64,
    pub running: i64,
    /// Waiting out a backoff before the next attempt.
    pub retrying: i64,
    /// In the dead-letter queue.
    pub dead: i64,
    /// Succeeded within the last minute.
    pub done_last_minute: i64,
}

impl From<&wharf_jobs::store::QueueCounts> for QueueView {
    fn from(c: &wharf_jobs::store::QueueCounts) -> Self {
        QueueView {
            name: c.queue.clone(),
            queued: c.queued,
            scheduled: c.scheduled,
            running: c.running,
            retrying: c.retrying,
            dead: c.dead,
            done_last_minute: c.done_last_minute,
        }
    }
}

/// Every queue of the tenant.
#[derive(Debug, Clone, Object)]
pub struct QueueList {
    pub items: Vec<QueueView>,
}

/// Health and readiness.
#[derive(Debug, Clone, Object)]
pub struct HealthStatus {
    /// `ok` or `ready`.
    pub status: String,
}

/// A JSON response documented as `T` with status `STATUS`, holding its body as a JSON value so
/// it can be stored with an idempotency key and replayed verbatim.
pub struct Stored<T, const STATUS: u16> {
    response: StoredResponse,
    _t: PhantomData<fn() -> T>,
}

impl<T: ToJSON, const STATUS: u16> Stored<T, STATUS> {
    pub fn new(body: &T) -> Self {
        let body = body.to_json().unwrap_or(serde_json::Value::Null);
        Stored { response: StoredResponse { status: STATUS, body }, _t: PhantomData }
    }

    /// A response stored earlier under the same idempotency key.
    pub fn replay(response: StoredResponse) -> Self {
        Stored { response, _t: PhantomData }
    }

    pub fn stored(&self) -> &StoredResponse {
        &self.response
    }
}

impl<T: Send, const STATUS: u16> IntoResponse for Stored<T, STATUS> {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.response.status).unwrap_or(StatusCode::OK);
        let mut resp = poem::web::Json(self.response.body).into_response();
        resp.set_status(status);
        resp
    }
}

impl<T: Type + Send, const STATUS: u16> ApiResponse for Stored<T, STATUS> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: if STATUS == 202 { "Accepted" } else { "OK" },
                status: Some(STATUS),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json; charset=utf-8",
                    schema: T::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}
