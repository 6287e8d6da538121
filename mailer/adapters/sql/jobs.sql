-- The jobs table has one owner: mailer/adapters/jobs.py, with this function.
-- Re-applied by every `mailer migrate`: edit here, never in a numbered migration.

-- Register a job's id with its kind and its payload's digest, once. True when the id is new;
-- false when it was known already (the caller compares the kind and digest stored).
CREATE OR REPLACE FUNCTION register_job(p_id uuid, p_kind text, p_digest bytea)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs (id, kind, digest) VALUES (p_id, p_kind, p_digest)
    ON CONFLICT (id) DO NOTHING;
    RETURN FOUND;
END;
$$;
