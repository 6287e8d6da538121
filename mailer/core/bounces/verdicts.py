"""One recipient's refusal judged by the gravest sound evidence: its status code, the
remote server's words, and the SMTP command they answered. The rules, in the order they
are tried (`_RULES`):

1. Delivered (2.x.x): ignored. A per-family recogniser's own reading, where it has one.
2. Refused before any recipient was named (at connect, HELO, STARTTLS, MAIL FROM), in words
   of a block, a listing, spam, SPF/DKIM/DMARC, reverse DNS, a rate, relaying, our sender
   or our content, or with our sender's code (X.1.7, X.1.8, X.7.27): **policy**, whatever
   else the code says. Our IP, content or sender refused is never the recipient's fault,
   and no code overrules words that say it was.
3. A policy code (X.7.x, X.6.x) without words about the recipient's mailbox: policy.
4. A local delivery program failed, or words that say the mailbox exists (full, too big,
   disabled, the recipient's own filter): soft, whatever the code (`550 5.1.1 ... over
   quota` is full, not unknown).
5. The address or its domain does not exist (5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10, 5.4.4, or
   words that say so): **hard**, where the evidence is sound (`_Judgement.missing`).
6. Anything else: soft (failed for good, or temporary); its cause where the words name one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mailer.core.bounces import codes
from mailer.core.bounces.codes import Code
from mailer.core.bounces.kinds import Kind
from mailer.core.bounces.phrases import SOUND, Cause, Command, causes, command, decisive, words

_HARD_CAUSES = (Cause.USER_UNKNOWN, Cause.HOST_UNKNOWN, Cause.MOVED, Cause.NO_MAIL)
# What the reporting MTA's own DNS lookup found, or a move the mailbox's system states: no
# filter answers so, so the words are sound without the command.
_SOUND_CAUSES = (Cause.HOST_UNKNOWN, Cause.MOVED, Cause.NO_MAIL)
_MAILBOX_EXISTS = (Cause.MAILBOX_FULL, Cause.TOO_BIG, Cause.DISABLED, Cause.FILTERED)
_ABOUT_THE_RECIPIENT = (*_HARD_CAUSES, *_MAILBOX_EXISTS, Cause.MAILER)
_CONTRADICTS_HARD = (2, 6)  # code subjects that say the mailbox exists, or our content failed
_COMMAND_WORDS = {
    Command.CONNECT: "the connection",
    Command.HELO: "EHLO/HELO",
    Command.STARTTLS: "STARTTLS",
    Command.AUTH: "AUTH",
    Command.MAIL: "MAIL FROM",
    Command.RCPT: "RCPT TO",
    Command.DATA: "DATA",
}


@dataclass(frozen=True, slots=True)
class Facts:
    """What a reader found of one recipient's refusal."""

    status: Code | None = None  # a structured status: a DSN's Status, an ESP's status
    status_field: str = "Status"
    text: str = ""  # the remote server's words
    text_field: str = "Diagnostic-Code"
    command: Command | None = None  # the command refused, where the reader knows it
    final: bool = True  # the reporter gave up (not a delay)
    # The report is the recipient's own mail system saying the mailbox is not there (a
    # per-family recogniser knows): as sound as a refusal of RCPT TO.
    authority: str | None = None
    local_program: bool = False  # a local delivery program failed (Diagnostic-Type X-Unix)
    cause: Cause | None = None  # a recogniser's own reading, with `cause_evidence`
    cause_evidence: str = ""
    # Where the report's own prose says the mailbox exists (full, disabled) while its fields
    # say it does not: the phrase. The report contradicts itself: not proof.
    contradiction: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    reason: str
    evidence: str
    status: str | None  # the code that stands, dotted
    grounded: bool = True  # a code, a phrase or the command decided, not their absence


def judge(facts: Facts) -> Verdict:
    said = words(facts.text)
    text_code = codes.enhanced(said, failures_only=True)
    reply = codes.basic(said)
    code = facts.status
    if text_code and (code is None or (code[1:] == (0, 0) and text_code[0] == code[0])):
        code = text_code  # "Status: 5.0.0" with "550 5.1.1 ..." in the words
    from_text = code is not None and code == text_code and facts.status != code
    if code is not None:
        klass = code[0]
    elif reply is not None:
        klass = reply // 100
    else:
        klass = 5 if facts.final else 4
    judgement = _Judgement(
        facts,
        causes(said),
        code,
        facts.text_field if from_text else facts.status_field,
        klass,
        klass == 4 or (reply is not None and reply // 100 == 4 and not text_code),
        reply,
        facts.command or command(said),
    )
    return next(verdict for rule in _RULES if (verdict := rule(judgement)))


@dataclass(frozen=True, slots=True)
class _Judgement:
    facts: Facts
    found: dict[Cause, str]
    code: Code | None
    code_field: str
    klass: int
    temporary: bool
    reply: int | None
    refused_at: Command | None

    # ---------------------------------------------------------------- how it is said

    @property
    def said(self) -> str:
        if self.code is not None:
            return codes.describe(self.code)
        if self.reply is not None:
            return f"{self.reply} without an enhanced code"
        return "no status code"

    @property
    def decisive(self) -> Cause | None:
        return decisive(self.found)

    def at(self) -> str:
        if self.refused_at is None:
            return ""
        return f", in reply to {_COMMAND_WORDS[self.refused_at]}"

    def phrase(self, cause: Cause) -> str:
        return f'{self.facts.text_field} says "{self.found[cause]}"{self.at()}'

    def code_evidence(self) -> str:
        if self.code is None:
            return self.facts.text_field
        return f"{self.code_field}: {codes.dotted(self.code)}{self.at()}"

    def make(self, kind: Kind, why: str, evidence: str, *, grounded: bool = True) -> Verdict:
        return Verdict(kind, f"{self.said}: {why}", evidence, codes.dotted(self.code), grounded)

    # ---------------------------------------------------------------- the rules, in order

    def delivered(self) -> Verdict | None:
        if self.klass != 2:
            return None
        return self.make(Kind.IGNORED, "delivered", self.code_evidence())

    def recognised(self) -> Verdict | None:
        """A per-family recogniser's reading of a text it knows."""
        cause = self.facts.cause
        if cause is None:
            return None
        evidence = self.facts.cause_evidence
        if cause.kind is Kind.HARD and (self.temporary or self.klass != 5):
            return self.make(Kind.SOFT, f"{cause.value}, but temporary", evidence)
        if cause.kind is Kind.POLICY:
            return self.make(cause.kind, f"{cause.value}: not the recipient's fault", evidence)
        return self.make(cause.kind, cause.value, evidence)

    def before_recipient(self) -> Verdict | None:
        if self.refused_at is None or not self.refused_at.before_recipient:
            return None
        cause = decisive({c: p for c, p in self.found.items() if c.kind is Kind.POLICY})
        why = f"refused at {_COMMAND_WORDS[self.refused_at]}, before any recipient"
        if cause is None:
            return self.make(
                Kind.POLICY, f"{why}: not the recipient's fault", f"refused{self.at()}"
            )
        return self.make(
            Kind.POLICY, f"{cause.value}; {why}: not the recipient's fault", self.phrase(cause)
        )

    def policy_words(self) -> Verdict | None:
        cause = self.decisive
        if cause is None or cause.kind is not Kind.POLICY:
            return None
        return self.make(
            Kind.POLICY, f"{cause.value}: not the recipient's fault", self.phrase(cause)
        )

    def policy_code(self) -> Verdict | None:
        code = self.code
        if code is None:
            return None
        if codes.is_sender(code):
            why = "our sender was refused, not the recipient's fault"
            return self.make(Kind.POLICY, why, self.code_evidence())
        if codes.is_policy(code) and not any(c in self.found for c in _ABOUT_THE_RECIPIENT):
            why = "refused for policy, not the recipient's fault"
            return self.make(Kind.POLICY, why, self.code_evidence())
        return None

    def mailbox_exists(self) -> Verdict | None:
        cause = self.decisive
        if self.facts.local_program and cause is not Cause.MAILER:
            evidence = f"{self.facts.text_field}: a local delivery program"
            return self.make(Kind.SOFT, Cause.MAILER.value, evidence)
        if cause is Cause.MAILER or cause in _MAILBOX_EXISTS:
            return self.make(Kind.SOFT, cause.value, self.phrase(cause))
        return None

    def missing(self) -> Verdict | None:
        """Evidence that the address or its domain does not exist, hard where it is sound:
        permanent (5xx); no code that says the mailbox exists (X.2.x, except in reply to
        RCPT TO) or that our content failed (X.6.x); not contradicted by the report's own
        prose, nor by words of a DNS or network failure; not refused only after the
        message was sent (after DATA a filter, not a directory, answers); and a hard code,
        words only the recipient's own system writes, an addressing code (X.1.x), the
        refusal of RCPT TO, or a family the recogniser knows speaks for the recipient's
        system. Words alone, with neither a code nor the command, are not proof: soft."""
        code, cause = self.code, self.decisive
        hard_code = code is not None and codes.is_hard(code)
        if cause not in _HARD_CAUSES:
            cause = None
        if not hard_code and cause is None:
            return None
        name = (cause or Cause.USER_UNKNOWN).value
        evidence = self.phrase(cause) if cause is not None else self.code_evidence()
        doubt = self.doubt(cause, hard_code=hard_code, name=name)
        if doubt is not None:
            return self.make(Kind.SOFT, doubt, evidence)
        if self.facts.authority is not None and not hard_code:
            evidence = f"{evidence}; {self.facts.authority}"
        return self.make(Kind.HARD, f"{name}: the address does not exist", evidence)

    def doubt(self, cause: Cause | None, *, hard_code: bool, name: str) -> str | None:
        """Why evidence of a missing address is not sound, or None where it is."""
        code = self.code
        at_rcpt = self.refused_at is Command.RCPT
        sound = cause in _SOUND_CAUSES or (cause is not None and self.found[cause] in SOUND)
        addressing = code is not None and code[1] == 1 and code[1:] != (1, 0)
        failed = next((c for c in (Cause.NETWORK, Cause.EXPIRED) if c in self.found), None)
        checks = (
            (self.temporary or self.klass != 5, f"{name}, but temporary: not proof"),
            (
                code is not None
                and not hard_code
                and code[1] in _CONTRADICTS_HARD
                and not (at_rcpt and code[1] == 2),
                f"words of {name}, but the code says the mailbox or its system exists",
            ),
            (
                self.facts.contradiction is not None,
                f'{name}, but the report\'s own text says "{self.facts.contradiction}"',
            ),
            (
                hard_code and cause is None and failed is not None,
                f"{failed.value if failed else ''}, not a missing address",
            ),
            (
                not (hard_code or sound) and self.refused_at is Command.DATA,
                f"{Cause.FILTERED.value}: refused as unknown only after the message was sent",
            ),
            (
                not (hard_code or sound or at_rcpt or addressing or self.facts.authority),
                f"words of {name} with neither a code nor the command refused: not proof",
            ),
        )
        return next((why for doubtful, why in checks if doubtful), None)

    def other(self) -> Verdict:
        cause = self.decisive
        if cause is not None:
            return self.make(Kind.SOFT, cause.value, self.phrase(cause))
        code = self.code
        if self.temporary:
            return self.make(Kind.SOFT, "temporary", self.code_evidence())
        if code is None or code[1:] == (0, 0):
            why = "permanent failure, the cause not stated"
            return self.make(Kind.SOFT, why, self.code_evidence(), grounded=False)
        why = "permanent failure, not a missing address"
        return self.make(Kind.SOFT, why, self.code_evidence())


_RULES: tuple[Callable[[_Judgement], Verdict | None], ...] = (
    _Judgement.delivered,
    _Judgement.recognised,
    _Judgement.before_recipient,
    _Judgement.policy_words,
    _Judgement.policy_code,
    _Judgement.mailbox_exists,
    _Judgement.missing,
    _Judgement.other,
)
