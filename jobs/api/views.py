"""REST API for integrators: submit a job (202), read its status (with an ETag), cancel it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import selectors, services
from jobs.api.serializers import (
    ErrorSerializer,
    JobSerializer,
    JobSubmitInputSerializer,
    JobSubmittedSerializer,
    ModelSerializer,
    job_status_body,
)
from jobs.deadlines import CANCEL_AFTER_PATTERN
from jobs.models import GenerationJob, JobImage
from ratelimit.authentication import request_caller
from ratelimit.client_ip import client_ip
from ratelimit.services import enforce_status_poll_limit


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


JOB_ID = OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


def response_header(
    name: str, description: str, *, statuses: list[int], schema: Any = OpenApiTypes.STR
) -> OpenApiParameter:
    """A header the answer carries, declared in the schema so generated clients can read it."""
    return OpenApiParameter(
        name, schema, OpenApiParameter.HEADER, description=description, required=True, response=statuses
    )


RETRY_AFTER = response_header(
    "Retry-After", "Seconds to wait before trying again.", statuses=[429, 503], schema=OpenApiTypes.INT
)
NOT_FOUND = error_response("`not_found`: no job has this id.")
UNAUTHORIZED = error_response(
    "`invalid_api_key` (malformed or unknown) or `api_key_revoked`; never answered as anonymous."
)


def status_etag(
    *, job: GenerationJob, images: list[JobImage], queue_position: int | None, base_url: str
) -> str:
    """A strong ETag from what the status body is made of, known before the body is built, so
    a 304 costs no body at all. Every write to a job sets ``updated_at``; images come and go
    (results retention) without one, the queue position moves with other jobs, and URLs
    follow the request's host. The queue estimates are left out: absolute times computed from
    "now", they would change the tag on every poll; they are refreshed whenever anything else
    (the position included) changes."""
    parts = (
        job.pk,
        job.updated_at.isoformat(),
        job.status,
        [image.file.name for image in images],
        queue_position,
        base_url,
    )
    return f'"{hashlib.sha256(repr(parts).encode()).hexdigest()[:32]}"'


class ModelListView(APIView):
    @extend_schema(
        operation_id="models_list",
        summary="List the models",
        description="The models a job may name in `model`, each with its defaults and limits.",
        responses={200: ModelSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        return Response(ModelSerializer(selectors.models_listed(), many=True).data)


class JobListView(APIView):
    # JSON only: one request format to document, test and hash for idempotency.
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="jobs_submit",
        summary="Submit a job",
        description=(
            "Validates and queues a job; answers 202 at once with the job and "
            "`Location` = its status URL. With an explicit `seed`, a request identical to a "
            "completed one is answered as an already `completed` job with the same files "
            "(`deduplicated: true`). A retried submit with the same `Idempotency-Key` and "
            "body (same client, within 24 hours) answers 202 with the original job. With "
            "`Prefer: wait=N` the answer waits until the job ends or N seconds pass (N is capped, "
            "60 by default), then answers 200 with the finished job or 202 as usual."
        ),
        request=JobSubmitInputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="1-255 printable ASCII characters; makes retrying a submit safe.",
                pattern=r"^[ -~]{1,255}$",
            ),
            OpenApiParameter(
                "Cancel-After",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description=(
                    "A deadline as a Go duration (`90s`, `5m`, `1m30s`), at least 1 second and at most "
                    "`JOB_DEADLINE_MAX_SECONDS`: a job not finished by then fails `deadline_exceeded`, "
                    "queued or running. With `deadline_seconds` too, the earlier one applies."
                ),
                pattern=CANCEL_AFTER_PATTERN,
            ),
            OpenApiParameter(
                "Prefer",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="`wait=N`: wait up to N seconds for the job's end before answering.",
                pattern=r"wait=\d+",
            ),
            response_header("Location", "The job's status URL.", statuses=[200, 202]),
            OpenApiParameter(
                "Preference-Applied",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="`wait=N`, the wait applied, when the request sent `Prefer: wait`.",
                response=[200, 202],
            ),
            RETRY_AFTER,
        ],
        responses={
            200: OpenApiResponse(
                JobSubmittedSerializer, description="With `Prefer: wait`: the job ended in time."
            ),
            202: JobSubmittedSerializer,
            400: error_response(
                "`validation_error` (with `fields`; field codes: required, invalid, prompt_empty, "
                "prompt_too_long, size_not_multiple_of_8, size_out_of_range, steps_out_of_range, "
                "guidance_out_of_range, seed_out_of_range, scheduler_unknown, num_images_out_of_range, "
                "model_unknown, negative_prompt_unsupported, scheduler_unsupported, "
                "webhook_event_unknown, webhook_url_too_long, cost_out_of_range, deadline_out_of_range), "
                "`cancel_after_invalid`, `webhook_url_forbidden`, "
                "`job_too_expensive` (with `cost_units` and `max_job_units`), "
                "`idempotency_key_invalid` or `parse_error`."
            ),
            401: UNAUTHORIZED,
            403: error_response("`blocked`: this address may not submit jobs."),
            409: error_response("`idempotency_conflict`: the key was used with a different body."),
            429: error_response(
                "`rate_limited`, `too_many_active_jobs`, `daily_quota_exceeded` or "
                "`daily_budget_exceeded` (compute units; `Retry-After` is the budget's reset); "
                "retry after `Retry-After` seconds."
            ),
            415: error_response("`unsupported_media_type`: send `application/json`."),
            503: error_response("`queue_full`: too many queued jobs; retry after `Retry-After` seconds."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = JobSubmitInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        caller = request_caller(request)
        job = services.job_submit(
            client_ip=caller.client_ip,
            caller=caller,
            idempotency_key=request.headers.get("Idempotency-Key"),
            cancel_after=request.headers.get("Cancel-After"),
            **serializer.validated_data,
        )
        body = JobSubmittedSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["status_url"]})


class JsonWhateverAccepted(BaseContentNegotiation):
    """Answers in JSON, the view's one renderer, without reading ``Accept``: for the status
    read, polled more than anything else, where negotiating cost a tenth of the request."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser:
        return next(iter(parsers))

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class JobDetailView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonWhateverAccepted

    @extend_schema(
        operation_id="jobs_status",
        summary="Read a job's status",
        description=(
            "Status, progress, queue position and ETA, failure, timings and image URLs. "
            "Carries an `ETag`; send it back in `If-None-Match` to get 304 with no body while "
            "nothing changed."
        ),
        parameters=[
            JOB_ID,
            OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER),
            response_header(
                "ETag", "Changes whenever the body would; send it in `If-None-Match`.", statuses=[200, 304]
            ),
            RETRY_AFTER,
        ],
        responses={
            200: JobSerializer,
            304: OpenApiResponse(description="Not modified since the ETag sent in `If-None-Match`."),
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            429: error_response("`rate_limited`: too many status reads; retry after `Retry-After` seconds."),
        },
    )
    def get(self, request: Request, job_id: str) -> Response:
        enforce_status_poll_limit(client_ip=client_ip(request))
        job, images = selectors.job_with_images_get(job_id=job_id)
        position = selectors.job_queue_position(job=job)
        etag = status_etag(
            job=job, images=images, queue_position=position, base_url=request.build_absolute_uri("/")
        )
        if etag in parse_etags(request.headers.get("If-None-Match", "")):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        queue = None if position is None else selectors.job_queue_estimate(job=job, position=position)
        body = job_status_body(job, images=images, queue=queue, context={"request": request})
        return Response(body, headers={"ETag": etag})


class JobCancelView(APIView):
    @extend_schema(
        operation_id="jobs_cancel",
        summary="Cancel a job",
        description="A queued job never runs; a running one stops at its next step.",
        request=None,
        parameters=[JOB_ID],
        responses={
            200: JobSerializer,
            401: UNAUTHORIZED,
            404: NOT_FOUND,
            409: error_response("`job_already_finished`: the job is completed, failed or cancelled."),
        },
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = services.job_cancel(job_id=selectors.job_get(job_id=job_id).pk)
        return Response(JobSerializer(job, context={"request": request}).data)
