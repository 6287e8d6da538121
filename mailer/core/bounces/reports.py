"""`classify_report`: what a message sent to a bounce address reports, read by the first
reader that knows it: a complaint (ARF, Hotmail's, an unsubscribe request), an ESP's JSON
notification, a DSN, an auto-reply, a bounce in prose."""

from __future__ import annotations

import email
from email.utils import parseaddr

from mailer.core.bounces.arf import from_arf
from mailer.core.bounces.auto_replies import auto_reply
from mailer.core.bounces.dsn import from_dsn
from mailer.core.bounces.kinds import Kind, Recipient, Report
from mailer.core.bounces.notifications import from_notification
from mailer.core.bounces.reading import (
    CONTENT_TYPE,
    MAX_DEPTH,
    MAX_PARTS,
    POLICY,
    Parsed,
    bound_encoded,
    bounded_lines,
    head,
    header,
    mended_boundary,
    too_deep,
)
from mailer.core.bounces.texts import from_text


def classify_report(raw: bytes) -> Report:
    """What a message sent to a bounce address reports. Never raises: hostile or broken input
    is `unparseable`, with the reason."""
    try:
        whole = head(raw)
        return _classify(bounded_lines(whole), whole)
    except (RecursionError, LookupError, ValueError, TypeError, AttributeError) as error:
        return Report(
            Kind.UNPARSEABLE, f"the message could not be read: {type(error).__name__}", "none"
        )


def _classify(raw: bytes, whole: bytes) -> Report:
    if len(CONTENT_TYPE.findall(raw)) > MAX_PARTS:
        # Real reports have a handful; thousands nested cost seconds and overflow the parser.
        return Report(Kind.UNPARSEABLE, f"more than {MAX_PARTS} MIME parts", "none")
    msg = email.message_from_bytes(raw, policy=POLICY)
    mended = mended_boundary(msg, raw)
    if mended is not None:
        raw, msg = mended, email.message_from_bytes(mended, policy=POLICY)
    if too_deep(msg):
        return Report(Kind.UNPARSEABLE, f"MIME parts nested more than {MAX_DEPTH} deep", "none")
    bound_encoded(msg)
    parsed = Parsed(msg, raw, whole if whole is not raw else None)
    report = from_arf(parsed) or from_notification(parsed) or from_dsn(parsed)
    if report is not None:
        return report
    auto = auto_reply(msg)
    if auto is not None:
        found = parsed.tokens(returned=False)
        sender = parseaddr(header(msg, "From"))[1]
        who = (Recipient(sender, Kind.IGNORED, auto, evidence=auto),) if "@" in sender else ()
        return Report(Kind.IGNORED, auto, "auto-reply", who, found, evidence=auto)
    report = from_text(parsed)
    if report is not None:
        return report
    found = parsed.tokens()
    return Report(
        Kind.UNPARSEABLE, "neither a DSN, a complaint nor a known bounce", "none", (), found
    )
