//! `GET /v1/queues`: per queue, how many of the tenant's jobs wait, run, retry, are dead, and
//! how many succeeded in the last minute. Operators' all-tenant view is `/metrics`.

use std::sync::Arc;

use poem_openapi::{OpenApi, payload::Json};
use wharf_jobs::{keys::Scope, queue, store::QueueCounts};

use crate::{
    Shared, Tag,
    auth::ApiKey,
    problem::Problem,
    views::{QueueList, QueueView},
};

pub struct QueuesApi(pub(crate) Arc<Shared>);

/// Every known queue (zeros included, so a dashboard's rows do not come and go), then any
/// other queue the store holds jobs for.
pub(crate) fn with_known_queues(mut counts: Vec<QueueCounts>) -> Vec<QueueCounts> {
    for name in queue::ALL {
        if !counts.iter().any(|c| c.queue == *name) {
            counts.push(QueueCounts { queue: name.to_string(), ..Default::default() });
        }
    }
    counts.sort_by(|a, b| a.queue.cmp(&b.queue));
    counts
}

#[OpenApi(tag = "Tag::Jobs")]
impl QueuesApi {
    /// List queues
    ///
    /// Per queue: the tenant's jobs queued (due now), scheduled, running, retrying and dead,
    /// and those that succeeded in the last minute. Needs the scope `jobs:read`.
    #[oai(path = "/v1/queues", method = "get", operation_id = "listQueues")]
    async fn list(&self, auth: ApiKey) -> Result<Json<QueueList>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::JobsRead).await?;
        let counts = with_known_queues(self.0.store.queue_counts(Some(&key.tenant)).await?);
        Ok(Json(QueueList { items: counts.iter().map(QueueView::from).collect() }))
    }
}
