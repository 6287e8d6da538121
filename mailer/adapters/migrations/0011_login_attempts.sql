-- Console logins in the last window, per account typed and per source, each taken before
-- its password is checked: concurrent guesses beyond the limit are refused without hashing,
-- across processes. `failed` is NULL while the password is being checked; a right password
-- sets it false, which gives the slot back. Rows older than the window are deleted as new
-- ones are taken. The audit log keeps its own record of every login.
CREATE TABLE console_login_attempts (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    account  text NOT NULL,
    source   text NOT NULL,             -- the client's address, or its IPv6 /64
    failed   boolean
);
CREATE INDEX console_login_attempts_at ON console_login_attempts (at);

-- Failed logins were counted from the audit log through this index; no longer.
DROP INDEX console_audit_logins;
