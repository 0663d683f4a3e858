"""Every read of jobs that a face shows: status for the API and page, numbers for operators."""

from __future__ import annotations

import uuid

from jobs.errors import job_not_found
from jobs.models import GenerationJob


def job_get(*, job_id: str | uuid.UUID) -> GenerationJob:
    """The job with its images, or a ``not_found`` JobError (also for ids that are not UUIDs)."""
    try:
        parsed = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise job_not_found() from None
    job = GenerationJob.objects.prefetch_related("images").filter(pk=parsed).first()
    if job is None:
        raise job_not_found()
    return job
