//! End-to-end tests of the API against a real SQLite store in a temporary directory.

mod dead_letters;
mod emails;
mod protocol;
mod tracing_spans;

use std::sync::Arc;

use chrono::Utc;
use poem::{
    EndpointExt,
    endpoint::BoxEndpoint,
    http::{HeaderMap, StatusCode},
    test::{TestClient, TestRequestBuilder},
};
use serde_json::{Value, json};
use tempfile::TempDir;
use wharf_jobs::{
    Completion, JobId, NewJob, Outcome, Store, StoreConfig,
    keys::{NewApiKey, Scope},
    open_store,
};

use crate::{ApiState, app, problem};

pub const PUBLIC_URL: &str = "http://wharf.test:4000";
pub const WORKER: &str = "test-worker";

pub struct Harness {
    _dir: TempDir,
    pub store: Arc<dyn Store>,
    pub cli: TestClient<BoxEndpoint<'static>>,
}

pub type Req<'a> = TestRequestBuilder<'a, BoxEndpoint<'static>>;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with this status; returns its `errors[].field`s.
    #[track_caller]
    pub fn assert_problem(&self, status: u16) -> Vec<String> {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        assert!(
            self.content_type().starts_with(problem::CONTENT_TYPE),
            "not a problem: {:?} {}",
            self.content_type(),
            self.text
        );
        assert_eq!(self.json["status"], json!(status), "{}", self.text);
        assert!(self.json["type"].is_string() && self.json["title"].is_string(), "{}", self.text);
        assert!(self.json["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}", self.text);
        self.json["errors"]
            .as_array()
            .map(|errs| errs.iter().map(|e| e["field"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        &self.json
    }
}

pub async fn send(req: Req<'_>) -> Reply {
    let resp = req.send().await.0;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.into_body().into_string().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, text, json }
}

impl Harness {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&StoreConfig::new(format!("sqlite://{}/t.db", dir.path().display()))).await.unwrap();
        store.migrate().await.unwrap();
        store.register_worker(WORKER, &["email".into(), "diagnostic".into()]).await.unwrap();
        let cli = TestClient::new(app(ApiState { store: store.clone(), public_url: format!("{PUBLIC_URL}/") }).boxed());
        Harness { _dir: dir, store, cli }
    }

    /// A new API key's secret.
    pub async fn key(&self, tenant: &str, scopes: &[Scope]) -> String {
        let key = NewApiKey::generate();
        self.store.create_api_key(tenant, scopes, &key).await.unwrap();
        key.secret
    }

    pub async fn admin(&self, tenant: &str) -> String {
        self.key(tenant, &[Scope::Admin]).await
    }

    /// Enqueues `job` directly and makes it a dead letter with `error`; one job at a time, so
    /// the claim takes exactly this job.
    pub async fn kill(&self, job: NewJob, error: &str) -> JobId {
        let id = job.id;
        let queue = job.queue.clone();
        self.store.enqueue(job, None).await.unwrap();
        let claimed = self.store.claim(&queue, WORKER, 10, 5).await.unwrap();
        assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), vec![id], "claim took other jobs");
        let done = self
            .store
            .complete(
                WORKER,
                &[Completion {
                    id,
                    attempt: claimed[0].attempt,
                    started_at: Utc::now(),
                    outcome: Outcome::Dead { error: error.into() },
                }],
            )
            .await
            .unwrap();
        assert_eq!(done, 1);
        id
    }

    /// A dead email of `tenant`.
    pub async fn dead_email(&self, tenant: &str, error: &str) -> JobId {
        self.kill(NewJob::new(tenant, "email", "email", email_body()), error).await
    }

    /// A dead diagnostic job of `tenant`.
    pub async fn dead_diagnostic(&self, tenant: &str, error: &str) -> JobId {
        self.kill(NewJob::new(tenant, "diagnostic", "diagnostic", json!({"op": "noop"})), error).await
    }
}

pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

pub fn email_body() -> Value {
    json!({
        "from": "Wharf <noreply@example.com>",
        "to": ["ann@example.com"],
        "subject": "Hello",
        "text": "Hi Ann",
    })
}
