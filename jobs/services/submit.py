"""Submitting a job: validation, idempotency, dedupe, the bounded queue, the worker's wake-up."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from config.celery import generation_queue
from core.logging import log_event
from core.stored_secrets import encrypt_secret, new_webhook_secret
from generator import GenerationParameters
from generator.parameters import SEED_MAX
from jobs import selectors
from jobs.cost import job_cost_units
from jobs.deadlines import deadline_at
from jobs.errors import (
    idempotency_conflict,
    idempotency_key_invalid,
    job_not_found,
    job_not_retryable,
    queue_full,
)
from jobs.models import ACTIVE_STATUSES, GenerationJob, IdempotencyKey, JobImage, JobStatus
from jobs.services.finish import job_finished, webhook_event_enqueue
from jobs.services.transition import JobId
from jobs.validation import submitted_parameters, validate_parameters
from ratelimit.callers import Caller, anonymous_caller, api_key_caller
from ratelimit.services import submission_admitted
from webhooks.models import WebhookEvent
from webhooks.services import webhook_destination_check, webhook_subscription_clean

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX_LENGTH = 255


def job_submit(
    *,
    client_ip: str,
    webhook_url: str = "",
    webhook_events: Sequence[str] | None = None,
    retry_of: GenerationJob | None = None,
    idempotency_key: str | None = None,
    caller: Caller | None = None,
    cancel_after: str | None = None,
    deadline_seconds: int | None = None,
    **parameters: Any,
) -> GenerationJob:
    """Validates and stores the job as ``queued``, waking a GPU worker once it is committed.

    ``parameters`` are GenerationParameters' fields; an absent or None one takes its default.

    With an ``idempotency_key`` already used by this client for the same parameters, returns
    that key's job instead. A request identical to a completed one, explicit seed included, is
    stored ``completed`` at once with that job's files (see ``JOB_DEDUPE``).
    ``cancel_after`` (a Go duration) and ``deadline_seconds`` set its deadline (jobs.deadlines).
    """
    params = submitted_parameters(parameters)
    model = validate_parameters(params)
    cost_units = job_cost_units(
        width=params.width,
        height=params.height,
        steps=params.steps,
        num_images=params.num_images,
        guidance_scale=params.guidance_scale,
        cost_weight=model.cost_weight,
    )
    caller = caller or anonymous_caller(client_ip)
    deadline = deadline_at(now=timezone.now(), cancel_after=cancel_after, deadline_seconds=deadline_seconds)
    webhook_url, webhook_events = webhook_subscription_clean(url=webhook_url, events=webhook_events)
    webhook = {"webhook_url": webhook_url, "webhook_events": webhook_events}
    # An anonymous receiver's own secret; a key's receiver has the key's (ratelimit.ApiKey).
    webhook_secret = new_webhook_secret() if webhook_url and caller.api_key_id is None else ""
    # Stored on the job however it is answered; they do not decide the picture.
    stored = {
        **webhook,
        "retry_of": retry_of,
        "api_key_id": caller.api_key_id,
        "client_aggregate": caller.queue_account,
        "cost_units": cost_units,
        "priority_weight": caller.policy.weight,
        "deadline_at": deadline,
        "webhook_secret_encrypted": encrypt_secret(webhook_secret) if webhook_secret else "",
    }
    request_hash = ""
    if idempotency_key is not None:
        _validate_idempotency_key(idempotency_key)
        body = {**asdict(params), **webhook}
        request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        replayed = _idempotent_replay(caller=caller, key=idempotency_key, request_hash=request_hash)
        if replayed is not None:
            return replayed
    try:
        # Refuses over-limit clients, else opens the transaction the job is written in. A
        # deduplicated answer costs no GPU time but is a submission all the same.
        with submission_admitted(
            caller=caller,
            cost_units=cost_units,
            count_active_jobs=_active_job_count,
            check_after_limits=partial(webhook_destination_check, url=webhook_url) if webhook_url else None,
        ) as network:
            job = _deduplicated_job(params=params, client_ip=client_ip, client_network=network, stored=stored)
            if job is None:
                job = _queue_job(params=params, client_ip=client_ip, client_network=network, stored=stored)
            if idempotency_key is not None:
                # Expired keys go here, where keys are written, so no periodic job is needed.
                IdempotencyKey.objects.filter(created_at__lt=_idempotency_cutoff()).delete()
                IdempotencyKey.objects.create(
                    client_ip=client_ip,
                    api_key_id=caller.api_key_id,
                    key=idempotency_key,
                    request_hash=request_hash,
                    job=job,
                )
    except IntegrityError:
        # A concurrent submit with the same key won the unique constraint; ours rolled back
        # (its wake-up with it), so answer with the winner's job.
        if idempotency_key is None:
            raise
        replayed = _idempotent_replay(caller=caller, key=idempotency_key, request_hash=request_hash)
        if replayed is None:
            raise
        return replayed
    log_event(
        logger.info,
        "submitted",
        job=job.id,
        client_ip=client_ip,
        account=caller.account,
        images=job.num_images,
        cost_units=float(cost_units),
    )
    return job


def _active_job_count(account: str) -> int:
    """Active jobs of a client network or key, or of an aggregate network (the two never share a name)."""
    return (
        GenerationJob.objects.filter(status__in=ACTIVE_STATUSES)
        .filter(Q(client_network=account) | Q(client_aggregate=account))
        .count()
    )


def _validate_idempotency_key(key: str) -> None:
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH or not all(" " <= char <= "~" for char in key):
        raise idempotency_key_invalid(IDEMPOTENCY_KEY_MAX_LENGTH)


def _idempotent_replay(*, caller: Caller, key: str, request_hash: str) -> GenerationJob | None:
    """The job this caller's key created within the TTL, or None; 409 if the body differs.
    Keys are an API key's own (from any address), or an anonymous client IP's: two integrators
    behind one address never see each other's jobs."""
    if caller.api_key_id is not None:
        scope = Q(api_key_id=caller.api_key_id)
    else:
        scope = Q(client_ip=caller.client_ip, api_key__isnull=True)
    stored = (
        IdempotencyKey.objects.filter(scope, key=key, created_at__gte=_idempotency_cutoff())
        .select_related("job")
        .first()
    )
    if stored is None:
        return None
    if stored.request_hash != request_hash:
        raise idempotency_conflict()
    log_event(logger.info, "idempotent_replay", job=stored.job_id, client_ip=caller.client_ip)
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
    # A seed is always stored, so that every result can be reproduced.
    seed = secrets.randbelow(SEED_MAX + 1) if params.seed is None else params.seed
    job = GenerationJob.objects.create(
        **GenerationJob.fields_from(replace(params, seed=seed)),
        client_ip=client_ip,
        client_network=client_network,
        **stored,
    )
    # Before the wake-up, so that the queued event is recorded before a worker can start the job.
    webhook_event_enqueue(job=job, event=WebhookEvent.QUEUED)
    transaction.on_commit(partial(wake_gpu_worker, job.model))
    return job


def _deduplicated_job(
    *, params: GenerationParameters, client_ip: str, client_network: str, stored: Mapping[str, object]
) -> GenerationJob | None:
    """A completed job pointing at the files of an identical completed one, or None.

    Only with an explicit seed: without one the client asked for a new random picture.
    """
    if not settings.JOB_DEDUPE or params.seed is None:
        return None
    fields = GenerationJob.fields_from(params)
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
    # It was never queued nor started: its one event is that it completed.
    job_finished(job=job, outcome="deduplicated", original=original.id)
    return job


def wake_gpu_worker(model: str) -> None:
    """Sends one wake-up to ``model``'s queue (``gpu.<model>``); a worker serving that model then
    claims work from the database."""
    from jobs.tasks import generate_task

    try:
        generate_task.apply_async(kwargs={"model": model}, queue=generation_queue(model))
    except KombuOperationalError:
        # The job is committed and its client already has its id: never turn a broker outage
        # into an error. The reaper re-publishes wake-ups for jobs left waiting.
        log_event(logger.exception, "wake_up_failed")


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
        client_ip=original.client_ip,
        retry_of=original,
        # A key's job is retried under that key's policy and budget.
        caller=api_key_caller(original.api_key, client_ip=original.client_ip) if original.api_key else None,
        **asdict(original.parameters),
    )
    log_event(logger.info, "retried", job=job.pk, retry_of=original.pk)
    return job
