-- The deliveries table has one owner: these functions, called only by
-- mailer/adapters/deliveries.py. Re-applied by every `mailer migrate`: edit here, never in a
-- numbered migration.

-- Superseded by record_deliveries.
DROP FUNCTION IF EXISTS record_delivery(bigint, uuid, text, boolean, text, text, text, text);
-- Superseded by the claim_receipt below, which names the kind of message (p_kind).
DROP FUNCTION IF EXISTS claim_receipt(uuid, bytea, bytea, uuid, interval);
DROP FUNCTION IF EXISTS finish_chunk(uuid, uuid, bigint[], text[], boolean[], text[], text[],
                                     text[], timestamptz[], boolean[], text[], text[],
                                     double precision);

-- Before sending one transactional message (p_kind: receipt or confirmation): register the
-- job, detect a conflicting reuse of its id, and claim the delivery for this worker unless it
-- is finished or another worker holds it. One round trip. verdict: claimed | done | busy |
-- conflict. (A confirmation registered as a receipt before 0013 is the same job.)
CREATE OR REPLACE FUNCTION claim_receipt(p_job uuid, p_digest bytea, p_recipient bytea,
                              p_worker uuid, p_lease interval, p_kind text DEFAULT 'receipt')
RETURNS TABLE (verdict text, delivery_id bigint, status text, attempts integer,
               first_seen timestamptz, suppression text)
LANGUAGE plpgsql AS $$
DECLARE
    v_kind text;
    v_digest bytea;
BEGIN
    INSERT INTO jobs (id, kind, digest) VALUES (p_job, p_kind, p_digest)
    ON CONFLICT (id) DO NOTHING;
    SELECT j.kind, j.digest, j.created_at INTO v_kind, v_digest, first_seen
    FROM jobs j WHERE j.id = p_job;
    IF v_kind NOT IN ('receipt', 'confirmation') OR v_digest <> p_digest THEN
        verdict := 'conflict';
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO deliveries (job_id, recipient_key) VALUES (p_job, p_recipient)
    ON CONFLICT (job_id, recipient_key) DO NOTHING;
    SELECT s.reason INTO suppression FROM suppressions s WHERE s.address_key = p_recipient
       AND (s.expires_at IS NULL OR s.expires_at > now());
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

-- Record outcomes, in one round trip, for receipts and newsletters alike. A write applies to
-- a row this worker holds; the outcome of a real attempt also applies to a row that was handed
-- back (its lease lapsed) and not yet claimed again: the relay's answer wins over a guess.
-- A hard bounce suppresses the address; what goes back unsent is cancelled instead if its
-- issue was cancelled meanwhile. Returns the ids recorded and the issues now finished.
CREATE OR REPLACE FUNCTION record_deliveries(
    p_worker uuid, p_ids bigint[], p_status text[], p_attempted boolean[], p_reply text[],
    p_message_id text[], p_detail text[], p_not_before timestamptz[], p_suppress boolean[])
RETURNS TABLE (recorded bigint[], finished uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_jobs uuid[];
BEGIN
    -- Wait for a pause or cancel under way on these issues, and hold one off until we are
    -- done: the next statement then sees the state the issue is really in.
    PERFORM 1 FROM issues
     WHERE id IN (SELECT job_id FROM deliveries WHERE id = ANY (p_ids))
       FOR SHARE;
    WITH r AS (
        SELECT * FROM unnest(p_ids, p_status, p_attempted, p_reply, p_message_id, p_detail,
                             p_not_before, p_suppress)
            AS r(id, status, attempted, reply, message_id, detail, not_before, suppress)
    ), cancelled AS (
        SELECT id FROM issues WHERE state = 'cancelled'
    ), done AS (
        UPDATE deliveries d
           SET status = CASE WHEN r.status IN ('pending', 'retrying')
                              AND d.job_id IN (SELECT id FROM cancelled)
                             THEN 'cancelled' ELSE r.status END,
               attempts = d.attempts + r.attempted::integer,
               reply = coalesce(r.reply, d.reply), message_id = coalesce(r.message_id, d.message_id),
               detail = CASE WHEN r.status IN ('pending', 'retrying')
                              AND d.job_id IN (SELECT id FROM cancelled)
                             THEN 'issue cancelled' ELSE r.detail END,
               not_before = r.not_before,
               claimed_by = NULL, claimed_until = NULL, updated_at = now()
          FROM r
         WHERE d.id = r.id
           AND ((d.claimed_by = p_worker AND d.status = 'sending')
                OR (r.attempted AND d.claimed_by IS NULL AND d.status IN ('pending', 'retrying')))
        RETURNING d.id, d.job_id, d.recipient_key, r.suppress, r.reply
    ), bounced AS (
        INSERT INTO suppressions (address_key, reason, detail)
        SELECT recipient_key, 'hard_bounce', reply FROM done WHERE suppress
        ON CONFLICT (address_key) DO UPDATE
            SET reason = 'hard_bounce', detail = excluded.detail, expires_at = NULL,
                report_id = NULL, created_at = now()
            WHERE suppressions.reason = 'soft_bounce'    -- a hard bounce outranks a soft one
    )
    SELECT coalesce(array_agg(id), '{}'), array_agg(DISTINCT job_id) INTO recorded, v_jobs
      FROM done;
    finished := coalesce((SELECT array_agg(id) FROM issues_done(v_jobs) AS id), '{}');
    RETURN NEXT;
END;
$$;

-- Issues among p_ids that are sending and have nothing left to send become done. Those done,
-- and those cancelled whose last messages in flight have now settled, keep their final
-- counts: their rows change no more. (The count is a subquery, not a function of its own:
-- a SQL function's generic plan for "job_id = $1" may scan the whole table.)
CREATE OR REPLACE FUNCTION issues_done(p_ids uuid[]) RETURNS SETOF uuid
LANGUAGE sql AS $$
    -- Those about to get their final counts, locked first: a bounce being recorded for one
    -- (record_bounce locks it too) is then committed, and seen by the counts below.
    SELECT 1 FROM issues i
     WHERE i.id = ANY (p_ids) AND i.state IN ('sending', 'cancelled') AND i.final_counts IS NULL
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = i.id
                       AND d.status IN ('pending', 'sending', 'retrying'))
       FOR UPDATE;
    UPDATE issues i
       SET final_counts = (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}')
                           FROM (SELECT d.status, count(*) AS n FROM deliveries d
                                  WHERE d.job_id = i.id GROUP BY d.status) c)
     WHERE i.id = ANY (p_ids) AND i.state = 'cancelled' AND i.final_counts IS NULL
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = i.id
                       AND d.status IN ('pending', 'sending', 'retrying'));
    UPDATE issues i
       SET state = 'done', finished_at = now(),
           final_counts = (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}')
                           FROM (SELECT d.status, count(*) AS n FROM deliveries d
                                  WHERE d.job_id = i.id GROUP BY d.status) c)
     WHERE i.id = ANY (p_ids) AND i.state = 'sending'
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = i.id
                       AND d.status IN ('pending', 'sending', 'retrying'))
    RETURNING i.id;
$$;
