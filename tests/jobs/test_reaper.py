"""The reaper: jobs whose worker died, wake-ups the broker lost, result files past retention."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsFixture
from rest_framework.test import APIClient

from config.celery import app as celery_app
from jobs import selectors, services
from jobs.models import FailureCode, GenerationJob, JobStatus
from jobs.tasks import generate_task, reap_stale_jobs_task
from tests.factories import GenerationJobFactory, JobImageFactory
from tests.support.processes import WorkerProcess, free_port
from tests.support.redis_state import redis_client
from tests.support.waits import wait_for

pytestmark = pytest.mark.django_db


def past_the_hard_limit_and_grace() -> datetime:
    return timezone.now() - timedelta(
        seconds=settings.GENERATION_TIME_LIMIT + settings.REAPER_GRACE_SECONDS + 1
    )


def queued_for(job: GenerationJob, *, seconds: float) -> None:
    GenerationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))


def flush_redis() -> None:
    redis_client().flushdb()


def heartbeat_of(job: GenerationJob) -> bytes | None:
    """The worker named by a job's heartbeat key (the key operators read with redis-cli)."""
    value: bytes | None = redis_client().get(f"jobs:heartbeat:{job.pk}")
    return value


def reaper_watched_redis_for(*, seconds: float) -> None:
    """As if the reaper had first seen this Redis dataset ``seconds`` ago."""
    redis_client().set(services.HEARTBEAT_WATCHED_SINCE_KEY, time.time() - seconds)


@pytest.fixture
def heartbeats_trusted() -> None:
    """The reaper has watched this Redis longer than the grace: a missing heartbeat counts."""
    reaper_watched_redis_for(seconds=3600)


def claimed(*, seconds_ago: float, **fields: object) -> GenerationJob:
    """A running job some worker claimed ``seconds_ago`` and has written no heartbeat for."""
    return GenerationJobFactory(
        running=True, started_at=timezone.now() - timedelta(seconds=seconds_ago), **fields
    )


def lost_job(**fields: object) -> GenerationJob:
    """A job some worker claimed, and then died on, long ago."""
    return GenerationJobFactory(
        running=True,
        started_at=past_the_hard_limit_and_grace(),
        worker_hostname="gpu-dead@test",
        progress_step=3,
        progress_total=4,
        **fields,
    )


def assert_queued_again_once(job: GenerationJob) -> None:
    """Back in the queue as if never claimed, with the re-queue counted."""
    job.refresh_from_db()
    assert (job.status, job.requeue_count, job.worker_hostname, job.started_at) == (
        JobStatus.QUEUED,
        1,
        "",
        None,
    )
    assert (job.progress_step, job.progress_total) == (0, 0)


def test_reaper_requeues_a_job_whose_worker_was_lost_the_first_time() -> None:
    job = lost_job()

    result = services.reap_stale_jobs()

    assert result == services.ReapResult(requeued=1, failed=0)
    assert_queued_again_once(job)


def test_reaper_fails_a_job_whose_worker_was_lost_again_as_worker_lost() -> None:
    job = lost_job(requeue_count=1)

    result = services.reap_stale_jobs()

    job.refresh_from_db()
    assert result == services.ReapResult(requeued=0, failed=1)
    assert (job.status, job.failure_code) == (JobStatus.FAILED, FailureCode.WORKER_LOST)
    assert job.finished_at is not None


def test_reaper_without_requeues_fails_a_lost_job_at_once(settings: SettingsFixture) -> None:
    settings.REAPER_MAX_REQUEUES = 0
    job = lost_job()

    services.reap_stale_jobs()

    job.refresh_from_db()
    assert (job.status, job.failure_code) == (JobStatus.FAILED, FailureCode.WORKER_LOST)


def test_reaper_leaves_jobs_within_the_hard_limit_and_grace_and_finished_jobs_alone(
    heartbeats_trusted: None,
) -> None:
    long_but_alive = claimed(seconds_ago=settings.GENERATION_TIME_LIMIT)
    services.job_record_heartbeat(job_ids=[long_but_alive.pk], worker_hostname="gpu-1@test")
    finished_long_ago = GenerationJobFactory(completed=True, started_at=past_the_hard_limit_and_grace())

    result = services.reap_stale_jobs()

    assert result == services.ReapResult(requeued=0, failed=0)
    assert GenerationJob.objects.get(pk=long_but_alive.pk).status == JobStatus.RUNNING
    assert GenerationJob.objects.get(pk=finished_long_ago.pk).status == JobStatus.COMPLETED


def test_reaper_requeues_a_running_job_whose_heartbeat_stopped_long_before_the_hard_limit(
    heartbeats_trusted: None,
) -> None:
    job = claimed(seconds_ago=settings.REAPER_HEARTBEAT_GRACE_SECONDS + 1, progress_step=3, progress_total=4)

    result = services.reap_stale_jobs()

    assert result == services.ReapResult(requeued=1, failed=0)
    assert_queued_again_once(job)


def test_reaper_fails_a_job_whose_heartbeat_stopped_again_as_worker_lost(heartbeats_trusted: None) -> None:
    job = claimed(seconds_ago=settings.REAPER_HEARTBEAT_GRACE_SECONDS + 1, requeue_count=1)

    result = services.reap_stale_jobs()

    job.refresh_from_db()
    assert result == services.ReapResult(requeued=0, failed=1)
    assert (job.status, job.failure_code) == (JobStatus.FAILED, FailureCode.WORKER_LOST)


def test_reaper_leaves_a_job_whose_worker_still_beats_alone(heartbeats_trusted: None) -> None:
    job = claimed(seconds_ago=settings.REAPER_HEARTBEAT_GRACE_SECONDS + 1)
    services.job_record_heartbeat(job_ids=[job.pk], worker_hostname="gpu-alive@test")

    result = services.reap_stale_jobs()

    assert result == services.ReapResult(requeued=0, failed=0)
    assert GenerationJob.objects.get(pk=job.pk).status == JobStatus.RUNNING
    assert heartbeat_of(job) == b"gpu-alive@test"


def test_reaper_gives_a_just_claimed_job_the_grace_to_write_its_first_heartbeat(
    heartbeats_trusted: None,
) -> None:
    job = claimed(seconds_ago=settings.REAPER_HEARTBEAT_GRACE_SECONDS - 10)

    assert services.reap_stale_jobs() == services.ReapResult(requeued=0, failed=0)
    assert GenerationJob.objects.get(pk=job.pk).status == JobStatus.RUNNING


def test_reaper_counts_missing_heartbeats_only_once_it_has_watched_a_restarted_redis_for_the_grace() -> None:
    # Redis restarted empty: every live worker's heartbeat is gone until its next beat.
    flush_redis()
    job = claimed(seconds_ago=settings.REAPER_HEARTBEAT_GRACE_SECONDS + 1)

    right_after_the_restart = services.reap_stale_jobs()
    reaper_watched_redis_for(seconds=settings.REAPER_HEARTBEAT_GRACE_SECONDS - 1)
    almost_a_grace_later = services.reap_stale_jobs()
    reaper_watched_redis_for(seconds=settings.REAPER_HEARTBEAT_GRACE_SECONDS + 1)
    a_grace_later = services.reap_stale_jobs()

    assert (right_after_the_restart.requeued, almost_a_grace_later.requeued, a_grace_later.requeued) == (
        0,
        0,
        1,
    )
    assert GenerationJob.objects.get(pk=job.pk).status == JobStatus.QUEUED


def test_reaper_still_reaps_past_the_hard_limit_when_redis_cannot_be_read(
    settings: SettingsFixture,
) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    lost = lost_job()
    quiet = claimed(seconds_ago=settings.REAPER_HEARTBEAT_GRACE_SECONDS + 1)

    result = services.reap_stale_jobs()

    assert result == services.ReapResult(requeued=1, failed=0)
    assert GenerationJob.objects.get(pk=lost.pk).status == JobStatus.QUEUED
    assert GenerationJob.objects.get(pk=quiet.pk).status == JobStatus.RUNNING


def test_heartbeat_grace_zero_leaves_lost_jobs_to_the_hard_limit(
    settings: SettingsFixture, heartbeats_trusted: None
) -> None:
    settings.REAPER_HEARTBEAT_GRACE_SECONDS = 0
    quiet = claimed(seconds_ago=settings.GENERATION_TIME_LIMIT)
    lost = lost_job()

    result = services.reap_stale_jobs()

    assert result == services.ReapResult(requeued=1, failed=0)
    assert GenerationJob.objects.get(pk=quiet.pk).status == JobStatus.RUNNING
    assert GenerationJob.objects.get(pk=lost.pk).status == JobStatus.QUEUED


def test_republish_sends_only_the_wakeups_missing_for_jobs_waiting_long_enough_to_their_models_queues() -> (
    None
):
    # Runs before any worker test (pytest-django orders transactional tests last), so no
    # worker consumes the wake-ups this test counts.
    flush_redis()
    for model in ("tiny-sd", "tiny-sd", "tiny-sd", "other-model", "other-model"):
        queued_for(GenerationJobFactory(model=model), seconds=settings.REAPER_REPUBLISH_AFTER_SECONDS + 5)
    GenerationJobFactory()  # just queued: its own wake-up is on its way

    try:
        first = services.republish_queued_jobs()
        pending = {
            model: selectors.gpu_queue_pending_messages(model=model) for model in ("tiny-sd", "other-model")
        }
        second = services.republish_queued_jobs()
        flush_redis()  # Redis restarts empty
        after_loss = services.republish_queued_jobs()
    finally:
        flush_redis()

    assert (first, pending, second, after_loss) == (5, {"tiny-sd": 3, "other-model": 2}, 0, 5)


def test_retention_deletes_old_result_files_and_keeps_the_jobs(
    settings: SettingsFixture, api_client: APIClient
) -> None:
    settings.RESULT_RETENTION_DAYS = 30
    old = GenerationJobFactory(completed=True, finished_at=timezone.now() - timedelta(days=31), num_images=2)
    old_files = [JobImageFactory(job=old, index=index).file.name for index in range(2)]
    recent = JobImageFactory(
        job=GenerationJobFactory(completed=True, finished_at=timezone.now() - timedelta(days=29))
    )

    deleted = services.delete_expired_results()

    assert deleted == 2
    assert [default_storage.exists(name) for name in old_files] == [False, False]
    assert default_storage.exists(recent.file.name)
    old.refresh_from_db()
    assert old.status == JobStatus.COMPLETED and old.results_deleted_at is not None
    assert not old.images.exists()
    body = api_client.get(f"/api/v1/jobs/{old.pk}").json()
    assert (body["status"], body["image_url"], body["images"]) == ("completed", None, [])


def test_retention_keeps_a_file_that_a_newer_deduplicated_job_still_shows(settings: SettingsFixture) -> None:
    settings.RESULT_RETENTION_DAYS = 30
    original = JobImageFactory(
        job=GenerationJobFactory(completed=True, finished_at=timezone.now() - timedelta(days=31))
    )
    duplicate_job = GenerationJobFactory(completed=True, deduplicated_from=original.job)
    JobImageFactory(job=duplicate_job, file=original.file.name)

    assert services.delete_expired_results() == 0

    assert not original.job.images.exists()
    assert default_storage.exists(original.file.name)
    assert duplicate_job.images.get().file.name == original.file.name


def test_retention_is_off_by_default() -> None:
    image = JobImageFactory(
        job=GenerationJobFactory(completed=True, finished_at=timezone.now() - timedelta(days=3650))
    )

    assert services.delete_expired_results() == 0
    assert default_storage.exists(image.file.name)


def test_reaper_task_is_scheduled_by_beat_and_never_routed_to_the_gpu_queue() -> None:
    entry = celery_app.conf.beat_schedule["reap-stale-jobs"]
    route = celery_app.amqp.router.route(dict(entry["options"]), entry["task"])
    unrouted = celery_app.amqp.router.route({}, entry["task"])

    assert entry["task"] == reap_stale_jobs_task.name
    assert entry["schedule"] == settings.REAPER_INTERVAL_SECONDS
    assert route["queue"].name == unrouted["queue"].name == "maintenance" != settings.GENERATION_QUEUE


def test_reaper_task_reaps_lost_jobs_republishes_wakeups_and_deletes_expired_files(
    settings: SettingsFixture,
) -> None:
    settings.RESULT_RETENTION_DAYS = 1
    flush_redis()
    lost = lost_job(requeue_count=1)
    waiting = GenerationJobFactory()
    queued_for(waiting, seconds=settings.REAPER_REPUBLISH_AFTER_SECONDS + 5)
    expired = JobImageFactory(
        job=GenerationJobFactory(completed=True, finished_at=timezone.now() - timedelta(days=2))
    )

    try:
        reap_stale_jobs_task()
        pending = selectors.gpu_queue_pending_messages(model=waiting.model)
    finally:
        flush_redis()

    assert GenerationJob.objects.get(pk=lost.pk).failure_code == FailureCode.WORKER_LOST
    assert pending == 1
    assert not default_storage.exists(expired.file.name)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_job_requeued_by_the_reaper_runs_again_on_a_live_worker_and_completes(
    gpu_worker: WorkerProcess,
) -> None:
    job = lost_job()

    assert services.reap_stale_jobs().requeued == 1

    def completed() -> bool:
        return GenerationJob.objects.get(pk=job.pk).status == JobStatus.COMPLETED

    wait_for(completed, timeout=60)
    job.refresh_from_db()
    assert job.worker_hostname == gpu_worker.hostname and job.requeue_count == 1
    assert job.images.count() == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_queued_job_whose_wakeup_vanished_is_republished_and_completes(gpu_worker: WorkerProcess) -> None:
    # A row with no wake-up, then Redis loses everything: a restart without persistence.
    job = GenerationJobFactory()
    flush_redis()

    def status() -> str:
        return GenerationJob.objects.get(pk=job.pk).status

    # Nothing else will ever start it: the live worker only claims work when woken.
    time.sleep(3)
    assert status() == JobStatus.QUEUED
    queued_for(job, seconds=settings.REAPER_REPUBLISH_AFTER_SECONDS + 5)

    assert services.republish_queued_jobs() == 1
    wait_for(lambda: status() == JobStatus.COMPLETED, timeout=60)


# A worker that beats every second (its key lives 3 s), and a reaper with a 2 s grace.
FAST_HEARTBEAT = {"WORKER_HEARTBEAT_SECONDS": "1"}
FAST_HEARTBEAT_GRACE_SECONDS = 2


def worker_of_its_own(name: str) -> WorkerProcess:
    """A GPU worker on a queue of its own, so that only the wake-ups a test sends reach it."""
    return WorkerProcess(name=name, extra_env={"GENERATION_QUEUE": f"gpu-{name}", **FAST_HEARTBEAT})


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_job_of_a_killed_worker_is_requeued_once_its_heartbeat_expires_and_a_live_worker_completes_it(
    gpu_worker: WorkerProcess, settings: SettingsFixture
) -> None:
    settings.REAPER_HEARTBEAT_GRACE_SECONDS = FAST_HEARTBEAT_GRACE_SECONDS
    doomed = worker_of_its_own("doomed")
    try:
        doomed.wait_ready()
        # Seconds on a CPU: long enough to be killed mid-job, short enough to run again.
        job = GenerationJobFactory(width=128, height=128, steps=100)
        generate_task.apply_async(queue="gpu-doomed.tiny-sd")
        wait_for(lambda: heartbeat_of(job) == doomed.hostname.encode())
        doomed.kill()
    finally:
        doomed.stop()
    job.refresh_from_db()
    assert (job.status, job.worker_hostname) == (JobStatus.RUNNING, doomed.hostname)
    reaper_watched_redis_for(seconds=3600)

    wait_for(lambda: heartbeat_of(job) is None, timeout=30)
    assert services.reap_stale_jobs().requeued == 1

    wait_for(lambda: GenerationJob.objects.get(pk=job.pk).status == JobStatus.COMPLETED, timeout=300)
    job.refresh_from_db()
    assert (job.worker_hostname, job.requeue_count, job.images.count()) == (gpu_worker.hostname, 1, 1)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_slow_job_on_a_live_worker_is_not_reaped_after_the_grace_while_its_worker_beats(
    tiny_model_dir: Any, settings: SettingsFixture
) -> None:
    settings.REAPER_HEARTBEAT_GRACE_SECONDS = FAST_HEARTBEAT_GRACE_SECONDS
    # Past the grace and two lifetimes of a heartbeat key: only refreshed keys are still there.
    watch_seconds = FAST_HEARTBEAT_GRACE_SECONDS + 2 * 3
    slow = worker_of_its_own("slow")
    try:
        slow.wait_ready()
        reaper_watched_redis_for(seconds=3600)
        # Far longer than the watch on any CPU (the largest job the limits allow: four images of
        # 1024 px, 100 steps); cancelled once the test has seen enough.
        job = GenerationJobFactory(width=1024, height=1024, steps=100, num_images=4)
        generate_task.apply_async(queue="gpu-slow.tiny-sd")
        wait_for(lambda: GenerationJob.objects.get(pk=job.pk).status == JobStatus.RUNNING)
        job.refresh_from_db()
        assert job.started_at is not None
        watched_until = job.started_at + timedelta(seconds=watch_seconds)
        results = []
        while timezone.now() < watched_until:
            results.append(services.reap_stale_jobs())
            time.sleep(0.5)
        job.refresh_from_db()
        assert (job.status, job.worker_hostname, job.requeue_count) == (JobStatus.RUNNING, slow.hostname, 0)
        assert set(results) == {services.ReapResult(requeued=0, failed=0)}
        assert heartbeat_of(job) == slow.hostname.encode()
        services.job_cancel(job_id=job.pk)
    finally:
        slow.stop()
