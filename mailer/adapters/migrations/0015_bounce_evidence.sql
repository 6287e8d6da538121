-- What decided a bounce report's kind: the field or the phrase (`Status: 5.1.1`,
-- `Diagnostic-Code says "mailbox full"`), shown on the console's report page.
ALTER TABLE bounce_reports ADD COLUMN evidence text;
