"""Endpoint URLs accepted at registration, and the addresses a delivery may reach."""

from __future__ import annotations

import ipaddress

import pytest

from mailer.core.webhooks.targets import (
    MAX_URL_LENGTH,
    InvalidEndpoint,
    check_url,
    networks,
    refusal,
)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.acme.example/in", "https://"),
        ("ftp://hooks.acme.example/in", "https://"),
        ("https://user:pw@hooks.acme.example/in", "user name"),
        ("https://user@hooks.acme.example/in", "user name"),
        ("https://hooks.acme.example/in\r\nX-Evil: 1", "control character"),
        ("https://hooks.acme.example/in\n", "control character"),
        ("https://hooks.acme.example/a b", "space"),
        ("https://hooks.acme.example/" + "a" * MAX_URL_LENGTH, "longer than"),
        ("https://hooks.acme.example/in#frag", "fragment"),
        ("https:///in", "no host"),
        ("https://hooks.acme.example:99999/", "port"),
        ("https://hooks.acme.example:0/", "port"),
        ("https://2130706433/", "unusual form"),  # 127.0.0.1 in decimal
        ("https://0177.0.0.1/", "unusual form"),  # octal
        ("https://0x7f.0.0.1/", "unusual form"),  # hexadecimal
        ("https://127.1/", "unusual form"),
        ("https://hooks_acme.example/", "DNS name"),
        ("https://[not-v6]/", "IPv6"),
        ("https://żółw.example/", "ASCII"),
        ("https://hooks.acme.example\\@evil.example/", "user name"),
        ("", "no URL"),
    ],
)
def test_a_url_that_is_not_an_endpoint_is_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(InvalidEndpoint, match=why):
        check_url(url)


def test_the_reason_never_repeats_the_url() -> None:
    with pytest.raises(InvalidEndpoint) as refused:
        check_url("http://secret-token@hooks.acme.example/")
    assert "secret-token" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("https://hooks.acme.example/in?k=1", "hooks.acme.example", 443),
        ("HTTPS://Hooks.Acme.Example:8443/", "hooks.acme.example", 8443),
        ("https://[2001:db8::1]/in", "2001:db8::1", 443),
        ("https://203.0.113.7/in", "203.0.113.7", 443),
    ],
)
def test_an_https_url_is_accepted(url: str, host: str, port: int) -> None:
    endpoint = check_url(url)
    assert (endpoint.url, endpoint.host, endpoint.port) == (url, host, port)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("100.64.0.1", "not global"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address refused, not bound
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "private"),  # unique-local
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "embeds 127.0.0.1, a loopback"),
        ("::ffff:169.254.169.254", "embeds 169.254.169.254, a link-local"),
        ("2002:7f00:1::1", "embeds 127.0.0.1"),  # 6to4
        ("64:ff9b::a00:1", "embeds 10.0.0.1, a private"),  # NAT64
    ],
)
def test_addresses_that_are_not_global_are_refused(address: str, kind: str) -> None:
    why = refusal(ipaddress.ip_address(address), [])
    assert why is not None and kind in why


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "8.8.8.8"])
def test_global_addresses_are_reachable(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), []) is None


def test_the_allow_list_opens_what_it_names_and_nothing_else() -> None:
    allow = networks(["127.0.0.1/32", "10.8.0.0/16"])
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allow) is None
    assert refusal(ipaddress.ip_address("10.8.3.4"), allow) is None
    assert refusal(ipaddress.ip_address("127.0.0.2"), allow) is not None
    assert refusal(ipaddress.ip_address("10.9.0.1"), allow) is not None
    with pytest.raises(ValueError, match="not an IP address"):
        networks(["localhost"])
