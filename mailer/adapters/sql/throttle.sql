-- Pacing shared by every worker: token buckets and leased concurrency slots.
-- Re-applied by every `mailer migrate`: edit here, never in a numbered migration.

-- Tokens a bucket holds now (at most one second of its rate), or NULL for no rate limit.
CREATE OR REPLACE FUNCTION throttle_tokens(t throttle) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t.rate > 0 THEN least(greatest(t.rate * t.factor, 1),
        t.tokens + extract(epoch FROM clock_timestamp() - t.refilled_at) * t.rate * t.factor) END;
$$;

-- Take sending rights for up to n messages from one key: that many rate tokens (if it has a
-- rate) and, if it has a concurrency limit, up to that many leased slots: the lanes the
-- messages may use side by side. Returns the messages allowed and the lanes (NULL: no limit).
CREATE OR REPLACE FUNCTION throttle_take(p_key text, p_holder uuid, n integer, p_lease interval,
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
CREATE OR REPLACE FUNCTION take_throttle(p_holder uuid, p_domains text[], p_wanted integer[],
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
CREATE OR REPLACE FUNCTION throttle_feedback(p_deferred text[], p_accepted text[],
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

-- The end of a chunk: give back its concurrency slots and tell the throttle how the
-- domains answered.
CREATE OR REPLACE FUNCTION throttle_release(p_holder uuid, p_deferred text[], p_accepted text[],
                                            p_default_rate double precision)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM throttle_slots WHERE holder = p_holder;
    IF cardinality(p_deferred) > 0 OR cardinality(p_accepted) > 0 THEN
        PERFORM throttle_feedback(p_deferred, p_accepted, p_default_rate);
    END IF;
END;
$$;
