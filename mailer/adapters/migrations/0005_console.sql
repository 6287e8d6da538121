-- The operators' console: accounts, server-side sessions and the audit of every action.
-- A session is known by the SHA-256 of its cookie, so a copy of this table logs nobody in.

CREATE TABLE operators (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    role           text NOT NULL CHECK (role IN ('viewer', 'operator')),
    password_hash  text NOT NULL,              -- argon2id, PHC string
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE console_sessions (
    token_hash   bytea PRIMARY KEY,
    operator_id  integer NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    source       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX console_sessions_of_operator ON console_sessions (operator_id);

-- Who did what, when, and how it went; failed logins too (they pace further attempts).
CREATE TABLE console_audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    operator  text NOT NULL,                   -- the name typed, for a refused login
    action    text NOT NULL,
    target    text,
    result    text NOT NULL,
    detail    text,
    source    text
);
CREATE INDEX console_audit_at ON console_audit (at);
CREATE INDEX console_audit_logins ON console_audit (at) WHERE action = 'login' AND result = 'refused';

-- The console's chart: outcomes recorded per minute over the last hour.
CREATE INDEX deliveries_updated ON deliveries (updated_at);
