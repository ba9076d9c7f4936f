-- Purges (issue 6) delete by age in bounded batches: each needs an index on its age column.

CREATE INDEX wharf_jobs_finished ON wharf_jobs (finished_at) WHERE state IN ('succeeded', 'cancelled');
CREATE INDEX wharf_jobs_settled_dead ON wharf_jobs (updated_at) WHERE state IN ('replayed', 'discarded');
CREATE INDEX wharf_idempotency_keys_created ON wharf_idempotency_keys (created_at);
CREATE INDEX wharf_schedule_ticks_at ON wharf_schedule_ticks (tick_at);
-- Jobs whose payload lives in object storage, by blob key: a blob is live while referenced.
CREATE INDEX wharf_jobs_payload_ref ON wharf_jobs ((payload -> 'wharf_payload_ref' ->> 'key'))
    WHERE payload ? 'wharf_payload_ref';
