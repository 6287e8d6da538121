-- Parked jobs: those that can never succeed as they are, kept for an operator to look at,
-- requeue or purge. Looking is a SELECT and changes nothing, where a look at mailer.dead
-- took each message and handed it back, one more delivery each time. Written only by
-- mailer/adapters/parked.py.
CREATE TABLE parked_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- SHA-256 of the body: the same job parked twice (a redelivery, a move retried) is one row.
    digest bytea NOT NULL UNIQUE,
    -- What operators type: the start of the digest in hex, as `mailer dlq list` shows it.
    ref text GENERATED ALWAYS AS (substr(encode(digest, 'hex'), 1, 12)) STORED,
    body bytea NOT NULL,
    origin text,            -- the queue it came from; NULL: not known, so it cannot be requeued
    reason text NOT NULL,   -- never an address: masked where it is made and again when stored
    parked_at timestamptz NOT NULL,
    job_id text,            -- the message id, else the body's "id"
    deliveries integer,     -- times its origin queue handed it out, when known
    -- The message's AMQP properties (headers, content type, message id, ...) as an AMQP
    -- field table: requeued with them, byte for byte where AMQP allows.
    properties bytea NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_jobs_ref ON parked_jobs (ref);
CREATE INDEX parked_jobs_job_id ON parked_jobs (job_id);
CREATE INDEX parked_jobs_parked_at ON parked_jobs (parked_at, id);
