//! wharf's HTTP API: authenticates callers, validates and enqueues jobs, shows them, and lets
//! on-call staff work the dead-letter queue. Every error is an RFC 9457 problem.
//!
//! ```no_run
//! # async fn run(store: std::sync::Arc<dyn wharf_jobs::Store>) -> std::io::Result<()> {
//! let app = wharf_api::app(wharf_api::ApiState { store, public_url: "http://127.0.0.1:4000".into() });
//! poem::Server::new(poem::listener::TcpListener::bind("127.0.0.1:4000")).run(app).await
//! # }
//! ```

mod audit;
mod auth;
mod body;
mod console;
mod dead_letters;
mod email_suppressions;
mod email_templates;
mod emails;
mod embeddings;
mod events;
mod health;
mod idempotency;
mod jobs;
mod payloads;
pub mod problem;
mod queues;
mod schedules;
pub mod trace;
pub mod views;
mod webhooks;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Response, Route};
use poem_openapi::{OpenApiService, Tags};
use wharf_jobs::{JobId, Store};

/// What the API needs to run.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    /// The URL clients reach the API at, without a trailing slash (`http://127.0.0.1:4000`):
    /// status URLs and the OpenAPI document's server are built from it.
    pub public_url: String,
}

/// State shared by the handlers.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub audit: wharf_jobs::audit::AuditLog,
    pub public_url: String,
    pub auth: auth::Authenticator,
}

impl Shared {
    pub fn status_url(&self, id: JobId) -> String {
        format!("{}/v1/jobs/{id}", self.public_url)
    }
}

#[derive(Tags)]
pub(crate) enum Tag {
    /// Submit work and follow it.
    Jobs,
    /// Failed work: inspect, replay, discard.
    DeadLetters,
    /// Webhook endpoints, events and delivery attempts.
    Webhooks,
    /// Liveness and readiness probes.
    Health,
    /// Cron schedules and what they last fired.
    Schedules,
    /// Email templates and the suppression list.
    Email,
}

type Apis = (
    health::HealthApi,
    emails::EmailsApi,
    embeddings::EmbeddingsApi,
    email_templates::EmailTemplatesApi,
    email_suppressions::EmailSuppressionsApi,
    jobs::JobsApi,
    queues::QueuesApi,
    dead_letters::DeadLettersApi,
    webhooks::WebhookEndpointsApi,
    events::EventsApi,
    audit::AuditApi,
    schedules::SchedulesApi,
);

fn service(state: ApiState) -> OpenApiService<Apis, ()> {
    let public_url = state.public_url.trim_end_matches('/').to_string();
    let shared = Arc::new(Shared {
        auth: auth::Authenticator::new(state.store.clone()),
        audit: wharf_jobs::audit::AuditLog::new(state.store.db()),
        store: state.store,
        public_url: public_url.clone(),
    });
    let apis = (
        health::HealthApi(shared.clone()),
        emails::EmailsApi(shared.clone()),
        embeddings::EmbeddingsApi::new(shared.clone()),
        email_templates::EmailTemplatesApi(shared.clone()),
        email_suppressions::EmailSuppressionsApi(shared.clone()),
        jobs::JobsApi(shared.clone()),
        queues::QueuesApi(shared.clone()),
        dead_letters::DeadLettersApi(shared.clone()),
        webhooks::WebhookEndpointsApi(shared.clone()),
        events::EventsApi(shared.clone()),
        audit::AuditApi(shared.clone()),
        schedules::SchedulesApi(shared),
    );
    OpenApiService::new(apis, "wharf", env!("CARGO_PKG_VERSION"))
        .description(
            "Durable jobs over HTTP. Authenticate with `Authorization: Bearer <api key>`. Every POST \
             honours an `Idempotency-Key` header for 24 h. A W3C `traceparent` header is carried \
             into the jobs a request enqueues. Errors are RFC 9457 `application/problem+json`.",
        )
        .server(public_url)
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi_json(state: ApiState) -> String {
    service(state).spec()
}

/// The whole API, ready for `poem::Server`: `/v1/…`, `/healthz`, `/readyz`, `/openapi.json`,
/// `/docs` (Swagger UI) and `/console` (the web console). The binary adds `/metrics`.
pub fn app(state: ApiState) -> impl Endpoint<Output = Response> {
    let service = service(state);
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/console", console::routes())
        .nest("/", service)
        .around(problem::ensure)
        .around(trace::instrument)
}
