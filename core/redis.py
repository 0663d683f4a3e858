"""The one way to Redis: one client per process and URL (redis-py's pool is thread- and
fork-safe), whose timeouts make a stalled Redis a ``redis.TimeoutError``, never a hang."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


def redis_client(url: str | None = None) -> redis.Redis:
    return _client(url or settings.REDIS_URL, settings.REDIS_SOCKET_TIMEOUT_SECONDS)


@functools.cache
def _client(url: str, timeout_seconds: float) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout_seconds, socket_timeout=timeout_seconds, decode_responses=True
    )
