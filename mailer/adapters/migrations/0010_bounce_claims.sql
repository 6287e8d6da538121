-- A bounce report is classified in a process of its own within a time limit. Before that,
-- it is claimed for a while (claimed_until), so no other worker process takes it meanwhile,
-- and counted (attempts): one whose classification was cut off too often (the service
-- stopped or crashed each time) is given up as unparseable instead of being tried for ever.
--
-- Mail to postmaster@ the bounce domain (RFC 5321 requires it be accepted) is kept here too,
-- for the operator: tied to the delivery whose return path it quotes, if any; otherwise
-- with no delivery at all.

ALTER TABLE bounce_reports
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN claimed_until timestamptz,
    ALTER COLUMN delivery_id DROP NOT NULL;
