"""Cancel and time limits against a real Celery worker process, through the HTTP API."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from jobs import services
from jobs.models import FailureCode, GenerationJob, JobStatus
from jobs.tasks import generate_task
from tests.factories import GenerationJobFactory
from tests.support.processes import WorkerProcess
from tests.support.waits import http_json, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Big enough for the tiny model to take several seconds on a CPU.
# The largest job the limits allow: the tiny model runs smaller ones in about a second.
SLOW = {"prompt": "a slow, detailed panorama", "width": 1024, "height": 1024, "steps": 100}
QUICK = {"prompt": "a quick sketch", "width": 64, "height": 64, "steps": 4}


def submit(live_server: Any, body: dict[str, Any]) -> str:
    status, headers, _ = http_json("POST", f"{live_server.url}/api/v1/jobs", body)
    assert status == 202
    return headers["Location"]


def status_of(url: str) -> dict[str, Any]:
    return http_json("GET", url)[2]


def wait_for_status(url: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (body := status_of(url))["status"] in statuses and body, timeout=timeout)


def test_cancelling_a_running_job_stops_it_and_frees_the_worker(
    live_server: Any, gpu_worker: WorkerProcess
) -> None:
    slow = submit(live_server, SLOW)
    wait_for(lambda: (body := status_of(slow))["status"] == "running" and body["progress"]["step"] > 0)

    status, _, cancelled = http_json("POST", f"{slow}/cancel")
    assert (status, cancelled["status"], cancelled["failure"]["code"]) == (200, "cancelled", "cancelled")

    quick = submit(live_server, QUICK)
    assert wait_for_status(quick, "completed", "failed")["status"] == "completed"
    stopped = status_of(slow)
    assert stopped["status"] == "cancelled"
    assert stopped["progress"]["step"] < stopped["progress"]["total"]
    assert stopped["images"] == []


def test_cancelling_a_queued_job_means_it_never_runs(live_server: Any, gpu_worker: WorkerProcess) -> None:
    slow = submit(live_server, SLOW)
    wait_for_status(slow, "running")
    waiting = submit(live_server, QUICK)
    assert status_of(waiting)["status"] == "queued"

    http_json("POST", f"{waiting}/cancel")
    http_json("POST", f"{slow}/cancel")
    after = submit(live_server, QUICK)
    wait_for_status(after, "completed")

    job = GenerationJob.objects.get(pk=waiting.rsplit("/", 1)[1])
    assert job.status == JobStatus.CANCELLED
    assert (job.started_at, job.worker_hostname) == (None, "")


def test_soft_time_limit_fails_the_job_with_timeout_and_the_worker_takes_the_next(
    tiny_model_dir: Any,
) -> None:
    # A worker of its own, on a queue of its own; the wake-up carries a one-second soft limit
    # as a message from a deployment with GENERATION_SOFT_TIME_LIMIT=1 would.
    short_worker = WorkerProcess(
        name="short",
        extra_env={"GENERATION_QUEUE": "gpu-short"},
    )
    try:
        short_worker.wait_ready()
        too_slow = GenerationJobFactory(width=1024, height=1024, steps=100)
        generate_task.apply_async(queue="gpu-short.tiny-sd", soft_time_limit=1, time_limit=30)
        wait_for(lambda: GenerationJob.objects.get(pk=too_slow.pk).status == JobStatus.FAILED)
        next_job = GenerationJobFactory()
        generate_task.apply_async(queue="gpu-short.tiny-sd")
        wait_for(lambda: GenerationJob.objects.get(pk=next_job.pk).status == JobStatus.COMPLETED)
    finally:
        short_worker.stop()

    too_slow.refresh_from_db()
    assert too_slow.failure_code == FailureCode.TIMEOUT
    assert too_slow.worker_hostname == short_worker.hostname


def test_sigterm_lets_the_running_batch_finish_and_then_the_worker_exits(tiny_model_dir: Any) -> None:
    stopping = WorkerProcess(name="stopping", extra_env={"GENERATION_QUEUE": "gpu-stopping"})
    try:
        stopping.wait_ready()
        # Seconds on a CPU: still running when the signal comes.
        job = GenerationJobFactory(width=128, height=128, steps=100)
        generate_task.apply_async(queue="gpu-stopping.tiny-sd")
        wait_for(lambda: GenerationJob.objects.get(pk=job.pk).status == JobStatus.RUNNING)
        signalled_at = timezone.now()
        stopping.process.terminate()  # warm shutdown
        exit_code = stopping.process.wait(timeout=300)
    finally:
        stopping.stop()

    job.refresh_from_db()
    assert exit_code == 0
    assert (job.status, job.requeue_count, job.images.count()) == (JobStatus.COMPLETED, 0, 1)
    assert job.finished_at is not None and job.finished_at > signalled_at


def test_a_queued_job_past_its_cancel_after_ends_deadline_exceeded_and_never_runs(
    live_server: Any, gpu_worker: WorkerProcess
) -> None:
    slow = submit(live_server, SLOW)
    wait_for_status(slow, "running")
    status, headers, _ = http_json(
        "POST", f"{live_server.url}/api/v1/jobs", QUICK, headers={"Cancel-After": "1s"}
    )
    assert status == 202
    late = headers["Location"]
    deadline = GenerationJob.objects.get(pk=late.rsplit("/", 1)[1]).deadline_at
    wait_for(lambda: timezone.now() > deadline, timeout=30)
    http_json("POST", f"{slow}/cancel")

    ended = wait_for_status(late, "failed", "completed")
    assert ended["failure"]["code"] == "deadline_exceeded"
    assert ended["timings"]["started_at"] is None


def test_a_running_job_past_its_deadline_stops_at_the_next_step_and_frees_the_worker(
    live_server: Any, gpu_worker: WorkerProcess
) -> None:
    status, headers, _ = http_json(
        "POST", f"{live_server.url}/api/v1/jobs", SLOW, headers={"Cancel-After": "1h"}
    )
    assert status == 202
    slow = headers["Location"]
    wait_for(lambda: (body := status_of(slow))["status"] == "running" and body["progress"]["step"] > 0)
    # The deadline passes while it runs; the maintenance sweep ends it and the worker stops.
    GenerationJob.objects.filter(pk=slow.rsplit("/", 1)[1]).update(deadline_at=timezone.now())
    assert services.jobs_fail_overdue() == 1

    quick = submit(live_server, QUICK)
    assert wait_for_status(quick, "completed", "failed")["status"] == "completed"
    stopped = status_of(slow)
    assert (stopped["status"], stopped["failure"]["code"]) == ("failed", "deadline_exceeded")
    assert stopped["progress"]["step"] < stopped["progress"]["total"]
    assert stopped["images"] == []
