from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import pytest

from mailer.core.messages import (
    Draft,
    FileAttachment,
    ListHeaders,
    Mailbox,
    compose,
    message_id,
    parse_mailbox,
)
from mailer.core.rendering import Rendered
from mailer.errors import InvalidJob
from tests.support.payloads import (
    BCC_Q,
    PHISHING_B,
    PHISHING_Q,
    SEPARATORS,
    filename_of,
    shown_name,
)

CONTENT = Rendered(
    subject="Potwierdzenie zamówienia ZAM/2026/11/0042 — zażółć gęślą jaźń",
    html="<p>Dzień dobry, <b>Łucja</b>!</p>" + "<p>x</p>" * 100,
    text="Dzień dobry, Łucja!\n" + "bardzo długa linia " * 30 + "\n",
)


def draft(**overrides: object) -> Draft:
    values: dict[str, object] = {
        "sender": Mailbox("no-reply@lucid.example", "LucidOffice"),
        "to": Mailbox("lucja@example.pl", "Łucja Żółć"),
        "message_id": message_id("5f1c2a0e-8b1e-4c53-9a55-3f0c1e7d9a10", "lucid.example"),
        "date": datetime(2026, 11, 24, 9, 15, tzinfo=UTC),
        "content": CONTENT,
    }
    values.update(overrides)
    return Draft(**values)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_headers_and_alternative_parts() -> None:
    raw = compose(draft())
    message = parse(raw)
    assert message["From"] == "LucidOffice <no-reply@lucid.example>"
    assert message["To"] == "Łucja Żółć <lucja@example.pl>"
    assert message["Subject"] == CONTENT.subject
    assert message["Message-ID"] == "<5f1c2a0e-8b1e-4c53-9a55-3f0c1e7d9a10@lucid.example>"
    assert message["Date"] == "Tue, 24 Nov 2026 09:15:00 +0000"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n") == CONTENT.text
    assert html.get_content().replace("\r\n", "\n") == CONTENT.html + "\n"


def test_polish_is_encoded_and_every_line_is_within_the_limits() -> None:
    raw = compose(draft())
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in head  # RFC 2047 for Subject and the display name
    assert all(byte < 128 for byte in raw)  # 7-bit clean: nothing for a relay to re-encode
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 78
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_attachments_make_it_mixed_and_arrive_byte_identical() -> None:
    pdf = bytes(range(256)) * 40
    raw = compose(draft(attachments=[FileAttachment("Faktura łódź.pdf", "application/pdf", pdf)]))
    message = parse(raw)
    assert message.get_content_type() == "multipart/mixed"
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "Faktura łódź.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf
    assert message.get_body(("plain",)) is not None


def test_sub_parts_do_not_repeat_mime_version() -> None:
    message = parse(compose(draft(attachments=[FileAttachment("a.txt", "text/plain", b"a")])))
    assert [part for part in message.walk() if part["MIME-Version"]] == [message]


def test_list_unsubscribe_stays_a_plain_url_however_long() -> None:
    url = "https://mail.lucid.example/unsubscribe/" + "A" * 90
    raw = compose(draft(list_headers=ListHeaders("Lucid News <lucid-news.lucid.example>", url)))
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert b"\r\nList-Id: Lucid News <lucid-news.lucid.example>\r\n" in raw
    assert parse(raw)["List-Unsubscribe"] == f"<{url}>"


@pytest.mark.parametrize(
    "url", ["https://x.example/\r\nBcc: y", "https://x.example/zażółć", "https://x/ a", "x>"]
)
def test_list_headers_refuse_what_cannot_stay_verbatim(url: str) -> None:
    bad = ListHeaders("Lucid News <lucid-news.lucid.example>", url)
    with pytest.raises(InvalidJob, match=r"^List-Unsubscribe: the URL must be printable ASCII"):
        compose(draft(list_headers=bad))


@pytest.mark.parametrize("list_id", ["Lucid News", "<a b>", "News <x>\r\nBcc: y"])
def test_a_list_id_must_name_an_identifier(list_id: str) -> None:
    with pytest.raises(InvalidJob, match=r"^List-Id: "):
        compose(draft(list_headers=ListHeaders(list_id, "https://x.example/u")))


def test_a_list_name_that_looks_encoded_is_shown_as_written() -> None:
    lists = ListHeaders(f"{BCC_Q} <lucid-news.lucid.example>", "https://x.example/u")
    raw = compose(draft(list_headers=lists))
    assert parse(raw)["List-Id"] == f"{BCC_Q} <lucid-news.lucid.example>"
    assert BCC_Q.encode() not in raw


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("LucidOffice <no-reply@lucid.example>", Mailbox("no-reply@lucid.example", "LucidOffice")),
        ("no-reply@lucid.example", Mailbox("no-reply@lucid.example", None)),
        ('"Łucja, Ż." <l@x.pl>', Mailbox("l@x.pl", "Łucja, Ż.")),
    ],
)
def test_parse_mailbox(text: str, expected: Mailbox) -> None:
    assert parse_mailbox(text) == expected


@pytest.mark.parametrize(
    "text", ["nobody", "a@b.pl, c@d.pl", "Name <bad@>", "A <a@b.pl>\r\nBcc: x"]
)
def test_parse_mailbox_refuses(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the cause
        parse_mailbox(text)


def reference(d: Draft) -> EmailMessage:
    """The same draft composed by the standard library, as the writer was checked against."""
    msg = EmailMessage(policy=policy.default.clone(linesep="\r\n"))
    msg["From"] = Address(d.sender.name or "", *d.sender.address.split("@"))
    msg["To"] = Address(d.to.name or "", *d.to.address.split("@"))
    msg["Subject"] = d.content.subject
    msg["Date"] = format_datetime(d.date)
    msg["Message-ID"] = d.message_id
    if d.list_headers is not None:
        msg["List-Id"] = d.list_headers.list_id
        msg["List-Unsubscribe"] = f"<{d.list_headers.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(d.content.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(d.content.html, subtype="html", charset="utf-8", cte="quoted-printable")
    for a in d.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        msg.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
    return parse(msg.as_bytes())


@pytest.mark.parametrize(
    "attachments",
    [(), (FileAttachment("Faktura łódź.pdf", "application/pdf", bytes(range(256)) * 9),)],
)
def test_the_writer_reads_back_as_the_standard_librarys_message_does(
    attachments: tuple[FileAttachment, ...],
) -> None:
    lists = ListHeaders(
        "Lucid News <lucid-news.lucid.example>",
        "https://mail.lucid.example/u/AAAAAeJAAAPR58alBqEd4-N8J49W",
    )
    subject_draft = draft(list_headers=lists, attachments=attachments)
    ours, theirs = parse(compose(subject_draft)), reference(subject_draft)
    for name in (
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ):
        assert ours[name] == theirs[name], name
    assert ours.get_content_type() == theirs.get_content_type()
    for kind in ("plain", "html"):
        mine, other = ours.get_body((kind,)), theirs.get_body((kind,))
        assert mine is not None and other is not None
        assert mine.get_content() == other.get_content()
        assert mine["Content-Transfer-Encoding"] == "quoted-printable"
    pairs = zip(ours.iter_attachments(), theirs.iter_attachments(), strict=True)
    for mine, other in pairs:
        assert mine.get_filename() == other.get_filename()
        assert mine.get_content_type() == other.get_content_type()
        assert mine.get_content() == other.get_content()
        assert mine.get_content_disposition() == "attachment"


def test_a_newsletter_keeps_its_bytes() -> None:
    """The writer newsletters had: same head, same boundary, same parts."""
    lists = ListHeaders("Lucid News <lucid-news.lucid.example>", "https://mail.lucid.example/u/x")
    raw = compose(
        draft(
            sender=Mailbox("news@lucid.example", "Lucid News"),
            to=Mailbox("anna@example.pl", "Anna Nowak"),
            content=Rendered("What's new", "<p>x</p>", "x\n"),
            list_headers=lists,
        )
    )
    assert raw.split(b"\r\n\r\n", 1)[0].decode() == (
        "From: Lucid News <news@lucid.example>\r\n"
        "To: Anna Nowak <anna@example.pl>\r\n"
        "Subject: What's new\r\n"
        "Date: Tue, 24 Nov 2026 09:15:00 +0000\r\n"
        "Message-ID: <5f1c2a0e-8b1e-4c53-9a55-3f0c1e7d9a10@lucid.example>\r\n"
        "List-Id: Lucid News <lucid-news.lucid.example>\r\n"
        "List-Unsubscribe: <https://mail.lucid.example/u/x>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="=_c6bc4fa57453ae296212ed9fcfe3"'
    )


def test_base64_lines_are_76_and_the_parts_end_cleanly() -> None:
    content = bytes(range(256)) * 5
    raw = compose(draft(attachments=[FileAttachment("a.bin", "application/octet-stream", content)]))
    body = raw.split(b"Content-Transfer-Encoding: base64\r\n\r\n", 1)[1]
    lines = body.split(b"\r\n")
    encoded = lines[: lines.index(b"")]
    assert {len(line) for line in encoded[:-1]} == {76}
    assert base64.b64decode(b"".join(encoded)) == content
    assert raw.endswith(b"--\r\n")
    assert [p.get_content_type() for p in parse(raw).walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/octet-stream",
    ]


@pytest.mark.parametrize(
    "content_type", ["multipart/mixed", "message/rfc822", "text/html\r\nBcc: x", "pdf", "a/b c"]
)
def test_an_attachment_type_is_checked(content_type: str) -> None:
    bad = FileAttachment("a.pdf", content_type, b"x")
    with pytest.raises(InvalidJob, match=r"^attachments\.0\.content_type: "):
        compose(draft(attachments=[bad]))


@pytest.mark.parametrize("filename", ["", "  ", "a\r\nb.pdf", "a\u2028.pdf"])
def test_an_attachment_name_is_checked(filename: str) -> None:
    with pytest.raises(InvalidJob, match=r"^attachments\.0\.filename: "):
        compose(draft(attachments=[FileAttachment(filename, "application/pdf", b"x")]))


@pytest.mark.parametrize("payload", [PHISHING_Q, PHISHING_B, BCC_Q, *SEPARATORS])
def test_no_header_input_adds_a_header_or_a_part(payload: str) -> None:
    """The payloads in the display name, the subject and a file name at once."""
    raw = compose(
        draft(
            to=Mailbox("lucja@example.pl", payload),
            content=Rendered(payload, "<p>x</p>", "x\n"),
            attachments=[FileAttachment(payload.replace("/", "-"), "application/pdf", b"%PDF")],
        )
    )
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    names = [line.split(":")[0] for line in head.split("\r\n") if not line.startswith(" ")]
    assert names == ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    message = parse(raw)
    assert message["Subject"] == payload
    assert shown_name(head.split("\r\nSubject:")[0].split("\r\n", 1)[1]) == (
        payload,
        "lucja@example.pl",
    )
    (attachment,) = message.iter_attachments()
    assert filename_of(attachment) == payload.replace("/", "-")
    assert [p.get_content_type() for p in message.walk()].count("text/html") == 1


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"to": Mailbox("a b@example.pl")}, "^To: the address"),
        ({"sender": Mailbox("x@example.pl>")}, "^From: the address"),
        ({"message_id": "<x>\r\nBcc: y"}, "^Message-ID: "),
        ({"content": Rendered("a\u2028b", "", "")}, "^Subject: contains a line break"),
    ],
)
def test_what_the_pipelines_pass_is_checked_again(bad: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidJob, match=match):
        compose(draft(**bad))


@pytest.mark.parametrize("name", [BCC_Q, *SEPARATORS])
def test_a_configured_name_that_decodes_to_a_line_break_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"decodes to a line break|cannot contain CR or LF"):
        parse_mailbox(f"{name} <news@lucid.example>")
