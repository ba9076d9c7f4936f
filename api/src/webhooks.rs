//! Webhook endpoints (scope `webhooks:manage`): create, list, show, change, delete, rotate the
//! secret, read the attempt log, recover dead deliveries. Secrets are returned only by create
//! and rotate-secret, and are stored encrypted (`WHARF_ENCRYPTION_KEY`); a repeated request
//! with the same `Idempotency-Key` answers the secret by decrypting it again, never from a
//! stored plaintext copy.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use wharf_jobs::{
    JobId,
    idempotency::{IdempotencyKey, StoredResponse},
    keys::{ApiKeyRecord, Scope},
    kinds::{FieldError, JobKind, webhook::WebhookDeliveryJob},
    store::ReplayRefused,
    webhooks::{
        self, AttemptFilter, AttemptRecord, DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT_MS, EndpointPatch, EndpointRecord,
        MAX_CONCURRENCY, MAX_TIMEOUT_MS, NewEndpoint, SECRET_OVERLAP, WebhookRepo, WebhookSecret, WebhookSettings,
        crypto::endpoint_aad,
    },
};

use crate::{
    Shared, Tag,
    auth::ApiKey,
    body::{JsonBody, OptionalJsonBody},
    idempotency::{self, Prior},
    problem::Problem,
    views::Stored,
};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
const MAX_EVENT_TYPES: usize = 100;
const MAX_HEADERS: usize = 20;
const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 1024;

/// A new webhook endpoint. Unknown fields are refused.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(rename = "CreateWebhookEndpoint", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// `https://…` (plain `http` only where `WEBHOOK_ALLOW_HTTP=true`). Literal private,
    /// loopback, link-local and reserved addresses are refused unless `WEBHOOK_ALLOWED_CIDRS`
    /// lists them.
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Event types to receive: exact names (`invoice.paid`) or prefixes (`invoice.*`).
    /// Absent or empty: every event type.
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Per-attempt timeout in milliseconds (default 15000, at most 60000).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Deliveries in flight at once per worker process (default 5, at most 100).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Extra request headers (not `webhook-*`, `content-type`, `host`, …).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// `whsec_` + base64 of 24–64 random bytes. Absent: wharf generates one.
    #[serde(default)]
    pub secret: Option<String>,
}

/// Changes to an endpoint; absent or null fields stay as they are. Enabling a disabled
/// endpoint clears its failure streak.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(rename = "UpdateWebhookEndpoint", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointRequest {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Replaces every custom header.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

/// A new secret for `rotate-secret`; absent: wharf generates one.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(rename = "RotateWebhookSecret", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    #[serde(default)]
    pub secret: Option<String>,
}

/// Which dead deliveries to re-enqueue: those that died in `[since, until)`.
#[derive(Debug, Clone, Object, Deserialize)]
#[oai(rename = "RecoverWebhookEndpoint", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// RFC 3339 time.
    pub since: String,
    /// RFC 3339 time; absent: now.
    #[serde(default)]
    pub until: Option<String>,
}

/// A webhook endpoint (never its secret).
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookEndpoint")]
pub struct EndpointView {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    /// Empty: every event type.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why the endpoint is disabled (410 Gone, failing continuously, through the API).
    #[oai(nullable)]
    pub disabled_reason: Option<String>,
    pub timeout_ms: u32,
    pub max_concurrency: u32,
    /// Custom headers; values of credential-like headers are shown as `***`.
    pub headers: BTreeMap<String, String>,
    /// Start of the current run of failed deliveries; null after a success.
    #[oai(nullable)]
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the previous secret still signs (after a rotation).
    #[oai(nullable)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["authorization", "cookie", "token", "secret", "key", "password", "auth"].iter().any(|s| n.contains(s))
}

impl From<&EndpointRecord> for EndpointView {
    fn from(e: &EndpointRecord) -> Self {
        EndpointView {
            id: e.id,
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.event_types.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            timeout_ms: e.timeout_ms,
            max_concurrency: e.max_concurrency,
            headers: e
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), if sensitive(k) { "***".to_string() } else { v.clone() }))
                .collect(),
            failing_since: e.first_failure_at,
            previous_secret_expires_at: e.previous_secret_expires_at.filter(|t| *t > Utc::now()),
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// A created endpoint with its secret, shown this once.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookEndpointWithSecret")]
pub struct EndpointCreated {
    #[oai(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_…`: verify deliveries with it. Shown only now and on rotation.
    pub secret: String,
}

#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookEndpointPage")]
pub struct EndpointPage {
    pub items: Vec<EndpointView>,
    #[oai(nullable)]
    pub next_cursor: Option<Uuid>,
}

/// The new secret after a rotation; the previous one keeps signing for 24 h.
#[derive(Debug, Clone, Object)]
#[oai(rename = "RotatedWebhookSecret")]
pub struct RotatedSecret {
    pub secret: String,
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookAttempt")]
pub struct AttemptView {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub endpoint_id: Uuid,
    /// The delivery job.
    pub job_id: Uuid,
    pub event_id: String,
    pub event_type: String,
    /// 1-based delivery attempt of the job.
    pub attempt: i32,
    #[oai(nullable)]
    pub status_code: Option<i32>,
    /// Null when delivered; `http_4xx`, `http_5xx`, `http_3xx`, `gone`, `timeout`, `connect`,
    /// `refused` (SSRF guard) or `request`.
    #[oai(nullable)]
    pub error_class: Option<String>,
    #[oai(nullable)]
    pub error: Option<String>,
    pub latency_ms: i64,
    /// The first 4 KiB of the response body.
    #[oai(nullable)]
    pub response_body: Option<String>,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        AttemptView {
            id: a.id,
            created_at: a.created_at,
            endpoint_id: a.endpoint_id,
            job_id: a.job_id.0,
            event_id: a.event_id.clone(),
            event_type: a.event_type.clone(),
            attempt: a.attempt,
            status_code: a.status_code,
            error_class: a.error_class.clone(),
            error: a.error.clone(),
            latency_ms: a.latency_ms,
            response_body: a.response_body.clone(),
        }
    }
}

#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookAttemptPage")]
pub struct AttemptPage {
    pub items: Vec<AttemptView>,
    #[oai(nullable)]
    pub next_cursor: Option<Uuid>,
}

#[derive(Debug, Clone, Object)]
#[oai(rename = "RecoveredCount")]
pub struct RecoverCount {
    /// Dead deliveries re-enqueued.
    pub recovered: u64,
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// The endpoint was deleted; its pending deliveries will fail as dead letters.
    #[oai(status = 204)]
    NoContent,
}

/// The webhook settings of this process (`WHARF_ENCRYPTION_KEY`, the address policy).
pub(crate) fn settings(req: &Request) -> Result<Arc<WebhookSettings>, Problem> {
    req.data::<Arc<WebhookSettings>>()
        .cloned()
        .ok_or_else(|| Problem::unavailable("webhooks are not configured in this process"))
}

fn secret_box(s: &WebhookSettings) -> Result<&webhooks::SecretBox, Problem> {
    s.secrets.as_ref().ok_or_else(|| {
        Problem::unavailable("WHARF_ENCRYPTION_KEY is not set: webhook secrets cannot be stored or read")
    })
}

fn no_endpoint(id: &str) -> Problem {
    Problem::not_found(format!("no webhook endpoint `{id}`"))
}

fn parse_uuid(id: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(id).map_err(|_| no_endpoint(id))
}

pub(crate) fn parse_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, Problem> {
    match cursor.map(str::trim).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => Uuid::parse_str(c)
            .map(Some)
            .map_err(|_| Problem::invalid_field("cursor", "is not a cursor returned by this endpoint")),
    }
}

fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>, FieldError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| FieldError::new(field, format!("`{value}` is not an RFC 3339 time such as 2025-01-31T12:00:00Z")))
}

/// Checks the fields shared by create and update; `None` fields are not checked.
#[allow(clippy::too_many_arguments)]
fn check_fields(
    s: &WebhookSettings,
    url: Option<&str>,
    description: Option<&str>,
    event_types: Option<&[String]>,
    timeout_ms: Option<u32>,
    max_concurrency: Option<u32>,
    headers: Option<&BTreeMap<String, String>>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(url) = url {
        if url.len() > MAX_URL {
            errs.push(FieldError::new("url", format!("longer than {MAX_URL} characters")));
        } else if let Err(m) = s.policy.check_url(url) {
            errs.push(FieldError::new("url", m));
        }
    }
    if description.is_some_and(|d| d.len() > MAX_DESCRIPTION) {
        errs.push(FieldError::new("description", format!("longer than {MAX_DESCRIPTION} bytes")));
    }
    if let Some(types) = event_types {
        if types.len() > MAX_EVENT_TYPES {
            errs.push(FieldError::new("event_types", format!("at most {MAX_EVENT_TYPES} entries")));
        }
        for (i, t) in types.iter().enumerate() {
            if let Err(m) = webhooks::validate_filter(t) {
                errs.push(FieldError::new(format!("event_types[{i}]"), m));
            }
        }
    }
    if timeout_ms.is_some_and(|t| !(1..=MAX_TIMEOUT_MS).contains(&t)) {
        errs.push(FieldError::new("timeout_ms", format!("must be between 1 and {MAX_TIMEOUT_MS}")));
    }
    if max_concurrency.is_some_and(|c| !(1..=MAX_CONCURRENCY).contains(&c)) {
        errs.push(FieldError::new("max_concurrency", format!("must be between 1 and {MAX_CONCURRENCY}")));
    }
    if let Some(h) = headers {
        if h.len() > MAX_HEADERS {
            errs.push(FieldError::new("headers", format!("at most {MAX_HEADERS} headers")));
        }
        errs.extend(webhooks::validate_headers(h).into_iter().map(|(f, m)| FieldError::new(f, m)));
    }
    errs
}

fn check_secret(secret: Option<&str>) -> Result<WebhookSecret, Problem> {
    match secret {
        None => Ok(WebhookSecret::generate()),
        Some(s) => WebhookSecret::parse(s).map_err(|m| Problem::validation(vec![FieldError::new("secret", m)])),
    }
}

/// A stored response with the endpoint's current secret put back in (secrets are never stored
/// in the idempotency table).
async fn with_secret(
    repo: &WebhookRepo,
    s: &WebhookSettings,
    tenant: &str,
    mut first: StoredResponse,
    id_field: &str,
) -> Result<StoredResponse, Problem> {
    let id = first.body.get(id_field).and_then(|v| v.as_str()).and_then(|v| Uuid::parse_str(v).ok());
    let Some(e) = (match id {
        Some(id) => repo.endpoint(tenant, id).await?,
        None => None,
    }) else {
        return Err(Problem::conflict("the endpoint this Idempotency-Key created no longer exists"));
    };
    let secret = secret_box(s)?.open(&e.secret_enc, &endpoint_aad(tenant, &e.id)).map_err(|m| {
        tracing::error!(endpoint_id = %e.id, "{m}");
        Problem::internal()
    })?;
    if let Some(obj) = first.body.as_object_mut() {
        obj.insert("secret".into(), secret.into());
        obj.remove("endpoint_id");
    }
    Ok(first)
}

pub struct WebhookEndpointsApi(pub(crate) Arc<Shared>);

impl WebhookEndpointsApi {
    fn repo(&self) -> WebhookRepo {
        WebhookRepo::new(self.0.store.db())
    }

    async fn endpoint(&self, key: &ApiKeyRecord, id: &str) -> Result<EndpointRecord, Problem> {
        let uuid = parse_uuid(id)?;
        self.repo().endpoint(&key.tenant, uuid).await?.ok_or_else(|| no_endpoint(id))
    }
}

#[OpenApi(tag = "Tag::Webhooks")]
impl WebhookEndpointsApi {
    /// Create a webhook endpoint
    ///
    /// Answers the endpoint with its signing secret (`whsec_…`), shown only this once.
    /// Needs the scope `webhooks:manage`.
    #[oai(path = "/v1/webhook-endpoints", method = "post", operation_id = "createWebhookEndpoint")]
    async fn create(
        &self,
        req: &Request,
        auth: ApiKey,
        /// Makes the request safe to retry (see `POST /v1/emails`).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: JsonBody<CreateEndpointRequest>,
    ) -> Result<Stored<EndpointCreated, 201>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::WebhooksManage).await?;
        let settings = settings(req)?;
        let sbox = secret_box(&settings)?;
        let idem = idempotency::parse_header(idempotency_key.0.as_deref())?;
        let raw = body.value()?.unwrap_or_default();
        let r: CreateEndpointRequest =
            body.parse()?.ok_or_else(|| Problem::bad_request("a JSON request body is required"))?;
        let idem = idem.map(|k| IdempotencyKey::new(k, "POST /v1/webhook-endpoints", &raw));
        let repo = self.repo();
        if let Some(k) = &idem
            && let Prior::Repeat(first) = idempotency::lookup(self.0.store.as_ref(), &key.tenant, k).await?
        {
            return Ok(Stored::replay(with_secret(&repo, &settings, &key.tenant, first, "id").await?));
        }
        let mut errs = check_fields(
            &settings,
            Some(&r.url),
            r.description.as_deref(),
            r.event_types.as_deref(),
            r.timeout_ms,
            r.max_concurrency,
            r.headers.as_ref(),
        );
        let secret = match check_secret(r.secret.as_deref()) {
            Ok(s) => Some(s),
            Err(_) => {
                errs.push(FieldError::new("secret", "must be `whsec_` + base64 of 24–64 random bytes"));
                None
            }
        };
        if !errs.is_empty() {
            return Err(Problem::validation(errs));
        }
        let secret = secret.expect("checked above");
        let id = Uuid::now_v7();
        let created = repo
            .create_endpoint(&NewEndpoint {
                id,
                tenant: key.tenant.clone(),
                url: r.url.trim().to_string(),
                description: r.description.unwrap_or_default(),
                event_types: r.event_types.unwrap_or_default(),
                enabled: r.enabled.unwrap_or(true),
                timeout_ms: r.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
                max_concurrency: r.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY),
                headers: r.headers.unwrap_or_default(),
                secret_enc: sbox.seal(secret.expose(), &endpoint_aad(&key.tenant, &id)),
            })
            .await?;
        self.0.audit(&key, "webhook_endpoint.create", Some(id.to_string()), json!({"url": created.url})).await;
        let view = EndpointView::from(&created);
        if let Some(k) = &idem {
            let stored = Stored::<EndpointView, 201>::new(&view);
            idempotency::save(self.0.store.as_ref(), &key.tenant, k, stored.stored()).await;
        }
        Ok(Stored::new(&EndpointCreated { endpoint: view, secret: secret.expose().to_string() }))
    }

    /// List webhook endpoints
    ///
    /// Newest first, paginated by cursor. Needs the scope `webhooks:manage`.
    #[oai(path = "/v1/webhook-endpoints", method = "get", operation_id = "listWebhookEndpoints")]
    async fn list(
        &self,
        auth: ApiKey,
        /// Page size (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<EndpointPage>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::WebhooksManage).await?;
        let after = parse_cursor(cursor.0.as_deref())?;
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let (items, next) = self.repo().list_endpoints(&key.tenant, limit, after).await?;
        Ok(Json(EndpointPage { items: items.iter().map(Into::into).collect(), next_cursor: next }))
    }

    /// Get a webhook endpoint
    ///
    /// Needs the scope `webhooks:manage`.
    #[oai(path = "/v1/webhook-endpoints/:id", method = "get", operation_id = "getWebhookEndpoint")]
    async fn show(&self, auth: ApiKey, id: Path<String>) -> Result<Json<EndpointView>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::WebhooksManage).await?;
        Ok(Json((&self.endpoint(&key, &id.0).await?).into()))
    }

    /// Change a webhook endpoint
    ///
    /// Needs the scope `webhooks:manage`.
    #[oai(path = "/v1/webhook-endpoints/:id", method = "patch", operation_id = "updateWebhookEndpoint")]
    async fn update(
        &self,
        req: &Request,
        auth: ApiKey,
        id: Path<String>,
        body: JsonBody<UpdateEndpointRequest>,
    ) -> Result<Json<EndpointView>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::WebhooksManage).await?;
        let settings = settings(req)?;
        let r: UpdateEndpointRequest = body.parse()?.unwrap_or_default();
        let uuid = parse_uuid(&id.0)?;
        let errs = check_fields(
            &settings,
            r.url.as_deref(),
            r.description.as_deref(),
            r.event_types.as_deref(),
            r.timeout_ms,
            r.max_concurrency,
            r.headers.as_ref(),
        );
        if !errs.is_empty() {
            return Err(Problem::validation(errs));
        }
        let patch = EndpointPatch {
            url: r.url.map(|u| u.trim().to_string()),
            description: r.description,
            event_types: r.event_types,
            enabled: r.enabled,
            timeout_ms: r.timeout_ms,
            max_concurrency: r.max_concurrency,
            headers: r.headers,
        };
        let updated =
            self.repo().update_endpoint(&key.tenant, uuid, &patch).await?.ok_or_else(|| no_endpoint(&id.0))?;
        self.0
            .audit(&key, "webhook_endpoint.update", Some(uuid.to_string()), json!({"enabled": updated.enabled}))
            .await;
        Ok(Json((&updated).into()))
    }

    /// Delete a webhook endpoint
    ///
    /// Pending deliveries to it end as dead letters. Needs the scope `webhooks:manage`.
    #[oai(path = "/v1/webhook-endpoints/:id", method = "delete", operation_id = "deleteWebhookEndpoint")]
    async fn delete(&self, auth: ApiKey, id: Path<String>) -> Result<Deleted, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::WebhooksManage).await?;
        let uuid = parse_uuid(&id.0)?;
        if !self.repo().delete_endpoint(&key.tenant, uuid).await? {
            return Err(no_endpoint(&id.0));
        }
        self.0.audit(&key, "webhook_endpoint.delete", Some(uuid.to_string()), json!({})).await;
        Ok(Deleted::NoContent)
    }

    /// Rotate an endpoint's secret
    ///
    /// Answers the new secret. For 24 hours deliveries carry two signatures, one with the new
    /// secret and one with the previous, so receivers can switch without losing any.
    /// Needs the scope `webhooks:manage`.
    #[oai(path = "/v1/webhook-endpoints/:id/rotate-secret", method = "post", operation_id = "rotateWebhookSecret")]
    async fn rotate(
        &self,
        req: &Request,
        auth: ApiKey,
        id: Path<String>,
        /// Makes the request safe to retry (see `POST /v1/emails`).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: OptionalJsonBody<RotateRequest>,
    ) -> Result<Stored<RotatedSecret, 200>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::WebhooksManage).await?;
        let settings = settings(req)?;
        let sbox = secret_box(&settings)?;
        let r: RotateRequest = body.parse()?.unwrap_or_default();
        let uuid = parse_uuid(&id.0)?;
        let repo = self.repo();
        let idem = idempotency::parse_header(idempotency_key.0.as_deref())?.map(|k| {
            IdempotencyKey::new(
                k,
                &format!("POST /v1/webhook-endpoints/{uuid}/rotate-secret"),
                &json!({"secret": r.secret}),
            )
        });
        if let Some(k) = &idem
            && let Prior::Repeat(first) = idempotency::lookup(self.0.store.as_ref(), &key.tenant, k).await?
        {
            return Ok(Stored::replay(with_secret(&repo, &settings, &key.tenant, first, "endpoint_id").await?));
        }
        let secret = check_secret(r.secret.as_deref())?;
        let until = Utc::now() + chrono::Duration::from_std(SECRET_OVERLAP).expect("24 h fits");
        let sealed = sbox.seal(secret.expose(), &endpoint_aad(&key.tenant, &uuid));
        if !repo.rotate_secret(&key.tenant, uuid, &sealed, until).await? {
            return Err(no_endpoint(&id.0));
        }
        self.0.audit(&key, "webhook_endpoint.rotate_secret", Some(uuid.to_string()), json!({})).await;
        if let Some(k) = &idem {
            let stored = StoredResponse {
                status: 200,
                body: json!({"endpoint_id": uuid, "previous_secret_expires_at": until.to_rfc3339()}),
            };
            idempotency::save(self.0.store.as_ref(), &key.tenant, k, &stored).await;
        }
        Ok(Stored::new(&RotatedSecret { secret: secret.expose().to_string(), previous_secret_expires_at: until }))
    }

    /// List an endpoint's delivery attempts
    ///
    /// Every attempt, newest first: status code or error class, latency, the first 4 KiB of
    /// the response. Needs the scope `webhooks:manage`.
    #[oai(path = "/v1/webhook-endpoints/:id/attempts", method = "get", operation_id = "listWebhookAttempts")]
    async fn attempts(
        &self,
        auth: ApiKey,
        id: Path<String>,
        /// Only attempts of this event.
        event_id: Query<Option<String>>,
        /// Page size (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<AttemptPage>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::WebhooksManage).await?;
        let e = self.endpoint(&key, &id.0).await?;
        let after = parse_cursor(cursor.0.as_deref())?;
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let filter = AttemptFilter { endpoint_id: Some(e.id), event_id: event_id.0.filter(|s| !s.is_empty()) };
        let (items, next) = self.repo().attempts(&key.tenant, &filter, limit, after).await?;
        Ok(Json(AttemptPage { items: items.iter().map(Into::into).collect(), next_cursor: next }))
    }

    /// Recover an endpoint's dead deliveries
    ///
    /// Re-enqueues every dead delivery of this endpoint that died in `[since, until)`, each as a
    /// replay linked to its dead letter (same `webhook-id`, signed with the current secret).
    /// 409 while the endpoint is disabled. Needs the scope `webhooks:manage`.
    #[oai(path = "/v1/webhook-endpoints/:id/recover", method = "post", operation_id = "recoverWebhookEndpoint")]
    async fn recover(
        &self,
        auth: ApiKey,
        id: Path<String>,
        /// Makes the request safe to retry (see `POST /v1/emails`).
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: JsonBody<RecoverRequest>,
    ) -> Result<Stored<RecoverCount, 200>, Problem> {
        let key = self.0.auth.authorize(&auth, Scope::WebhooksManage).await?;
        let r: RecoverRequest = body.parse()?.ok_or_else(|| Problem::bad_request("a JSON request body is required"))?;
        let mut errs = Vec::new();
        let since = parse_time("since", &r.since).map_err(|e| errs.push(e)).ok();
        let until = r
            .until
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .and_then(|u| parse_time("until", u).map_err(|e| errs.push(e)).ok());
        if let (Some(s), Some(u)) = (since, until)
            && u <= s
        {
            errs.push(FieldError::new("until", "must be later than `since`"));
        }
        if !errs.is_empty() {
            return Err(Problem::validation(errs));
        }
        let since = since.expect("checked above");
        let e = self.endpoint(&key, &id.0).await?;
        let idem = idempotency::parse_header(idempotency_key.0.as_deref())?.map(|k| {
            IdempotencyKey::new(
                k,
                &format!("POST /v1/webhook-endpoints/{}/recover", e.id),
                &json!({"since": since.to_rfc3339(), "until": until.map(|u| u.to_rfc3339())}),
            )
        });
        if let Some(k) = &idem
            && let Prior::Repeat(first) = idempotency::lookup(self.0.store.as_ref(), &key.tenant, k).await?
        {
            return Ok(Stored::replay(first));
        }
        if !e.enabled {
            return Err(Problem::conflict(format!(
                "webhook endpoint `{}` is disabled: enable it (PATCH {{\"enabled\": true}}) before recovering",
                e.id
            )));
        }
        let dead = self.repo().dead_deliveries(&key.tenant, WebhookDeliveryJob::KIND, e.id, since, until).await?;
        let mut recovered = 0u64;
        for job in dead {
            match self.0.store.replay(&key.tenant, job, JobId::new(), None).await? {
                Ok(()) => recovered += 1,
                // Replayed or discarded meanwhile by someone else.
                Err(ReplayRefused::NotDead(_) | ReplayRefused::NotFound) => {}
            }
        }
        metrics::counter!("wharf_dead_letters_replayed_total").increment(recovered);
        self.0
            .audit(
                &key,
                "webhook_endpoint.recover",
                Some(e.id.to_string()),
                json!({"since": since, "until": until, "recovered": recovered}),
            )
            .await;
        let response = Stored::<RecoverCount, 200>::new(&RecoverCount { recovered });
        if let Some(k) = &idem {
            idempotency::save(self.0.store.as_ref(), &key.tenant, k, response.stored()).await;
        }
        Ok(response)
    }
}
