"""Where a webhook may go: the endpoint URLs accepted at registration, and the addresses a
delivery may connect to (the SSRF guard).

An endpoint URL is `https://host[:port]/path[?query]`: no user or password, no fragment, no
space or control character, at most MAX_URL_LENGTH characters, a host that is a DNS name or
an IP address written the usual way (`127.1`, `2130706433` and `0177.0.0.1` are refused: a
resolver reads them as addresses that no one reviewing the URL would see).

An address is refused unless it is global unicast: loopback, private, shared (CGNAT),
link-local (the cloud metadata service at 169.254.169.254 among them), multicast, reserved,
unspecified, unique-local IPv6, and IPv6 forms that embed one of those (IPv4-mapped
`::ffff:127.0.0.1`, 6to4, Teredo) are all refused, unless the operators' allow-list
(`[webhooks] allow`) names it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_ALLOWED_CHARACTERS = re.compile(r"[\x21-\x7e]+")


class InvalidEndpoint(ValueError):
    """A URL that is not a webhook endpoint; the message says why, without the URL."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    host: str  # lowercase; an IPv6 address without its brackets
    port: int


def check_url(url: str) -> Endpoint:
    if not isinstance(url, str) or not url:
        raise InvalidEndpoint("no URL")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidEndpoint(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not _ALLOWED_CHARACTERS.fullmatch(url):
        raise InvalidEndpoint(
            "the URL has a space, a control character (CR, LF, …) or a character outside"
            " ASCII (write an international domain name in its xn-- form)"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidEndpoint("the URL's [host] is not an IPv6 address") from None
    if parts.scheme.lower() != "https":
        raise InvalidEndpoint("the URL must start with https://")
    if "@" in parts.netloc:
        raise InvalidEndpoint("the URL must not carry a user name or password")
    if parts.fragment or url.endswith("#"):
        raise InvalidEndpoint("the URL must not have a #fragment")
    if "\\" in url:
        raise InvalidEndpoint("the URL must not have a backslash")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidEndpoint("the URL has no host")
    try:
        port = parts.port if parts.port is not None else 443
    except ValueError:
        raise InvalidEndpoint("the URL has an invalid port") from None
    if port == 0:
        raise InvalidEndpoint("the URL has an invalid port")
    _check_host(host, bracketed=parts.netloc.startswith("["))
    return Endpoint(url=url, host=host, port=port)


def _check_host(host: str, *, bracketed: bool) -> None:
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidEndpoint("the URL's [host] is not an IPv6 address") from None
        return
    labels = host.split(".")
    if all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidEndpoint(
                "the URL's host is an IP address in an unusual form: write a.b.c.d"
            ) from None
        return
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidEndpoint("the URL's host is not a valid DNS name")


def literal_address(host: str) -> Address | None:
    """The address a host names itself, when it is an IP address."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded(address: Address) -> Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _kind(address: Address) -> str | None:
    """What makes an address off limits, or None for a global unicast address."""
    for name, test in (
        ("the unspecified address", address.is_unspecified),
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("a reserved address", address.is_reserved),
        ("a private address", address.is_private),
    ):
        if test:
            return name
    if not address.is_global:
        return "an address that is not global"
    return None


def refusal(address: Address, allow: Sequence[Network]) -> str | None:
    """Why a delivery may not connect to `address`, or None when it may."""
    inner = _embedded(address)
    for network in allow:
        if address in network or (inner is not None and inner in network):
            return None
    if inner is not None:
        kind = _kind(inner)
        if kind is not None:
            return f"{address} embeds {inner}, {kind}"
    kind = _kind(address)
    if kind is not None:
        return f"{address} is {kind}"
    return None


def networks(texts: Sequence[str]) -> list[Network]:
    """The allow-list's networks; ValueError names the first that is not one."""
    found: list[Network] = []
    for text in texts:
        try:
            found.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
    return found
