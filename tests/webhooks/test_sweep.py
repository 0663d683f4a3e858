"""Beat's webhook sweep: attempt messages that were never sent or that the broker lost."""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError

from config.celery import app as celery_app
from ops.metrics import WEBHOOK_RESENDS_KEY, job_registry
from tests.factories import WebhookDeliveryFactory
from tests.support.processes import WorkerProcess, free_port
from tests.support.redis_state import redis_client
from tests.support.waits import wait_for
from tests.webhooks.conftest import Receiver
from webhooks import selectors, services
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from webhooks.tasks import deliver_webhook_task, sweep_webhook_deliveries_task

pytestmark = pytest.mark.django_db


def overdue_since(seconds: float) -> datetime:
    """A next attempt that was due this long before the sweep's grace began."""
    return timezone.now() - timedelta(seconds=settings.WEBHOOK_SWEEP_AFTER_SECONDS + seconds)


def sweep_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    return [
        dict(pair.split("=", 1) for pair in shlex.split(record.getMessage()))
        for record in caplog.records
        if record.name == "webhooks.services" and "event=webhooks_swept" in record.getMessage()
    ]


@pytest.fixture
def empty_webhooks_queue() -> Iterator[None]:
    """No attempt message waiting before the test, and none left for a later test's worker."""
    client = redis_client()
    client.delete(settings.WEBHOOK_QUEUE)
    yield
    client.delete(settings.WEBHOOK_QUEUE)


@pytest.mark.parametrize(
    "next_attempt_in",
    [
        pytest.param(3600.0, id="in-the-future"),
        pytest.param(0.0, id="due-now"),
        pytest.param(-(settings.WEBHOOK_SWEEP_AFTER_SECONDS - 5), id="overdue-within-the-grace"),
    ],
)
def test_sweep_leaves_a_pending_delivery_alone_until_its_attempt_is_overdue_by_the_grace(
    empty_webhooks_queue: None, next_attempt_in: float
) -> None:
    next_attempt_at = timezone.now() + timedelta(seconds=next_attempt_in)
    delivery = WebhookDeliveryFactory(attempt_count=1, next_attempt_at=next_attempt_at)

    resent = services.webhook_deliveries_sweep()

    delivery.refresh_from_db()
    assert (resent, delivery.next_attempt_at, delivery.attempt_count) == (0, next_attempt_at, 1)
    assert selectors.webhook_queue_pending_messages() == 0


@pytest.mark.parametrize("status", [DeliveryStatus.DELIVERED, DeliveryStatus.FAILED])
def test_sweep_never_resends_a_delivered_or_failed_delivery(empty_webhooks_queue: None, status: str) -> None:
    # Ended deliveries have no next attempt; an old one left on them must not matter either.
    long_ago = overdue_since(3600)
    delivery = WebhookDeliveryFactory(status=status, attempt_count=2, next_attempt_at=long_ago)

    resent = services.webhook_deliveries_sweep()

    delivery.refresh_from_db()
    assert (resent, delivery.status, delivery.next_attempt_at) == (0, status, long_ago)
    assert selectors.webhook_queue_pending_messages() == 0


def test_sweep_resends_an_overdue_delivery_and_makes_it_due_again_from_now(
    empty_webhooks_queue: None,
) -> None:
    delivery = WebhookDeliveryFactory(attempt_count=1, next_attempt_at=overdue_since(10))
    before = timezone.now()

    resent = services.webhook_deliveries_sweep()
    again = services.webhook_deliveries_sweep()

    delivery.refresh_from_db()
    assert (resent, again, selectors.webhook_queue_pending_messages()) == (1, 0, 1)
    assert delivery.next_attempt_at is not None and delivery.next_attempt_at >= before
    assert (delivery.status, delivery.attempt_count) == (DeliveryStatus.PENDING, 1)


def test_sweep_resends_at_most_its_limit_less_the_messages_waiting_most_overdue_first(
    empty_webhooks_queue: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "SWEEP_MAX_PER_RUN", 3)
    # A message already waiting (for no delivery: a worker would skip it) uses one of the three.
    deliver_webhook_task.apply_async(kwargs={"delivery_id": 0, "attempt": 1})
    deliveries = [
        WebhookDeliveryFactory(next_attempt_at=overdue_since(seconds)) for seconds in (10, 40, 20, 30)
    ]

    resent = services.webhook_deliveries_sweep()

    swept = {d.pk for d in WebhookDelivery.objects.filter(next_attempt_at__gt=overdue_since(0))}
    assert (resent, selectors.webhook_queue_pending_messages()) == (2, 3)
    assert swept == {deliveries[1].pk, deliveries[3].pk}


def test_sweep_logs_how_many_it_resent(empty_webhooks_queue: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="webhooks.services")
    WebhookDeliveryFactory(next_attempt_at=overdue_since(10))
    WebhookDeliveryFactory(next_attempt_at=timezone.now())

    sweep_webhook_deliveries_task()

    assert sweep_events(caplog) == [
        {"event": "webhooks_swept", "resent": "1", "overdue": "1", "queue_waiting": "0"}
    ]


def test_sweep_counts_what_it_resent_for_metrics(empty_webhooks_queue: None) -> None:
    redis_client().delete(WEBHOOK_RESENDS_KEY)
    for seconds in (10, 20):
        WebhookDeliveryFactory(next_attempt_at=overdue_since(seconds))
    WebhookDeliveryFactory(next_attempt_at=timezone.now())

    services.webhook_deliveries_sweep()
    services.webhook_deliveries_sweep()

    assert job_registry.get_sample_value("imagegen_webhook_resends_total") == 2


def test_a_broker_outage_while_sending_is_logged_not_raised_and_swept_again_later(
    empty_webhooks_queue: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhooks.services")
    sends: list[dict[str, Any]] = []

    def broker_down(**options: Any) -> None:
        sends.append(options)
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(deliver_webhook_task, "apply_async", broker_down)
    deliveries = [WebhookDeliveryFactory(next_attempt_at=overdue_since(seconds)) for seconds in (10, 20)]

    sweep_webhook_deliveries_task()

    # The first failed send ends the run: the broker would refuse the rest as well.
    assert len(sends) == 1
    failures = [r for r in caplog.records if "event=webhook_send_failed" in r.getMessage()]
    assert [(r.levelname, r.exc_info is not None) for r in failures] == [("ERROR", True)]
    assert sweep_events(caplog) == [
        {"event": "webhooks_swept", "resent": "0", "overdue": "2", "queue_waiting": "0"}
    ]
    for delivery in deliveries:
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.PENDING
    WebhookDelivery.objects.update(next_attempt_at=overdue_since(1))
    monkeypatch.undo()
    assert services.webhook_deliveries_sweep() == 2


def test_a_broker_that_cannot_be_reached_at_all_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhooks.services")
    # A real connection attempt, refused: nothing listens on this port.
    monkeypatch.setitem(celery_app.conf, "broker_read_url", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setitem(celery_app.conf, "broker_connection_timeout", 0.5)
    delivery = WebhookDeliveryFactory(next_attempt_at=overdue_since(10))

    sweep_webhook_deliveries_task()

    failures = [r for r in caplog.records if "event=webhook_sweep_failed" in r.getMessage()]
    assert [(r.levelname, r.exc_info is not None) for r in failures] == [("ERROR", True)]
    assert WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at == delivery.next_attempt_at


def test_sweep_is_scheduled_by_beat_on_the_maintenance_queue() -> None:
    entry = celery_app.conf.beat_schedule["sweep-webhook-deliveries"]
    route = celery_app.amqp.router.route(dict(entry["options"]), entry["task"])

    assert entry["task"] == sweep_webhook_deliveries_task.name
    assert entry["schedule"] == settings.WEBHOOK_SWEEP_INTERVAL_SECONDS
    assert route["queue"].name == "maintenance"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_delivery_whose_message_was_lost_is_delivered_once_after_the_sweep_as_its_next_attempt(
    receiver_factory: Callable[..., Receiver], webhooks_worker: WorkerProcess
) -> None:
    receiver = receiver_factory(200)
    # Its first attempt failed and the message for the second never reached a worker.
    delivery = WebhookDeliveryFactory(
        job__webhook_url=receiver.url, attempt_count=1, next_attempt_at=overdue_since(5)
    )
    WebhookAttempt.objects.create(
        delivery=delivery, number=1, started_at=overdue_since(10), duration_ms=3, succeeded=False
    )

    def status() -> str:
        return WebhookDelivery.objects.get(pk=delivery.pk).status

    time.sleep(2)  # nothing else would ever send it
    assert (status(), receiver.requests) == (DeliveryStatus.PENDING, [])

    sweep_webhook_deliveries_task()
    wait_for(lambda: status() == DeliveryStatus.DELIVERED, timeout=30)
    assert services.webhook_deliveries_sweep() == 0
    time.sleep(1)

    (request,) = receiver.requests
    assert request.headers["webhook-id"] == delivery.webhook_id
    attempts = WebhookAttempt.objects.filter(delivery=delivery).order_by("number")
    assert [(a.number, a.succeeded, a.worker_hostname) for a in attempts] == [
        (1, False, ""),
        (2, True, webhooks_worker.hostname),
    ]
