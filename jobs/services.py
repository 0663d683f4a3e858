"""Every write to a GenerationJob: submit, claim, progress, complete, fail, cancel.

State changes are conditional UPDATEs checked against ``TRANSITION_SOURCES``, so a job
never moves backwards (``completed`` never becomes ``running`` again) however web
processes, workers and the reaper interleave.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from config.logging import log_event
from jobs import selectors
from jobs.errors import job_already_finished, job_not_found, job_not_retryable
from jobs.models import TRANSITION_SOURCES, FailureCode, GenerationJob, JobImage, JobStatus
from jobs.validation import SEED_MAX, JobParameters, normalise_prompt, validate_parameters
from ratelimit.services import submission_admitted, usage_record_job_finished
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_enqueue, webhook_subscription_clean

logger = logging.getLogger(__name__)

CANCEL_FLAG_TTL_SECONDS = 24 * 3600

JobId = uuid.UUID | str


def _cancel_flag_key(job_id: JobId) -> str:
    return f"jobs:cancel:{job_id}"


def transition_job(*, job_id: JobId, to: str, where: Q | None = None, **fields: object) -> bool:
    """Moves a job to ``to`` if its current status allows it; returns whether it moved.

    The check and the write are one UPDATE, so two racing writers cannot both win. ``where``
    adds conditions to that same UPDATE (the reaper's "still stuck since then").
    """
    sources = TRANSITION_SOURCES[to]
    moved = (
        GenerationJob.objects.filter(pk=job_id, status__in=sources)
        .filter(where or Q())
        .update(status=to, updated_at=timezone.now(), **fields)
    )
    return moved == 1


def job_submit(
    *,
    prompt: str,
    client_ip: str,
    negative_prompt: str = "",
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
    scheduler: str = "default",
    num_images: int = 1,
    webhook_url: str = "",
    webhook_events: Sequence[str] | None = None,
    retry_of: GenerationJob | None = None,
) -> GenerationJob:
    """Validates, stores the job as ``queued`` and wakes a GPU worker once it is committed."""
    defaults = settings.JOB_DEFAULTS
    params = JobParameters(
        prompt=normalise_prompt(prompt),
        negative_prompt=normalise_prompt(negative_prompt),
        width=defaults["width"] if width is None else width,
        height=defaults["height"] if height is None else height,
        steps=defaults["steps"] if steps is None else steps,
        guidance_scale=defaults["guidance_scale"] if guidance_scale is None else guidance_scale,
        seed=seed,
        scheduler=scheduler,
        num_images=num_images,
    )
    validate_parameters(params)
    webhook_url, webhook_events = webhook_subscription_clean(url=webhook_url, events=webhook_events)
    # Refuses over-limit clients, else opens the transaction the job is written in.
    with submission_admitted(client_ip=client_ip) as network:
        job = GenerationJob.objects.create(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            width=params.width,
            height=params.height,
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            # A seed is always stored, so that every result can be reproduced.
            seed=secrets.randbelow(SEED_MAX + 1) if params.seed is None else params.seed,
            scheduler=params.scheduler,
            num_images=params.num_images,
            model_name=settings.GENERATOR_MODEL,
            client_ip=client_ip,
            client_network=network,
            webhook_url=webhook_url,
            webhook_events=webhook_events,
            retry_of=retry_of,
        )
        # Before the wake-up, so that the queued event is recorded before a worker can start the job.
        webhook_event_enqueue(job_id=job.pk, event=WebhookEvent.QUEUED)
        transaction.on_commit(wake_gpu_worker)
    log_event(logger, "submitted", job=job.id, client_ip=client_ip, images=job.num_images)
    return job


def wake_gpu_worker() -> None:
    """Sends one wake-up to the ``gpu`` queue; the worker then claims work from the database."""
    from jobs.tasks import generate_task

    generate_task.delay()


def job_cancel(*, job_id: JobId) -> GenerationJob:
    """Cancels a queued job (it never runs) or a running one (its worker stops at the next step)."""
    if not transition_job(
        job_id=job_id,
        to=JobStatus.CANCELLED,
        finished_at=timezone.now(),
        failure_code=FailureCode.CANCELLED,
        failure_message="Cancelled on request.",
    ):
        job = GenerationJob.objects.filter(pk=job_id).first()
        if job is None:
            raise job_not_found()
        raise job_already_finished(job.status)
    cache.set(_cancel_flag_key(job_id), 1, timeout=CANCEL_FLAG_TTL_SECONDS)
    webhook_event_enqueue(job_id=job_id, event=WebhookEvent.CANCELLED)
    log_event(logger, "cancelled", job=job_id)
    return GenerationJob.objects.get(pk=job_id)


def cancelled_job_ids(*, job_ids: Sequence[JobId]) -> set[str]:
    """Which of these jobs were cancelled; one Redis round trip, cheap enough for every step."""
    keys = {_cancel_flag_key(job_id): str(job_id) for job_id in job_ids}
    return {keys[key] for key in cache.get_many(list(keys))}


@dataclass(frozen=True)
class ClaimedBatch:
    jobs: list[GenerationJob]

    @property
    def image_count(self) -> int:
        return sum(job.num_images for job in self.jobs)


def claim_next_jobs(*, worker_hostname: str, max_images: int) -> ClaimedBatch:
    """Claims the oldest queued job and up to ``max_images`` images of compatible ones.

    Compatible means one pipeline call can serve them all: same model, size, steps, guidance
    and scheduler. Each claim is a conditional UPDATE, so two workers never share a job.
    """
    queued = GenerationJob.objects.filter(status=JobStatus.QUEUED)
    for _attempt in range(5):
        head = queued.order_by("created_at").first()
        if head is None:
            return ClaimedBatch(jobs=[])
        candidates = queued.filter(
            model_name=head.model_name,
            width=head.width,
            height=head.height,
            steps=head.steps,
            guidance_scale=head.guidance_scale,
            scheduler=head.scheduler,
        ).order_by("created_at")[: max(max_images, 1)]
        claimed: list[GenerationJob] = []
        images = 0
        now = timezone.now()
        for candidate in candidates:
            if claimed and images + candidate.num_images > max_images:
                continue
            if transition_job(
                job_id=candidate.pk,
                to=JobStatus.RUNNING,
                started_at=now,
                worker_hostname=worker_hostname,
                progress_step=0,
                progress_total=0,
            ):
                claimed.append(candidate)
                images += candidate.num_images
        if claimed:
            for job in claimed:
                job.refresh_from_db()
                log_event(logger, "started", job=job.id, worker=worker_hostname, batch=len(claimed))
                webhook_event_enqueue(job_id=job.pk, event=WebhookEvent.STARTED)
            return ClaimedBatch(jobs=claimed)
    return ClaimedBatch(jobs=[])


def job_record_progress(*, job_ids: Sequence[JobId], step: int, total: int) -> None:
    GenerationJob.objects.filter(pk__in=job_ids, status=JobStatus.RUNNING).update(
        progress_step=min(step, total), progress_total=total, updated_at=timezone.now()
    )


def job_complete(*, job: GenerationJob, pngs: Sequence[bytes], warnings: Sequence[str] = ()) -> bool:
    """Stores the result files and completes the job; returns False if it was cancelled meanwhile."""
    if GenerationJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).count() == 0:
        return False
    images = []
    for index, png in enumerate(pngs):
        image = JobImage(job=job, index=index, seed=job.seed + index)
        image.file.save(f"{job.id}/{index}.png", ContentFile(png), save=False)
        images.append(image)
    finished_at = timezone.now()
    with transaction.atomic():
        moved = transition_job(
            job_id=job.pk,
            to=JobStatus.COMPLETED,
            finished_at=finished_at,
            warnings=list(warnings),
        )
        if moved:
            JobImage.objects.bulk_create(images)
            usage_record_job_finished(
                network=job.client_network,
                failure_code="",
                started_at=job.started_at,
                finished_at=finished_at,
            )
    if not moved:
        for image in images:
            image.file.delete(save=False)
        return False
    duration = (finished_at - job.started_at).total_seconds() if job.started_at else 0.0
    log_event(logger, "completed", job=job.pk, duration_s=round(duration, 3), images=len(images))
    webhook_event_enqueue(job_id=job.pk, event=WebhookEvent.COMPLETED)
    return True


def job_fail(*, job_id: JobId, code: str, message: str, where: Q | None = None) -> bool:
    """Fails a queued or running job with a named ``FailureCode``; returns whether it moved.

    ``where`` adds conditions to the same UPDATE, as in ``transition_job``."""
    finished_at = timezone.now()
    with transaction.atomic():
        moved = transition_job(
            job_id=job_id,
            to=JobStatus.FAILED,
            where=where,
            finished_at=finished_at,
            failure_code=code,
            failure_message=message,
        )
        if moved:
            network, started_at = GenerationJob.objects.values_list("client_network", "started_at").get(
                pk=job_id
            )
            usage_record_job_finished(
                network=network, failure_code=code, started_at=started_at, finished_at=finished_at
            )
    if moved:
        log_event(logger, "failed", job=job_id, code=code)
        webhook_event_enqueue(job_id=job_id, event=WebhookEvent.FAILED)
    return moved


def job_retry(*, job_id: JobId) -> GenerationJob:
    """Queues a new job with a failed job's parameters and seed, linked to it by ``retry_of``.

    It goes through ``job_submit``, so today's validation rules apply to the copy as they
    would to any new request from the same client.
    """
    original = GenerationJob.objects.filter(pk=job_id).first()
    if original is None:
        raise job_not_found()
    if original.status != JobStatus.FAILED:
        raise job_not_retryable(original.status)
    job = job_submit(
        prompt=original.prompt,
        client_ip=original.client_ip,
        negative_prompt=original.negative_prompt,
        width=original.width,
        height=original.height,
        steps=original.steps,
        guidance_scale=original.guidance_scale,
        seed=original.seed,
        scheduler=original.scheduler,
        num_images=original.num_images,
        retry_of=original,
    )
    log_event(logger, "retried", job=job.pk, retry_of=original.pk)
    return job


@dataclass(frozen=True)
class ReapResult:
    requeued: int
    failed: int


def reap_stale_jobs() -> ReapResult:
    """Handles ``running`` jobs whose worker is gone: re-queues each up to
    ``REAPER_MAX_REQUEUES`` times, then fails it as ``worker_lost``.

    A job still running past the hard time limit plus a grace period has no live worker:
    Celery kills a task at the hard limit, so nobody will ever finish it.
    """
    cutoff = timezone.now() - timedelta(
        seconds=settings.GENERATION_TIME_LIMIT + settings.REAPER_GRACE_SECONDS
    )
    stuck = Q(started_at__lt=cutoff)
    stuck_jobs = GenerationJob.objects.filter(stuck, status=JobStatus.RUNNING)
    requeued = failed = 0
    for job_id, requeue_count in stuck_jobs.values_list("pk", "requeue_count"):
        if requeue_count < settings.REAPER_MAX_REQUEUES:
            with transaction.atomic():
                if transition_job(
                    job_id=job_id,
                    to=JobStatus.QUEUED,
                    where=stuck,
                    requeue_count=F("requeue_count") + 1,
                    started_at=None,
                    worker_hostname="",
                    progress_step=0,
                    progress_total=0,
                ):
                    transaction.on_commit(wake_gpu_worker)
                    requeued += 1
                    logger.warning("job=%s event=requeued reason=worker_lost", job_id)
        elif job_fail(
            job_id=job_id,
            code=FailureCode.WORKER_LOST,
            message="The worker running this job stopped before finishing it.",
            where=stuck,
        ):
            failed += 1
    return ReapResult(requeued=requeued, failed=failed)


# Enough to drain any realistic backlog within a few reaper runs without flooding the broker.
REPUBLISH_MAX_PER_RUN = 1000


def republish_queued_jobs() -> int:
    """Sends wake-ups for queued jobs whose broker message was lost; returns how many.

    The database is the queue of record; a Redis restart without persistence loses the
    wake-ups, not the jobs. Jobs queued longer than ``REAPER_REPUBLISH_AFTER_SECONDS``
    that outnumber the wake-ups waiting in the ``gpu`` queue get one each (a wake-up that
    finds nothing to claim costs nothing).
    """
    cutoff = timezone.now() - timedelta(seconds=settings.REAPER_REPUBLISH_AFTER_SECONDS)
    waiting = GenerationJob.objects.filter(status=JobStatus.QUEUED, created_at__lt=cutoff).count()
    if waiting == 0:
        return 0
    missing = min(waiting - selectors.gpu_queue_pending_messages(), REPUBLISH_MAX_PER_RUN)
    for _ in range(missing):
        wake_gpu_worker()
    if missing > 0:
        logger.warning("event=republished wakeups=%d queued_waiting=%d", missing, waiting)
    return max(missing, 0)


RETENTION_BATCH_SIZE = 500


def delete_expired_results() -> int:
    """Deletes result files of jobs finished more than ``RESULT_RETENTION_DAYS`` ago.

    Jobs stay (history is kept) and are marked ``results_deleted_at``; only their image rows
    and files go. Returns how many files were deleted; 0 days means keep forever.
    """
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
        # whose file is gone would hand clients a broken link.
        for image in images:
            image.file.delete(save=False)
        deleted += len(images)
        log_event(logger, "results_deleted", files=len(images))
