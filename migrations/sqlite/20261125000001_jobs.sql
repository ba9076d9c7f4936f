-- wharf's own job tables, SQLite flavour: ids as text, times as Unix milliseconds.

CREATE TABLE wharf_jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER,
    run_at       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    lease_owner  TEXT,
    last_error   TEXT,
    result       TEXT,
    replay_of    TEXT,
    replayed_by  TEXT,
    traceparent  TEXT
);

CREATE INDEX wharf_jobs_due ON wharf_jobs (queue, run_at) WHERE state IN ('scheduled', 'queued', 'retrying');
CREATE INDEX wharf_jobs_running ON wharf_jobs (lease_owner) WHERE state = 'running';
CREATE INDEX wharf_jobs_dead ON wharf_jobs (tenant_id, id DESC) WHERE state = 'dead';

CREATE TABLE wharf_job_attempts (
    job_id      TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT,
    started_at  INTEGER,
    finished_at INTEGER NOT NULL,
    error       TEXT    NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE wharf_workers (
    id           TEXT PRIMARY KEY NOT NULL,
    queues       TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

CREATE TABLE wharf_api_keys (
    id         TEXT PRIMARY KEY NOT NULL,
    key_hash   TEXT    NOT NULL UNIQUE,
    tenant_id  TEXT    NOT NULL,
    scopes     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE wharf_idempotency_keys (
    tenant_id   TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    response    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
