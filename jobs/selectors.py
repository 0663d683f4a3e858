"""Every read of jobs that a face shows: status for the API and page, numbers for operators."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from jobs.errors import job_not_found
from jobs.models import GenerationJob, JobStatus


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


def job_queue_position(*, job: GenerationJob) -> int | None:
    """1 for the job a worker claims next (claims go oldest first); None once it left the queue."""
    if job.status != JobStatus.QUEUED:
        return None
    return GenerationJob.objects.filter(status=JobStatus.QUEUED, created_at__lt=job.created_at).count() + 1


def jobs_in_order(*, job_ids: Sequence[str]) -> list[GenerationJob]:
    """The jobs among these ids that still exist, with their images, in the order given."""
    by_id = {
        str(job.pk): job for job in GenerationJob.objects.prefetch_related("images").filter(pk__in=job_ids)
    }
    return [by_id[job_id] for job_id in job_ids if job_id in by_id]
