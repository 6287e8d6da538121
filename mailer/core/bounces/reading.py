"""What one report may cost, and the bounded reading of its MIME parts.

A report's first MAX_READ_BYTES and MAX_LINES are read, lines are cut at MAX_LINE_BYTES (a
base64 or quoted-printable part's too, once decoded), a header field keeps MAX_HEADER_CHARS,
and a report of more than MAX_PARTS parts, nested deeper than MAX_DEPTH, or naming more than
MAX_RECIPIENTS recipients is `unparseable`. Every regular expression of the classifier runs
in time linear in what it reads. flufl.bounce (the last fallback) has patterns that are not
linear on hostile lines: the bounds keep what it sees small, and the worker classifies in a
process of its own, within a time limit (mailer/worker/classifiers.py).
"""

from __future__ import annotations

import base64
import codecs
import quopri
import re
from collections.abc import Iterator
from email.message import Message
from email.parser import HeaderParser
from email.policy import Compat32
from functools import cached_property
from html import unescape

from mailer.core.return_paths import PREFIX, TOKEN_LENGTH, find_tokens

# The 718 real reports of the flufl.bounce and sisimai corpora have at most 74 KB, 1,469
# lines, lines of 1,242 characters, header fields of 1,779, 17 parts, nested 7 deep (DSN
# field blocks counted), and a handful of recipients: none is cut.
MAX_READ_BYTES = 128 * 1024  # of a report, read; the rest (a returned message's body) is not
MAX_LINE_BYTES = 2_000  # a longer line is cut there
MAX_LINES = 5_000  # of a report (and of a part, decoded), read
MAX_HEADER_CHARS = 8_000  # of one header field's value, kept
MAX_PARTS = 100  # MIME parts, counted by their Content-Type fields before parsing
MAX_DEPTH = 12  # parts within parts, DSN field blocks included
MAX_RECIPIENTS = 50  # recipients one report may name

CONTENT_TYPE = re.compile(rb"^[ \t]*+content-type[ \t]*+:", re.IGNORECASE | re.MULTILINE)
_SLOW_CODECS = frozenset({"punycode"})  # its decoder is quadratic
_BLANK_LINE = re.compile(r"\n[ \t\r]*+\n")
# Possessive quantifiers, and no \s (which spans lines) at a line's start: `^\s*` before a
# word and `-{2,}.*` before a phrase retry every split of a run, quadratic on many blank lines
# or a long line of dashes.
_RETURNED_COPY = re.compile(
    r"^[ \t]*+-{2,}+[^\n]*?(?:original message|copy of|message follows|returned message|"
    r"message headers|unsent message|rfc822|header of the original)|"
    r"^(?:Received|Return-Path):|^(?:Message headers follow|Original message follows)",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED_HEADER = re.compile(r"^[ \t]*+(?:Subject|From|To|Cc|Sent|Date):.*$", re.I | re.M)
_QUOTED_TO = re.compile(r"^[ \t]*+To:.*$", re.I | re.M)
_QUOTE_MARK = re.compile(r"^> ?", re.M)
_EXPLANATION_CHARS = 16_000


_HTML_HIDDEN = ("style", "script", "head")
_HTML_TAG = re.compile(r"<[^<>]{0,2000}>")
_HTML_BREAK = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d)\b[^<>]{0,2000}>", re.I)


def _html_text(html: str) -> str:
    """An HTML report's words: what it hides (styles, scripts) dropped, its tags made
    spaces or line ends, its entities read."""
    lowered = html.lower()
    kept, at = [], 0
    ahead = {name: lowered.find(f"<{name}") for name in _HTML_HIDDEN}  # next of each, or -1
    while True:  # one pass: each hidden block from its opening to its closing tag
        for name, found in ahead.items():
            if 0 <= found < at:
                ahead[name] = lowered.find(f"<{name}", at)
        starts = [(found, name) for name, found in ahead.items() if found >= 0]
        if not starts:
            kept.append(html[at:])
            break
        start, name = min(starts)
        kept.append(html[at:start])
        end = lowered.find(f"</{name}", start)
        if end < 0:
            break
        at = end + len(name) + 2
    text = _HTML_BREAK.sub("\n", " ".join(kept))
    return unescape(_HTML_TAG.sub(" ", text))


def _unquoted(text: str) -> str:
    """A forwarded report's words without the `> ` its forwarder put before every line."""
    lines = [line for line in text.split("\n") if line.strip()]
    quoted = sum(line.startswith(">") and not line.startswith(">>>") for line in lines)
    return _QUOTE_MARK.sub("", text) if lines and quoted * 2 > len(lines) else text


class _BoundedHeaders(Compat32):
    """compat32, as flufl.bounce expects, keeping MAX_HEADER_CHARS of each field: the stdlib's
    parameter parsing (Content-Type) is quadratic in a field's length."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        return name, value[:MAX_HEADER_CHARS]


POLICY = _BoundedHeaders()


def bounded_lines(data: bytes) -> bytes:
    """`data` to its MAX_LINES-th line, every line cut at MAX_LINE_BYTES; the same object
    when that is all of it."""
    lines = data.split(b"\n", MAX_LINES)
    if len(lines) <= MAX_LINES and max(map(len, lines)) <= MAX_LINE_BYTES:
        return data
    return b"\n".join(line[:MAX_LINE_BYTES] for line in lines[:MAX_LINES])


def head(raw: bytes) -> bytes:
    """What of a report is read: its first MAX_READ_BYTES (to the last line end)."""
    if len(raw) > MAX_READ_BYTES:
        end = raw.rfind(b"\n", 0, MAX_READ_BYTES)
        raw = raw[: end + 1 if end > 0 else MAX_READ_BYTES]
    return raw


def bound_encoded(msg: Message) -> None:
    """A base64 or quoted-printable part bounded as its decoded lines are, then encoded again
    as it was: flufl.bounce reads some parts decoded."""
    for part in msg.walk():
        encoding = header(part, "Content-Transfer-Encoding").lower()
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


_BOUNDARY_LINE = re.compile(rb"^--([^\s-][^\s]{0,69})[ \t]*\r?$", re.MULTILINE)


def mended_boundary(msg: Message, raw: bytes) -> bytes | None:
    """A multipart report whose declared boundary is not the one its body uses (seen in the
    field) made readable: `raw` with the boundary its body uses; None if that is not it."""
    if msg.get_content_maintype() != "multipart" or msg.is_multipart():
        return None
    declared = msg.get_boundary()  # its parameters cost time in a long field: asked last
    if not declared:
        return None
    body = raw.find(b"\n\n")
    found = _BOUNDARY_LINE.search(raw, body if body >= 0 else 0)
    wrong = declared.encode("latin-1", "replace")
    if found is None or found[1] == wrong or wrong not in raw:
        return None
    return raw.replace(wrong, found[1], 1)


def too_deep(msg: Message) -> bool:
    stack = [(msg, 1)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((sub, depth + 1) for sub in payload if isinstance(sub, Message))
    return False


def text_of(value: object) -> str:
    return "" if value is None else str(value)


def header(msg: Message, name: str) -> str:
    """A header field's value on one line ('' where it is missing)."""
    return " ".join(text_of(msg.get(name, "")).split())


def decoded(part: Message) -> str:
    """A leaf part's text, decoded from its transfer encoding and charset."""
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


def field_blocks(part: Message) -> Iterator[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part, however
    the parser left them."""
    payload = part.get_payload()
    if isinstance(payload, str):
        for block in _BLANK_LINE.split(payload):
            if block.strip():
                yield HeaderParser(policy=POLICY).parsestr(block.strip() + "\n")
        return
    for block in payload:
        if isinstance(block, Message):
            yield block
            rest = block.get_payload()
            if isinstance(rest, str) and rest.strip():
                yield from field_blocks(HeaderParser(policy=POLICY).parsestr("\n" + rest))


class Parsed:
    """A report as parsed, with what several readers ask of it worked out once: its parts
    (outside and inside a returned message), the returned message's headers, its words up to
    the copy of our message, and the return-path tokens in it."""

    def __init__(self, msg: Message, raw: bytes, uncut: bytes | None = None) -> None:
        self.msg = msg
        self.raw = raw
        # The report before its lines were cut (where any was): a JSON notification is one
        # long line, and json reads it in linear time.
        self.uncut = uncut
        self._tokens: dict[tuple[tuple[str, ...], bool], tuple[str, ...]] = {}
        self._texts: dict[int, str] = {}

    def text(self, part: Message) -> str:
        """A leaf part's text (`decoded`), worked out once: a long Content-Type costs time
        to read its charset from."""
        key = id(part)
        if key not in self._texts:
            self._texts[key] = decoded(part)
        return self._texts[key]

    @cached_property
    def parts(self) -> list[tuple[str, Message]]:
        """(content type, part) of every part, depth first, not inside a returned message."""
        return list(_parts(self.msg, into_returned=False))

    @cached_property
    def all_parts(self) -> list[tuple[str, Message]]:
        """(content type, part) of every part, inside returned messages too."""
        return list(_parts(self.msg, into_returned=True))

    @cached_property
    def returned(self) -> Message | None:
        """The headers of the message a report returns (message/rfc822 or
        text/rfc822-headers)."""
        for kind, part in self.parts:
            if kind in ("text/rfc822-headers", "text/rfc822-header"):
                text = self.text(part) or text_of(part.get_payload())
                return HeaderParser(policy=POLICY).parsestr(text)
            if kind == "message/rfc822" and part.is_multipart():
                inner = part.get_payload(0)
                if isinstance(inner, Message):
                    return inner
        return None

    @cached_property
    def _prose(self) -> str:
        texts = [
            self.text(part)
            for kind, part in self.parts
            if kind.startswith("text/")
            and kind not in ("text/rfc822-headers", "text/rfc822-header", "text/html")
        ]
        if not any(text.strip() for text in texts):
            texts = [
                _html_text(self.text(part)) for kind, part in self.parts if kind == "text/html"
            ]
        if not any(text.strip() for text in texts) and not self.msg.is_multipart():
            texts = [self.text(self.msg)]  # a multipart whose parts cannot be told apart
        text = _unquoted("\n".join(texts)[:_EXPLANATION_CHARS])
        cut = _RETURNED_COPY.search(text, 1)
        return text[: cut.start()] if cut else text

    @cached_property
    def explanation(self) -> str:
        """The report's words, without the copy of our message it returns."""
        # Our own subject line, quoted back ("New privacy policy"), must not read as a reason.
        return _QUOTED_HEADER.sub("", self._prose)

    @cached_property
    def quoted_recipients(self) -> str:
        """The `To:` lines the report's words quote of our message (where the report names
        its recipient nowhere else)."""
        return "\n".join(found[0] for found in _QUOTED_TO.finditer(self._prose))

    @cached_property
    def _raw_tokens(self) -> tuple[str, ...]:
        # Only around each "b-": the token pattern, case-insensitive, is slow on a long text.
        text = self.raw.decode("latin-1").lower()
        found: dict[str, None] = {}
        at = text.find(PREFIX)
        while at >= 0:
            window = text[max(0, at - 1) : at + len(PREFIX) + TOKEN_LENGTH + 1]
            found.update(dict.fromkeys(find_tokens(window)))
            at = text.find(PREFIX, at + 1)
        return tuple(found)

    def tokens(self, *extra: str, returned: bool = True) -> tuple[str, ...]:
        """The `b-<token>@` candidates, most trustworthy place first: the report's own
        envelope headers, `extra`, the returned message's envelope sender, then anywhere."""
        key = (extra, returned)
        if key not in self._tokens:
            self._tokens[key] = self._find_tokens(extra, returned)
        return self._tokens[key]

    def _find_tokens(self, extra: tuple[str, ...], returned: bool) -> tuple[str, ...]:
        places = [
            header(self.msg, name)
            for name in ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
        ]
        places.extend(extra)
        if returned and self.returned is not None:
            places.append(header(self.returned, "Return-Path"))
        found: dict[str, None] = {}
        for place in places:
            found.update(dict.fromkeys(find_tokens(place)))
        found.update(dict.fromkeys(self._raw_tokens))
        return tuple(found)


def _parts(msg: Message, *, into_returned: bool) -> Iterator[tuple[str, Message]]:
    kind = msg.get_content_type()
    yield kind, msg
    if not msg.is_multipart() or (not into_returned and kind == "message/rfc822"):
        return
    payload = msg.get_payload()
    for sub in payload if isinstance(payload, list) else ():
        if isinstance(sub, Message):
            yield from _parts(sub, into_returned=into_returned)
