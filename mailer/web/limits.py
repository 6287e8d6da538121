"""Slows down guessing: too many invalid links from one source get 429. Valid links are
never counted nor refused.

A source is an IPv4 address or an IPv6 /64 (one subscriber line gets a whole /64, so keying
by address would let one host take 2^64 names). Behind a reverse proxy the peer is the
proxy: only when it is one of `trusted_proxies` is `X-Forwarded-For` read, and then the
right-most address no trusted proxy owns is the source; everything left of it is the
client's to write and is ignored.

Each source has a token bucket of `limit` attempts refilled over `window` seconds: O(1) work
per attempt and a fixed-size table. When the table is full the source unseen the longest is
forgotten; a forgotten source starts again with a full bucket, so under a flood of fresh
sources the limit weakens for the oldest ones but never costs more time or memory.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Source = tuple[int, int]  # (IP version, address or /64 prefix as an integer)


def source_of(address: Address) -> Source:
    """IPv4 by address, IPv6 by its /64; an IPv4-mapped IPv6 address counts as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is None:
            return (6, int(address) >> 64)
        address = mapped
    return (4, int(address))


def source_text(address: Address) -> str:
    """The source as text, as the console's login limit keys it: `203.0.113.7`, or an IPv6
    address's /64 (`2001:db8:1:2::/64`)."""
    version, value = source_of(address)
    if version == 4:
        return str(ipaddress.IPv4Address(value))
    return f"{ipaddress.IPv6Address(value << 64)}/64"


def parse_address(text: str) -> Address | None:
    """An IP address, or None; inet_pton is the strict parser and ten times ipaddress's speed."""
    text = text.strip().strip("[]")
    for family, kind in _FAMILIES:
        try:
            packed = socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return kind(packed)
    return None


_FAMILIES: tuple[tuple[int, type[Address]], ...] = (
    (socket.AF_INET, ipaddress.IPv4Address),
    (socket.AF_INET6, ipaddress.IPv6Address),
)


class ClientAddresses:
    """Who a request comes from, given the peer of its connection and its headers."""

    def __init__(self, trusted_proxies: Iterable[Network]) -> None:
        self._trusted = tuple(trusted_proxies)

    def _is_trusted(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> Address | None:
        """The client's address; None when the peer is no IP address (e.g. a Unix socket)."""
        address = parse_address(peer) if peer else None
        if address is None or not self._trusted or not self._is_trusted(address):
            return address
        hops = [hop for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            found = parse_address(hop)
            if found is None:
                return address  # a trusted proxy would not write this: use the proxy
            if not self._is_trusted(found):
                return found
            address = found
        return address  # every hop is ours: the left-most one asked


class InvalidAttempts:
    def __init__(
        self,
        limit: int,
        *,
        window: float = 60.0,
        max_sources: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = float(limit)
        self._rate = limit / window  # attempts regained per second
        self._max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[Source, tuple[float, float]] = OrderedDict()  # tokens, at

    def __len__(self) -> int:
        return len(self._buckets)

    def refused(self, source: Source) -> float | None:
        """Record one invalid attempt; the seconds to wait when this source is over the limit,
        else None. A refused attempt costs nothing more: waiting is enough to be let in."""
        now = self._clock()
        bucket = self._buckets.pop(source, None)
        if bucket is None:
            tokens = self._limit
            if len(self._buckets) >= self._max_sources:
                self._buckets.popitem(last=False)  # the source unseen the longest
        else:
            tokens = min(self._limit, bucket[0] + (now - bucket[1]) * self._rate)
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            return max(1.0, math.ceil((1.0 - tokens) / self._rate))
        self._buckets[source] = (tokens - 1.0, now)
        return None
