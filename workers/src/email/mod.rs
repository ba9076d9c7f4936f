//! The email pool's handler: resolves an [`EmailJob`] (recipients minus the tenant's
//! suppression list, a wharf template rendered, attachments decoded or fetched from object
//! storage) and hands it to the configured providers in order — `EMAIL_PROVIDER`, then
//! `EMAIL_FALLBACK_PROVIDERS` — failing over only on transient errors. Each provider has an
//! in-process circuit breaker that skips it while it is down.
//!
//! With the store attached ([`EmailHandler::with_store`], as the worker runs it), every accepted
//! email is written to the send ledger before the handler returns, and an email whose identity
//! is already in the ledger is not sent again (a retry after a crash, a replay). The identity is
//! the original job of a replay chain, so replays share it, unless a replay's edited payload
//! introduced `force_resend: true`. The `Message-ID` (`<{identity}@wharf>`) and Resend's
//! `Idempotency-Key` (`wharf-{identity}`) derive from it.
//!
//! Errors: SMTP 5xx and provider 4xx (other than 401/403/408/429) are permanent (dead letter at
//! once); network failures, timeouts, 5xx and 429 are transient (the next provider, then a
//! retry with backoff honouring `Retry-After`). A recipient a provider reports as inactive or
//! suppressed is added to the suppression list; an email whose every `to` recipient is
//! suppressed is not sent and its job succeeds with `result.status = "suppressed"`.

pub mod config;
mod http;
pub mod message;
mod outbox;
pub mod postmark;
pub mod resend;
mod ses;
mod smtp;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use base64::Engine;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use wharf_jobs::{
    JobId, Store, StoreError,
    config::ConfigError,
    email::{SendLedger, SendRecord, SuppressionList, SuppressionReason, TemplateStore},
    kinds::email::{EmailJob, split_mailbox},
    objects::{ObjectError, ObjectStore, config::ObjectsConfig, is_tenant_key, tenant_prefix},
};

pub use config::{
    BreakerConfig, DEFAULT_SMTP_PORT, DEFAULT_TIMEOUT, EmailConfig, EmailProviderConfig, PostmarkConfig, ResendConfig,
    Secret, SesConfig, SmtpConfig, SmtpCredentials,
};
pub use message::{InvalidMessage, JOB_ID_HEADER, TAGS_HEADER, build_message, build_mime, message_id_for};

use crate::breaker::{Admit, Breaker};
use crate::handler::{Handler, JobContext, JobError, JobResult};
use outbox::OutboxProvider;
use postmark::PostmarkProvider;
use resend::ResendProvider;
use ses::SesProvider;
use smtp::SmtpProvider;

/// Subject and bodies of an email: the request's own, or rendered from a wharf template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// An attachment's bytes, decoded or fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedAttachment {
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// An email ready for a provider.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The job whose attempt sends it (`X-Wharf-Job-Id`).
    pub job_id: JobId,
    /// The email's identity (see the module docs): `Message-ID`, `Idempotency-Key`, ledger.
    pub identity: JobId,
    /// The request, minus suppressed recipients.
    pub email: EmailJob,
    /// `Ok(None)`: only provider templates give the content. `Err`: wharf's template cannot be
    /// rendered (a permanent error for the providers that need it).
    body: Result<Option<Body>, String>,
    pub attachments: Vec<LoadedAttachment>,
}

impl Outgoing {
    /// An email whose body is known (tests, callers that render themselves).
    pub fn new(job_id: JobId, identity: JobId, email: EmailJob, body: Option<Body>) -> Self {
        Outgoing { job_id, identity, email, body: Ok(body), attachments: Vec::new() }
    }

    /// The subject and bodies, for providers that send content (not a provider template).
    pub fn body(&self) -> Result<&Body, SendError> {
        match &self.body {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(SendError::NotApplicable {
                message: "the email names only templates of other providers and no wharf template".into(),
            }),
            Err(m) => Err(SendError::Permanent { message: m.clone() }),
        }
    }

    /// A mailbox as JSON APIs take it: `addr`, or `Name <addr>` with the name quoted when needed.
    pub fn mailbox(&self, value: &str) -> String {
        let (name, addr) = split_mailbox(value);
        match name {
            None => addr.to_string(),
            Some(n) if n.chars().any(|c| "()<>[]:;@\\,.\"".contains(c)) => {
                format!("\"{}\" <{addr}>", n.replace('\\', "\\\\").replace('"', "\\\""))
            }
            Some(n) => format!("{n} <{addr}>"),
        }
    }
}

/// How one provider's attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Try the next provider; retry later.
    #[error("{message}")]
    Transient { message: String, retry_after: Option<Duration> },
    /// The email itself was rejected: no other provider, no retry.
    #[error("{message}")]
    Permanent { message: String },
    /// The provider refused these recipients as inactive or suppressed.
    #[error("{message}")]
    Suppressed { addresses: Vec<String>, message: String },
    /// This provider cannot send this email (a template only other providers have).
    #[error("{message}")]
    NotApplicable { message: String },
}

impl From<JobError> for SendError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Transient { message, retry_after } => SendError::Transient { message, retry_after },
            JobError::Permanent { message } => SendError::Permanent { message },
        }
    }
}

/// A provider took the email.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub message_id: String,
    /// Provider-specific extras for the job's result (`response`, `file`, …).
    pub details: serde_json::Map<String, Value>,
}

enum Transport {
    Outbox(OutboxProvider),
    Smtp(Box<SmtpProvider>),
    Resend(ResendProvider),
    Postmark(PostmarkProvider),
    Ses(Box<SesProvider>),
}

struct Slot {
    name: &'static str,
    transport: Transport,
    breaker: Breaker,
}

/// The tables the handler keeps state in.
struct Durable {
    store: Arc<dyn Store>,
    ledger: SendLedger,
    suppressions: SuppressionList,
    templates: TemplateStore,
}

enum Objects {
    None,
    Ready(Arc<dyn ObjectStore>),
    Lazy(ObjectsConfig, OnceCell<Arc<dyn ObjectStore>>),
}

/// Sends [`EmailJob`]s through the configured providers. Transports (an SMTP pool, HTTP
/// clients, the SES client) are made once and shared by every job the handler runs.
pub struct EmailHandler {
    providers: Vec<Slot>,
    attachments_max_bytes: usize,
    durable: Option<Durable>,
    objects: Objects,
}

/// What became of the provider chain.
enum Chain {
    Sent { provider: &'static str, accepted: Accepted, tried: Vec<Value> },
    Suppressed { provider: &'static str, addresses: Vec<String>, message: String },
    Failed(JobError),
}

fn store_error(what: &str, e: StoreError) -> JobError {
    JobError::transient(format!("{what}: {e}"))
}

impl EmailHandler {
    /// Prepares the providers: creates the outbox directory, sets up SMTP TLS (reading
    /// `SMTP_TLS_CA_FILE`), builds HTTP clients. Errors name the variable to fix. Connects to
    /// nothing yet. Without [`with_store`](Self::with_store) there is no ledger, suppression
    /// list or wharf template (tests of the transports).
    pub fn new(cfg: &EmailConfig) -> Result<Self, ConfigError> {
        let mut providers = Vec::new();
        for p in cfg.chain() {
            let transport = match p {
                EmailProviderConfig::Outbox { dir } => Transport::Outbox(OutboxProvider::new(dir)?),
                EmailProviderConfig::Smtp(smtp) => Transport::Smtp(Box::new(SmtpProvider::new(smtp, cfg.timeout)?)),
                EmailProviderConfig::Resend(r) => Transport::Resend(ResendProvider::new(r, cfg.timeout)),
                EmailProviderConfig::Postmark(pm) => Transport::Postmark(PostmarkProvider::new(pm, cfg.timeout)),
                EmailProviderConfig::Ses(s) => Transport::Ses(Box::new(SesProvider::new(s, cfg.timeout))),
            };
            providers.push(Slot {
                name: p.name(),
                transport,
                breaker: Breaker::new("email", cfg.breaker.failures, cfg.breaker.cooldown),
            });
        }
        Ok(EmailHandler {
            providers,
            attachments_max_bytes: cfg.attachments_max_bytes,
            durable: None,
            objects: Objects::None,
        })
    }

    /// Keeps the send ledger, the suppression list and wharf's templates in `store`.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        let db = store.db();
        self.durable = Some(Durable {
            ledger: SendLedger::new(db.clone()),
            suppressions: SuppressionList::new(db.clone()),
            templates: TemplateStore::new(db),
            store,
        });
        self
    }

    /// Fetches object-key attachments from `objects`.
    pub fn with_objects(mut self, objects: Arc<dyn ObjectStore>) -> Self {
        self.objects = Objects::Ready(objects);
        self
    }

    /// Fetches object-key attachments from the storage `cfg` names, opened on first use.
    pub fn with_objects_config(mut self, cfg: ObjectsConfig) -> Self {
        self.objects = Objects::Lazy(cfg, OnceCell::new());
        self
    }

    /// The primary provider: `outbox`, `smtp`, `resend`, `postmark` or `ses`.
    pub fn provider_name(&self) -> &'static str {
        self.providers.first().map(|p| p.name).unwrap_or("none")
    }

    /// The state of each provider's circuit (`closed`, `open`, `half_open`), in order.
    pub fn circuits(&self) -> Vec<(&'static str, &'static str)> {
        self.providers.iter().map(|p| (p.name, p.breaker.state_name())).collect()
    }

    /// The email's identity: the root of its replay chain, stopping at the replay that
    /// introduced `force_resend`.
    async fn identity(&self, ctx: &JobContext, job: &EmailJob) -> Result<JobId, JobError> {
        let Some(d) = &self.durable else { return Ok(ctx.id) };
        let load = |id: JobId| async move {
            d.store.job(&ctx.tenant, id).await.map_err(|e| store_error("cannot read the job's replay chain", e))
        };
        let Some(mut rec) = load(ctx.id).await? else { return Ok(ctx.id) };
        let mut forced = job.force_resend;
        for _ in 0..64 {
            let Some(parent_id) = rec.replay_of else { break };
            let Some(parent) = load(parent_id).await? else { break };
            let parent_forced = parent.payload.get("force_resend").and_then(Value::as_bool).unwrap_or(false);
            if forced && !parent_forced {
                break;
            }
            forced = parent_forced;
            rec = parent;
        }
        Ok(rec.id)
    }

    /// The body: the request's, wharf's template rendered, or none (provider templates only).
    async fn body(&self, ctx: &JobContext, job: &EmailJob) -> Result<Result<Option<Body>, String>, JobError> {
        let Some(t) = &job.template else {
            return Ok(Ok(Some(Body { subject: job.subject.clone(), text: job.text.clone(), html: job.html.clone() })));
        };
        let Some(name) = &t.name else { return Ok(Ok(None)) };
        let Some(d) = &self.durable else {
            return Ok(Err(format!("wharf template `{name}`: templates need the store (the worker runs with it)")));
        };
        let Some(tpl) =
            d.templates.get(&ctx.tenant, name).await.map_err(|e| store_error("cannot read the template", e))?
        else {
            return Ok(Err(format!("email template `{name}` does not exist (PUT /v1/email-templates/{name})")));
        };
        Ok(wharf_jobs::email::render(name, &tpl.content, &t.variables)
            .map(|r| Some(Body { subject: r.subject, text: r.text, html: r.html }))
            .map_err(|e| e.to_string()))
    }

    async fn object_store(&self) -> Option<&Arc<dyn ObjectStore>> {
        match &self.objects {
            Objects::None => None,
            Objects::Ready(o) => Some(o),
            Objects::Lazy(cfg, cell) => Some(cell.get_or_init(|| cfg.open()).await),
        }
    }

    async fn attachments(&self, ctx: &JobContext, job: &EmailJob) -> Result<Vec<LoadedAttachment>, JobError> {
        let mut out = Vec::with_capacity(job.attachments.len());
        let mut total = 0usize;
        for (i, a) in job.attachments.iter().enumerate() {
            let field = format!("attachments[{i}]");
            let bytes = match (&a.content, &a.key) {
                (Some(c), _) => base64::engine::general_purpose::STANDARD
                    .decode(c)
                    .map_err(|e| JobError::permanent(format!("{field}.content is not valid base64: {e}")))?,
                (None, Some(key)) => {
                    if !is_tenant_key(&ctx.tenant, key) {
                        return Err(JobError::permanent(format!(
                            "{field}.key `{key}` is outside the tenant's prefix `{}`",
                            tenant_prefix(&ctx.tenant)
                        )));
                    }
                    let Some(objects) = self.object_store().await else {
                        return Err(JobError::permanent(format!(
                            "{field}.key: this worker has no object storage for attachments"
                        )));
                    };
                    match objects.get(key).await {
                        Ok(b) => b,
                        Err(e @ (ObjectError::NotFound(_) | ObjectError::InvalidKey(..))) => {
                            return Err(JobError::permanent(format!("{field}.key: {e}")));
                        }
                        Err(e) => return Err(JobError::transient(format!("{field}.key: {e}"))),
                    }
                }
                (None, None) => return Err(JobError::permanent(format!("{field}: neither content nor key"))),
            };
            total += bytes.len();
            if total > self.attachments_max_bytes {
                return Err(JobError::permanent(format!(
                    "attachments: more than {} bytes (EMAIL_ATTACHMENTS_MAX_BYTES)",
                    self.attachments_max_bytes
                )));
            }
            out.push(LoadedAttachment { filename: a.filename.trim().to_string(), content_type: a.media_type(), bytes });
        }
        Ok(out)
    }

    async fn send_one(&self, slot: &Slot, out: &Outgoing) -> Result<Accepted, SendError> {
        match &slot.transport {
            Transport::Outbox(p) => {
                let msg = build_mime(out).map_err(|e| SendError::Permanent { message: e.to_string() })?;
                let details = p.send(&msg).await?;
                Ok(Accepted { message_id: message_id_for(&out.identity), details })
            }
            Transport::Smtp(p) => {
                let msg = build_mime(out).map_err(|e| SendError::Permanent { message: e.to_string() })?;
                let details = p.send(&msg).await?;
                Ok(Accepted { message_id: message_id_for(&out.identity), details })
            }
            Transport::Resend(p) => p.send(out).await,
            Transport::Postmark(p) => p.send(out).await,
            Transport::Ses(p) => p.send(out).await,
        }
    }

    async fn send_chain(&self, out: &Outgoing) -> Chain {
        let mut tried: Vec<Value> = Vec::new();
        let mut transient = false;
        // When every provider that could send said when to come back, the earliest of those.
        let mut come_back: Option<Option<Duration>> = None;
        let mut note = |d: Option<Duration>| {
            come_back = Some(match (come_back, d) {
                (None, d) => d,
                (Some(Some(a)), Some(b)) => Some(a.min(b)),
                _ => None,
            });
        };
        for slot in &self.providers {
            if let Admit::No(wait) = slot.breaker.admit() {
                metrics::counter!("wharf_email_provider_skipped_total", "provider" => slot.name).increment(1);
                tried.push(json!({"provider": slot.name, "skipped": "circuit open"}));
                note(Some(wait));
                continue;
            }
            match self.send_one(slot, out).await {
                Ok(accepted) => {
                    slot.breaker.success();
                    return Chain::Sent { provider: slot.name, accepted, tried };
                }
                Err(SendError::Transient { message, retry_after }) => {
                    slot.breaker.failure();
                    metrics::counter!("wharf_email_provider_failures_total", "provider" => slot.name).increment(1);
                    tracing::warn!(provider = slot.name, error = %message, "provider failed; trying the next");
                    tried.push(json!({"provider": slot.name, "error": message}));
                    transient = true;
                    note(retry_after);
                }
                Err(SendError::Permanent { message }) => {
                    slot.breaker.success();
                    return Chain::Failed(JobError::permanent(message));
                }
                Err(SendError::Suppressed { addresses, message }) => {
                    slot.breaker.success();
                    return Chain::Suppressed { provider: slot.name, addresses, message };
                }
                Err(SendError::NotApplicable { message }) => {
                    slot.breaker.release();
                    tried.push(json!({"provider": slot.name, "skipped": message}));
                }
            }
        }
        let summary = tried
            .iter()
            .map(|t| {
                let why = t.get("error").or_else(|| t.get("skipped")).and_then(Value::as_str).unwrap_or("");
                format!("{}: {why}", t["provider"].as_str().unwrap_or("?"))
            })
            .collect::<Vec<_>>()
            .join("; ");
        if transient || tried.iter().any(|t| t["skipped"] == "circuit open") {
            Chain::Failed(JobError::Transient {
                message: format!("no provider accepted the email ({summary})"),
                retry_after: come_back.flatten(),
            })
        } else {
            Chain::Failed(JobError::permanent(format!("no configured provider can send this email ({summary})")))
        }
    }

    /// Records the accepted send; retried briefly, because the email is out and a lost record
    /// could let a retry send it again.
    async fn record(&self, rec: &SendRecord) -> Result<SendRecord, JobError> {
        let Some(d) = &self.durable else { return Ok(rec.clone()) };
        let mut last = None;
        for delay in [0u64, 100, 500, 2000] {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            match d.ledger.record(rec).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    tracing::error!(error = %e, provider = %rec.provider, "cannot write the send ledger");
                    last = Some(e);
                }
            }
        }
        Err(JobError::transient(format!(
            "{} accepted the email ({}) but the send ledger could not record it: {}",
            rec.provider,
            rec.provider_message_id,
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    fn suppressed_result(entries: Vec<Value>, reason: String) -> Value {
        metrics::counter!("wharf_email_suppressed_total").increment(1);
        json!({"status": "suppressed", "reason": reason, "suppressed": entries})
    }
}

fn ledger_result(rec: &SendRecord) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("status".into(), "sent".into());
    m.insert("provider".into(), rec.provider.clone().into());
    m.insert("message_id".into(), rec.provider_message_id.clone().into());
    m.insert("provider_message_id".into(), rec.provider_message_id.clone().into());
    m.insert("accepted_at".into(), rec.accepted_at.to_rfc3339().into());
    m.insert("identity".into(), rec.identity.to_string().into());
    m
}

#[async_trait]
impl Handler<EmailJob> for EmailHandler {
    #[tracing::instrument(
        name = "email.send",
        skip_all,
        fields(
            job_id = %ctx.id,
            attempt = ctx.attempt,
            provider = self.provider_name(),
            recipients = job.to.len() + job.cc.len() + job.bcc.len(),
        )
    )]
    async fn handle(&self, ctx: &JobContext, job: EmailJob) -> JobResult {
        let identity = self.identity(ctx, &job).await?;
        if let Some(d) = &self.durable
            && let Some(rec) =
                d.ledger.find(&ctx.tenant, identity).await.map_err(|e| store_error("cannot read the send ledger", e))?
        {
            // Accepted before (a retry after a crash between the send and the acknowledgement,
            // or a replay): success without sending again.
            metrics::counter!("wharf_email_deduplicated_total").increment(1);
            tracing::info!(provider = %rec.provider, message_id = %rec.provider_message_id, "already sent; not sending again");
            let mut m = ledger_result(&rec);
            m.insert("deduplicated".into(), true.into());
            m.insert("accepted_by_job".into(), rec.job_id.to_string().into());
            return Ok(Some(Value::Object(m)));
        }
        let body = self.body(ctx, &job).await?;
        let attachments = self.attachments(ctx, &job).await?;
        let mut email = job;
        let mut dropped: Vec<Value> = Vec::new();
        for _round in 0..3 {
            if let Some(d) = &self.durable {
                let all: Vec<String> = email.recipients().map(str::to_string).collect();
                let hits = d
                    .suppressions
                    .matching(&ctx.tenant, &all)
                    .await
                    .map_err(|e| store_error("cannot read the suppression list", e))?;
                if !hits.is_empty() {
                    let is_hit =
                        |m: &String| hits.iter().any(|h| h.address == wharf_jobs::email::suppressions::normalize(m));
                    for h in &hits {
                        dropped.push(json!({
                            "address": h.address, "reason": h.reason.as_str(), "detail": h.detail, "source": h.source,
                        }));
                    }
                    email.to.retain(|m| !is_hit(m));
                    email.cc.retain(|m| !is_hit(m));
                    email.bcc.retain(|m| !is_hit(m));
                    if email.to.is_empty() {
                        let reasons: Vec<String> =
                            hits.iter().map(|h| format!("{} ({})", h.address, h.reason)).collect();
                        tracing::info!(recipients = %reasons.join(", "), "every recipient is suppressed; not sent");
                        return Ok(Some(Self::suppressed_result(
                            dropped,
                            format!("every `to` recipient is on the suppression list: {}", reasons.join(", ")),
                        )));
                    }
                }
            }
            let out = Outgoing {
                job_id: ctx.id,
                identity,
                email: email.clone(),
                body: body.clone(),
                attachments: attachments.clone(),
            };
            match self.send_chain(&out).await {
                Chain::Sent { provider, accepted, tried } => {
                    let rec = SendRecord {
                        tenant: ctx.tenant.clone(),
                        identity,
                        job_id: ctx.id,
                        provider: provider.to_string(),
                        provider_message_id: accepted.message_id.clone(),
                        accepted_at: Utc::now(),
                    };
                    let rec = self.record(&rec).await?;
                    metrics::counter!("wharf_email_sent_total", "provider" => provider).increment(1);
                    tracing::info!(provider, message_id = %rec.provider_message_id, "email sent");
                    let mut m = accepted.details;
                    m.extend(ledger_result(&rec));
                    if !tried.is_empty() {
                        m.insert("failed_over".into(), tried.into());
                    }
                    if !dropped.is_empty() {
                        m.insert("suppressed".into(), dropped.into());
                    }
                    return Ok(Some(Value::Object(m)));
                }
                Chain::Failed(err) => {
                    tracing::warn!(permanent = err.is_permanent(), error = %err, "email not sent");
                    return Err(err);
                }
                Chain::Suppressed { provider, addresses, message } => {
                    tracing::info!(provider, addresses = %addresses.join(", "), "provider refused suppressed recipients");
                    match &self.durable {
                        Some(d) => {
                            for a in &addresses {
                                d.suppressions
                                    .add(&ctx.tenant, a, SuppressionReason::Provider, Some(&message), provider)
                                    .await
                                    .map_err(|e| store_error("cannot update the suppression list", e))?;
                            }
                            // The next round drops them and sends to the rest, if any.
                        }
                        None => {
                            let entries = addresses
                                .iter()
                                .map(|a| json!({"address": a, "reason": "provider", "detail": message, "source": provider}))
                                .collect();
                            return Ok(Some(Self::suppressed_result(entries, message)));
                        }
                    }
                }
            }
        }
        Err(JobError::transient("recipients kept being refused as suppressed; will retry"))
    }
}
