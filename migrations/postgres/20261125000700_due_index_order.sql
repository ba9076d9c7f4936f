-- The claim orders by (run_at, id): with `id` in the index the planner walks it in order and
-- stops at LIMIT instead of sorting every due row (W1 drain 5k → 25k jobs/s, docs/benchmarks.md).
DROP INDEX IF EXISTS wharf_jobs_due;
CREATE INDEX wharf_jobs_due ON wharf_jobs (queue, run_at, id) WHERE state IN ('scheduled', 'queued', 'retrying');
