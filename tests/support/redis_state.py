"""The test Redis (``REDIS_URL``, private to one test run) and the state tests reset in it."""

from __future__ import annotations

import redis
from django.conf import settings

from ratelimit.services import forget_poll_allowances


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def clear_abuse_state() -> None:
    """Empties the limits' windows and usage counters that ``ratelimit`` keeps in Redis, and the
    poll allowances this process took from them."""
    client = redis_client()
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    for pattern in (f"{prefix}:*:rl:*", f"{prefix}:*:usage:*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)
    forget_poll_allowances()
