from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from jobs.models import GenerationJob, JobStatus
from tests.factories import JobImageFactory
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db


@pytest.fixture
def completed() -> GenerationJob:
    image = JobImageFactory(job__prompt="a red fox", job__seed=1234, job__num_images=2)
    JobImageFactory(job=image.job, index=1, seed=1235)
    return image.job


def same_request(job: GenerationJob, **overrides: Any) -> dict[str, Any]:
    return {
        "prompt": job.prompt,
        "width": job.width,
        "height": job.height,
        "steps": job.steps,
        "guidance_scale": job.guidance_scale,
        "seed": job.seed,
        "num_images": job.num_images,
        **overrides,
    }


def test_identical_seeded_request_is_answered_completed_with_the_same_files(
    api_client: APIClient, completed: GenerationJob
) -> None:
    # No worker runs in this test: a completed answer can only come from the stored result.
    response = api_client.post(
        "/api/v1/jobs", same_request(completed, prompt="  a   red fox "), format="json"
    )

    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["deduplicated"], body["queue"]) == ("completed", True, None)
    assert body["id"] != str(completed.id)
    job = GenerationJob.objects.get(pk=body["id"])
    assert job.deduplicated_from_id == completed.id
    assert [image.file.name for image in job.images.all()] == [
        image.file.name for image in completed.images.all()
    ]
    assert body["image_url"].endswith(f"/results/{completed.id}/0.png")
    assert GenerationJob.objects.filter(deduplicated_from__isnull=False).count() == 1


@pytest.mark.parametrize(
    "change",
    [{"seed": None}, {"seed": 99}, {"steps": 5}, {"negative_prompt": "blur"}, {"num_images": 1}],
)
def test_request_that_differs_in_anything_is_queued(
    api_client: APIClient, completed: GenerationJob, change: dict[str, Any]
) -> None:
    body = api_client.post("/api/v1/jobs", same_request(completed, **change), format="json").json()

    assert (body["status"], body["deduplicated"]) == ("queued", False)
    assert not GenerationJob.objects.filter(deduplicated_from__isnull=False).exists()


def test_request_identical_to_a_failed_job_is_queued(api_client: APIClient, completed: GenerationJob) -> None:
    GenerationJob.objects.filter(pk=completed.pk).update(status=JobStatus.FAILED, failure_code="timeout")

    body = api_client.post("/api/v1/jobs", same_request(completed), format="json").json()

    assert body["status"] == "queued"


@override_settings(JOB_DEDUPE=False)
def test_dedupe_setting_off_queues_identical_requests(
    api_client: APIClient, completed: GenerationJob
) -> None:
    body = api_client.post("/api/v1/jobs", same_request(completed), format="json").json()

    assert (body["status"], body["deduplicated"]) == ("queued", False)


def test_deduplicated_job_sends_only_its_completed_webhook(
    api_client: APIClient, completed: GenerationJob, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    request = {**same_request(completed), "webhook_url": "http://127.0.0.1:9/hook"}

    with django_capture_on_commit_callbacks(execute=True):
        body = api_client.post("/api/v1/jobs", request, format="json").json()

    assert body["deduplicated"] is True
    events = WebhookDelivery.objects.filter(job_id=body["id"]).values_list("event", flat=True)
    assert list(events) == ["completed"]
