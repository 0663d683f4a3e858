"""The SSRF address policy on its own: which addresses and spellings a webhook may reach."""

from __future__ import annotations

import ipaddress

import pytest

from webhooks.addresses import ForbiddenDestination, check_destination, forbidden_reason, parse_ip_literal


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("169.254.43518", "169.254.169.254"),
        ("::1", "::1"),
    ],
)
def test_numeric_host_spellings_parse_to_the_address_a_resolver_would_use(
    spelling: str, address: str
) -> None:
    assert parse_ip_literal(spelling) == ipaddress.ip_address(address)


@pytest.mark.parametrize("name", ["example.com", "hooks.example.org", "1.2.3.4.5", "0x1g"])
def test_names_are_not_taken_for_addresses(name: str) -> None:
    assert parse_ip_literal(name) is None


@pytest.mark.parametrize("spelling", ["256.1.1.1", "4294967296", "08.1.1.1", "0x"])
def test_malformed_numeric_hosts_are_refused(spelling: str) -> None:
    with pytest.raises(ForbiddenDestination):
        parse_ip_literal(spelling)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "::1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "fe80::1",
        "100.64.0.1",  # carrier-grade NAT
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "192.0.0.8",
        "fc00::1",
        "fec0::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:8.8.8.8",
        "::127.0.0.1",  # IPv4-compatible
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
    ],
)
def test_addresses_of_our_own_networks_are_forbidden(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "2002:808:808::1"])
def test_public_unicast_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_a_name_is_refused_when_any_of_its_addresses_is_forbidden() -> None:
    with pytest.raises(ForbiddenDestination, match=r"10\.0\.0\.1"):
        check_destination(
            "https://mixed.example/hook",
            allow_http=False,
            allow_private=False,
            timeout=5,
            resolve=lambda host, port: ["93.184.215.14", "10.0.0.1"],
        )


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example/",
        "ftp://hooks.example/",
        "https://user:pw@hooks.example/",
        "https:///path",
        "hooks",
    ],
)
def test_urls_other_than_plain_https_are_refused(url: str) -> None:
    with pytest.raises(ForbiddenDestination):
        check_destination(
            url, allow_http=False, allow_private=False, timeout=5, resolve=lambda host, port: ["8.8.8.8"]
        )


def test_http_is_allowed_only_when_the_setting_says_so() -> None:
    destination = check_destination(
        "http://hooks.example:8080/in?x=1",
        allow_http=True,
        allow_private=False,
        timeout=5,
        resolve=lambda h, p: ["8.8.8.8"],
    )

    assert (destination.host, destination.port, destination.target) == ("hooks.example", 8080, "/in?x=1")
