-- The mail asking someone who subscribed to confirm (double opt-in) is a confirmation, not a
-- receipt: its job is registered as such, so that the console and the chart say so. Those
-- sent before this migration stay `receipt` (nothing in their row tells them apart).
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN
    ('receipt', 'confirmation', 'newsletter', 'subscription'));
