-- What each worker process holds unacknowledged, per queue ({"mailer.receipts": 3}), as it
-- reports it with its heartbeat and whenever it changes: plain AMQP tells ready messages
-- and consumers, not unacked ones, and mailer does not require the management plugin.
ALTER TABLE workers
    ADD COLUMN unacked    jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN unacked_at timestamptz;               -- when the process counted them

-- An issue's counts by status ({"sent": 998512, "failed": 1488}) once nothing of it is left to
-- send: done, or cancelled with its last messages in flight settled. Its rows no longer
-- change then, and the issue list reads these instead of counting them (about 0.5 s for a
-- million). NULL while the issue is active: counted live. Written by issues_done().
ALTER TABLE issues ADD COLUMN final_counts jsonb;

UPDATE issues i
   SET final_counts = (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}')
                         FROM (SELECT d.status, count(*) AS n FROM deliveries d
                                WHERE d.job_id = i.id GROUP BY d.status) c)
 WHERE i.state IN ('done', 'cancelled')
   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = i.id
                    AND d.status IN ('pending', 'sending', 'retrying'));
