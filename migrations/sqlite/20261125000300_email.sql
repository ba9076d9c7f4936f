-- Email: the send ledger, wharf's own templates and the suppression list, all per tenant.
-- Times are Unix milliseconds. See the PostgreSQL migration for the meaning of each column.

CREATE TABLE wharf_email_sends (
    tenant_id           TEXT    NOT NULL,
    identity            TEXT    NOT NULL,
    job_id              TEXT    NOT NULL,
    provider            TEXT    NOT NULL,
    provider_message_id TEXT    NOT NULL,
    accepted_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, identity)
);
CREATE INDEX wharf_email_sends_job ON wharf_email_sends (tenant_id, job_id);

CREATE TABLE wharf_email_templates (
    tenant_id  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    text_body  TEXT,
    html_body  TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE wharf_email_suppressions (
    tenant_id  TEXT    NOT NULL,
    address    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    detail     TEXT,
    source     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, address)
);
