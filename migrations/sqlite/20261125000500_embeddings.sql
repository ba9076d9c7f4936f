-- Embeddings: one row per (tenant, collection, document, model); the vector is a little-endian
-- f32 blob of `dims` values. Times are Unix milliseconds.
CREATE TABLE wharf_embeddings (
    tenant_id    TEXT    NOT NULL,
    collection   TEXT    NOT NULL,
    doc_id       TEXT    NOT NULL,
    model        TEXT    NOT NULL,
    dims         INTEGER NOT NULL CHECK (dims > 0),
    content_hash TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    metadata     TEXT,
    embedding    BLOB    NOT NULL CHECK (length(embedding) = 4 * dims),
    provider     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, collection, doc_id, model)
);
