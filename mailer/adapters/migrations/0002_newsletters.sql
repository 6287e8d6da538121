-- Newsletters: lists, subscribers and their per-list status, issues, and the limits that
-- pace sending. `subscribers.email` is the only place an address is held in clear; erasing
-- a person deletes that row and leaves a keyed hash in `suppressions`.

CREATE TABLE lists (
    id    smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug  text NOT NULL UNIQUE                 -- [lists.<slug>] in the configuration
);

CREATE TABLE subscribers (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address_key  bytea NOT NULL UNIQUE,
    email        text NOT NULL,
    name         text,
    locale       text CHECK (locale IN ('pl', 'en')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscriptions (
    list_id        smallint NOT NULL REFERENCES lists (id),
    subscriber_id  bigint NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    status         text NOT NULL CHECK (status IN ('pending', 'subscribed', 'unsubscribed')),
    source         text NOT NULL,              -- portal, import, confirmation link, page, one-click
    changed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, subscriber_id)
);
CREATE INDEX subscriptions_by_subscriber ON subscriptions (subscriber_id);
CREATE INDEX subscriptions_subscribed ON subscriptions (list_id, subscriber_id)
    WHERE status = 'subscribed';

CREATE TABLE issues (
    id           uuid PRIMARY KEY REFERENCES jobs (id),
    list_id      smallint NOT NULL REFERENCES lists (id),
    payload      jsonb NOT NULL,               -- the job, to render it again after a restart
    state        text NOT NULL CHECK (state IN ('scheduled', 'sending', 'paused', 'cancelled', 'done')),
    send_at      timestamptz NOT NULL,
    total        integer,                      -- deliveries, once materialized
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
CREATE INDEX issues_due ON issues (send_at) WHERE state = 'scheduled';

ALTER TABLE deliveries
    ADD COLUMN subscriber_id bigint REFERENCES subscribers (id) ON DELETE SET NULL,
    ADD COLUMN not_before timestamptz;         -- a retry waits until then
CREATE INDEX deliveries_to_send ON deliveries (job_id, id) WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_in_flight ON deliveries (job_id, claimed_until) WHERE status = 'sending';
CREATE INDEX deliveries_of_subscriber ON deliveries (subscriber_id)
    WHERE status IN ('pending', 'retrying', 'sending');

-- Pacing, shared by every worker process: a token bucket per key ('*' for all newsletter
-- mail, else a recipient domain) and, where a concurrency limit is set, leased slots.
CREATE TABLE throttle (
    key          text PRIMARY KEY,
    rate         double precision NOT NULL,    -- messages per second; 0 = no rate limit
    concurrency  integer,                      -- messages in flight at once; NULL = no limit
    factor       double precision NOT NULL DEFAULT 1,   -- below 1 after 4xx replies
    tokens       double precision NOT NULL,
    refilled_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    configured   boolean NOT NULL DEFAULT true  -- false: made by throttle_feedback for a domain
);

CREATE TABLE throttle_slots (
    key         text NOT NULL,
    slot        integer NOT NULL,
    holder      uuid NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (key, slot)
);
CREATE INDEX throttle_slots_holder ON throttle_slots (holder);

-- Tokens a bucket holds now (at most one second of its rate), or NULL for no rate limit.
CREATE FUNCTION throttle_tokens(t throttle) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t.rate > 0 THEN least(greatest(t.rate * t.factor, 1),
        t.tokens + extract(epoch FROM clock_timestamp() - t.refilled_at) * t.rate * t.factor) END;
$$;

-- Take sending rights for up to n messages from one key: that many rate tokens (if it has a
-- rate) and, if it has a concurrency limit, up to that many leased slots: the lanes the
-- messages may use side by side. Returns the messages allowed and the lanes (NULL: no limit).
CREATE FUNCTION throttle_take(p_key text, p_holder uuid, n integer, p_lease interval,
                              OUT granted integer, OUT lanes integer)
LANGUAGE plpgsql AS $$
DECLARE
    t throttle%ROWTYPE;
    v_tokens double precision;
BEGIN
    granted := n;
    SELECT * INTO t FROM throttle WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_tokens := throttle_tokens(t);
    IF v_tokens IS NOT NULL THEN
        granted := least(granted, floor(v_tokens)::integer);
    END IF;
    IF t.concurrency IS NOT NULL AND granted > 0 THEN
        DELETE FROM throttle_slots s WHERE s.key = p_key AND s.expires_at < clock_timestamp();
        WITH taken AS (
            INSERT INTO throttle_slots (key, slot, holder, expires_at)
            SELECT p_key, free.n, p_holder, clock_timestamp() + p_lease
            FROM generate_series(0, t.concurrency - 1) AS free(n)
            WHERE NOT EXISTS (SELECT 1 FROM throttle_slots s WHERE s.key = p_key AND s.slot = free.n)
            ORDER BY free.n LIMIT granted
            RETURNING 1
        ) SELECT count(*) INTO lanes FROM taken;
        IF lanes = 0 THEN
            granted := 0;
        END IF;
    END IF;
    IF v_tokens IS NOT NULL THEN
        UPDATE throttle SET tokens = v_tokens - granted, refilled_at = clock_timestamp()
        WHERE key = p_key;
    END IF;
END;
$$;

-- How many messages may go now, per recipient domain: up to p_wanted[i] to p_domains[i],
-- within what the '*' bucket (all newsletter mail) allows, shared in proportion to what is
-- wanted; and with how many lanes (concurrent messages) where a domain limits concurrency.
-- Domains are taken in sorted order, so concurrent callers never deadlock; a domain without
-- a row is not limited. Concurrency slots are leased to p_holder.
CREATE FUNCTION take_throttle(p_holder uuid, p_domains text[], p_wanted integer[],
                              p_lease interval)
RETURNS TABLE (domain text, granted integer, lanes integer)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    g throttle%ROWTYPE;
    v_total integer := (SELECT coalesce(sum(w), 0) FROM unnest(p_wanted) AS w);
    v_budget integer;
    v_left integer;
    v_given integer := 0;
BEGIN
    SELECT * INTO g FROM throttle WHERE key = '*' FOR UPDATE;
    v_budget := v_total;
    IF FOUND AND throttle_tokens(g) IS NOT NULL THEN
        v_budget := least(v_budget, floor(throttle_tokens(g))::integer);
    END IF;
    v_left := greatest(v_budget, 0);
    FOR r IN SELECT w.d, w.n FROM unnest(p_domains, p_wanted) AS w(d, n) ORDER BY w.d LOOP
        domain := r.d;
        SELECT t.granted, t.lanes INTO granted, lanes FROM throttle_take(r.d, p_holder,
            least(r.n, v_left, greatest(1, ceil(v_budget::numeric * r.n / v_total)::integer)),
            p_lease) AS t;
        v_left := v_left - granted;
        v_given := v_given + granted;
        RETURN NEXT;
    END LOOP;
    IF v_given > 0 THEN
        PERFORM throttle_take('*', p_holder, v_given, p_lease);
    END IF;
END;
$$;

-- After a chunk: domains that answered 4xx are slowed down (halved, to 5% at least), domains
-- that took mail are sped up again; a domain with no row yet starts from p_default_rate.
CREATE FUNCTION throttle_feedback(p_deferred text[], p_accepted text[],
                                  p_default_rate double precision)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO throttle (key, rate, tokens, factor, configured)
    SELECT d, p_default_rate, 0, 0.5, false FROM unnest(p_deferred) AS d WHERE p_default_rate > 0
    ON CONFLICT (key) DO UPDATE
        SET factor = greatest(0.05, throttle.factor * 0.5),
            rate = CASE WHEN throttle.rate > 0 THEN throttle.rate ELSE p_default_rate END;
    UPDATE throttle SET factor = least(1, factor + 0.1)
    WHERE key = ANY (p_accepted) AND factor < 1 AND NOT key = ANY (p_deferred);
$$;

-- After a chunk of newsletter deliveries, in one round trip: record every outcome this
-- worker holds the claim for (a hard bounce also suppresses the address), give back the
-- chunk's concurrency slots, tell the throttle how the domains answered, and mark the
-- issues that have nothing left to send as done.
CREATE FUNCTION finish_chunk(
    p_worker uuid, p_slot_holder uuid,
    p_ids bigint[], p_status text[], p_attempted boolean[], p_reply text[],
    p_message_id text[], p_detail text[], p_not_before timestamptz[], p_hard_bounce boolean[],
    p_deferred text[], p_accepted text[], p_default_rate double precision)
RETURNS TABLE (recorded integer, finished uuid[])
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
                             p_not_before, p_hard_bounce)
            AS r(id, status, attempted, reply, message_id, detail, not_before, hard_bounce)
    ), cancelled AS (
        SELECT id FROM issues WHERE state = 'cancelled'
    ), done AS (
        -- What goes back unsent is cancelled instead if its issue was cancelled meanwhile.
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
         WHERE d.id = r.id AND d.claimed_by = p_worker AND d.status = 'sending'
        RETURNING d.job_id, d.recipient_key, r.hard_bounce, r.reply
    ), bounced AS (
        INSERT INTO suppressions (address_key, reason, detail)
        SELECT recipient_key, 'hard_bounce', reply FROM done WHERE hard_bounce
        ON CONFLICT (address_key) DO NOTHING
    )
    SELECT count(*)::integer, array_agg(DISTINCT job_id) INTO recorded, v_jobs FROM done;
    DELETE FROM throttle_slots WHERE holder = p_slot_holder;
    IF cardinality(p_deferred) > 0 OR cardinality(p_accepted) > 0 THEN
        PERFORM throttle_feedback(p_deferred, p_accepted, p_default_rate);
    END IF;
    finished := (SELECT array_agg(id) FROM issues_done(v_jobs) AS id);
    RETURN NEXT;
END;
$$;

-- Issues among p_ids that are sending and have nothing left to send become done.
CREATE FUNCTION issues_done(p_ids uuid[]) RETURNS SETOF uuid
LANGUAGE sql AS $$
    UPDATE issues i SET state = 'done', finished_at = now()
     WHERE i.id = ANY (p_ids) AND i.state = 'sending'
       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = i.id
                       AND d.status IN ('pending', 'sending', 'retrying'))
    RETURNING i.id;
$$;
