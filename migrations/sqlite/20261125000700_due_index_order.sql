-- The claim orders by (run_at, id): keep `id` in the index so no sort is needed.
DROP INDEX IF EXISTS wharf_jobs_due;
CREATE INDEX wharf_jobs_due ON wharf_jobs (queue, run_at, id) WHERE state IN ('scheduled', 'queued', 'retrying');
