"""Claiming and running jobs: the fair batch claim, progress, and cancelling."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db.models import Q
from django.utils import timezone

from core.logging import log_event
from generator.parameters import BATCH_KEY_FIELDS
from jobs import selectors
from jobs.errors import job_already_finished, job_not_found
from jobs.live.events import PROGRESS, job_event_publish
from jobs.models import FailureCode, GenerationJob, JobStatus
from jobs.services.deadline import jobs_fail_overdue
from jobs.services.finish import job_finished, webhook_event_enqueue
from jobs.services.liveness import job_flag_cancelled
from jobs.services.transition import JobId, transition_job
from webhooks.models import WebhookEvent

logger = logging.getLogger(__name__)

# Compatible queued jobs a claim considers for a batch; enough to find every client's turn.
BATCH_CANDIDATES = 200
# Each lost attempt means another worker claimed a head meanwhile; giving up leaves a job
# waiting for the next wake-up (or the reaper's), so try long enough for many racing workers.
CLAIM_ATTEMPTS = 20


def claim_next_jobs(
    *, worker_hostname: str, max_images: int, models: Sequence[str] | None = None
) -> list[GenerationJob]:
    """Claims the next job in fair order and up to ``max_images`` images of compatible ones.

    Clients take turns (``selectors.client_turn_order``): the head is the oldest queued job of
    the client whose turn it is, and compatible jobs fill the batch in the same turn order.
    Compatible means one pipeline call can serve them all: same model, size, steps, guidance
    and scheduler. Only jobs of ``models`` (the models this worker serves; None: every model)
    are considered. Each claim is a conditional UPDATE, so two workers never share a job; a
    worker that loses the head to another reads the turn order again. Queued jobs past their
    deadline are failed ``deadline_exceeded`` first and never claimed.
    """
    queued = GenerationJob.objects.filter(status=JobStatus.QUEUED)
    if models is not None:
        queued = queued.filter(model__in=models)
    for _attempt in range(CLAIM_ATTEMPTS):
        jobs_fail_overdue(statuses=(JobStatus.QUEUED,))
        turn_order = selectors.client_turn_order(models=models)
        if not turn_order:
            return []
        head = queued.filter(client_aggregate=turn_order[0]).order_by("created_at").first()
        if head is None:
            continue
        compatible = queued.filter(**{name: getattr(head, name) for name in BATCH_KEY_FIELDS}).exclude(
            pk=head.pk
        )
        # The head is its client's oldest job and that client's turn comes first: it stays first.
        candidates = _in_turns([head, *compatible.order_by("created_at")[:BATCH_CANDIDATES]], turn_order)
        claimed: list[GenerationJob] = []
        images = 0
        now = timezone.now()
        # A deadline that passed since the sweep above: the next attempt's sweep fails that job.
        within_deadline = Q(deadline_at__isnull=True) | Q(deadline_at__gt=now)
        for candidate in candidates:
            if claimed and images + candidate.num_images > max_images:
                continue
            if transition_job(
                job_id=candidate.pk,
                to=JobStatus.RUNNING,
                where=within_deadline,
                started_at=now,
                worker_hostname=worker_hostname,
                progress_step=0,
                progress_total=0,
            ):
                claimed.append(candidate)
                images += candidate.num_images
            elif not claimed:
                # Another worker took the head: this turn order is stale, read the queue again
                # rather than fill a batch from the other worker's leftovers.
                break
        if claimed:
            for job in claimed:
                # What the claim's UPDATE wrote, without reading each row back.
                job.status, job.started_at, job.worker_hostname = JobStatus.RUNNING, now, worker_hostname
                job.progress_step = job.progress_total = 0
                log_event(logger.info, "started", job=job.id, worker=worker_hostname, batch=len(claimed))
                webhook_event_enqueue(job=job, event=WebhookEvent.STARTED)
            return claimed
    return []


def _in_turns(jobs: Sequence[GenerationJob], turn_order: Sequence[str]) -> list[GenerationJob]:
    """Jobs (oldest first) reordered as turns: every client's oldest, then every second, ..."""
    rank = {ip: index for index, ip in enumerate(turn_order)}
    seen: dict[str, int] = {}
    keyed = []
    for job in jobs:
        nth = seen.get(job.client_aggregate, 0)
        seen[job.client_aggregate] = nth + 1
        keyed.append(((nth, rank.get(job.client_aggregate, len(rank))), job))
    return [job for _key, job in sorted(keyed, key=lambda item: item[0])]


def job_record_progress(
    *, job_ids: Sequence[JobId], step: int, total: int, preview_step: int | None = None
) -> None:
    """Writes progress and publishes it live; ``preview_step`` names the step of the jobs' latest preview."""
    GenerationJob.objects.filter(pk__in=job_ids, status=JobStatus.RUNNING).update(
        progress_step=min(step, total), progress_total=total, updated_at=timezone.now()
    )
    for job_id in job_ids:
        job_event_publish(
            job_id=job_id, event=PROGRESS, step=min(step, total), total=total, preview_step=preview_step
        )


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
    job_flag_cancelled(job_id=job_id)
    job = GenerationJob.objects.get(pk=job_id)
    job_finished(job=job, outcome=JobStatus.CANCELLED)
    return job
