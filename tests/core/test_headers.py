from __future__ import annotations

import base64
import re
from email.parser import BytesParser
from email.policy import default

import pytest

from mailer.core import headers
from mailer.errors import InvalidJob
from tests.support.payloads import BCC_Q, HOSTILE, LOOKALIKES, PHISHING_B, filename_of, shown_name

POLISH = ["Łucja Żółć", "Grzegorz Brzęczyszczykiewicz", "Zażółć gęślą jaźń — ĄĘŚĆŻŹŃÓŁ"]
LONG = "Krzysztof Konstanty Maria Brzęczyszczykiewicz-Chrząszczyżewoszycki " * 4


def parse(head: str) -> object:
    return BytesParser(policy=default).parsebytes(head.encode("ascii") + b"\r\nbody\r\n")


def lines_of(head: str) -> list[str]:
    assert head.endswith("\r\n")
    return head[:-2].split("\r\n")


def assert_well_formed(head: str) -> None:
    lines = lines_of(head)
    assert all(len(line) <= headers.MAX_LINE for line in lines), lines
    assert all(line[:1] == " " for line in lines[1:]), "a fold starts with a space"
    assert "\n" not in head.replace("\r\n", "") and "\r" not in head.replace("\r\n", "")
    assert head.isascii()
    for word in re.findall(r"=\?utf-8\?[qb]\?[^?]*\?=", head):
        assert len(word) <= headers.MAX_WORD, word


@pytest.mark.parametrize("text", HOSTILE + LOOKALIKES + POLISH + [LONG.strip()])
def test_a_subject_is_shown_exactly_as_written(text: str) -> None:
    head = headers.unstructured("Subject", text)
    assert_well_formed(head)
    message = parse(head)
    assert message["Subject"] == text  # type: ignore[index]
    assert list(message.keys()) == ["Subject"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", HOSTILE + LOOKALIKES + POLISH + [LONG.strip(), 'A "B" \\ C'])
def test_a_display_name_is_shown_exactly_as_written(name: str) -> None:
    head = headers.mailbox("To", name, "jan@example.pl")
    assert_well_formed(head)
    assert shown_name(head) == (name, "jan@example.pl")
    message = parse(head)
    (mailbox,) = message["To"].addresses  # type: ignore[index]
    assert mailbox.display_name.replace(" ", "") == name.replace(" ", "")
    assert mailbox.addr_spec == "jan@example.pl"
    assert list(message.keys()) == ["To"]  # type: ignore[attr-defined]
    if len(re.findall(r"\?= =\?", head.replace("\r\n", ""))) == 0:
        assert mailbox.display_name == name  # no adjacent encoded-words: CPython agrees


@pytest.mark.parametrize("text", HOSTILE + LOOKALIKES)
def test_text_that_looks_encoded_is_encoded_again(text: str) -> None:
    for head in (headers.unstructured("Subject", text), headers.mailbox("To", text, "a@b.pl")):
        ours = re.sub(r"=\?utf-8\?[qb]\?[^?]*\?=", "", head)
        assert "=?" not in ours, "a lookalike went out as itself"
        assert "?=" not in ours


def test_plain_ascii_stays_as_it_is_and_folds_at_spaces() -> None:
    assert headers.unstructured("Subject", "Hello there") == "Subject: Hello there\r\n"
    assert (
        headers.mailbox("From", "Lucid News", "n@l.example") == "From: Lucid News <n@l.example>\r\n"
    )
    assert headers.mailbox("To", None, "n@l.example") == "To: n@l.example\r\n"
    assert headers.mailbox("To", "Kowalski, Jan", "j@x.pl") == 'To: "Kowalski, Jan" <j@x.pl>\r\n'
    long = " ".join(["word"] * 40)
    head = headers.unstructured("Subject", long)
    assert "=?" not in head and len(lines_of(head)) == 3
    assert_well_formed(head)
    assert parse(head)["Subject"] == long  # type: ignore[index]


@pytest.mark.parametrize("text", ["  two  spaces ", "x" * 90, "trailing ", "Zamówienie nr 5"])
def test_what_plain_words_cannot_carry_is_encoded(text: str) -> None:
    head = headers.unstructured("Subject", text)
    assert "=?utf-8?q?" in head
    assert_well_formed(head)
    assert parse(head)["Subject"] == text  # type: ignore[index]


def test_a_long_polish_name_folds_into_several_words_each_a_whole_character() -> None:
    head = headers.mailbox("To", LONG.strip(), "k@example.pl")
    assert len(lines_of(head)) >= 5
    assert_well_formed(head)
    for word in re.findall(r"=\?utf-8\?([qb])\?([^?]*)\?=", head):
        kind, payload = word
        raw = (
            base64.b64decode(payload)
            if kind == "b"
            else re.sub(r"=([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), payload).encode("latin-1")
        )
        raw.decode("utf-8")  # no character split across two encoded-words


def test_b_is_chosen_when_shorter() -> None:
    assert "=?utf-8?b?" in headers.unstructured("Subject", "ŻŻŻŻŻŻŻŻ")
    assert "=?utf-8?q?" in headers.unstructured("Subject", "Zamówienie")


@pytest.mark.parametrize(
    "evil",
    [
        "a\r\nBcc: x",
        "a\nb",
        "a\rb",
        "a\x00",
        "a\x1b",
        "a\x7f",
        "a\x85b",
        "a\u2028b",
        "a\u2029b",
        "\ud800",
    ],
)
def test_controls_and_separators_are_refused_naming_the_header(evil: str) -> None:
    for call in (
        lambda: headers.unstructured("Subject", evil),
        lambda: headers.mailbox("Subject", evil, "a@b.pl"),
        lambda: headers.parameter("Subject", evil),
    ):
        with pytest.raises(InvalidJob, match=r"^Subject: contains a line break or control"):
            call()


@pytest.mark.parametrize("address", ["a b@c.pl", "a@b.pl>", "<a@b.pl", "ż@b.pl", "a@b.pl\r\n"])
def test_an_address_must_be_a_plain_mailbox(address: str) -> None:
    with pytest.raises(InvalidJob, match="To: the address"):
        headers.mailbox("To", "x", address)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("FV-2026-11-0042.pdf", ["filename=FV-2026-11-0042.pdf"]),
        ("a b.pdf", ['filename="a b.pdf"']),
        ('a"b\\.pdf', ['filename="a\\"b\\\\.pdf"']),
        ("łódź.pdf", ["filename*=utf-8''%C5%82%C3%B3d%C5%BA.pdf"]),
        ("=?utf-8?q?x?=", ["filename*=utf-8''%3D%3Futf-8%3Fq%3Fx%3F%3D"]),
    ],
)
def test_parameters(value: str, expected: list[str]) -> None:
    assert headers.parameter("filename", value) == expected


@pytest.mark.parametrize(
    "filename",
    [BCC_Q, PHISHING_B, "Faktura " + "łódź " * 40 + ".pdf", "x" * 200, 'a"; filename="evil.exe'],
)
def test_a_filename_reaches_the_client_exactly(filename: str) -> None:
    head = headers.with_parameters(
        "Content-Disposition", "attachment", headers.parameter("filename", filename)
    )
    assert_well_formed(head)
    message = parse("Content-Type: application/pdf\r\n" + head)
    assert filename_of(message) == filename
    assert message.get_content_disposition() == "attachment"  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", ["f", "fi", "fil", "file", "filen"])
def test_percent_triplets_are_never_split_across_continuations(key: str) -> None:
    pieces = headers.parameter(key, "łódź" * 30)
    assert len(pieces) > 2
    values = [piece.split("=", 1)[1] for piece in pieces]
    assert values[0].startswith("utf-8''")
    assert "".join(values).removeprefix("utf-8''") == "%C5%82%C3%B3d%C5%BA" * 30
    assert all(not re.search(r"%.?$", value) for value in values)
    assert all(len(piece) <= headers.MAX_LINE - 2 for piece in pieces)


def test_an_empty_subject_is_an_empty_field() -> None:
    assert headers.unstructured("Subject", "") == "Subject:\r\n"


def test_a_token_longer_than_a_line_stays_whole() -> None:
    url = "<https://mail.lucid.example/u/" + "A" * 120 + ">"
    assert headers.fold("List-Unsubscribe", [url]) == f"List-Unsubscribe: {url}\r\n"
