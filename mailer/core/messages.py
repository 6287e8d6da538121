"""⑤ Compose: a rendered message and its addresses become RFC 5322 bytes.

Built with the standard library's `email` package: RFC 2047 for non-ASCII display names and
subjects, quoted-printable text parts (7-bit clean, so no relay re-encodes what DKIM signed),
multipart/alternative, and multipart/mixed around it when there are attachments.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime
from functools import lru_cache
from typing import Any

from mailer.core.addresses import normalize_address, unsafe_for_header
from mailer.core.rendering import Rendered

# Headers whose value must reach the recipient exactly as written: a URL folded into an
# RFC 2047 encoded-word is no longer a URL (RFC 8058 clients then cannot use it).
VERBATIM_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post", "list-id"})
_VERBATIM_VALUE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")


class _MailPolicy(EmailPolicy):
    def _verbatim(self, name: str, value: Any) -> str | None:
        if name.lower() not in VERBATIM_HEADERS:
            return None
        text = str(value)
        if not _VERBATIM_VALUE.fullmatch(text) or len(name) + 2 + len(text) > 998:
            raise ValueError(f"{name} must be printable ASCII within one line")
        return f"{name}: {text}{self.linesep}"

    def fold(self, name: str, value: Any) -> str:
        return self._verbatim(name, value) or super().fold(name, value)

    def fold_binary(self, name: str, value: Any) -> bytes:
        verbatim = self._verbatim(name, value)
        return verbatim.encode("ascii") if verbatim else super().fold_binary(name, value)


POLICY = _MailPolicy(linesep="\r\n", max_line_length=78, utf8=False)


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: str
    name: str | None = None

    def header(self) -> Address:
        local, _, domain = self.address.rpartition("@")
        return Address(display_name=self.name or "", username=local, domain=domain)

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


def parse_mailbox(text: str) -> Mailbox:
    """'Name <user@example.org>' or a bare address → a Mailbox; ValueError when not valid."""
    if unsafe_for_header(text):
        raise ValueError("contains a line break or control character")
    header = POLICY.header_factory("from", text)
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    if len(addresses) != 1 or header.defects or not addresses[0].addr_spec:
        raise ValueError(f"{text!r} is not one mailbox such as 'Name <user@example.org>'")
    return Mailbox(
        address=normalize_address(addresses[0].addr_spec), name=addresses[0].display_name or None
    )


@dataclass(frozen=True, slots=True)
class FileAttachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class ListHeaders:
    """RFC 2369 / 2919 / 8058: which list, and the one-click way out."""

    list_id: str
    unsubscribe_url: str


@dataclass(frozen=True, slots=True)
class Draft:
    sender: Mailbox
    to: Mailbox
    message_id: str
    date: datetime
    content: Rendered
    attachments: Sequence[FileAttachment] = ()
    list_headers: ListHeaders | None = None


def message_id(local: str, domain: str) -> str:
    return f"<{local}@{domain}>"


def compose(draft: Draft) -> bytes:
    """The message as it goes over SMTP: CRLF line ends, no line over 998 octets."""
    msg = EmailMessage(policy=POLICY)
    msg["From"] = draft.sender.header()
    msg["To"] = draft.to.header()
    msg["Subject"] = draft.content.subject
    msg["Date"] = format_datetime(draft.date)
    msg["Message-ID"] = draft.message_id
    if draft.list_headers is not None:
        lists = draft.list_headers
        msg["List-Id"] = lists.list_id
        msg["List-Unsubscribe"] = f"<{lists.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(draft.content.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(draft.content.html, subtype="html", charset="utf-8", cte="quoted-printable")
    for attachment in draft.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        msg.add_attachment(
            attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    for part in msg.walk():
        if part is not msg:
            # add_alternative/add_attachment stamp sub-parts as if they were whole messages.
            del part["MIME-Version"]
    return msg.as_bytes()


def _encoded(name: str, value: str) -> str:
    """`Name: value` folded, with RFC 2047 where needed: the standard library's output."""
    return POLICY.fold(name, POLICY.header_factory(name, value))


# From and Subject repeat for every recipient of an issue.
_encoded_once = lru_cache(maxsize=256)(_encoded)


def _qp(text: str) -> bytes:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    crlf = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    return binascii.b2a_qp(crlf, istext=True, header=False)


def compose_alternative(draft: Draft) -> bytes:
    """The same message as compose() for a draft without attachments, written directly:
    about ten times cheaper, which matters once per recipient of a newsletter."""
    if draft.attachments:
        return compose(draft)
    boundary = "=_" + hashlib.sha256(draft.message_id.encode()).hexdigest()[:28]
    head = [
        _encoded_once("From", str(draft.sender.header())),
        _encoded("To", str(draft.to.header())),
        _encoded_once("Subject", draft.content.subject),
        f"Date: {format_datetime(draft.date)}\r\n",
        f"Message-ID: {draft.message_id}\r\n",
    ]
    if draft.list_headers is not None:
        lists = draft.list_headers
        head += [
            POLICY.fold_binary("List-Id", lists.list_id).decode(),
            POLICY.fold_binary("List-Unsubscribe", f"<{lists.unsubscribe_url}>").decode(),
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        ]
    head += [
        "MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n',
    ]
    separator = f"--{boundary}\r\n".encode()
    part = (
        b'Content-Type: text/%s; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return b"".join(
        [
            "".join(head).encode("ascii"),
            b"\r\n",
            separator,
            part % b"plain",
            _qp(draft.content.text),
            b"\r\n",
            separator,
            part % b"html",
            _qp(draft.content.html),
            b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
    )
