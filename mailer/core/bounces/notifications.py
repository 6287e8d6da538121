"""Bounce and complaint notifications of Amazon SES (also inside an SNS envelope), SendGrid
and Mailgun, as JSON bodies a relay forwards by mail. Each recipient's status and words are
judged as a DSN's are; the notification's own type decides complaints and delays."""

from __future__ import annotations

import email
import json
import re
from collections.abc import Callable
from email.message import Message
from typing import Any

from mailer.core.bounces import codes
from mailer.core.bounces.kinds import Kind, Recipient, Report
from mailer.core.bounces.reading import MAX_RECIPIENTS, POLICY, Parsed, decoded
from mailer.core.bounces.texts import summary, too_many
from mailer.core.bounces.verdicts import Facts, judge
from mailer.core.scrubbing import scrub

# sendmail breaks a line longer than it allows with "!", a line end and a space.
_BROKEN_LINE = re.compile(r"!\r?\n ")


def _json_body(parsed: Parsed) -> Any:
    found = _json_in(parsed.parts, parsed.text)
    if found is _CUT and parsed.uncut is not None:
        whole = email.message_from_bytes(parsed.uncut, policy=POLICY)
        parts = [(part.get_content_type(), part) for part in whole.walk()]
        found = _json_in(parts, decoded)
    return None if found is _CUT else found


_CUT = object()  # JSON that does not decode: perhaps its line was cut


def _json_in(found: list[tuple[str, Message]], text_of: Callable[[Message], str]) -> Any:
    cut = False
    for kind, part in found:
        if not kind.startswith("text/") or part.is_multipart():
            continue
        text = text_of(part).strip()
        if not text.startswith(("{", "[")):
            continue
        try:
            return json.JSONDecoder(strict=False).raw_decode(_BROKEN_LINE.sub("", text))[0]
        except ValueError:
            cut = True
    return _CUT if cut else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _named(value: Any) -> str:
    """A notification's own word (a type, an event) fit to show in evidence."""
    return scrub(_text(value), limit=40)


def from_notification(parsed: Parsed) -> Report | None:
    body = _json_body(parsed)
    if isinstance(body, dict) and isinstance(body.get("Message"), str):  # an SNS envelope
        try:
            body = json.loads(body["Message"])
        except ValueError:
            return None
    if (isinstance(body, dict) and "notificationType" in body) or (
        isinstance(body, dict) and "eventType" in body
    ):
        recipients = _ses(body)
        name = "Amazon SES"
    elif (
        isinstance(body, list)
        and body
        and all(isinstance(one, dict) and "event" in one for one in body)
    ):
        recipients = _sendgrid(body)
        name = "SendGrid"
    elif isinstance(body, dict) and isinstance(body.get("event-data"), dict):
        recipients = _mailgun(body["event-data"])
        name = "Mailgun"
    else:
        return None
    if recipients is None:
        return None
    if len(recipients) > MAX_RECIPIENTS:
        return too_many(f"{name} notification", parsed)
    found = parsed.tokens(returned=False)
    if not recipients:
        reason = f"an {name} notification naming no recipient"
        return Report(Kind.UNPARSEABLE, reason, "notification", (), found)
    return summary(recipients, "notification", found)


def _judged(address: Any, status: str, text: str, final: bool, evidence: str) -> Recipient:
    facts = Facts(
        status=codes.enhanced(status),
        status_field=f"{evidence} status",
        text=text,
        text_field=f"{evidence} diagnostic",
        final=final,
    )
    verdict = judge(facts)
    if not final and verdict.kind is not Kind.IGNORED:
        return Recipient(
            _address(address),
            Kind.IGNORED,
            "a delay: the relay is still trying",
            verdict.status,
            "delayed",
            scrub(text) or None,
            f"{evidence}: temporary",
        )
    return Recipient(
        _address(address),
        verdict.kind,
        verdict.reason,
        verdict.status,
        "failed",
        scrub(text) or None,
        f"{evidence}; {verdict.evidence}" if verdict.evidence else evidence,
    )


def _address(value: Any) -> str | None:
    text = _text(value)
    return text if "@" in text else None


def _plain(kind: Kind, reason: str, evidence: str, address: Any) -> Recipient:
    return Recipient(_address(address), kind, reason, evidence=evidence)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _listed(value: Any) -> list[Any]:
    """A notification's list of recipients or events, cut past MAX_RECIPIENTS (a report
    naming more is refused before any is judged)."""
    return value[: MAX_RECIPIENTS + 1] if isinstance(value, list) else []


def _ses(body: dict[str, Any]) -> list[Recipient] | None:
    kind = _text(body.get("notificationType") or body.get("eventType")).lower()
    if kind == "bounce":
        bounce = _object(body.get("bounce"))
        bounce_type = _named(bounce.get("bounceType"))
        sub_type = _named(bounce.get("bounceSubType"))
        evidence = f"SES bounceType: {bounce_type}/{sub_type}"
        return [
            _judged(
                one.get("emailAddress"),
                _text(one.get("status")),
                _text(one.get("diagnosticCode")) or sub_type,
                bounce_type != "Transient",
                evidence,
            )
            for one in _listed(bounce.get("bouncedRecipients"))
            if isinstance(one, dict)
        ]
    if kind == "complaint":
        complaint = _object(body.get("complaint"))
        feedback = _named(complaint.get("complaintFeedbackType")).lower() or "abuse"
        evidence = f"SES complaint, complaintFeedbackType: {feedback}"
        verdict = (
            (Kind.IGNORED, "SES: the recipient said it is not spam")
            if feedback == "not-spam"
            else (Kind.COMPLAINT, "SES complaint: the recipient reported the message")
        )
        return [
            _plain(*verdict, evidence, one.get("emailAddress"))
            for one in _listed(complaint.get("complainedRecipients"))
            if isinstance(one, dict)
        ]
    if kind == "delivery":
        delivery = _object(body.get("delivery"))
        return [
            _plain(Kind.IGNORED, "SES: delivered", "SES notificationType: Delivery", one)
            for one in _listed(delivery.get("recipients"))
        ]
    return None


def _sendgrid(events: list[dict[str, Any]]) -> list[Recipient]:
    found = []
    for event in _listed(events):
        name = _named(event.get("event")).lower()
        address = event.get("email")
        evidence = f"SendGrid event: {name}"
        if name == "bounce":
            text = _text(event.get("reason"))
            if _text(event.get("type")) == "blocked":
                evidence += " (blocked)"
            found.append(_judged(address, _text(event.get("status")), text, True, evidence))
        elif name == "spamreport":
            found.append(_plain(Kind.COMPLAINT, "SendGrid spam report", evidence, address))
        elif name in ("unsubscribe", "group_unsubscribe"):
            found.append(
                _plain(Kind.COMPLAINT, "SendGrid: the recipient unsubscribed", evidence, address)
            )
        elif name in ("deferred", "delivered", "processed", "open", "click", "dropped"):
            found.append(_plain(Kind.IGNORED, f"SendGrid {name}: not a bounce", evidence, address))
    return found


def _mailgun(event: dict[str, Any]) -> list[Recipient]:
    name = _named(event.get("event")).lower()
    address = event.get("recipient")
    evidence = f"Mailgun event: {name}"
    if name == "failed":
        status = _object(event.get("delivery-status"))
        severity = _named(event.get("severity"))
        text = " ".join(
            str(status.get(key) or "")
            for key in ("code", "enhanced-code", "message", "description")
        )
        return [
            _judged(
                address,
                _text(status.get("enhanced-code")),
                text,
                severity != "temporary",
                f"{evidence} ({severity})",
            )
        ]
    if name == "complained":
        return [_plain(Kind.COMPLAINT, "Mailgun complaint", evidence, address)]
    if name == "unsubscribed":
        return [_plain(Kind.COMPLAINT, "Mailgun: the recipient unsubscribed", evidence, address)]
    return [_plain(Kind.IGNORED, f"Mailgun {name}: not a bounce", evidence, address)]
