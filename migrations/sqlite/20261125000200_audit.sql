CREATE TABLE wharf_audit_log (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT,
    details    TEXT    NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE INDEX wharf_audit_log_tenant ON wharf_audit_log (tenant_id, id DESC);
