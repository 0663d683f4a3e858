"""One webhook POST over a connection pinned to an address that passed the SSRF check.

The name is resolved once, every address is checked, and the socket is opened to the
checked address itself (with the original name as Host and TLS server name), so a DNS
answer that changes between check and connect (rebinding) cannot redirect the request.
Redirects are never followed. Plain Python, no Django.
"""

from __future__ import annotations

import http.client
import socket
import ssl

from webhooks.addresses import Destination, Resolver, check_destination, system_resolver

MAX_RESPONSE_BYTES = 4096


class DeliveryFailed(Exception):
    """The request did not produce an HTTP response (connection, TLS or timeout error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _PinnedConnectionMixin:
    """Connects to ``pinned_address``, the one that was checked, whatever ``host`` resolves to now."""

    pinned_address: str
    port: int
    timeout: float | None

    def _open_pinned_socket(self) -> socket.socket:
        return socket.create_connection((self.pinned_address, self.port), timeout=self.timeout)


class PinnedHTTPConnection(_PinnedConnectionMixin, http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = self._open_pinned_socket()


class PinnedHTTPSConnection(_PinnedConnectionMixin, http.client.HTTPSConnection):
    def connect(self) -> None:
        context = ssl.create_default_context()
        # Certificate and SNI are checked against the name in the URL, not the pinned address.
        self.sock = context.wrap_socket(self._open_pinned_socket(), server_hostname=self.host)


def post(
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_http: bool,
    allow_private: bool,
    resolve: Resolver = system_resolver,
) -> int:
    """POSTs ``body``; returns the status of the first response, 3xx included (never followed).

    Raises ``ForbiddenDestination`` before any connection when the URL or an address it
    resolves to is refused, ``DeliveryFailed`` when no response came back.
    """
    try:
        destination = check_destination(
            url, allow_http=allow_http, allow_private=allow_private, resolve=resolve
        )
    except OSError as error:
        raise DeliveryFailed("dns_error", f"The host name did not resolve: {error}.") from None
    errors: list[DeliveryFailed] = []
    for address in destination.addresses:
        try:
            return _post_to(destination, address, body, headers, timeout)
        except TimeoutError:
            errors.append(DeliveryFailed("timeout", f"No answer from {address} within {timeout:g} s."))
        except (OSError, http.client.HTTPException) as error:
            errors.append(DeliveryFailed("connection_error", f"{address}: {error}"))
    # check_destination never returns an empty address list, so there is an error to raise.
    raise errors[-1]


def _post_to(
    destination: Destination,
    address: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
) -> int:
    connection_class = PinnedHTTPSConnection if destination.scheme == "https" else PinnedHTTPConnection
    connection = connection_class(destination.host, destination.port, timeout=timeout)
    connection.pinned_address = address
    try:
        connection.request("POST", destination.target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return response.status
    finally:
        connection.close()
