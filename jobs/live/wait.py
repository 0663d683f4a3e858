"""Waiting for a job to end without holding a thread: what a synchronous face (the
OpenAI-compatible endpoint) awaits between submitting a job and answering."""

from __future__ import annotations

import asyncio
import time
import uuid

from jobs.models import TERMINAL_STATUSES, GenerationJob

# How often the row is read again: a quarter second is small next to any generation.
RECHECK_SECONDS = 0.25


async def wait_for_job_end(job_id: uuid.UUID, timeout_seconds: float) -> None:
    """Returns once the job is terminal or ``timeout_seconds`` have passed."""
    deadline = time.monotonic() + timeout_seconds
    while not await GenerationJob.objects.filter(pk=job_id, status__in=TERMINAL_STATUSES).aexists():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(RECHECK_SECONDS, remaining))
