//! `GET /healthz` (the process answers) and `GET /readyz` (the store answers and is migrated;
//! never depends on queue sizes). Neither needs an API key.

use std::sync::Arc;

use poem_openapi::{OpenApi, payload::Json};
use wharf_jobs::StoreError;

use crate::{Shared, Tag, problem::Problem, views::HealthStatus};

pub struct HealthApi(pub(crate) Arc<Shared>);

#[OpenApi(tag = "Tag::Health")]
impl HealthApi {
    /// Liveness
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<HealthStatus> {
        Json(HealthStatus { status: "ok".into() })
    }

    /// Readiness
    ///
    /// 200 when the store answers and every migration is applied; 503 otherwise.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> Result<Json<HealthStatus>, Problem> {
        match self.0.store.ready().await {
            Ok(()) => Ok(Json(HealthStatus { status: "ready".into() })),
            Err(StoreError::NotMigrated) => Err(Problem::unavailable("migrations are not applied")),
            Err(e) => {
                tracing::warn!(error = %e, "not ready");
                Err(Problem::unavailable("the store is not reachable"))
            }
        }
    }
}
