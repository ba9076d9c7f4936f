//! The job envelope and its lifecycle records.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId)
    }
}

/// Stored lifecycle state. `scheduled`/`retrying` jobs whose time has come are reported as
/// `queued` (see [`JobRecord::display_state`]); the claim query treats all three alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Scheduled,
    Queued,
    Running,
    Retrying,
    Succeeded,
    Dead,
    Cancelled,
    /// A dead job that was replayed: the new attempt series is the job in `replayed_by`.
    Replayed,
    /// A dead job an operator discarded.
    Discarded,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Replayed => "replayed",
            JobState::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => JobState::Scheduled,
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "retrying" => JobState::Retrying,
            "succeeded" => JobState::Succeeded,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            "replayed" => JobState::Replayed,
            "discarded" => JobState::Discarded,
            _ => return None,
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue: the envelope around a kind's payload.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub tenant: String,
    pub kind: String,
    pub queue: String,
    pub payload: serde_json::Value,
    /// When to run; `None` = now.
    pub run_at: Option<DateTime<Utc>>,
    /// W3C `traceparent` of the request that enqueued the job.
    pub traceparent: Option<String>,
    /// The dead job this one replays.
    pub replay_of: Option<JobId>,
}

impl NewJob {
    pub fn new(tenant: impl Into<String>, kind: &str, queue: &str, payload: serde_json::Value) -> Self {
        NewJob {
            id: JobId::new(),
            tenant: tenant.into(),
            kind: kind.to_string(),
            queue: queue.to_string(),
            payload,
            run_at: None,
            traceparent: None,
            replay_of: None,
        }
    }
}

/// One finished attempt that did not succeed (a success is recorded on the job itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptRecord {
    pub attempt: i32,
    pub worker: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub error: String,
}

/// A job as stored, for the API and operators.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: JobId,
    pub tenant: String,
    pub kind: String,
    pub queue: String,
    pub state: JobState,
    pub payload: serde_json::Value,
    pub attempt: i32,
    pub max_attempts: Option<i32>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub result: Option<serde_json::Value>,
    pub replay_of: Option<JobId>,
    pub replayed_by: Option<JobId>,
    pub traceparent: Option<String>,
    pub attempts: Vec<AttemptRecord>,
}

impl JobRecord {
    /// The state a client should see: a scheduled or retrying job whose time has come is queued.
    pub fn display_state(&self, now: DateTime<Utc>) -> JobState {
        match self.state {
            JobState::Scheduled | JobState::Retrying if self.run_at <= now => JobState::Queued,
            s => s,
        }
    }
}

/// A job a worker has claimed: it holds the lease until it reports a [`Completion`].
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: JobId,
    pub tenant: String,
    pub kind: String,
    pub queue: String,
    /// The raw payload text; decoding is the handler's business (a bad payload is a
    /// permanent error of that job, never of the worker).
    pub payload: String,
    /// 1-based number of this attempt.
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub traceparent: Option<String>,
}

/// How an attempt ended, as reported by the worker holding the lease.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded {
        result: Option<serde_json::Value>,
    },
    /// Failed; run again at `run_at` (the attempt counts).
    Retry {
        error: String,
        run_at: DateTime<Utc>,
    },
    /// Failed for good: into the dead-letter queue.
    Dead {
        error: String,
    },
    /// Not run (shutdown before start, or interrupted by shutdown): back to the queue, the
    /// attempt is not charged.
    Returned,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub id: JobId,
    /// The attempt this completion is for; a stale completion (the lease was lost and the job
    /// claimed again) is ignored.
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub outcome: Outcome,
}

/// Filters for listing jobs (`GET /v1/jobs`).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// As shown (`JobRecord::display_state`): a scheduled or retrying job whose time has
    /// come is `queued`.
    pub state: Option<JobState>,
}

/// Filters for listing and bulk-replaying dead letters.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub kind: Option<String>,
    /// Case-insensitive substring of the last error.
    pub error: Option<String>,
    /// Died at or after.
    pub since: Option<DateTime<Utc>>,
    /// Died before.
    pub until: Option<DateTime<Utc>>,
}

/// Cursor pagination, newest first; the cursor is the last id of the previous page.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<JobId>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<JobId>,
}

impl Page<JobRecord> {
    /// A page from a query that asked for `limit + 1` rows: the extra row only says that
    /// another page follows.
    pub fn from_overfetched(mut items: Vec<JobRecord>, limit: usize) -> Self {
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|j| j.id)
        } else {
            None
        };
        Page { items, next }
    }
}
