"""`classify_reply`: one SMTP reply in session, judged by the same rules as a bounce report's
recipient (mailer.core.bounces.verdicts). Before RCPT (connect, HELO, STARTTLS, AUTH, MAIL
FROM) a refusal is the relay refusing us; so is our sender or relaying refused, whatever the
stage: held and retried, never the recipient's fault."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from mailer.core.bounces import codes
from mailer.core.bounces.kinds import Kind
from mailer.core.bounces.phrases import Cause, Command, causes, words
from mailer.core.bounces.verdicts import Facts, judge

Stage = Literal["connect", "helo", "starttls", "auth", "mail", "rcpt", "data"]
_STAGE_COMMANDS = {
    stage: Command(stage)
    for stage in ("connect", "helo", "starttls", "auth", "mail", "rcpt", "data")
}


class ReplyKind(StrEnum):
    ACCEPTED = "accepted"
    HARD = "hard"
    SOFT = "soft"
    POLICY = "policy"
    SENDER = "sender"  # the relay refused us, not the recipient: hold and retry


@dataclass(frozen=True, slots=True)
class ReplyVerdict:
    kind: ReplyKind
    reason: str
    status: str | None
    temporary: bool  # a 4xx: try again later
    evidence: str | None = None

    @property
    def retry(self) -> bool:
        """Whether the delivery is held and tried again, rather than settled."""
        return self.temporary or self.kind is ReplyKind.SENDER


def classify_reply(code: int, enhanced: str | None, text: str, stage: Stage) -> ReplyVerdict:
    found = codes.enhanced(enhanced or "") or codes.enhanced(text[:16])
    status = codes.dotted(found)
    said = f"{code} {status}" if status else str(code)
    temporary = 400 <= code < 500
    if code < 400:
        return ReplyVerdict(ReplyKind.ACCEPTED, f"{said}: accepted", status, False, f"reply {code}")
    if stage not in ("rcpt", "data"):
        return ReplyVerdict(
            ReplyKind.SENDER,
            f"{said} at {stage}: the relay refused us, not the recipient",
            status,
            temporary,
            f"refused at {stage}",
        )
    named = causes(words(text))
    if (found and codes.is_sender(found)) or Cause.RELAY in named or Cause.SENDER in named:
        phrase = named.get(Cause.RELAY) or named.get(Cause.SENDER)
        return ReplyVerdict(
            ReplyKind.SENDER,
            f"{said} at {stage}: our sender or relaying was refused",
            status,
            temporary,
            f'reply says "{phrase}"' if phrase else f"reply: {status}",
        )
    if found is not None and found[0] != code // 100:
        found = None  # "550 4.1.1" is incoherent: the basic code rules
    verdict = judge(
        Facts(
            status=found or (code // 100, 0, 0),
            status_field="reply",
            text=f"{code} {text}",
            text_field="reply",
            command=_STAGE_COMMANDS[stage],
        )
    )
    kind = {
        Kind.HARD: ReplyKind.HARD,
        Kind.POLICY: ReplyKind.POLICY,
    }.get(verdict.kind, ReplyKind.SOFT)
    return ReplyVerdict(kind, f"{code} {verdict.reason}", status, temporary, verdict.evidence)
