"""Ending jobs not finished by their client's deadline (``deadline_at``), queued or running."""

from __future__ import annotations

import logging

from django.db.models import Q
from django.utils import timezone

from core.logging import log_event
from jobs.models import ACTIVE_STATUSES, FailureCode, GenerationJob
from jobs.services.finish import job_fail
from jobs.services.liveness import job_flag_cancelled
from jobs.services.transition import JobId

logger = logging.getLogger(__name__)

DEADLINE_MESSAGE = "The job was not finished by its deadline."


def job_fail_deadline_exceeded(*, job_id: JobId) -> bool:
    """Fails an active job ``deadline_exceeded`` if its deadline has passed; returns whether it
    moved. Its cancel flag then stops a worker running it at the next step, as a cancel does."""
    moved = job_fail(
        job_id=job_id,
        code=FailureCode.DEADLINE_EXCEEDED,
        message=DEADLINE_MESSAGE,
        where=Q(deadline_at__lte=timezone.now()),
    )
    if moved:
        job_flag_cancelled(job_id=job_id)
    return moved


def jobs_fail_overdue(*, statuses: tuple[str, ...] = ACTIVE_STATUSES) -> int:
    """Fails every job in ``statuses`` past its deadline; returns how many. A running one's
    worker stops at its next step and stores nothing for it."""
    overdue = GenerationJob.objects.filter(status__in=statuses, deadline_at__lte=timezone.now())
    failed = sum(job_fail_deadline_exceeded(job_id=job_id) for job_id in overdue.values_list("pk", flat=True))
    if failed:
        log_event(logger.info, "deadlines_exceeded", jobs=failed)
    return failed
