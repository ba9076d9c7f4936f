//! Large job payloads in object storage. [`OffloadingStore`] wraps any [`Store`]: on enqueue a
//! payload larger than the threshold is written to `system/payloads/{job_id}.json` and the row
//! keeps only a reference `{"wharf_payload_ref": {"key", "bytes", "sha256"}}`; on claim the
//! reference is read back, so handlers never see it. Everything else passes through.
//!
//! The blob is written before the row: a failed insert leaves an orphan, which the
//! `payload-blobs` purge removes once it is older than an hour (a blob is live while any job
//! row references it — a replay copies the reference).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ObjectError, ObjectStore};
use crate::{
    error::StoreError,
    idempotency::{IdempotencyKey, Idempotent, StoredResponse},
    job::{
        ClaimedJob, Completion, DeadLetterFilter, JobFilter, JobId, JobRecord, JobState, NewJob, Outcome, Page,
        PageRequest,
    },
    keys::{ApiKeyRecord, NewApiKey, Scope},
    store::{CancelRefused, Db, OrphanedJob, QueueCounts, ReplayRefused, Result, Store, Wakeups},
};

/// The field of a payload that stands for a blob.
pub const REF_FIELD: &str = "wharf_payload_ref";
/// Where large payloads live.
pub const PAYLOAD_PREFIX: &str = "system/payloads/";
/// A claimed job whose blob cannot be read right now is retried after this long.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(30);

pub fn payload_key(id: JobId) -> String {
    format!("{PAYLOAD_PREFIX}{id}.json")
}

/// The blob key a stored payload refers to, if it is a reference.
pub fn reference_key(payload: &Value) -> Option<&str> {
    let obj = payload.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.get(REF_FIELD)?.get("key")?.as_str()
}

pub struct OffloadingStore {
    inner: Arc<dyn Store>,
    objects: Arc<dyn ObjectStore>,
    threshold: usize,
}

impl OffloadingStore {
    pub fn wrap(inner: Arc<dyn Store>, objects: Arc<dyn ObjectStore>, threshold: usize) -> Arc<dyn Store> {
        Arc::new(OffloadingStore { inner, objects, threshold })
    }

    /// Writes a large payload out and replaces it by its reference; returns the blob's key.
    async fn offload(&self, job: &mut NewJob) -> Result<Option<String>> {
        if reference_key(&job.payload).is_some() {
            return Ok(None);
        }
        let text = job.payload.to_string();
        if text.len() <= self.threshold {
            return Ok(None);
        }
        let key = payload_key(job.id);
        let bytes = text.len();
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        self.objects.put(&key, text.into_bytes(), Some("application/json")).await?;
        metrics::counter!("wharf_payloads_offloaded_total").increment(1);
        job.payload = json!({ REF_FIELD: { "key": key, "bytes": bytes, "sha256": sha256 } });
        Ok(Some(key))
    }

    /// Best effort: blobs whose rows were not written (the orphan purge catches any left).
    async fn forget(&self, keys: impl IntoIterator<Item = String>) {
        let keys: Vec<String> = keys.into_iter().collect();
        if !keys.is_empty()
            && let Err(e) = self.objects.delete(&keys).await
        {
            tracing::warn!(error = %e, "could not remove unused payload blobs; the payload-blobs purge will");
        }
    }

    /// The payload text a reference stands for, checked against its digest.
    async fn fetch(&self, key: &str, reference: &Value) -> std::result::Result<String, ObjectError> {
        let bytes = self.objects.get(key).await?;
        if let Some(want) = reference.get(REF_FIELD).and_then(|r| r.get("sha256")).and_then(Value::as_str)
            && hex::encode(Sha256::digest(&bytes)) != want
        {
            return Err(ObjectError::Backend(format!("payload blob `{key}` does not match its digest")));
        }
        String::from_utf8(bytes).map_err(|_| ObjectError::Backend(format!("payload blob `{key}` is not UTF-8")))
    }

    /// Dead letters are shown with their payload (and edited from it): those get the real one.
    /// Other states are read for their status only, so the blob is not fetched for them.
    async fn resolve_record(&self, job: &mut JobRecord) -> Result<()> {
        if !matches!(job.state, JobState::Dead | JobState::Replayed | JobState::Discarded) {
            return Ok(());
        }
        if let Some(key) = reference_key(&job.payload).map(str::to_string) {
            match self.fetch(&key, &job.payload).await {
                Ok(text) => job.payload = serde_json::from_str(&text).unwrap_or(Value::String(text)),
                // Shown as the reference: a missing blob must not hide the job.
                Err(e) => tracing::warn!(job.id = %job.id, error = %e, "large payload unavailable"),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for OffloadingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn db(&self) -> Db {
        self.inner.db()
    }
    fn local_wakeups(&self) -> Option<Arc<Wakeups>> {
        self.inner.local_wakeups()
    }
    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }
    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }

    async fn enqueue(
        &self,
        mut job: NewJob,
        idempotency: Option<(IdempotencyKey, StoredResponse)>,
    ) -> Result<Idempotent<()>> {
        let offloaded = self.offload(&mut job).await?;
        let result = self.inner.enqueue(job, idempotency).await;
        // A repeated idempotency key (or a failed insert) leaves no row for the blob just written.
        if !matches!(result, Ok(Idempotent::Fresh(()))) {
            self.forget(offloaded).await;
        }
        result
    }

    async fn enqueue_many(&self, mut jobs: Vec<NewJob>) -> Result<u64> {
        let mut offloaded = Vec::new();
        for job in &mut jobs {
            offloaded.extend(self.offload(job).await?);
        }
        let result = self.inner.enqueue_many(jobs).await;
        if result.is_err() {
            self.forget(offloaded).await;
        }
        result
    }

    async fn job(&self, tenant: &str, id: JobId) -> Result<Option<JobRecord>> {
        let mut job = self.inner.job(tenant, id).await?;
        if let Some(j) = &mut job {
            self.resolve_record(j).await?;
        }
        Ok(job)
    }

    async fn jobs(&self, tenant: &str, filter: &JobFilter, page: &PageRequest) -> Result<Page<JobRecord>> {
        // Listings show offloaded payloads as their reference: fetching every blob of a page
        // would make a listing as slow as the object store.
        self.inner.jobs(tenant, filter, page).await
    }

    async fn cancel(&self, tenant: &str, id: JobId) -> Result<std::result::Result<JobRecord, CancelRefused>> {
        let mut cancelled = self.inner.cancel(tenant, id).await?;
        if let Ok(j) = &mut cancelled {
            self.resolve_record(j).await?;
        }
        Ok(cancelled)
    }

    async fn dead_letters(
        &self,
        tenant: &str,
        filter: &DeadLetterFilter,
        page: &PageRequest,
    ) -> Result<Page<JobRecord>> {
        self.inner.dead_letters(tenant, filter, page).await
    }

    async fn replay(
        &self,
        tenant: &str,
        id: JobId,
        new_id: JobId,
        payload: Option<Value>,
    ) -> Result<std::result::Result<(), ReplayRefused>> {
        let payload = match payload {
            Some(p) => {
                let mut carrier = NewJob::new(tenant, "", "", p);
                carrier.id = new_id;
                let key = self.offload(&mut carrier).await?;
                Some((carrier.payload, key))
            }
            None => None,
        };
        let (payload, key) = payload.map_or((None, None), |(p, k)| (Some(p), k));
        let result = self.inner.replay(tenant, id, new_id, payload).await;
        if !matches!(result, Ok(Ok(()))) {
            self.forget(key).await;
        }
        result
    }

    async fn replay_matching(&self, tenant: &str, filter: &DeadLetterFilter) -> Result<u64> {
        self.inner.replay_matching(tenant, filter).await
    }
    async fn discard(&self, tenant: &str, id: JobId) -> Result<bool> {
        self.inner.discard(tenant, id).await
    }
    async fn queue_counts(&self, tenant: Option<&str>) -> Result<Vec<QueueCounts>> {
        self.inner.queue_counts(tenant).await
    }
    async fn idempotency_lookup(&self, tenant: &str, key: &str) -> Result<Option<(String, StoredResponse)>> {
        self.inner.idempotency_lookup(tenant, key).await
    }
    async fn idempotency_save(&self, tenant: &str, key: &IdempotencyKey, response: &StoredResponse) -> Result<()> {
        self.inner.idempotency_save(tenant, key, response).await
    }
    async fn register_worker(&self, worker: &str, queues: &[String]) -> Result<()> {
        self.inner.register_worker(worker, queues).await
    }
    async fn heartbeat(&self, worker: &str) -> Result<()> {
        self.inner.heartbeat(worker).await
    }
    async fn deregister_worker(&self, worker: &str) -> Result<()> {
        self.inner.deregister_worker(worker).await
    }

    /// Claims through the inner store, then reads every referenced payload. A job whose blob
    /// cannot be read is settled here and not handed out: retried later if storage failed,
    /// dead at once if the blob is gone (it will never come back).
    async fn claim(&self, queue: &str, worker: &str, limit: u32, max_attempts: i32) -> Result<Vec<ClaimedJob>> {
        let jobs = self.inner.claim(queue, worker, limit, max_attempts).await?;
        let mut out = Vec::with_capacity(jobs.len());
        let mut failed = Vec::new();
        for mut job in jobs {
            // References are small: skip parsing anything that is plainly not one.
            let reference = if job.payload.len() < 1024 && job.payload.contains(REF_FIELD) {
                serde_json::from_str::<Value>(&job.payload).ok()
            } else {
                None
            };
            let Some((key, reference)) = reference.and_then(|r| reference_key(&r).map(str::to_string).map(|k| (k, r)))
            else {
                out.push(job);
                continue;
            };
            match self.fetch(&key, &reference).await {
                Ok(text) => {
                    job.payload = text;
                    out.push(job);
                }
                Err(e) => {
                    let error = format!("large payload `{key}` could not be read: {e}");
                    tracing::warn!(job.id = %job.id, %error, "job not started");
                    let outcome = match e {
                        ObjectError::NotFound(_) | ObjectError::InvalidKey(..) => {
                            Outcome::Dead { error: format!("permanent error: {error}") }
                        }
                        ObjectError::Backend(_) if job.attempt < job.max_attempts => {
                            Outcome::Retry { error, run_at: Utc::now() + UNAVAILABLE_RETRY }
                        }
                        ObjectError::Backend(_) => Outcome::Dead { error },
                    };
                    failed.push(Completion { id: job.id, attempt: job.attempt, started_at: Utc::now(), outcome });
                }
            }
        }
        if !failed.is_empty() {
            self.inner.complete(worker, &failed).await?;
        }
        Ok(out)
    }

    async fn complete(&self, worker: &str, completions: &[Completion]) -> Result<u64> {
        self.inner.complete(worker, completions).await
    }
    async fn orphaned(&self, lease: Duration, limit: u32) -> Result<Vec<OrphanedJob>> {
        self.inner.orphaned(lease, limit).await
    }
    async fn prune_workers(&self, older_than: Duration) -> Result<u64> {
        self.inner.prune_workers(older_than).await
    }
    async fn wakeups(&self) -> Result<Arc<Wakeups>> {
        self.inner.wakeups().await
    }
    async fn create_api_key(&self, tenant: &str, scopes: &[Scope], key: &NewApiKey) -> Result<()> {
        self.inner.create_api_key(tenant, scopes, key).await
    }
    async fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        self.inner.api_key(hash).await
    }
    async fn count_api_keys(&self) -> Result<i64> {
        self.inner.count_api_keys().await
    }
}

impl From<StoreError> for ObjectError {
    fn from(e: StoreError) -> Self {
        ObjectError::Backend(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_reference_is_a_reference() {
        let r = json!({ REF_FIELD: { "key": "system/payloads/x.json", "bytes": 3 } });
        assert_eq!(reference_key(&r), Some("system/payloads/x.json"));
        assert_eq!(reference_key(&json!({ REF_FIELD: { "key": "k" }, "other": 1 })), None);
        assert_eq!(reference_key(&json!({ "op": "noop" })), None);
        assert_eq!(reference_key(&json!("text")), None);
    }
}
