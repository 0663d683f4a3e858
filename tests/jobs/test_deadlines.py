"""Deadlines (Cancel-After, deadline_seconds): parsing, the claim, the sweep, and the worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from core.errors import ApplicationError
from generator.engine import Engine
from jobs import services, worker
from jobs.deadlines import cancel_after_seconds
from jobs.models import FailureCode, GenerationJob, JobStatus
from jobs.tasks import reap_stale_jobs_task
from tests.factories import GenerationJobFactory

pytestmark = pytest.mark.django_db

BODY = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("90s", 90), ("5m", 300), ("1m30s", 90), ("1.5h", 5400), ("1500ms", 1.5), (" 2m ", 120)],
)
def test_cancel_after_takes_go_durations(header: str, seconds: float) -> None:
    assert cancel_after_seconds(header) == pytest.approx(seconds)


@pytest.mark.parametrize("header", ["", "90", "-5s", "0s", "500ms", "5 m", "1d", "abc", "25h", "s", "1e3s"])
def test_cancel_after_refuses_anything_else(header: str) -> None:
    with pytest.raises(ApplicationError) as raised:
        cancel_after_seconds(header)
    assert raised.value.code == "cancel_after_invalid"


def test_a_bad_cancel_after_header_is_a_400_and_queues_nothing(api_client: APIClient) -> None:
    response = api_client.post("/api/v1/jobs", BODY, format="json", headers={"Cancel-After": "soon"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "cancel_after_invalid"
    assert not GenerationJob.objects.exists()


def test_a_deadline_over_the_maximum_is_a_400(api_client: APIClient, settings: Any) -> None:
    settings.JOB_DEADLINE_MAX_SECONDS = 600
    over = api_client.post("/api/v1/jobs", BODY, format="json", headers={"Cancel-After": "11m"})
    assert over.json()["error"]["code"] == "cancel_after_invalid"
    body = api_client.post("/api/v1/jobs", {**BODY, "deadline_seconds": 601}, format="json")
    assert body.status_code == 400
    assert body.json()["error"]["fields"]["deadline_seconds"][0]["code"] == "deadline_out_of_range"
    assert not GenerationJob.objects.exists()


def test_the_earlier_of_header_and_field_is_the_deadline_shown_in_status(api_client: APIClient) -> None:
    before = timezone.now()
    response = api_client.post(
        "/api/v1/jobs", {**BODY, "deadline_seconds": 600}, format="json", headers={"Cancel-After": "1m30s"}
    )
    assert response.status_code == 202
    job = GenerationJob.objects.get()
    assert before + timedelta(seconds=90) <= job.deadline_at <= timezone.now() + timedelta(seconds=90)
    status = api_client.get(response.headers["Location"]).json()
    assert status["deadline_at"] == response.json()["deadline_at"] is not None


def test_a_job_without_a_deadline_shows_none(api_client: APIClient) -> None:
    assert api_client.post("/api/v1/jobs", BODY, format="json").json()["deadline_at"] is None


def test_the_claim_fails_an_overdue_queued_job_and_takes_the_next() -> None:
    overdue = GenerationJobFactory(deadline_at=timezone.now() - timedelta(seconds=1))
    on_time = GenerationJobFactory(deadline_at=timezone.now() + timedelta(hours=1))

    batch = services.claim_next_jobs(worker_hostname="gpu@test", max_images=1)

    assert [job.pk for job in batch] == [on_time.pk]
    overdue.refresh_from_db()
    assert (overdue.status, overdue.failure_code) == (JobStatus.FAILED, FailureCode.DEADLINE_EXCEEDED)
    assert overdue.started_at is None


def test_the_maintenance_sweep_fails_overdue_queued_and_running_jobs_and_flags_them() -> None:
    past = timezone.now() - timedelta(seconds=1)
    queued = GenerationJobFactory(deadline_at=past)
    running = GenerationJobFactory(
        deadline_at=past, status=JobStatus.RUNNING, started_at=past, worker_hostname="gpu@test"
    )
    untouched = GenerationJobFactory(deadline_at=timezone.now() + timedelta(hours=1))

    reap_stale_jobs_task()

    for job in (queued, running):
        job.refresh_from_db()
        assert (job.status, job.failure_code) == (JobStatus.FAILED, FailureCode.DEADLINE_EXCEEDED)
    assert services.cancelled_job_ids(job_ids=[queued.pk, running.pk, untouched.pk]) == {
        str(queued.pk),
        str(running.pk),
    }
    untouched.refresh_from_db()
    assert untouched.status == JobStatus.QUEUED


def test_the_worker_fails_a_job_past_its_deadline_at_the_next_step(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(worker._engines, settings.GENERATOR_DEFAULT_MODEL, engine)
    GenerationJobFactory(steps=20, deadline_at=timezone.now() + timedelta(hours=1))
    [running] = services.claim_next_jobs(worker_hostname="gpu@test", max_images=1)
    # As if the deadline passed while the job was claimed: the worker checks its own copy.
    running.deadline_at = timezone.now() - timedelta(seconds=1)
    GenerationJob.objects.filter(pk=running.pk).update(deadline_at=running.deadline_at)

    worker.run_batch([running])

    running.refresh_from_db()
    assert (running.status, running.failure_code) == (JobStatus.FAILED, FailureCode.DEADLINE_EXCEEDED)
    assert running.progress_step < 20
    assert not running.images.exists()


def test_a_batch_goes_on_for_the_job_still_within_its_deadline(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(worker._engines, settings.GENERATOR_DEFAULT_MODEL, engine)
    GenerationJobFactory(seed=1, deadline_at=timezone.now() + timedelta(hours=1))
    GenerationJobFactory(seed=2)
    batch = services.claim_next_jobs(worker_hostname="gpu@test", max_images=2)
    assert len(batch) == 2
    late = next(job for job in batch if job.deadline_at is not None)
    late.deadline_at = timezone.now() - timedelta(seconds=1)
    GenerationJob.objects.filter(pk=late.pk).update(deadline_at=late.deadline_at)

    worker.run_batch(batch)

    statuses = {job.pk: (job.status, job.failure_code) for job in GenerationJob.objects.all()}
    on_time = next(job for job in batch if job is not late)
    assert statuses[late.pk] == (JobStatus.FAILED, FailureCode.DEADLINE_EXCEEDED)
    assert statuses[on_time.pk] == (JobStatus.COMPLETED, "")
