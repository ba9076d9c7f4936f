//! The purge pool's handler: runs one [`PurgeTarget`] with `wharf_jobs::purge` and returns its
//! report as the job's result. The database and object storage are opened on the first purge
//! (a process that never runs the `purge` pool opens nothing): the store this worker already
//! uses when [`PurgeHandler::with_store`] attached it, else `DATABASE_URL`.

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use tokio::sync::OnceCell;
use wharf_jobs::{
    Store, StoreConfig,
    config::{ConfigError, Env},
    kinds::purge::PurgeJob,
    objects::config::ObjectsConfig,
    open_store,
    purge::{PurgeError, Purger, Retention},
};

use crate::handler::{Handler, JobContext, JobError, JobResult};

pub struct PurgeHandler {
    database_url: String,
    objects: ObjectsConfig,
    retention: Retention,
    store: Option<Arc<dyn Store>>,
    purger: OnceCell<Purger>,
}

impl PurgeHandler {
    pub fn from_env(env: &Env, data_dir: &Path) -> Result<Self, ConfigError> {
        let database_url = match env.get("DATABASE_URL") {
            Some(u) => u.to_string(),
            None => format!("sqlite://{}", data_dir.join("wharf.db").display()),
        };
        Ok(PurgeHandler {
            database_url,
            objects: ObjectsConfig::from_env(env, data_dir)?,
            retention: Retention::from_env(env)?,
            store: None,
            purger: OnceCell::new(),
        })
    }

    /// Purges through this store's database instead of opening `DATABASE_URL` again.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    async fn purger(&self) -> Result<&Purger, JobError> {
        self.purger
            .get_or_try_init(|| async {
                let db = match &self.store {
                    Some(s) => s.db(),
                    None => {
                        let cfg = StoreConfig { url: self.database_url.clone(), pool_min: 0, pool_max: 2 };
                        open_store(&cfg).await.map_err(|e| JobError::transient(format!("opening the store: {e}")))?.db()
                    }
                };
                Ok(Purger::new(db, self.objects.open().await, self.retention.clone()))
            })
            .await
    }
}

#[async_trait]
impl Handler<PurgeJob> for PurgeHandler {
    async fn handle(&self, _ctx: &JobContext, job: PurgeJob) -> JobResult {
        let purger = self.purger().await?;
        match purger.run(job.target).await {
            Ok(report) => Ok(Some(report)),
            // Whatever a batch removed stays removed; the retry carries on from there.
            Err(e @ (PurgeError::Store(_) | PurgeError::Objects(_))) => {
                Err(JobError::transient(format!("purge `{}` failed: {e}", job.target.as_str())))
            }
        }
    }
}
