from __future__ import annotations

from datetime import timedelta
from typing import Any, NoReturn

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services
from jobs.api import views
from tests.factories import GenerationJobFactory, JobImageFactory

pytestmark = pytest.mark.django_db


def test_unchanged_status_with_its_etag_is_304_without_a_body(api_client: APIClient) -> None:
    job = GenerationJobFactory()
    url = f"/api/v1/jobs/{job.id}"
    first = api_client.get(url)

    again = api_client.get(url, HTTP_IF_NONE_MATCH=first["ETag"])

    assert first.status_code == 200
    assert first["ETag"].startswith('"')
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == first["ETag"]


def test_etag_in_a_list_of_candidates_also_matches(api_client: APIClient) -> None:
    job = GenerationJobFactory()
    etag = api_client.get(f"/api/v1/jobs/{job.id}")["ETag"]

    response = api_client.get(f"/api/v1/jobs/{job.id}", HTTP_IF_NONE_MATCH=f'"stale", {etag}')

    assert response.status_code == 304


def test_changed_status_answers_200_with_a_new_etag(api_client: APIClient) -> None:
    job = GenerationJobFactory()
    url = f"/api/v1/jobs/{job.id}"
    etag = api_client.get(url)["ETag"]

    services.claim_next_jobs(worker_hostname="gpu@test", max_images=1)
    services.job_record_progress(job_ids=[job.id], step=1, total=4)
    response = api_client.get(url, HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 200
    assert response.json()["progress"]["step"] == 1
    assert response["ETag"] != etag


def test_a_queued_job_moving_up_the_queue_gets_a_new_etag(api_client: APIClient) -> None:
    GenerationJobFactory(client_ip="198.51.100.1")
    waiting = GenerationJobFactory(client_ip="198.51.100.1")
    url = f"/api/v1/jobs/{waiting.id}"
    before = api_client.get(url)

    services.claim_next_jobs(worker_hostname="gpu@test", max_images=1)
    after = api_client.get(url, HTTP_IF_NONE_MATCH=before["ETag"])

    assert (before.json()["queue"]["position"], after.status_code) == (2, 200)
    assert after.json()["queue"]["position"] == 1


def test_a_completed_job_loses_its_etag_when_retention_deletes_its_images(
    api_client: APIClient, settings: Any
) -> None:
    image = JobImageFactory(job__finished_at=timezone.now() - timedelta(days=3))
    url = f"/api/v1/jobs/{image.job.id}"
    etag = api_client.get(url)["ETag"]

    settings.RESULT_RETENTION_DAYS = 1
    services.delete_expired_results()
    response = api_client.get(url, HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 200
    assert response.json()["images"] == []
    assert response["ETag"] != etag


def test_the_same_status_read_through_another_host_gets_another_etag(api_client: APIClient) -> None:
    job = GenerationJobFactory()
    url = f"/api/v1/jobs/{job.id}"
    etag = api_client.get(url)["ETag"]

    response = api_client.get(url, HTTP_IF_NONE_MATCH=etag, HTTP_HOST="localhost")

    assert response.status_code == 200
    assert response.json()["status_url"].startswith("http://localhost/")


def test_a_304_is_answered_without_building_the_body(
    api_client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = JobImageFactory().job
    url = f"/api/v1/jobs/{job.id}"
    etag = api_client.get(url)["ETag"]

    def body_built(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("a 304 built the status body")

    monkeypatch.setattr(views, "job_status_body", body_built)
    response = api_client.get(url, HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 304
