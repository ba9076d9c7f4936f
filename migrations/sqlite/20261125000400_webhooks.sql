-- Webhooks, SQLite flavour: ids as text, times as Unix milliseconds, JSON as text.

CREATE TABLE wharf_webhook_endpoints (
    id                         TEXT PRIMARY KEY NOT NULL,
    tenant_id                  TEXT    NOT NULL,
    url                        TEXT    NOT NULL,
    description                TEXT    NOT NULL DEFAULT '',
    event_types                TEXT    NOT NULL DEFAULT '[]',
    enabled                    INTEGER NOT NULL DEFAULT 1,
    disabled_reason            TEXT,
    timeout_ms                 INTEGER NOT NULL,
    max_concurrency            INTEGER NOT NULL,
    headers                    TEXT    NOT NULL DEFAULT '{}',
    secret_enc                 TEXT    NOT NULL,
    previous_secret_enc        TEXT,
    previous_secret_expires_at INTEGER,
    first_failure_at           INTEGER,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL
);
CREATE INDEX wharf_webhook_endpoints_tenant ON wharf_webhook_endpoints (tenant_id, id DESC);

CREATE TABLE wharf_webhook_events (
    tenant_id  TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    deliveries TEXT    NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX wharf_webhook_events_created ON wharf_webhook_events (created_at);

CREATE TABLE wharf_webhook_attempts (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT    NOT NULL,
    endpoint_id   TEXT    NOT NULL,
    job_id        TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    attempt       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    status_code   INTEGER,
    error_class   TEXT,
    error         TEXT,
    latency_ms    INTEGER NOT NULL,
    response_body TEXT
);
CREATE INDEX wharf_webhook_attempts_created ON wharf_webhook_attempts (created_at);
CREATE INDEX wharf_webhook_attempts_endpoint ON wharf_webhook_attempts (tenant_id, endpoint_id, id DESC);
CREATE INDEX wharf_webhook_attempts_event ON wharf_webhook_attempts (tenant_id, event_id, id DESC);
CREATE INDEX wharf_webhook_attempts_job ON wharf_webhook_attempts (job_id);
