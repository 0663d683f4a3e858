"""Which network destinations a webhook may reach: public addresses only (SSRF safety).

Plain Python, no Django: the submit check and the delivery transport share these rules.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Ranges that Python 3.11's ``is_global`` still calls global. IPv4-compatible (::/96) and
# NAT64 (64:ff9b::/96) addresses need no entry: they lie in ::/8, which ``is_reserved`` covers.
_EXTRA_FORBIDDEN = tuple(
    ipaddress.ip_network(net)
    for net in (
        "100.64.0.0/10",  # carrier-grade NAT
        "192.0.0.0/24",  # IETF protocol assignments
    )
)
_FLAGS = ("unspecified", "loopback", "link_local", "multicast", "site_local", "private", "reserved")


# What a client is told about an address it did not write itself: never the address.
NON_PUBLIC_ADDRESS = "The webhook URL resolves to a non-public address."
# One DNS label in its ASCII form (underscores appear in real host names).
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class ForbiddenDestination(Exception):
    """The URL may not be called: wrong scheme, malformed, or an address of our own networks.

    ``str()`` has the details for the log; ``public_message`` is what a client may read.
    """

    def __init__(self, message: str, *, public_message: str | None = None) -> None:
        super().__init__(message)
        self.public_message = public_message or message


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    target: str  # path and query, what goes on the request line
    addresses: tuple[str, ...]


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host string spells, including the inet_aton forms browsers and libc accept:
    ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``. None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_is_number(part) for part in parts):
        return None
    try:
        numbers = [int(part, 8) if _is_octal(part) else int(part, 0) for part in parts]
    except ValueError:
        raise ForbiddenDestination(f"{host!r} is not a valid IPv4 address.") from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise ForbiddenDestination(f"{host!r} is not a valid IPv4 address.")
    value = last
    for index, number in enumerate(reversed(head)):
        value += number << (8 * (4 - len(head) + index))
    return ipaddress.IPv4Address(value)


def _is_octal(part: str) -> bool:
    return len(part) > 1 and part.startswith("0") and part[1:].isdigit()


def _is_number(part: str) -> bool:
    lowered = part.lower()
    if lowered.startswith("0x"):
        return all(c in "0123456789abcdef" for c in lowered[2:])
    return part.isdigit()


def forbidden_reason(address: IPAddress) -> str | None:
    """Why this address is not a public unicast one (None when it is)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"{address} is an IPv4-mapped address."
        # A 6to4 relay would forward to the IPv4 address inside.
        if address.sixtofour is not None and forbidden_reason(address.sixtofour):
            return f"{address} embeds the forbidden address {address.sixtofour}."
    for flag in _FLAGS:
        if getattr(address, f"is_{flag}", False):
            return f"{address} is in the {flag.replace('_', '-')} range."
    if any(address in net for net in _EXTRA_FORBIDDEN if net.version == address.version):
        return f"{address} is in a special-purpose range."
    if not address.is_global:
        return f"{address} is not a public address."
    return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# A lookup that hangs (a name server that never answers) is abandoned at its deadline and
# lingers here until the system resolver gives up; the pool bounds how many may linger.
_LOOKUPS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook-dns")


def resolve_within(host: str, port: int, *, timeout: float, resolve: Resolver | None = None) -> list[str]:
    """The addresses of ``host``, or ``TimeoutError`` once ``timeout`` seconds have passed;
    ``OSError`` when it does not resolve."""
    lookup = _LOOKUPS.submit(resolve or system_resolver, host, port)
    try:
        return lookup.result(timeout=max(timeout, 0.0))
    except TimeoutError:
        lookup.cancel()
        raise TimeoutError(f"{host} did not resolve within {timeout:g} s") from None


def parse_destination(url: str, *, allow_http: bool) -> Destination:
    """The parts of a webhook URL, checked without any lookup: scheme, a well-formed host (or an
    allowed address literal) and port. Its ``addresses`` hold the literal's address, or none."""
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError as error:
        raise ForbiddenDestination(f"Not a valid URL: {error}.") from None
    allowed_schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed_schemes:
        raise ForbiddenDestination(f"The URL must use {' or '.join(allowed_schemes)}.")
    host = (hostname or "").rstrip(".")
    if not host:
        raise ForbiddenDestination("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        # "https://public@10.0.0.1" style URLs exist to mislead readers; we send no credentials.
        raise ForbiddenDestination("The URL may not carry a user name or password.")
    if port == 0:
        raise ForbiddenDestination("The URL's port must be 1 to 65535.")
    literal = parse_ip_literal(host)
    if literal is None:
        host = _host_name(host)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return Destination(
        scheme=parts.scheme,
        host=host,
        port=port or (443 if parts.scheme == "https" else 80),
        target=target,
        addresses=() if literal is None else (str(literal),),
    )


def _host_name(host: str) -> str:
    """``host`` in its ASCII (IDNA) spelling, if it is a name DNS can hold."""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ForbiddenDestination("The URL's host is not a valid host name.") from None
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in ascii_host.split(".")):
        raise ForbiddenDestination("The URL's host is not a valid host name.")
    return ascii_host


def check_destination(
    url: str,
    *,
    allow_http: bool,
    allow_private: bool,
    timeout: float,
    resolve: Resolver | None = None,
) -> Destination:
    """Parses, resolves (within ``timeout`` seconds) and checks a webhook URL; every address it
    resolves to must be allowed.

    Raises ``ForbiddenDestination``; ``OSError`` when the name does not resolve, and
    ``TimeoutError`` (an ``OSError``) when it does not resolve in time.
    """
    destination = parse_destination(url, allow_http=allow_http)
    addresses = list(destination.addresses) or resolve_within(
        destination.host, destination.port, timeout=timeout, resolve=resolve
    )
    if not addresses:
        raise OSError(f"{destination.host} has no address")
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(ipaddress.ip_address(address.split("%")[0]))
            if reason:
                raise ForbiddenDestination(
                    f"{destination.host} resolves to a forbidden address: {reason}",
                    public_message=NON_PUBLIC_ADDRESS,
                )
    return replace(destination, addresses=tuple(addresses))
