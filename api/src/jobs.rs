//! `GET /v1/jobs/{id}`: a job's state, attempts and result.

use std::sync::Arc;

use chrono::Utc;
use poem_openapi::{OpenApi, param::Path, payload::Json};
use wharf_jobs::{JobId, keys::Scope};

use crate::{Shared, Tag, auth::ApiKey, problem::Problem, views::JobDetail};

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
}
