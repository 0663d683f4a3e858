"""Finishing a job: completing or failing it, and the one "job finished" path every terminal
transition takes (usage, counters, log, live event, webhook, in that order); the jobs app builds
each webhook event's payload here and the webhooks app delivers it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.logging import log_event
from jobs.api.serializers import JobSerializer
from jobs.live.events import COMPLETED, job_event_publish
from jobs.models import GenerationJob, JobImage, JobStatus
from jobs.services.transition import JobId, transition_job
from ops import metrics
from ratelimit.services import usage_record_job_finished, usage_refund_unstarted_job
from webhooks.models import WebhookEvent
from webhooks.services import webhook_delivery_create

logger = logging.getLogger(__name__)


def webhook_event_enqueue(*, job: GenerationJob, event: str) -> None:
    """After the commit, records and sends ``event`` if the job subscribed to it; errors are logged,
    never raised. Free for the many jobs without a webhook (``job`` needs only those fields)."""
    if not job.webhook_url or event not in job.webhook_events:
        return
    transaction.on_commit(functools.partial(_record_and_send, job_id=job.pk, event=event), robust=True)


def _record_and_send(*, job_id: JobId, event: str) -> None:
    job = GenerationJob.objects.prefetch_related("images").exclude(webhook_url="").filter(pk=job_id).first()
    if job is None or event not in job.webhook_events:
        return
    # The API's status shape, read after the commit, so the payload shows the job as it now is.
    webhook_delivery_create(job_id=job.pk, url=job.webhook_url, event=event, data=JobSerializer(job).data)


def job_finished(*, job: GenerationJob, outcome: str, **log_fields: Any) -> None:
    """Usage, counters, log, live event and webhook of a job that just reached ``outcome`` (its status, or
    ``deduplicated``), in the transaction that moved it; counters and webhook wait for the commit.
    Cancelled and deduplicated jobs ran on no GPU, so usage does not count them; a job that was
    cancelled or failed before it started gets its reserved cost back."""
    run_seconds = (
        (job.finished_at - job.started_at).total_seconds() if job.started_at and job.finished_at else None
    )
    if outcome in (JobStatus.COMPLETED, JobStatus.FAILED) and job.finished_at:
        usage_record_job_finished(
            network=job.client_network,
            failure_code=job.failure_code,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
    if outcome in (JobStatus.CANCELLED, JobStatus.FAILED) and job.started_at is None:
        usage_refund_unstarted_job(
            account=job.client_network,
            client_ip=job.client_ip,
            anonymous=job.api_key_id is None,
            submitted_on=job.created_at.date(),
            cost_units=job.cost_units,
        )
    transaction.on_commit(
        functools.partial(
            metrics.record_job_finished,
            outcome=outcome,
            failure_code=job.failure_code,
            run_seconds=run_seconds,
        )
    )
    log_event(logger.info, outcome, job=job.pk, **log_fields)
    # After the commit, so a stream that reads the row on this event finds it finished.
    transaction.on_commit(
        functools.partial(
            job_event_publish,
            job_id=job.pk,
            event=COMPLETED if outcome == "deduplicated" else outcome,
            failure_code=job.failure_code or None,
        ),
        robust=True,
    )
    webhook_event_enqueue(job=job, event=WebhookEvent.COMPLETED if outcome == "deduplicated" else outcome)


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
            job_id=job.pk, to=JobStatus.COMPLETED, finished_at=finished_at, warnings=list(warnings)
        )
        if moved:
            JobImage.objects.bulk_create(images)
            job.status, job.finished_at, job.warnings = JobStatus.COMPLETED, finished_at, list(warnings)
            run_seconds = (finished_at - job.started_at).total_seconds() if job.started_at else 0.0
            job_finished(
                job=job, outcome=JobStatus.COMPLETED, duration_s=round(run_seconds, 3), images=len(images)
            )
    if not moved:
        for image in images:
            image.file.delete(save=False)
    return moved


def job_fail(*, job_id: JobId, code: str, message: str, where: Q | None = None) -> bool:
    """Fails a queued or running job with a ``FailureCode``; returns whether it moved (``where``
    as in ``transition_job``)."""
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
                *("client_network", "client_ip", "api_key", "created_at", "cost_units"),
                *("started_at", "finished_at", "failure_code", "webhook_url", "webhook_events"),
            ).get(pk=job_id)
            job_finished(job=job, outcome=JobStatus.FAILED, code=code)
    return moved
