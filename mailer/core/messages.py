"""⑤ Compose: a rendered message and its addresses become RFC 5322 bytes.

One writer for every message, receipts and newsletters alike: headers from `headers` (our own
RFC 2047 / 2231 encoding, never the standard library's folding), quoted-printable text parts
(7-bit clean, so no relay re-encodes what DKIM signed), multipart/alternative, and
multipart/mixed around it with base64 attachments when there are any.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.policy import default as _parsing_policy
from email.utils import format_datetime
from functools import lru_cache

from mailer.core import headers
from mailer.core.addresses import normalize_address, unsafe_for_header
from mailer.core.rendering import Rendered
from mailer.errors import InvalidJob

_MIME_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
CONTENT_TYPE = re.compile(rf"{_MIME_NAME}/{_MIME_NAME}")
# Types whose body a client parses as structure: never an attachment we base64.
STRUCTURED_TYPES = ("multipart/", "message/")
_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[A-Za-z0-9.-]+>")
_LIST_ID = re.compile(r"(?:(?P<name>.*\S) )?<(?P<id>[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+)>")
_TEST_OF = re.compile(r"[A-Za-z0-9-]{1,64}")
TEST_HEADER = "X-Mailer-Test"  # on a test send of an issue, naming it
_URL = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")  # printable ASCII without < and >


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: str
    name: str | None = None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


def parse_mailbox(text: str) -> Mailbox:
    """'Name <user@example.org>' or a bare address → a Mailbox; ValueError when not valid.

    For settings; the standard library parses (it decodes encoded-words), so the decoded
    name is checked again."""
    if unsafe_for_header(text):
        raise ValueError("contains a line break or control character")
    header = _parsing_policy.header_factory("from", text)
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    if len(addresses) != 1 or header.defects or not addresses[0].addr_spec:
        raise ValueError(f"{text!r} is not one mailbox such as 'Name <user@example.org>'")
    name = addresses[0].display_name or None
    if name is not None and unsafe_for_header(name):
        raise ValueError("the name decodes to a line break or control character")
    return Mailbox(address=normalize_address(addresses[0].addr_spec), name=name)


@dataclass(frozen=True, slots=True)
class FileAttachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class ListHeaders:
    """RFC 2369 / 2919 / 8058: which list (`Name <id>` or `<id>`), and the one-click way out."""

    list_id: str
    unsubscribe_url: str
    # For the mailbox providers' aggregate complaint reports (Gmail's Feedback Loop):
    # `campaign:list:type:sender`, printable ASCII.
    feedback_id: str | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    sender: Mailbox
    to: Mailbox
    message_id: str
    date: datetime
    content: Rendered
    attachments: Sequence[FileAttachment] = ()
    list_headers: ListHeaders | None = None
    test_of: str | None = None  # a test send of this issue id: an X-Mailer-Test header


def message_id(local: str, domain: str) -> str:
    return f"<{local}@{domain}>"


# From and Subject repeat for every recipient of an issue.
@lru_cache(maxsize=256)
def _mailbox(name: str, display: str | None, address: str) -> str:
    return headers.mailbox(name, display, address)


@lru_cache(maxsize=256)
def _subject(text: str) -> str:
    return headers.unstructured("Subject", text)


def _list_lines(lists: ListHeaders) -> list[str]:
    found = _LIST_ID.fullmatch(lists.list_id)
    if found is None:
        raise InvalidJob("List-Id: must be 'Name <list.domain>' or '<list.domain>'")
    name_tokens = headers.phrase("List-Id", found["name"]) if found["name"] else []
    url = lists.unsubscribe_url
    if not _URL.fullmatch(url) or len(url) > 998 - len("List-Unsubscribe: <>"):
        raise InvalidJob("List-Unsubscribe: the URL must be printable ASCII within one line")
    return [
        headers.fold("List-Id", [*name_tokens, f"<{found['id']}>"]),
        f"List-Unsubscribe: <{url}>\r\n",  # whole on one line: a folded URL breaks RFC 8058
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        *_feedback_line(lists.feedback_id),
    ]


_FEEDBACK_ID = re.compile(r"[\x21-\x7e]{1,200}")


def _feedback_line(value: str | None) -> list[str]:
    if value is None:
        return []
    if not _FEEDBACK_ID.fullmatch(value):
        raise InvalidJob("Feedback-ID: must be printable ASCII within one line")
    return [f"Feedback-ID: {value}\r\n"]


def _head(draft: Draft) -> list[str]:
    if not _MESSAGE_ID.fullmatch(draft.message_id):
        raise InvalidJob("Message-ID: must be <local@domain> in printable ASCII")
    head = [
        _mailbox("From", draft.sender.name, draft.sender.address),
        headers.mailbox("To", draft.to.name, draft.to.address),
        _subject(draft.content.subject),
        f"Date: {format_datetime(draft.date)}\r\n",
        f"Message-ID: {draft.message_id}\r\n",
    ]
    if draft.list_headers is not None:
        head += _list_lines(draft.list_headers)
    if draft.test_of is not None:
        if not _TEST_OF.fullmatch(draft.test_of):
            raise InvalidJob("X-Mailer-Test: must be an issue id")
        head.append(f"{TEST_HEADER}: {draft.test_of}\r\n")
    head.append("MIME-Version: 1.0\r\n")
    return head


def _qp(text: str) -> bytes:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    crlf = "\r\n".join(lines).encode("utf-8") + b"\r\n"
    return binascii.b2a_qp(crlf, istext=True, header=False)


_TEXT_PART = (
    b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)


def _boundary(salt: str, draft: Draft) -> str:
    # "=_" never occurs in quoted-printable or base64 output, so no part can end early.
    return "=_" + hashlib.sha256((salt + draft.message_id).encode()).hexdigest()[:28]


def _alternative(draft: Draft, boundary: str) -> list[bytes]:
    separator = f"--{boundary}\r\n".encode()
    return [
        separator,
        _TEXT_PART % b"plain",
        _qp(draft.content.text),
        b"\r\n",
        separator,
        _TEXT_PART % b"html",
        _qp(draft.content.html),
        b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]


def _attachment(index: int, attachment: FileAttachment) -> list[bytes]:
    where = f"attachments.{index}"
    content_type = attachment.content_type.lower()
    if not CONTENT_TYPE.fullmatch(content_type) or content_type.startswith(STRUCTURED_TYPES):
        raise InvalidJob(f"{where}.content_type: {content_type!r} cannot be an attachment's type")
    if not attachment.filename.strip():
        raise InvalidJob(f"{where}.filename: is empty")
    head = "".join(
        [
            f"Content-Type: {content_type}\r\n",
            headers.with_parameters(
                "Content-Disposition",
                "attachment",
                headers.parameter(
                    "filename", headers.checked(f"{where}.filename", attachment.filename)
                ),
            ),
            "Content-Transfer-Encoding: base64\r\n",
        ]
    )
    return [head.encode("ascii"), b"\r\n", *_base64_lines(attachment.content)]


def _base64_lines(content: bytes) -> Iterator[bytes]:
    """Lines of 76, CR LF ended, a block of 1,024 lines at a time: one C call over a 10 MB
    attachment would hold the GIL for tens of milliseconds."""
    view, block = memoryview(content), 57 * 1024
    for start in range(0, len(content), block):
        yield base64.encodebytes(view[start : start + block]).replace(b"\n", b"\r\n")


def compose(draft: Draft) -> bytes:
    """The message as it goes over SMTP: CRLF line ends, 7-bit, header lines <= 78 octets
    except a List-Unsubscribe URL, which stays whole (<= 998)."""
    head = _head(draft)
    alternative = _boundary("", draft)
    if not draft.attachments:
        head.append(f'Content-Type: multipart/alternative; boundary="{alternative}"\r\n')
        return b"".join(["".join(head).encode("ascii"), b"\r\n", *_alternative(draft, alternative)])
    mixed = _boundary("mixed", draft)
    head.append(f'Content-Type: multipart/mixed; boundary="{mixed}"\r\n')
    separator = f"--{mixed}\r\n".encode()
    parts = [
        "".join(head).encode("ascii"),
        b"\r\n",
        separator,
        f'Content-Type: multipart/alternative; boundary="{alternative}"\r\n\r\n'.encode(),
        *_alternative(draft, alternative),
    ]
    for index, attachment in enumerate(draft.attachments):
        parts += [b"\r\n", separator, *_attachment(index, attachment)]
    parts.append(f"\r\n--{mixed}--\r\n".encode())
    return b"".join(parts)
