-- The ledger: one row per (job, recipient) with its outcome, and the global suppression list.
-- Addresses are never stored here: recipient_key / address_key is a keyed hash (HMAC-SHA256).

CREATE TABLE jobs (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('receipt', 'newsletter', 'subscription')),
    digest      bytea NOT NULL,          -- of the canonical payload: same id, other digest = conflict
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deliveries (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id         uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    recipient_key  bytea NOT NULL,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN
                       ('pending', 'sending', 'sent', 'retrying', 'failed', 'suppressed', 'cancelled')),
    attempts       integer NOT NULL DEFAULT 0,   -- SMTP transactions tried
    reply          text,                         -- the relay's last reply, address removed
    message_id     text,
    detail         text,                         -- why suppressed, failed or retrying
    claimed_by     uuid,                         -- the worker sending it while status = 'sending'
    claimed_until  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, recipient_key)
);
CREATE INDEX deliveries_claimed ON deliveries (claimed_by) WHERE status = 'sending';

CREATE TABLE suppressions (
    address_key  bytea PRIMARY KEY,
    reason       text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'erased')),
    detail       text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Before sending one receipt: register the job, detect a conflicting reuse of its id, and
-- claim the delivery for this worker unless it is finished or another worker holds it.
-- One round trip. verdict: claimed | done | busy | conflict.
CREATE FUNCTION claim_receipt(p_job uuid, p_digest bytea, p_recipient bytea,
                              p_worker uuid, p_lease interval)
RETURNS TABLE (verdict text, delivery_id bigint, status text, attempts integer,
               first_seen timestamptz, suppression text)
LANGUAGE plpgsql AS $$
DECLARE
    v_kind text;
    v_digest bytea;
BEGIN
    INSERT INTO jobs (id, kind, digest) VALUES (p_job, 'receipt', p_digest)
    ON CONFLICT (id) DO NOTHING;
    SELECT j.kind, j.digest, j.created_at INTO v_kind, v_digest, first_seen
    FROM jobs j WHERE j.id = p_job;
    IF v_kind <> 'receipt' OR v_digest <> p_digest THEN
        verdict := 'conflict';
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO deliveries (job_id, recipient_key) VALUES (p_job, p_recipient)
    ON CONFLICT (job_id, recipient_key) DO NOTHING;
    SELECT s.reason INTO suppression FROM suppressions s WHERE s.address_key = p_recipient;
    UPDATE deliveries d
       SET status = 'sending', claimed_by = p_worker, claimed_until = now() + p_lease,
           updated_at = now()
     WHERE d.job_id = p_job AND d.recipient_key = p_recipient
       AND (d.status IN ('pending', 'retrying')
            OR (d.status = 'sending' AND d.claimed_until < now()))
    RETURNING d.id, d.status, d.attempts INTO delivery_id, status, attempts;
    IF FOUND THEN
        verdict := 'claimed';
    ELSE
        SELECT d.id, d.status, d.attempts INTO delivery_id, status, attempts
        FROM deliveries d WHERE d.job_id = p_job AND d.recipient_key = p_recipient;
        verdict := CASE WHEN status = 'sending' THEN 'busy' ELSE 'done' END;
    END IF;
    RETURN NEXT;
END;
$$;

-- After the attempt: the outcome of a delivery this worker holds; a 5.1.x failure also
-- suppresses the address. Returns nothing when the claim was lost (lease expired).
CREATE FUNCTION record_delivery(p_id bigint, p_worker uuid, p_status text, p_attempted boolean,
                                p_reply text, p_message_id text, p_detail text,
                                p_suppress text)
RETURNS TABLE (attempts integer)
LANGUAGE sql AS $$
    WITH done AS (
        UPDATE deliveries d
           SET status = p_status,
               attempts = d.attempts + p_attempted::integer,
               reply = coalesce(p_reply, d.reply),
               message_id = coalesce(p_message_id, d.message_id),
               detail = p_detail,
               claimed_by = NULL, claimed_until = NULL, updated_at = now()
         WHERE d.id = p_id AND d.claimed_by = p_worker AND d.status = 'sending'
        RETURNING d.attempts, d.recipient_key
    ), suppressed AS (
        INSERT INTO suppressions (address_key, reason, detail)
        SELECT recipient_key, p_suppress, p_reply FROM done WHERE p_suppress IS NOT NULL
        ON CONFLICT (address_key) DO NOTHING
    )
    SELECT attempts FROM done;
$$;
