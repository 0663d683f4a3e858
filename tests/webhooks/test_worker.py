"""Deliveries through real Celery workers: retries, event subsets, the webhooks queue, re-send."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook

from jobs import services
from jobs.models import FailureCode, JobStatus
from tests.factories import GenerationJobFactory, WebhookDeliveryFactory
from tests.support.processes import WorkerProcess
from tests.support.waits import wait_for
from tests.webhooks.conftest import Receiver
from webhooks.models import DeliveryStatus, WebhookDelivery

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _loopback_receivers(settings: Any) -> None:
    # The submit check runs in this process; the worker has the same policy in its environment.
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True


def submitted(api_client: APIClient, **fields: Any) -> dict[str, Any]:
    response = api_client.post(
        "/api/v1/jobs",
        {"prompt": "a red fox", "width": 64, "height": 64, "steps": 4, **fields},
        format="json",
    )
    assert response.status_code == 202, response.json()
    return dict(response.json())


def submit(api_client: APIClient, **fields: Any) -> str:
    return str(submitted(api_client, **fields)["id"])


def finished(delivery_filter: dict[str, Any], count: int = 1) -> Callable[[], list[WebhookDelivery]]:
    def check() -> list[WebhookDelivery]:
        deliveries = list(
            WebhookDelivery.objects.filter(**delivery_filter).exclude(status=DeliveryStatus.PENDING)
        )
        return deliveries if len(deliveries) >= count else []

    return check


def test_500_twice_then_200_is_one_delivery_with_one_webhook_id(
    api_client: APIClient, receiver_factory: Callable[..., Receiver], webhooks_worker: WorkerProcess
) -> None:
    receiver = receiver_factory(500, 500, 200)

    job = submitted(api_client, webhook_url=receiver.url, webhook_events=["queued"])
    job_id = job["id"]
    (delivery,) = wait_for(finished({"job_id": job_id}), timeout=30)

    assert delivery.status == DeliveryStatus.DELIVERED
    attempts = list(delivery.attempts.order_by("number"))
    assert [(a.number, a.response_status, a.succeeded) for a in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert {request.headers["webhook-id"] for request in receiver.requests} == {delivery.webhook_id}
    for request in receiver.requests:
        payload = Webhook(job["webhook_secret"]).verify(request.body, request.headers)
        assert (payload["type"], payload["data"]["id"]) == ("job.queued", job_id)
    # Only the webhooks worker consumes the webhooks queue: the task was routed there.
    assert {a.worker_hostname for a in attempts} == {webhooks_worker.hostname}


def test_only_the_subscribed_events_are_delivered(
    api_client: APIClient,
    receiver_factory: Callable[..., Receiver],
    gpu_worker: WorkerProcess,
    webhooks_worker: WorkerProcess,
) -> None:
    receiver = receiver_factory(200)

    job_id = submit(api_client, webhook_url=receiver.url, webhook_events=["started", "completed"])
    deliveries = wait_for(finished({"job_id": job_id}, count=2), timeout=60)

    assert sorted(d.event for d in deliveries) == ["completed", "started"]
    types = [json.loads(request.body)["type"] for request in receiver.requests]
    assert sorted(types) == ["job.completed", "job.started"]
    completed = next(json.loads(r.body) for r in receiver.requests if b"job.completed" in r.body)
    assert completed["data"]["status"] == JobStatus.COMPLETED
    assert completed["data"]["image_url"]
    hostnames = set(
        WebhookDelivery.objects.filter(job_id=job_id).values_list("attempts__worker_hostname", flat=True)
    )
    assert hostnames == {webhooks_worker.hostname}


def test_cancelling_a_job_notifies_job_cancelled(
    api_client: APIClient, receiver_factory: Callable[..., Receiver], webhooks_worker: WorkerProcess
) -> None:
    receiver = receiver_factory(200)
    job_id = submit(api_client, webhook_url=receiver.url, webhook_events=["cancelled"])

    assert api_client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    wait_for(finished({"job_id": job_id}), timeout=30)

    (request,) = receiver.requests
    payload = json.loads(request.body)
    assert (payload["type"], payload["data"]["status"]) == ("job.cancelled", JobStatus.CANCELLED)


def test_failing_a_job_notifies_job_failed_with_its_failure_code(
    receiver_factory: Callable[..., Receiver], webhooks_worker: WorkerProcess
) -> None:
    receiver = receiver_factory(200)
    # Running, so that no GPU worker can claim it before it fails.
    job = GenerationJobFactory(
        status=JobStatus.RUNNING, webhook_url=receiver.url, webhook_events=["completed", "failed"]
    )

    services.job_fail(job_id=job.pk, code=FailureCode.OUT_OF_MEMORY, message="The GPU ran out of memory.")
    wait_for(finished({"job_id": job.pk}), timeout=30)

    (request,) = receiver.requests
    payload = json.loads(request.body)
    assert payload["type"] == "job.failed"
    assert payload["data"]["failure"]["code"] == FailureCode.OUT_OF_MEMORY


def test_a_webhook_that_never_answers_2xx_does_not_fail_the_job(
    api_client: APIClient,
    receiver_factory: Callable[..., Receiver],
    gpu_worker: WorkerProcess,
    webhooks_worker: WorkerProcess,
) -> None:
    receiver = receiver_factory(500)

    job_id = submit(api_client, webhook_url=receiver.url, webhook_events=["completed"])
    (delivery,) = wait_for(finished({"job_id": job_id}), timeout=60)

    assert (delivery.status, delivery.attempts.count()) == (DeliveryStatus.FAILED, 3)
    assert delivery.job.status == JobStatus.COMPLETED


def test_admin_resend_makes_a_new_attempt_with_the_same_webhook_id(
    receiver_factory: Callable[..., Receiver], webhooks_worker: WorkerProcess
) -> None:
    receiver = receiver_factory(200)
    delivery = WebhookDeliveryFactory(
        job__webhook_url=receiver.url, status=DeliveryStatus.FAILED, attempt_count=3
    )
    client = Client()
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))

    response = client.post(
        "/admin/webhooks/webhookdelivery/",
        {"action": "resend", "_selected_action": [delivery.pk]},
        follow=True,
    )

    assert response.status_code == 200
    (delivery,) = wait_for(finished({"pk": delivery.pk}), timeout=30)
    assert (delivery.status, delivery.attempt_count) == (DeliveryStatus.DELIVERED, 4)
    assert delivery.attempts.get().number == 4
    (request,) = receiver.requests
    assert request.headers["webhook-id"] == delivery.webhook_id
    detail = client.get(f"/admin/webhooks/webhookdelivery/{delivery.pk}/change/")
    assert detail.status_code == 200
    assert delivery.webhook_id in detail.content.decode()
