-- The scheduler (issue 6): schedule definitions as the running schedulers registered them,
-- one row per (schedule, tick) — the row is the claim, so each tick fires once across every
-- replica — and the DLQ monitor's last level per tenant with the threshold events it emitted.

CREATE TABLE wharf_schedules (
    name       text PRIMARY KEY,
    cron       text        NOT NULL,
    timezone   text        NOT NULL,
    kind       text        NOT NULL,
    queue      text        NOT NULL,
    tenant_id  text        NOT NULL,
    payload    jsonb       NOT NULL,
    enabled    boolean     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- kept up to date by the replica that wins each tick
    last_fired_at   timestamptz,
    last_job_id     uuid,
    skipped_ticks   bigint      NOT NULL DEFAULT 0,
    last_skipped_at timestamptz
);

CREATE TABLE wharf_schedule_ticks (
    schedule   text        NOT NULL,
    tick_at    timestamptz NOT NULL,
    -- fired | skipped (found more than the late limit after its time)
    status     text        NOT NULL,
    job_id     uuid,
    claimed_by text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick_at)
);

CREATE TABLE wharf_dlq_alerts (
    tenant_id  text PRIMARY KEY,
    -- ok | warning | critical
    level      text        NOT NULL,
    dead_count bigint      NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- Every `dlq.threshold` event emitted (an outbox: `delivered_at` is for the webhook hand-off).
CREATE TABLE wharf_dlq_events (
    id             uuid PRIMARY KEY,
    tenant_id      text        NOT NULL,
    event_type     text        NOT NULL,
    level          text        NOT NULL,
    previous_level text        NOT NULL,
    dead_count     bigint      NOT NULL,
    payload        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    delivered_at   timestamptz
);
CREATE INDEX wharf_dlq_events_tenant ON wharf_dlq_events (tenant_id, created_at DESC);
