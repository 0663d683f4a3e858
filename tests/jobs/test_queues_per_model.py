"""Queues per model: wake-ups go to ``<GENERATION_QUEUE>.<model>``, a worker consumes the queues
of the models it serves, and a job's place in line counts only jobs of its model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_django.fixtures import Settings as SettingsFixture

from config.celery import generation_queue
from jobs import selectors
from jobs.models import GenerationJob, JobStatus
from tests.factories import GenerationJobFactory
from tests.support.processes import WorkerProcess
from tests.support.waits import wait_for

QUEUE_PREFIX = "gpu-two-models"


def two_models(source: Path) -> dict[str, dict[str, str]]:
    return {name: {"source": str(source), "family": "sd15"} for name in ("tiny-a", "tiny-b")}


@pytest.mark.django_db
def test_a_jobs_place_in_line_and_estimate_count_only_jobs_of_its_model(settings: SettingsFixture) -> None:
    settings.GENERATOR_MODELS = two_models(Path(settings.GENERATOR_MODEL))
    other_model_first = GenerationJobFactory(model="tiny-b", client_ip="198.51.100.1")
    GenerationJobFactory(model="tiny-b", client_ip="198.51.100.1", running=True)
    first = GenerationJobFactory(model="tiny-a", client_ip="198.51.100.2")
    second = GenerationJobFactory(model="tiny-a", client_ip="198.51.100.2")

    positions = [selectors.job_queue_position(job=job) for job in (other_model_first, first, second)]
    first_estimate = selectors.job_queue_estimate(job=first)
    other_estimate = selectors.job_queue_estimate(job=other_model_first)

    assert positions == [1, 1, 2]
    # Nothing of its model runs before it; the tiny-b job waits for tiny-b's running one.
    assert first_estimate is not None and other_estimate is not None
    assert first_estimate.estimated_start_at < other_estimate.estimated_start_at


def test_a_models_queue_is_named_after_the_prefix_and_the_model(settings: SettingsFixture) -> None:
    settings.GENERATION_QUEUE = "gpu-east"

    assert generation_queue("tiny-sdxl") == "gpu-east.tiny-sdxl"


@pytest.fixture
def worker_per_model(settings: SettingsFixture, tiny_model_dir: Path) -> Iterator[dict[str, WorkerProcess]]:
    """Two GPU workers on one registry of two models, each serving one of them."""
    settings.GENERATOR_MODELS = two_models(tiny_model_dir)
    settings.GENERATION_QUEUE = QUEUE_PREFIX
    env = {"GENERATOR_MODELS": json.dumps(settings.GENERATOR_MODELS), "GENERATION_QUEUE": QUEUE_PREFIX}
    workers = {
        model: WorkerProcess(name=model, models=model, extra_env=env) for model in ("tiny-a", "tiny-b")
    }
    try:
        for worker in workers.values():
            worker.wait_ready()
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_two_workers_serving_different_models_each_run_only_their_models_jobs(
    api_client: Any, worker_per_model: dict[str, WorkerProcess]
) -> None:
    submitted = {}
    for model in ("tiny-b", "tiny-a", "tiny-b", "tiny-a"):
        response = api_client.post(
            "/api/v1/jobs",
            {"prompt": f"a lighthouse for {model}", "width": 64, "height": 64, "steps": 2, "model": model},
            format="json",
        )
        assert response.status_code == 202, response.json()
        submitted[response.json()["id"]] = model

    def all_completed() -> bool:
        jobs = GenerationJob.objects.filter(pk__in=list(submitted))
        assert not jobs.filter(status=JobStatus.FAILED).exists()
        return jobs.filter(status=JobStatus.COMPLETED).count() == len(submitted)

    wait_for(all_completed, timeout=180)

    ran_on = dict(GenerationJob.objects.filter(pk__in=list(submitted)).values_list("pk", "worker_hostname"))
    assert {str(pk): host for pk, host in ran_on.items()} == {
        job_id: worker_per_model[model].hostname for job_id, model in submitted.items()
    }
