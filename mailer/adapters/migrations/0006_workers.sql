-- The worker processes, as each one reports itself: registered at start, heartbeating while
-- it runs, marked stopped on a clean stop. A row whose heartbeat is older than its own
-- `gone_after` is a process that died or lost the database: shown as gone.
CREATE TABLE workers (
    id            uuid PRIMARY KEY,               -- the process's worker id (its claims carry it)
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    runs          text[] NOT NULL,                -- what it runs: worker, web
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    gone_after    interval NOT NULL,              -- silence after which it counts as gone
    stopped_at    timestamptz                     -- a clean stop
);
CREATE INDEX workers_by_heartbeat ON workers (heartbeat_at);
