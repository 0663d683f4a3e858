"""A job's live face: its events as Server-Sent Events, served by an async view (ASGI) so a
stream holds no thread while it waits, and every stream of a web process shares one Redis
subscription; and its latest preview picture, with an ETag."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.http import parse_etags
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.views import APIView

from core.errors import ApplicationError, error_body
from core.request_threads import on_request_threads
from core.shutdown import process_stopping
from jobs import selectors
from jobs.api.errors import http_status
from jobs.api.serializers import JobSerializer, JobSubmittedSerializer, absolute_url
from jobs.api.views import JOB_ID, error_response, response_header
from jobs.errors import preview_not_found
from jobs.live.events import PROGRESS, QUEUED, JobEvent, job_events_after
from jobs.live.hub import event_hub
from jobs.live.previews import preview_get
from jobs.live.slots import StreamSlot
from jobs.live.wait import wait_for_job_end
from jobs.models import TERMINAL_STATUSES, JobStatus
from ratelimit.authentication import bearer_caller

# A Redis stream entry id, or "0" for "before the first event".
_EVENT_ID = re.compile(r"0|\d{1,20}-\d{1,20}")
_PREFER_WAIT = re.compile(r"(?:^|[\s,;])wait\s*=\s*(\d{1,9})\b", re.IGNORECASE)


def _order(event_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = event_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _sse(event: str, event_id: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def json_error(error: ApplicationError) -> JsonResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    extra = {"retry_after": error.retry_after} if error.retry_after is not None else {}
    return JsonResponse(
        error_body(code=error.code, message=error.message, **extra),
        status=http_status(error),
        headers=headers,
    )


class JobEventStream:
    """One client's stream: the stored events after its ``Last-Event-ID``, then the live ones.
    Whenever live events may have been missed, it reads the job's stream again from the last
    id it sent, so a slow or reconnecting client misses nothing and never sees one twice."""

    def __init__(self, request: HttpRequest, job_id: uuid.UUID, last_event_id: str, slot: StreamSlot) -> None:
        self.request = request
        self.job_id = job_id
        self.sent = last_event_id
        self.slot = slot
        self.queue_position: int | None = None
        self.finished = False
        self.ends_at = time.monotonic() + settings.EVENTS_MAX_STREAM_SECONDS

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async with event_hub().subscribe(str(self.job_id)) as subscription:
                while True:
                    subscription.lost.clear()
                    for event in await job_events_after(job_id=self.job_id, after=self.sent):
                        yield await self._render(event)
                        if self.finished:
                            return
                    snapshot = await on_request_threads(self._snapshot)()
                    if snapshot is not None:
                        yield snapshot
                        if self.finished:
                            return
                    while True:
                        live = await subscription.next_event(settings.EVENTS_KEEPALIVE_SECONDS)
                        if live is None:
                            if process_stopping().is_set() or time.monotonic() >= self.ends_at:
                                return  # the client reconnects with Last-Event-ID (maybe to another process)
                            if subscription.lost.is_set():
                                break
                            yield b": keep-alive\n\n"
                            await self.slot.renew()
                            if self.queue_position is not None and (
                                update := await on_request_threads(self._snapshot)()
                            ):
                                yield update
                            continue
                        if _order(live.id) <= _order(self.sent):
                            continue
                        yield await self._render(live)
                        if self.finished:
                            return
        finally:
            await self.slot.release()

    async def _render(self, event: JobEvent) -> bytes:
        self.sent = event.id
        if event.terminal:
            self.finished = True
            body = await on_request_threads(self._status_body)()
            return _sse(event.event, event.id, body)
        if event.event == PROGRESS:
            self.queue_position = None
            data = {key: event.data[key] for key in ("step", "total", "published_at")}
            preview_step = event.data.get("preview_step")
            data["preview_url"] = (
                absolute_url(
                    f"{reverse('api:job-preview', kwargs={'job_id': self.job_id})}?step={preview_step}",
                    {"request": self.request},
                )
                if preview_step is not None
                else None
            )
            return _sse(PROGRESS, event.id, data)
        if event.event == QUEUED:
            # Back in the queue (its worker was lost): its place, as the row says it now.
            self.queue_position = None
            return await on_request_threads(self._snapshot)() or b""
        return _sse(event.event, event.id, event.data)

    def _status_body(self) -> dict[str, Any]:
        job = selectors.job_get(job_id=self.job_id)
        return dict(JobSerializer(job, context={"request": self.request}).data)

    def _snapshot(self) -> bytes | None:
        """What the row says now, when the events do not say it: a finished job's terminal
        event (its stream may have expired, or its publish been lost), or a queued job's place
        when it changed. ``None`` when there is nothing new to say."""
        job = selectors.job_get(job_id=self.job_id)
        if job.status in TERMINAL_STATUSES:
            self.finished = True
            return _sse(
                job.status, self.sent, dict(JobSerializer(job, context={"request": self.request}).data)
            )
        if job.status != JobStatus.QUEUED:
            self.queue_position = None
            return None
        estimate = selectors.job_queue_estimate(job=job)
        if estimate is None or estimate.position == self.queue_position:
            return None
        self.queue_position = estimate.position
        return _sse(
            QUEUED,
            self.sent,
            {
                "position": estimate.position,
                "estimated_start_at": estimate.estimated_start_at.isoformat(),
                "estimated_finish_at": estimate.estimated_finish_at.isoformat(),
            },
        )


@require_GET
async def job_events(request: HttpRequest, job_id: str) -> HttpResponseBase:
    last_event_id = request.headers.get("Last-Event-ID", "").strip() or "0"
    if not _EVENT_ID.fullmatch(last_event_id):
        return json_error(
            ApplicationError(
                code="last_event_id_invalid", message="Last-Event-ID must be an id this stream sent."
            )
        )
    try:
        job = await on_request_threads(selectors.job_get)(job_id=job_id)
        # Streams count per caller: an API key's are its own, whatever address they come from.
        caller = await on_request_threads(bearer_caller)(request)
        slot = StreamSlot(caller.account)
        await slot.acquire()
    except AuthenticationFailed as failed:
        return json_error(ApplicationError(code=str(failed.get_codes()), message=str(failed.detail)))
    except ApplicationError as error:
        return json_error(error)
    return StreamingHttpResponse(
        JobEventStream(request, job.pk, last_event_id, slot),
        content_type="text/event-stream",
        # No proxy may hold events back to fill a buffer, nor a cache keep them.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class JobPreviewView(APIView):
    @extend_schema(
        operation_id="jobs_preview",
        summary="Read a running job's latest preview",
        description=(
            "A small picture (at most 256 px, WebP or JPEG) of the job as it forms, refreshed every "
            "few steps while it runs and kept for a short while after. The `progress` events of the "
            "stream name it as `preview_url`. Carries an `ETag`; `If-None-Match` answers 304."
        ),
        parameters=[
            JOB_ID,
            response_header("ETag", "Changes with the picture.", statuses=[200, 304]),
        ],
        responses={
            (200, "image/webp"): OpenApiResponse(OpenApiTypes.BINARY, description="The preview (WebP)."),
            (200, "image/jpeg"): OpenApiResponse(OpenApiTypes.BINARY, description="The preview (JPEG)."),
            304: OpenApiResponse(description="Not modified since the ETag sent in `If-None-Match`."),
            404: error_response(
                "`not_found`: no job has this id; `preview_not_found`: it has no preview (yet, or any more)."
            ),
        },
    )
    def get(self, request: Request, job_id: str) -> HttpResponse:
        job = selectors.job_get(job_id=job_id)
        preview = preview_get(job_id=job.pk)
        if preview is None:
            raise preview_not_found()
        headers = {"ETag": preview.etag, "Cache-Control": "no-cache"}
        if preview.etag in parse_etags(request.headers.get("If-None-Match", "")):
            return HttpResponse(status=304, headers=headers)
        return HttpResponse(preview.image, content_type=preview.content_type, headers=headers)


def preferred_wait_seconds(request: HttpRequest) -> int | None:
    """N of a ``Prefer: wait=N`` header (RFC 7240), capped at ``SUBMIT_WAIT_MAX_SECONDS``; None without one."""
    match = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return min(int(match.group(1)), settings.SUBMIT_WAIT_MAX_SECONDS) if match else None


def answering_after_wait(view: Callable[..., HttpResponseBase]) -> Callable[..., Awaitable[HttpResponseBase]]:
    """The submit view, run as it is in a thread; with ``Prefer: wait=N`` its 202 waits, holding
    no thread, until the job ends or N seconds pass, then answers as the status would: 200 with
    the finished job, or 202 with the job as it is now."""

    async def submit(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        wait_seconds = preferred_wait_seconds(request)
        response = await on_request_threads(view)(request, *args, **kwargs)
        if wait_seconds is None or response.status_code != 202:
            return response
        job_id = uuid.UUID(str(response.data["id"]))  # type: ignore[attr-defined]
        await wait_for_job_end(job_id, wait_seconds)
        job = await on_request_threads(selectors.job_get)(job_id=job_id)
        body = await on_request_threads(
            lambda: JobSubmittedSerializer(job, context={"request": request}).data
        )()
        response.data = body  # type: ignore[attr-defined]
        response.status_code = 200 if job.status in TERMINAL_STATUSES else 202
        response["Preference-Applied"] = f"wait={wait_seconds}"
        return response

    # What DRF's as_view() leaves for the schema generator and the CSRF middleware.
    submit.cls = view.cls  # type: ignore[attr-defined]
    submit.initkwargs = view.initkwargs  # type: ignore[attr-defined]
    return csrf_exempt(submit)
