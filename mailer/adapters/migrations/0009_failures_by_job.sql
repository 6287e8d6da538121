-- The failures and retries of one job, newest first (the console's issue page, every few
-- seconds while an issue sends). Without it that query walked deliveries_updated back
-- through every job's rows looking for the few that failed: 23 ms for an issue of 50,000
-- with none, and growing with the whole ledger. Few rows are ever in these states, so the
-- index is small and costs the writes of sending nothing.
CREATE INDEX deliveries_failures ON deliveries (job_id, updated_at)
    WHERE status IN ('failed', 'retrying');
