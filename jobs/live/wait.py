"""Waiting for a job's end without holding a thread: for ``Prefer: wait`` and any other face
that answers once a job is done."""

from __future__ import annotations

import asyncio
import uuid

from core.request_threads import on_request_threads
from core.shutdown import process_stopping
from jobs import selectors
from jobs.live.hub import event_hub

# A safety net under the events: the database is re-read this often while waiting.
RECHECK_SECONDS = 5.0


async def wait_for_job_end(job_id: uuid.UUID, timeout_seconds: float) -> None:
    """Returns when the job is terminal (or unknown) or ``timeout_seconds`` have passed. Listens
    first and reads the row second, so an end between the two is not missed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    async with event_hub().subscribe(str(job_id)) as subscription:
        while True:
            if await on_request_threads(selectors.job_is_finished)(job_id=job_id):
                return
            subscription.lost.clear()
            while (remaining := deadline - loop.time()) > 0:
                event = await subscription.next_event(min(remaining, RECHECK_SECONDS))
                if process_stopping().is_set():
                    return  # the answer goes out as things are, before the process stops
                if event is None or event.terminal:
                    break
            if deadline - loop.time() <= 0:
                return
