"""The reaper's writes: jobs whose worker is gone, wake-ups the broker lost, expired results."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import redis
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from core.logging import log_event
from core.redis import redis_client
from jobs import selectors
from jobs.live.events import QUEUED, job_event_publish
from jobs.models import FailureCode, GenerationJob, JobImage, JobStatus
from jobs.services.finish import job_fail
from jobs.services.liveness import HEARTBEAT_WATCHED_SINCE_KEY, heartbeat_key
from jobs.services.submit import wake_gpu_worker
from jobs.services.thumbnail import thumbnail_name
from jobs.services.transition import JobId, transition_job

logger = logging.getLogger(__name__)

# Enough to drain any realistic backlog within a few reaper runs without flooding the broker.
REPUBLISH_MAX_PER_RUN = 1000
RETENTION_BATCH_SIZE = 500


@dataclass(frozen=True)
class ReapResult:
    requeued: int
    failed: int


def reap_stale_jobs() -> ReapResult:
    """Re-queues ``running`` jobs whose worker is gone up to ``REAPER_MAX_REQUEUES`` times, then
    fails them ``worker_lost``. Gone: no heartbeat and claimed over ``REAPER_HEARTBEAT_GRACE_SECONDS``
    ago, or (the backstop) running past the hard time limit plus ``REAPER_GRACE_SECONDS``."""
    now = timezone.now()
    past_hard_limit = now - timedelta(seconds=settings.GENERATION_TIME_LIMIT + settings.REAPER_GRACE_SECONDS)
    claimed_before = past_hard_limit
    if settings.REAPER_HEARTBEAT_GRACE_SECONDS:
        claimed_before = max(claimed_before, now - timedelta(seconds=settings.REAPER_HEARTBEAT_GRACE_SECONDS))
    # Also the guard of each UPDATE below: a job re-claimed since this read started later.
    same_claim = Q(started_at__lt=claimed_before)
    running = GenerationJob.objects.filter(same_claim, status=JobStatus.RUNNING)
    candidates = {
        pk: (requeue_count, model)
        for pk, requeue_count, model in running.values_list("pk", "requeue_count", "model")
    }
    beyond_hard_limit = set(running.filter(started_at__lt=past_hard_limit).values_list("pk", flat=True))
    without_heartbeat = _jobs_without_heartbeat(
        job_ids=[job_id for job_id in candidates if job_id not in beyond_hard_limit]
    )
    requeued = failed = 0
    for job_id, (requeue_count, model) in candidates.items():
        if job_id in beyond_hard_limit:
            rule = "hard_limit"
        elif job_id in without_heartbeat:
            rule = "heartbeat"
        else:
            continue
        if requeue_count < settings.REAPER_MAX_REQUEUES:
            with transaction.atomic():
                if transition_job(
                    job_id=job_id,
                    to=JobStatus.QUEUED,
                    where=same_claim,
                    requeue_count=F("requeue_count") + 1,
                    started_at=None,
                    worker_hostname="",
                    progress_step=0,
                    progress_total=0,
                ):
                    transaction.on_commit(partial(wake_gpu_worker, model))
                    # Its streams were following progress: they now learn it waits again.
                    transaction.on_commit(
                        partial(job_event_publish, job_id=job_id, event=QUEUED, reason="worker_lost")
                    )
                    requeued += 1
                    log_event(logger.warning, "requeued", job=job_id, reason="worker_lost", rule=rule)
        elif job_fail(
            job_id=job_id,
            code=FailureCode.WORKER_LOST,
            message="The worker running this job stopped before finishing it.",
            where=same_claim,
        ):
            failed += 1
    return ReapResult(requeued=requeued, failed=failed)


def _jobs_without_heartbeat(*, job_ids: Sequence[JobId]) -> set[JobId]:
    """Which of these running jobs have no heartbeat, in one Redis round trip; none while Redis does
    not answer or the reaper has watched this dataset for less than the grace (after a restart or
    a flush, live workers may not have written theirs again yet)."""
    if not job_ids or not settings.REAPER_HEARTBEAT_GRACE_SECONDS:
        return set()
    now = time.time()
    pipeline = redis_client().pipeline(transaction=False)
    pipeline.set(HEARTBEAT_WATCHED_SINCE_KEY, now, nx=True)
    pipeline.get(HEARTBEAT_WATCHED_SINCE_KEY)
    pipeline.mget([heartbeat_key(job_id) for job_id in job_ids])
    try:
        _, watched_since, heartbeats = pipeline.execute()
    except redis.RedisError:
        log_event(logger.warning, "heartbeats_unreadable", exc_info=True)
        return set()
    if now - float(watched_since) < settings.REAPER_HEARTBEAT_GRACE_SECONDS:
        log_event(
            logger.info, "heartbeats_not_trusted_yet", watched_seconds=round(now - float(watched_since))
        )
        return set()
    return {job_id for job_id, heartbeat in zip(job_ids, heartbeats, strict=True) if heartbeat is None}


def republish_queued_jobs() -> int:
    """Sends a wake-up for each job queued longer than ``REAPER_REPUBLISH_AFTER_SECONDS`` beyond
    those waiting in its model's queue (the broker lost them, not the jobs), model by model;
    returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.REAPER_REPUBLISH_AFTER_SECONDS)
    waiting_by_model = dict(
        GenerationJob.objects.filter(status=JobStatus.QUEUED, created_at__lt=cutoff)
        .order_by()
        .values_list("model")
        .annotate(n=Count("pk"))
    )
    republished = 0
    for model, waiting in waiting_by_model.items():
        missing = min(waiting - selectors.gpu_queue_pending_messages(model=model), REPUBLISH_MAX_PER_RUN)
        for _ in range(missing):
            wake_gpu_worker(model)
        if missing > 0:
            log_event(logger.warning, "republished", model=model, wakeups=missing, queued_waiting=waiting)
            republished += missing
    return republished


def delete_expired_results() -> int:
    """Deletes image rows and files of jobs finished over ``RESULT_RETENTION_DAYS`` ago (0: never);
    jobs stay, marked ``results_deleted_at``. Returns how many files were deleted."""
    if settings.RESULT_RETENTION_DAYS <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=settings.RESULT_RETENTION_DAYS)
    deleted = 0
    while True:
        images = list(JobImage.objects.filter(job__finished_at__lt=cutoff).order_by()[:RETENTION_BATCH_SIZE])
        if not images:
            return deleted
        with transaction.atomic():
            JobImage.objects.filter(pk__in=[image.pk for image in images]).delete()
            GenerationJob.objects.filter(pk__in={image.job_id for image in images}).update(
                results_deleted_at=timezone.now()
            )
        # Rows first: a file left behind by a crash here is only wasted space, whereas a row
        # whose file is gone would hand clients a broken link. A deduplicated job made later
        # points at the same file: that file stays until its last row expires.
        names = [image.file.name for image in images]
        still_used = set(JobImage.objects.filter(file__in=names).values_list("file", flat=True))
        for image in images:
            if image.file.name not in still_used:
                default_storage.delete(thumbnail_name(image))
                image.file.delete(save=False)
                deleted += 1
        log_event(logger.info, "results_deleted", files=len(images))
