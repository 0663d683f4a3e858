"""Tells long-lived async work (event streams) that its web process is stopping, so that it ends
at once instead of holding the restart up; its clients reconnect to another process."""

from __future__ import annotations

import asyncio
import weakref

_stopping: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = weakref.WeakKeyDictionary()


def process_stopping() -> asyncio.Event:
    """The running event loop's "stopping" event: set once the server begins its shutdown."""
    loop = asyncio.get_running_loop()
    if loop not in _stopping:
        _stopping[loop] = asyncio.Event()
    return _stopping[loop]
