"""A long byte string cut at line ends, for work done a slice at a time.

A regular expression or a replace over a whole 13 MB message is one C call that holds the
GIL for hundreds of milliseconds: run in a thread, it still stops the event loop for that
long. Over slices of 64 KB, each call is short, and the loop runs between them.
"""

from __future__ import annotations

from collections.abc import Iterator

SLICE_BYTES = 64 * 1024


def line_slices(data: bytes, size: int = SLICE_BYTES) -> Iterator[bytes]:
    """`data` in consecutive pieces of about `size` bytes, each but the last ending just
    after a LF, so that no CR LF pair and no line is ever split (a line longer than `size`
    is one piece)."""
    start, length = 0, len(data)
    while start < length:
        if length - start <= size:
            yield data[start:]
            return
        cut = data.rfind(b"\n", start, start + size)
        if cut < 0:
            cut = data.find(b"\n", start + size)
            if cut < 0:
                yield data[start:]
                return
        yield data[start : cut + 1]
        start = cut + 1
