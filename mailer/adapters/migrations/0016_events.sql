-- The transactional outbox of events back to the portal (CONTRACT §7). One owner:
-- mailer/adapters/outbox.py. A row is written in the same transaction as the change it
-- tells of; the relay leader gives committed rows their `position` (commit order: `seq`
-- values can commit out of order) and publishes them in that order: normally both in one
-- transaction that commits once the broker confirmed; published rows are kept for
-- [events] retention_days, then purged oldest first.
CREATE TABLE events (
    seq          bigserial PRIMARY KEY,            -- insert order
    id           uuid NOT NULL UNIQUE,             -- the event's id (CONTRACT §7)
    account      text NOT NULL DEFAULT 'default',
    type         text NOT NULL,                    -- e.g. 'message.delivered'
    occurred_at  timestamptz NOT NULL,
    body         jsonb NOT NULL,                   -- the whole event exactly as published
    position     bigint UNIQUE,                    -- set by the relay leader, in commit order
    published_at timestamptz                       -- when the broker confirmed it
);

-- What the relay leader sequences next.
CREATE INDEX events_unsequenced ON events (seq) WHERE position IS NULL;
-- What it publishes next, when the broker was away while it sequenced (normally an event is
-- sequenced and marked published in one statement, and never enters this index).
CREATE INDEX events_unpublished ON events (position)
    WHERE published_at IS NULL AND position IS NOT NULL;
-- An account's events after a cursor (webhooks), and in a time range (replay).
CREATE INDEX events_account_position ON events (account, position);
-- A person erased: their address leaves the kept events.
CREATE INDEX events_recipient ON events ((lower(body ->> 'recipient')))
    WHERE body ->> 'recipient' IS NOT NULL;
