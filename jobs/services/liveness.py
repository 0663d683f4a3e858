"""What a worker and the web share through Redis while a job runs: cancel flags and heartbeats."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings

from core.redis import redis_client
from jobs.services.transition import JobId

CANCEL_FLAG_TTL_SECONDS = 24 * 3600
# A heartbeat key outlives its refresh by this many intervals, so one late beat is no death.
HEARTBEAT_LIFETIME_BEATS = 3
# When the reaper first saw this Redis dataset: after a restart or a flush, every heartbeat is
# gone until live workers write theirs again, so missing ones mean nothing for a grace period.
HEARTBEAT_WATCHED_SINCE_KEY = "jobs:heartbeat-watched-since"


def cancel_flag_key(job_id: JobId) -> str:
    return f"jobs:cancel:{job_id}"


def heartbeat_key(job_id: JobId) -> str:
    return f"jobs:heartbeat:{job_id}"


def job_flag_cancelled(*, job_id: JobId) -> None:
    redis_client().set(cancel_flag_key(job_id), 1, ex=CANCEL_FLAG_TTL_SECONDS)


def cancelled_job_ids(*, job_ids: Sequence[JobId]) -> set[str]:
    """Which of these jobs were cancelled; one Redis round trip, cheap enough for every step."""
    flags = redis_client().mget([cancel_flag_key(job_id) for job_id in job_ids])
    return {str(job_id) for job_id, flag in zip(job_ids, flags, strict=True) if flag is not None}


def job_record_heartbeat(*, job_ids: Sequence[JobId], worker_hostname: str) -> None:
    """Marks running jobs as held by a live worker for ``HEARTBEAT_LIFETIME_BEATS`` heartbeat
    intervals; one Redis round trip. The key names the worker, for an operator's ``redis-cli``."""
    lifetime_ms = round(settings.WORKER_HEARTBEAT_SECONDS * HEARTBEAT_LIFETIME_BEATS * 1000)
    pipeline = redis_client().pipeline(transaction=False)
    for job_id in job_ids:
        pipeline.set(heartbeat_key(job_id), worker_hostname, px=lifetime_ms)
    pipeline.execute()
