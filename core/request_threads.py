"""The web process's request threads: the long-lived threads that serve its sync views
(``config.asgi``), each keeping its database connection. Async views run their sync work there
too, through ``on_request_threads``, rather than in the thread Django starts for each async
request, which opened a database connection per request."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")

_request_threads: ContextVar[ThreadPoolExecutor | None] = ContextVar("request_threads", default=None)


def serve_async_view_on(executor: ThreadPoolExecutor) -> None:
    """Set by the ASGI handler in the context of each async view it serves."""
    _request_threads.set(executor)


def on_request_threads(function: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """``function`` as a coroutine that runs it on the request threads; where the handler set
    none (Django's test client, another server) as ``sync_to_async`` would."""
    executor = _request_threads.get()
    if executor is None:
        return sync_to_async(function)
    return sync_to_async(_with_connection_checks(function), thread_sensitive=False, executor=executor)


def _with_connection_checks(function: Callable[P, R]) -> Callable[P, R]:
    """What the request signals do for a sync view: drop the thread's connection before and after
    if it is broken or older than ``CONN_MAX_AGE``, and check it before reuse."""

    @functools.wraps(function)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return checked
