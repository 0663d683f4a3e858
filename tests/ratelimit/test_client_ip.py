from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory

from ratelimit.client_ip import client_ip, client_network


def request_from(peer: str, forwarded_for: str | None = None) -> Any:
    extra = {"REMOTE_ADDR": peer}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return RequestFactory().get("/", **extra)


def test_forwarded_for_is_ignored_when_no_proxy_is_trusted() -> None:
    assert client_ip(request_from("198.51.100.7", "203.0.113.9")) == "198.51.100.7"


def test_forwarded_for_from_an_untrusted_peer_is_ignored(settings: Any) -> None:
    settings.CLIENT_IP_TRUSTED_PROXIES = ["10.0.0.0/8"]

    assert client_ip(request_from("198.51.100.7", "203.0.113.9")) == "198.51.100.7"


def test_trusted_proxy_network_vouches_for_the_address_it_appended(settings: Any) -> None:
    settings.CLIENT_IP_TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]

    assert client_ip(request_from("10.0.0.5", "203.0.113.9")) == "203.0.113.9"
    # A client that sends its own header only adds entries left of the one our proxy wrote.
    assert client_ip(request_from("10.0.0.5", "1.1.1.1, 203.0.113.9")) == "203.0.113.9"
    # Two trusted hops are walked through.
    assert client_ip(request_from("fd00::2", "1.1.1.1, 203.0.113.9, 10.0.0.6")) == "203.0.113.9"


def test_trusted_proxy_count_takes_the_address_the_outermost_proxy_appended(settings: Any) -> None:
    settings.CLIENT_IP_TRUSTED_PROXY_COUNT = 2

    assert client_ip(request_from("10.0.0.5", "9.9.9.9, 203.0.113.9, 10.0.0.6")) == "203.0.113.9"
    assert client_ip(request_from("10.0.0.5", "203.0.113.9")) == "203.0.113.9"


def test_unparsable_forwarded_entry_falls_back_to_the_next_real_address(settings: Any) -> None:
    settings.CLIENT_IP_TRUSTED_PROXY_COUNT = 1

    assert client_ip(request_from("10.0.0.5", "unknown")) == "10.0.0.5"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("203.0.113.9:4711", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
    ],
)
def test_forwarded_entries_lose_ports_brackets_and_ipv4_mapping(
    settings: Any, raw: str, expected: str
) -> None:
    settings.CLIENT_IP_TRUSTED_PROXY_COUNT = 1

    assert client_ip(request_from("10.0.0.5", raw)) == expected


def test_ipv6_clients_are_grouped_by_the_configured_prefix(settings: Any) -> None:
    assert (
        client_network("2001:db8:1:2:aaaa::1")
        == client_network("2001:db8:1:2:ffff::9")
        == "2001:db8:1:2::/64"
    )
    assert client_network("2001:db8:1:3::1") != client_network("2001:db8:1:2::1")
    assert client_network("203.0.113.9") == "203.0.113.9"

    settings.CLIENT_IP_IPV6_PREFIX = 48
    assert client_network("2001:db8:1:3::1") == client_network("2001:db8:1:2::1") == "2001:db8:1::/48"
