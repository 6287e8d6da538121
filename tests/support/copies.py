"""What recipients got: copies per address at the relay, and the figures a fault test states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tests.support.smtp import Received


def copies(received: Iterable[Received]) -> Counter[str]:
    found: Counter[str] = Counter()
    for message in received:
        found.update(message.rcpt_tos)
    return found


def figures(received: Iterable[Received], expected: Iterable[str]) -> str:
    """`N recipients: L lost, D duplicates (extra copies)`, for assert messages."""
    counts = copies(received)
    wanted = list(expected)
    lost = sum(1 for address in wanted if counts[address] == 0)
    extra = sum(count - 1 for count in counts.values() if count > 1)
    return f"{len(wanted)} recipients: {lost} lost, {extra} duplicates"
