"""A delivery attempt has one deadline over lookup, connect, TLS and the whole response, and
one destination host gets at most WEBHOOK_HOST_CONCURRENCY attempts at once; the others wait."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.factories import WebhookDeliveryFactory
from webhooks import services
from webhooks.models import AttemptError, DeliveryStatus, WebhookAttempt, WebhookDelivery
from webhooks.transport import DeliveryFailed, post

pytestmark = pytest.mark.django_db

# Far longer than any deadline here: without one, the attempt would wait for all of it.
DRIP_BYTES = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 60 + b"\r\nContent-Length: 0\r\n\r\n"


class DripFeedReceiver:
    """A real TCP server that reads a request and then sends its answer one byte a second."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.requests = 0
        self.cut_off = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def _serve(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            with connection:
                self.requests += 1
                connection.recv(65536)
                for byte in DRIP_BYTES:
                    if self._stop.wait(1.0):
                        return
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        self.cut_off.set()  # the client hung up mid-answer
                        break

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


@pytest.fixture
def drip_receiver() -> Iterator[DripFeedReceiver]:
    receiver = DripFeedReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


def test_a_receiver_that_drips_its_answer_is_cut_at_the_attempt_deadline(
    drip_receiver: DripFeedReceiver,
) -> None:
    with pytest.raises(DeliveryFailed) as failure:
        post(
            url=drip_receiver.url,
            body=b"{}",
            headers={"Content-Type": "application/json"},
            timeout=2.5,
            dns_timeout=1.0,
            allow_http=True,
            allow_private=True,
        )

    assert failure.value.code == "timeout"
    # Each byte came well within any per-read timeout: only a total deadline ends this.
    assert drip_receiver.cut_off.wait(timeout=30)


def test_a_dripping_receiver_costs_a_delivery_one_timed_out_attempt_then_a_retry(
    drip_receiver: DripFeedReceiver, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 2.0
    delivery = WebhookDeliveryFactory(job__webhook_url=drip_receiver.url)

    services.webhook_delivery_attempt(delivery_id=delivery.pk, attempt=1, worker_hostname="test")

    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert (attempt.error, attempt.succeeded) == (AttemptError.TIMEOUT, False)
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.PENDING


def test_an_attempt_over_the_host_cap_waits_and_is_not_counted(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    drip_receiver: DripFeedReceiver,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_HOST_CONCURRENCY = 1
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(services, "_send_attempt", lambda **message: sent.append(message) or True)
    delivery = WebhookDeliveryFactory(job__webhook_url=drip_receiver.url)
    before = time.time()

    # Another worker's attempt to the same host is in flight.
    with services._host_slot("127.0.0.1") as taken, django_capture_on_commit_callbacks(execute=True):
        services.webhook_delivery_attempt(delivery_id=delivery.pk, attempt=1, worker_hostname="test")

    waiting = WebhookDelivery.objects.get(pk=delivery.pk)
    assert taken
    assert (waiting.status, waiting.attempt_count) == (DeliveryStatus.PENDING, 0)
    assert not WebhookAttempt.objects.filter(delivery=delivery).exists()
    assert drip_receiver.requests == 0
    assert waiting.next_attempt_at is not None and waiting.next_attempt_at.timestamp() > before
    assert [(m["delivery_id"], m["attempt"]) for m in sent] == [(delivery.pk, 1)]
    assert sent[0]["countdown"] >= services.HOST_BUSY_RETRY_SECONDS


def test_host_slots_are_shared_up_to_the_cap_and_freed_after_use(settings: Any) -> None:
    settings.WEBHOOK_HOST_CONCURRENCY = 2

    with (
        services._host_slot("hooks.example") as first,
        services._host_slot("hooks.example") as second,
        services._host_slot("hooks.example") as third,
        services._host_slot("other.example") as other,
    ):
        held = (first, second, third, other)
    with services._host_slot("hooks.example") as after:
        pass

    assert held == (True, True, False, True)
    assert after
