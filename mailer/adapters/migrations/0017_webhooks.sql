-- An account's HTTPS webhook endpoints, each following the account's events in `events`
-- by position (CONTRACT §7). One owner: mailer/adapters/webhooks.py.
CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY,
    account          text NOT NULL DEFAULT 'default',
    url              text NOT NULL CHECK (length(url) <= 2048),
    secret           text NOT NULL,              -- sealed (mailer/core/webhooks/sealing.py)
    previous_secret  text,                       -- sealed; signs too until previous_until
    previous_until   timestamptz,
    state            text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    disabled_by      text CHECK (disabled_by IN ('operator', 'gone', 'failing')),
    disabled_reason  text,
    disabled_at      timestamptz,
    cursor_position  bigint NOT NULL DEFAULT 0,  -- the last event delivered (events.position)
    batch_through    bigint,                     -- the batch being tried ends here
    replays          integer NOT NULL DEFAULT 0, -- each replay gives batches new ids
    batch_size       integer NOT NULL DEFAULT 100 CHECK (batch_size BETWEEN 1 AND 1000),
    attempts         integer NOT NULL DEFAULT 0, -- failures since the last success
    failing_since    timestamptz,
    last_success_at  timestamptz,
    last_failure_at  timestamptz,
    last_failure     text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    leased_by        uuid,                       -- the worker process serving it
    lease_until      timestamptz,
    delivered        bigint NOT NULL DEFAULT 0,  -- events delivered, all told
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'disabled') = (disabled_by IS NOT NULL))
);

CREATE INDEX webhook_endpoints_due ON webhook_endpoints (next_attempt_at) WHERE state = 'active';
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account);
