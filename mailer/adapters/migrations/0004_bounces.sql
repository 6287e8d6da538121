-- Bounces and complaints that come back to our return paths (b-<token>@[bounces] domain),
-- and what they change. Raw reports are kept for a retention, then their bytes are deleted;
-- the classification stays, for the counts operators look at. No address is stored here:
-- a report names its delivery through the signed token, and the delivery its recipient_key.

ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN
    ('pending', 'sending', 'sent', 'captured', 'retrying', 'failed', 'suppressed', 'cancelled',
     'bounced'));
ALTER TABLE deliveries
    ADD COLUMN bounce_kind text CHECK (bounce_kind IN ('hard', 'soft', 'policy')),
    ADD COLUMN bounce_status text,             -- the RFC 3463 code the report gave
    ADD COLUMN bounce_diagnostic text;         -- the remote server's words, addresses removed

ALTER TABLE suppressions DROP CONSTRAINT suppressions_reason_check;
ALTER TABLE suppressions ADD CONSTRAINT suppressions_reason_check CHECK (reason IN
    ('hard_bounce', 'complaint', 'erased', 'soft_bounce', 'manual'));
ALTER TABLE suppressions
    ADD COLUMN report_id bigint,               -- the bounce report that made it, if any
    ADD COLUMN expires_at timestamptz;         -- soft bounces lift; NULL = for good

CREATE TABLE bounce_reports (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    peer           text NOT NULL,              -- IP address of the MTA that sent it
    delivery_id    bigint NOT NULL,            -- named by the verified return path
    size           integer NOT NULL,
    raw            bytea,                      -- NULL once past the retention
    kind           text CHECK (kind IN
                       ('hard', 'soft', 'policy', 'complaint', 'ignored', 'unparseable')),
    reason         text,
    status         text,                       -- RFC 3463 code
    diagnostic     text,                       -- the remote server's words, addresses removed
    domain         text,                       -- the recipient's domain, when the report says
    outcome        text,                       -- what it changed, or why it changed nothing
    classified_at  timestamptz
);
CREATE INDEX bounce_reports_unclassified ON bounce_reports (id) WHERE classified_at IS NULL;
CREATE INDEX bounce_reports_delivery ON bounce_reports (delivery_id);
CREATE INDEX bounce_reports_kept ON bounce_reports (received_at) WHERE raw IS NOT NULL;

-- One point a day: the days on which an address soft-bounced.
CREATE TABLE soft_bounce_days (
    address_key  bytea NOT NULL,
    day          date NOT NULL,
    PRIMARY KEY (address_key, day)
);
