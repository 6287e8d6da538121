-- The suppressions table has one owner: mailer/adapters/suppressions.py, with this function.
-- Re-applied by every `mailer migrate`: edit here, never in a numbered migration.

-- Hard bounces (p_details[i] says why p_keys[i] bounced; p_report: the bounce report, NULL
-- for the relay's own answer) suppress their addresses for everything, for good. A hard
-- bounce outranks a soft bounce's suppression and leaves any other as it is. Called by
-- record_deliveries (mailer/adapters/sql/deliveries.sql) for the relay's 5xx.
CREATE OR REPLACE FUNCTION suppress_hard_bounces(p_keys bytea[], p_details text[],
                                                 p_report bigint)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO suppressions (address_key, reason, detail, report_id)
    SELECT DISTINCT ON (b.key) b.key, 'hard_bounce', b.detail, p_report
      FROM unnest(p_keys, p_details) AS b(key, detail)
     ORDER BY b.key
    ON CONFLICT (address_key) DO UPDATE
        SET reason = 'hard_bounce', detail = excluded.detail, expires_at = NULL,
            report_id = excluded.report_id, created_at = now()
        WHERE suppressions.reason = 'soft_bounce';
$$;
