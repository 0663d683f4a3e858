"""How many event streams each client holds open, across every web process: a sorted set per
client network of stream ids scored by when each lapses unless its keep-alive renews it, so a
stream whose process died stops counting on its own."""

from __future__ import annotations

import time
import uuid

from django.conf import settings

from core.redis import async_redis_client
from jobs.errors import too_many_streams


def _lifetime_seconds() -> float:
    # Two missed keep-alives and a little more: a live stream always renews in time.
    return 2 * settings.EVENTS_KEEPALIVE_SECONDS + 5


class StreamSlot:
    def __init__(self, client_network: str) -> None:
        self.key = f"jobs:event-streams:{client_network}"
        self.stream_id = uuid.uuid4().hex

    async def acquire(self) -> None:
        """Counts this stream for its client, or raises ``too_many_streams`` at the limit."""
        limit = settings.EVENTS_MAX_STREAMS_PER_CLIENT
        pipeline = async_redis_client().pipeline(transaction=True)
        pipeline.zremrangebyscore(self.key, "-inf", time.time())
        pipeline.zadd(self.key, {self.stream_id: time.time() + _lifetime_seconds()})
        pipeline.zcard(self.key)
        pipeline.expire(self.key, round(_lifetime_seconds()))
        _, _, held, _ = await pipeline.execute()
        if held > limit:
            await self.release()
            raise too_many_streams(limit, retry_after=round(settings.EVENTS_KEEPALIVE_SECONDS))

    async def renew(self) -> None:
        pipeline = async_redis_client().pipeline(transaction=True)
        pipeline.zadd(self.key, {self.stream_id: time.time() + _lifetime_seconds()}, xx=True)
        pipeline.expire(self.key, round(_lifetime_seconds()))
        await pipeline.execute()

    async def release(self) -> None:
        await async_redis_client().zrem(self.key, self.stream_id)
