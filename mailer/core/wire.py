"""Signed bytes → the DATA section of an SMTP transaction (RFC 5321 §4.5.2).

CR LF line ends, a dot at the start of a line doubled, and the final `.` line: what
aiosmtplib's `data()` would do with two whole-message regular expressions on the event
loop, done here a slice at a time, so that a large message can be made ready in a thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailer.core.lines import SLICE_BYTES, line_slices

_LINE_END = re.compile(rb"\r\n|\n|\r(?!\n)")


@dataclass(frozen=True, slots=True)
class DataSection:
    size: int  # octets of the message itself, as declared with SIZE= (RFC 1870)
    data: bytes  # what follows the 354 reply, up to and including ".\r\n"


def data_section(message: bytes, slice_bytes: int = SLICE_BYTES) -> DataSection:
    pieces: list[bytes] = []
    for piece in line_slices(message, slice_bytes):
        if not piece.count(b"\r") == piece.count(b"\n") == piece.count(b"\r\n"):
            piece = _LINE_END.sub(b"\r\n", piece)  # noqa: PLW2901
        # Every piece starts a line, and after the line ends are made CR LF, every other
        # line start follows a LF.
        piece = piece.replace(b"\n.", b"\n..")  # noqa: PLW2901
        pieces.append(b"." + piece if piece.startswith(b".") else piece)
    if not pieces or not pieces[-1].endswith(b"\r\n"):
        pieces.append(b"\r\n")
    pieces.append(b".\r\n")
    return DataSection(len(message), b"".join(pieces))
