//! The embeddings pool: embeds documents ([`EmbedDocumentsJob`]) and re-embeds those stored
//! with another model than the configured one ([`RefreshEmbeddingsJob`]).
//!
//! For each job: documents whose text (SHA-256) and model match what is stored are not sent
//! again (their metadata is updated if it changed); identical texts in one job are sent once;
//! texts the tenant had embedded within the last 30 minutes come from an in-process cache; the rest go to the
//! providers in batches (count and estimated-token limits). Each batch is stored as soon as it
//! is embedded, so a retried job only sends what is still missing.
//!
//! Providers are tried in order (OpenAI-compatible, then Gemini) with a circuit breaker each:
//! a 5xx, timeout or refused connection sends the batch to the next provider at once; a 429
//! with a short `Retry-After` is waited out and the same provider asked again (a longer one
//! closes it until then). When none can take the batch the job fails transiently (with the
//! shortest `Retry-After`, which the runtime honours). A 400 splits the batch until the
//! offending document is found; it is reported in the job's result under `failed` and the
//! others are stored. A caller that names a model gets that model or a retry, never a
//! fallback; documents a fallback embedded are stored under the fallback's model and moved
//! back by the refresh job.
//!
//! See [`config`] for the environment variables.

pub mod config;
#[cfg(feature = "local-embeddings")]
pub mod local;
pub mod openai;
pub mod provider;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wharf_jobs::{
    StoreError,
    config::{ConfigError, Env},
    embeddings::{DocKey, EmbeddingStore, NewEmbedding, content_hash},
    kinds::embedding::{EmbedDocumentsJob, EmbedLimits, RefreshEmbeddingsJob},
    retry::RetryPolicy,
    store::Db,
};

pub use self::{
    config::{EmbeddingsConfig, ProviderConfig, RemoteConfig},
    provider::{Provider, ProviderError},
};
use crate::{
    breaker::{Admit, Breaker},
    handler::{Handler, JobContext, JobError, JobResult},
    kinds::retry_from_env,
    registry::Registry,
};

/// 5 attempts, 5 s base, 5 min cap (PRODUCT §3); `EMBEDDINGS_MAX_ATTEMPTS`, `_RETRY_BASE_MS`,
/// `_RETRY_MAX_MS` override it.
pub const RETRY: RetryPolicy = RetryPolicy::new(5, Duration::from_secs(5), Duration::from_secs(300));

/// Registers both embedding kinds (one handler: one cache, one breaker per provider).
pub fn register(r: &mut Registry, env: &Env, db: Db) -> Result<(), ConfigError> {
    let handler = EmbeddingHandler::new(&EmbeddingsConfig::from_env(env, LOCAL_MODEL_BUILT_IN)?, db);
    let retry = retry_from_env(env, "EMBEDDINGS", RETRY)?;
    r.register::<EmbedDocumentsJob, _>(handler.clone(), retry);
    r.register::<RefreshEmbeddingsJob, _>(handler, retry);
    Ok(())
}

/// Documents a refresh run re-embeds at most when its payload does not say.
pub const DEFAULT_REFRESH_LIMIT: u32 = 10_000;

/// Whether this build carries the local model.
pub const LOCAL_MODEL_BUILT_IN: bool = cfg!(feature = "local-embeddings");

struct Slot {
    provider: Box<dyn Provider>,
    breaker: Breaker,
}

struct Cached {
    provider: &'static str,
    vector: Vec<f32>,
}

/// Runs both embedding kinds; cheap to clone (register it for each kind).
#[derive(Clone)]
pub struct EmbeddingHandler {
    inner: Arc<Inner>,
}

struct Inner {
    store: EmbeddingStore,
    slots: Vec<Slot>,
    /// (tenant, model, content hash) → vector. Per tenant: a hit must not tell one tenant
    /// what another embedded.
    cache: moka::sync::Cache<(String, String, String), Arc<Cached>>,
    cfg: EmbeddingsConfig,
}

/// One distinct text to embed and the documents that carry it.
struct Group {
    hash: String,
    text: String,
    docs: Vec<PendingDoc>,
}

struct PendingDoc {
    id: String,
    metadata: Option<serde_json::Value>,
}

/// What a job did, reported as its result.
#[derive(Default)]
struct Report {
    embedded: usize,
    cached: usize,
    unchanged: usize,
    metadata_updated: u64,
    requests: usize,
    stored: BTreeMap<String, usize>,
    failed: Vec<serde_json::Value>,
}

/// How a batch ended, if not embedded.
enum BatchError {
    /// The provider refused something in these texts.
    BadInput(String),
    /// No provider could take it: the job fails with this.
    Stop(JobError),
}

struct Embedded {
    provider: &'static str,
    model: String,
    vectors: Vec<Vec<f32>>,
}

fn store_error(e: StoreError) -> JobError {
    JobError::transient(format!("store: {e}"))
}

/// Rough token count: one per 3 bytes, plus one (English averages one per 4).
fn estimate_tokens(text: &str) -> usize {
    text.len() / 3 + 1
}

/// Splits groups into batches of at most `max_items` texts and `max_tokens` estimated tokens
/// (a text alone above the budget still gets a batch: the provider decides).
fn batches(groups: Vec<Group>, max_items: usize, max_tokens: usize) -> VecDeque<Vec<Group>> {
    let mut out = VecDeque::new();
    let mut current: Vec<Group> = Vec::new();
    let mut tokens = 0;
    for g in groups {
        let t = estimate_tokens(&g.text);
        if !current.is_empty() && (current.len() >= max_items || tokens + t > max_tokens) {
            out.push_back(std::mem::take(&mut current));
            tokens = 0;
        }
        tokens += t;
        current.push(g);
    }
    if !current.is_empty() {
        out.push_back(current);
    }
    out
}

async fn sleep_or_shutdown(wait: Duration, shutdown: &CancellationToken) -> Result<(), JobError> {
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(()),
        _ = shutdown.cancelled() => Err(JobError::transient("shutting down while waiting for a provider")),
    }
}

impl EmbeddingHandler {
    /// The providers of `cfg` over the store's database. Makes no connection yet.
    pub fn new(cfg: &EmbeddingsConfig, db: Db) -> Self {
        let slots = cfg
            .providers
            .iter()
            .map(|p| {
                let provider: Box<dyn Provider> = match p {
                    ProviderConfig::Remote(r) => Box::new(openai::OpenAiCompatible::new(r, cfg.timeout)),
                    #[cfg(feature = "local-embeddings")]
                    ProviderConfig::Local => Box::new(local::LocalModel::default()),
                    #[cfg(not(feature = "local-embeddings"))]
                    ProviderConfig::Local => unreachable!("EmbeddingsConfig only lists Local when it is built in"),
                };
                Slot { provider, breaker: Breaker::new("embeddings", cfg.breaker_failures, cfg.breaker_cooldown) }
            })
            .collect();
        let cache = moka::sync::Cache::builder().max_capacity(cfg.cache_entries).time_to_live(cfg.cache_ttl).build();
        EmbeddingHandler { inner: Arc::new(Inner { store: EmbeddingStore::new(db), slots, cache, cfg: cfg.clone() }) }
    }

    fn primary(&self) -> Result<&Slot, JobError> {
        self.inner.slots.first().ok_or_else(|| {
            JobError::permanent(
                "no embedding provider is configured: set OPENAI_API_KEY, OPENAI_BASE_URL or GEMINI_API_KEY \
                 (or build with the `local-embeddings` feature)",
            )
        })
    }
}

impl Inner {
    /// Embeds `groups` with `model` (falling back to other providers' models if allowed) and
    /// stores them; documents a provider refuses are reported, the others stored.
    #[allow(clippy::too_many_arguments)]
    async fn embed_and_store(
        &self,
        tenant: &str,
        collection: &str,
        model: &str,
        allow_fallback: bool,
        groups: Vec<Group>,
        report: &mut Report,
        shutdown: &CancellationToken,
    ) -> Result<(), JobError> {
        // The cache first, per provider that made the vector.
        let mut from_cache: HashMap<&'static str, Vec<NewEmbedding>> = HashMap::new();
        let mut to_embed = Vec::new();
        for g in groups {
            match self.cache.get(&(tenant.to_string(), model.to_string(), g.hash.clone())) {
                Some(c) => {
                    let rows = from_cache.entry(c.provider).or_default();
                    rows.extend(g.docs.into_iter().map(|d| row(d, &g.hash, &g.text, c.vector.clone())));
                }
                None => to_embed.push(g),
            }
        }
        for (provider, rows) in from_cache {
            self.store.upsert(tenant, collection, model, provider, &rows).await.map_err(store_error)?;
            report.cached += rows.len();
            *report.stored.entry(model.to_string()).or_default() += rows.len();
        }

        let primary_max = self.slots[0].provider.max_batch();
        let mut queue = batches(to_embed, self.cfg.batch_size.min(primary_max), self.cfg.batch_max_tokens);
        while let Some(batch) = queue.pop_front() {
            let texts: Vec<String> = batch.iter().map(|g| g.text.clone()).collect();
            match self.embed_batch(model, allow_fallback, texts, report, shutdown).await {
                Ok(e) => {
                    let mut rows = Vec::new();
                    for (g, v) in batch.into_iter().zip(e.vectors) {
                        rows.extend(g.docs.into_iter().map(|d| row(d, &g.hash, &g.text, v.clone())));
                        let key = (tenant.to_string(), e.model.clone(), g.hash);
                        self.cache.insert(key, Arc::new(Cached { provider: e.provider, vector: v }));
                    }
                    self.store.upsert(tenant, collection, &e.model, e.provider, &rows).await.map_err(store_error)?;
                    report.embedded += rows.len();
                    *report.stored.entry(e.model).or_default() += rows.len();
                }
                Err(BatchError::BadInput(_)) if batch.len() > 1 => {
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Err(BatchError::BadInput(message)) => {
                    for g in batch {
                        for d in g.docs {
                            tracing::warn!(doc_id = %d.id, %message, "a provider refused a document");
                            report.failed.push(json!({"id": d.id, "error": message}));
                        }
                    }
                }
                Err(BatchError::Stop(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// One batch through the providers: the primary with `model`, then (if allowed) each
    /// fallback with its own model.
    async fn embed_batch(
        &self,
        model: &str,
        allow_fallback: bool,
        texts: Vec<String>,
        report: &mut Report,
        shutdown: &CancellationToken,
    ) -> Result<Embedded, BatchError> {
        let candidates = if allow_fallback { self.slots.len() } else { 1 };
        let mut errors: Vec<String> = Vec::new();
        let mut soonest: Option<Duration> = None;
        let mut only_refusals = true;
        for (i, slot) in self.slots[..candidates].iter().enumerate() {
            let name = slot.provider.name();
            let model = if i == 0 { model } else { slot.provider.default_model() };
            let last = i + 1 == candidates;
            let mut waits = 0;
            loop {
                if let Admit::No(wait) = slot.breaker.admit() {
                    // The last resort is waited for when it opens again soon.
                    if last && wait <= self.cfg.max_inline_wait && waits < 3 {
                        waits += 1;
                        sleep_or_shutdown(wait, shutdown).await.map_err(BatchError::Stop)?;
                        continue;
                    }
                    errors.push(format!("{name}: circuit open for {} ms", wait.as_millis()));
                    soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                    only_refusals = false;
                    break;
                }
                report.requests += 1;
                let result = self.call(slot, model, &texts).await;
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(ProviderError::RateLimited { .. }) => "rate_limited",
                    Err(ProviderError::Unavailable { .. }) => "unavailable",
                    Err(ProviderError::BadInput { .. }) => "bad_input",
                    Err(ProviderError::Refused { .. }) => "refused",
                };
                metrics::counter!("wharf_embeddings_requests_total", "provider" => name, "outcome" => outcome)
                    .increment(1);
                match result {
                    Ok(vectors) => {
                        slot.breaker.success();
                        return Ok(Embedded { provider: name, model: model.to_string(), vectors });
                    }
                    Err(ProviderError::RateLimited { retry_after, message }) => {
                        let wait = retry_after.unwrap_or(Duration::from_secs(1));
                        if wait <= self.cfg.max_inline_wait && waits < 3 {
                            tracing::info!(provider = name, wait_ms = wait.as_millis() as u64, "rate limited; waiting");
                            // A half-open trial is given back: the retry after the wait is the trial.
                            slot.breaker.release();
                            waits += 1;
                            sleep_or_shutdown(wait, shutdown).await.map_err(BatchError::Stop)?;
                            continue;
                        }
                        slot.breaker.rate_limited(wait);
                        errors.push(format!("{name}: {message}"));
                        soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                        only_refusals = false;
                    }
                    Err(ProviderError::Unavailable { message }) => {
                        slot.breaker.failure();
                        tracing::warn!(provider = name, %message, "embedding provider unavailable");
                        errors.push(format!("{name}: {message}"));
                        only_refusals = false;
                    }
                    Err(ProviderError::BadInput { message }) => {
                        slot.breaker.success();
                        return Err(BatchError::BadInput(format!("{name}: {message}")));
                    }
                    Err(ProviderError::Refused { message }) => {
                        slot.breaker.failure();
                        tracing::error!(provider = name, %message, "embedding provider refused the request");
                        errors.push(format!("{name}: {message}"));
                    }
                }
                break;
            }
        }
        let message = errors.join("; ");
        Err(BatchError::Stop(if only_refusals {
            JobError::permanent(message)
        } else {
            JobError::Transient { message, retry_after: soonest }
        }))
    }

    /// A provider call, in as many requests as its batch limit needs.
    async fn call(&self, slot: &Slot, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(slot.provider.max_batch().max(1)) {
            out.extend(slot.provider.embed(model, chunk.to_vec()).await?);
        }
        if out.first().is_some_and(|f| out.iter().any(|v| v.len() != f.len())) {
            return Err(ProviderError::Unavailable { message: "malformed answer: vectors of different widths".into() });
        }
        Ok(out)
    }
}

fn row(d: PendingDoc, hash: &str, text: &str, vector: Vec<f32>) -> NewEmbedding {
    NewEmbedding { doc_id: d.id, content_hash: hash.to_string(), text: text.to_string(), metadata: d.metadata, vector }
}

/// Groups documents by text, keeping their first order.
fn group(docs: impl IntoIterator<Item = (String, String, Option<serde_json::Value>)>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (id, text, metadata) in docs {
        let hash = content_hash(&text);
        let doc = PendingDoc { id, metadata };
        match index.get(&hash) {
            Some(&i) => groups[i].docs.push(doc),
            None => {
                index.insert(hash.clone(), groups.len());
                groups.push(Group { hash, text, docs: vec![doc] });
            }
        }
    }
    groups
}

fn normalized(m: &Option<serde_json::Value>) -> Option<&serde_json::Value> {
    m.as_ref().filter(|v| !v.is_null())
}

impl Report {
    fn json(&self, model: &str, documents: usize) -> serde_json::Value {
        json!({
            "model": model,
            "documents": documents,
            "embedded": self.embedded,
            "cached": self.cached,
            "unchanged": self.unchanged,
            "metadata_updated": self.metadata_updated,
            "failed": self.failed,
            "provider_requests": self.requests,
            "stored": self.stored,
        })
    }

    fn count_metrics(&self) {
        for (outcome, n) in [
            ("embedded", self.embedded),
            ("cached", self.cached),
            ("unchanged", self.unchanged),
            ("failed", self.failed.len()),
        ] {
            metrics::counter!("wharf_embeddings_documents_total", "outcome" => outcome).increment(n as u64);
        }
    }
}

#[async_trait]
impl Handler<EmbedDocumentsJob> for EmbeddingHandler {
    #[tracing::instrument(
        name = "embeddings.embed",
        skip_all,
        fields(job_id = %ctx.id, attempt = ctx.attempt, collection = %job.collection, documents = job.documents.len())
    )]
    async fn handle(&self, ctx: &JobContext, job: EmbedDocumentsJob) -> JobResult {
        // The API checked sizes; names are checked again because they reach SQL.
        let unbounded = EmbedLimits { max_documents: usize::MAX, max_text_bytes: usize::MAX };
        if let Some(e) = job.validate(&unbounded).first() {
            return Err(JobError::permanent(format!("invalid payload: {}: {}", e.field, e.message)));
        }
        let primary = self.primary()?;
        let model = match &job.model {
            Some(m) if !primary.provider.accepts_model(m) => {
                return Err(JobError::permanent(format!(
                    "model `{m}` is not available: the {} provider embeds with `{}` only",
                    primary.provider.name(),
                    primary.provider.default_model()
                )));
            }
            Some(m) => m.clone(),
            None => primary.provider.default_model().to_string(),
        };
        let inner = &self.inner;
        let ids: Vec<&str> = job.documents.iter().map(|d| d.id.as_str()).collect();
        let stored = inner.store.digests(&ctx.tenant, &job.collection, &model, &ids).await.map_err(store_error)?;

        let mut report = Report::default();
        let mut metadata_updates = Vec::new();
        let mut changed = Vec::new();
        let documents = job.documents.len();
        let width = primary.provider.expected_dims(&model);
        for d in job.documents {
            match stored.get(&d.id) {
                Some(s) if s.content_hash == content_hash(&d.text) && width.is_none_or(|w| w == s.dims) => {
                    report.unchanged += 1;
                    if normalized(&s.metadata) != normalized(&d.metadata) {
                        metadata_updates.push((d.id, d.metadata));
                    }
                }
                _ => changed.push((d.id, d.text, d.metadata)),
            }
        }
        let updates: Vec<(&str, Option<&serde_json::Value>)> =
            metadata_updates.iter().map(|(id, m)| (id.as_str(), m.as_ref())).collect();
        report.metadata_updated =
            inner.store.update_metadata(&ctx.tenant, &job.collection, &model, &updates).await.map_err(store_error)?;

        let result = inner
            .embed_and_store(
                &ctx.tenant,
                &job.collection,
                &model,
                job.model.is_none(),
                group(changed),
                &mut report,
                &ctx.shutdown,
            )
            .await;
        report.count_metrics();
        result?;
        tracing::info!(
            embedded = report.embedded,
            cached = report.cached,
            unchanged = report.unchanged,
            failed = report.failed.len(),
            requests = report.requests,
            "documents embedded"
        );
        Ok(Some(report.json(&model, documents)))
    }
}

#[async_trait]
impl Handler<RefreshEmbeddingsJob> for EmbeddingHandler {
    #[tracing::instrument(name = "embeddings.refresh", skip_all, fields(job_id = %ctx.id, attempt = ctx.attempt))]
    async fn handle(&self, ctx: &JobContext, job: RefreshEmbeddingsJob) -> JobResult {
        if let Some(e) = job.validate().first() {
            return Err(JobError::permanent(format!("invalid payload: {}: {}", e.field, e.message)));
        }
        let model = self.primary()?.provider.default_model().to_string();
        let inner = &self.inner;
        let batch = job.batch_size.map_or(inner.cfg.batch_size, |b| b as usize).clamp(1, 2048) as u32;
        let limit = job.limit.unwrap_or(DEFAULT_REFRESH_LIMIT) as usize;
        let mut report = Report::default();
        let mut cursor = DocKey::default();
        let mut seen = 0;
        let mut complete = false;
        while seen < limit {
            let take = batch.min((limit - seen) as u32);
            let stale = inner
                .store
                .stale(&model, job.tenant.as_deref(), job.collection.as_deref(), &cursor, take)
                .await
                .map_err(store_error)?;
            let Some(last) = stale.last() else {
                complete = true;
                break;
            };
            cursor = last.key();
            seen += stale.len();
            // One embed-and-store per (tenant, collection); the refresh never falls back: a
            // fallback's model is what it moves documents away from.
            let mut by_collection: BTreeMap<(String, String), Vec<(String, String, Option<serde_json::Value>)>> =
                BTreeMap::new();
            for d in stale {
                by_collection.entry((d.tenant, d.collection)).or_default().push((d.doc_id, d.text, d.metadata));
            }
            for ((tenant, collection), docs) in by_collection {
                inner
                    .embed_and_store(&tenant, &collection, &model, false, group(docs), &mut report, &ctx.shutdown)
                    .await?;
            }
        }
        report.count_metrics();
        tracing::info!(
            refreshed = report.embedded + report.cached,
            failed = report.failed.len(),
            complete,
            "refresh run"
        );
        Ok(Some(json!({
            "model": model,
            "refreshed": report.embedded + report.cached,
            "failed": report.failed,
            "provider_requests": report.requests,
            "complete": complete,
        })))
    }
}
