"""RFC 3464/6522 delivery status notifications, read per recipient block: Action, Status,
Diagnostic-Code, judged with the words of the report's own text about that recipient (where
the Diagnostic-Code is empty, and for the SMTP command the refusal answered)."""

from __future__ import annotations

import re
from email.message import Message
from email.utils import parseaddr

from mailer.core.bounces import codes, texts
from mailer.core.bounces.kinds import Kind, Recipient, Report
from mailer.core.bounces.phrases import Cause, causes, words
from mailer.core.bounces.reading import MAX_RECIPIENTS, Parsed, field_blocks, header
from mailer.core.bounces.verdicts import Facts, judge
from mailer.core.scrubbing import scrub

_DIAGNOSTIC_TYPE = re.compile(r"^\s*+([\w-]{1,40})\s*+;\s*+")
_STATUSES = ("message/delivery-status", "message/global-delivery-status")


def _recipient_address(block: Message, *names: str) -> str | None:
    for name in names or ("Original-Recipient", "Final-Recipient", "X-Actual-Recipient"):
        value = header(block, name)
        kind, _, address = value.partition(";")
        if not address:
            kind, address = "rfc822", kind
        if kind.strip().lower() not in ("rfc822", "utf-8") or not address.strip():
            continue
        parsed = parseaddr(address.strip())[1] or address.strip().strip("<>")
        if parsed and "@" in parsed[1:]:
            return parsed
    return None


def _recipient(block: Message, parsed: Parsed, everyone: list[str]) -> Recipient | None:
    address = _recipient_address(block)
    action = header(block, "Action").lower().split(" ", 1)[0].rstrip(";") or None
    status_field = header(block, "Status")
    diagnostic_field = header(block, "Diagnostic-Code")
    if address is None and action is None and not status_field:
        return None  # the per-message block
    if address is None and len(everyone) <= 1 and parsed.returned is not None:
        address = parseaddr(header(parsed.returned, "To"))[1] or None  # a mangled one's
    final = _recipient_address(block, "Final-Recipient")
    typed = _DIAGNOSTIC_TYPE.match(diagnostic_field)
    diagnostic_text = diagnostic_field[typed.end() :] if typed else diagnostic_field
    status = codes.enhanced(status_field)

    def made(kind: Kind, reason: str, code: str | None, evidence: str | None) -> Recipient:
        return Recipient(
            address,
            kind,
            reason,
            code,
            action,
            scrub(diagnostic_text) or None,
            evidence,
            final if final and address and final.lower() != address.lower() else None,
        )

    if action is not None and action.startswith("delay"):
        reason = "delayed: the remote server is still trying"
        return made(Kind.IGNORED, reason, codes.dotted(status), f"Action: {action}")
    if action in ("delivered", "relayed", "expanded", "deliverable"):
        reason = f"{action}: not a failure"
        return made(Kind.IGNORED, reason, codes.dotted(status), f"Action: {action}")
    if action is None and status is None and codes.basic(status_field) is None:
        return made(Kind.UNPARSEABLE, "a DSN recipient block without Action or Status", None, None)
    verdict = judge(
        _facts(
            parsed.explanation,
            address,
            everyone,
            diagnostic_text=diagnostic_text,
            status_field=status_field,
            typed=typed,
        )
    )
    return made(verdict.kind, verdict.reason, verdict.status, verdict.evidence)


def _facts(
    explanation: str,
    address: str | None,
    everyone: list[str],
    *,
    diagnostic_text: str,
    status_field: str,
    typed: re.Match[str] | None,
) -> Facts:
    """What the block says of a failed recipient, with the report's own words about them:
    where the Diagnostic-Code says nothing, they are the reason; they often say which
    command was refused; and where they say the mailbox exists, the fields' word that it
    does not is not proof."""
    near = texts.near(explanation, address, everyone) if address else ""
    if not near and len(everyone) <= 1:
        near = explanation
    text, field = diagnostic_text, "Diagnostic-Code"
    if not text.strip() or (
        codes.enhanced(text) is None and codes.basic(text) is None and len(text) < 12
    ):
        text, field = f"{text} {near}", "the report's text"
    about = explanation if len(everyone) <= 1 else near
    said = causes(words(about)) if about else {}
    exists = (Cause.MAILBOX_FULL, Cause.DISABLED)
    contradiction = next((said[cause] for cause in exists if cause in said), None)
    comment = status_field.partition("(")[2]  # "5.0.0 (SMTP transmission failure has occurred)"
    return Facts(
        status=codes.enhanced(status_field),
        status_field="Status",
        text=f"{text} {comment}",
        text_field=field,
        command=texts.command_of(f"{near} {diagnostic_text} {comment}"),
        authority=texts.authority(explanation),
        local_program=bool(typed) and typed is not None and typed[1].lower() == "x-unix",
        contradiction=contradiction,
    )


def _split(block: Message) -> list[Message]:
    """A block naming several recipients without the blank lines between them (seen in the
    field) as one block each: a new one starts where a field repeats."""
    if len(block.get_all("Final-Recipient", [])) < 2:
        return [block]
    found: list[Message] = []
    seen: set[str] = set()
    for name, value in block.items():
        if not found or name.lower() in seen:
            found.append(Message())
            seen = set()
        found[-1][name] = value
        seen.add(name.lower())
    return found


def _blocks(found: list[tuple[str, Message]]) -> list[Message]:
    return [
        one
        for kind, part in found
        if kind in _STATUSES
        for block in field_blocks(part)
        for one in _split(block)
    ]


def from_dsn(parsed: Parsed) -> Report | None:
    # Where the report has none of its own, into returned messages too: a DSN is sometimes
    # forwarded inside another report (where it has one, a DSN in what it returns is about
    # another message).
    blocks = _blocks(parsed.parts) or _blocks(parsed.all_parts)
    if not blocks:
        return None
    envelope_id: str | None = None
    everyone = [address for block in blocks if (address := _recipient_address(block))]
    recipients: list[Recipient] = []
    for block in blocks:
        # RFC 3461: an ENVID is at most 100 characters; ours is the delivery id.
        envelope_id = envelope_id or header(block, "Original-Envelope-Id")[:100] or None
        recipient = _recipient(block, parsed, everyone)
        if recipient is not None:
            recipients.append(recipient)
        if len(recipients) > MAX_RECIPIENTS:
            return texts.too_many("DSN", parsed)
    if not recipients:
        return None
    return texts.summary(recipients, "dsn", parsed.tokens(), envelope_id)
