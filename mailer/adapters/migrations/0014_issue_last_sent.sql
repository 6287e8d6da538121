-- When a finished issue last had a message sent (or captured), kept with its final counts
-- by issues_done(): the console shows it on the issue's page, and a finished issue's rows
-- are not read again to show it. NULL while the issue is active (read from its
-- deliveries then), or when nothing of it went out.
ALTER TABLE issues ADD COLUMN last_sent_at timestamptz;

UPDATE issues i
   SET last_sent_at = (SELECT max(d.updated_at) FROM deliveries d
                        WHERE d.job_id = i.id AND d.status IN ('sent', 'captured'))
 WHERE i.final_counts IS NOT NULL;
