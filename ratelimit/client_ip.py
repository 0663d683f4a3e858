"""Decides the client IP of a request, once, for the whole project, and the network it counts as.

``X-Forwarded-For`` is believed only as far as configured trusted proxies vouch for it
(``CLIENT_IP_TRUSTED_PROXY_COUNT`` or ``CLIENT_IP_TRUSTED_PROXIES``); by default it is
ignored and the peer address is the client.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What a request with no usable peer address (a Unix socket with no proxy header) counts as.
UNKNOWN_CLIENT = "0.0.0.0"


def client_ip(request: HttpRequest) -> str:
    """The address of the client that sent ``request``, as stored on its jobs."""
    peer = parse_ip(str(request.META.get("REMOTE_ADDR") or ""))
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR") or "")
    # Nearest hop last: each proxy appends the address it received the request from.
    chain = [parse_ip(entry) for entry in forwarded.split(",") if entry.strip()] + [peer]
    hops = settings.CLIENT_IP_TRUSTED_PROXY_COUNT
    trusted = _trusted_networks(tuple(settings.CLIENT_IP_TRUSTED_PROXIES))
    if hops:
        # A fixed chain of proxies: the client is the entry the outermost one appended.
        start = max(0, len(chain) - 1 - hops)
    elif trusted:
        # Walk left only while the hop that wrote the entry is one of ours; the first
        # address a trusted proxy did not write is as far as anything can be believed.
        start = len(chain) - 1
        while start > 0 and _is_trusted(chain[start], trusted):
            start -= 1
    else:
        start = len(chain) - 1
    # An unparsable entry is never an identity: fall back to the nearest real address after it.
    for address in chain[start:]:
        if address is not None:
            return str(address)
    return UNKNOWN_CLIENT


def sent_by_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the peer is a proxy of ours, so that headers it sets (``X-Request-ID``) may be believed."""
    if settings.CLIENT_IP_TRUSTED_PROXY_COUNT:
        # Count mode says every request comes through our proxies.
        return True
    peer = parse_ip(str(request.META.get("REMOTE_ADDR") or ""))
    return _is_trusted(peer, _trusted_networks(tuple(settings.CLIENT_IP_TRUSTED_PROXIES)))


def client_network(ip: str) -> str:
    """The key that limits and usage count a client under: IPv4 addresses as they are, IPv6
    addresses as their ``CLIENT_IP_IPV6_PREFIX`` network, since one host usually holds a
    whole /64 and could otherwise rotate through it."""
    address = parse_ip(ip)
    if address is None:
        return UNKNOWN_CLIENT
    if address.version == 4:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/{settings.CLIENT_IP_IPV6_PREFIX}", strict=False))


def parse_ip(value: str) -> IPAddress | None:
    """An address from a header entry or ``REMOTE_ADDR``; ports, brackets and IPv6 zones are
    dropped and IPv4-mapped IPv6 addresses become IPv4. None if it is not an address."""
    text = value.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise_network(value: str) -> str:
    """``value`` (an address or a CIDR) in the one spelling the blocklist stores: a plain
    address for a single host, else ``network/prefix``. Raises ValueError if invalid."""
    network = ipaddress.ip_network(value.strip(), strict=False)
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


@functools.lru_cache(maxsize=8)
def _trusted_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def _is_trusted(address: IPAddress | None, trusted: Sequence[IPNetwork]) -> bool:
    return address is not None and any(address in network for network in trusted)
