"""Bounce reports, complaints and SMTP replies → hard | soft | policy | complaint | ignored |
unparseable, each with its reason.

- RFC 3464/6522 DSNs are read per recipient block (Action, Status, Diagnostic-Code); the RFC 3463
  enhanced code decides. Only a structured code (a DSN's, or one answered in session) makes a
  bounce hard: 5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10.
- RFC 5965 ARF: abuse and fraud are complaints; not-spam is not.
- Auto-replies (RFC 3834, out of office) and delayed DSNs are ignored.
- Anything else goes to flufl.bounce, which finds the addresses; such a bounce is never hard.
- Policy (5.7.x, 5.6.x, blocklists, our sender refused) is never the recipient's fault.

What one report may cost is bounded: its first MAX_READ_BYTES and MAX_LINES are read, lines
are cut at MAX_LINE_BYTES (a base64 or quoted-printable part's too, once decoded), a header
field keeps MAX_HEADER_CHARS, and a report of more than MAX_PARTS parts, nested deeper than
MAX_DEPTH, or naming more than MAX_RECIPIENTS recipients is `unparseable`. Every regular
expression here runs in time linear in what it reads. flufl.bounce (the fallback) has
patterns that are not linear on hostile lines: the bounds keep what it sees small, and the
worker classifies in a process of its own, within a time limit (mailer/worker/classifiers.py).

Pure: bytes in, a Report out. Nothing here sends, stores or reads the clock.
"""

from __future__ import annotations

import base64
import bisect
import codecs
import email
import quopri
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from email.message import Message
from email.parser import HeaderParser
from email.policy import Compat32
from email.utils import getaddresses, parseaddr
from enum import StrEnum
from typing import Literal

from flufl.bounce import all_failures

from mailer.core.return_paths import find_tokens


class Kind(StrEnum):
    HARD = "hard"  # the address does not exist: suppress at once
    SOFT = "soft"  # mailbox full, expired, unclear: at most one point a day
    POLICY = "policy"  # our IP, content or sender was refused: never against the recipient
    COMPLAINT = "complaint"  # the recipient reported the message as spam or fraud
    IGNORED = "ignored"  # delays, auto-replies, not-spam, delivered
    UNPARSEABLE = "unparseable"


# A report's kind is the gravest of its recipients', in this order.
_GRAVITY = (Kind.COMPLAINT, Kind.HARD, Kind.SOFT, Kind.POLICY, Kind.IGNORED, Kind.UNPARSEABLE)
GRAVITY = _GRAVITY
HARD_CODES = frozenset({(1, 1), (1, 2), (1, 3), (1, 6), (1, 10)})

Source = Literal["dsn", "arf", "auto-reply", "non-standard", "none"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient of a report. `address` is None where the report does not name it (a
    redacted complaint, a bounce only the return-path token ties to its delivery)."""

    address: str | None
    kind: Kind
    reason: str
    status: str | None = None  # RFC 3463 code, "5.1.1"
    action: str | None = None  # DSN Action, lowercased: failed, delayed, delivered, ...
    diagnostic: str | None = None  # the remote server's words, addresses removed


@dataclass(frozen=True, slots=True)
class Report:
    kind: Kind
    reason: str
    source: Source
    recipients: tuple[Recipient, ...] = ()
    # Unverified `b-<token>@` candidates, most trustworthy place first: the report's own
    # envelope headers, then the returned message's envelope sender, then anywhere.
    return_path_tokens: tuple[str, ...] = ()
    envelope_id: str | None = None  # DSN Original-Envelope-Id (RFC 3461 ENVID)
    feedback_type: str | None = None  # ARF Feedback-Type

    @property
    def return_path_token(self) -> str | None:
        return self.return_path_tokens[0] if self.return_path_tokens else None


# ---------------------------------------------------------------- codes and words

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_BASIC = re.compile(r"(?<![\w.\-/])([45][0-5]\d)(?![\w.]|-\d{3}-)", re.MULTILINE)
_SUBJECTS = {
    0: "other or undefined status",
    1: "addressing status",
    2: "mailbox status",
    3: "mail system status",
    4: "network or routing status",
    5: "mail delivery protocol status",
    6: "message content or media status",
    7: "security or policy status",
}
_DETAILS = {
    (1, 1): "bad destination mailbox address",
    (1, 2): "bad destination system address",
    (1, 3): "bad destination mailbox address syntax",
    (1, 4): "destination mailbox address ambiguous",
    (1, 6): "destination mailbox has moved",
    (1, 7): "bad sender's mailbox address syntax",
    (1, 8): "bad sender's system address",
    (1, 10): "recipient address has null MX",
    (2, 1): "mailbox disabled",
    (2, 2): "mailbox full",
    (2, 3): "message length exceeds administrative limit",
    (3, 1): "mail system full",
    (3, 4): "message too big for system",
    (4, 1): "no answer from host",
    (4, 4): "unable to route",
    (4, 7): "delivery time expired",
    (7, 1): "delivery not authorized, message refused",
    (7, 23): "SPF validation failed",
    (7, 25): "reverse DNS validation failed",
    (7, 26): "multiple authentication checks failed",
}
_POLICY_WORDS = re.compile(
    r"block(?:ed|list|ing)|black ?list|spamhaus|spamcop|barracuda|\b(?:rbl|dnsbl|uribl)\b|"
    r"(?<!not )\blisted\b|\bspam\b|unsolicited|reputation|\bpolicy\b|dmarc|\bspf\b|dkim|banned|"
    r"virus|not authori[sz]ed",
    re.IGNORECASE,
)
_QUOTA_WORDS = re.compile(
    r"quota|mail ?box (?:is )?full|full mail ?box|mail ?box space|insufficient (?:disk )?space|"
    r"storage (?:space|limit)",
    re.IGNORECASE,
)
_UNKNOWN_WORDS = re.compile(
    r"user unknown|unknown (?:user|recipient|address|mailbox)|no such (?:user|mailbox|recipient|"
    r"address)|does ?n[o']t exist|invalid (?:recipient|mailbox|address)|addressee unknown|"
    r"no mailbox|not listed in",
    re.IGNORECASE,
)
_SIZE_WORDS = re.compile(r"too (?:big|large)|message size|maximum .{0,20}size", re.IGNORECASE)
_RELAY_WORDS = re.compile(
    r"relay(?:ing)? (?:access )?(?:denied|not permitted)|not permitted to relay", re.IGNORECASE
)
# A run of characters that may be (part of) an address, with the <> around it: scrub() masks
# the runs with an @ inside. Matching whole runs keeps it linear; searching for `run@run` from
# every start, as an address pattern does, is quadratic on a long run without an @.
_ADDRESS_RUN = re.compile(r"<?[^\s<>\"'(),;:\[\]]+>?")
_WORD = re.compile(r"\S+")
_DIAGNOSTIC_TYPE = re.compile(r"^\s*(?:smtp|x-[\w-]+|X-Postfix|X-Unix)\s*;\s*", re.IGNORECASE)
_DIAGNOSTIC_CHARS = 500


def _enhanced(text: str, *, failures_only: bool = False) -> tuple[int, int, int] | None:
    for found in _ENHANCED.finditer(text):
        if not failures_only or found[1] != "2":
            return int(found[1]), int(found[2]), int(found[3])
    return None


def _basic(text: str) -> int | None:
    found = _BASIC.search(text)
    return int(found[1]) if found else None


def _describe(code: tuple[int, int, int]) -> str:
    text = _DETAILS.get(code[1:]) or _SUBJECTS.get(code[1], "unknown status")
    return f"{code[0]}.{code[1]}.{code[2]} {text}"


def _masked(run: re.Match[str]) -> str:
    core = run[0].strip("<>")
    return "<address>" if "@" in core[1:-1] else run[0]


def scrub(text: str) -> str:
    """A remote server's words fit to store and show: no addresses, one line, bounded. Reads
    only as far as the words it keeps."""
    kept: list[str] = []
    length = 0
    for word in _WORD.finditer(text):
        kept.append(_ADDRESS_RUN.sub(_masked, word[0]))
        length += len(kept[-1]) + 1
        if length > _DIAGNOSTIC_CHARS:
            break
    return " ".join(kept)[:_DIAGNOSTIC_CHARS]


def _by_code(code: tuple[int, int, int], *, structured: bool) -> tuple[Kind, str] | None:
    """What a code alone says; None for an unspecific one (X.0.0, X.1.0)."""
    klass, subject, detail = code
    hard = (subject, detail) in HARD_CODES
    rules = (
        (klass == 2, Kind.IGNORED, ": delivered"),
        (
            subject == 7 or (klass == 5 and subject == 6),
            Kind.POLICY,
            ": refused for policy, not the recipient's fault",
        ),
        (subject == 1 and detail in (7, 8), Kind.POLICY, ": our sender address was refused"),
        (klass == 4, Kind.SOFT, ": temporary"),
        (hard and structured, Kind.HARD, ": the address does not exist"),
        (hard, Kind.SOFT, " in a non-standard bounce: hard needs a structured code"),
        (detail != 0 or subject > 1, Kind.SOFT, ": permanent failure, not a missing address"),
    )
    return next(((kind, why) for applies, kind, why in rules if applies), None)


_WORDS = (
    (_POLICY_WORDS, Kind.POLICY, ", words of a block or policy: not the recipient's fault"),
    (_QUOTA_WORDS, Kind.SOFT, ": mailbox full"),
    (_SIZE_WORDS, Kind.SOFT, ": message too big"),
    (_UNKNOWN_WORDS, Kind.SOFT, ", words of an unknown user: hard needs a specific code"),
)


_JUDGED_CHARS = 2_000  # of a recipient's words searched for a reason: the search is costly


def _judge(code: tuple[int, int, int] | None, text: str, *, structured: bool) -> tuple[Kind, str]:
    """A delivery that failed (not one delayed): what its code, or failing that its words, say
    (the first _JUDGED_CHARS of them)."""
    text = text[:_JUDGED_CHARS]
    if code is None:
        basic = _basic(text)
        code = (basic // 100 if basic else 5, 0, 0)
        said = f"{basic} without an enhanced code" if basic else "no status code"
    else:
        said = _describe(code)
    kind, why = (
        _by_code(code, structured=structured)
        or next(((kind, why) for words, kind, why in _WORDS if words.search(text)), None)
        or (Kind.SOFT, ": permanent failure, not a missing address")
    )
    return kind, said + why


# ---------------------------------------------------------------- reading the message

# What one report may cost. The 718 real reports of the flufl.bounce and sisimai corpora
# have at most 74 KB, 1,469 lines, lines of 1,242 characters, header fields of 1,779, 17
# parts, nested 7 deep (DSN field blocks counted), and a handful of recipients: none is cut.
MAX_READ_BYTES = 128 * 1024  # of a report, read; the rest (a returned message's body) is not
MAX_LINE_BYTES = 2_000  # a longer line is cut there
MAX_LINES = 5_000  # of a report (and of a part, decoded), read: flufl.bounce reads each
#                    line against about fifty patterns
MAX_HEADER_CHARS = 8_000  # of one header field's value, kept
MAX_PARTS = 100  # MIME parts, counted by their Content-Type fields before parsing
MAX_DEPTH = 12  # parts within parts, DSN field blocks included
MAX_RECIPIENTS = 50  # recipients one report may name

_CONTENT_TYPE = re.compile(rb"^[ \t]*+content-type[ \t]*+:", re.IGNORECASE | re.MULTILINE)
_SLOW_CODECS = frozenset({"punycode"})  # its decoder is quadratic


class _BoundedHeaders(Compat32):
    """compat32, as flufl.bounce expects, keeping MAX_HEADER_CHARS of each field: the stdlib's
    parameter parsing (Content-Type) is quadratic in a field's length."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        return name, value[:MAX_HEADER_CHARS]


_POLICY = _BoundedHeaders()


def bounded_lines(data: bytes) -> bytes:
    """`data` to its MAX_LINES-th line, every line cut at MAX_LINE_BYTES; the same object
    when that is all of it."""
    lines = data.split(b"\n", MAX_LINES)
    if len(lines) <= MAX_LINES and all(len(line) <= MAX_LINE_BYTES for line in lines):
        return data
    return b"\n".join(line[:MAX_LINE_BYTES] for line in lines[:MAX_LINES])


def _read_part(raw: bytes) -> bytes:
    """What of a report is read: its first MAX_READ_BYTES (to the last line end), bounded."""
    if len(raw) > MAX_READ_BYTES:
        end = raw.rfind(b"\n", 0, MAX_READ_BYTES)
        raw = raw[: end + 1 if end > 0 else MAX_READ_BYTES]
    return bounded_lines(raw)


def _bound_encoded(msg: Message) -> None:
    """A base64 or quoted-printable part bounded as its decoded lines are, then encoded again
    as it was: flufl.bounce reads some parts decoded."""
    for part in msg.walk():
        encoding = _header(part, "Content-Transfer-Encoding").lower()
        if part.is_multipart() or encoding not in ("base64", "quoted-printable"):
            continue
        decoded = part.get_payload(decode=True)
        if not isinstance(decoded, bytes):
            continue
        bounded = bounded_lines(decoded)
        if bounded is decoded:
            continue
        encoded = (
            base64.encodebytes(bounded) if encoding == "base64" else quopri.encodestring(bounded)
        )
        part.set_payload(encoded.decode("ascii"))


def _too_deep(msg: Message) -> bool:
    stack = [(msg, 1)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((sub, depth + 1) for sub in payload if isinstance(sub, Message))
    return False


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _header(msg: Message, name: str) -> str:
    return " ".join(_text(msg.get(name, "")).split())


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        if codecs.lookup(charset).name in _SLOW_CODECS:
            raise LookupError(charset)
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1")


def _parts(msg: Message, *, into_returned: bool) -> Iterator[Message]:
    """Every part, depth first; without `into_returned`, not inside a returned message."""
    yield msg
    if not msg.is_multipart():
        return
    if not into_returned and msg.get_content_type() == "message/rfc822":
        return
    payload = msg.get_payload()
    for sub in payload if isinstance(payload, list) else ():
        if isinstance(sub, Message):
            yield from _parts(sub, into_returned=into_returned)


def _returned_headers(msg: Message) -> Message | None:
    """The headers of the message a report returns (message/rfc822 or text/rfc822-headers)."""
    for part in _parts(msg, into_returned=False):
        kind = part.get_content_type()
        if kind == "text/rfc822-headers":
            return HeaderParser(policy=_POLICY).parsestr(
                _decoded(part) or _text(part.get_payload())
            )
        if kind == "message/rfc822" and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, Message):
                return inner
    return None


_BLANK_LINE = re.compile(r"\n[ \t\r]*+\n")


def _field_blocks(part: Message) -> Iterator[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part, however
    the parser left them."""
    payload = part.get_payload()
    if isinstance(payload, str):
        for block in _BLANK_LINE.split(payload):
            if block.strip():
                yield HeaderParser(policy=_POLICY).parsestr(block.strip() + "\n")
        return
    for block in payload:
        if isinstance(block, Message):
            yield block
            rest = block.get_payload()
            if isinstance(rest, str) and rest.strip():
                yield from _field_blocks(HeaderParser(policy=_POLICY).parsestr("\n" + rest))


def _tokens(
    msg: Message, returned: Message | None, extra: Sequence[str], raw: bytes
) -> tuple[str, ...]:
    places = [
        _header(msg, name)
        for name in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
    ]
    places.extend(extra)
    if returned is not None:
        places.append(_header(returned, "Return-Path"))
    places.append(raw.decode("latin-1"))
    found: dict[str, None] = {}
    for place in places:
        found.update(dict.fromkeys(find_tokens(place)))
    return tuple(found)


def _summary(
    recipients: Sequence[Recipient],
    source: Source,
    tokens: tuple[str, ...],
    envelope_id: str | None = None,
) -> Report:
    grave = min(recipients, key=lambda one: _GRAVITY.index(one.kind))
    reason = (
        grave.reason if len(recipients) == 1 else f"{len(recipients)} recipients; {grave.reason}"
    )
    return Report(grave.kind, reason, source, tuple(recipients), tokens, envelope_id)


def _too_many(source: str, msg: Message, raw: bytes) -> Report:
    reason = f"a {source} naming more than {MAX_RECIPIENTS} recipients: not read further"
    return Report(Kind.UNPARSEABLE, reason, "none", (), _tokens(msg, None, (), raw))


# ---------------------------------------------------------------- DSN


def _recipient_address(block: Message) -> str | None:
    for name in ("Original-Recipient", "Final-Recipient"):
        value = _header(block, name)
        kind, _, address = value.partition(";")
        if not address:
            kind, address = "rfc822", kind
        if kind.strip().lower() not in ("rfc822", "utf-8") or not address.strip():
            continue
        parsed = parseaddr(address.strip())[1] or address.strip().strip("<>")
        if parsed:
            return parsed
    return None


def _dsn_recipient(block: Message) -> Recipient | None:
    address = _recipient_address(block)
    action = _header(block, "Action").lower().split(" ", 1)[0].rstrip(";") or None
    status_field = _header(block, "Status")
    diagnostic_field = _header(block, "Diagnostic-Code")
    if address is None and action is None and not status_field:
        return None  # the per-message block
    text = f"{status_field} {diagnostic_field}"
    code = _enhanced(status_field)
    detailed = _enhanced(diagnostic_field)
    if detailed and (code is None or (code[1:] == (0, 0) and detailed[0] == code[0])):
        code = detailed  # "Status: 5.0.0" with "Diagnostic-Code: smtp; 550 5.1.1 ..."
    status = ".".join(map(str, code)) if code else None
    diagnostic = scrub(_DIAGNOSTIC_TYPE.sub("", diagnostic_field)) or None
    if action is not None and action.startswith("delay"):
        kind, reason = Kind.IGNORED, "delayed: the remote server is still trying"
    elif action in ("delivered", "relayed", "expanded"):
        kind, reason = Kind.IGNORED, f"{action}: not a failure"
    elif action is None and code is None and _basic(status_field) is None:
        kind, reason = Kind.UNPARSEABLE, "a DSN recipient block without Action or Status"
    else:
        kind, reason = _judge(code, text, structured=True)
    return Recipient(address, kind, reason, status, action, diagnostic)


def _from_dsn(msg: Message, raw: bytes) -> Report | None:
    recipients: list[Recipient] = []
    envelope_id: str | None = None
    # Into returned messages too: a DSN is sometimes forwarded inside another report.
    for part in _parts(msg, into_returned=True):
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        for block in _field_blocks(part):
            # RFC 3461: an ENVID is at most 100 characters; ours is the delivery id.
            envelope_id = envelope_id or _header(block, "Original-Envelope-Id")[:100] or None
            recipient = _dsn_recipient(block)
            if recipient is not None:
                recipients.append(recipient)
            if len(recipients) > MAX_RECIPIENTS:
                return _too_many("DSN", msg, raw)
    if not recipients:
        return None
    tokens = _tokens(msg, _returned_headers(msg), (), raw)
    return _summary(recipients, "dsn", tokens, envelope_id)


# ---------------------------------------------------------------- ARF

_FEEDBACK: dict[str, tuple[Kind, str]] = {
    "abuse": (Kind.COMPLAINT, "ARF abuse: the recipient reported the message as spam"),
    "fraud": (Kind.COMPLAINT, "ARF fraud: the recipient reported the message as fraud"),
    "not-spam": (Kind.IGNORED, "ARF not-spam: the recipient said it is not spam"),
    "auth-failure": (Kind.POLICY, "ARF auth-failure: our SPF, DKIM or DMARC failed there"),
    "virus": (Kind.POLICY, "ARF virus: the receiver found a virus in our message"),
}


def _from_arf(msg: Message, raw: bytes) -> Report | None:
    fields = next(
        (
            block
            for part in _parts(msg, into_returned=False)
            if part.get_content_type() == "message/feedback-report"
            for block in _field_blocks(part)
        ),
        None,
    )
    if fields is None:
        return None
    feedback_type = scrub(_header(fields, "Feedback-Type").lower())[:40] or None
    returned = _returned_headers(msg)
    tokens = _tokens(msg, returned, (_header(fields, "Original-Mail-From"),), raw)
    if feedback_type is None:
        return Report(Kind.UNPARSEABLE, "an ARF report without Feedback-Type", "arf", (), tokens)
    kind, reason = _FEEDBACK.get(
        feedback_type, (Kind.IGNORED, f"ARF {feedback_type}: not a complaint")
    )
    named = [_text(value) for value in fields.get_all("Original-Rcpt-To", [])]
    if not named and returned is not None:
        named = [_text(value) for value in returned.get_all("To", [])]
    if len(named) > MAX_RECIPIENTS:
        return _too_many("complaint", msg, raw)
    addresses = [address for _, address in getaddresses(named) if "@" in address]
    if len(addresses) > MAX_RECIPIENTS:
        return _too_many("complaint", msg, raw)
    recipients = [Recipient(address, kind, reason) for address in addresses] or [
        Recipient(None, kind, reason)
    ]
    return Report(kind, reason, "arf", tuple(recipients), tokens, feedback_type=feedback_type)


# ---------------------------------------------------------------- auto-replies

_AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort|respon)|autoreply|out of (?:the )?office|"
    r"abwesenheit|absence|vacation|urlop|nieobecn|r[ée]ponse automatique|respuesta autom|auto:)",
    re.IGNORECASE,
)
_DAEMON = re.compile(
    r"mailer-daemon|postmaster|mail delivery|undeliver|deliver(?:y|ed)? (?:status|fail|report|"
    r"notification|problem)|returned mail|failure notice|non[- ]?delivery|could not be delivered|"
    r"not delivered|rejected",
    re.IGNORECASE,
)


def _auto_reply(msg: Message) -> str | None:
    """Why this looks like an RFC 3834 auto-reply or an out-of-office, else None."""
    submitted = _header(msg, "Auto-Submitted").lower()
    precedence = f"{_header(msg, 'Precedence')} {_header(msg, 'X-Precedence')}".lower()
    if any(msg.get(name) is not None for name in ("X-Autoreply", "X-Autorespond")):
        return "an auto-reply (X-Autoreply)"
    if "auto_reply" in precedence:
        return "an auto-reply (Precedence: auto_reply)"
    subject = _header(msg, "Subject")
    if _AUTO_SUBJECT.search(subject):
        return "an out-of-office reply"
    if _DAEMON.search(f"{_header(msg, 'From')} {subject}"):
        return None  # bounces, too, say Auto-Submitted: auto-replied
    if submitted.startswith("auto-replied"):
        return "an auto-reply (Auto-Submitted: auto-replied)"
    return None


# ---------------------------------------------------------------- non-standard bounces

# Possessive quantifiers, and no \s (which spans lines) at a line's start: `^\s*` before a
# word and `-{2,}.*` before a phrase retry every split of a run, quadratic on many blank lines
# or a long line of dashes.
_RETURNED_COPY = re.compile(
    r"^[ \t]*+-{2,}+[^\n]*?(?:original message|copy of|message follows|returned message|"
    r"message headers|unsent message|rfc822)|^(?:Received|Return-Path):",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED_HEADER = re.compile(r"^[ \t]*+(?:Subject|From|To|Cc|Sent|Date):.*$", re.I | re.M)
_EXPLANATION_CHARS = 16_000


def _explanation(msg: Message) -> str:
    """The words of a non-standard bounce, without the copy of our message it returns."""
    texts = [
        _decoded(part)
        for part in _parts(msg, into_returned=False)
        if part.get_content_maintype() == "text"
        and part.get_content_type() != "text/rfc822-headers"
    ]
    text = "\n".join(texts)[:_EXPLANATION_CHARS]
    cut = _RETURNED_COPY.search(text, 1)
    # Our own subject line, quoted back ("New privacy policy"), must not read as a reason.
    return _QUOTED_HEADER.sub("", text[: cut.start()] if cut else text)


def _near(text: str, lowered: str, address: str) -> str:
    """The words around `address` in `text` (`lowered` is text.lower())."""
    at = lowered.find(address.lower())
    return text if at < 0 else text[max(0, at - 200) : at + len(address) + 600]


def _flufl(msg: Message, raw: bytes) -> tuple[frozenset[bytes], frozenset[bytes]] | None:
    """flufl.bounce's temporary and permanent addresses; None if it cannot read the message.

    Its detectors stop at the first that raises, and some raise on 8-bit headers (which the
    parser leaves as Header objects: Sina) or on a missing or empty From (Yale, with the
    getaddresses of Python 3.11.7+): a failure is retried once with every 8-bit byte made
    ASCII and an empty From put first."""
    try:
        return all_failures(msg)
    except (LookupError, ValueError, TypeError, AttributeError):
        ascii_only = re.sub(rb"[\x80-\xff]", b"?", raw)
        at = ascii_only.find(b"\n") + 1 if ascii_only.startswith(b"From ") else 0  # mbox line
        ascii_only = ascii_only[:at] + b"From: <>\n" + ascii_only[at:]
        try:
            return all_failures(email.message_from_bytes(ascii_only, policy=_POLICY))
        except (LookupError, ValueError, TypeError, AttributeError):
            return None


def _from_fallback(msg: Message, raw: bytes) -> Report | None:
    failures = _flufl(msg, raw)
    if failures is None:
        reason = "the fallback parser could not read this message"
        return Report(Kind.UNPARSEABLE, reason, "non-standard", (), _tokens(msg, None, (), raw))
    temporary, permanent = failures
    found = {address.decode("ascii", "replace"): address in permanent for address in temporary}
    found.update({address.decode("ascii", "replace"): True for address in permanent})
    if len(found) > MAX_RECIPIENTS:
        return _too_many("bounce", msg, raw)
    text = _explanation(msg)
    lowered = text.lower()
    in_text = _enhanced(text, failures_only=True)
    recipients: list[Recipient] = []
    for address, failed in sorted(found.items()):
        words = _near(text, lowered, address)
        code = _enhanced(words, failures_only=True) or in_text
        status = ".".join(map(str, code)) if code else None
        diagnostic = scrub(words) or None
        if not failed:
            recipients.append(
                Recipient(address, Kind.IGNORED, "a delay notice", status, "delayed", diagnostic)
            )
            continue
        kind, reason = _judge(code, words, structured=False)
        recipients.append(Recipient(address, kind, reason, status, "failed", diagnostic))
    tokens = _tokens(msg, _returned_headers(msg), (), raw)
    if recipients:
        return _summary(recipients, "non-standard", tokens)
    if tokens and _DAEMON.search(f"{_header(msg, 'From')} {_header(msg, 'Subject')}"):
        # No address found, but the return path names the delivery and this is a bounce.
        kind, reason = _judge(_enhanced(text, failures_only=True), text, structured=False)
        return Report(kind, reason, "non-standard", (Recipient(None, kind, reason),), tokens)
    return None


# ---------------------------------------------------------------- entry points


def classify_report(raw: bytes) -> Report:
    """What a message sent to a bounce address reports. Never raises: hostile or broken input
    is `unparseable`, with the reason."""
    try:
        return _classify(_read_part(raw))
    except (RecursionError, LookupError, ValueError, TypeError, AttributeError) as error:
        return Report(
            Kind.UNPARSEABLE, f"the message could not be read: {type(error).__name__}", "none"
        )


def _classify(raw: bytes) -> Report:
    if len(_CONTENT_TYPE.findall(raw)) > MAX_PARTS:
        # Real reports have a handful; thousands nested cost seconds and overflow the parser.
        return Report(Kind.UNPARSEABLE, f"more than {MAX_PARTS} MIME parts", "none")
    msg = email.message_from_bytes(raw, policy=_POLICY)
    if _too_deep(msg):
        return Report(Kind.UNPARSEABLE, f"MIME parts nested more than {MAX_DEPTH} deep", "none")
    _bound_encoded(msg)
    report = _from_arf(msg, raw) or _from_dsn(msg, raw)
    if report is not None:
        return report
    auto = _auto_reply(msg)
    if auto is not None:
        return Report(Kind.IGNORED, auto, "auto-reply", (), _tokens(msg, None, (), raw))
    report = _from_fallback(msg, raw)
    if report is not None:
        return report
    tokens = _tokens(msg, _returned_headers(msg), (), raw)
    return Report(
        Kind.UNPARSEABLE, "neither a DSN, a complaint nor a known bounce", "none", (), tokens
    )


# ---------------------------------------------------------------- the synchronous path

Stage = Literal["connect", "helo", "starttls", "auth", "mail", "rcpt", "data"]


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

    @property
    def retry(self) -> bool:
        """Whether the delivery is held and tried again, rather than settled."""
        return self.temporary or self.kind is ReplyKind.SENDER


def classify_reply(code: int, enhanced: str | None, text: str, stage: Stage) -> ReplyVerdict:
    """One SMTP reply in session. Before RCPT (connect, HELO, STARTTLS, AUTH, MAIL FROM) a
    refusal is the relay refusing us; at RCPT and DATA the same codes decide as in a DSN."""
    found = _enhanced(enhanced or "") or _enhanced(text[:16])
    status = ".".join(map(str, found)) if found else None
    said = f"{code} {status}" if status else str(code)
    temporary = 400 <= code < 500
    if code < 400:
        return ReplyVerdict(ReplyKind.ACCEPTED, f"{said}: accepted", status, False)
    if stage not in ("rcpt", "data"):
        return ReplyVerdict(
            ReplyKind.SENDER,
            f"{said} at {stage}: the relay refused us, not the recipient",
            status,
            temporary,
        )
    if (found and found[1:] in ((1, 7), (1, 8))) or _RELAY_WORDS.search(text):
        return ReplyVerdict(
            ReplyKind.SENDER,
            f"{said} at {stage}: our sender or relaying was refused",
            status,
            temporary,
        )
    if found is not None and found[0] != code // 100:
        found = None  # "550 4.1.1" is incoherent: the basic code rules
    kind, reason = _judge(found, f"{code} {text}", structured=True)
    reason = f"{code} {reason}" if found else reason
    return ReplyVerdict(ReplyKind(kind.value), reason, status, temporary)


# ---------------------------------------------------------------- soft-bounce scoring


@dataclass(frozen=True, slots=True)
class SoftBounceDecision:
    suppressed: bool
    bounce_days: int  # distinct days with a soft bounce in the window ending today
    since: date | None  # the last day the threshold was reached
    until: date | None  # the day the suppression lifts
    reason: str


def soft_bounce_decision(
    days_with_bounces: Sequence[date],
    today: date,
    *,
    threshold: int = 5,
    window_days: int = 30,
    expire_after_days: int = 90,
) -> SoftBounceDecision:
    """Whether soft bounces suppress newsletters to an address, as of `today`.

    One point a day however many bounces it had. The address is suppressed once `threshold`
    bounce days fall within `window_days` (a day and the `window_days - 1` before it), and
    stays so for `expire_after_days` from the last day that held the threshold; then it lifts.
    """
    if min(threshold, window_days, expire_after_days) < 1:
        raise ValueError("threshold, window and expiry must be at least 1")
    days = sorted({day for day in days_with_bounces if day <= today})
    span = timedelta(days=window_days - 1)
    since: date | None = None
    for index, day in enumerate(days):
        if index + 1 - bisect.bisect_left(days, day - span) >= threshold:
            since = day
    bounce_days = len(days) - bisect.bisect_left(days, today - span)
    window = f"{bounce_days} bounce day(s) in the last {window_days}"
    if since is None:
        return SoftBounceDecision(False, bounce_days, None, None, f"{window}, under {threshold}")
    until = since + timedelta(days=expire_after_days)
    if today >= until:
        return SoftBounceDecision(
            False,
            bounce_days,
            since,
            until,
            f"{window}; the suppression of {since} lifted on {until}",
        )
    return SoftBounceDecision(
        True, bounce_days, since, until, f"{threshold} bounce days within {window_days} on {since}"
    )
