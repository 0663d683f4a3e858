"""Every model family end to end: submitted over the API, run by a real worker process serving
a tiny model of each family, images stored, progress counted to the pipeline's own total, and
the same seed giving the same bytes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_django.fixtures import Settings as SettingsFixture

from jobs.models import GenerationJob, JobStatus
from tests.support.processes import WorkerProcess
from tests.support.waits import wait_for

QUEUE_PREFIX = "gpu-families"
STEPS = 3
# PNDM (SD 1.5's scheduler) runs one timestep more than asked; the others run as many.
STEP_TOTAL = {"sd15": STEPS + 1, "sdxl": STEPS, "sd3": STEPS, "flux": STEPS}


@pytest.fixture
def worker_of_every_family(
    settings: SettingsFixture, tiny_family_dirs: dict[str, Path]
) -> Iterator[WorkerProcess]:
    settings.GENERATOR_MODELS = {
        f"tiny-{family}": {"source": str(folder), "family": family}
        for family, folder in tiny_family_dirs.items()
    }
    settings.GENERATION_QUEUE = QUEUE_PREFIX
    settings.JOB_DEDUPE = False  # the same request twice must run twice
    worker = WorkerProcess(
        name="families",
        extra_env={
            "GENERATOR_MODELS": json.dumps(settings.GENERATOR_MODELS),
            "GENERATION_QUEUE": QUEUE_PREFIX,
        },
    )
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_every_family_runs_through_a_real_worker_with_its_step_total_and_seeded_bytes(
    api_client: Any, worker_of_every_family: WorkerProcess
) -> None:
    submitted: dict[str, list[str]] = {}
    for family in STEP_TOTAL:
        for _ in range(2):
            response = api_client.post(
                "/api/v1/jobs",
                {
                    "prompt": "a lighthouse at dusk",
                    "model": f"tiny-{family}",
                    "width": 64,
                    "height": 64,
                    "steps": STEPS,
                    "guidance_scale": 3.5,
                    "seed": 42,
                },
                format="json",
            )
            assert response.status_code == 202, response.json()
            submitted.setdefault(family, []).append(response.json()["id"])
    job_ids = [job_id for ids in submitted.values() for job_id in ids]

    def all_finished() -> bool:
        jobs = GenerationJob.objects.filter(pk__in=job_ids)
        assert not jobs.filter(status=JobStatus.FAILED).exists(), list(
            jobs.values("model", "failure_message")
        )
        return jobs.filter(status=JobStatus.COMPLETED).count() == len(job_ids)

    wait_for(all_finished, timeout=300)

    for family, (first_id, second_id) in submitted.items():
        body = api_client.get(f"/api/v1/jobs/{first_id}").json()
        assert (body["progress"]["step"], body["progress"]["total"]) == (STEP_TOTAL[family],) * 2, family
        first, second = (
            GenerationJob.objects.get(pk=job_id).images.get() for job_id in (first_id, second_id)
        )
        with first.file.open("rb") as one, second.file.open("rb") as other:
            assert one.read() == other.read(), family
