//! `POST /v1/embeddings` (validate and enqueue documents to embed) and
//! `GET /v1/collections/{collection}/documents/{id}` (a stored document). Never calls a provider.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};
use wharf_jobs::{
    config::Env,
    embeddings::{EmbeddingRecord, EmbeddingStore},
    idempotency::{IdempotencyKey, Idempotent},
    keys::Scope,
    kinds::{
        JobKind,
        embedding::{EmbedDocumentsJob, EmbedLimits, validate_collection},
    },
};

use crate::{
    Shared, Tag,
    auth::ApiKey,
    body::JsonBody,
    idempotency,
    problem::Problem,
    trace::TraceParent,
    views::{Accepted, JobStateView, Stored},
};

pub const OPERATION: &str = "POST /v1/embeddings";

/// Documents to embed into a collection. Unknown fields are refused.
#[derive(Debug, Clone, Object)]
#[oai(rename = "EmbedDocuments", deny_unknown_fields)]
pub struct EmbedRequest {
    /// 1–64 of `A–Z a–z 0–9 _ . -`, starting with a letter or digit.
    pub collection: String,
    /// A model of the primary provider; absent: the configured one (which may fall back to
    /// another provider's model when the primary is down).
    pub model: Option<String>,
    /// 1–2 048 documents (`EMBEDDINGS_MAX_DOCUMENTS`), ids unique within the request.
    pub documents: Vec<DocumentInput>,
}

/// One document.
#[derive(Debug, Clone, Object)]
#[oai(rename = "EmbedDocument", deny_unknown_fields)]
pub struct DocumentInput {
    /// 1–256 characters, unique within the collection.
    pub id: String,
    /// Not empty; at most 32 KiB (`EMBEDDINGS_MAX_TEXT_BYTES`).
    pub text: String,
    /// A JSON object stored with the vector (at most 16 KiB).
    pub metadata: Option<serde_json::Value>,
}

/// A stored document.
#[derive(Debug, Clone, Object)]
#[oai(rename = "EmbeddedDocument")]
pub struct DocumentView {
    pub collection: String,
    pub id: String,
    /// The model of the vector.
    pub model: String,
    pub dims: u32,
    /// Hex SHA-256 of the text: re-posting the same text for this model embeds nothing.
    pub content_hash: String,
    #[oai(nullable)]
    pub metadata: Option<serde_json::Value>,
    /// `openai`, `gemini` or `local`.
    pub provider: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Only with `include_vector=true`.
    #[oai(skip_serializing_if_is_none)]
    pub vector: Option<Vec<f32>>,
}

impl From<EmbeddingRecord> for DocumentView {
    fn from(r: EmbeddingRecord) -> Self {
        DocumentView {
            collection: r.collection,
            id: r.doc_id,
            model: r.model,
            dims: r.dims as u32,
            content_hash: r.content_hash,
            metadata: r.metadata,
            provider: r.provider,
            created_at: r.created_at,
            updated_at: r.updated_at,
            vector: r.vector,
        }
    }
}

pub struct EmbeddingsApi {
    shared: Arc<Shared>,
    repo: EmbeddingStore,
    limits: EmbedLimits,
}

impl EmbeddingsApi {
    /// Limits from `EMBEDDINGS_MAX_DOCUMENTS` and `EMBEDDINGS_MAX_TEXT_BYTES` (the binary
    /// refuses to start with bad values; here they fall back to the defaults).
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let limits = EmbedLimits::from_env(&Env::from_process()).unwrap_or_default();
        EmbeddingsApi { repo: EmbeddingStore::new(shared.store.db()), shared, limits }
    }
}

#[OpenApi(tag = "Tag::Jobs")]
impl EmbeddingsApi {
    /// Embed documents
    ///
    /// Validates the documents and enqueues one job that embeds and stores them (a document
    /// whose text and model are already stored is not embedded again); answers at once with
    /// the job's id and status URL. The job's result counts what was embedded, unchanged or
    /// refused by the provider (`failed`, per document). Needs the scope `jobs:write`.
    #[oai(path = "/v1/embeddings", method = "post", operation_id = "embedDocuments")]
    async fn embed(
        &self,
        auth: ApiKey,
        /// Makes the request safe to retry: the same key with the same body answers the first
        /// response again (24 h); with another body, 422. 1–255 visible ASCII characters.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        trace: Data<&TraceParent>,
        body: JsonBody<EmbedRequest>,
    ) -> Result<Stored<Accepted, 202>, Problem> {
        let key = self.shared.auth.authorize(&auth, Scope::JobsWrite).await?;
        let idem_key = idempotency::parse_header(idempotency_key.0.as_deref())?;
        let Some(job) = body.parse::<EmbedDocumentsJob>()? else {
            return Err(Problem::bad_request("a JSON request body is required"));
        };
        let errors = job.validate(&self.limits);
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }

        let documents = job.documents.len();
        let mut new = job.into_job(&key.tenant);
        new.traceparent = Some(trace.as_str().to_string());
        let id = new.id;
        let response = Stored::<Accepted, 202>::new(&Accepted {
            id: id.0,
            status: JobStateView::Queued,
            status_url: self.shared.status_url(id),
        });
        let idempotency = idem_key
            .as_ref()
            .map(|k| (IdempotencyKey::new(k.clone(), OPERATION, &new.payload), response.stored().clone()));
        match self.shared.store.enqueue(new, idempotency).await? {
            Idempotent::Fresh(()) => {
                tracing::Span::current().record("job_id", tracing::field::display(id));
                metrics::counter!("wharf_jobs_enqueued_total", "kind" => EmbedDocumentsJob::KIND).increment(1);
                tracing::info!(documents, "embedding job enqueued");
                Ok(response)
            }
            Idempotent::Repeat(first) => Ok(Stored::replay(first)),
            Idempotent::Mismatch => Err(Problem::idempotency_mismatch(idem_key.as_deref().unwrap_or_default())),
        }
    }

    /// Get a stored document
    ///
    /// The document's model, dims, content hash, metadata and times; the vector with
    /// `include_vector=true`. A document embedded with several models answers with the most
    /// recently updated unless `model` names one. Needs the scope `jobs:read`.
    #[oai(path = "/v1/collections/:collection/documents/:id", method = "get", operation_id = "getDocument")]
    async fn get(
        &self,
        auth: ApiKey,
        collection: Path<String>,
        /// The document's id.
        id: Path<String>,
        /// Include the vector.
        include_vector: Query<Option<bool>>,
        /// The model whose vector to show.
        model: Query<Option<String>>,
    ) -> Result<Json<DocumentView>, Problem> {
        let key = self.shared.auth.authorize(&auth, Scope::JobsRead).await?;
        let not_found = || Problem::not_found(format!("no document `{}` in collection `{}`", id.0, collection.0));
        // A malformed collection name names no collection.
        validate_collection(&collection.0).map_err(|_| not_found())?;
        let model = model.0.filter(|m| !m.trim().is_empty());
        let record = self
            .repo
            .get(&key.tenant, &collection.0, &id.0, model.as_deref(), include_vector.0.unwrap_or(false))
            .await?
            .ok_or_else(not_found)?;
        Ok(Json(record.into()))
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::{registry::Registry, types::Type};
    use serde_json::json;
    use wharf_jobs::kinds::embedding::Document;

    use super::*;

    fn documented(name: &str) -> Vec<&'static str> {
        let mut registry = Registry::new();
        EmbedRequest::register(&mut registry);
        let mut fields: Vec<&str> =
            registry.schemas.get(name).expect("schema").properties.iter().map(|p| p.0).collect();
        fields.sort();
        fields
    }

    fn keys(v: serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    /// The documented request and the payload type accept the same fields.
    #[test]
    fn documented_fields_match_the_job() {
        let doc = Document { id: "a".into(), text: "t".into(), metadata: Some(json!({})) };
        let job = EmbedDocumentsJob { collection: "c".into(), model: Some("m".into()), documents: vec![doc.clone()] };
        assert_eq!(documented("EmbedDocuments"), keys(serde_json::to_value(job).unwrap()));
        assert_eq!(documented("EmbedDocument"), keys(serde_json::to_value(doc).unwrap()));
    }

    #[test]
    fn unknown_fields_name_the_field() {
        let body = json!({"collection": "c", "documents": [{"id": "a", "text": "t", "vector": [1]}]});
        let p = crate::body::deserialize::<EmbedDocumentsJob>(body, "").unwrap_err();
        assert_eq!(p.body().errors.as_ref().unwrap()[0].field, "documents[0].vector");
    }
}
