"""The event stream read by a real SSE client (sseclient-py over requests) from a real ASGI web
process (gunicorn + uvicorn's worker, as production runs it) while a real GPU worker runs jobs."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
import sseclient
from django.utils import timezone

from jobs import services
from jobs.models import FailureCode
from jobs.services import reaper
from ratelimit.services import api_key_create
from tests.factories import GenerationJobFactory
from tests.support.processes import WebProcess, WorkerProcess
from tests.support.waits import http_json, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Enough steps for several progress events and previews (every 5 steps) on the tiny model.
JOB = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 20}
TERMINAL = {"completed", "failed", "cancelled"}
WEB_ENV = {"EVENTS_KEEPALIVE_SECONDS": "1", "SUBMIT_MAX_ACTIVE_JOBS": "1000", "SUBMIT_RATE": "1000/m"}


@pytest.fixture(scope="module")
def web(django_db_setup: None) -> Iterator[WebProcess]:
    web = WebProcess(extra_env=WEB_ENV)
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


def submit(web: WebProcess, **overrides: Any) -> dict[str, Any]:
    status, _, body = http_json("POST", f"{web.url}/api/v1/jobs", {**JOB, **overrides})
    assert status == 202, body
    return dict(body)


def open_stream(url: str, last_event_id: str | None = None) -> requests.Response:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = requests.get(url, headers=headers, stream=True, timeout=60)
    return response


def read_events(response: requests.Response, *, stop_after: int | None = None) -> list[Any]:
    """Events (not comments) until the server ends the stream, or the first ``stop_after``."""
    events = []
    for event in sseclient.SSEClient(response).events():
        events.append(event)
        if stop_after is not None and len(events) == stop_after:
            break
    response.close()
    return events


def events_url(web: WebProcess, job_id: str) -> str:
    return f"{web.url}/api/v1/jobs/{job_id}/events"


def ids_in_order(events: list[Any]) -> list[tuple[int, int]]:
    return [tuple(int(part) for part in event.id.split("-")) for event in events]  # type: ignore[misc]


def test_stream_sends_progress_with_previews_in_order_then_the_completed_job_and_ends(
    web: WebProcess, gpu_worker: WorkerProcess
) -> None:
    job = submit(web)
    response = open_stream(events_url(web, job["id"]))

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = read_events(response)

    names = [event.event for event in events]
    assert names[-1] == "completed"
    assert set(names[:-1]) <= {"queued", "progress"}
    progress = [json.loads(event.data) for event in events if event.event == "progress"]
    assert len(progress) >= 2
    steps = [item["step"] for item in progress]
    assert steps == sorted(steps) and steps[-1] == progress[-1]["total"]
    stored = [event for event in events if event.event != "queued"]
    assert ids_in_order(stored) == sorted(set(ids_in_order(stored)))
    completed = json.loads(events[-1].data)
    assert completed["status"] == "completed"
    assert completed["image_url"]
    preview_urls = [item["preview_url"] for item in progress if item["preview_url"]]
    assert preview_urls, "no progress event named a preview"
    preview = requests.get(preview_urls[-1], timeout=10)
    assert preview.status_code == 200
    assert preview.headers["Content-Type"] == "image/webp"
    assert preview.content[:4] == b"RIFF" and preview.content[8:12] == b"WEBP"
    again = requests.get(preview_urls[-1], headers={"If-None-Match": preview.headers["ETag"]}, timeout=10)
    assert again.status_code == 304


def test_last_event_id_resumes_after_that_event_with_nothing_missed_or_repeated(
    web: WebProcess, gpu_worker: WorkerProcess
) -> None:
    job = submit(web, steps=30)
    first_part = read_events(open_stream(events_url(web, job["id"])), stop_after=2)
    resumed = read_events(open_stream(events_url(web, job["id"]), last_event_id=first_part[-1].id))
    everything = read_events(open_stream(events_url(web, job["id"]), last_event_id="0"))

    stored = [event for event in first_part + resumed if event.event != "queued"]
    assert [(e.id, e.event) for e in stored] == [(e.id, e.event) for e in everything]
    assert everything[-1].event == "completed"


def test_a_finished_job_sends_its_terminal_event_at_once_and_ends(web: WebProcess) -> None:
    job = GenerationJobFactory(running=True)
    services.job_fail(job_id=job.pk, code=FailureCode.TIMEOUT, message="slow")

    events = read_events(open_stream(events_url(web, str(job.pk))))

    assert [event.event for event in events] == ["failed"]
    assert json.loads(events[0].data)["failure"]["code"] == "timeout"


def test_a_queued_job_sends_its_place_in_the_queue(web: WebProcess) -> None:
    job = GenerationJobFactory()

    (event,) = read_events(open_stream(events_url(web, str(job.pk))), stop_after=1)

    assert event.event == "queued"
    data = json.loads(event.data)
    assert data["position"] >= 1
    assert data["estimated_start_at"] <= data["estimated_finish_at"]


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_an_unknown_job_is_a_404_json_error(web: WebProcess, job_id: str) -> None:
    status, _, body = http_json("GET", events_url(web, job_id))

    assert status == 404
    assert body["error"]["code"] == "not_found"


def test_a_malformed_last_event_id_is_a_400_json_error(web: WebProcess) -> None:
    response = open_stream(events_url(web, str(GenerationJobFactory().pk)), last_event_id="../etc")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "last_event_id_invalid"


def test_a_preview_of_a_job_without_one_is_a_404_json_error(web: WebProcess) -> None:
    status, _, body = http_json("GET", f"{web.url}/api/v1/jobs/{GenerationJobFactory().pk}/preview")

    assert status == 404
    assert body["error"]["code"] == "preview_not_found"


def open_stream_from(
    web: WebProcess, job_id: str, source: str, *, api_key: str | None = None
) -> http.client.HTTPResponse:
    """A stream opened from the loopback address ``source``: a client of its own for the limits."""
    host, port = web.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    headers = {"Accept": "text/event-stream"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    connection.request("GET", f"/api/v1/jobs/{job_id}/events", headers=headers)
    return connection.getresponse()


def test_streams_over_the_per_client_limit_are_refused_with_429(django_db_setup: None) -> None:
    web = WebProcess(extra_env={**WEB_ENV, "EVENTS_MAX_STREAMS_PER_CLIENT": "2"})
    try:
        web.wait_ready()
        job_id = str(GenerationJobFactory().pk)
        held = [open_stream_from(web, job_id, "127.0.0.21") for _ in range(2)]
        refused = open_stream_from(web, job_id, "127.0.0.21")
        other_client = open_stream_from(web, job_id, "127.0.0.22")

        assert [response.status for response in held] == [200, 200]
        assert refused.status == 429
        assert json.loads(refused.read())["error"]["code"] == "too_many_streams"
        assert int(refused.getheader("Retry-After", "0")) >= 1
        assert other_client.status == 200
        # A closed stream frees its place.
        held[0].close()
        wait_for(lambda: open_stream_from(web, job_id, "127.0.0.21").status == 200, timeout=30, interval=0.5)
    finally:
        web.stop()


def test_an_api_keys_streams_count_as_its_own_wherever_they_come_from(django_db_setup: None) -> None:
    web = WebProcess(extra_env={**WEB_ENV, "EVENTS_MAX_STREAMS_PER_CLIENT": "2"})
    try:
        web.wait_ready()
        job_id = str(GenerationJobFactory().pk)
        key_a, key_b = (api_key_create(name=name).key for name in ("a", "b"))
        held = [
            open_stream_from(web, job_id, source, api_key=key_a) for source in ("127.0.0.31", "127.0.0.32")
        ]
        refused = open_stream_from(web, job_id, "127.0.0.33", api_key=key_a)
        other_key = open_stream_from(web, job_id, "127.0.0.31", api_key=key_b)
        anonymous = open_stream_from(web, job_id, "127.0.0.31")
        unknown_key = open_stream_from(web, job_id, "127.0.0.34", api_key=f"ig_00000000_{'x' * 43}")

        assert [response.status for response in held] == [200, 200]
        assert refused.status == 429
        assert json.loads(refused.read())["error"]["code"] == "too_many_streams"
        assert (other_key.status, anonymous.status) == (200, 200)
        assert unknown_key.status == 401
        assert json.loads(unknown_key.read())["error"]["code"] == "invalid_api_key"
    finally:
        web.stop()


def test_a_waiting_stream_ends_after_its_longest_life_and_resumes_where_it_ended(
    django_db_setup: None,
) -> None:
    web = WebProcess(extra_env={**WEB_ENV, "EVENTS_MAX_STREAM_SECONDS": "2"})
    try:
        web.wait_ready()
        job_id = str(GenerationJobFactory().pk)  # queued; no worker is told of it
        events: list[Any] = []
        reader = threading.Thread(
            target=lambda: events.extend(read_events(open_stream(events_url(web, job_id))))
        )
        reader.start()
        # Keep-alives come every second, so only the server's ending stops the reader.
        reader.join(timeout=60)

        assert not reader.is_alive(), "the stream of a waiting job did not end"
        assert [event.event for event in events] == ["queued"]
        (resumed,) = read_events(
            open_stream(events_url(web, job_id), last_event_id=events[-1].id), stop_after=1
        )
        assert resumed.event == "queued"
        assert json.loads(resumed.data)["position"] == json.loads(events[0].data)["position"]
    finally:
        web.stop()


def test_a_job_the_reaper_puts_back_in_the_queue_tells_its_stream_its_place(
    web: WebProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No worker is told of the re-queued job: the session's worker, if it runs, would take it
    # at once, and the stream would rightly report it running again instead.
    woken: list[str] = []
    monkeypatch.setattr(reaper, "wake_gpu_worker", woken.append)
    job = GenerationJobFactory(
        running=True, started_at=timezone.now() - timedelta(hours=1), worker_hostname="gpu-dead@test"
    )
    response = open_stream(events_url(web, str(job.pk)))
    lines = response.iter_lines()
    # The first keep-alive: the stream has said all it had to say of the running job.
    assert next(line for line in lines if line.startswith(b":")) == b": keep-alive"

    reaped = services.reap_stale_jobs()
    event = next(sseclient.SSEClient(line + b"\n" for line in lines).events())
    response.close()

    assert reaped.requeued == 1 and woken == [job.model]
    assert event.event == "queued"
    assert json.loads(event.data)["position"] >= 1


def test_a_client_that_never_reads_does_not_hold_up_another(
    web: WebProcess, gpu_worker: WorkerProcess
) -> None:
    job = submit(web, steps=30)
    host, port = web.url.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)))
    # Asks for the stream and never reads a byte of it.
    stalled.sendall(f"GET /api/v1/jobs/{job['id']}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    try:
        events = read_events(open_stream(events_url(web, job["id"])))
    finally:
        stalled.close()

    assert events[-1].event == "completed"


def test_a_client_reconnecting_after_a_web_restart_misses_nothing(
    django_db_setup: None, gpu_worker: WorkerProcess
) -> None:
    web = WebProcess(extra_env=WEB_ENV)
    web.wait_ready()
    port = int(web.url.rsplit(":", 1)[1])
    job = submit(web, steps=60, width=128, height=128)
    received: list[Any] = []

    def read_until_cut() -> None:
        try:
            for event in sseclient.SSEClient(open_stream(events_url(web, job["id"]))).events():
                received.append(event)
        except requests.RequestException:
            pass  # the restart may cut the stream mid-event

    reader = threading.Thread(target=read_until_cut)
    reader.start()
    wait_for(lambda: any(event.event == "progress" for event in received), timeout=60)
    web.stop()
    reader.join(timeout=30)
    restarted = WebProcess(extra_env=WEB_ENV, port=port)
    try:
        restarted.wait_ready()
        after = read_events(open_stream(events_url(restarted, job["id"]), last_event_id=received[-1].id))
        everything = read_events(open_stream(events_url(restarted, job["id"]), last_event_id="0"))
    finally:
        restarted.stop()

    assert not reader.is_alive()
    assert received[-1].event != "completed", "the job ended before the restart: make it longer"
    stored = [event for event in received + after if event.event != "queued"]
    assert after[-1].event == "completed"
    assert [(e.id, e.event) for e in stored] == [(e.id, e.event) for e in everything]


def test_prefer_wait_answers_200_with_the_finished_job_and_caps_the_wait(
    web: WebProcess, gpu_worker: WorkerProcess
) -> None:
    response = requests.post(
        f"{web.url}/api/v1/jobs", json={**JOB, "steps": 4}, headers={"Prefer": "wait=600"}, timeout=120
    )

    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=60"
    body = response.json()
    assert body["status"] == "completed"
    assert body["image_url"]
    assert response.headers["Location"] == body["status_url"]


def test_prefer_wait_that_runs_out_answers_202_with_the_job_as_it_is(
    web: WebProcess, gpu_worker: WorkerProcess
) -> None:
    response = requests.post(
        f"{web.url}/api/v1/jobs",
        json={**JOB, "steps": 100, "width": 256, "height": 256},
        headers={"Prefer": "respond-async, wait=1"},
        timeout=60,
    )
    body = response.json()
    requests.post(f"{body['status_url']}/cancel", timeout=10)

    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "wait=1"
    assert body["status"] in {"queued", "running"}
