"""The ASGI entry point: a sync view runs its whole middleware chain on the handler's long-lived
threads, each keeping its database connection for CONN_MAX_AGE as a threaded WSGI server would;
an async view runs on the event loop; an unknown path still gets the site's 404."""

import asyncio
import threading
from typing import Any

import httpx2  # the openai client's HTTP library, already a test dependency
import pytest
from django.db import connection, connections
from django.http import HttpRequest, JsonResponse
from django.urls import path

from config.asgi import SyncViewsInThreadPoolHandler

pytestmark = pytest.mark.django_db(transaction=True)
with_test_views = pytest.mark.urls(__name__)

connections_seen: list[Any] = []


def sync_view(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connections_seen.append(connection.connection)
    return JsonResponse({"thread": threading.current_thread().name})


async def async_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"thread": threading.current_thread().name})


urlpatterns = [path("sync", sync_view), path("async", async_view)]


def get_all(paths: list[str]) -> list[httpx2.Response]:
    handler = SyncViewsInThreadPoolHandler(threads=1)

    async def requests() -> list[httpx2.Response]:
        transport = httpx2.ASGITransport(app=handler)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.get(path) for path in paths]

    try:
        return asyncio.run(requests())
    finally:
        # The pool's one thread closes the connection it kept, so the test database can be dropped.
        handler._threads.submit(connections.close_all).result()
        handler._threads.shutdown()


@pytest.fixture(autouse=True)
def no_connections_seen() -> None:
    connections_seen.clear()


@with_test_views
def test_sync_views_run_on_the_pool_and_keep_their_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)

    responses = get_all(["/sync", "/sync", "/sync"])

    assert [response.status_code for response in responses] == [200, 200, 200]
    threads = {response.json()["thread"] for response in responses}
    assert len(threads) == 1 and threads.pop().startswith("django-sync")
    assert connections_seen[0] is connections_seen[1] is connections_seen[2]


@with_test_views
def test_without_conn_max_age_each_request_gets_a_fresh_connection() -> None:
    assert connections.settings["default"]["CONN_MAX_AGE"] == 0

    get_all(["/sync", "/sync"])

    assert connections_seen[0] is not connections_seen[1]


@with_test_views
def test_async_views_run_on_the_event_loop() -> None:
    (response,) = get_all(["/async"])

    assert response.json()["thread"] == threading.current_thread().name


def test_an_unknown_api_path_is_a_json_404() -> None:
    (response,) = get_all(["/api/v1/nothing-here"])

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
