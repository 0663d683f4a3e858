"""The one way to Redis: one client per process and URL (redis-py's pool is thread- and
fork-safe), whose timeouts make a stalled Redis a ``redis.TimeoutError``, never a hang.
Async views get the same policy from ``async_redis_client``, one client per event loop."""

from __future__ import annotations

import asyncio
import functools
import weakref

import redis
import redis.asyncio
from django.conf import settings

# Per event loop (one per web process); the pub/sub subscription takes one more of its own.
ASYNC_MAX_CONNECTIONS = 32

_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.asyncio.Redis]] = (
    weakref.WeakKeyDictionary()
)


def redis_client(url: str | None = None) -> redis.Redis:
    return _client(url or settings.REDIS_URL, settings.REDIS_SOCKET_TIMEOUT_SECONDS, True)


def binary_redis_client(url: str | None = None) -> redis.Redis:
    """For bytes values (previews): answers are not decoded as text."""
    return _client(url or settings.REDIS_URL, settings.REDIS_SOCKET_TIMEOUT_SECONDS, False)


@functools.cache
def _client(url: str, timeout_seconds: float, decode_responses: bool) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        decode_responses=decode_responses,
    )


def async_redis_client(url: str | None = None) -> redis.asyncio.Redis:
    """The running event loop's client: an asyncio connection belongs to the loop that opened it."""
    clients = _async_clients.setdefault(asyncio.get_running_loop(), {})
    url = url or settings.REDIS_URL
    if url not in clients:
        timeout_seconds = settings.REDIS_SOCKET_TIMEOUT_SECONDS
        # Thousands of streams share a few connections: a burst waits its turn for one (as long
        # as a command may take) rather than fail as the default pool does past its maximum.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=ASYNC_MAX_CONNECTIONS,
            timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            decode_responses=True,
        )
        clients[url] = redis.asyncio.Redis(connection_pool=pool)
    return clients[url]
