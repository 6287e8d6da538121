"""Bounce reports, complaints and SMTP replies → hard | soft | policy | complaint | ignored |
unparseable, each with its reason and the evidence that decided it.

- `kinds`: what a classification says (Kind, Recipient, Report);
- `reading`: what one report may cost, and the bounded reading of its MIME parts;
- `codes`, `phrases`, `verdicts`: what a status code and a remote server's words say, and
  the decision by the gravest sound evidence;
- `dsn`, `arf`, `notifications`, `texts`, `auto_replies`: one reader per kind of report (RFC
  3464 DSNs, RFC 5965 complaints, ESP notifications forwarded by mail, bounces in prose with
  per-family recognisers, RFC 3834 auto-replies);
- `reports`: `classify_report`, which tries them in turn;
- `replies`: `classify_reply`, the same rules for a reply in session;
- `soft_bounces`: when soft bounces suppress an address.

Pure: bytes in, a Report out. Nothing here sends, stores or reads the clock.
"""
