-- The issues table has one owner: mailer/adapters/issues.py, with these functions.
-- Re-applied by every `mailer migrate`: edit here, never in a numbered migration.

-- Issues among p_ids that are sending and have nothing left to send become done. Those done,
-- and those cancelled whose last messages in flight have now settled, keep their final
-- counts and their last send: their rows change no more. Called by record_deliveries
-- (mailer/adapters/sql/deliveries.sql) for the issues whose outcomes it recorded. (The count
-- is a subquery, not a function of its own: a SQL function's generic plan for
-- "job_id = $1" may scan the whole table.)
CREATE OR REPLACE FUNCTION issues_done(p_ids uuid[]) RETURNS SETOF uuid
LANGUAGE sql AS $$
    -- Those about to get their final counts, locked first: a bounce being recorded for one
    -- (bounce_delivery locks it too) is then committed, and seen by the counts below.
    SELECT 1 FROM issues i
     WHERE i.id = ANY (p_ids) AND i.state IN ('sending', 'cancelled') AND i.final_counts IS NULL
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = i.id
                       AND d.status IN ('pending', 'sending', 'retrying'))
       FOR UPDATE;
    UPDATE issues i
       SET (final_counts, last_sent_at) =
           (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}'), max(c.last_sent)
              FROM (SELECT d.status, count(*) AS n,
                           max(d.updated_at) FILTER (WHERE d.status IN ('sent', 'captured'))
                               AS last_sent
                      FROM deliveries d WHERE d.job_id = i.id GROUP BY d.status) c)
     WHERE i.id = ANY (p_ids) AND i.state = 'cancelled' AND i.final_counts IS NULL
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = i.id
                       AND d.status IN ('pending', 'sending', 'retrying'));
    UPDATE issues i
       SET state = 'done', finished_at = now(),
           (final_counts, last_sent_at) =
           (SELECT coalesce(jsonb_object_agg(c.status, c.n), '{}'), max(c.last_sent)
              FROM (SELECT d.status, count(*) AS n,
                           max(d.updated_at) FILTER (WHERE d.status IN ('sent', 'captured'))
                               AS last_sent
                      FROM deliveries d WHERE d.job_id = i.id GROUP BY d.status) c)
     WHERE i.id = ANY (p_ids) AND i.state = 'sending'
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = i.id
                       AND d.status IN ('pending', 'sending', 'retrying'))
    RETURNING i.id;
$$;

-- A finished issue's stored counts after one of its deliveries moved from p_from to p_to (it
-- bounced after it was sent); an active issue's counts are read live, so nothing changes
-- for one. The caller has the issue's row locked. Called by bounce_delivery
-- (mailer/adapters/sql/deliveries.sql).
CREATE OR REPLACE FUNCTION issue_outcome_moved(p_issue uuid, p_from text, p_to text)
RETURNS void
LANGUAGE sql AS $$
    UPDATE issues
       SET final_counts = final_counts
           || jsonb_build_object(p_from, (final_counts ->> p_from)::bigint - 1,
                                 p_to, coalesce((final_counts ->> p_to)::bigint, 0) + 1)
     WHERE id = p_issue AND final_counts IS NOT NULL AND (final_counts ->> p_from)::bigint > 0;
$$;
