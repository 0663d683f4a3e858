"""One webhook POST over a connection pinned to an address that passed the SSRF check.

The name is resolved once, every address is checked, and the socket is opened to the
checked address itself (with the original name as Host and TLS server name), so a DNS
answer that changes between check and connect (rebinding) cannot redirect the request.
Redirects are never followed. One deadline covers the whole attempt: the lookup, connect,
TLS handshake, request and every byte of the response, so a receiver that drips its answer
is cut at the deadline. Plain Python, no Django.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from typing import Any

from webhooks.addresses import Destination, Resolver, check_destination

MAX_RESPONSE_BYTES = 4096


class DeliveryFailed(Exception):
    """The request did not produce an HTTP response (connection, TLS or timeout error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _DeadlineMixin:
    """Every send and receive waits at most until ``deadline`` (``time.monotonic``), in total."""

    deadline: float

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("The attempt's deadline passed.")
        self.settimeout(remaining)  # type: ignore[attr-defined]

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self._arm()
        return super().recv_into(*args, **kwargs)  # type: ignore[misc,no-any-return]

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self._arm()
        super().sendall(*args, **kwargs)  # type: ignore[misc]


class DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


class _PinnedConnectionMixin:
    """Connects to ``pinned_address``, the one that was checked, whatever ``host`` resolves to now."""

    pinned_address: str
    port: int
    deadline: float

    def _open_pinned_socket(self) -> DeadlineSocket:
        family = socket.AF_INET6 if ipaddress.ip_address(self.pinned_address).version == 6 else socket.AF_INET
        sock = DeadlineSocket(family, socket.SOCK_STREAM)
        sock.deadline = self.deadline
        try:
            sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
            sock.connect((self.pinned_address, self.port))
        except BaseException:
            sock.close()
            raise
        return sock


class PinnedHTTPConnection(_PinnedConnectionMixin, http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = self._open_pinned_socket()


class PinnedHTTPSConnection(_PinnedConnectionMixin, http.client.HTTPSConnection):
    def connect(self) -> None:
        context = ssl.create_default_context()
        context.sslsocket_class = DeadlineSSLSocket
        raw = self._open_pinned_socket()
        # The handshake runs inside wrap_socket, under the raw socket's timeout: what is left.
        raw.settimeout(max(self.deadline - time.monotonic(), 0.001))
        # Certificate and SNI are checked against the name in the URL, not the pinned address.
        tls = context.wrap_socket(raw, server_hostname=self.host)
        tls.deadline = self.deadline  # type: ignore[attr-defined]
        self.sock = tls


def post(
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    dns_timeout: float,
    allow_http: bool,
    allow_private: bool,
    resolve: Resolver | None = None,
) -> int:
    """POSTs ``body`` within ``timeout`` seconds in all (the lookup within at most ``dns_timeout``
    of them); returns the status of the first response, 3xx included (never followed).

    Raises ``ForbiddenDestination`` before any connection when the URL or an address it
    resolves to is refused, ``DeliveryFailed`` when no response came back in time.
    """
    deadline = time.monotonic() + timeout
    try:
        destination = check_destination(
            url,
            allow_http=allow_http,
            allow_private=allow_private,
            timeout=min(dns_timeout, timeout),
            resolve=resolve,
        )
    except TimeoutError as error:
        raise DeliveryFailed("dns_error", f"The host name did not resolve in time: {error}.") from None
    except OSError as error:
        raise DeliveryFailed("dns_error", f"The host name did not resolve: {error}.") from None
    errors: list[DeliveryFailed] = []
    for address in destination.addresses:
        try:
            return _post_to(destination, address, body, headers, deadline)
        except TimeoutError:
            errors.append(DeliveryFailed("timeout", f"No full answer from {address} within {timeout:g} s."))
        except (OSError, http.client.HTTPException) as error:
            errors.append(DeliveryFailed("connection_error", f"{address}: {error}"))
    # check_destination never returns an empty address list, so there is an error to raise.
    raise errors[-1]


def _post_to(
    destination: Destination,
    address: str,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
) -> int:
    connection_class = PinnedHTTPSConnection if destination.scheme == "https" else PinnedHTTPConnection
    connection = connection_class(destination.host, destination.port)
    connection.pinned_address = address
    connection.deadline = deadline
    try:
        connection.request("POST", destination.target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return response.status
    finally:
        connection.close()
