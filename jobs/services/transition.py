"""The one way a job changes status: a conditional UPDATE against ``TRANSITION_SOURCES``."""

from __future__ import annotations

import uuid

from django.db.models import Q
from django.utils import timezone

from jobs.models import TRANSITION_SOURCES, GenerationJob

JobId = uuid.UUID | str


def transition_job(*, job_id: JobId, to: str, where: Q | None = None, **fields: object) -> bool:
    """Moves a job to ``to`` if its status allows it, in one UPDATE so two racing writers cannot
    both win; ``where`` adds conditions to it. Returns whether it moved."""
    sources = TRANSITION_SOURCES[to]
    moved = (
        GenerationJob.objects.filter(pk=job_id, status__in=sources)
        .filter(where or Q())
        .update(status=to, updated_at=timezone.now(), **fields)
    )
    return moved == 1
