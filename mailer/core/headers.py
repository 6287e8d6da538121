"""Header fields written by our own code: RFC 5322 folding, RFC 2047 encoded-words, RFC 2231
parameters.

Nothing here goes through the standard library's header folding: on Python before 3.11.10 /
3.12.5 (CVE-2024-6923) it decodes an encoded-word found in input and writes the CR LF it held
as real header lines. Here text from input is only ever encoded, never interpreted: text that
merely looks like an encoded-word (`=?…?=`) is encoded like any other, so a client shows it as
written. Control characters, line and paragraph separators are refused (InvalidJob naming the
header), whatever let them through.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from urllib.parse import quote

from mailer.core.addresses import unsafe_for_header
from mailer.errors import InvalidJob

MAX_LINE = 78  # RFC 5322's SHOULD; the hard limit is 998
MAX_WORD = 75  # RFC 2047: an encoded-word is at most 75 characters
_Q_PREFIX, _B_PREFIX, _SUFFIX = "=?utf-8?q?", "=?utf-8?b?", "?="
_OVERHEAD = len(_Q_PREFIX) + len(_SUFFIX)
# RFC 2047 5(3): the characters a Q-encoded word may carry as themselves in any header.
_Q_LITERAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_PRINTABLE_WORD = re.compile(r"[\x21-\x7e]+")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_ATOMS = re.compile(rf"{_ATOM.pattern}(?: {_ATOM.pattern})*")
_QUOTABLE = re.compile(r"[\x20-\x7e]+")
ADDR_SPEC = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_TOKEN = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]+")  # RFC 2045 token, less the specials '%*


def checked(header: str, text: str) -> str:
    """The text, unless it holds what must never reach a header."""
    if unsafe_for_header(text):
        raise InvalidJob(f"{header}: contains a line break or control character")
    return text


def _q(char: str) -> str:
    if char in _Q_LITERAL:
        return char
    if char == " ":
        return "_"
    return "".join(f"={byte:02X}" for byte in char.encode())


def _b_length(size: int) -> int:
    return 4 * -(-size // 3)


def encoded_words(text: str, first: int = MAX_WORD) -> list[str]:
    """`text` as RFC 2047 encoded-words of UTF-8: Q or B, whichever is shorter; the first
    word at most `first` characters, the others at most 75; no character split across words."""
    q_cost = [len(_q(char)) for char in text]
    use_q = sum(q_cost) <= _b_length(len(text.encode()))
    words: list[str] = []
    budget = max(first, _OVERHEAD + 12) - _OVERHEAD
    chunk: list[str] = []
    size = 0  # Q: encoded length so far; B: octets so far
    for index, char in enumerate(text):
        cost = q_cost[index] if use_q else len(char.encode())
        grown = size + cost if use_q else _b_length(size + cost)
        if chunk and grown > budget:
            words.append(_word(chunk, use_q))
            chunk, size, budget = [], 0, MAX_WORD - _OVERHEAD
        chunk.append(char)
        size += cost
    words.append(_word(chunk, use_q))
    return words


def _word(chunk: Sequence[str], use_q: bool) -> str:
    if use_q:
        return _Q_PREFIX + "".join(_q(char) for char in chunk) + _SUFFIX
    return _B_PREFIX + base64.b64encode("".join(chunk).encode()).decode() + _SUFFIX


def fold(name: str, tokens: Sequence[str]) -> str:
    """`Name: tok tok…` with CRLF, folded only at the spaces between tokens, lines <= 78
    where the tokens allow (a single token longer than a line stays whole)."""
    line = f"{name}:"
    lines: list[str] = []
    for token in tokens:
        if len(line) + 1 + len(token) > MAX_LINE and line.strip() != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _tokens(name: str, text: str, plain: re.Pattern[str]) -> list[str]:
    """Text as tokens joined by single spaces: words that may go as themselves, and
    encoded-words for the runs between them (spaces inside a run are encoded with it, since
    a reader drops the whitespace between two adjacent encoded-words, RFC 2047 6.2)."""
    first = MAX_LINE - len(name) - 2
    tokens: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            tokens.extend(encoded_words(" ".join(run), first if not tokens else MAX_WORD))
            run.clear()

    for word in text.split(" "):
        limit = first if not tokens and not run else MAX_LINE - 1
        if "=?" not in word and plain.fullmatch(word) and len(word) <= limit:
            flush()
            tokens.append(word)
        else:
            run.append(word)
    flush()
    return tokens


def unstructured(name: str, text: str) -> str:
    """A Subject-like field: printable ASCII words as they are, the rest encoded."""
    checked(name, text)
    if not text:
        return f"{name}:\r\n"
    return fold(name, _tokens(name, text, _PRINTABLE_WORD))


def phrase(name: str, text: str) -> list[str]:
    """A display name as tokens: atoms, one quoted-string, or atoms and encoded-words."""
    checked(name, text)
    if "=?" not in text and _QUOTABLE.fullmatch(text) and not _ATOMS.fullmatch(text):
        quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) <= MAX_LINE - len(name) - 2:
            return [quoted]
    return _tokens(name, text, _ATOM)


def address(name: str, addr_spec: str) -> str:
    if not ADDR_SPEC.fullmatch(addr_spec) or len(addr_spec) > 320:
        raise InvalidJob(f"{name}: the address is not a plain ASCII mailbox")
    return addr_spec


def mailbox(name: str, display: str | None, addr_spec: str) -> str:
    """`From: Name <user@domain>`, or the bare address when there is no name."""
    addr = address(name, addr_spec)
    if not display:
        return fold(name, [addr])
    return fold(name, [*phrase(name, display), f"<{addr}>"])


def parameter(key: str, value: str) -> list[str]:
    """`key=value`, `key="value"` or, when the value is not plain ASCII or looks encoded,
    RFC 2231 `key*=utf-8''…` (in `key*0*=`, `key*1*=`… continuations when long), each
    short enough to fit a folded line of its own."""
    checked(key, value)
    room = MAX_LINE - 2  # a folded line: space, the parameter, ";"
    if "=?" not in value:
        if _TOKEN.fullmatch(value) and len(key) + 1 + len(value) <= room:
            return [f"{key}={value}"]
        quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if _QUOTABLE.fullmatch(value) and len(key) + 1 + len(quoted) <= room:
            return [f"{key}={quoted}"]
    encoded = quote(value.encode(), safe="")
    single = f"{key}*=utf-8''{encoded}"
    if len(single) <= room:
        return [single]
    pieces: list[str] = []
    start = 0
    while start < len(encoded):
        prefix = f"{key}*{len(pieces)}*=" + ("utf-8''" if not pieces else "")
        end = _percent_boundary(encoded, start + room - len(prefix))
        pieces.append(prefix + encoded[start:end])
        start = end
    return pieces


def _percent_boundary(encoded: str, end: int) -> int:
    """`end`, moved back so that no %XX triplet is cut."""
    if end >= len(encoded):
        return len(encoded)
    cut = encoded.rfind("%", end - 2, end)
    return cut if cut != -1 else end


def with_parameters(name: str, value: str, parameters: Sequence[str]) -> str:
    """`Name: value; a=b; c=d`, folded between parameters when they do not fit one line."""
    tokens = [value, *parameters]
    return fold(name, [token + ";" for token in tokens[:-1]] + tokens[-1:])
