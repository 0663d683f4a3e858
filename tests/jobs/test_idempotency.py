from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from core.errors import ApplicationError
from jobs import services
from jobs.api.errors import http_status
from jobs.models import GenerationJob, IdempotencyKey
from ratelimit.services import api_key_create

pytestmark = pytest.mark.django_db

BODY = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4}


def submit(api_client: APIClient, key: str, body: dict[str, Any] = BODY, ip: str = "198.51.100.1") -> Any:
    return api_client.post("/api/v1/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY=key, REMOTE_ADDR=ip)


def test_replay_with_same_key_and_body_returns_the_original_job(api_client: APIClient) -> None:
    first = submit(api_client, "order-42")
    replay = submit(api_client, "order-42")

    assert (first.status_code, replay.status_code) == (202, 202)
    assert replay.json()["id"] == first.json()["id"]
    assert replay["Location"] == first["Location"]
    assert GenerationJob.objects.count() == 1


def test_same_key_with_a_different_body_is_409_idempotency_conflict(api_client: APIClient) -> None:
    submit(api_client, "order-42")
    response = submit(api_client, "order-42", {**BODY, "steps": 5})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert GenerationJob.objects.count() == 1


def test_same_key_from_another_client_is_a_different_job(api_client: APIClient) -> None:
    first = submit(api_client, "order-42", ip="198.51.100.1")
    other = submit(api_client, "order-42", ip="198.51.100.2")

    assert other.status_code == 202
    assert other.json()["id"] != first.json()["id"]


def test_key_older_than_24_hours_no_longer_replays_and_is_purged(api_client: APIClient) -> None:
    first = submit(api_client, "order-42")
    other = submit(api_client, "order-7")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))

    later = submit(api_client, "order-42", {**BODY, "steps": 5})

    assert later.status_code == 202
    assert later.json()["id"] not in (first.json()["id"], other.json()["id"])
    assert [(key.key, str(key.job_id)) for key in IdempotencyKey.objects.all()] == [
        ("order-42", later.json()["id"])
    ]


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_malformed_key_is_a_400_idempotency_key_invalid(key: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        services.job_submit(prompt="a fox", client_ip="198.51.100.1", idempotency_key=key)

    assert (caught.value.code, http_status(caught.value)) == ("idempotency_key_invalid", 400)
    assert GenerationJob.objects.count() == 0


# Committed submits wake the session's real worker: keep what it may run small.
TINY = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2}


@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_with_one_key_create_one_job() -> None:
    barrier = threading.Barrier(6)
    job_ids: list[str] = []

    def submit_once() -> None:
        try:
            barrier.wait()
            job = services.job_submit(**TINY, client_ip="198.51.100.1", idempotency_key="race")
            job_ids.append(str(job.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=submit_once) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(job_ids) == 6
    assert len(set(job_ids)) == 1
    assert GenerationJob.objects.count() == 1


def test_a_key_belongs_to_its_api_key_not_to_the_address(api_client: APIClient) -> None:
    _first, first_key, _webhook_secret = api_key_create(name="first")
    _second, second_key, _webhook_secret = api_key_create(name="second")
    body = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 4}

    def submit(api_key: str, ip: str) -> str:
        return api_client.post(
            "/api/v1/jobs",
            body,
            format="json",
            REMOTE_ADDR=ip,
            HTTP_AUTHORIZATION=f"Bearer {api_key}",
            HTTP_IDEMPOTENCY_KEY="order-1",
        ).json()["id"]

    original = submit(first_key, "198.51.100.60")
    from_another_address = submit(first_key, "198.51.100.61")
    other_integrator_same_address = submit(second_key, "198.51.100.60")
    anonymous_same_address = api_client.post(
        "/api/v1/jobs", body, format="json", REMOTE_ADDR="198.51.100.60", HTTP_IDEMPOTENCY_KEY="order-1"
    ).json()["id"]

    assert from_another_address == original
    assert len({original, other_integrator_same_address, anonymous_same_address}) == 3
