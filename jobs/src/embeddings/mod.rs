//! Stored embeddings: one row per (tenant, collection, document id, model) with the text, its
//! SHA-256, metadata, dims and the vector — a pgvector `vector` on PostgreSQL, a little-endian
//! f32 blob on SQLite. On PostgreSQL each (model, dims) gets a partial HNSW cosine index on a
//! dimension cast, made the first time that model is stored (see [`EmbeddingStore::upsert`]).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row, postgres::PgRow, sqlite::SqliteRow};

use crate::{StoreError, store::Db};

type Result<T> = std::result::Result<T, StoreError>;

/// Widest vector pgvector's HNSW indexes as `vector`; up to [`HALFVEC_MAX_INDEX_DIMS`] the index
/// is on a `halfvec` cast instead; wider vectors are stored without an index.
pub const VECTOR_MAX_INDEX_DIMS: usize = 2000;
pub const HALFVEC_MAX_INDEX_DIMS: usize = 4000;

/// Serializes index creation across workers (any constant that no other module uses).
const INDEX_LOCK_KEY: i64 = 0x7768_6172_6665_6d62; // "wharfemb"

/// Hex SHA-256 of a document's text: with the model, what decides whether it is embedded again.
pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The partial HNSW index of one (model, dims): a name derived from a hash (model names may be
/// long or hold characters identifiers cannot).
pub fn index_name(model: &str, dims: usize) -> String {
    let h = Sha256::digest(format!("{model}\u{0}{dims}").as_bytes());
    format!("wharf_embeddings_hnsw_{}", &hex::encode(h)[..16])
}

/// The SQL that creates that index, or `None` above [`HALFVEC_MAX_INDEX_DIMS`].
pub fn index_sql(model: &str, dims: usize) -> Option<String> {
    let (cast, ops) = match dims {
        0 => return None,
        d if d <= VECTOR_MAX_INDEX_DIMS => ("vector", "vector_cosine_ops"),
        d if d <= HALFVEC_MAX_INDEX_DIMS => ("halfvec", "halfvec_cosine_ops"),
        _ => return None,
    };
    Some(format!(
        "CREATE INDEX IF NOT EXISTS {} ON wharf_embeddings USING hnsw ((embedding::{cast}({dims})) {ops}) \
         WHERE model = '{}' AND dims = {dims}",
        index_name(model, dims),
        model.replace('\'', "''"),
    ))
}

pub fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn blob_to_vector(b: &[u8]) -> Result<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(StoreError::Corrupt(format!("an embedding blob of {} bytes is not a list of f32", b.len())));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// pgvector's text form, `[0.1,0.2]` (Rust prints the shortest text that reads back exactly).
fn vector_literal(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 11 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

fn parse_metadata(s: Option<String>) -> Result<Option<serde_json::Value>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("embedding metadata: {e}")))).transpose()
}

fn metadata_text(m: Option<&serde_json::Value>) -> Option<String> {
    m.filter(|m| !m.is_null()).map(|m| m.to_string())
}

/// What dedupe needs to know about a stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDigest {
    pub content_hash: String,
    pub metadata: Option<serde_json::Value>,
    pub dims: usize,
}

/// A vector to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEmbedding {
    pub doc_id: String,
    pub content_hash: String,
    pub text: String,
    pub metadata: Option<serde_json::Value>,
    pub vector: Vec<f32>,
}

/// A stored document as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRecord {
    pub collection: String,
    pub doc_id: String,
    pub model: String,
    pub dims: usize,
    pub content_hash: String,
    pub metadata: Option<serde_json::Value>,
    pub provider: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Only when asked for.
    pub vector: Option<Vec<f32>>,
}

/// A document whose newest row is under another model than the configured one.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleDocument {
    pub tenant: String,
    pub collection: String,
    pub doc_id: String,
    /// The model it is stored with.
    pub model: String,
    pub text: String,
    pub content_hash: String,
    pub metadata: Option<serde_json::Value>,
}

impl StaleDocument {
    pub fn key(&self) -> DocKey {
        DocKey { tenant: self.tenant.clone(), collection: self.collection.clone(), doc_id: self.doc_id.clone() }
    }
}

/// Where a scan for stale documents goes on from.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    pub tenant: String,
    pub collection: String,
    pub doc_id: String,
}

/// The SQL of embeddings over the store's database.
#[derive(Clone)]
pub struct EmbeddingStore {
    db: Db,
    /// (model, dims) whose index this process has made or seen.
    indexed: Arc<Mutex<HashSet<(String, usize)>>>,
}

impl EmbeddingStore {
    pub fn new(db: Db) -> Self {
        EmbeddingStore { db, indexed: Arc::default() }
    }

    /// Content hash, metadata and width of those of `ids` stored under `model`.
    pub async fn digests(
        &self,
        tenant: &str,
        collection: &str,
        model: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, StoredDigest>> {
        let mut out = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT doc_id, content_hash, metadata::text AS metadata, dims FROM wharf_embeddings \
                     WHERE tenant_id = $1 AND collection = $2 AND model = $3 AND doc_id = ANY($4)",
                )
                .bind(tenant)
                .bind(collection)
                .bind(model)
                .bind(ids)
                .fetch_all(pool)
                .await?;
                for r in rows {
                    let dims = r.try_get::<i32, _>("dims")? as usize;
                    out.insert(
                        r.try_get("doc_id")?,
                        digest_row(r.try_get("content_hash")?, r.try_get("metadata")?, dims)?,
                    );
                }
            }
            Db::Sqlite(pool) => {
                let ids = serde_json::to_string(ids).expect("ids serialize");
                let rows = sqlx::query(
                    "SELECT doc_id, content_hash, metadata, dims FROM wharf_embeddings \
                     WHERE tenant_id = ?1 AND collection = ?2 AND model = ?3 \
                     AND doc_id IN (SELECT value FROM json_each(?4))",
                )
                .bind(tenant)
                .bind(collection)
                .bind(model)
                .bind(ids)
                .fetch_all(pool)
                .await?;
                for r in rows {
                    let dims = r.try_get::<i64, _>("dims")? as usize;
                    out.insert(
                        r.try_get("doc_id")?,
                        digest_row(r.try_get("content_hash")?, r.try_get("metadata")?, dims)?,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Replaces the metadata of stored documents whose text did not change.
    pub async fn update_metadata(
        &self,
        tenant: &str,
        collection: &str,
        model: &str,
        updates: &[(&str, Option<&serde_json::Value>)],
    ) -> Result<u64> {
        if updates.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = updates.iter().map(|u| u.0).collect();
        let metas: Vec<Option<String>> = updates.iter().map(|u| metadata_text(u.1)).collect();
        match &self.db {
            Db::Postgres(pool) => Ok(sqlx::query(
                "UPDATE wharf_embeddings e SET metadata = d.metadata::jsonb, updated_at = now() \
                 FROM UNNEST($4::text[], $5::text[]) AS d(doc_id, metadata) \
                 WHERE e.tenant_id = $1 AND e.collection = $2 AND e.model = $3 AND e.doc_id = d.doc_id",
            )
            .bind(tenant)
            .bind(collection)
            .bind(model)
            .bind(&ids)
            .bind(&metas)
            .execute(pool)
            .await?
            .rows_affected()),
            Db::Sqlite(pool) => {
                let now = Utc::now().timestamp_millis();
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let mut n = 0;
                for (id, meta) in ids.iter().zip(&metas) {
                    n += sqlx::query(
                        "UPDATE wharf_embeddings SET metadata = ?5, updated_at = ?6 \
                         WHERE tenant_id = ?1 AND collection = ?2 AND model = ?3 AND doc_id = ?4",
                    )
                    .bind(tenant)
                    .bind(collection)
                    .bind(model)
                    .bind(id)
                    .bind(meta)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(n)
            }
        }
    }

    /// Stores vectors of one model (all of the same width) in one transaction, replacing the
    /// documents' earlier rows under that model. On PostgreSQL the model's HNSW index is made
    /// first if this process has not seen it yet.
    pub async fn upsert(
        &self,
        tenant: &str,
        collection: &str,
        model: &str,
        provider: &str,
        rows: &[NewEmbedding],
    ) -> Result<()> {
        let Some(first) = rows.first() else { return Ok(()) };
        let dims = first.vector.len();
        if dims == 0 || rows.iter().any(|r| r.vector.len() != dims) {
            return Err(StoreError::Corrupt(format!("vectors of `{model}` differ in width or are empty")));
        }
        match &self.db {
            Db::Postgres(pool) => {
                self.ensure_index(pool, model, dims).await?;
                let ids: Vec<&str> = rows.iter().map(|r| r.doc_id.as_str()).collect();
                let hashes: Vec<&str> = rows.iter().map(|r| r.content_hash.as_str()).collect();
                let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
                let metas: Vec<Option<String>> = rows.iter().map(|r| metadata_text(r.metadata.as_ref())).collect();
                let vectors: Vec<String> = rows.iter().map(|r| vector_literal(&r.vector)).collect();
                sqlx::query(
                    "INSERT INTO wharf_embeddings \
                       (tenant_id, collection, doc_id, model, dims, content_hash, text, metadata, embedding, provider) \
                     SELECT $1, $2, d.doc_id, $3, $4, d.content_hash, d.text, d.metadata::jsonb, d.embedding::vector, $5 \
                     FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) \
                       AS d(doc_id, content_hash, text, metadata, embedding) \
                     ON CONFLICT (tenant_id, collection, doc_id, model) DO UPDATE SET \
                       dims = EXCLUDED.dims, content_hash = EXCLUDED.content_hash, text = EXCLUDED.text, \
                       metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding, \
                       provider = EXCLUDED.provider, updated_at = now()",
                )
                .bind(tenant)
                .bind(collection)
                .bind(model)
                .bind(dims as i32)
                .bind(provider)
                .bind(&ids)
                .bind(&hashes)
                .bind(&texts)
                .bind(&metas)
                .bind(&vectors)
                .execute(pool)
                .await?;
            }
            Db::Sqlite(pool) => {
                let now = Utc::now().timestamp_millis();
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                for r in rows {
                    sqlx::query(
                        "INSERT INTO wharf_embeddings (tenant_id, collection, doc_id, model, dims, content_hash, \
                           text, metadata, embedding, provider, created_at, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) \
                         ON CONFLICT (tenant_id, collection, doc_id, model) DO UPDATE SET \
                           dims = excluded.dims, content_hash = excluded.content_hash, text = excluded.text, \
                           metadata = excluded.metadata, embedding = excluded.embedding, \
                           provider = excluded.provider, updated_at = excluded.updated_at",
                    )
                    .bind(tenant)
                    .bind(collection)
                    .bind(&r.doc_id)
                    .bind(model)
                    .bind(dims as i64)
                    .bind(&r.content_hash)
                    .bind(&r.text)
                    .bind(metadata_text(r.metadata.as_ref()))
                    .bind(vector_to_blob(&r.vector))
                    .bind(provider)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Makes the partial HNSW index of (model, dims) unless it exists. Workers racing to make it
    /// take turns on an advisory lock; `IF NOT EXISTS` lets the later ones through.
    async fn ensure_index(&self, pool: &sqlx::PgPool, model: &str, dims: usize) -> Result<()> {
        let key = (model.to_string(), dims);
        if self.indexed.lock().expect("index set").contains(&key) {
            return Ok(());
        }
        match index_sql(model, dims) {
            None => tracing::warn!(model, dims, "vectors this wide get no HNSW index; nearest-neighbour queries scan"),
            Some(sql) => {
                let name = index_name(model, dims);
                let exists: bool =
                    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&name).fetch_one(pool).await?;
                if !exists {
                    let mut tx = pool.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(INDEX_LOCK_KEY).execute(&mut *tx).await?;
                    sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
                    tx.commit().await?;
                    tracing::info!(model, dims, index = %name, "created the HNSW index of a model");
                }
            }
        }
        self.indexed.lock().expect("index set").insert(key);
        Ok(())
    }

    /// One stored document: under `model`, or the most recently updated of its models.
    pub async fn get(
        &self,
        tenant: &str,
        collection: &str,
        doc_id: &str,
        model: Option<&str>,
        with_vector: bool,
    ) -> Result<Option<EmbeddingRecord>> {
        match &self.db {
            Db::Postgres(pool) => {
                let row = sqlx::query(
                    "SELECT collection, doc_id, model, dims, content_hash, metadata::text AS metadata, provider, \
                       created_at, updated_at, CASE WHEN $5 THEN embedding::real[] END AS vector \
                     FROM wharf_embeddings \
                     WHERE tenant_id = $1 AND collection = $2 AND doc_id = $3 AND ($4::text IS NULL OR model = $4) \
                     ORDER BY updated_at DESC, model LIMIT 1",
                )
                .bind(tenant)
                .bind(collection)
                .bind(doc_id)
                .bind(model)
                .bind(with_vector)
                .fetch_optional(pool)
                .await?;
                row.map(|r| pg_record(&r)).transpose()
            }
            Db::Sqlite(pool) => {
                let row = sqlx::query(
                    "SELECT collection, doc_id, model, dims, content_hash, metadata, provider, created_at, \
                       updated_at, CASE WHEN ?5 THEN embedding END AS vector \
                     FROM wharf_embeddings \
                     WHERE tenant_id = ?1 AND collection = ?2 AND doc_id = ?3 AND (?4 IS NULL OR model = ?4) \
                     ORDER BY updated_at DESC, model LIMIT 1",
                )
                .bind(tenant)
                .bind(collection)
                .bind(doc_id)
                .bind(model)
                .bind(with_vector)
                .fetch_optional(pool)
                .await?;
                row.map(|r| sqlite_record(&r)).transpose()
            }
        }
    }

    /// Documents whose newest row is under another model than `model` (none under `model`, or
    /// an older one), after `after` in key order, at most `limit`; optionally of one tenant
    /// and collection. Each document once, with its newest other-model row.
    pub async fn stale(
        &self,
        model: &str,
        tenant: Option<&str>,
        collection: Option<&str>,
        after: &DocKey,
        limit: u32,
    ) -> Result<Vec<StaleDocument>> {
        let docs: Vec<StaleDocument> = match &self.db {
            Db::Postgres(pool) => {
                let rows = sqlx::query(
                    "SELECT s.tenant_id, s.collection, s.doc_id, s.model, s.text, s.content_hash, \
                       s.metadata::text AS metadata \
                     FROM wharf_embeddings s \
                     WHERE s.model <> $1 AND ($2::text IS NULL OR s.tenant_id = $2) \
                       AND ($3::text IS NULL OR s.collection = $3) \
                       AND (s.tenant_id, s.collection, s.doc_id) > ($4, $5, $6) \
                       AND NOT EXISTS (SELECT 1 FROM wharf_embeddings c WHERE c.tenant_id = s.tenant_id \
                         AND c.collection = s.collection AND c.doc_id = s.doc_id AND c.model = $1 \
                         AND c.updated_at >= s.updated_at) \
                     ORDER BY s.tenant_id, s.collection, s.doc_id, s.updated_at DESC \
                     LIMIT $7",
                )
                .bind(model)
                .bind(tenant)
                .bind(collection)
                .bind(&after.tenant)
                .bind(&after.collection)
                .bind(&after.doc_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
                rows.iter().map(pg_stale).collect::<Result<_>>()?
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT s.tenant_id, s.collection, s.doc_id, s.model, s.text, s.content_hash, s.metadata \
                     FROM wharf_embeddings s \
                     WHERE s.model <> ?1 AND (?2 IS NULL OR s.tenant_id = ?2) AND (?3 IS NULL OR s.collection = ?3) \
                       AND (s.tenant_id, s.collection, s.doc_id) > (?4, ?5, ?6) \
                       AND NOT EXISTS (SELECT 1 FROM wharf_embeddings c WHERE c.tenant_id = s.tenant_id \
                         AND c.collection = s.collection AND c.doc_id = s.doc_id AND c.model = ?1 \
                         AND c.updated_at >= s.updated_at) \
                     ORDER BY s.tenant_id, s.collection, s.doc_id, s.updated_at DESC \
                     LIMIT ?7",
                )
                .bind(model)
                .bind(tenant)
                .bind(collection)
                .bind(&after.tenant)
                .bind(&after.collection)
                .bind(&after.doc_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
                rows.iter().map(sqlite_stale).collect::<Result<_>>()?
            }
        };
        // Rows come newest first within a document: keep the first of each.
        let mut out: Vec<StaleDocument> = Vec::with_capacity(docs.len());
        for d in docs {
            if out.last().is_none_or(|l| l.key() != d.key()) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

fn digest_row(content_hash: String, metadata: Option<String>, dims: usize) -> Result<StoredDigest> {
    Ok(StoredDigest { content_hash, metadata: parse_metadata(metadata)?, dims })
}

fn pg_record(r: &PgRow) -> Result<EmbeddingRecord> {
    Ok(EmbeddingRecord {
        collection: r.try_get("collection")?,
        doc_id: r.try_get("doc_id")?,
        model: r.try_get("model")?,
        dims: r.try_get::<i32, _>("dims")? as usize,
        content_hash: r.try_get("content_hash")?,
        metadata: parse_metadata(r.try_get("metadata")?)?,
        provider: r.try_get("provider")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        vector: r.try_get("vector")?,
    })
}

fn sqlite_record(r: &SqliteRow) -> Result<EmbeddingRecord> {
    Ok(EmbeddingRecord {
        collection: r.try_get("collection")?,
        doc_id: r.try_get("doc_id")?,
        model: r.try_get("model")?,
        dims: r.try_get::<i64, _>("dims")? as usize,
        content_hash: r.try_get("content_hash")?,
        metadata: parse_metadata(r.try_get("metadata")?)?,
        provider: r.try_get("provider")?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
        vector: r.try_get::<Option<Vec<u8>>, _>("vector")?.map(|b| blob_to_vector(&b)).transpose()?,
    })
}

fn pg_stale(r: &PgRow) -> Result<StaleDocument> {
    Ok(StaleDocument {
        tenant: r.try_get("tenant_id")?,
        collection: r.try_get("collection")?,
        doc_id: r.try_get("doc_id")?,
        model: r.try_get("model")?,
        text: r.try_get("text")?,
        content_hash: r.try_get("content_hash")?,
        metadata: parse_metadata(r.try_get("metadata")?)?,
    })
}

fn sqlite_stale(r: &SqliteRow) -> Result<StaleDocument> {
    Ok(StaleDocument {
        tenant: r.try_get("tenant_id")?,
        collection: r.try_get("collection")?,
        doc_id: r.try_get("doc_id")?,
        model: r.try_get("model")?,
        text: r.try_get("text")?,
        content_hash: r.try_get("content_hash")?,
        metadata: parse_metadata(r.try_get("metadata")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_little_endian() {
        let v = vec![1.0f32, -0.5, 3.25e-8, f32::MAX];
        let b = vector_to_blob(&v);
        assert_eq!(&b[..4], &1.0f32.to_le_bytes());
        assert_eq!(blob_to_vector(&b).unwrap(), v);
        assert!(blob_to_vector(&[0, 1, 2]).is_err());
    }

    #[test]
    fn vector_literals_read_back_exactly() {
        let v = [0.1f32, -2.5e-7, 1.0 / 3.0];
        let lit = vector_literal(&v);
        assert!(lit.starts_with('[') && lit.ends_with(']'));
        let back: Vec<f32> = lit[1..lit.len() - 1].split(',').map(|s| s.parse().unwrap()).collect();
        assert_eq!(back, v);
    }

    #[test]
    fn index_per_model_and_width() {
        let sql = index_sql("all-MiniLM-L6-v2", 384).unwrap();
        assert!(sql.contains("(embedding::vector(384)) vector_cosine_ops"), "{sql}");
        assert!(sql.contains("WHERE model = 'all-MiniLM-L6-v2' AND dims = 384"), "{sql}");
        assert!(index_sql("gemini-embedding-001", 3072).unwrap().contains("halfvec(3072)) halfvec_cosine_ops"));
        assert_eq!(index_sql("huge", 8192), None);
        assert_ne!(index_name("m", 384), index_name("m", 512));
        assert!(index_name("a/very:long@model-name", 1536).len() < 64, "fits an identifier");
        assert!(index_sql("o'brien", 3).unwrap().contains("'o''brien'"), "quotes are doubled");
    }

    #[test]
    fn content_hash_is_hex_sha256() {
        assert_eq!(content_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
