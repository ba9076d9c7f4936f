-- wharf's own job tables (the SQL is wharf's; see README "Why not apalis' storage").

CREATE TABLE wharf_jobs (
    id           uuid PRIMARY KEY,
    tenant_id    text        NOT NULL,
    kind         text        NOT NULL,
    queue        text        NOT NULL,
    -- scheduled | queued | running | retrying | succeeded | dead | cancelled | replayed | discarded
    state        text        NOT NULL,
    payload      jsonb       NOT NULL,
    attempt      integer     NOT NULL DEFAULT 0,
    max_attempts integer,
    run_at       timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    lease_owner  text,
    last_error   text,
    result       jsonb,
    replay_of    uuid,
    replayed_by  uuid,
    traceparent  text
);

-- The claim: due jobs of one queue, oldest run_at first.
CREATE INDEX wharf_jobs_due ON wharf_jobs (queue, run_at) WHERE state IN ('scheduled', 'queued', 'retrying');
-- The rescuer: running jobs by lease holder.
CREATE INDEX wharf_jobs_running ON wharf_jobs (lease_owner) WHERE state = 'running';
-- The dead-letter queue per tenant, newest first.
CREATE INDEX wharf_jobs_dead ON wharf_jobs (tenant_id, id DESC) WHERE state = 'dead';

-- One row per failed attempt (a success is recorded on the job itself).
CREATE TABLE wharf_job_attempts (
    job_id      uuid        NOT NULL,
    attempt     integer     NOT NULL,
    worker      text,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL,
    error       text        NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE wharf_workers (
    id           text PRIMARY KEY,
    queues       text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE wharf_api_keys (
    id         text PRIMARY KEY,
    key_hash   text        NOT NULL UNIQUE,
    tenant_id  text        NOT NULL,
    scopes     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE wharf_idempotency_keys (
    tenant_id   text        NOT NULL,
    key         text        NOT NULL,
    fingerprint text        NOT NULL,
    response    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
