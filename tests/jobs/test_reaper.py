"""The reaper: jobs whose worker died, wake-ups the broker lost, result files past retention."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
import redis
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsFixture
from rest_framework.test import APIClient

from config.celery import app as celery_app
from jobs import selectors, services
from jobs.models import FailureCode, GenerationJob, JobStatus
from jobs.tasks import reap_stale_jobs_task
from tests.conftest import WorkerProcess, wait_for
from tests.factories import GenerationJobFactory, JobImageFactory

pytestmark = pytest.mark.django_db


def past_the_hard_limit_and_grace() -> datetime:
    return timezone.now() - timedelta(
        seconds=settings.GENERATION_TIME_LIMIT + settings.REAPER_GRACE_SECONDS + 1
    )


def queued_for(job: GenerationJob, *, seconds: float) -> None:
    GenerationJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))


def flush_redis() -> None:
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


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


def test_reaper_requeues_a_job_whose_worker_was_lost_the_first_time() -> None:
    job = lost_job()

    result = services.reap_stale_jobs()

    job.refresh_from_db()
    assert result == services.ReapResult(requeued=1, failed=0)
    assert (job.status, job.requeue_count, job.worker_hostname, job.started_at) == (
        JobStatus.QUEUED,
        1,
        "",
        None,
    )
    assert (job.progress_step, job.progress_total) == (0, 0)


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


def test_reaper_leaves_jobs_within_the_hard_limit_and_grace_and_finished_jobs_alone() -> None:
    long_but_alive = GenerationJobFactory(
        running=True, started_at=timezone.now() - timedelta(seconds=settings.GENERATION_TIME_LIMIT)
    )
    finished_long_ago = GenerationJobFactory(completed=True, started_at=past_the_hard_limit_and_grace())

    result = services.reap_stale_jobs()

    assert result == services.ReapResult(requeued=0, failed=0)
    assert GenerationJob.objects.get(pk=long_but_alive.pk).status == JobStatus.RUNNING
    assert GenerationJob.objects.get(pk=finished_long_ago.pk).status == JobStatus.COMPLETED


def test_republish_sends_only_the_wakeups_that_are_missing_for_jobs_waiting_long_enough() -> None:
    # Runs before any worker test (pytest-django orders transactional tests last), so no
    # worker consumes the wake-ups this test counts.
    flush_redis()
    for _ in range(3):
        queued_for(GenerationJobFactory(), seconds=settings.REAPER_REPUBLISH_AFTER_SECONDS + 5)
    GenerationJobFactory()  # just queued: its own wake-up is on its way

    try:
        first = services.republish_queued_jobs()
        pending = selectors.gpu_queue_pending_messages()
        second = services.republish_queued_jobs()
        flush_redis()  # Redis restarts empty
        after_loss = services.republish_queued_jobs()
    finally:
        flush_redis()

    assert (first, pending, second, after_loss) == (3, 3, 0, 3)


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
    assert route["queue"].name == unrouted["queue"].name == "default" != settings.GENERATION_QUEUE


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
        pending = selectors.gpu_queue_pending_messages()
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
