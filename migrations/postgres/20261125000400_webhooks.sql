-- Webhooks: endpoints (secrets encrypted with WHARF_ENCRYPTION_KEY), events (one row per
-- POST /v1/events, deduplicated by id per tenant) and the attempt log of every delivery try.

CREATE TABLE wharf_webhook_endpoints (
    id                         uuid PRIMARY KEY,
    tenant_id                  text        NOT NULL,
    url                        text        NOT NULL,
    description                text        NOT NULL DEFAULT '',
    -- exact names and `prefix.*`; empty = every event type
    event_types                jsonb       NOT NULL DEFAULT '[]',
    enabled                    boolean     NOT NULL DEFAULT true,
    disabled_reason            text,
    timeout_ms                 integer     NOT NULL,
    max_concurrency            integer     NOT NULL,
    headers                    jsonb       NOT NULL DEFAULT '{}',
    -- AEAD ciphertexts, never the secret itself
    secret_enc                 text        NOT NULL,
    previous_secret_enc        text,
    previous_secret_expires_at timestamptz,
    -- start of the current run of failed deliveries (NULL after a success)
    first_failure_at           timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wharf_webhook_endpoints_tenant ON wharf_webhook_endpoints (tenant_id, id DESC);

CREATE TABLE wharf_webhook_events (
    tenant_id  text        NOT NULL,
    id         text        NOT NULL,
    event_type text        NOT NULL,
    -- [{endpoint_id, job_id}]
    deliveries jsonb       NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX wharf_webhook_events_created ON wharf_webhook_events (created_at);

CREATE TABLE wharf_webhook_attempts (
    id            uuid PRIMARY KEY,
    tenant_id     text        NOT NULL,
    endpoint_id   uuid        NOT NULL,
    job_id        uuid        NOT NULL,
    event_id      text        NOT NULL,
    event_type    text        NOT NULL,
    -- 1-based delivery attempt of this job (deferrals for the concurrency limit are not attempts)
    attempt       integer     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    status_code   integer,
    -- NULL when delivered; http_4xx | http_5xx | http_3xx | gone | timeout | connect | refused | ...
    error_class   text,
    error         text,
    latency_ms    integer     NOT NULL,
    -- first 4 KiB of the response body
    response_body text
);
-- The purge deletes by age.
CREATE INDEX wharf_webhook_attempts_created ON wharf_webhook_attempts (created_at);
CREATE INDEX wharf_webhook_attempts_endpoint ON wharf_webhook_attempts (tenant_id, endpoint_id, id DESC);
CREATE INDEX wharf_webhook_attempts_event ON wharf_webhook_attempts (tenant_id, event_id, id DESC);
CREATE INDEX wharf_webhook_attempts_job ON wharf_webhook_attempts (job_id);
