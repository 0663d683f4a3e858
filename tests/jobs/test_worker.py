"""The worker path in-process: real tiny pipeline, real database, real Redis cancel flags."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import Image

from core.redis import redis_client
from generator.engine import Engine
from jobs import services, worker
from jobs.models import FailureCode, GenerationJob, JobStatus
from tests.factories import GenerationJobFactory
from tests.support.waits import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def warm_engine(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setitem(worker._engines, settings.GENERATOR_DEFAULT_MODEL, engine)
    return engine


@pytest.fixture
def fast_progress(settings: Any) -> None:
    settings.PROGRESS_MIN_STEPS = 1
    settings.PROGRESS_MIN_SECONDS = 0


def claim(max_images: int = 4) -> list[GenerationJob]:
    return services.claim_next_jobs(worker_hostname="gpu@test", max_images=max_images)


def result_image(job: GenerationJob, index: int = 0) -> np.ndarray:
    job.refresh_from_db()
    with job.images.get(index=index).file.open("rb") as stored:
        return np.asarray(Image.open(stored).convert("RGB"), dtype=int)


def test_progress_is_written_monotonically_up_to_the_total(warm_engine: Engine) -> None:
    job = GenerationJobFactory(steps=6)
    [running] = claim()
    reporter = worker.ProgressReporter([running.pk], min_steps=1, min_seconds=0)
    seen: list[tuple[int, int]] = []

    def report_and_read(step: int, total: int) -> None:
        reporter(step, total)
        job.refresh_from_db()
        seen.append((job.progress_step, job.progress_total))

    warm_engine.generate([running.parameters], on_step=report_and_read)

    steps = [step for step, _ in seen]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert seen[-1][0] == seen[-1][1] >= 6


def test_progress_writes_are_throttled_but_the_last_step_is_always_written(warm_engine: Engine) -> None:
    GenerationJobFactory(steps=10)
    [running] = claim()
    reporter = worker.ProgressReporter([running.pk], min_steps=1, min_seconds=3600)

    with CaptureQueriesContext(connection) as queries:
        warm_engine.generate([running.parameters], on_step=reporter)

    progress_writes = [
        q for q in queries.captured_queries if "progress_step" in q["sql"] and "UPDATE" in q["sql"]
    ]
    assert len(progress_writes) == 1
    running.refresh_from_db()
    assert running.progress_step == running.progress_total > 0


def test_completed_job_stores_a_png_per_image_with_its_own_seed(warm_engine: Engine) -> None:
    job = GenerationJobFactory(num_images=2, width=96, height=64, seed=500)

    assert worker.process_next_batch(worker_hostname="gpu@test") == 1

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert [(image.index, image.seed) for image in job.images.all()] == [(0, 500), (1, 501)]
    assert result_image(job, 1).shape == (64, 96, 3)


def test_compatible_queued_jobs_run_as_one_batch_that_matches_single_runs(warm_engine: Engine) -> None:
    batched = [GenerationJobFactory(prompt=f"a fox number {n}", seed=n) for n in range(3)]
    other_size = GenerationJobFactory(width=128)

    jobs = claim(max_images=4)
    assert {job.pk for job in jobs} == {job.pk for job in batched}
    worker.run_batch(jobs)

    for job in batched:
        [alone] = warm_engine.generate([job.parameters])
        difference = np.abs(result_image(job) - np.asarray(alone.images[0], dtype=int)).max()
        assert difference <= 1  # documented tolerance: one 8-bit level
    other_size.refresh_from_db()
    assert other_size.status == JobStatus.QUEUED


def test_a_batch_never_exceeds_its_image_budget() -> None:
    GenerationJobFactory.create_batch(3, num_images=2)

    assert [job.num_images for job in claim(max_images=4)] == [2, 2]
    assert len(claim(max_images=4)) == 1


def test_cancelled_running_job_stops_at_the_next_step(warm_engine: Engine) -> None:
    GenerationJobFactory(steps=50)
    [running] = claim()
    services.job_cancel(job_id=running.pk)

    worker.run_batch([running])

    running.refresh_from_db()
    assert running.status == JobStatus.CANCELLED
    assert running.failure_code == FailureCode.CANCELLED
    assert running.progress_step == 0  # stopped at the first step callback, before any write
    assert not running.images.exists()


def test_cancelling_one_job_of_a_batch_lets_the_others_complete(
    warm_engine: Engine, fast_progress: None
) -> None:
    GenerationJobFactory.create_batch(2)
    first, second = claim()
    services.job_cancel(job_id=first.pk)

    worker.run_batch([first, second])

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (JobStatus.CANCELLED, JobStatus.COMPLETED)
    assert not first.images.exists() and second.images.count() == 1


def test_out_of_memory_fails_the_batch_and_the_next_job_still_succeeds(
    warm_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_call = type(warm_engine.pipeline).__call__
    calls = iter([True])

    def out_of_memory_once(pipeline: Any, *args: Any, **kwargs: Any) -> Any:
        if next(calls, False):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_call(pipeline, *args, **kwargs)

    monkeypatch.setattr(type(warm_engine.pipeline), "__call__", out_of_memory_once)
    doomed = GenerationJobFactory()
    worker.process_next_batch(worker_hostname="gpu@test")
    following = GenerationJobFactory()
    worker.process_next_batch(worker_hostname="gpu@test")

    doomed.refresh_from_db()
    following.refresh_from_db()
    assert (doomed.status, doomed.failure_code) == (JobStatus.FAILED, FailureCode.OUT_OF_MEMORY)
    assert following.status == JobStatus.COMPLETED


def test_unexpected_error_is_an_inference_error_with_the_traceback_only_in_the_log(
    warm_engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("expected all tensors to be on the same device")

    monkeypatch.setattr(type(warm_engine.pipeline), "__call__", broken)
    job = GenerationJobFactory()

    with caplog.at_level(logging.ERROR):
        worker.process_next_batch(worker_hostname="gpu@test")

    job.refresh_from_db()
    assert (job.status, job.failure_code) == (JobStatus.FAILED, FailureCode.INFERENCE_ERROR)
    assert "tensors" not in job.failure_message
    assert "Traceback" in caplog.text and "same device" in caplog.text


def test_worker_repeats_validation_and_fails_an_invalid_prompt(warm_engine: Engine, settings: Any) -> None:
    job = GenerationJobFactory(prompt="a fox " * 20)
    settings.JOB_LIMITS = {**settings.JOB_LIMITS, "prompt_max_chars": 50}

    worker.process_next_batch(worker_hostname="gpu@test")

    job.refresh_from_db()
    assert (job.status, job.failure_code) == (JobStatus.FAILED, FailureCode.INVALID_PROMPT)
    assert "50 characters" in job.failure_message


def test_prompt_beyond_the_token_window_completes_with_a_truncation_warning(warm_engine: Engine) -> None:
    job = GenerationJobFactory(prompt="a very detailed fox " * 10)

    worker.process_next_batch(worker_hostname="gpu@test")

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert job.warnings == ["prompt_truncated"]


@pytest.fixture
def stalled_redis_url() -> Iterator[str]:
    """A loopback server that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


def test_a_stalled_redis_cannot_hang_a_batch_s_cancel_check(
    settings: Any, stalled_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = stalled_redis_url
    settings.REDIS_SOCKET_TIMEOUT_SECONDS = 0.5
    reporter = worker.ProgressReporter([uuid.uuid4()], min_steps=100, min_seconds=0)

    with caplog.at_level(logging.WARNING, logger="jobs.worker"):
        checks = threading.Thread(target=lambda: [reporter(step, 10) for step in (1, 2, 3)], daemon=True)
        checks.start()
        checks.join(timeout=30)

    assert not checks.is_alive(), "the cancel check waited on Redis beyond its timeout"
    assert reporter.cancelled == set()
    failures = [record for record in caplog.records if "event=cancel_check_failed" in record.getMessage()]
    assert len(failures) == 1  # once per batch, not once per step


def test_heartbeat_keeps_the_batch_keys_alive_while_the_batch_runs_and_lets_them_expire_after(
    settings: Any,
) -> None:
    settings.WORKER_HEARTBEAT_SECONDS = 0.5  # each key lives 1.5 s unless refreshed
    jobs = [GenerationJobFactory(running=True) for _ in range(2)]
    keys = [f"jobs:heartbeat:{job.pk}" for job in jobs]
    client = redis_client()

    with worker.Heartbeat([job.pk for job in jobs], worker_hostname="gpu-9@test", interval=0.5):
        wait_for(lambda: client.exists(*keys) == 2, timeout=10)
        time.sleep(3)  # two lifetimes: only refreshed keys are still there
        during = client.mget(keys)
    wait_for(lambda: client.exists(*keys) == 0, timeout=10)

    assert during == ["gpu-9@test", "gpu-9@test"]
