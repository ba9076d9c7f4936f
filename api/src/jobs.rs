//! Jobs: `GET /v1/jobs/{id}` (state, attempts, result), `GET /v1/jobs` (a filtered listing),
//! `POST /v1/jobs/{id}/cancel` (a waiting job will not run; audited).

use std::sync::Arc;

use chrono::Utc;
use poem_openapi::{
    OpenApi,
    param::{Path, Query},
    payload::Json,
};
use wharf_jobs::{JobFilter, JobId, JobState, PageRequest, keys::Scope, kinds::FieldError, store::CancelRefused};

use crate::{
    Shared, Tag,
    auth::ApiKey,
    dead_letters::{DEFAULT_LIMIT, MAX_LIMIT},
    problem::Problem,
    views::{JobDetail, JobPage, JobView},
};

pub struct JobsApi(pub(crate) Arc<Shared>);

/// Parses a job id from the path: a malformed id names no job, so it is a 404 like a missing one.
pub(crate) fn parse_id(id: &str) -> Result<JobId, Problem> {
    id.parse::<JobId>().map_err(|_| not_found(id))
}

pub(crate) fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("no job `{id}`"))
}

#[OpenApi(tag = "Tag::Jobs")]
impl JobsApi {
    /// Get a job
    ///
    /// The job's state, attempt count, each failed attempt's error, timestamps and result.
    /// Needs the scope `jobs:read`.
    #[oai(path = "/v1/jobs/:id", method = "get", operation_id = "getJob")]
    async fn get(
        &self,
        auth: ApiKey,
        /// The job's id.
        id: Path<String>,
    ) -> Result<Json<JobDetail>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsRead).await?;
        let job_id = parse_id(&id.0)?;
        tracing::Span::current().record("job_id", tracing::field::display(job_id));
        let job = self.0.store.job(&key.tenant, job_id).await?.ok_or_else(|| not_found(&id.0))?;
        Ok(Json(JobDetail::new(&job, Utc::now())))
    }

    /// List jobs
    ///
    /// The tenant's jobs, newest first, filtered by kind, queue and state and paginated by
    /// cursor. Needs the scope `jobs:read`.
    #[oai(path = "/v1/jobs", method = "get", operation_id = "listJobs")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: ApiKey,
        /// Only jobs of this kind (`email`, `webhook`, `embed_documents`, `purge`, ...).
        kind: Query<Option<String>>,
        /// Only jobs on this queue.
        queue: Query<Option<String>>,
        /// Only jobs in this state: scheduled, queued, running, retrying, succeeded, dead,
        /// cancelled, replayed or discarded.
        state: Query<Option<String>>,
        /// Page size (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<JobPage>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsRead).await?;
        let filter = job_filter(kind.0, queue.0, state.0)
            .map_err(|errors| Problem::bad_request("invalid query parameters").with_errors(errors))?;
        let after = parse_cursor(cursor.0.as_deref())?;
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let page = self.0.store.jobs(&key.tenant, &filter, &PageRequest { limit, after }).await?;
        let now = Utc::now();
        Ok(Json(JobPage {
            items: page.items.iter().map(|j| JobView::new(j, now)).collect(),
            next_cursor: page.next.map(|id| id.0),
        }))
    }

    /// Cancel a job
    ///
    /// A scheduled, queued or retrying job becomes `cancelled` and will not run. A running job
    /// finishes its attempt (409), as does a job that already settled. Needs the scope
    /// `jobs:write`; audited as `job.cancel`.
    #[oai(path = "/v1/jobs/:id/cancel", method = "post", operation_id = "cancelJob")]
    async fn cancel(
        &self,
        auth: ApiKey,
        /// The job's id.
        id: Path<String>,
    ) -> Result<Json<JobDetail>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsWrite).await?;
        let job_id = parse_id(&id.0)?;
        tracing::Span::current().record("job_id", tracing::field::display(job_id));
        match self.0.store.cancel(&key.tenant, job_id).await? {
            Ok(job) => {
                self.0.audit(&key, "job.cancel", Some(job_id.to_string()), serde_json::json!({"kind": job.kind})).await;
                metrics::counter!("wharf_jobs_cancelled_total", "kind" => job.kind.clone()).increment(1);
                Ok(Json(JobDetail::new(&job, Utc::now())))
            }
            Err(CancelRefused::NotFound) => Err(not_found(&id.0)),
            Err(CancelRefused::NotWaiting(state)) => Err(Problem::conflict(format!(
                "job `{}` is {state}: only scheduled, queued or retrying jobs can be cancelled",
                id.0
            ))),
        }
    }
}

/// A cursor from a previous page; empty means the first page.
pub(crate) fn parse_cursor(cursor: Option<&str>) -> Result<Option<JobId>, Problem> {
    match cursor.map(str::trim).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => c
            .parse::<JobId>()
            .map(Some)
            .map_err(|_| Problem::invalid_field("cursor", "is not a cursor returned by this endpoint")),
    }
}

/// Builds the listing filter; an unknown state is named.
fn job_filter(
    kind: Option<String>,
    queue: Option<String>,
    state: Option<String>,
) -> Result<JobFilter, Vec<FieldError>> {
    let nonempty = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let state = match nonempty(state) {
        None => None,
        Some(s) => Some(JobState::parse(&s).ok_or_else(|| {
            vec![FieldError::new(
                "state",
                format!(
                    "`{s}` is not a job state (scheduled, queued, running, retrying, succeeded, dead, cancelled, \
                     replayed, discarded)"
                ),
            )]
        })?),
    };
    Ok(JobFilter { kind: nonempty(kind), queue: nonempty(queue), state })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_states_are_named() {
        let errs = job_filter(None, None, Some("finished".into())).unwrap_err();
        assert_eq!(errs[0].field, "state");
        let f = job_filter(Some(" email ".into()), Some("".into()), Some("dead".into())).unwrap();
        assert_eq!((f.kind.as_deref(), f.queue, f.state), (Some("email"), None, Some(JobState::Dead)));
    }
}
