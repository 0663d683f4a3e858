"""What workers and the web share through Redis: cancel flags, job heartbeats, worker liveness."""

from __future__ import annotations

import time
from collections.abc import Sequence

from django.conf import settings

from core.redis import redis_client
from jobs.selectors import HEARTBEAT_LIFETIME_BEATS, LIVE_GPU_WORKERS_KEY
from jobs.services.transition import JobId

CANCEL_FLAG_TTL_SECONDS = 24 * 3600
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


def worker_record_alive(*, worker_hostname: str) -> None:
    """Marks a GPU worker process as alive and able to take jobs, for the live-workers gauge;
    entries older than a heartbeat key's lifetime are dropped on the way."""
    now = time.time()
    lifetime = settings.WORKER_HEARTBEAT_SECONDS * HEARTBEAT_LIFETIME_BEATS
    pipeline = redis_client().pipeline(transaction=False)
    pipeline.zadd(LIVE_GPU_WORKERS_KEY, {worker_hostname: now})
    pipeline.zremrangebyscore(LIVE_GPU_WORKERS_KEY, "-inf", now - lifetime)
    pipeline.execute()
