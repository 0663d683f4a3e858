"""Every write to a GenerationJob: submit, claim, progress, complete, fail, cancel.

State changes are conditional UPDATEs checked against ``TRANSITION_SOURCES``, so a job
never moves backwards (``completed`` never becomes ``running`` again) however web
processes, workers and the reaper interleave.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from config.logging import log_event
from generator import GenerationParameters
from generator.parameters import BATCH_KEY_FIELDS, SEED_MAX
from jobs import selectors
from jobs.errors import (
    idempotency_conflict,
    idempotency_key_invalid,
    job_already_finished,
    job_not_found,
    job_not_retryable,
    queue_full,
)
from jobs.models import TRANSITION_SOURCES, FailureCode, GenerationJob, IdempotencyKey, JobImage, JobStatus
from jobs.validation import submitted_parameters, validate_parameters
from ops import metrics
from ratelimit.services import submission_admitted, usage_record_job_finished
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_enqueue, webhook_subscription_clean

logger = logging.getLogger(__name__)

CANCEL_FLAG_TTL_SECONDS = 24 * 3600
# A heartbeat key outlives its refresh by this many intervals, so one late beat is no death.
HEARTBEAT_LIFETIME_BEATS = 3
# When the reaper first saw this Redis dataset: after a restart or a flush, every heartbeat is
# gone until live workers write theirs again, so missing ones mean nothing for a grace period.
HEARTBEAT_WATCHED_SINCE_KEY = "jobs:heartbeat-watched-since"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# Compatible queued jobs a claim considers for a batch; enough to find every client's turn.
BATCH_CANDIDATES = 200

JobId = uuid.UUID | str


@functools.cache
def _job_keys() -> redis.Redis:
    """One client per process for the jobs' Redis keys (cancel flags, heartbeats), read on every
    denoising step: Django's cache builds a new client object on each call, which cost more
    than the read itself. Thread-safe: the worker's heartbeat thread shares it."""
    return redis.Redis.from_url(settings.REDIS_URL)


def _cancel_flag_key(job_id: JobId) -> str:
    return f"jobs:cancel:{job_id}"


def _heartbeat_key(job_id: JobId) -> str:
    return f"jobs:heartbeat:{job_id}"


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
    client_ip: str,
    webhook_url: str = "",
    webhook_events: Sequence[str] | None = None,
    retry_of: GenerationJob | None = None,
    idempotency_key: str | None = None,
    **parameters: Any,
) -> GenerationJob:
    """Validates and stores the job as ``queued``, waking a GPU worker once it is committed.

    ``parameters`` are GenerationParameters' fields; an absent or None one takes its default.

    With an ``idempotency_key`` already used by this client for the same parameters, returns
    that key's job instead. A request identical to a completed one, explicit seed included, is
    stored ``completed`` at once with that job's files (see ``JOB_DEDUPE``).
    """
    params = submitted_parameters(parameters)
    validate_parameters(params)
    webhook_url, webhook_events = webhook_subscription_clean(url=webhook_url, events=webhook_events)
    webhook = {"webhook_url": webhook_url, "webhook_events": webhook_events}
    # Stored on the job however it is answered; they do not decide the picture.
    stored = {**webhook, "retry_of": retry_of}
    request_hash = ""
    if idempotency_key is not None:
        _validate_idempotency_key(idempotency_key)
        body = {**asdict(params), **webhook}
        request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        replayed = _idempotent_replay(client_ip=client_ip, key=idempotency_key, request_hash=request_hash)
        if replayed is not None:
            return replayed
    try:
        # Refuses over-limit clients, else opens the transaction the job is written in. A
        # deduplicated answer costs no GPU time but is a submission all the same.
        with submission_admitted(client_ip=client_ip) as network:
            job = _deduplicated_job(params=params, client_ip=client_ip, client_network=network, stored=stored)
            if job is None:
                job = _queue_job(params=params, client_ip=client_ip, client_network=network, stored=stored)
            if idempotency_key is not None:
                # Expired keys go here, where keys are written, so no periodic job is needed.
                IdempotencyKey.objects.filter(created_at__lt=_idempotency_cutoff()).delete()
                IdempotencyKey.objects.create(
                    client_ip=client_ip, key=idempotency_key, request_hash=request_hash, job=job
                )
    except IntegrityError:
        # A concurrent submit with the same key won the unique constraint; ours rolled back
        # (its wake-up with it), so answer with the winner's job.
        if idempotency_key is None:
            raise
        replayed = _idempotent_replay(client_ip=client_ip, key=idempotency_key, request_hash=request_hash)
        if replayed is None:
            raise
        return replayed
    log_event(logger, "submitted", job=job.id, client_ip=client_ip, images=job.num_images)
    return job


def _validate_idempotency_key(key: str) -> None:
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH or not all(" " <= char <= "~" for char in key):
        raise idempotency_key_invalid(IDEMPOTENCY_KEY_MAX_LENGTH)


def _idempotent_replay(*, client_ip: str, key: str, request_hash: str) -> GenerationJob | None:
    """The job this client's key created within the TTL, or None; 409 if the body differs."""
    stored = (
        IdempotencyKey.objects.filter(client_ip=client_ip, key=key, created_at__gte=_idempotency_cutoff())
        .select_related("job")
        .first()
    )
    if stored is None:
        return None
    if stored.request_hash != request_hash:
        raise idempotency_conflict()
    log_event(logger, "idempotent_replay", job=stored.job_id, client_ip=client_ip)
    return stored.job


def _idempotency_cutoff() -> datetime:
    return timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)


def _queue_job(
    *, params: GenerationParameters, client_ip: str, client_network: str, stored: Mapping[str, object]
) -> GenerationJob:
    queued = selectors.queued_job_count()
    if queued >= settings.JOB_QUEUE_MAX:
        # Long enough for the jobs over the bound, and one more, to be served.
        excess = queued - settings.JOB_QUEUE_MAX + 1
        raise queue_full(retry_after=max(1, math.ceil(excess * selectors.queue_throughput().seconds_per_job)))
    job = GenerationJob.objects.create(
        # A seed is always stored, so that every result can be reproduced.
        **_generation_fields(
            params, seed=secrets.randbelow(SEED_MAX + 1) if params.seed is None else params.seed
        ),
        client_ip=client_ip,
        client_network=client_network,
        **stored,
    )
    # Before the wake-up, so that the queued event is recorded before a worker can start the job.
    webhook_event_enqueue(job=job, event=WebhookEvent.QUEUED)
    transaction.on_commit(wake_gpu_worker)
    return job


def _generation_fields(params: GenerationParameters, *, seed: int) -> dict[str, object]:
    """The columns that decide the picture: what dedupe matches on and a new job stores."""
    return {**GenerationJob.fields_from(replace(params, seed=seed)), "model_name": settings.GENERATOR_MODEL}


def _deduplicated_job(
    *, params: GenerationParameters, client_ip: str, client_network: str, stored: Mapping[str, object]
) -> GenerationJob | None:
    """A completed job pointing at the files of an identical completed one, or None.

    Only with an explicit seed: without one the client asked for a new random picture.
    """
    if not settings.JOB_DEDUPE or params.seed is None:
        return None
    fields = _generation_fields(params, seed=params.seed)
    original = (
        GenerationJob.objects.filter(status=JobStatus.COMPLETED, deduplicated_from__isnull=True, **fields)
        .annotate(image_count=Count("images"))
        .filter(image_count=params.num_images)
        .order_by("-finished_at")
        .first()
    )
    if original is None:
        return None
    now = timezone.now()
    job = GenerationJob.objects.create(
        **fields,
        client_ip=client_ip,
        client_network=client_network,
        **stored,
        status=JobStatus.COMPLETED,
        progress_step=original.progress_total,
        progress_total=original.progress_total,
        warnings=original.warnings,
        deduplicated_from=original,
        started_at=now,
        finished_at=now,
    )
    # The same stored names, not copies: the files are immutable once written.
    JobImage.objects.bulk_create(
        JobImage(job=job, index=image.index, seed=image.seed, file=image.file.name)
        for image in original.images.all()
    )
    transaction.on_commit(metrics.record_dedupe_hit)
    log_event(logger, "deduplicated", job=job.id, original=original.id)
    # It was never queued nor started: its one event is that it completed.
    webhook_event_enqueue(job=job, event=WebhookEvent.COMPLETED)
    return job


def wake_gpu_worker() -> None:
    """Sends one wake-up to the ``gpu`` queue; the worker then claims work from the database."""
    from jobs.tasks import generate_task

    try:
        generate_task.delay()
    except KombuOperationalError:
        # The job is committed and its client already has its id: never turn a broker outage
        # into an error. The reaper re-publishes wake-ups for jobs left waiting.
        logger.exception("event=wake_up_failed")


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
    transaction.on_commit(metrics.record_job_cancelled)
    _job_keys().set(_cancel_flag_key(job_id), 1, ex=CANCEL_FLAG_TTL_SECONDS)
    job = GenerationJob.objects.get(pk=job_id)
    webhook_event_enqueue(job=job, event=WebhookEvent.CANCELLED)
    log_event(logger, "cancelled", job=job_id)
    return job


def cancelled_job_ids(*, job_ids: Sequence[JobId]) -> set[str]:
    """Which of these jobs were cancelled; one Redis round trip, cheap enough for every step."""
    keys = [_cancel_flag_key(job_id) for job_id in job_ids]
    flags = _job_keys().mget(keys)
    return {str(job_id) for job_id, flag in zip(job_ids, flags, strict=True) if flag is not None}


def job_record_heartbeat(*, job_ids: Sequence[JobId], worker_hostname: str) -> None:
    """Marks running jobs as held by a live worker for ``HEARTBEAT_LIFETIME_BEATS`` heartbeat
    intervals; one Redis round trip. The key names the worker, for an operator's ``redis-cli``."""
    lifetime_ms = round(settings.WORKER_HEARTBEAT_SECONDS * HEARTBEAT_LIFETIME_BEATS * 1000)
    pipeline = _job_keys().pipeline(transaction=False)
    for job_id in job_ids:
        pipeline.set(_heartbeat_key(job_id), worker_hostname, px=lifetime_ms)
    pipeline.execute()


@dataclass(frozen=True)
class ClaimedBatch:
    jobs: list[GenerationJob]

    @property
    def image_count(self) -> int:
        return sum(job.num_images for job in self.jobs)


def claim_next_jobs(*, worker_hostname: str, max_images: int) -> ClaimedBatch:
    """Claims the next job in fair order and up to ``max_images`` images of compatible ones.

    Clients take turns (``selectors.client_turn_order``): the head is the oldest queued job of
    the client whose turn it is, and compatible jobs fill the batch in the same turn order.
    Compatible means one pipeline call can serve them all: same model, size, steps, guidance
    and scheduler. Each claim is a conditional UPDATE, so two workers never share a job.
    """
    queued = GenerationJob.objects.filter(status=JobStatus.QUEUED)
    for _attempt in range(5):
        turn_order = selectors.client_turn_order()
        if not turn_order:
            return ClaimedBatch(jobs=[])
        head = queued.filter(client_network=turn_order[0]).order_by("created_at").first()
        if head is None:
            continue
        compatible = queued.filter(
            model_name=head.model_name, **{name: getattr(head, name) for name in BATCH_KEY_FIELDS}
        ).exclude(pk=head.pk)
        # The head is its client's oldest job and that client's turn comes first: it stays first.
        candidates = _in_turns([head, *compatible.order_by("created_at")[:BATCH_CANDIDATES]], turn_order)
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
                # What the claim's UPDATE wrote, without reading each row back.
                job.status, job.started_at, job.worker_hostname = JobStatus.RUNNING, now, worker_hostname
                job.progress_step = job.progress_total = 0
                log_event(logger, "started", job=job.id, worker=worker_hostname, batch=len(claimed))
                webhook_event_enqueue(job=job, event=WebhookEvent.STARTED)
            return ClaimedBatch(jobs=claimed)
    return ClaimedBatch(jobs=[])


def _in_turns(jobs: Sequence[GenerationJob], turn_order: Sequence[str]) -> list[GenerationJob]:
    """Jobs (oldest first) reordered as turns: every client's oldest, then every second, ..."""
    rank = {ip: index for index, ip in enumerate(turn_order)}
    seen: dict[str, int] = {}
    keyed = []
    for job in jobs:
        nth = seen.get(job.client_network, 0)
        seen[job.client_network] = nth + 1
        keyed.append(((nth, rank.get(job.client_network, len(rank))), job))
    return [job for _key, job in sorted(keyed, key=lambda item: item[0])]


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
    run_seconds = (finished_at - job.started_at).total_seconds() if job.started_at else None
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
            transaction.on_commit(functools.partial(metrics.record_job_completed, run_seconds=run_seconds))
    if not moved:
        for image in images:
            image.file.delete(save=False)
        return False
    log_event(logger, "completed", job=job.pk, duration_s=round(run_seconds or 0.0, 3), images=len(images))
    webhook_event_enqueue(job=job, event=WebhookEvent.COMPLETED)
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
            job = GenerationJob.objects.only(
                "client_network", "started_at", "webhook_url", "webhook_events"
            ).get(pk=job_id)
            usage_record_job_finished(
                network=job.client_network,
                failure_code=code,
                started_at=job.started_at,
                finished_at=finished_at,
            )
            transaction.on_commit(functools.partial(metrics.record_job_failed, code=code))
    if moved:
        log_event(logger, "failed", job=job_id, code=code)
        webhook_event_enqueue(job=job, event=WebhookEvent.FAILED)
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
    job = job_submit(client_ip=original.client_ip, retry_of=original, **asdict(original.parameters))
    log_event(logger, "retried", job=job.pk, retry_of=original.pk)
    return job


@dataclass(frozen=True)
class ReapResult:
    requeued: int
    failed: int


def reap_stale_jobs() -> ReapResult:
    """Handles ``running`` jobs whose worker is gone: re-queues each up to
    ``REAPER_MAX_REQUEUES`` times, then fails it as ``worker_lost``.

    A job is lost when its heartbeat stopped (its worker process was killed, ran out of
    memory or lost its machine) and it was claimed more than ``REAPER_HEARTBEAT_GRACE_SECONDS``
    ago, or, whatever its heartbeat, when it is still running past the hard time limit plus
    ``REAPER_GRACE_SECONDS``: Celery kills a task at the hard limit, so nobody will ever finish
    it. The second rule is the backstop for when heartbeats cannot be read.
    """
    now = timezone.now()
    past_hard_limit = now - timedelta(seconds=settings.GENERATION_TIME_LIMIT + settings.REAPER_GRACE_SECONDS)
    claimed_before = past_hard_limit
    if settings.REAPER_HEARTBEAT_GRACE_SECONDS:
        claimed_before = max(claimed_before, now - timedelta(seconds=settings.REAPER_HEARTBEAT_GRACE_SECONDS))
    # Also the guard of each UPDATE below: a job re-claimed since this read started later.
    same_claim = Q(started_at__lt=claimed_before)
    running = GenerationJob.objects.filter(same_claim, status=JobStatus.RUNNING)
    candidates = dict(running.values_list("pk", "requeue_count"))
    beyond_hard_limit = set(running.filter(started_at__lt=past_hard_limit).values_list("pk", flat=True))
    without_heartbeat = _jobs_without_heartbeat(
        job_ids=[job_id for job_id in candidates if job_id not in beyond_hard_limit]
    )
    requeued = failed = 0
    for job_id, requeue_count in candidates.items():
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
                    transaction.on_commit(wake_gpu_worker)
                    requeued += 1
                    logger.warning("job=%s event=requeued reason=worker_lost rule=%s", job_id, rule)
        elif job_fail(
            job_id=job_id,
            code=FailureCode.WORKER_LOST,
            message="The worker running this job stopped before finishing it.",
            where=same_claim,
        ):
            failed += 1
    return ReapResult(requeued=requeued, failed=failed)


def _jobs_without_heartbeat(*, job_ids: Sequence[JobId]) -> set[JobId]:
    """Which of these running jobs have no heartbeat, in one Redis round trip.

    None, as far as the reaper can tell, while heartbeats cannot be trusted: Redis does not
    answer, or the reaper has watched this Redis dataset for less than the grace (it was
    restarted empty or flushed, and live workers may not have written theirs again yet).
    """
    if not job_ids or not settings.REAPER_HEARTBEAT_GRACE_SECONDS:
        return set()
    now = time.time()
    pipeline = _job_keys().pipeline(transaction=False)
    pipeline.set(HEARTBEAT_WATCHED_SINCE_KEY, now, nx=True)
    pipeline.get(HEARTBEAT_WATCHED_SINCE_KEY)
    pipeline.mget([_heartbeat_key(job_id) for job_id in job_ids])
    try:
        _, watched_since, heartbeats = pipeline.execute()
    except redis.RedisError:
        logger.warning("event=heartbeats_unreadable", exc_info=True)
        return set()
    if now - float(watched_since) < settings.REAPER_HEARTBEAT_GRACE_SECONDS:
        logger.info("event=heartbeats_not_trusted_yet watched_seconds=%.0f", now - float(watched_since))
        return set()
    return {job_id for job_id, heartbeat in zip(job_ids, heartbeats, strict=True) if heartbeat is None}


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
        # whose file is gone would hand clients a broken link. A deduplicated job made later
        # points at the same file: that file stays until its last row expires.
        names = [image.file.name for image in images]
        still_used = set(JobImage.objects.filter(file__in=names).values_list("file", flat=True))
        for image in images:
            if image.file.name not in still_used:
                image.file.delete(save=False)
                deleted += 1
        log_event(logger, "results_deleted", files=len(images))
