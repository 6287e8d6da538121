"""Complaints: RFC 5965 feedback reports (abuse and fraud are complaints, opt-out an
unsubscribe that counts as one, not-spam is not), Hotmail's complaints without a
feedback-report part, and an unsubscribe request a mail client sends (Apple Mail's)."""

from __future__ import annotations

import re
from email.utils import getaddresses, parseaddr

from mailer.core.bounces.kinds import Kind, Recipient, Report
from mailer.core.bounces.reading import MAX_RECIPIENTS, Parsed, field_blocks, header, text_of
from mailer.core.bounces.texts import too_many
from mailer.core.scrubbing import scrub

_FEEDBACK: dict[str, tuple[Kind, str]] = {
    "abuse": (Kind.COMPLAINT, "ARF abuse: the recipient reported the message as spam"),
    "fraud": (Kind.COMPLAINT, "ARF fraud: the recipient reported the message as fraud"),
    "opt-out": (Kind.COMPLAINT, "ARF opt-out: the recipient asked to receive no more"),
    "not-spam": (Kind.IGNORED, "ARF not-spam: the recipient said it is not spam"),
    "auth-failure": (Kind.POLICY, "ARF auth-failure: our SPF, DKIM or DMARC failed there"),
    "virus": (Kind.POLICY, "ARF virus: the receiver found a virus in our message"),
}
_HOTMAIL = re.compile(r"^\s*complaint about message from\b", re.IGNORECASE)
_UNSUBSCRIBE_SUBJECT = re.compile(r"^\s*unsubscribe\s*$", re.IGNORECASE)


def from_arf(parsed: Parsed) -> Report | None:
    fields = next(
        (
            block
            for kind, part in parsed.parts
            if kind == "message/feedback-report"
            for block in field_blocks(part)
        ),
        None,
    )
    if fields is None:
        return _hotmail(parsed) or _unsubscribe(parsed)
    feedback_type = scrub(header(fields, "Feedback-Type").lower())[:40] or None
    returned = parsed.returned
    found = parsed.tokens(header(fields, "Original-Mail-From"))
    if feedback_type is None:
        return Report(Kind.UNPARSEABLE, "an ARF report without Feedback-Type", "arf", (), found)
    kind, reason = _FEEDBACK.get(
        feedback_type, (Kind.IGNORED, f"ARF {feedback_type}: not a complaint")
    )
    named = [text_of(value) for value in fields.get_all("Original-Rcpt-To", [])]
    if not named and returned is not None:
        named = [text_of(value) for value in returned.get_all("To", [])]
    if len(named) > MAX_RECIPIENTS:
        return too_many("complaint", parsed)
    addresses = [address for _, address in getaddresses(named) if "@" in address]
    if len(addresses) > MAX_RECIPIENTS:
        return too_many("complaint", parsed)
    evidence = f"Feedback-Type: {feedback_type}"
    recipients = [Recipient(address, kind, reason, evidence=evidence) for address in addresses] or [
        Recipient(None, kind, reason, evidence=evidence)
    ]
    return Report(
        kind,
        reason,
        "arf",
        tuple(recipients),
        found,
        feedback_type=feedback_type,
        evidence=evidence,
    )


def _hotmail(parsed: Parsed) -> Report | None:
    """Hotmail's complaint: `complaint about message from <IP>` from staff@hotmail.com, the
    message attached, its recipient in X-HmXmrOriginalRecipient."""
    msg = parsed.msg
    if not _HOTMAIL.search(header(msg, "Subject")) or "hotmail" not in header(msg, "From").lower():
        return None
    returned = parsed.returned
    address = None
    if returned is not None:
        named = header(returned, "X-HmXmrOriginalRecipient") or header(returned, "To")
        address = parseaddr(named)[1] or None
    reason = "Hotmail complaint: the recipient reported the message as spam"
    evidence = f'Subject: "{scrub(header(msg, "Subject"))[:80]}" from Hotmail'
    one = Recipient(
        address if address and "@" in address else None, Kind.COMPLAINT, reason, evidence=evidence
    )
    found = parsed.tokens()
    return Report(
        Kind.COMPLAINT, reason, "arf", (one,), found, feedback_type="abuse", evidence=evidence
    )


def _unsubscribe(parsed: Parsed) -> Report | None:
    """A mail client's unsubscribe request (Apple Mail: `X-Apple-Unsubscribe: true`, subject
    `unsubscribe`): the person asked for no more mail, as an ARF opt-out says."""
    msg = parsed.msg
    apple = header(msg, "X-Apple-Unsubscribe").lower() == "true"
    if not apple and not _UNSUBSCRIBE_SUBJECT.match(header(msg, "Subject")):
        return None
    if msg.is_multipart():
        return None
    address = parseaddr(header(msg, "From"))[1] or None
    reason = "an unsubscribe request from the recipient's mail client"
    evidence = "X-Apple-Unsubscribe: true" if apple else 'Subject: "unsubscribe"'
    one = Recipient(
        address if address and "@" in address else None, Kind.COMPLAINT, reason, evidence=evidence
    )
    found = parsed.tokens(returned=False)
    return Report(
        Kind.COMPLAINT, reason, "arf", (one,), found, feedback_type="opt-out", evidence=evidence
    )
