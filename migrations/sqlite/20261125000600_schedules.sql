-- The scheduler (issue 6), SQLite flavour: times as Unix milliseconds, ids as text.

CREATE TABLE wharf_schedules (
    name       TEXT PRIMARY KEY NOT NULL,
    cron       TEXT    NOT NULL,
    timezone   TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    queue      TEXT    NOT NULL,
    tenant_id  TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    enabled    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_fired_at   INTEGER,
    last_job_id     TEXT,
    skipped_ticks   INTEGER NOT NULL DEFAULT 0,
    last_skipped_at INTEGER
);

CREATE TABLE wharf_schedule_ticks (
    schedule   TEXT    NOT NULL,
    tick_at    INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    job_id     TEXT,
    claimed_by TEXT    NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (schedule, tick_at)
);

CREATE TABLE wharf_dlq_alerts (
    tenant_id  TEXT PRIMARY KEY NOT NULL,
    level      TEXT    NOT NULL,
    dead_count INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
);

CREATE TABLE wharf_dlq_events (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    level          TEXT    NOT NULL,
    previous_level TEXT    NOT NULL,
    dead_count     INTEGER NOT NULL,
    payload        TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    delivered_at   INTEGER
);
CREATE INDEX wharf_dlq_events_tenant ON wharf_dlq_events (tenant_id, created_at DESC);
