from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

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


@pytest.mark.parametrize("url", ["https://x.example/\r\nBcc: y", "https://x.example/zażółć"])
def test_list_headers_refuse_what_cannot_stay_verbatim(url: str) -> None:
    bad = ListHeaders("Lucid News <lucid-news.lucid.example>", url)
    with pytest.raises(ValueError, match=r"printable ASCII|linefeed or carriage return"):
        compose(draft(list_headers=bad))


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


def test_the_policy_keeps_list_headers_verbatim_as_text_too() -> None:
    from mailer.core.messages import POLICY

    url = "<https://mail.lucid.example/u/" + "B" * 90 + ">"
    assert POLICY.fold("List-Unsubscribe", url) == f"List-Unsubscribe: {url}\r\n"
    assert POLICY.fold("Subject", "x").startswith("Subject: x")


def test_the_direct_writer_matches_the_standard_library() -> None:
    from mailer.core.messages import compose_alternative

    lists = ListHeaders(
        "Lucid News <lucid-news.lucid.example>",
        "https://mail.lucid.example/u/AAAAAeJAAAPR58alBqEd4-N8J49W",
    )
    subject_draft = draft(list_headers=lists)
    fast, slow = compose_alternative(subject_draft), compose(subject_draft)
    ours, theirs = parse(fast), parse(slow)
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
    assert ours.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        mine, reference = ours.get_body((kind,)), theirs.get_body((kind,))
        assert mine is not None and reference is not None
        assert mine.get_content() == reference.get_content()
        assert mine["Content-Transfer-Encoding"] == "quoted-printable"
    assert all(byte < 128 for byte in fast)
    assert max(len(line) for line in fast.split(b"\r\n")) <= 78
    assert f"\r\nList-Unsubscribe: <{lists.unsubscribe_url}>\r\n".encode() in fast


def test_the_direct_writer_hands_attachments_to_the_standard_library() -> None:
    from mailer.core.messages import compose_alternative

    with_file = draft(attachments=[FileAttachment("a.txt", "text/plain", b"a")])
    assert parse(compose_alternative(with_file)).get_content_type() == "multipart/mixed"
