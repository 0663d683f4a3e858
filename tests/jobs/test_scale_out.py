"""Many GPU workers, one queue: three real worker processes on one PostgreSQL database.

Each worker logs ``event=started`` when its claim wins a job and ``event=completed`` when it
stores the result; the three logs together are the trace of who ran what, and how often.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from itertools import combinations
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsFixture

from jobs import selectors, services
from jobs.models import GenerationJob, JobStatus
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
# Beats every second (keys live 3 s) against a reaper grace of 2 s: a dead peer shows in ~3 s.
FAST_HEARTBEAT = {"WORKER_HEARTBEAT_SECONDS": "1"}
HEARTBEAT_GRACE_SECONDS = 2
VICTIM_QUEUE = "gpu-victim"
TRACE_LINE = re.compile(r"event=(started|completed) job=(\S+)")


@pytest.fixture(scope="module")
def three_gpu_workers(gpu_worker: WorkerProcess) -> Iterator[tuple[WorkerProcess, WorkerProcess, WorkerProcess]]:
    """The shared ``gpu`` worker and two more on the same queue; the last also listens on a
    queue of its own, so a test can hand it the batch it is about to lose."""
    peer = WorkerProcess(name="peer", extra_env=FAST_HEARTBEAT)
    victim = WorkerProcess(name="victim", queues=f"gpu,{VICTIM_QUEUE}", extra_env=FAST_HEARTBEAT)
    try:
        peer.wait_ready()
        victim.wait_ready()
        yield gpu_worker, peer, victim
    finally:
        peer.stop()
        victim.stop()


def trace(workers: tuple[WorkerProcess, ...], job_ids: set[str]) -> dict[str, Counter[str]]:
    """``{"started"|"completed": Counter(job id)}`` over every worker's log."""
    counts: dict[str, Counter[str]] = {"started": Counter(), "completed": Counter()}
    for worker in workers:
        for event, job_id in TRACE_LINE.findall(Path(worker.log_path).read_text()):
            if job_id in job_ids:
                counts[event][job_id] += 1
    return counts


def compatibility(job: GenerationJob) -> tuple[object, ...]:
    return (job.model_name, job.width, job.height, job.steps, job.guidance_scale, job.scheduler)


def queue_jobs(*, steps_of_client: dict[int, int], jobs_per_client: int, **fields: object) -> list[GenerationJob]:
    """Client by client, oldest first: in plain arrival order the last client would wait for all."""
    start = timezone.now()
    jobs = []
    with transaction.atomic():  # the workers see the whole queue at once
        for client, steps in steps_of_client.items():
            for _ in range(jobs_per_client):
                jobs.append(
                    GenerationJobFactory(
                        client_ip=f"198.51.100.{client + 1}",
                        steps=steps,
                        created_at=start + timedelta(milliseconds=len(jobs)),
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
    for _ in jobs:
        generate_task.delay()

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

    # Fair order across workers: clients take turns, so a client's k-th job never starts
    # after another client's (k+2)-th. (Claims that race may swap neighbouring turns.)
    turn = {}
    for client_jobs in _by_client(jobs).values():
        turn.update({str(job.pk): k for k, job in enumerate(client_jobs)})
    for first, second in combinations(finished.values(), 2):
        earlier, later = sorted((first, second), key=lambda job: turn[str(job.pk)])
        if turn[str(later.pk)] >= turn[str(earlier.pk)] + 2:
            assert earlier.started_at is not None and later.started_at is not None
            assert earlier.started_at <= later.started_at, (turn[str(earlier.pk)], turn[str(later.pk)])


def _by_client(jobs: list[GenerationJob]) -> dict[str, list[GenerationJob]]:
    clients: dict[str, list[GenerationJob]] = {}
    for job in sorted(jobs, key=lambda job: job.created_at):
        clients.setdefault(job.client_network, []).append(job)
    return clients


def test_jobs_of_a_worker_killed_mid_batch_finish_on_the_other_two_and_no_job_runs_twice_after_completion(
    three_gpu_workers: tuple[WorkerProcess, WorkerProcess, WorkerProcess], settings: SettingsFixture
) -> None:
    settings.REAPER_HEARTBEAT_GRACE_SECONDS = HEARTBEAT_GRACE_SECONDS
    *survivors, victim = three_gpu_workers
    # Seconds per batch on a CPU: long enough to be killed mid-batch, short enough to run again.
    jobs = queue_jobs(steps_of_client={c: 40 for c in range(4)}, jobs_per_client=2, width=128, height=128)
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
    for _ in range(len(jobs)):
        generate_task.delay()
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
