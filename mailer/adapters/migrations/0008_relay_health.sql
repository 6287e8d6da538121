-- What each worker process's relay sessions last did, as it reports it with its heartbeat
-- and whenever it changes ({"ok": true, "last_success": "…", "last_failure": "…",
-- "last_reason": "…", "failures_in_a_row": 0, "recent": {"tls": 0, …}}): the console shows
-- the relay's health from every process, not only from its own. NULL: runs no worker.
ALTER TABLE workers
    ADD COLUMN relay    jsonb,
    ADD COLUMN relay_at timestamptz;                 -- when the process reported it
