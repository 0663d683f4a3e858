from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from jobs import services
from jobs.api.serializers import JobSerializer
from jobs.models import FailureCode, GenerationJob, JobStatus
from tests.factories import GenerationJobFactory, JobImageFactory

pytestmark = pytest.mark.django_db

VALID = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4}


def submit(api_client: APIClient, **overrides: Any) -> Any:
    return api_client.post("/api/v1/jobs", {**VALID, **overrides}, format="json")


def test_submit_answers_202_with_the_status_url_in_location(api_client: APIClient) -> None:
    response = submit(api_client)

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert response["Location"] == body["status_url"]
    assert body["status_url"].endswith(f"/api/v1/jobs/{body['id']}")
    assert GenerationJob.objects.get(pk=body["id"]).status == JobStatus.QUEUED


def test_submit_without_seed_stores_a_random_seed(api_client: APIClient) -> None:
    seeds = {submit(api_client).json()["seed"] for _ in range(3)}

    assert len(seeds) == 3
    assert all(0 <= seed < 2**32 for seed in seeds)


def test_submit_keeps_an_explicit_seed_and_records_the_client_ip(api_client: APIClient) -> None:
    body = submit(api_client, seed=1234).json()

    job = GenerationJob.objects.get(pk=body["id"])
    assert (job.seed, job.client_ip) == (1234, "127.0.0.1")


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("prompt", "", "prompt_empty"),
        ("prompt", "   ", "prompt_empty"),
        ("prompt", "x" * 1001, "prompt_too_long"),
        ("width", 100, "size_not_multiple_of_8"),
        ("height", 2048, "size_out_of_range"),
        ("width", 32, "size_out_of_range"),
        ("steps", 0, "steps_out_of_range"),
        ("steps", 101, "steps_out_of_range"),
        ("guidance_scale", -1, "guidance_out_of_range"),
        ("guidance_scale", 31, "guidance_out_of_range"),
        ("seed", -1, "seed_out_of_range"),
        ("seed", 2**32, "seed_out_of_range"),
        ("scheduler", "karras_magic", "scheduler_unknown"),
        ("num_images", 5, "num_images_out_of_range"),
        ("width", "wide", "invalid"),
    ],
)
def test_submit_rejects_bad_field_with_a_stable_code(
    api_client: APIClient, field: str, value: Any, code: str
) -> None:
    response = submit(api_client, **{field: value})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert code in [item["code"] for item in error["fields"][field]]
    assert GenerationJob.objects.count() == 0


def test_submit_without_prompt_is_a_required_field_error(api_client: APIClient) -> None:
    response = api_client.post("/api/v1/jobs", {"width": 64}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["prompt"][0]["code"] == "required"


def test_submit_with_malformed_json_is_a_400_in_the_error_shape(api_client: APIClient) -> None:
    response = api_client.post("/api/v1/jobs", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_unknown_job_is_404_in_the_error_shape(api_client: APIClient, job_id: str) -> None:
    response = api_client.get(f"/api/v1/jobs/{job_id}")

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "not_found",
            "message": "No job with this id.",
            "request_id": response["X-Request-ID"],
        }
    }


def test_status_payload_follows_the_job_through_every_state(api_client: APIClient) -> None:
    job = GenerationJobFactory()
    url = f"/api/v1/jobs/{job.id}"

    queued = api_client.get(url).json()
    assert (queued["status"], queued["progress"]["total"], queued["image_url"]) == ("queued", 0, None)

    services.claim_next_jobs(worker_hostname="gpu@test", max_images=1)
    services.job_record_progress(job_ids=[job.id], step=2, total=5)
    running = api_client.get(url).json()
    assert running["status"] == "running"
    assert running["progress"] == {"step": 2, "total": 5, "fraction": 0.4}
    assert running["timings"]["started_at"] is not None

    job.refresh_from_db()
    assert services.job_complete(job=job, pngs=[b"\x89PNG fake"], warnings=["prompt_truncated"])
    completed = api_client.get(url).json()
    assert completed["status"] == "completed"
    assert completed["image_url"].endswith(f"/results/{job.id}/0.png")
    assert completed["warnings"] == ["prompt_truncated"]
    assert completed["timings"]["run_seconds"] is not None


def test_status_payload_names_the_failure(api_client: APIClient) -> None:
    job = GenerationJobFactory(status=JobStatus.RUNNING, started_at=timezone.now())
    services.job_fail(job_id=job.id, code=FailureCode.OUT_OF_MEMORY, message="The GPU ran out of memory.")

    body = api_client.get(f"/api/v1/jobs/{job.id}").json()

    assert body["status"] == "failed"
    assert body["failure"] == {"code": "out_of_memory", "message": "The GPU ran out of memory."}


def test_status_read_of_a_completed_job_is_one_query(
    api_client: APIClient, django_assert_num_queries: Any
) -> None:
    image = JobImageFactory()
    JobImageFactory(job=image.job, index=1, seed=image.job.seed + 1)

    with django_assert_num_queries(1):
        response = api_client.get(f"/api/v1/jobs/{image.job.id}")

    assert [item["index"] for item in response.json()["images"]] == [0, 1]


def test_status_read_answers_what_the_serializer_of_submit_cancel_and_webhooks_does(
    api_client: APIClient,
) -> None:
    image = JobImageFactory(job__warnings=["prompt_truncated"], job__cost_units="1.250")
    JobImageFactory(job=image.job, index=1, seed=image.job.seed + 1)

    response = api_client.get(f"/api/v1/jobs/{image.job.id}")
    job = GenerationJob.objects.get(pk=image.job.pk)

    assert response.json() == json.loads(
        JSONRenderer().render(JobSerializer(job, context={"request": response.wsgi_request}).data)
    )


def test_completed_job_lists_every_image(api_client: APIClient) -> None:
    image = JobImageFactory()
    JobImageFactory(job=image.job, index=1, seed=image.job.seed + 1)

    body = api_client.get(f"/api/v1/jobs/{image.job.id}").json()

    assert [item["index"] for item in body["images"]] == [0, 1]
    assert body["image_url"] == body["images"][0]["url"]


def test_cancelling_a_queued_job_through_the_api_cancels_it(api_client: APIClient) -> None:
    job = GenerationJobFactory()

    response = api_client.post(f"/api/v1/jobs/{job.id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert services.claim_next_jobs(worker_hostname="gpu@test", max_images=4) == []


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_cancelling_a_finished_job_is_a_409_with_a_code(api_client: APIClient, status: str) -> None:
    job = GenerationJobFactory(status=status, finished_at=timezone.now(), failure_code=FailureCode.TIMEOUT)

    response = api_client.post(f"/api/v1/jobs/{job.id}/cancel")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_already_finished"


def test_cancelling_an_unknown_job_is_a_404(api_client: APIClient) -> None:
    assert api_client.post(f"/api/v1/jobs/{uuid.uuid4()}/cancel").status_code == 404


def test_an_error_inside_a_list_field_is_a_400_with_that_field_named(api_client: APIClient) -> None:
    # Found by schemathesis: DRF keys a list item's errors by index, one level deeper.
    response = submit(api_client, webhook_events=["completed", "bad\u0000event"])

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"]["webhook_events"] == [
        {"code": "null_characters_not_allowed", "message": "Null characters are not allowed."}
    ]


@pytest.mark.usefixtures("unserved_model")
@pytest.mark.django_db(transaction=True)
def test_submit_while_the_broker_is_unreachable_still_answers_202_and_keeps_the_job(
    api_client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.exceptions import OperationalError

    from jobs.tasks import generate_task

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(generate_task, "delay", broker_down)

    response = submit(api_client)

    assert response.status_code == 202
    assert GenerationJob.objects.get(pk=response.json()["id"]).status == JobStatus.QUEUED
