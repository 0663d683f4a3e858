"""The ASGI entry point: a sync view runs its whole middleware chain, and the request signals,
on the handler's long-lived threads, each keeping its database connection for CONN_MAX_AGE as
a threaded WSGI server would; an async view runs on the event loop and its database work on
those same threads; an unknown path still gets the site's 404."""

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2  # the openai client's HTTP library, already a test dependency
import pytest
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import connection, connections
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path

from config.asgi import SyncViewsInThreadPoolHandler
from core.request_threads import on_request_threads
from tests.support.processes import WebProcess

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


async def async_view_reading(request: HttpRequest) -> JsonResponse:
    """As the event stream and the submit view read the database."""
    view_thread = threading.current_thread().name

    def read() -> str:
        sync_view(request)
        return threading.current_thread().name

    return JsonResponse({"thread": view_thread, "read_on": await on_request_threads(read)()})


def streaming_view(request: HttpRequest) -> StreamingHttpResponse:
    async def parts() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two"
        events.append(("streamed", threading.current_thread().name))

    return StreamingHttpResponse(parts())


urlpatterns = [
    path("sync", sync_view),
    path("async", async_view),
    path("async-reading", async_view_reading),
    path("streaming", streaming_view),
]
events: list[tuple[str, str]] = []


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


@pytest.fixture
def request_signals() -> Iterator[list[tuple[str, str]]]:
    """The request signals as they fire, each with the name of the thread it fired on."""
    events.clear()

    def started(**kwargs: Any) -> None:
        events.append(("started", threading.current_thread().name))

    def finished(**kwargs: Any) -> None:
        events.append(("finished", threading.current_thread().name))

    request_started.connect(started)
    request_finished.connect(finished)
    yield events
    request_started.disconnect(started)
    request_finished.disconnect(finished)


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


@with_test_views
def test_async_views_read_the_database_on_the_pool_with_its_kept_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 60)

    responses = get_all(["/async-reading", "/sync", "/async-reading"])

    first, _, last = (response.json() for response in responses)
    assert first["thread"] == last["thread"] == threading.current_thread().name
    assert first["read_on"] == last["read_on"] and last["read_on"].startswith("django-sync")
    assert connections_seen[0] is connections_seen[1] is connections_seen[2]


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="counts PostgreSQL's sessions",
)
def test_submits_to_the_web_process_open_no_database_session_each() -> None:
    def sessions_opened() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            return int(cursor.fetchone()[0])

    threads = 2
    web = WebProcess(
        extra_env={
            "SUBMIT_RATE": "1000/m",
            "SUBMIT_MAX_ACTIVE_JOBS": "100",
            "CONN_MAX_AGE": "60",
            "WEB_THREADS": str(threads),
        }
    )
    try:
        web.wait_ready()
        with httpx2.Client(base_url=web.url) as client:
            client.post("/api/v1/jobs", json={"prompt": "warms the pool", "width": 64, "height": 64})
            before = sessions_opened()
            answers = [
                client.post("/api/v1/jobs", json={"prompt": f"a kite {n}", "width": 64, "height": 64})
                for n in range(10)
            ]
            after = sessions_opened()
    finally:
        web.stop()

    assert [answer.status_code for answer in answers] == [202] * 10
    # One per pool thread at most; before, each submit opened a session of its own.
    assert after - before <= threads


def test_an_unknown_api_path_is_a_json_404() -> None:
    (response,) = get_all(["/api/v1/nothing-here"])

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@with_test_views
def test_request_signals_fire_on_the_thread_that_serves_the_request(
    request_signals: list[tuple[str, str]],
) -> None:
    # close_old_connections is among their receivers: on another thread it would look after
    # another thread's connections, not the one the view used.
    first, second = (response.json()["thread"] for response in get_all(["/sync", "/sync"]))

    assert request_signals == [
        ("started", first),
        ("finished", first),
        ("started", second),
        ("finished", second),
    ]


@with_test_views
def test_a_streamed_response_is_sent_whole_before_the_request_finishes(
    request_signals: list[tuple[str, str]],
) -> None:
    (response,) = get_all(["/streaming"])

    assert response.content == b"one,two"
    assert [event for event, _ in request_signals] == ["started", "streamed", "finished"]
    assert request_signals[-1][1].startswith("django-sync")


@with_test_views
def test_a_request_django_cannot_read_gets_400_and_still_finishes(
    request_signals: list[tuple[str, str]],
) -> None:
    handler = SyncViewsInThreadPoolHandler(threads=1)
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "GET", "path": "/sync", "query_string": b"q=\xff", "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        asyncio.run(handler(scope, receive, send))
    finally:
        handler._threads.shutdown()

    assert sent[0]["status"] == 400  # the query string is not UTF-8
    assert [event for event, _ in request_signals] == ["started", "finished"]
