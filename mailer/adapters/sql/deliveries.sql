-- The deliveries table has one owner: mailer/adapters/deliveries.py, with these functions,
-- which it alone calls. What they change in another owner's table they change by calling
-- that owner's function (docs/architecture.md lists each call). Re-applied by every
-- `mailer migrate`: edit here, never in a numbered migration.

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
    PERFORM register_job(p_job, p_kind, p_digest);
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
-- For each id recorded, in the same order: its status now, its job, the job's kind and the
-- list slug of a newsletter's issue (for the events mailer/adapters/deliveries.py writes in
-- the same transaction).
DROP FUNCTION IF EXISTS record_deliveries(uuid, bigint[], text[], boolean[], text[], text[],
                                          text[], timestamptz[], boolean[]);
CREATE FUNCTION record_deliveries(
    p_worker uuid, p_ids bigint[], p_status text[], p_attempted boolean[], p_reply text[],
    p_message_id text[], p_detail text[], p_not_before timestamptz[], p_suppress boolean[])
RETURNS TABLE (recorded bigint[], finished uuid[], statuses text[], job_ids uuid[],
               kinds text[], lists text[])
LANGUAGE plpgsql AS $$
DECLARE
    v_jobs uuid[];
    v_bounced bytea[];
    v_replies text[];
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
        RETURNING d.id, d.job_id, d.status, d.recipient_key, r.suppress, r.reply
    )
    SELECT coalesce(array_agg(done.id ORDER BY done.id), '{}'), array_agg(DISTINCT done.job_id),
           array_agg(done.recipient_key) FILTER (WHERE done.suppress),
           array_agg(done.reply) FILTER (WHERE done.suppress),
           coalesce(array_agg(done.status ORDER BY done.id), '{}'),
           coalesce(array_agg(done.job_id ORDER BY done.id), '{}'),
           coalesce(array_agg(j.kind ORDER BY done.id), '{}'),
           coalesce(array_agg(l.slug ORDER BY done.id), '{}')
      INTO recorded, v_jobs, v_bounced, v_replies, statuses, job_ids, kinds, lists
      FROM done
      LEFT JOIN jobs j ON j.id = done.job_id
      LEFT JOIN issues i ON i.id = done.job_id
      LEFT JOIN lists l ON l.id = i.list_id;
    IF v_bounced IS NOT NULL THEN
        PERFORM suppress_hard_bounces(v_bounced, v_replies, NULL);
    END IF;
    finished := coalesce((SELECT array_agg(id) FROM issues_done(v_jobs) AS id), '{}');
    RETURN NEXT;
END;
$$;

-- A delivery that went out bounced later, as a bounce report says (p_kind: hard, soft or
-- policy). Only a delivery that went out (sent or captured) becomes bounced: one already
-- bounced keeps its first report, so a report applied twice changes nothing the second
-- time. False when nothing was written. A finished issue's stored counts move the delivery
-- from sent (or captured) to bounced; its issue row is locked first, as issues_done locks
-- it before it counts: so either the count sees this bounce or this bounce sees the stored
-- counts.
CREATE OR REPLACE FUNCTION bounce_delivery(p_id bigint, p_kind text, p_status text,
                                           p_diagnostic text, p_detail text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_job uuid;
    v_was text;
BEGIN
    PERFORM 1 FROM issues WHERE id = (SELECT job_id FROM deliveries WHERE id = p_id) FOR UPDATE;
    WITH before AS (
        SELECT id, job_id, status FROM deliveries
         WHERE id = p_id AND status IN ('sent', 'captured') FOR UPDATE
    )
    UPDATE deliveries d
       SET status = 'bounced', bounce_kind = p_kind, bounce_status = p_status,
           bounce_diagnostic = p_diagnostic, detail = p_detail, updated_at = now()
      FROM before WHERE d.id = before.id
    RETURNING before.job_id, before.status INTO v_job, v_was;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM issue_outcome_moved(v_job, v_was, 'bounced');
    RETURN true;
END;
$$;
