-- Operator actions (replay, discard, …): who did what to which job, per tenant.
CREATE TABLE wharf_audit_log (
    id         uuid PRIMARY KEY,
    tenant_id  text        NOT NULL,
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target     text,
    details    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wharf_audit_log_tenant ON wharf_audit_log (tenant_id, id DESC);
