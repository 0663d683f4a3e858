"""Webhook URLs at submit: malformed hosts are a 400 with a stable code, a lookup happens only
for an admitted client and within a deadline, and no answer names an address the client did
not write."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import GenerationJob
from ratelimit.models import BlockedNetwork
from webhooks import addresses
from webhooks.transport import DeliveryFailed, post

pytestmark = pytest.mark.django_db

PUBLIC_ADDRESS = "93.184.215.14"


def submit(api_client: APIClient, webhook_url: str, **headers: str) -> Any:
    body = {"prompt": "a paper boat", "width": 64, "height": 64, "steps": 2, "webhook_url": webhook_url}
    return api_client.post("/api/v1/jobs", body, format="json", **headers)


class SilentNameServer:
    """A UDP socket on loopback that reads DNS queries and never answers them, until closed:
    then it answers each asker with junk, so that no lookup thread outlives the test."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.address = self.socket.getsockname()
        self.askers: list[tuple[str, int]] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        self.socket.settimeout(0.2)
        while not self._closed.is_set():
            try:
                _query, asker = self.socket.recvfrom(512)
            except TimeoutError:
                continue
            self.askers.append(asker)

    def resolve(self, host: str, port: int) -> list[str]:
        """A resolver that asks this server, as the system's would, and waits for its answer."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
                bytes([len(label)]) + label.encode() for label in host.split(".")
            )
            client.sendto(query + b"\x00\x00\x01\x00\x01", self.address)
            client.recv(512)  # no timeout: only the caller's deadline ends this wait
        raise OSError(f"{host}: the name server answered junk")

    def close(self) -> None:
        self._closed.set()
        self._reader.join()
        for asker in self.askers:
            self.socket.sendto(b"\x00", asker)
        self.socket.close()


@pytest.fixture
def silent_name_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentNameServer]:
    server = SilentNameServer()
    monkeypatch.setattr(addresses, "system_resolver", server.resolve)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize(
    "url",
    [
        f"https://{'a' * 64}.example/hook",  # a label over 63 characters
        f"https://{'a.' * 127}example/hook",  # a name over 253 characters
        "https://hooks..example/hook",  # an empty label
        "https://.example/hook",
        "https://xn--a.example/hook",  # an IDNA label that decodes to nothing valid
        "https://ex\u00adample\u200b.com\u3002\u3002/hook",
        "https://exa mple.com/hook",
        "https://exa%00mple.com/hook",
        "https://hooks.example:99999/hook",  # a port out of range
        "https://hooks.example:0/hook",
        "https://hooks.example:-1/hook",
        "https://hooks.example:8x/hook",
        "https://[::1/hook",  # an unclosed IPv6 literal
        "https://[hooks.example]/hook",
        "https://999.0.0.1/hook",
        "https:///hook",
    ],
)
def test_a_malformed_webhook_host_is_a_400_with_a_stable_code(api_client: APIClient, url: str) -> None:
    response = submit(api_client, webhook_url=url)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "webhook_url_forbidden"
    assert not GenerationJob.objects.exists()


def internal_names_resolver(host: str, port: int) -> list[str]:
    """``internal.example`` is a name of the private network; other names resolve for real."""
    if host == "internal.example":
        return ["10.1.2.3", "fd00::5"]
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


@pytest.mark.parametrize("url", ["https://localhost/hook", "https://internal.example/hook"])
def test_a_name_of_our_own_networks_is_refused_without_naming_its_address(
    api_client: APIClient, monkeypatch: pytest.MonkeyPatch, url: str, caplog: Any
) -> None:
    monkeypatch.setattr(addresses, "system_resolver", internal_names_resolver)

    response = submit(api_client, webhook_url=url)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (
        error["message"]
        == "This webhook URL is not allowed. The webhook URL resolves to a non-public address."
    )
    body = response.content.decode()
    assert not any(address in body for address in ("127.0.0.1", "::1", "10.1.2.3", "fd00::5"))
    # The address is for the operators: the log has it.
    assert any(
        "event=webhook_url_refused" in record.getMessage()
        and any(a in record.getMessage() for a in ("127.0.0.1", "::1", "10.1.2.3"))
        for record in caplog.records
    )


def test_a_name_server_that_never_answers_costs_a_submit_the_dns_deadline_only(
    api_client: APIClient, settings: Any, silent_name_server: SilentNameServer
) -> None:
    settings.WEBHOOK_DNS_TIMEOUT_SECONDS = 0.5

    response = submit(api_client, webhook_url="https://slow-dns.example/hook")

    # The resolver waits forever: an answer at all is the deadline at work.
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "webhook_url_forbidden"
    assert "did not resolve in time" in response.json()["error"]["message"]
    assert silent_name_server.askers
    assert not GenerationJob.objects.exists()


def test_a_delivery_to_a_name_server_that_never_answers_fails_at_its_deadline(
    silent_name_server: SilentNameServer,
) -> None:
    with pytest.raises(DeliveryFailed) as failure:
        post(
            url="https://slow-dns.example/hook",
            body=b"{}",
            headers={},
            timeout=2.0,
            dns_timeout=0.5,
            allow_http=False,
            allow_private=False,
        )

    assert failure.value.code == "dns_error"
    assert silent_name_server.askers


class CountingResolver:
    def __init__(self) -> None:
        self.hosts: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.hosts.append(host)
        return [PUBLIC_ADDRESS]


@pytest.fixture
def counting_resolver(monkeypatch: pytest.MonkeyPatch) -> CountingResolver:
    resolver = CountingResolver()
    monkeypatch.setattr(addresses, "system_resolver", resolver)
    return resolver


def test_a_client_over_its_rate_limit_never_makes_the_service_look_a_name_up(
    api_client: APIClient, settings: Any, counting_resolver: CountingResolver
) -> None:
    settings.SUBMIT_RATE = "1/m"

    first = submit(api_client, webhook_url="https://first.example/hook")
    second = submit(api_client, webhook_url="https://second.example/hook")

    assert (first.status_code, second.status_code) == (202, 429)
    assert counting_resolver.hosts == ["first.example"]


def test_a_blocked_client_never_makes_the_service_look_a_name_up(
    api_client: APIClient, counting_resolver: CountingResolver
) -> None:
    BlockedNetwork.objects.create(network="127.0.0.1", reason="test")

    response = submit(api_client, webhook_url="https://blocked.example/hook")

    assert response.status_code == 403
    assert counting_resolver.hosts == []
