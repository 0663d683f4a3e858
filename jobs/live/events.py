"""A job's events in Redis: each is appended to the job's own stream (its entry id is the SSE
``id``, so a client resumes from ``Last-Event-ID`` by reading the stream after it) and published
on one channel that every web process listens to once (``jobs.live.hub``)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from core.logging import log_event
from core.redis import async_redis_client, redis_client
from jobs.services.transition import JobId

logger = logging.getLogger(__name__)

EVENTS_CHANNEL = "jobs:events"
QUEUED, PROGRESS, COMPLETED, FAILED, CANCELLED = "queued", "progress", "completed", "failed", "cancelled"
TERMINAL_EVENTS = frozenset({COMPLETED, FAILED, CANCELLED})
# A job's stream holds every event of a run (at most one progress event a step) with room to spare.
STREAM_MAX_EVENTS = 1000

# Append, expire and publish in one round trip, so a published event is always in the stream
# and a listener that reads the stream after subscribing misses nothing.
_PUBLISH_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'event', ARGV[2], 'data', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', KEYS[2], ARGV[5] .. '|' .. id .. '|' .. ARGV[2] .. '|' .. ARGV[3])
return id
"""


@dataclass(frozen=True)
class JobEvent:
    id: str
    event: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS


def events_key(job_id: JobId) -> str:
    return f"jobs:events:{job_id}"


def job_event_publish(*, job_id: JobId, event: str, **data: Any) -> None:
    """Appends and publishes one event; a Redis that does not answer loses the live event only
    (the database row stays the truth, and streams re-read it), never the job."""
    data["published_at"] = time.time()
    try:
        redis_client().eval(
            _PUBLISH_SCRIPT,
            2,
            events_key(job_id),
            EVENTS_CHANNEL,
            STREAM_MAX_EVENTS,
            event,
            json.dumps(data),
            settings.EVENTS_TTL_SECONDS,
            str(job_id),
        )
    except redis.RedisError as error:
        log_event(logger.warning, "event_publish_failed", job=job_id, event_name=event, error=error)


def parse_published(message: str) -> tuple[str, JobEvent]:
    """The job id and event of a message on ``EVENTS_CHANNEL``."""
    job_id, entry_id, event, data = message.split("|", 3)
    return job_id, JobEvent(id=entry_id, event=event, data=json.loads(data))


async def job_events_after(*, job_id: JobId, after: str) -> list[JobEvent]:
    """The job's stored events after entry id ``after`` ("0" for all of them), oldest first."""
    entries: list[tuple[str, dict[str, str]]] = await async_redis_client().xrange(  # type: ignore[assignment]
        events_key(job_id), min=f"({after}" if after != "0" else "-"
    )
    return [
        JobEvent(id=entry_id, event=fields["event"], data=json.loads(fields["data"]))
        for entry_id, fields in entries
    ]
