-- Mail written to the embedded capture server is `captured`, never `sent`: it was not
-- delivered to anyone.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN
    ('pending', 'sending', 'sent', 'captured', 'retrying', 'failed', 'suppressed', 'cancelled'));
