//! Embedding jobs: `embeddings.embed` (documents the API accepted) and `embeddings.refresh`
//! (re-embeds documents stored with another model than the configured one; the scheduler puts
//! it on a cron).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{FieldError, JobKind};
use crate::{
    config::{ConfigError, Env},
    queue,
};

/// Documents per `POST /v1/embeddings` when `EMBEDDINGS_MAX_DOCUMENTS` is not set (OpenAI's
/// limit of inputs per request, so that one request maps to at most one provider call there).
pub const DEFAULT_MAX_DOCUMENTS: usize = 2048;
/// Bytes of text per document when `EMBEDDINGS_MAX_TEXT_BYTES` is not set (≈ the 8 191 tokens
/// an OpenAI embedding model accepts, for English text).
pub const DEFAULT_MAX_TEXT_BYTES: usize = 32 * 1024;
pub const MAX_ID_CHARS: usize = 256;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_COLLECTION_CHARS: usize = 64;
pub const MAX_MODEL_CHARS: usize = 128;
/// Field errors reported for one request at most (a 5 000-document request with one typo in
/// every document answers with the first ones).
pub const MAX_REPORTED_ERRORS: usize = 50;

/// Request limits of `POST /v1/embeddings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedLimits {
    pub max_documents: usize,
    pub max_text_bytes: usize,
}

impl Default for EmbedLimits {
    fn default() -> Self {
        EmbedLimits { max_documents: DEFAULT_MAX_DOCUMENTS, max_text_bytes: DEFAULT_MAX_TEXT_BYTES }
    }
}

impl EmbedLimits {
    /// `EMBEDDINGS_MAX_DOCUMENTS` and `EMBEDDINGS_MAX_TEXT_BYTES` over the defaults.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = EmbedLimits::default();
        let max_documents = env.parse_or("EMBEDDINGS_MAX_DOCUMENTS", d.max_documents)?;
        if max_documents == 0 {
            return Err(ConfigError::new("EMBEDDINGS_MAX_DOCUMENTS", "must be at least 1"));
        }
        let max_text_bytes = env.parse_or("EMBEDDINGS_MAX_TEXT_BYTES", d.max_text_bytes)?;
        if max_text_bytes == 0 {
            return Err(ConfigError::new("EMBEDDINGS_MAX_TEXT_BYTES", "must be at least 1"));
        }
        Ok(EmbedLimits { max_documents, max_text_bytes })
    }
}

/// One document to embed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The caller's id, unique within the collection.
    pub id: String,
    pub text: String,
    /// Any JSON object, stored with the vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// Embed and store documents of a collection (`POST /v1/embeddings`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbedDocumentsJob {
    pub collection: String,
    /// A model of the primary provider; absent: the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub documents: Vec<Document>,
}

impl JobKind for EmbedDocumentsJob {
    const KIND: &'static str = "embeddings.embed";
    const QUEUE: &'static str = queue::EMBEDDINGS;
}

/// Re-embed documents stored with a model other than the configured one (after a model change,
/// or documents a fallback provider embedded), at most `limit` per run in batches of
/// `batch_size`. Enqueue it for any tenant (the scheduler uses `system`); the payload's `tenant`
/// and `collection` narrow it, absent they mean all.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RefreshEmbeddingsJob {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Documents read and embedded per round (default: the worker's `EMBEDDINGS_BATCH_SIZE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Documents re-embedded per run at most (default 10 000); the next run goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl JobKind for RefreshEmbeddingsJob {
    const KIND: &'static str = "embeddings.refresh";
    const QUEUE: &'static str = queue::EMBEDDINGS;
}

/// `[A-Za-z0-9]` then up to 63 of `[A-Za-z0-9_.-]`.
pub fn validate_collection(name: &str) -> Result<(), String> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || name.len() > MAX_COLLECTION_CHARS || !ok_first || !ok_rest {
        Err(format!(
            "`{name}` is not a collection name: 1–{MAX_COLLECTION_CHARS} of A–Z a–z 0–9 _ . -, starting with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

/// Model names go into index definitions: `[A-Za-z0-9]` then up to 127 of `[A-Za-z0-9_.:/@-]`.
pub fn validate_model(name: &str) -> Result<(), String> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '@' | '-'));
    if name.is_empty() || name.len() > MAX_MODEL_CHARS || !ok_first || !ok_rest {
        Err(format!("`{name}` is not a model name: 1–{MAX_MODEL_CHARS} of A–Z a–z 0–9 _ . : / @ -"))
    } else {
        Ok(())
    }
}

impl EmbedDocumentsJob {
    /// Every problem with the request (the first [`MAX_REPORTED_ERRORS`]), each naming its field.
    pub fn validate(&self, limits: &EmbedLimits) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Err(m) = validate_collection(&self.collection) {
            errs.push(FieldError::new("collection", m));
        }
        if let Some(model) = &self.model
            && let Err(m) = validate_model(model)
        {
            errs.push(FieldError::new("model", m));
        }
        if self.documents.is_empty() {
            errs.push(FieldError::new("documents", "at least one document is required"));
        } else if self.documents.len() > limits.max_documents {
            errs.push(FieldError::new(
                "documents",
                format!("{} documents; at most {} per request", self.documents.len(), limits.max_documents),
            ));
            return errs;
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.documents.len());
        for (i, d) in self.documents.iter().enumerate() {
            if errs.len() >= MAX_REPORTED_ERRORS {
                break;
            }
            let f = |name: &str| format!("documents[{i}].{name}");
            if d.id.is_empty() || d.id.chars().count() > MAX_ID_CHARS || d.id.chars().any(char::is_control) {
                errs.push(FieldError::new(
                    f("id"),
                    format!("must be 1–{MAX_ID_CHARS} characters without control characters"),
                ));
            } else if let Some(first) = seen.insert(d.id.as_str(), i) {
                errs.push(FieldError::new(f("id"), format!("`{}` is also the id of documents[{first}]", d.id)));
            }
            if d.text.trim().is_empty() {
                errs.push(FieldError::new(f("text"), "must not be empty"));
            } else if d.text.contains('\0') {
                errs.push(FieldError::new(f("text"), "must not contain NUL characters"));
            } else if d.text.len() > limits.max_text_bytes {
                errs.push(FieldError::new(
                    f("text"),
                    format!("{} bytes; at most {} per document", d.text.len(), limits.max_text_bytes),
                ));
            }
            match &d.metadata {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Object(_)) => {
                    let json = serde_json::to_string(&d.metadata).unwrap_or_default();
                    let size = json.len();
                    if json.contains("\\u0000") {
                        errs.push(FieldError::new(f("metadata"), "must not contain NUL characters"));
                    } else if size > MAX_METADATA_BYTES {
                        errs.push(FieldError::new(
                            f("metadata"),
                            format!("{size} bytes as JSON; at most {MAX_METADATA_BYTES}"),
                        ));
                    }
                }
                Some(_) => errs.push(FieldError::new(f("metadata"), "must be a JSON object")),
            }
        }
        errs.truncate(MAX_REPORTED_ERRORS);
        errs
    }
}

impl RefreshEmbeddingsJob {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(c) = &self.collection
            && let Err(m) = validate_collection(c)
        {
            errs.push(FieldError::new("collection", m));
        }
        if self.batch_size == Some(0) {
            errs.push(FieldError::new("batch_size", "must be at least 1"));
        }
        if self.limit == Some(0) {
            errs.push(FieldError::new("limit", "must be at least 1"));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(id: &str, text: &str) -> Document {
        Document { id: id.into(), text: text.into(), metadata: None }
    }

    fn job(docs: Vec<Document>) -> EmbedDocumentsJob {
        EmbedDocumentsJob { collection: "kb".into(), model: None, documents: docs }
    }

    fn fields(j: &EmbedDocumentsJob, limits: &EmbedLimits) -> Vec<String> {
        j.validate(limits).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_request_passes() {
        let mut j = job(vec![doc("a", "hello"), doc("b", "world")]);
        j.documents[0].metadata = Some(json!({"lang": "en"}));
        j.model = Some("text-embedding-3-small".into());
        assert_eq!(j.validate(&EmbedLimits::default()), vec![]);
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut j = job(vec![doc("a", " "), doc("a", "x"), doc("", "y"), doc("d", "z")]);
        j.collection = "no spaces".into();
        j.model = Some("bad'model".into());
        j.documents[3].metadata = Some(json!([1]));
        assert_eq!(
            fields(&j, &EmbedLimits::default()),
            vec![
                "collection",
                "model",
                "documents[0].text",
                "documents[1].id",
                "documents[2].id",
                "documents[3].metadata"
            ]
        );
        let dup = &j.validate(&EmbedLimits::default())[3];
        assert!(dup.message.contains("documents[0]"), "{dup:?}");
    }

    #[test]
    fn limits_apply() {
        let limits = EmbedLimits { max_documents: 2, max_text_bytes: 4 };
        assert_eq!(fields(&job(vec![doc("a", "x"), doc("b", "y"), doc("c", "z")]), &limits), vec!["documents"]);
        assert_eq!(fields(&job(vec![doc("a", "12345")]), &limits), vec!["documents[0].text"]);
        assert_eq!(fields(&job(vec![]), &limits), vec!["documents"]);
        let big = Document { metadata: Some(json!({"k": "x".repeat(MAX_METADATA_BYTES)})), ..doc("a", "x") };
        assert_eq!(fields(&job(vec![big]), &limits), vec!["documents[0].metadata"]);
    }

    #[test]
    fn errors_are_capped() {
        let docs = (0..500).map(|i| doc(&i.to_string(), "")).collect();
        assert_eq!(job(docs).validate(&EmbedLimits::default()).len(), MAX_REPORTED_ERRORS);
    }

    #[test]
    fn names() {
        assert!(validate_collection("kb_v2.en-US").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_collection(bad).is_err(), "{bad}");
        }
        assert!(validate_model("nomic-ai/nomic-embed-text:v1.5").is_ok());
        for bad in ["", "a'b", "a b", "a;b"] {
            assert!(validate_model(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_from_env_name_their_variable() {
        let env = Env::from_pairs([("EMBEDDINGS_MAX_DOCUMENTS", "5000")]);
        assert_eq!(EmbedLimits::from_env(&env).unwrap().max_documents, 5000);
        for (var, val) in [("EMBEDDINGS_MAX_DOCUMENTS", "0"), ("EMBEDDINGS_MAX_TEXT_BYTES", "lots")] {
            assert_eq!(EmbedLimits::from_env(&Env::from_pairs([(var, val)])).unwrap_err().var, var);
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<EmbedDocumentsJob, _> =
            serde_json::from_value(json!({"collection": "c", "documents": [{"id": "a", "text": "t", "x": 1}]}));
        assert!(r.unwrap_err().to_string().contains("`x`"));
    }
}
