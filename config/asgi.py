"""ASGI entry point: the web process serves the whole site over ASGI (gunicorn with uvicorn's
worker), so async views such as the event stream hold no thread while they wait.

Every other request is a sync view behind a chain of mostly sync middleware. Django's own
handler would cross between the event loop and a new thread at each sync/async boundary of
that chain (about twenty crossings a request here) and open a database connection per
request, because each request gets a thread of its own. This handler runs such a request's
whole sync chain in one crossing to a pool of long-lived threads, as a threaded WSGI server
does: each thread keeps its database connection for ``CONN_MAX_AGE``.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve

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

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        if _is_async_view(request.path_info):
            return await super().get_response_async(request)
        # sync_to_async rather than run_in_executor: it carries the request's context vars over.
        return await sync_to_async(self._respond, thread_sensitive=False, executor=self._threads)(request)

    def _respond(self, request: HttpRequest) -> HttpResponseBase:
        # What a WSGI server's request_started and request_finished do for this thread's
        # connections: drop one that is broken or older than CONN_MAX_AGE.
        close_old_connections()
        try:
            return self._sync_handler.get_response(request)
        finally:
            close_old_connections()


application = SyncViewsInThreadPoolHandler(threads=settings.WEB_THREADS)
