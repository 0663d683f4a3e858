"""Many GPU workers, one queue: three real worker processes on one PostgreSQL database.

Each worker logs ``event=started`` when its claim wins a job and ``event=completed`` when it
stores the result; the three logs together are the trace of who ran what, and how often.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsFixture

from jobs import selectors, services
from jobs.models import GenerationJob, JobStatus
from jobs.services import reaper
from jobs.tasks import generate_task
from tests.factories import GenerationJobFactory
from tests.support.processes import WorkerProcess
from tests.support.redis_state import redis_client
from tests.support.waits import wait_for

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3",
        reason="SQLite serialises every writer, so it cannot show workers racing for one queue",
    ),
]

CLIENTS = 10
JOBS_PER_CLIENT = 6
# The test's own GPU queue, so that no other test's worker takes part.
SCALE_QUEUE = "gpu-scale"
VICTIM_QUEUE = "gpu-scale-victim"
WORKER_ENV = {
    "GENERATION_QUEUE": SCALE_QUEUE,
    # Beats every second (keys live 3 s) against a reaper grace of 2 s: a dead peer shows in ~3 s.
    "WORKER_HEARTBEAT_SECONDS": "1",
    # Three workers share a few cores: one thread each, or their spinning threads starve each other.
    "OMP_NUM_THREADS": "1",
}
HEARTBEAT_GRACE_SECONDS = 2
CONCURRENT_CLAIMS = timedelta(seconds=1)
TRACE_LINE = re.compile(r"event=(started|completed) job=(\S+)")


@pytest.fixture(scope="module")
def three_gpu_workers(
    django_db_setup: None, django_db_blocker: Any, tiny_model_dir: Path
) -> Iterator[tuple[WorkerProcess, WorkerProcess, WorkerProcess]]:
    """Three GPU workers on one queue; the last also listens on a queue of its own, so a test
    can hand it the batch it is about to lose."""
    workers = (
        WorkerProcess(name="scale-a", extra_env=WORKER_ENV),
        WorkerProcess(name="scale-b", extra_env=WORKER_ENV),
        WorkerProcess(
            name="scale-victim", queues=f"{SCALE_QUEUE}.tiny-sd,{VICTIM_QUEUE}", extra_env=WORKER_ENV
        ),
    )
    try:
        for worker in workers:
            worker.wait_ready()
        yield workers
    finally:
        for worker in workers:
            worker.stop()


@pytest.fixture(autouse=True)
def reaper_wakes_the_test_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper, "wake_gpu_worker", wake_a_scale_worker)


def wake_a_scale_worker(model: str) -> None:
    generate_task.apply_async(kwargs={"model": model}, queue=f"{SCALE_QUEUE}.{model}")


def trace(workers: tuple[WorkerProcess, ...], job_ids: set[str]) -> dict[str, Counter[str]]:
    """``{"started"|"completed": Counter(job id)}`` over every worker's log."""
    counts: dict[str, Counter[str]] = {"started": Counter(), "completed": Counter()}
    for worker in workers:
        for event, job_id in TRACE_LINE.findall(Path(worker.log_path).read_text()):
            if job_id in job_ids:
                counts[event][job_id] += 1
    return counts


def compatibility(job: GenerationJob) -> tuple[object, ...]:
    return (job.model, job.width, job.height, job.steps, job.guidance_scale, job.scheduler)


def queue_jobs(
    *, steps_of_client: dict[int, int], jobs_per_client: int, **fields: object
) -> list[GenerationJob]:
    """Client by client, oldest first: in plain arrival order the last client would wait for all."""
    jobs = []
    with transaction.atomic():  # the workers see the whole queue at once
        for client, steps in steps_of_client.items():
            for _ in range(jobs_per_client):
                jobs.append(
                    GenerationJobFactory(
                        client_ip=f"198.51.100.{client + 1}",
                        steps=steps,
                        **fields,
                    )
                )
    return jobs


def test_three_workers_drain_sixty_jobs_of_ten_clients_each_once_in_turns_in_compatible_batches(
    three_gpu_workers: tuple[WorkerProcess, WorkerProcess, WorkerProcess],
) -> None:
    # Half the clients ask for 2 steps, half for 3: two shapes that may never share a batch.
    jobs = queue_jobs(steps_of_client={c: 2 + c % 2 for c in range(CLIENTS)}, jobs_per_client=JOBS_PER_CLIENT)
    job_ids = {str(job.pk) for job in jobs}
    for job in jobs:
        wake_a_scale_worker(job.model)

    def all_completed() -> bool:
        return GenerationJob.objects.filter(pk__in=job_ids, status=JobStatus.COMPLETED).count() == len(jobs)

    wait_for(all_completed, timeout=180, interval=0.5)

    finished = {str(job.pk): job for job in GenerationJob.objects.filter(pk__in=job_ids)}
    # Each job ran exactly once: one claim won it, one result was stored.
    counts = trace(three_gpu_workers, job_ids)
    assert counts["started"] == counts["completed"] == Counter(dict.fromkeys(job_ids, 1))
    assert all(job.requeue_count == 0 and job.images.count() == 1 for job in finished.values())
    hostnames = {worker.hostname for worker in three_gpu_workers}
    assert {job.worker_hostname for job in finished.values()} <= hostnames

    # A batch is the jobs one worker claimed together: one worker, one started_at.
    batches: dict[tuple[str, object], list[GenerationJob]] = {}
    for job in finished.values():
        batches.setdefault((job.worker_hostname, job.started_at), []).append(job)
    for batch in batches.values():
        assert len({compatibility(job) for job in batch}) == 1
        assert sum(job.num_images for job in batch) <= settings.GENERATION_BATCH_IMAGES

    # Fair order across workers: every claim served the client whose turn it was.
    assert_each_claim_served_a_client_whose_turn_it_was(batches)


def assert_each_claim_served_a_client_whose_turn_it_was(
    batches: dict[tuple[str, object], list[GenerationJob]],
) -> None:
    """What the fair queue promises (docs/queue.md, *Many workers*), checked claim by claim from
    the jobs' start times: a claim at ``T`` includes a client that, among the clients with a job
    still waiting at ``T``, had the least compute served before ``T`` (all weigh 1 here), ties
    going to the never served, then to the least recently served.

    Claims of different workers less than ``CONCURRENT_CLAIMS`` apart may have read the queue
    before each other's claim committed, so they are not held to each other's order.
    """
    jobs = [job for batch in batches.values() for job in batch]
    for (_worker, claimed_at), batch in batches.items():
        assert isinstance(claimed_at, datetime)

        def turn(
            client: str, seen_before: datetime, now: datetime = claimed_at
        ) -> tuple[Decimal, bool, datetime]:
            served = [
                job
                for job in jobs
                if job.client_network == client and job.started_at and job.started_at < seen_before
            ]
            units = sum((job.cost_units for job in served), Decimal(0))
            return (units, bool(served), max((job.started_at for job in served), default=now))

        waiting = {
            job.client_network
            for job in jobs
            if job.started_at and job.started_at > claimed_at + CONCURRENT_CLAIMS
        }
        if waiting:
            # Another worker's claim just before this one may not have been committed when this
            # one read the queue: the served client is judged on what it surely saw.
            served_now = min(turn(job.client_network, claimed_at - CONCURRENT_CLAIMS) for job in batch)
            assert served_now <= min(turn(client, claimed_at) for client in waiting), (claimed_at, batch)


def test_jobs_of_a_worker_killed_mid_batch_finish_on_the_other_two_and_no_job_runs_twice_after_completion(
    three_gpu_workers: tuple[WorkerProcess, WorkerProcess, WorkerProcess], settings: SettingsFixture
) -> None:
    settings.REAPER_HEARTBEAT_GRACE_SECONDS = HEARTBEAT_GRACE_SECONDS
    *survivors, victim = three_gpu_workers
    # Seconds per batch on a CPU: long enough to be killed mid-batch, short enough to run again.
    jobs = queue_jobs(steps_of_client={c: 50 for c in range(4)}, jobs_per_client=2)
    job_ids = {str(job.pk) for job in jobs}
    assert {worker.hostname for worker in three_gpu_workers} <= selectors.live_gpu_workers()

    generate_task.apply_async(queue=VICTIM_QUEUE)

    def victims_batch() -> set[str]:
        running = GenerationJob.objects.filter(
            pk__in=job_ids, status=JobStatus.RUNNING, worker_hostname=victim.hostname
        )
        held = {str(pk) for pk in running.values_list("pk", flat=True)}
        heartbeats = redis_client().mget([f"jobs:heartbeat:{job_id}" for job_id in held])
        return held if held and all(beat == victim.hostname.encode() for beat in heartbeats) else set()

    lost = wait_for(victims_batch, timeout=60, interval=0.05)
    for job in jobs:
        wake_a_scale_worker(job.model)
    victim.kill()
    killed_at = time.monotonic()
    redis_client().set(services.HEARTBEAT_WATCHED_SINCE_KEY, time.time() - 3600)

    def reaped_and_all_completed() -> bool:
        services.reap_stale_jobs()
        return GenerationJob.objects.filter(pk__in=job_ids, status=JobStatus.COMPLETED).count() == len(jobs)

    wait_for(reaped_and_all_completed, timeout=180, interval=0.5)

    finished = {str(job.pk): job for job in GenerationJob.objects.filter(pk__in=job_ids)}
    survivor_hostnames = {worker.hostname for worker in survivors}
    for job_id, job in finished.items():
        assert job.images.count() == 1
        if job_id in lost:
            assert (job.requeue_count, job.worker_hostname in survivor_hostnames) == (1, True)
            assert job.finished_at is not None and job.started_at is not None
            assert job.started_at >= timezone.now() - timedelta(seconds=time.monotonic() - killed_at)
        else:
            assert job.requeue_count == 0
    # The lost batch started twice (on the victim, then on a survivor); every other job once.
    # Each job stored its result once, so nothing ran again after completing.
    counts = trace(three_gpu_workers, job_ids)
    assert counts["started"] == Counter({job_id: 2 if job_id in lost else 1 for job_id in job_ids})
    assert counts["completed"] == Counter(dict.fromkeys(job_ids, 1))
    assert survivor_hostnames <= selectors.live_gpu_workers()
    wait_for(lambda: victim.hostname not in selectors.live_gpu_workers(), timeout=30)
