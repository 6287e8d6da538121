"""Auto-replies (RFC 3834) and out-of-office messages: ignored, whatever they say."""

from __future__ import annotations

import re
from email.message import Message

from mailer.core.bounces.reading import header

_AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort|respon)|autoreply|out of (?:the )?office|"
    r"abwesenheit|absence|vacation|urlop|nieobecn|r[ée]ponse automatique|respuesta autom|auto:)",
    re.IGNORECASE,
)
DAEMON = re.compile(
    r"mailer-daemon|postmaster|mail delivery|undeliver|deliver(?:y|ed)? (?:status|fail|report|"
    r"notification|problem)|returned mail|failure notice|non[- ]?delivery|could not be delivered|"
    r"not delivered|rejected|mail system error",
    re.IGNORECASE,
)


def auto_reply(msg: Message) -> str | None:
    """Why this looks like an RFC 3834 auto-reply or an out-of-office, else None."""
    submitted = header(msg, "Auto-Submitted").lower()
    precedence = f"{header(msg, 'Precedence')} {header(msg, 'X-Precedence')}".lower()
    if any(msg.get(name) is not None for name in ("X-Autoreply", "X-Autorespond")):
        return "an auto-reply (X-Autoreply)"
    if "auto_reply" in precedence:
        return "an auto-reply (Precedence: auto_reply)"
    subject = header(msg, "Subject")
    if _AUTO_SUBJECT.search(subject):
        return "an out-of-office reply"
    if DAEMON.search(f"{header(msg, 'From')} {subject}"):
        return None  # bounces, too, say Auto-Submitted: auto-replied
    if submitted.startswith("auto-replied"):
        return "an auto-reply (Auto-Submitted: auto-replied)"
    return None
