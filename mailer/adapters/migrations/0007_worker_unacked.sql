-- What each worker process holds unacknowledged, per queue ({"mailer.receipts": 3}), as it
-- reports it with its heartbeat and whenever it changes: plain AMQP tells ready messages
-- and consumers, not unacked ones, and mailer does not require the management plugin.
ALTER TABLE workers
    ADD COLUMN unacked    jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN unacked_at timestamptz;               -- when the process counted them
