-- Email: the send ledger, wharf's own templates and the suppression list, all per tenant.

-- Which provider accepted an email, recorded before its job is acknowledged. `identity` is the
-- email's identity: the original job (a replay's root), or a forced re-send's own job. A retry
-- or replay of an identity already here is not sent again.
CREATE TABLE wharf_email_sends (
    tenant_id           text        NOT NULL,
    identity            uuid        NOT NULL,
    job_id              uuid        NOT NULL,
    provider            text        NOT NULL,
    provider_message_id text        NOT NULL,
    accepted_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, identity)
);
CREATE INDEX wharf_email_sends_job ON wharf_email_sends (tenant_id, job_id);

-- Templates rendered by wharf (minijinja) for every provider.
CREATE TABLE wharf_email_templates (
    tenant_id  text        NOT NULL,
    name       text        NOT NULL,
    subject    text        NOT NULL,
    text_body  text,
    html_body  text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Addresses no email is sent to (lower-cased). reason: manual | hard_bounce | complaint |
-- provider (a provider refused the recipient as inactive or suppressed).
CREATE TABLE wharf_email_suppressions (
    tenant_id  text        NOT NULL,
    address    text        NOT NULL,
    reason     text        NOT NULL,
    detail     text,
    source     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, address)
);
