"""What a remote server's words say: the causes of a refusal and the phrases that name them,
and the SMTP command a refusal answered.

The phrases are matched in one pass over the words (lowercased, on one line, addresses
masked): they are compiled into a single regular expression shaped as a trie, so each place
in the text is tried against the phrases that share its first letters only, and a gap (`*`
in a phrase) is bounded. The time is linear in the words read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from mailer.core.bounces.kinds import Kind
from mailer.core.scrubbing import scrub


class Cause(StrEnum):
    """Why a delivery was refused, as the words say it; each is of one kind."""

    # hard: the address or its domain does not exist
    USER_UNKNOWN = "no such user"
    HOST_UNKNOWN = "no such domain"
    MOVED = "the mailbox has moved"
    NO_MAIL = "the domain accepts no mail"
    # soft: the recipient's mailbox or system, for now or for a while
    MAILBOX_FULL = "mailbox full"
    TOO_BIG = "message too big"
    DISABLED = "mailbox disabled or suspended"
    FILTERED = "refused by the recipient's own filter"
    SYSTEM = "the receiving system failed"
    NETWORK = "network or DNS failure"
    EXPIRED = "delivery time expired"
    MAILER = "the local delivery program failed"
    # policy: our IP, content, sender, rate or dialogue refused
    AUTH = "SPF, DKIM or DMARC failed"
    PTR = "no reverse DNS for our IP"
    RELAY = "relaying denied"
    SENDER = "our sender address refused"
    VIRUS = "a virus found"
    SPAM = "refused as spam"
    BLOCKED = "our IP blocked or listed"
    RATE = "a rate or connection limit"
    TLS = "TLS required"
    CONTENT = "our content or headers refused"
    PROTOCOL = "our SMTP dialogue refused"
    POLICY = "refused for policy"

    @property
    def kind(self) -> Kind:
        return _KINDS[self]


_KINDS = {
    **dict.fromkeys(
        (Cause.USER_UNKNOWN, Cause.HOST_UNKNOWN, Cause.MOVED, Cause.NO_MAIL), Kind.HARD
    ),
    **dict.fromkeys(
        (
            Cause.MAILBOX_FULL,
            Cause.TOO_BIG,
            Cause.DISABLED,
            Cause.FILTERED,
            Cause.SYSTEM,
            Cause.NETWORK,
            Cause.EXPIRED,
            Cause.MAILER,
        ),
        Kind.SOFT,
    ),
}
for _cause in Cause:
    _KINDS.setdefault(_cause, Kind.POLICY)

# Where a text names several causes, the first of this order decides: every policy cause
# first (our IP, content or sender refused is never the recipient's fault), then what says
# the mailbox exists (full, disabled, filtered), then what says it does not, then the rest.
PRIORITY = (
    Cause.AUTH,
    Cause.PTR,
    Cause.RELAY,
    Cause.SENDER,
    Cause.VIRUS,
    Cause.SPAM,
    Cause.BLOCKED,
    Cause.RATE,
    Cause.TLS,
    Cause.CONTENT,
    Cause.PROTOCOL,
    Cause.POLICY,
    Cause.MAILER,
    Cause.MAILBOX_FULL,
    Cause.TOO_BIG,
    Cause.DISABLED,
    Cause.FILTERED,
    Cause.MOVED,
    Cause.NO_MAIL,
    Cause.HOST_UNKNOWN,
    Cause.USER_UNKNOWN,
    Cause.EXPIRED,
    Cause.NETWORK,
    Cause.SYSTEM,
)

# The phrases, lowercase. `*` is a gap of at most _GAP characters, `~` a word's edge;
# `<address>` is where an address stood. Where two phrases start at the same place, the
# longer one is matched.
PHRASES: dict[Cause, tuple[str, ...]] = {
    Cause.USER_UNKNOWN: (
        "user unknown",
        "unknown user",
        "unknown recipient",
        "recipient unknown",
        "unknown mailbox",
        "unknown address",
        "unknown e-mail address",
        "unknown email address",
        "unknown local part",
        "unknown local-part",
        "unknown or illegal",
        "address unknown",
        "addressee unknown",
        "no such user",
        "no such recipient",
        "no such mailbox",
        "no such address",
        "no such person",
        "no such account",
        "no mailbox here",
        "no mailbox by that name",
        "no account by that name",
        "mailbox not found",
        "mailbox does not exist",
        "mailbox doesn't exist",
        "mailbox not present",
        "mailbox unavailable",
        "requested action not taken: mailbox unavailable",
        "mailbox is unavailable",
        "mailbox invalid",
        "user not found",
        "user not known",
        "user not exist",
        "user does not exist",
        "user doesn't exist",
        "user doesn't have a * account",
        "recipient not found",
        "recipient does not exist",
        "recipient not exist",
        "recipient address does not exist",
        "recipient address rejected: access denied",
        "recipient address rejected.",
        "recipnotfound",
        "recipientnotfound",
        "address does not exist",
        "address doesn't exist",
        "address couldn't be found",
        "address could not be found",
        "address not present in directory",
        "address rejected.",
        "account does not exist",
        "account that you tried to reach does not exist",
        "email account that you tried to reach does not exist",
        "does not have an account",
        "invalid recipient",
        "invalid mailbox",
        "invalid user",
        "invalid address",
        "invalid final delivery userid",
        "is not a valid mailbox",
        "not a valid recipient",
        "not a valid user",
        "not our customer",
        "recipient name is not recognized",
        "unknown recipient",
        "not listed in domino directory",
        "not listed in public name",
        "is not a known user",
        "inactive email address",
        "destination addresses were unknown",
        "no valid recipients",
        "destinataire invalide",
        "utilisateur inconnu",
        "nessun utente",
        "no existe",
        "empfanger unbekannt",
        "badrcptto",
        "bad recipient",
    ),
    Cause.HOST_UNKNOWN: (
        "host unknown",
        "unknown host",
        "host not found",
        "host or domain name not found",
        "domain not found",
        "domain name not found",
        "no such domain",
        "domain does not exist",
        "domain doesn't exist",
        "invalid domain",
        "unrouteable address",
        "unroutable address",
        "domain is not reachable",
        "dns lookup failure: host",
        "no mx record found",
        "couldn't find any host named",
        "could not find any host named",
        "bad destination system",
    ),
    Cause.MOVED: (
        "has moved",
        "no longer on server",
        "no longer available",
        "no forwarding address",
        "not our user",
        "mailbox owner has changed",
    ),
    Cause.NO_MAIL: (
        "null mx",
        "does not accept mail",
        "doesn't accept mail",
        "doesn't receive email",
        "does not receive email",
        "indicated no smtp service",
        "not accepting network messages",
    ),
    Cause.MAILBOX_FULL: (
        "mailbox full",
        "mailbox is full",
        "mailbox has exceeded",
        "mailbox exceeds",
        "mailbox size",
        "full mailbox",
        "quota",
        "storage space",
        "out of storage",
        "insufficient storage",
        "not enough disk space",
        "exceeded the local limit",
        "user has exceeded",
        "over the allowed",
        "mailbox is over",
        "overquota",
        "boite pleine",
        "postfach voll",
    ),
    Cause.TOO_BIG: (
        "too big",
        "too large",
        "message size",
        "size limit",
        "message length exceeds",
        "maximum message size",
        "exceeds the maximum",
        "line limit exceeded",
        "recipsizelimit",
    ),
    Cause.DISABLED: (
        "account is disabled",
        "account disabled",
        "account has been disabled",
        "disabled recipient",
        "mailbox disabled",
        "mailbox is disabled",
        "mailbox is frozen",
        "account is frozen",
        "account is blocked",
        "account is inactive",
        "mailbox is inactive",
        "is inactive",
        "is disabled",
        "temporary locked",
        "temporarily locked",
        "suspended",
        "deactivated",
        "discontinued",
        "compte du destinataire est bloque",
        "user account disabled",
    ),
    Cause.FILTERED: (
        "550 : user unknown",
        "refused due to recipient preferences",
        "message filtered",
        "only accepting mail from specific",
        "refuses to receive",
        "refuse to receive",
        "user reject",
        "blocked by the recipient",
        "message rejected due to user rules",
        "restricted sms e-mail",
    ),
    Cause.SYSTEM: (
        "system error",
        "internal error",
        "system config error",
        "configuration error",
        "mail system problem",
        "temporary failure",
        "temporarily unavailable",
        "service currently unavailable",
        "service unavailable",
        "transaction failed",
        "upstream error",
        "could not load drd",
        "insufficient disk space",
        "disk full",
        "system full",
        "too many hops",
        "hop count exceeded",
        "routing loop",
        "mail loop",
        "loop detected",
        "duplicated message-id",
        "please try again later",
        "try later",
    ),
    Cause.NETWORK: (
        "timed out",
        "time out",
        "timeout",
        "connection refused",
        "connection reset",
        "lost connection",
        "socket error",
        "network is unreachable",
        "no route to host",
        "could not connect",
        "couldn't connect",
        "unable to connect",
        "did not accept our requests to connect",
        "name service error",
        "dns error",
        "dns query failed",
        "malformed or unexpected name server reply",
        "host not found, try again",
        "name server",
    ),
    Cause.EXPIRED: (
        "message expired",
        "delivery time expired",
        "retry timeout exceeded",
        "retry time not reached",
        "could not deliver for the last",
        "giving up",
        "not delivered within",
        "all hosts have been failing",
        "delivery failed * attempts",
        "queue.expired",
        "too long in the queue",
        "could not be delivered for",
        "has not been delivered",
    ),
    Cause.MAILER: ("procmail", "pipe to |", "mailer error", "maildrop", "deliver: "),
    Cause.AUTH: (
        "spf",
        "dkim",
        "dmarc",
        "unauthenticated",
        "authentication required",
        "authentication checks failed",
        "not have authentication information",
        "authrequired",
        "sender policy framework",
    ),
    Cause.PTR: (
        "reverse dns",
        "reverse-dns",
        "ptr record",
        "ptr resource record",
        "no ptr",
        "rdns",
        "reverse lookup",
        "ip name lookup failed",
        "mismatches client ip",
        "without a valid sender domain",
        "reverse mapping",
    ),
    Cause.RELAY: (
        "relay access denied",
        "relaying denied",
        "relaying not allowed",
        "relay not permitted",
        "not permitted to relay",
        "not configured to relay",
        "unable to relay",
        "no relaying",
        "we do not relay",
        "relay denied",
        "email address is not verified",
    ),
    Cause.SENDER: (
        "sender address rejected",
        "sender rejected",
        "sender domain",
        "sender verify failed",
        "sender unknown",
        "invalid sender",
        "bad sender",
        "domain of sender address",
        "unroutable sender",
        "unrouteable sender",
        "mailfrom domain",
        "mail from domain",
        "not allowed to send from",
        "purported responsible address",
        "not a member of this",
        "permission to post",
        "not allowed to post",
        "from: domain is invalid",
        "domain is invalid. please provide a valid from",
        "sender address has null mx",
    ),
    Cause.VIRUS: ("virus", "malware", "infected"),
    Cause.SPAM: (
        "spam",
        "unsolicited",
        "~ube~",
        "content rejected",
        "suspicious",
        "junk mail",
        "bulk mail",
        "mail rejete",
        "mail flood",
        "phishing",
    ),
    Cause.BLOCKED: (
        "blocked",
        "blacklisted",
        "black list",
        "blacklist",
        "blocklist",
        "block list",
        "blocking",
        "spamhaus",
        "spamcop",
        "sorbs",
        "dnsbl",
        "~rbl~",
        "listed at",
        "listed on",
        "listed in",
        "is listed",
        "client host rejected",
        "client host blocked",
        "banned",
        "reputation",
        "access denied",
        "not accepting connections",
        "service refuse",
        "weren't sent",
        "use the smtp server of your isp",
        "host network not allowed",
        "ip address rejected",
        "poor reputation",
        "dynamic ip",
        "dialup",
        "dial-up",
    ),
    Cause.RATE: (
        "rate limit",
        "too many",
        "at a rate",
        "frequency limited",
        "too fast",
        "relay quota",
        "sending limit",
        "unexpected volume",
        "try again in",
    ),
    Cause.TLS: (
        "starttls",
        "tls required",
        "tls is required",
        "requiretls",
        "encryption required",
        "must use tls",
        "tls handshake",
    ),
    Cause.CONTENT: (
        "header error",
        "headers too",
        "duplicate header",
        "bad header",
        "invalid header",
        "header syntax",
        "multiple subject",
        "8-bit",
        "8bit",
        "rfc 5322",
        "rfc 2822",
        "rfc5322",
        "multiple addresses in from",
        "media error",
        "content error",
        "conversion",
        "malformed",
    ),
    Cause.PROTOCOL: (
        "syntax error",
        "command parameter not implemented",
        "improper sequence of commands",
        "bad sequence of commands",
        "protocol violation",
        "command unrecognized",
        "command not recognized",
        "pipelining",
    ),
    Cause.POLICY: (
        "policy",
        "not authorized",
        "not authorised",
        "not allowed",
        "delivery not authorized",
        "mail rejected",
        "message rejected",
        "email rejected",
        "refused",
        "prohibited",
    ),
}

_GAP = 60
_SPECIAL = {"*": rf"[^\n]{{0,{_GAP}}}?", "~": r"\b"}
_CONTINUATION = re.compile(r"(?<=\S) [245]\d\d-(?:[245]\.\d{1,3}\.\d{1,3} )?")
_WORDS_CHARS = 3_000  # of a recipient's words read for phrases


@dataclass(frozen=True, slots=True)
class Found:
    cause: Cause
    phrase: str  # as written in PHRASES


def _trie_pattern(phrases: Iterable[tuple[str, str]]) -> str:
    """One alternation shaped as a trie over the phrases' characters; the end of each phrase
    is a group named after it, so the match tells which phrase it was."""
    root: dict[str, object] = {}
    for phrase, group in phrases:
        node = root
        for char in phrase:
            node = node.setdefault(char, {})  # type: ignore[assignment]
        node[""] = group

    def emit(node: dict[str, object]) -> str:
        branches = []
        for char, sub in sorted((k, v) for k, v in node.items() if k):
            step = _SPECIAL.get(char) or re.escape(char)
            branches.append(step + emit(sub))  # type: ignore[arg-type]
        if "" in node:
            branches.append(f"(?P<{node['']}>)")  # last: the longer phrases are tried first
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return emit(root)


_GROUPS: dict[str, Found] = {}
for _cause, _phrases in PHRASES.items():
    for _phrase in _phrases:
        _GROUPS.setdefault(f"p{len(_GROUPS)}", Found(_cause, _phrase))
_MATCHER = re.compile(_trie_pattern((found.phrase, group) for group, found in _GROUPS.items()))


def words(text: str) -> str:
    """A remote server's words as phrases are matched in them: one line, lowercase, every
    address masked, the continuation prefixes of multi-line replies (`550-5.1.1 `) removed."""
    return _CONTINUATION.sub(" ", scrub(text, limit=_WORDS_CHARS).lower())


def find(text: str) -> Iterator[Found]:
    """The phrases in `words(text)`, in order."""
    for match in _MATCHER.finditer(text):
        name = match.lastgroup
        if name is not None:
            yield _GROUPS[name]


def causes(text: str) -> dict[Cause, str]:
    """Each cause the words name, with the first phrase that named it."""
    found: dict[Cause, str] = {}
    for one in find(text):
        found.setdefault(one.cause, one.phrase)
    return found


# Phrases only the recipient's own mail system writes, of a mailbox it does not have: sound
# evidence on their own, whatever the command they answered.
SOUND = frozenset(
    {
        "user doesn't have a * account",
        "requested action not taken: mailbox unavailable",
        "recipient address rejected: access denied",
        "destinataire invalide",
        "recipient name is not recognized",
        "not listed in domino directory",
        "not listed in public name",
        "invalid final delivery userid",
        "no mailbox here",
        "address couldn't be found",
        "no valid recipients",
    }
)


def decisive(found: dict[Cause, str]) -> Cause | None:
    """The cause that decides among those found (PRIORITY)."""
    return next((cause for cause in PRIORITY if cause in found), None)


# ---------------------------------------------------------------- the SMTP command


class Command(StrEnum):
    """The SMTP command a refusal answered, where the report says."""

    CONNECT = "connect"
    HELO = "helo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"

    @property
    def before_recipient(self) -> bool:
        """Refused before any recipient was named: the server refused us, not an address."""
        return self not in (Command.RCPT, Command.DATA)


_COMMANDS = (
    (
        Command.RCPT,
        (
            "in reply to rcpt to command",
            "after rcpt to",
            "after rcpt command",
            "did not like our rcpt to",
            ">>> rcpt to",
            "rcpt to:<address>",
            "rcpt to <address>",
            "smtp:rcpt",
            "rcpt to response",
            "[rcpt_to]",
        ),
    ),
    (
        Command.DATA,
        (
            "in reply to end of data command",
            "in reply to data command",
            "after end of data",
            "after data",
            "did not like our final data",
            "did not like our data",
            "for text command",
            "smtp transmission failure has occurred",
            ">>> data",
        ),
    ),
    (
        Command.MAIL,
        (
            "in reply to mail from command",
            "after mail from",
            ">>> mail from",
            "mail from:<address>",
            "but sender was rejected",
        ),
    ),
    (
        Command.CONNECT,
        (
            "after initial connection",
            "while connected",
            "in reply to ehlo command",
            "in reply to helo command",
            "after ehlo",
            "after helo",
            "ehlo/helo",
            "greeting",
            "my name was rejected",
        ),
    ),
    (Command.STARTTLS, ("in reply to starttls command", "after starttls")),
)
_COMMAND_GROUPS: dict[str, Command] = {}
_COMMAND_PHRASES: list[tuple[str, str]] = []
for _command, _said in _COMMANDS:
    for _phrase in _said:
        _COMMAND_PHRASES.append((_phrase, f"c{len(_COMMAND_GROUPS)}"))
        _COMMAND_GROUPS[f"c{len(_COMMAND_GROUPS)}"] = _command
_COMMAND_MATCHER = re.compile(_trie_pattern(_COMMAND_PHRASES))
_TRANSCRIPT = re.compile(r">>> ?(rcpt|data|mail|ehlo|helo|starttls)\b|<<< ?([245])\d\d")


def command(text: str) -> Command | None:
    """The command a refusal answered, as `words(text)` say it. In a session transcript
    (`>>> RCPT To:...`, `<<< 550 ...`) it is the command before the first refusal."""
    last: str | None = None
    for match in _TRANSCRIPT.finditer(text):
        if match[1]:
            last = match[1]
        elif match[2] in ("4", "5") and last is not None:
            return {"rcpt": Command.RCPT, "data": Command.DATA, "mail": Command.MAIL}.get(
                last, Command.CONNECT
            )
    found = _COMMAND_MATCHER.search(text)
    return _COMMAND_GROUPS[found.lastgroup] if found and found.lastgroup else None
