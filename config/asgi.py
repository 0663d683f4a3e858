"""ASGI entry point: the web process serves the whole site over ASGI (gunicorn with uvicorn's
worker), so async views such as the event stream hold no thread while they wait.

Every other request is a sync view behind a chain of mostly sync middleware. Django's own
handler would cross between the event loop and a thread at each sync/async boundary of that
chain (about twenty crossings a request here), send the request signals from a new thread
made for each request, and so open a database connection per request. This handler serves
such a request as a threaded WSGI server does, in one crossing to a pool of long-lived
threads: the request signals, the whole sync chain and closing the response run on one of
them, which keeps its database connection for ``CONN_MAX_AGE``. Async views take Django's
async path, and run their sync work (their database calls) on the same threads.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import HttpResponseBase
from django.urls import Resolver404, resolve, set_script_prefix

from core.request_threads import serve_async_view_on

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)


def _is_async_view(path: str) -> bool:
    try:
        view = resolve(path).func
    except Resolver404:
        return False
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        return bool(view_class.view_is_async)
    return iscoroutinefunction(view)


class SyncViewsInThreadPoolHandler(ASGIHandler):
    def __init__(self, threads: int) -> None:
        super().__init__()
        self._sync_handler = BaseHandler()
        self._sync_handler.load_middleware(is_async=False)
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="django-sync")

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        script_prefix = get_script_prefix(scope)
        if _is_async_view(scope["path"].removeprefix(script_prefix)):
            serve_async_view_on(self._threads)
            await super().handle(scope, receive, send)
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(script_prefix)
        try:
            # sync_to_async rather than run_in_executor: it carries the request's context vars over.
            on_pool = sync_to_async(self._respond, thread_sensitive=False, executor=self._threads)
            response = await on_pool(scope, body_file)
            try:
                await self.send_response(response, send)
            finally:
                if response.streaming:
                    await sync_to_async(response.close, thread_sensitive=False, executor=self._threads)()
        finally:
            body_file.close()

    def _respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        """What a WSGI server's thread does with a request: its signals (``close_old_connections``
        among their receivers) on the thread whose connection they look after. A complete body is
        closed before it is sent, a streamed one once it has been."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        match self.create_request(scope, body_file):
            case (None, bad_request):  # an undecodable path or too big a body
                response = bad_request
            case (request, None):
                response = self._sync_handler.get_response(request)
        if not response.streaming:
            response.close()
        return response


application = SyncViewsInThreadPoolHandler(threads=settings.WEB_THREADS)
