"""Bounce reports written to cost the classifier as much as possible, each sent to (or naming)
a return path of ours, as anyone who got one of our messages could send them."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial


def _headers(verp: str, subject: str = "Undelivered Mail Returned to Sender") -> str:
    return (
        "From: MAILER-DAEMON@mx.example.pl (Mail Delivery System)\r\n"
        f"To: <{verp}>\r\nSubject: {subject}\r\n"
    )


def _base64(text: str) -> str:
    return base64.encodebytes(text.encode()).decode().replace("\n", "\r\n")


def no_at_runs(verp: str, *, addresses: int = 200, size: int = 25_000) -> bytes:
    """The report of issue 14, fit for SMTP (no line over 998): a bounce of about `size`
    bytes whose explanation, a base64 part, decodes to one long run without an @, and whose
    qmail-style recipient paragraph (after a `Received:` line, where an explanation ends)
    names `addresses` addresses the explanation does not. Before the fix each address had
    the whole run scrubbed by a quadratic pattern: one such report took minutes."""
    paragraph = (
        "Hi. This is the qmail-send program at mx.example.pl.\r\n\r\n"
        "Received: from mx.example.pl\r\n"
        + "".join(f"<user{n}@example{n}.pl>:\r\n" for n in range(addresses))
        + "--- Below this line is a copy of the message.\r\n"
    )
    run = "x" * max(1, (size - len(paragraph)) * 3 // 4)
    return (
        _headers(verp, "failure notice") + "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="Q"\r\n\r\n'
        "--Q\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{_base64(run)}--Q\r\nContent-Type: text/plain\r\n\r\n{paragraph}--Q--\r\n"
    ).encode()


def many_recipients(verp: str, *, recipients: int = 200, diagnostic_chars: int = 400) -> bytes:
    """A DSN with a recipient block per address, each with a long diagnostic without an @."""
    blocks = "".join(
        f"Final-Recipient: rfc822; user{n}@example.pl\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        f"Diagnostic-Code: smtp; 550 {'y' * diagnostic_chars}\r\n\r\n"
        for n in range(recipients)
    )
    return (
        _headers(verp) + "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.pl\r\n\r\n{blocks}--B--\r\n"
    ).encode()


def deep_mime(verp: str, *, depth: int = 60) -> bytes:
    """Multiparts nested `depth` deep, their boundaries written `boundary =` (with a space,
    which the stdlib parser reads and a count of `boundary=` does not)."""
    head = "".join(
        f"Content-Type: multipart/mixed; boundary =b{n}\r\n\r\n--b{n}\r\n" for n in range(depth)
    )
    tail = "".join(f"\r\n--b{n}--\r\n" for n in reversed(range(depth)))
    body = "Content-Type: text/plain\r\n\r\nYour message could not be delivered: 550 5.1.1\r\n"
    return (_headers(verp) + "MIME-Version: 1.0\r\n" + head + body + tail).encode()


def huge_headers(verp: str, *, fields: int = 1_000, field_bytes: int = 90_000) -> bytes:
    """A thousand header fields, and a Content-Type of `field_bytes` (folded, no line over
    998) whose parameter is semicolons inside quotes: the stdlib's parameter parsing is
    quadratic in a field's length."""
    many = "".join(f"X-Filler-{n}: {'z' * 20}\r\n" for n in range(fields))
    folded = "\r\n ".join(";" * 900 for _ in range(field_bytes // 900))
    content_type = f'Content-Type: text/plain; a="{folded}"\r\n'
    return (
        _headers(verp) + many + content_type + "\r\nYour message could not be delivered.\r\n"
    ).encode()


def crlf_words(verp: str, recipient: str) -> bytes:
    """A DSN whose encoded words decode to CR LF and a forged header, in the Subject, the From
    and the diagnostic."""
    crlf = "=?utf-8?q?=0D=0ABcc:_evil@example.org=0D=0A?="
    return (
        f"From: {crlf} <MAILER-DAEMON@mx.example.pl>\r\nTo: <{verp}>\r\n"
        f"Subject: Undelivered {crlf}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.pl\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 {crlf} no such user\r\n\r\n--B--\r\n"
    ).encode()


def cubic_lines(verp: str, *, lines: int = 3, width: int = 1_500) -> bytes:
    """A Netscape-style bounce whose lines after its phrase are all `<` (in base64, so they
    pass SMTP's 998): flufl.bounce's pattern for that format is cubic in a line's length (a
    line of 998 took 4.4 s), so this one runs past any classifier's time limit."""
    text = (
        "This Message was undeliverable due to the following reason:\r\n\r\n"
        + ("<" * width + "\r\n") * lines
    )
    return (
        _headers(verp, "Undeliverable") + "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="N"\r\n\r\n'
        "--N\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{_base64(text)}--N\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{verp}>\r\nSubject: November\r\n\r\n--N--\r\n"
    ).encode()


@dataclass(frozen=True)
class Hostile:
    name: str
    make: Callable[[str], bytes]  # the report, to a return path
    kind: str  # what it is classified as
    reason: str  # words of its reason
    outcome: str  # what it changes, for a delivery to an address it does not name


HOSTILE = (
    Hostile("no @ for 25 KB, 200 addresses", no_at_runs, "unparseable", "more than 50", "nothing"),
    Hostile(
        "no @ for 25 KB, 50 addresses",
        partial(no_at_runs, addresses=50),
        "soft",
        "50 recipients;",
        "changes nothing: it names another recipient",
    ),
    Hostile("DSN of 200 recipients", many_recipients, "unparseable", "more than 50", "nothing"),
    Hostile("MIME 60 deep", deep_mime, "unparseable", "nested more than 12 deep", "nothing"),
    Hostile(
        "1,000 headers, a 90 KB field",
        huge_headers,
        "soft",
        "no status code",
        "bounced; 1 bounce day(s) in the last 30, under 5",
    ),
    Hostile(
        "lines flufl.bounce reads in cubic time",
        cubic_lines,
        "unparseable",
        "took longer than",
        "nothing",
    ),
)
