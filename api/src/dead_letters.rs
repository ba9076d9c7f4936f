//! The dead-letter queue: list, show, replay (one, or all matching a filter), discard.
//! Operator actions are logged with the acting key (`audit` events).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};
use serde::Deserialize;
use serde_json::json;
use wharf_jobs::{
    DeadLetterFilter, JobId, JobRecord, JobState, PageRequest,
    idempotency::IdempotencyKey,
    keys::{ApiKeyRecord, Scope},
    kinds::FieldError,
    store::ReplayRefused,
};

use crate::{
    Shared, Tag,
    auth::ApiKey,
    body::{JsonBody, OptionalJsonBody},
    idempotency::{self, Prior},
    jobs::parse_id,
    payloads,
    problem::Problem,
    views::{DeadLetterDetail, DeadLetterPage, JobDetail, JobStateView, JobView, ReplayAccepted, ReplayCount, Stored},
};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// Replay one dead letter, optionally with an edited payload.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(rename = "ReplayDeadLetter", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Replaces the job's payload; it must be valid for the job's kind (for `email`, the
    /// fields of `POST /v1/emails`). Absent or null: replay the payload unchanged.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
}

/// Which dead letters to replay. `{}` replays every dead letter of the tenant.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(rename = "ReplayDeadLetters", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct BulkReplayRequest {
    /// Only jobs of this kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// Only jobs whose last error contains this text (case-insensitive).
    #[serde(default)]
    pub error: Option<String>,
    /// Only jobs that died at or after this RFC 3339 time.
    #[serde(default)]
    pub since: Option<String>,
    /// Only jobs that died before this RFC 3339 time.
    #[serde(default)]
    pub until: Option<String>,
}

#[derive(ApiResponse)]
pub enum Discarded {
    /// The dead letter was discarded.
    #[oai(status = 204)]
    NoContent,
}

pub struct DeadLettersApi(pub(crate) Arc<Shared>);

fn is_dead_letter(state: JobState) -> bool {
    matches!(state, JobState::Dead | JobState::Replayed | JobState::Discarded)
}

fn no_dead_letter(id: &str) -> Problem {
    Problem::not_found(format!("no dead letter `{id}`"))
}

/// Parses an RFC 3339 time. A `+` in a query string arrives as a space; it is taken back.
fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, FieldError> {
    let v = value.trim();
    DateTime::parse_from_rfc3339(v)
        .or_else(|e| if v.contains(' ') { DateTime::parse_from_rfc3339(&v.replace(' ', "+")) } else { Err(e) })
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| FieldError::new(field, format!("`{value}` is not an RFC 3339 time such as 2025-01-31T12:00:00Z")))
}

/// Builds a filter; each bad field is reported.
fn filter(
    kind: Option<String>,
    error: Option<String>,
    since: Option<String>,
    until: Option<String>,
) -> Result<DeadLetterFilter, Vec<FieldError>> {
    let mut errors = Vec::new();
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let mut time = |field: &str, v: Option<String>| match nonempty(v).map(|v| parse_time(field, &v)) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let since = time("since", since);
    let until = time("until", until);
    if let (Some(s), Some(u)) = (since, until)
        && u <= s
    {
        errors.push(FieldError::new("until", "must be later than `since`"));
    }
    if errors.is_empty() {
        Ok(DeadLetterFilter { kind: nonempty(kind), error: nonempty(error), since, until })
    } else {
        Err(errors)
    }
}

/// The canonical form of a filter, for idempotency fingerprints.
fn filter_json(f: &DeadLetterFilter) -> serde_json::Value {
    json!({
        "kind": f.kind,
        "error": f.error,
        "since": f.since.map(|t| t.to_rfc3339()),
        "until": f.until.map(|t| t.to_rfc3339()),
    })
}

impl DeadLettersApi {
    async fn dead_letter(&self, key: &ApiKeyRecord, id: &str) -> Result<JobRecord, Problem> {
        let job_id = parse_id(id).map_err(|_| no_dead_letter(id))?;
        tracing::Span::current().record("job_id", tracing::field::display(job_id));
        match self.0.store.job(&key.tenant, job_id).await? {
            Some(job) if is_dead_letter(job.state) => Ok(job),
            _ => Err(no_dead_letter(id)),
        }
    }
}

#[OpenApi(tag = "Tag::DeadLetters")]
impl DeadLettersApi {
    /// List dead letters
    ///
    /// Jobs that failed for good, newest first, filtered and paginated by cursor.
    /// Needs the scope `dlq:read`.
    #[oai(path = "/v1/dead-letters", method = "get", operation_id = "listDeadLetters")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: ApiKey,
        /// Only jobs of this kind (`email`).
        kind: Query<Option<String>>,
        /// Only jobs whose last error contains this text (case-insensitive).
        error: Query<Option<String>>,
        /// Only jobs that died at or after this RFC 3339 time.
        since: Query<Option<String>>,
        /// Only jobs that died before this RFC 3339 time.
        until: Query<Option<String>>,
        /// Page size (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<DeadLetterPage>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::DlqRead).await?;
        let filter = filter(kind.0, error.0, since.0, until.0)
            .map_err(|errors| Problem::bad_request("invalid query parameters").with_errors(errors))?;
        let after = match cursor.0.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(
                c.parse::<JobId>()
                    .map_err(|_| Problem::invalid_field("cursor", "is not a cursor returned by this endpoint"))?,
            ),
        };
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let page = self.0.store.dead_letters(&key.tenant, &filter, &PageRequest { limit, after }).await?;
        let now = Utc::now();
        Ok(Json(DeadLetterPage {
            items: page.items.iter().map(|j| JobView::new(j, now)).collect(),
            next_cursor: page.next.map(|id| id.0),
        }))
    }

    /// Get a dead letter
    ///
    /// A dead (or already replayed or discarded) job with every attempt's error and its
    /// payload. Needs the scope `dlq:read`.
    #[oai(path = "/v1/dead-letters/:id", method = "get", operation_id = "getDeadLetter")]
    async fn show(&self, auth: ApiKey, id: Path<String>) -> Result<Json<DeadLetterDetail>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::DlqRead).await?;
        let job = self.dead_letter(&key, &id.0).await?;
        Ok(Json(DeadLetterDetail { job: JobDetail::new(&job, Utc::now()), payload: job.payload.clone() }))
    }

    /// Replay a dead letter
    ///
    /// Enqueues the dead job again as a new job linked to it, optionally with an edited
    /// payload; the dead letter becomes `replayed`. 409 if it is not dead (any more).
    /// Needs the scope `dlq:write`.
    #[oai(path = "/v1/dead-letters/:id/replay", method = "post", operation_id = "replayDeadLetter")]
    async fn replay(
        &self,
        auth: ApiKey,
        id: Path<String>,
        /// Makes the request safe to retry (see `POST /v1/emails`).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: OptionalJsonBody<ReplayRequest>,
    ) -> Result<Stored<ReplayAccepted, 202>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::DlqWrite).await?;
        let idem_key = idempotency::parse_header(idempotency_key.0.as_deref())?;
        let edited = body.parse::<ReplayRequest>()?.unwrap_or_default().payload.filter(|p| !p.is_null());
        let job_id = parse_id(&id.0).map_err(|_| no_dead_letter(&id.0))?;
        tracing::Span::current().record("job_id", tracing::field::display(job_id));

        let idem_key = idem_key.map(|k| {
            IdempotencyKey::new(k, &format!("POST /v1/dead-letters/{job_id}/replay"), &json!({ "payload": edited }))
        });
        if let Some(k) = &idem_key
            && let Prior::Repeat(first) = idempotency::lookup(self.0.store.as_ref(), &key.tenant, k).await?
        {
            return Ok(Stored::replay(first));
        }

        let job = self.0.store.job(&key.tenant, job_id).await?.ok_or_else(|| no_dead_letter(&id.0))?;
        if job.state != JobState::Dead {
            return Err(not_dead(&id.0, job.state.as_str()));
        }
        let payload = edited.map(|p| payloads::check(&job.kind, p, "payload")).transpose()?;
        let edited = payload.is_some();
        let new_id = JobId::new();
        match self.0.store.replay(&key.tenant, job_id, new_id, payload).await? {
            Ok(()) => {}
            Err(ReplayRefused::NotFound) => return Err(no_dead_letter(&id.0)),
            Err(ReplayRefused::NotDead(state)) => return Err(not_dead(&id.0, &state)),
        }
        metrics::counter!("wharf_jobs_enqueued_total", "kind" => job.kind.clone()).increment(1);
        metrics::counter!("wharf_dead_letters_replayed_total").increment(1);
        self.0
            .audit(
                &key,
                "dlq.replay",
                Some(job_id.to_string()),
                serde_json::json!({"new_job_id": new_id, "edited": edited}),
            )
            .await;

        let response = Stored::<ReplayAccepted, 202>::new(&ReplayAccepted {
            id: new_id.0,
            status: JobStateView::Queued,
            status_url: self.0.status_url(new_id),
            replay_of: job_id.0,
        });
        if let Some(k) = &idem_key {
            idempotency::save(self.0.store.as_ref(), &key.tenant, k, response.stored()).await;
        }
        Ok(response)
    }

    /// Replay dead letters in bulk
    ///
    /// Replays every dead letter matching the filter (the same as the list's); answers how many.
    /// Needs the scope `dlq:write`.
    #[oai(path = "/v1/dead-letters/replay", method = "post", operation_id = "replayDeadLetters")]
    async fn replay_matching(
        &self,
        auth: ApiKey,
        /// Makes the request safe to retry (see `POST /v1/emails`).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: JsonBody<BulkReplayRequest>,
    ) -> Result<Stored<ReplayCount, 200>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::DlqWrite).await?;
        let idem_key = idempotency::parse_header(idempotency_key.0.as_deref())?;
        let req = body.parse::<BulkReplayRequest>()?.unwrap_or_default();
        let filter = filter(req.kind, req.error, req.since, req.until).map_err(Problem::validation)?;

        let idem_key = idem_key.map(|k| IdempotencyKey::new(k, "POST /v1/dead-letters/replay", &filter_json(&filter)));
        if let Some(k) = &idem_key
            && let Prior::Repeat(first) = idempotency::lookup(self.0.store.as_ref(), &key.tenant, k).await?
        {
            return Ok(Stored::replay(first));
        }

        let replayed = self.0.store.replay_matching(&key.tenant, &filter).await?;
        metrics::counter!("wharf_dead_letters_replayed_total").increment(replayed);
        self.0
            .audit(
                &key,
                "dlq.replay_matching",
                None,
                serde_json::json!({"filter": filter_json(&filter), "replayed": replayed}),
            )
            .await;

        let response = Stored::<ReplayCount, 200>::new(&ReplayCount { replayed });
        if let Some(k) = &idem_key {
            idempotency::save(self.0.store.as_ref(), &key.tenant, k, response.stored()).await;
        }
        Ok(response)
    }

    /// Discard a dead letter
    ///
    /// Marks a dead job `discarded`: it will not be replayed. Needs the scope `dlq:write`.
    #[oai(path = "/v1/dead-letters/:id", method = "delete", operation_id = "discardDeadLetter")]
    async fn discard(&self, auth: ApiKey, id: Path<String>) -> Result<Discarded, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::DlqWrite).await?;
        let job_id = parse_id(&id.0).map_err(|_| no_dead_letter(&id.0))?;
        tracing::Span::current().record("job_id", tracing::field::display(job_id));
        if !self.0.store.discard(&key.tenant, job_id).await? {
            return Err(no_dead_letter(&id.0));
        }
        self.0.audit(&key, "dlq.discard", Some(job_id.to_string()), serde_json::json!({})).await;
        Ok(Discarded::NoContent)
    }
}

fn not_dead(id: &str, state: &str) -> Problem {
    Problem::conflict(format!("job `{id}` is {state}, not dead: only dead letters can be replayed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_each_bad_time() {
        let errs = filter(None, None, Some("yesterday".into()), Some("2025-13-01T00:00:00Z".into())).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["since", "until"]);
    }

    #[test]
    fn filters_parse_times_and_drop_empty_values() {
        let f = filter(Some("".into()), Some("smtp".into()), Some("2025-01-31T12:00:00 01:00".into()), None).unwrap();
        assert_eq!(f.kind, None);
        assert_eq!(f.error.as_deref(), Some("smtp"));
        assert_eq!(f.since.unwrap().to_rfc3339(), "2025-01-31T11:00:00+00:00");
        let errs = filter(None, None, Some("2025-02-01T00:00:00Z".into()), Some("2025-01-01T00:00:00Z".into()));
        assert_eq!(errs.unwrap_err()[0].field, "until");
    }
}
