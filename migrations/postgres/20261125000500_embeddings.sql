-- Embeddings: one row per (tenant, collection, document, model). pgvector is required (see
-- README, "Embeddings"; scripts/install-pgvector.sh builds it for a local PostgreSQL).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE wharf_embeddings (
    tenant_id    text        NOT NULL,
    collection   text        NOT NULL,
    doc_id       text        NOT NULL,
    model        text        NOT NULL,
    dims         integer     NOT NULL CHECK (dims > 0),
    -- hex SHA-256 of text: an unchanged document is not embedded again
    content_hash text        NOT NULL,
    text         text        NOT NULL,
    metadata     jsonb,
    -- No fixed width: models differ. Each (model, dims) gets a partial HNSW index on
    -- (embedding::vector(dims)) — halfvec above 2 000 dims — made by the worker when it first
    -- stores that model; nearest-neighbour queries filter on model and dims to use it.
    embedding    vector      NOT NULL,
    provider     text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, collection, doc_id, model),
    CHECK (vector_dims(embedding) = dims)
);
