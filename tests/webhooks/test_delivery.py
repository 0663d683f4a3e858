"""One delivery attempt, in process, against real HTTP receivers on 127.0.0.1.

Retries scheduled here are never sent: these tests run inside a transaction that is rolled
back, so ``on_commit`` never fires and no task message is left behind for a worker. The one
test with two database connections commits; the message it leaves names a delivery that is
gone once it ends, so a worker that gets it skips it.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from django.db import connection
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from core.logging import JsonFormatter
from jobs.models import GenerationJob, JobStatus
from tests.factories import GenerationJobFactory, WebhookDeliveryFactory
from tests.support.waits import wait_for
from tests.webhooks.conftest import TEST_SECRET, Receiver
from webhooks.models import AttemptError, DeliveryStatus, WebhookDelivery
from webhooks.services import webhook_delivery_attempt

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _policy(settings: Any) -> Any:
    # Receivers speak plain http on loopback; each test decides about private networks.
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    settings.WEBHOOK_SECRETS = [TEST_SECRET]
    settings.WEBHOOK_RETRY_SCHEDULE = [5.0, 300.0]
    settings.WEBHOOK_RETRY_JITTER = 0.1
    return settings


def delivery_to(url: str) -> WebhookDelivery:
    return WebhookDeliveryFactory(job__webhook_url=url)


def attempt(delivery: WebhookDelivery, number: int = 1) -> WebhookDelivery:
    webhook_delivery_attempt(delivery_id=delivery.pk, attempt=number, worker_hostname="test")
    delivery.refresh_from_db()
    return delivery


def test_a_2xx_answer_delivers_a_signed_payload(
    receiver_factory: Callable[..., Receiver], settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    receiver = receiver_factory(204)

    delivery = attempt(delivery_to(receiver.url))

    assert delivery.status == DeliveryStatus.DELIVERED
    (request,) = receiver.requests
    assert request.headers["webhook-id"] == delivery.webhook_id
    assert request.headers["Content-Type"] == "application/json"
    assert Webhook(TEST_SECRET).verify(request.body, request.headers) == json.loads(delivery.payload)
    (recorded,) = delivery.attempts.all()
    assert (recorded.succeeded, recorded.response_status, recorded.error) == (True, 204, "")
    assert recorded.duration_ms >= 0


def test_an_attempt_logs_its_fields_as_json_keys(
    receiver_factory: Callable[..., Receiver], settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    receiver = receiver_factory(204)

    with caplog.at_level(logging.INFO, logger="webhooks.services"):
        delivery = attempt(delivery_to(receiver.url))

    (record,) = [record for record in caplog.records if "event=webhook_attempt " in record.getMessage()]
    line = json.loads(JsonFormatter().format(record))
    assert {key: line[key] for key in ("event", "webhook", "attempt", "status", "response")} == {
        "event": "webhook_attempt",
        "webhook": delivery.webhook_id,
        "attempt": 1,
        "status": "delivered",
        "response": 204,
    }


def test_a_failed_attempt_is_recorded_and_a_jittered_retry_scheduled(
    receiver_factory: Callable[..., Receiver], settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    receiver = receiver_factory(503)

    delivery = attempt(delivery_to(receiver.url))

    assert (delivery.status, delivery.attempt_count) == (DeliveryStatus.PENDING, 1)
    (recorded,) = delivery.attempts.all()
    assert (recorded.succeeded, recorded.response_status, recorded.error) == (False, 503, "http_status")
    assert delivery.next_attempt_at is not None
    delay = (delivery.next_attempt_at - recorded.started_at).total_seconds()
    assert 4.5 <= delay <= 5.5 + recorded.duration_ms / 1000


def test_the_last_scheduled_retry_failing_fails_the_delivery(
    receiver_factory: Callable[..., Receiver], settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_RETRY_SCHEDULE = [0.0, 0.0]
    receiver = receiver_factory(500)
    delivery = delivery_to(receiver.url)

    for number in (1, 2, 3):
        delivery = attempt(delivery, number)

    assert (delivery.status, delivery.attempt_count, len(receiver.requests)) == (DeliveryStatus.FAILED, 3, 3)


def test_410_gone_stops_retrying(receiver_factory: Callable[..., Receiver], settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    receiver = receiver_factory(410)

    delivery = attempt(delivery_to(receiver.url))

    assert (delivery.status, delivery.next_attempt_at) == (DeliveryStatus.FAILED, None)
    assert delivery.attempts.get().error == AttemptError.GONE


def test_a_stale_or_duplicate_attempt_message_is_ignored(
    receiver_factory: Callable[..., Receiver], settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    receiver = receiver_factory(500)
    delivery = attempt(delivery_to(receiver.url))

    delivery = attempt(delivery, 1)

    assert (delivery.attempt_count, delivery.attempts.count(), len(receiver.requests)) == (1, 1, 1)


@pytest.mark.django_db(transaction=True)
def test_a_second_message_for_an_attempt_in_flight_makes_no_second_request(
    receiver_factory: Callable[..., Receiver], settings: Any
) -> None:
    # A late original and a re-sent message for the same attempt, each on its own worker.
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    receiver = receiver_factory(200, answer_after=1.0)
    delivery = delivery_to(receiver.url)

    def first_message() -> None:
        try:
            webhook_delivery_attempt(delivery_id=delivery.pk, attempt=1, worker_hostname="first")
        finally:
            connection.close()

    first = threading.Thread(target=first_message)
    first.start()
    wait_for(lambda: receiver.requests, timeout=10)
    delivery = attempt(delivery, 1)
    first.join()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, len(receiver.requests)) == (
        DeliveryStatus.DELIVERED,
        1,
        1,
    )
    assert delivery.attempts.get().worker_hostname == "first"


def test_an_attempt_message_that_arrives_before_its_time_waits_again_without_calling(
    receiver_factory: Callable[..., Receiver], settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    receiver = receiver_factory(200)
    delivery = WebhookDeliveryFactory(
        job__webhook_url=receiver.url, next_attempt_at=timezone.now() + timedelta(hours=5)
    )

    delivery = attempt(delivery)

    assert (delivery.status, delivery.attempt_count, receiver.requests) == (DeliveryStatus.PENDING, 0, [])


def test_a_redirect_is_never_followed(receiver_factory: Callable[..., Receiver], settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    internal = receiver_factory(200)
    redirecting = receiver_factory(302, location=f"{internal.url}/admin")

    delivery = attempt(delivery_to(redirecting.url))

    assert internal.requests == []
    recorded = delivery.attempts.get()
    assert (recorded.response_status, recorded.error, recorded.succeeded) == (
        302,
        AttemptError.REDIRECT,
        False,
    )


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "0x7f000001", "2130706433", "0177.0.0.1", "127.1", "localhost", "[::ffff:127.0.0.1]"],
)
def test_a_url_that_turns_forbidden_fails_the_delivery_not_the_job(
    receiver_factory: Callable[..., Receiver], host: str
) -> None:
    receiver = receiver_factory(200)
    job = GenerationJobFactory(status=JobStatus.COMPLETED, finished_at="2026-01-01T00:00:00Z")
    delivery = WebhookDeliveryFactory(job=job, url=f"http://{host}:{receiver.port}/hooks")

    delivery = attempt(delivery)

    assert receiver.requests == []
    assert (delivery.status, delivery.attempts.get().error) == (
        DeliveryStatus.FAILED,
        AttemptError.FORBIDDEN_ADDRESS,
    )
    assert GenerationJob.objects.get(pk=job.pk).status == JobStatus.COMPLETED


def test_dns_rebinding_after_the_submit_check_is_refused_before_connecting(
    receiver_factory: Callable[..., Receiver], fake_dns: dict[str, list[list[str]]], api_client: Any
) -> None:
    receiver = receiver_factory(200)
    # Public when the submit checks it, loopback (where our receiver listens) at delivery.
    fake_dns["rebind.example"] = [["93.184.215.14"], ["127.0.0.1"]]
    url = f"http://rebind.example:{receiver.port}/hooks"
    response = api_client.post(
        "/api/v1/jobs", {"prompt": "a red fox", "width": 64, "height": 64, "webhook_url": url}, format="json"
    )
    assert response.status_code == 202

    delivery = attempt(WebhookDeliveryFactory(job_id=response.json()["id"], url=url))

    assert receiver.requests == []
    assert (delivery.status, delivery.attempts.get().error) == (
        DeliveryStatus.FAILED,
        AttemptError.FORBIDDEN_ADDRESS,
    )


def test_delivery_connects_to_the_address_it_checked_not_a_later_lookup(
    receiver_factory: Callable[..., Receiver], fake_dns: dict[str, list[list[str]]], settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    checked = receiver_factory(200)
    elsewhere = receiver_factory(200, host="127.0.0.2", port=checked.port)
    # A lookup after the check (as an unpinned connect would make) gets the other address.
    fake_dns["pin.example"] = [["127.0.0.1"], ["127.0.0.2"]]

    delivery = attempt(delivery_to(f"http://pin.example:{checked.port}/hooks"))

    assert (delivery.status, len(checked.requests), elsewhere.requests) == (DeliveryStatus.DELIVERED, 1, [])
    assert checked.requests[0].headers["Host"] == f"pin.example:{checked.port}"


def test_a_name_that_stops_resolving_is_retried(fake_dns: dict[str, list[list[str]]]) -> None:
    fake_dns["gone.example"] = [[]]

    delivery = attempt(delivery_to("https://gone.example/hooks"))

    assert (delivery.status, delivery.attempts.get().error) == (
        DeliveryStatus.PENDING,
        AttemptError.DNS_ERROR,
    )


def test_a_silent_receiver_times_out(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts the connection but never answers

        delivery = attempt(delivery_to(f"http://127.0.0.1:{listener.getsockname()[1]}/hooks"))

    assert (delivery.status, delivery.attempts.get().error) == (DeliveryStatus.PENDING, AttemptError.TIMEOUT)


@pytest.fixture
def tls_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], ssl.SSLContext]:
    """A server TLS context with a certificate for ``name`` from a CA this process trusts."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    # OpenSSL reads this at every default context creation, as the delivery code makes one.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))

    def context(name: str) -> ssl.SSLContext:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(server_context)
        return server_context

    return context


def test_https_checks_the_certificate_against_the_url_name_not_the_pinned_address(
    receiver_factory: Callable[..., Receiver],
    fake_dns: dict[str, list[list[str]]],
    tls_for: Callable[[str], ssl.SSLContext],
    settings: Any,
) -> None:
    settings.WEBHOOK_ALLOW_HTTP = False
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    fake_dns["hooks.test"] = [["127.0.0.1"]]
    receiver = receiver_factory(200, tls=tls_for("hooks.test"))

    delivery = attempt(delivery_to(f"https://hooks.test:{receiver.port}/hooks"))

    assert (delivery.status, len(receiver.requests)) == (DeliveryStatus.DELIVERED, 1)


def test_https_refuses_a_certificate_for_another_name(
    receiver_factory: Callable[..., Receiver],
    fake_dns: dict[str, list[list[str]]],
    tls_for: Callable[[str], ssl.SSLContext],
    settings: Any,
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    fake_dns["hooks.test"] = [["127.0.0.1"]]
    receiver = receiver_factory(200, tls=tls_for("other.test"))

    delivery = attempt(delivery_to(f"https://hooks.test:{receiver.port}/hooks"))

    assert receiver.requests == []
    recorded = delivery.attempts.get()
    assert (recorded.error, "certificate" in recorded.error_message.lower()) == (
        AttemptError.CONNECTION_ERROR,
        True,
    )
