"""One subscription to ``EVENTS_CHANNEL`` per web process (per event loop), fanned out to the
streams and waits of that process through bounded in-process queues: one Redis connection
however many clients listen, and a client that does not read fills only its own queue."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from django.conf import settings

from core.logging import log_event
from core.redis import async_redis_client
from core.shutdown import process_stopping
from jobs.live.events import EVENTS_CHANNEL, JobEvent, parse_published

logger = logging.getLogger(__name__)

# How long one read of the subscription waits, so a lost connection is noticed this fast.
_LISTEN_POLL_SECONDS = 1.0
_RECONNECT_DELAY_SECONDS = 0.5


class Subscription:
    """A listener's queue of one job's events. ``lost`` is set when events may have been missed
    (its queue overflowed, or the hub's connection dropped): the listener must re-read the job's
    stream or the database before trusting the queue again."""

    def __init__(self, job_id: str, capacity: int) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[JobEvent] = asyncio.Queue(maxsize=capacity)
        self.lost = asyncio.Event()

    def deliver(self, event: JobEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lost.set()

    async def next_event(self, timeout: float) -> JobEvent | None:
        """The next event, or None after ``timeout`` seconds, once ``lost`` is set, or once the
        process is stopping."""
        get = asyncio.ensure_future(self.queue.get())
        waiters = {
            get,
            asyncio.ensure_future(self.lost.wait()),
            asyncio.ensure_future(process_stopping().wait()),
        }
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when the stream itself is cancelled (its client went away).
            for waiter in waiters:
                waiter.cancel()
        if get in done:
            return get.result()
        return None


class EventHub:
    def __init__(self) -> None:
        self._subscriptions: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    @asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[Subscription]:
        """A subscription that is live when this returns: events published after it are queued."""
        subscription = Subscription(job_id, settings.EVENTS_CLIENT_QUEUE_SIZE)
        self._subscriptions[job_id].add(subscription)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="jobs-event-hub")
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS)
        except TimeoutError:
            subscription.lost.set()
        try:
            yield subscription
        finally:
            listeners = self._subscriptions[job_id]
            listeners.discard(subscription)
            if not listeners:
                del self._subscriptions[job_id]

    async def _listen(self) -> None:
        while True:
            pubsub = async_redis_client().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                self._connected.set()
                while True:
                    message = await pubsub.get_message(timeout=_LISTEN_POLL_SECONDS)
                    if message is not None:
                        self._dispatch(message["data"])
            except (redis.RedisError, OSError) as error:
                log_event(logger.warning, "event_hub_disconnected", error=error)
            finally:
                self._connected.clear()
                # Whatever was published while the connection was down never reached the queues.
                for listeners in self._subscriptions.values():
                    for subscription in listeners:
                        subscription.lost.set()
                await pubsub.aclose()
            await asyncio.sleep(_RECONNECT_DELAY_SECONDS)

    def _dispatch(self, message: str) -> None:
        job_id, event = parse_published(message)
        for subscription in self._subscriptions.get(job_id, ()):
            subscription.deliver(event)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventHub] = weakref.WeakKeyDictionary()


def event_hub() -> EventHub:
    """The running event loop's hub (a web process has one loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = EventHub()
    return _hubs[loop]
